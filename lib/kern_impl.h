/* kern_impl.h — what kern.c shares with the instruction-set files (kern_portable.c,
 * kern_x86.c): one matrix–vector product's arguments and the table of kernels each set fills.
 * Internal to the kern module. */
#ifndef SL_KERN_IMPL_H
#define SL_KERN_IMPL_H

#include "wmat.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One matrix–vector product, shared by the threads that compute its outputs. */
typedef struct sl_kern_mv {
    float *out;
    const float *x; /* C floats; for Q8_0 padded with zeros to whole blocks */
    const sl_wmat *w;
    const float *bias; /* may be NULL */
    bool accumulate;
    /* x quantised for an int8 Q8_0 kernel (quantize_x), padded with zeros as quantize_x says */
    const int8_t *xq;
    const float *xd;    /* per block: x's scale */
    const float *xcorr; /* per block: 128 * scale * sum of its int8 values */
} sl_kern_mv;

/* Computes out[o] = base + x . (weights of output o) for o in [o0, o1), where base is bias[o]
 * (0 without bias) plus, with accumulate, out[o]'s previous value. */
typedef void (*sl_kern_mv_fn)(const sl_kern_mv *mv, int o0, int o1);

/* part (OC floats) = the sum over rows c in [c0, c1) of x[c] * row c of an F32 Conv1D matrix. */
typedef void (*sl_kern_band_fn)(float *part, const float *x, const sl_wmat *w, int c0, int c1);

/* out[o] = base + parts[0][o] + ... + parts[n-1][o] (each part OC floats, added in order). */
typedef void (*sl_kern_sum_fn)(const sl_kern_mv *mv, const float *parts, int n);

/* dst ((o1-o0) x C floats) = outputs [o0, o1) of w (ROWS layout) dequantised. */
typedef void (*sl_kern_tile_fn)(float *dst, const sl_wmat *w, int o0, int o1);

/* Quantises x (C floats padded with zeros to nb blocks of 32) into xq (round_up(nb, 2) blocks,
 * the extra zeroed), xd and xcorr (round_up(nb, 16) floats, the extra zeroed). */
typedef void (*sl_kern_quantize_fn)(int8_t *xq, float *xd, float *xcorr, const float *x, int nb);

/* Reads bytes [0, n) of p once, as several streams at a time, and folds them into a value. */
typedef uint64_t (*sl_kern_stream_fn)(const void *p, size_t n);

typedef struct sl_kern_fns {
    sl_kern_mv_fn rows[SL_WF_COUNT]; /* ROWS layout, by format */
    sl_kern_band_fn conv1d_band;     /* F32 in the Conv1D layout: a band of rows ... */
    sl_kern_sum_fn conv1d_sum;       /* ... and the bands added up */
    sl_kern_tile_fn tile[SL_WF_COUNT];
    sl_kern_quantize_fn quantize_x; /* non-NULL: rows[SL_WF_Q8_0] reads xq, xd, xcorr */
    sl_kern_stream_fn stream;
} sl_kern_fns;

extern const sl_kern_fns sl_kern_fns_portable;
#if defined(__x86_64__)
extern const sl_kern_fns sl_kern_fns_avx2, sl_kern_fns_avx512, sl_kern_fns_avx512vnni;
#endif

/* Streams read together by sl_kern_fns.stream: one stream per thread does not keep enough
 * loads in flight to reach the memory's bandwidth (measured: 31 GB/s with one, 35 with 4-8). */
#define SL_KERN_STREAMS 8

/* base of output o, as sl_kern_mv_fn says (the order of sl_matmul_forward: bias into out first). */
static inline float sl_kern_base(const sl_kern_mv *mv, int o)
{
    float b = mv->bias ? mv->bias[o] : 0.0f;
    return mv->accumulate ? mv->out[o] + b : b;
}

#endif
