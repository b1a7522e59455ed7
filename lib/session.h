/* session.h — a node's sessions: one KV cache per sequence in flight for the node's layers,
 * found by the client's session id (id.h), dropped when ended, idle too long, or least
 * recently used when the table is full. */
#ifndef SL_SESSION_H
#define SL_SESSION_H

#include "gpt2.h"
#include "id.h"
#include "peer.h"

#include <stdint.h>

typedef struct sl_sessions sl_sessions;

/* A table of at most max_sessions for params' layers, whose caches hold kv_dtype (f32 or f16).
 * Caller owns the result. */
sl_sessions *sl_sessions_new(const sl_params *params, int max_sessions, double idle_timeout, sl_dtype kv_dtype);
void sl_sessions_destroy(sl_sessions **self);

/* The cache of session id, or NULL when unknown; touches its last use. */
sl_kv *sl_sessions_find(sl_sessions *self, sl_id id, double now);

/* Opens (or re-opens, forgetting its positions) session id with room for ctx positions. When the
 * table is full the least recently used session goes and *evicted receives its id (else none). */
sl_kv *sl_sessions_open(sl_sessions *self, sl_id id, int ctx, double now, sl_id *evicted, sl_err *err);

/* Where session id's answers go back to (set by the node; none when opened), or NULL when the
 * session is unknown. Owned by the table, valid until the session goes. */
sl_peer *sl_sessions_peer(sl_sessions *self, sl_id id);

/* Marks session id's request of step as passed on and waiting for its answer (pending), or
 * answered. Unknown ids are ignored. */
void sl_sessions_set_pending(sl_sessions *self, sl_id id, bool pending, uint64_t step);

/* Calls fn for every session with a pending request (the next stage was lost: its requests with
 * it) and clears the marks; returns how many. */
int sl_sessions_take_pending(sl_sessions *self, void (*fn)(void *ctx, sl_id id, uint64_t step), void *ctx);

/* Drops session id, keeping its cache for a later session; returns whether it existed. */
bool sl_sessions_close(sl_sessions *self, sl_id id);

/* Drops sessions idle longer than the timeout and frees their caches; returns how many, with the
 * first id in *first. */
int sl_sessions_expire(sl_sessions *self, double now, sl_id *first);

int sl_sessions_count(const sl_sessions *self);
/* Sessions open whose peer is the same party as peer (sl_peer_same). */
int sl_sessions_count_peer(const sl_sessions *self, const sl_peer *peer);
/* Bytes of KV cache held: open sessions' and those kept for reuse. */
size_t sl_sessions_bytes(const sl_sessions *self);

#endif
