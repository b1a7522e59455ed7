/* bench_mem.h — the STREAM-style triad the benchmarks measure the memory with, on a pool's
 * threads, so that a floor measured by sl_kern_stream is checked against a known yardstick in the
 * same run. Header-only: the tools share no library of their own. */
#ifndef SL_TOOLS_BENCH_MEM_H
#define SL_TOOLS_BENCH_MEM_H

#include "clock.h"
#include "pool.h"

#include <stddef.h>
#include <stdlib.h>

/* a = x + 3 y over three arrays of n floats, far beyond the caches. */
typedef struct bench_triad {
    sl_pool *pool; /* borrowed */
    float *a, *x, *y;
    size_t n;
} bench_triad;

/* 3 arrays of 128 MB, filled (so that their pages exist); false when out of memory. */
static inline bool bench_triad_init(bench_triad *t, sl_pool *pool)
{
    *t = (bench_triad){.pool = pool, .n = (size_t)32 << 20};
    t->a = malloc(t->n * sizeof(float));
    t->x = malloc(t->n * sizeof(float));
    t->y = malloc(t->n * sizeof(float));
    if (!t->a || !t->x || !t->y) return false;
    for (size_t i = 0; i < t->n; i++)
        t->a[i] = t->x[i] = t->y[i] = (float)(i % 7);
    return true;
}

static inline void bench_triad_free(bench_triad *t)
{
    free(t->a);
    free(t->x);
    free(t->y);
}

static inline void bench_triad_share(void *ctx, int share)
{
    bench_triad *t = ctx;
    size_t per = t->n / (size_t)sl_pool_threads(t->pool), from = per * (size_t)share;
    float *restrict a = t->a;
    const float *restrict x = t->x, *restrict y = t->y;
    for (size_t i = from; i < from + per; i++)
        a[i] = x[i] + 3.0f * y[i];
}

/* Seconds for one triad. */
static inline double bench_triad_time(bench_triad *t)
{
    double t0 = sl_now();
    sl_pool_run(t->pool, sl_pool_threads(t->pool), bench_triad_share, t, 0);
    return sl_now() - t0;
}

/* Its bandwidth in GB/s for a time of `seconds` (3 arrays moved). */
static inline double bench_triad_gbs(const bench_triad *t, double seconds)
{
    return 3.0 * sizeof(float) * (double)t->n / seconds / 1e9;
}

#endif
