/* security.c — key pairs, the accepted certificates, a ZAP handler that knows them, and the log
 * of who was refused.
 *
 * The ZAP handler is ours, not czmq's zauth: zauth accepts the right keys but cannot tell us
 * which key and address it refused, and a node must log exactly that (once, rate-limited). */
#include "security.h"

#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REFUSED_KEPT 256    /* (key, address) pairs remembered, each logged once */
#define LINES_PER_MINUTE 10 /* beyond this, refusals are only counted */
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

typedef struct accepted {
    char name[64];
    char key[SL_KEY_TEXT];
} accepted;

struct sl_security {
    char certs[PATH_MAX];
    zcert_t *own;
    accepted *accepts;
    int n_accepts;
    zactor_t *zap;       /* the handler, when this process accepts anyone */
    zsock_t *zap_socket; /* its socket, made here and handed to it (errors are ours to report) */
    char monitor[64];
    sl_security_log log;
    void *log_ctx;
};

static zcert_t *load_cert(const char *path, bool secret, sl_err *err)
{
    if (access(path, R_OK) != 0) {
        sl_fail(err, "%s: no such certificate (make one with zmq-splitlearn-keygen)", path);
        return NULL;
    }
    zcert_t *cert = zcert_load(path);
    static const unsigned char zero[32];
    if (!cert || (secret && !memcmp(zcert_secret_key(cert), zero, 32))) {
        zcert_destroy(&cert);
        sl_fail(err, "%s is not a CurveZMQ %s certificate", path, secret ? "secret" : "public");
    }
    return cert;
}

/* ---- the ZAP handler (RFC 27) ---- */

typedef struct refusals {
    char seen[REFUSED_KEPT][SL_KEY_TEXT + 64];
    int n_seen;
    double minute_start;
    int lines, unlogged;
} refusals;

static void refused(const sl_security *self, refusals *r, const char *key, const char *address, const char *why)
{
    char pair[sizeof r->seen[0]];
    snprintf(pair, sizeof pair, "%s@%.60s", key, address);
    for (int i = 0; i < r->n_seen; i++)
        if (!strcmp(r->seen[i], pair)) return;
    if (r->n_seen < REFUSED_KEPT) snprintf(r->seen[r->n_seen++], sizeof pair, "%s", pair);
    double now = zclock_mono() / 1000.0;
    if (now - r->minute_start > 60) {
        if (r->unlogged && self->log) {
            char line[128];
            snprintf(line, sizeof line, "security: %d more peers refused in the last minute", r->unlogged);
            self->log(self->log_ctx, line);
        }
        r->minute_start = now, r->lines = 0, r->unlogged = 0;
    }
    if (!self->log || r->lines >= LINES_PER_MINUTE) {
        r->unlogged++;
        return;
    }
    r->lines++;
    char line[256];
    snprintf(line, sizeof line, "security: refused a peer at %.60s with key %s: %s", address, key, why);
    self->log(self->log_ctx, line);
}

/* Answers one ZAP request: 200 and the key as User-Id for an accepted key, 400 otherwise. */
static void answer_zap(const sl_security *self, zsock_t *rep, refusals *r)
{
    zmsg_t *req = zmsg_recv(rep);
    if (!req) return;
    char *version = zmsg_popstr(req), *id = zmsg_popstr(req), *domain = zmsg_popstr(req);
    char *address = zmsg_popstr(req), *identity = zmsg_popstr(req), *mechanism = zmsg_popstr(req);
    zframe_t *credentials = zmsg_pop(req);
    char key[SL_KEY_TEXT] = "";
    bool curve = mechanism && !strcmp(mechanism, "CURVE");
    if (curve && credentials && zframe_size(credentials) == 32) zmq_z85_encode(key, zframe_data(credentials), 32);
    const char *name = key[0] ? sl_security_name_of(self, key) : NULL;
    if (!name)
        refused(self, r, key[0] ? key : "(none)", address ? address : "?",
                !curve ? "no CURVE" : "not a key this node accepts");
    zmsg_t *reply = zmsg_new();
    zmsg_addstr(reply, "1.0");
    zmsg_addstr(reply, id ? id : "");
    zmsg_addstr(reply, name ? "200" : "400");
    zmsg_addstr(reply, name ? "OK" : "not accepted");
    zmsg_addstr(reply, name ? key : "");
    zmsg_addmem(reply, "", 0); /* no metadata */
    zmsg_send(&reply, rep);
    zframe_destroy(&credentials);
    free(version), free(id), free(domain), free(address), free(identity), free(mechanism);
    zmsg_destroy(&req);
}

/* A handshake that failed before ZAP (a peer without CURVE): from the listen socket's monitor. */
static void handshake_failed(const sl_security *self, zsock_t *monitor, refusals *r)
{
    zmsg_t *event = zmsg_recv(monitor);
    zframe_t *head = event ? zmsg_first(event) : NULL;
    char *address = event && zmsg_size(event) > 1 ? zframe_strdup(zmsg_next(event)) : NULL;
    if (head && zframe_size(head) >= 2) refused(self, r, "(none)", address ? address : "?", "no CURVE handshake");
    free(address);
    zmsg_destroy(&event);
}

