/* session.c — the session table (a small array: nodes keep tens of sessions, not thousands).
 * A closed or evicted session's cache stays in its slot for the next session that fits in it:
 * a fresh cache costs page faults on first touch, which on a VM cost more than a 64-token
 * prefill's whole transport. Expiry frees the caches of idle slots. */
#include "session.h"

#include <assert.h>
#include <stdlib.h>

typedef struct slot {
    sl_id id; /* none: free (kv may still hold a cache to reuse) */
    sl_kv *kv;
    double last_used;
    sl_peer peer;
    bool pending;          /* a request passed on and not answered yet */
    uint64_t pending_step; /* its step */
} slot;

struct sl_sessions {
    const sl_params *params;
    slot *slots;
    int max;
    double idle_timeout;
    sl_dtype kv_dtype; /* what every cache holds: f32 or f16 */
};

sl_sessions *sl_sessions_new(const sl_params *params, int max_sessions, double idle_timeout, sl_dtype kv_dtype)
{
    sl_sessions *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->slots = calloc((size_t)max_sessions, sizeof *self->slots);
    if (!self->slots) {
        free(self);
        return NULL;
    }
    self->params = params;
    self->max = max_sessions;
    self->idle_timeout = idle_timeout;
    self->kv_dtype = kv_dtype;
    return self;
}

static void free_slot(slot *s)
{
    sl_kv_destroy(&s->kv);
    s->id = (sl_id){{0}};
}

static bool fits(const slot *s, int ctx) { return s->kv && sl_kv_capacity(s->kv) >= ctx; }

void sl_sessions_destroy(sl_sessions **self)
{
    assert(self);
    if (!*self) return;
    for (int i = 0; i < (*self)->max; i++)
        free_slot(&(*self)->slots[i]);
    free((*self)->slots);
    free(*self);
    *self = NULL;
}

static slot *find(sl_sessions *self, sl_id id)
{
    for (int i = 0; i < self->max; i++)
        if (sl_id_equal(self->slots[i].id, id) && !sl_id_none(id)) return &self->slots[i];
    return NULL;
}

sl_kv *sl_sessions_find(sl_sessions *self, sl_id id, double now)
{
    slot *s = find(self, id);
    if (!s) return NULL;
    s->last_used = now;
    return s->kv;
}

sl_kv *sl_sessions_open(sl_sessions *self, sl_id id, int ctx, double now, sl_id *evicted, sl_err *err)
{
    *evicted = (sl_id){{0}};
    if (sl_id_none(id)) {
        sl_fail(err, "the all-zero session id is reserved");
        return NULL;
    }
    slot *s = find(self, id);
    if (s && !fits(s, ctx)) {
        free_slot(s);
        s = NULL;
    }
    for (int i = 0; i < self->max && !s; i++) /* a free slot whose cache fits */
        if (sl_id_none(self->slots[i].id) && fits(&self->slots[i], ctx)) s = &self->slots[i];
    for (int i = 0; i < self->max && !s; i++)
        if (sl_id_none(self->slots[i].id)) s = &self->slots[i];
    if (!s) {
        s = &self->slots[0];
        for (int i = 1; i < self->max; i++)
            if (self->slots[i].last_used < s->last_used) s = &self->slots[i];
        *evicted = s->id;
    }
    s->id = (sl_id){{0}};
    if (fits(s, ctx)) {
        sl_kv_reset(s->kv);
    } else {
        sl_kv_destroy(&s->kv);
        if (!(s->kv = sl_kv_new(self->params, ctx, self->kv_dtype, err))) return NULL;
    }
    s->id = id;
    s->last_used = now;
    s->peer = (sl_peer){.len = 0};
    s->pending = false;
    return s->kv;
}

sl_peer *sl_sessions_peer(sl_sessions *self, sl_id id)
{
    slot *s = find(self, id);
    return s ? &s->peer : NULL;
}

void sl_sessions_set_pending(sl_sessions *self, sl_id id, bool pending, uint64_t step)
{
    slot *s = find(self, id);
    if (!s) return;
    s->pending = pending;
    s->pending_step = step;
}

int sl_sessions_take_pending(sl_sessions *self, void (*fn)(void *ctx, sl_id id, uint64_t step), void *ctx)
{
    int n = 0;
    for (int i = 0; i < self->max; i++) {
        slot *s = &self->slots[i];
        if (sl_id_none(s->id) || !s->pending) continue;
        s->pending = false;
        fn(ctx, s->id, s->pending_step);
        n++;
    }
    return n;
}

bool sl_sessions_close(sl_sessions *self, sl_id id)
{
    slot *s = find(self, id);
    if (s) s->id = (sl_id){{0}}; /* the cache stays for the next session */
    return s != NULL;
}

int sl_sessions_expire(sl_sessions *self, double now, sl_id *first)
{
    int n = 0;
    for (int i = 0; i < self->max; i++) {
        slot *s = &self->slots[i];
        if (!s->kv || now - s->last_used <= self->idle_timeout) continue;
        if (!sl_id_none(s->id) && n++ == 0 && first) *first = s->id;
        free_slot(s);
    }
    return n;
}

int sl_sessions_count_peer(const sl_sessions *self, const sl_peer *peer)
{
    int n = 0;
    for (int i = 0; i < self->max; i++)
        n += !sl_id_none(self->slots[i].id) && sl_peer_same(&self->slots[i].peer, peer);
    return n;
}

int sl_sessions_count(const sl_sessions *self)
{
    int n = 0;
    for (int i = 0; i < self->max; i++)
        n += !sl_id_none(self->slots[i].id);
    return n;
}

size_t sl_sessions_bytes(const sl_sessions *self)
{
    size_t n = 0;
    for (int i = 0; i < self->max; i++)
        if (self->slots[i].kv) n += sl_kv_bytes(self->slots[i].kv);
    return n;
}
