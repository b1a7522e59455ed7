/* net.h — every ZeroMQ socket of the project is made here, so that each option (high-water
 * marks, linger, send/receive timeouts, the message size cap, TCP keepalive and, when a link is
 * secured, CURVE) is set in one place and the same way for nodes, clients and trainers.
 *
 * Ownership: the sockets returned belong to the caller (zsock_destroy). */
#ifndef SL_NET_H
#define SL_NET_H

#include "err.h"
#include "peer.h"
#include "security.h"
#include "topology.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sl_net_opts {
    int hwm;                     /* messages queued per peer, each way */
    int linger_ms;               /* how long a closing socket still tries to deliver */
    int send_timeout_ms;         /* a blocking send gives up after it (-1: never) */
    size_t max_message;          /* bytes: the receiver refuses a larger message (0: no cap); see SL_NET_GUARD */
    bool keepalive;              /* TCP keepalive probes: a peer whose host vanished is noticed */
    bool immediate;              /* queue only to completed connections: a send with no peer fails in time */
    const sl_security *security; /* CURVE with this process's keys (NULL: none) */
    const char *peer;            /* with security, on connect: the certificate the server must hold */
    int answers;                 /* ROUTER: answers queued per peer (0: hwm; clients: SL_NET_CLIENT_ANSWERS) */
} sl_net_opts;

/* ZeroMQ's own cap on an incoming message (ZMQ_MAXMSGSIZE) is SL_NET_GUARD times max_message. A
 * message over max_message but within it arrives whole, so that its receiver can refuse it and
 * say who sent it; one over it is dropped by libzmq with its connection, which its socket
 * monitor reports as a plain disconnection (the same events as a peer closing), so it is bounded
 * in memory but cannot be told apart. */
#define SL_NET_GUARD 2

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

/* Receives one message waiting on sock without blocking: from a ROUTER socket the sender goes to
 * *from (NULL for other types) and the payload to msg (a zmq_msg_init'ed message the caller
 * closes). Returns 0, 1 when nothing waits, -1 with err for a message of another shape (more
 * frames, a sender id over SL_PEER_MAX): it was read whole and is to be dropped. */
int sl_net_recv(zsock_t *sock, sl_peer *from, zmq_msg_t *msg, sl_err *err);

/* Answers a client may leave unread before more are dropped: each client is a peer of its own,
 * and an unread answer can be a whole prompt's logits. */
#define SL_NET_CLIENT_ANSWERS 8

/* Sends one frame to peer through a ROUTER socket without blocking; fails (the frame is dropped)
 * when the peer is gone or does not read (SL_NET_ANSWERS of its answers queued). */
int sl_net_send_to(zsock_t *router, const sl_peer *peer, const void *data, size_t len, sl_err *err);

/* A monitor of sock's dropped connections (the peer process stopped or its host went away): poll
 * the actor for input, then sl_net_watch_event tells which endpoint. Caller owns it (zactor_destroy). */
zactor_t *sl_net_watch(zsock_t *sock);

/* Reads the event a watch reported; endpoint receives the connection's endpoint ("?" if none).
 * Returns the dropped connection's file descriptor (-1 if none): on a bound socket, every peer's
 * connection is watched, and sl_net_fd tells which one a message came on. */
int sl_net_watch_event(zactor_t *watch, char *endpoint, size_t size);

/* The file descriptor of the connection msg (received) came on. */
int sl_net_fd(zmq_msg_t *msg);

#endif
