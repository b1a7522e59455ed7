/* net.h — every ZeroMQ socket of the project is made here, so that each option (high-water
 * marks, linger, send/receive timeouts, the message size cap, TCP keepalive and, when a link is
 * secured, CURVE) is set in one place and the same way for nodes, clients and trainers.
 *
 * Ownership: the sockets returned belong to the caller (zsock_destroy). */
#ifndef SL_NET_H
#define SL_NET_H

#include "err.h"
#include "topology.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sl_net_opts {
    int hwm;             /* messages queued per peer, each way */
    int linger_ms;       /* how long a closing socket still tries to deliver */
    int send_timeout_ms; /* a blocking send gives up after it (-1: never) */
    size_t max_message;  /* bytes: a larger incoming message is dropped by ZeroMQ (0: no cap) */
    bool keepalive;      /* TCP keepalive probes: a peer whose host vanished is noticed */
} sl_net_opts;

/* The options a topology's [pipeline] section sets (hwm, timeout, max_message_mb). */
sl_net_opts sl_net_opts_of(const sl_topology *topo);

/* A socket of type (ZMQ_PUSH, ZMQ_PULL, ...) with o's options, bound to endpoint (a TCP port
 * may be "*": any free one). NULL with err naming the endpoint when it cannot listen there. */
zsock_t *sl_net_bind(int type, const sl_net_opts *o, const char *endpoint, sl_err *err);

/* The same, connected to endpoint (ZeroMQ connects in the background: a peer that is not there
 * yet is not an error). */
zsock_t *sl_net_connect(int type, const sl_net_opts *o, const char *endpoint, sl_err *err);

/* Sends one frame, retrying when a signal interrupts; with dontwait a full queue fails at once.
 * err names `who` (the peer, for people). */
int sl_net_send(zsock_t *sock, const void *data, size_t len, bool dontwait, const char *who, sl_err *err);

#endif