static void zap_actor(zsock_t *pipe, void *args)
{
    const sl_security *self = args;
    zsock_t *rep = self->zap_socket, *monitor = NULL;
    refusals *r = calloc(1, sizeof *r);
    zsock_signal(pipe, 0);
    zpoller_t *poller = r ? zpoller_new(pipe, rep, NULL) : NULL;
    while (poller) {
        zsock_t *which = zpoller_wait(poller, -1);
        if (!which && !zpoller_terminated(poller)) continue; /* a signal interrupted the wait */
        if (which == pipe) {
            char *command = zstr_recv(pipe);
            bool term = !command || !strcmp(command, "$TERM");
            if (command && !strcmp(command, "MONITOR") && !monitor && (monitor = zsock_new_pair(self->monitor)) != NULL)
                zpoller_add(poller, monitor);
            free(command);
            if (term) break;
        } else if (which == rep) {
            answer_zap(self, rep, r);
        } else if (which && which == monitor) {
            handshake_failed(self, monitor, r);
        } else {
            break;
        }
    }
    zpoller_destroy(&poller);
    zsock_destroy(&monitor);
    free(r);
}

/* The ZAP socket; a handler destroyed a moment ago may still hold the address for a while. */
static zsock_t *bind_zap(sl_err *err)
{
    zsock_t *rep = zsock_new(ZMQ_REP);
    for (int tries = 0; rep && zsock_bind(rep, ZAP_ENDPOINT) != 0; tries++) {
        if (tries == 100) {
            zsock_destroy(&rep);
            sl_fail(err, "cannot bind %s: %s (another ZAP handler in this process?)", ZAP_ENDPOINT,
                    zmq_strerror(zmq_errno()));
            return NULL;
        }
        zclock_sleep(10);
    }
    if (!rep) sl_fail(err, "cannot create the ZAP socket");
    return rep;
}

/* ---- the object ---- */

sl_security *sl_security_new(const char *certs, const char *own_secret, const char *const *accept, int n_accept,
                             sl_security_log log, void *log_ctx, sl_err *err)
{
    sl_security *self = calloc(1, sizeof *self);
    if (!self || (n_accept && !(self->accepts = calloc((size_t)n_accept, sizeof *self->accepts)))) {
        free(self);
        sl_fail(err, "out of memory");
        return NULL;
    }
    snprintf(self->certs, sizeof self->certs, "%s", certs);
    snprintf(self->monitor, sizeof self->monitor, "inproc://sl-security-%p", (void *)self);
    self->log = log;
    self->log_ctx = log_ctx;
    int rc = (self->own = load_cert(own_secret, true, err)) ? 0 : -1;
    for (int i = 0; rc == 0 && i < n_accept; i++) {
        char path[PATH_MAX + 80];
        snprintf(path, sizeof path, "%s/%s.cert", certs, accept[i]);
        zcert_t *cert = load_cert(path, false, err);
        if (!cert) rc = -1;
        if (rc == 0) {
            snprintf(self->accepts[i].name, sizeof self->accepts[i].name, "%s", accept[i]);
            snprintf(self->accepts[i].key, SL_KEY_TEXT, "%s", zcert_public_txt(cert));
            self->n_accepts++;
        }
        zcert_destroy(&cert);
    }
    if (rc == 0 && n_accept && !(self->zap_socket = bind_zap(err))) rc = -1;
    if (rc == 0 && n_accept && !(self->zap = zactor_new(zap_actor, self)))
        rc = sl_fail(err, "cannot start the ZAP handler");
    if (rc != 0) sl_security_destroy(&self);
    return self;
}

void sl_security_destroy(sl_security **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    zactor_destroy(&(*self)->zap);
    if ((*self)->zap_socket) zsock_unbind((*self)->zap_socket, ZAP_ENDPOINT); /* a handler made next binds it */
    zsock_destroy(&(*self)->zap_socket);
    zcert_destroy(&(*self)->own);
    free((*self)->accepts);
    free(*self);
    *self = NULL;
}

void sl_security_serve(const sl_security *self, zsock_t *sock)
{
    zcert_apply(self->own, sock);
    zsock_set_curve_server(sock, 1);
    zsock_set_zap_domain(sock, "zmq-splitlearn");
    if (self->zap &&
        zmq_socket_monitor(zsock_resolve(sock), self->monitor,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0)
        zstr_send(self->zap, "MONITOR");
}

int sl_security_connect_to(const sl_security *self, zsock_t *sock, const char *peer, sl_err *err)
{
    char path[PATH_MAX + 80];
    snprintf(path, sizeof path, "%s/%s.cert", self->certs, peer);
    zcert_t *cert = load_cert(path, false, err);
    if (!cert) return -1;
    zcert_apply(self->own, sock);
    zsock_set_curve_serverkey(sock, zcert_public_txt(cert));
    zcert_destroy(&cert);
    return 0;
}

const char *sl_security_name_of(const sl_security *self, const char *key)
{
    for (int i = 0; i < self->n_accepts; i++)
        if (!strcmp(self->accepts[i].key, key)) return self->accepts[i].name;
    return NULL;
}

const char *sl_security_public_key(const sl_security *self) { return zcert_public_txt(self->own); }

int sl_security_keygen(const char *dir, const char *name, sl_err *err)
{
    char pub[PATH_MAX + 80], secret[PATH_MAX + 96];
    snprintf(pub, sizeof pub, "%s/%s.cert", dir, name);
    snprintf(secret, sizeof secret, "%s_secret", pub);
    if (access(pub, F_OK) == 0 || access(secret, F_OK) == 0)
        return sl_fail(err, "%s or its secret already exists: keys are not replaced (remove them first)", pub);
    zcert_t *cert = zcert_new();
    if (!cert) return sl_fail(err, "cannot make a key pair");
    zcert_set_meta(cert, "name", "%s", name);
    mode_t old = umask(077); /* the secret file is born private */
    int rc = zcert_save(cert, pub);
    umask(old);
    zcert_destroy(&cert);
    if (rc != 0) return sl_fail(err, "cannot write %s", pub);
    return chmod(pub, 0644) == 0 && chmod(secret, 0600) == 0 ? 0 : sl_fail(err, "cannot set the modes of %s", pub);
}
