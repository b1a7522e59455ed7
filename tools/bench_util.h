/* bench_util.h — what the benchmarks of weight formats share: the STREAM-style triad they measure
 * the memory with (on a pool's threads, so that a floor measured by sl_kern_stream is checked
 * against a known yardstick in the same run), medians over rounds of one field of the rounds'
 * records, and a Markdown row per weight format. Header-only: the tools share no library of their
 * own. */
#ifndef SL_TOOLS_BENCH_UTIL_H
#define SL_TOOLS_BENCH_UTIL_H

#include "clock.h"
#include "pool.h"
#include "wmat.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BENCH_MAX_ROUNDS = 64 };

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

/* Median over `rounds` records of `size` bytes from `records` of the double at byte offset
 * `field` of each, in ms (rounds <= BENCH_MAX_ROUNDS). */
static inline double bench_median_ms(const void *records, size_t size, int rounds, size_t field)
{
    double v[BENCH_MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        memcpy(&v[r], (const char *)records + (size_t)r * size + field, sizeof v[r]);
    return sl_median(v, rounds) * 1e3;
}

/* "| label | v[f32] | v[f16] | v[bf16] | v[q8_0] |", each value printed with fmt. */
static inline void bench_format_row(const char *label, const double *v, const char *fmt)
{
    printf("| %s |", label);
    for (int f = 0; f < SL_WF_COUNT; f++)
        printf(fmt, v[f]);
    printf("\n");
}

#endif
