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

static zsock_t *make(int type, const sl_net_opts *o, sl_err *err)
{
    zsock_t *s = zsock_new(type);
    if (!s) {
        sl_fail(err, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    zsock_set_sndhwm(s, o->hwm);
    zsock_set_rcvhwm(s, o->hwm);
    zsock_set_linger(s, o->linger_ms);
    zsock_set_sndtimeo(s, o->send_timeout_ms);
    if (o->max_message) zsock_set_maxmsgsize(s, (int64_t)o->max_message);
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
    zsock_t *s = make(type, o, err);
    if (s && zsock_bind(s, "%s", endpoint) < 0) {
        sl_fail(err, "cannot listen on %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
    }
    return s;
}

zsock_t *sl_net_connect(int type, const sl_net_opts *o, const char *endpoint, sl_err *err)
{
    zsock_t *s = make(type, o, err);
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
