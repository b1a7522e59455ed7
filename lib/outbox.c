/* outbox.c — a small cache of connected PUSH sockets keyed by endpoint. */
#include "outbox.h"

#include <czmq.h>
#include <string.h>

typedef struct conn {
    char endpoint[256];
    zsock_t *sock;
    unsigned long last_used;
} conn;

struct sl_outbox {
    conn *conns;
    int max, hwm;
    unsigned long clock;
};

sl_outbox *sl_outbox_new(int max_sockets, int hwm)
{
    sl_outbox *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    if (!(self->conns = calloc((size_t)max_sockets, sizeof *self->conns))) {
        free(self);
        return NULL;
    }
    self->max = max_sockets;
    self->hwm = hwm;
    return self;
}

void sl_outbox_destroy(sl_outbox **self)
{
    if (!self || !*self) return;
    for (int i = 0; i < (*self)->max; i++)
        zsock_destroy(&(*self)->conns[i].sock);
    free((*self)->conns);
    free(*self);
    *self = NULL;
}

static conn *connect_to(sl_outbox *self, const char *endpoint, sl_err *err)
{
    conn *c = NULL, *oldest = &self->conns[0];
    for (int i = 0; i < self->max; i++) {
        if (self->conns[i].sock && strcmp(self->conns[i].endpoint, endpoint) == 0) return &self->conns[i];
        if (!self->conns[i].sock && !c) c = &self->conns[i];
        if (self->conns[i].last_used < oldest->last_used) oldest = &self->conns[i];
    }
    if (!c) {
        c = oldest;
        zsock_destroy(&c->sock);
    }
    if (strlen(endpoint) >= sizeof c->endpoint) {
        sl_fail(err, "endpoint too long");
        return NULL;
    }
    c->sock = zsock_new(ZMQ_PUSH);
    if (!c->sock) {
        sl_fail(err, "cannot create a socket for %s", endpoint);
        return NULL;
    }
    zsock_set_sndhwm(c->sock, self->hwm);
    zsock_set_linger(c->sock, 1000);
    if (zsock_connect(c->sock, "%s", endpoint) != 0) {
        zsock_destroy(&c->sock);
        sl_fail(err, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return NULL;
    }
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    return c;
}

int sl_outbox_send(sl_outbox *self, const char *endpoint, const void *data, size_t len, sl_err *err)
{
    conn *c = connect_to(self, endpoint, err);
    if (!c) return -1;
    c->last_used = ++self->clock;
    if (zmq_send(zsock_resolve(c->sock), data, len, ZMQ_DONTWAIT) < 0)
        return sl_fail(err, "cannot send to %s: %s", endpoint, zmq_strerror(zmq_errno()));
    return 0;
}
