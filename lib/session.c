/* session.c — the session table (a small array: nodes keep tens of sessions, not thousands). */
#include "session.h"

#include <stdlib.h>

typedef struct slot {
    uint64_t id; /* 0: free */
    sl_kv *kv;
    double last_used;
} slot;

struct sl_sessions {
    const sl_params *params;
    slot *slots;
    int max;
    double idle_timeout;
};

sl_sessions *sl_sessions_new(const sl_params *params, int max_sessions, double idle_timeout)
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
    return self;
}

static void free_slot(slot *s)
{
    sl_kv_destroy(&s->kv);
    s->id = 0;
}

void sl_sessions_destroy(sl_sessions **self)
{
    if (!self || !*self) return;
    for (int i = 0; i < (*self)->max; i++)
        free_slot(&(*self)->slots[i]);
    free((*self)->slots);
    free(*self);
    *self = NULL;
}

static slot *find(sl_sessions *self, uint64_t id)
{
    for (int i = 0; i < self->max; i++)
        if (self->slots[i].id == id && id) return &self->slots[i];
    return NULL;
}

sl_kv *sl_sessions_find(sl_sessions *self, uint64_t id, double now)
{
    slot *s = find(self, id);
    if (!s) return NULL;
    s->last_used = now;
    return s->kv;
}

sl_kv *sl_sessions_open(sl_sessions *self, uint64_t id, int ctx, double now, uint64_t *evicted, sl_err *err)
{
    *evicted = 0;
    if (id == 0) {
        sl_fail(err, "session id 0 is reserved");
        return NULL;
    }
    slot *s = find(self, id);
    if (s && sl_kv_capacity(s->kv) >= ctx) {
        sl_kv_reset(s->kv);
        s->last_used = now;
        return s->kv;
    }
    if (s) free_slot(s);
    for (int i = 0; i < self->max && !s; i++)
        if (!self->slots[i].id) s = &self->slots[i];
    if (!s) {
        s = &self->slots[0];
        for (int i = 1; i < self->max; i++)
            if (self->slots[i].last_used < s->last_used) s = &self->slots[i];
        *evicted = s->id;
        free_slot(s);
    }
    if (!(s->kv = sl_kv_new(self->params, ctx, err))) return NULL;
    s->id = id;
    s->last_used = now;
    return s->kv;
}

bool sl_sessions_close(sl_sessions *self, uint64_t id)
{
    slot *s = find(self, id);
    if (s) free_slot(s);
    return s != NULL;
}

int sl_sessions_expire(sl_sessions *self, double now, uint64_t *first)
{
    int n = 0;
    for (int i = 0; i < self->max; i++) {
        slot *s = &self->slots[i];
        if (s->id && now - s->last_used > self->idle_timeout) {
            if (n++ == 0 && first) *first = s->id;
            free_slot(s);
        }
    }
    return n;
}

int sl_sessions_count(const sl_sessions *self)
{
    int n = 0;
    for (int i = 0; i < self->max; i++)
        n += self->slots[i].id != 0;
    return n;
}

size_t sl_sessions_bytes(const sl_sessions *self)
{
    size_t n = 0;
    for (int i = 0; i < self->max; i++)
        if (self->slots[i].id) n += sl_kv_bytes(self->slots[i].kv);
    return n;
}
