/* outbox.c — a small cache of connected PUSH sockets keyed by endpoint. */
#include "outbox.h"

#include "net.h"

#include <czmq.h>
#include <string.h>

typedef struct conn {
    char endpoint[256];
    zsock_t *sock;
    unsigned long last_used;
} conn;

struct sl_outbox {
    conn *conns;
    int max;
    sl_net_opts net;
    unsigned long clock;
};

sl_outbox *sl_outbox_new(int max_sockets, const sl_net_opts *net)
{
    sl_outbox *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    if (!(self->conns = calloc((size_t)max_sockets, sizeof *self->conns))) {
        free(self);
        return NULL;
    }
    self->max = max_sockets;
    self->net = *net;
    self->net.send_timeout_ms = 0; /* never block: a client that does not read loses its message */
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
    if (!(c->sock = sl_net_connect(ZMQ_PUSH, &self->net, endpoint, err))) return NULL;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    return c;
}

int sl_outbox_send(sl_outbox *self, const char *endpoint, const void *data, size_t len, sl_err *err)
{
    conn *c = connect_to(self, endpoint, err);
    if (!c) return -1;
    c->last_used = ++self->clock;
    return sl_net_send(c->sock, data, len, true, endpoint, err);
}
