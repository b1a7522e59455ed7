/* kern_portable.c — the kernels in plain C, for any CPU: weights widened a piece of a row at a
 * time (sl_wmat_row_f32) and multiplied with eight partial sums. Built without -march (see the
 * Makefile), so this really is the baseline path. */
#include "kern_impl.h"

#include <string.h>

enum { PIECE = 256 };

/* x . row o of w, in pieces of PIECE weights, eight lanes of partial sums. */
static float row_dot(const sl_wmat *w, int o, const float *x)
{
    float piece[PIECE], lane[8] = {0};
    for (int c0 = 0; c0 < w->in; c0 += PIECE) {
        int n = w->in - c0 < PIECE ? w->in - c0 : PIECE;
        sl_wmat_row_f32(w, o, c0, n, piece);
        for (int c = 0; c < n; c++)
            lane[c % 8] += piece[c] * x[c0 + c];
    }
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

static void rows(const sl_kern_mv *mv, int o0, int o1)
{
    for (int o = o0; o < o1; o++)
        mv->out[o] = sl_kern_base(mv, o) + row_dot(mv->w, o, mv->x);
}

static void conv1d_band(float *part, const float *x, const sl_wmat *w, int c0, int c1)
{
    const int OC = w->out;
    memset(part, 0, (size_t)OC * sizeof *part);
    for (int c = c0; c < c1; c++) {
        const float xc = x[c], *row = (const float *)w->data + (size_t)c * OC;
        for (int o = 0; o < OC; o++)
            part[o] += xc * row[o];
    }
}

static void conv1d_sum(const sl_kern_mv *mv, const float *parts, int n)
{
    const int OC = mv->w->out;
    for (int o = 0; o < OC; o++) {
        float v = sl_kern_base(mv, o);
        for (int b = 0; b < n; b++)
            v += parts[(size_t)b * OC + o];
        mv->out[o] = v;
    }
}

static void tile(float *dst, const sl_wmat *w, int o0, int o1)
{
    for (int o = o0; o < o1; o++)
        sl_wmat_row_f32(w, o, 0, w->in, dst + (size_t)(o - o0) * w->in);
}

static uint64_t stream(const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t part = n / SL_KERN_STREAMS / 8 * 8;
    uint64_t acc[SL_KERN_STREAMS] = {0}, v;
    for (size_t i = 0; i < part; i += 8)
        for (int k = 0; k < SL_KERN_STREAMS; k++) {
            memcpy(&v, s + k * part + i, 8);
            acc[k] ^= v;
        }
    for (size_t i = SL_KERN_STREAMS * part; i < n; i++)
        acc[0] ^= s[i];
    for (int k = 1; k < SL_KERN_STREAMS; k++)
        acc[0] ^= acc[k];
    return acc[0];
}

const sl_kern_fns sl_kern_fns_portable = {
    .rows = {rows, rows, rows, rows},
    .conv1d_band = conv1d_band,
    .conv1d_sum = conv1d_sum,
    .tile = {tile, tile, tile, tile},
    .stream = stream,
};
