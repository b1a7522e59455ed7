/* sampler.h — choosing the next token from logits: greedy, or temperature / top-k / top-p
 * sampling from a seeded generator. Holds its scratch memory, so choosing allocates nothing. */
#ifndef SL_SAMPLER_H
#define SL_SAMPLER_H

#include "err.h"
#include "rng.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sl_sampling {
    bool greedy;       /* argmax; the other fields are ignored */
    float temperature; /* > 0 */
    int top_k;         /* 0: no limit */
    float top_p;       /* (0, 1]; 1: no limit */
    uint64_t seed;
} sl_sampling;

/* Greedy by default. */
#define SL_SAMPLING_GREEDY ((sl_sampling){.greedy = true, .temperature = 1.0f, .top_k = 0, .top_p = 1.0f})

/* Checks the ranges above; err names the bad option. */
int sl_sampling_check(const sl_sampling *s, sl_err *err);

typedef struct sl_sampler sl_sampler;

/* Caller owns the result; NULL when out of memory. */
sl_sampler *sl_sampler_new(const sl_sampling *opts, int vocab_size);
void sl_sampler_destroy(sl_sampler **self);

/* Replaces the options (a node takes them from each request). */
void sl_sampler_configure(sl_sampler *self, const sl_sampling *opts);

/* The chosen token id for logits (vocab_size) as the index-th generated token. The random draw
 * depends only on (seed, index), not on earlier calls: a pipeline whose top node restarts
 * mid-sequence samples exactly what the monolithic runner samples. */
int32_t sl_sampler_next(sl_sampler *self, const float *logits, uint64_t index);

#endif
