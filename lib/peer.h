/* peer.h — who sent a message and gets its answers: the routing id a ZeroMQ ROUTER socket gives
 * each connection. Nodes keep one per session (answers travel back the way requests came). */
#ifndef SL_PEER_H
#define SL_PEER_H

#include <stdbool.h>
#include <string.h>

#define SL_PEER_MAX 32 /* ZeroMQ makes 5-byte ids; a peer that sets a longer one is refused */

typedef struct sl_peer {
    unsigned char id[SL_PEER_MAX];
    unsigned char len; /* 0: none */
    char key[41];      /* its CurveZMQ public key (Z85) when the link is secured, else "" */
} sl_peer;

/* The same party: the same key when secured (a client may reconnect), else the same connection. */
static inline bool sl_peer_same(const sl_peer *a, const sl_peer *b)
{
    if (a->key[0] || b->key[0]) return strcmp(a->key, b->key) == 0;
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

#endif
