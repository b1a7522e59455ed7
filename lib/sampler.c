/* sampler.c — greedy and top-k / top-p sampling. */
#include "sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

/* A candidate token and its scaled logit. */
typedef struct scored {
    float logit;
    int32_t id;
} scored;

struct sl_sampler {
    sl_sampling opts;
    int vocab_size;
    scored *cand; /* (vocab_size) scratch */
};

int sl_sampling_check(const sl_sampling *s, sl_err *err)
{
    if (s->greedy) return 0;
    if (!(s->temperature > 0)) return sl_fail(err, "--temperature must be > 0 (got %g)", s->temperature);
    if (s->top_k < 0) return sl_fail(err, "--top-k must be >= 0 (got %d)", s->top_k);
    if (!(s->top_p > 0 && s->top_p <= 1)) return sl_fail(err, "--top-p must be in (0, 1] (got %g)", s->top_p);
    return 0;
}

sl_sampler *sl_sampler_new(const sl_sampling *opts, int vocab_size)
{
    sl_sampler *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->opts = *opts;
    self->vocab_size = vocab_size;
    if (!(self->cand = malloc((size_t)vocab_size * sizeof *self->cand))) sl_sampler_destroy(&self);
    return self;
}

void sl_sampler_destroy(sl_sampler **self)
{
    assert(self);
    if (!*self) return;
    free((*self)->cand);
    free(*self);
    *self = NULL;
}

void sl_sampler_configure(sl_sampler *self, const sl_sampling *opts) { self->opts = *opts; }

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_logit_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Candidates within e^-30 of the best (the rest cannot move a float32 probability sum),
 * sorted best first. Returns how many. */
static int gather_candidates(sl_sampler *self, const float *logits)
{
    const float inv_t = 1.0f / self->opts.temperature, max = logits[argmax(logits, self->vocab_size)];
    int n = 0;
    for (int i = 0; i < self->vocab_size; i++) {
        float z = (logits[i] - max) * inv_t;
        if (z > -30.0f) self->cand[n++] = (scored){z, i};
    }
    qsort(self->cand, (size_t)n, sizeof *self->cand, by_logit_desc);
    return n;
}

int32_t sl_sampler_next(sl_sampler *self, const float *logits, uint64_t index)
{
    if (self->opts.greedy) return argmax(logits, self->vocab_size);
    int n = gather_candidates(self, logits);
    if (self->opts.top_k > 0 && self->opts.top_k < n) n = self->opts.top_k;
    double total = 0;
    for (int i = 0; i < n; i++)
        total += exp(self->cand[i].logit);
    /* top-p: the smallest prefix whose probability reaches p. */
    double kept = 0;
    int keep = 0;
    while (keep < n && (keep == 0 || kept < self->opts.top_p * total))
        kept += exp(self->cand[keep++].logit);
    sl_rng rng;
    sl_rng_seed(&rng, self->opts.seed ^ (index * 0xd1b54a32d192ed03ull));
    double r = sl_rng_uniform(&rng) * kept, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += exp(self->cand[i].logit);
        if (r < acc) return self->cand[i].id;
    }
    return self->cand[keep - 1].id;
}
