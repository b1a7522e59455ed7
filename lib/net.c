/* net.c — the one place ZeroMQ sockets are made and their options set. */
#include "net.h"

sl_net_opts sl_net_opts_of(const sl_topology *topo)
{
    return (sl_net_opts){.hwm = topo->hwm,
                         .linger_ms = 1000,
                         .send_timeout_ms = (int)(topo->timeout * 1000),
                         .max_message = topo->max_message,
                         .keepalive = true};
}

static zsock_t *make(int type, const sl_net_opts *o, bool bind, sl_err *err)
{
    zsock_t *s = zsock_new(type);
    if (!s) {
        sl_fail(err, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    if (o->security && bind) sl_security_serve(o->security, s);
    if (o->security && !bind && sl_security_connect_to(o->security, s, o->peer, err) != 0) {
        zsock_destroy(&s);
        return NULL;
    }
    zsock_set_sndhwm(s, o->hwm);
    zsock_set_rcvhwm(s, o->hwm);
    zsock_set_linger(s, o->linger_ms);
    zsock_set_sndtimeo(s, o->send_timeout_ms);
    if (o->max_message) zsock_set_maxmsgsize(s, (int64_t)o->max_message * SL_NET_GUARD);
    if (o->immediate) zsock_set_immediate(s, 1);
    if (o->keepalive) {
        zsock_set_tcp_keepalive(s, 1);
        zsock_set_tcp_keepalive_idle(s, 60);
        zsock_set_tcp_keepalive_intvl(s, 10);
        zsock_set_tcp_keepalive_cnt(s, 6);
    }
    return s;
}

zsock_t *sl_net_bind(int type, const sl_net_opts *o, const char *endpoint, sl_err *err)
{
    zsock_t *s = make(type, o, true, err);
    if (s && type == ZMQ_ROUTER) {
        /* A peer that does not read loses the answers beyond its queue (the sender is told and
         * counts them) instead of piling them up here. */
        if (o->answers) zsock_set_sndhwm(s, o->answers);
        zsock_set_router_mandatory(s, 1);
    }
    if (s && zsock_bind(s, "%s", endpoint) < 0) {
        sl_fail(err, "cannot listen on %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
    }
    return s;
}

zsock_t *sl_net_connect(int type, const sl_net_opts *o, const char *endpoint, sl_err *err)
{
    zsock_t *s = make(type, o, false, err);
    if (s && zsock_connect(s, "%s", endpoint) != 0) {
        sl_fail(err, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
    }
    return s;
}

int sl_net_send(zsock_t *sock, const void *data, size_t len, bool dontwait, const char *who, sl_err *err)
{
    while (zmq_send(zsock_resolve(sock), data, len, dontwait ? ZMQ_DONTWAIT : 0) < 0)
        if (zmq_errno() != EINTR) return sl_fail(err, "cannot send to %s: %s", who, zmq_strerror(zmq_errno()));
    return 0;
}

/* Reads and drops the rest of a multi-frame message. */
static void drain(void *sock)
{
    int more = 1;
    size_t size = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &size) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int rc = zmq_msg_recv(&part, sock, 0);
        zmq_msg_close(&part);
        if (rc < 0) break;
    }
}

int sl_net_recv(zsock_t *sock, sl_peer *from, zmq_msg_t *msg, sl_err *err)
{
    void *s = zsock_resolve(sock);
    if (from) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return 1;
        }
        size_t len = zmq_msg_size(&id);
        from->len = len <= SL_PEER_MAX ? (unsigned char)len : 0;
        from->key[0] = '\0';
        if (from->len) memcpy(from->id, zmq_msg_data(&id), len);
        zmq_msg_close(&id);
        if (!from->len) {
            drain(s);
            return sl_fail(err, "a peer with a %zu-byte routing id (at most %d)", len, SL_PEER_MAX);
        }
    }
    if (zmq_msg_recv(msg, s, from ? 0 : ZMQ_DONTWAIT) < 0) return from ? sl_fail(err, "a message with no body") : 1;
    if (zmq_msg_more(msg)) {
        drain(s);
        return sl_fail(err, "a message of several frames (one is expected)");
    }
    const char *key = from ? zmq_msg_gets(msg, "User-Id") : NULL; /* set by the ZAP handler */
    if (key) snprintf(from->key, sizeof from->key, "%s", key);
    return 0;
}

int sl_net_send_to(zsock_t *router, const sl_peer *peer, const void *data, size_t len, sl_err *err)
{
    void *s = zsock_resolve(router);
    if (zmq_send(s, peer->id, peer->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 || zmq_send(s, data, len, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        return sl_fail(err, "%s",
                       e == EAGAIN         ? "the peer does not read its answers (its queue is full)"
                       : e == EHOSTUNREACH ? "the peer is gone"
                                           : zmq_strerror(e));
    }
    return 0;
}

zactor_t *sl_net_watch(zsock_t *sock)
{
    zactor_t *m = zactor_new(zmonitor, sock);
    if (!m) return NULL;
    zstr_sendx(m, "LISTEN", "DISCONNECTED", NULL);
    zstr_sendx(m, "START", NULL);
    zsock_wait(m);
    return m;
}

int sl_net_watch_event(zactor_t *watch, char *endpoint, size_t size)
{
    zmsg_t *event = zmsg_recv(watch);
    char *name = event ? zmsg_popstr(event) : NULL, *value = event ? zmsg_popstr(event) : NULL;
    char *where = event ? zmsg_popstr(event) : NULL;
    snprintf(endpoint, size, "%s", where ? where : "?");
    int fd = value ? atoi(value) : -1; /* zmonitor's text of ZeroMQ's event value: the fd */
    free(name);
    free(value);
    free(where);
    zmsg_destroy(&event);
    return fd;
}

int sl_net_fd(zmq_msg_t *msg) { return zmq_msg_get(msg, ZMQ_SRCFD); }
