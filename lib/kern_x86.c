/* kern_x86.c — the AVX2 and AVX-512 kernels. Every function carries its target attribute and
 * the file is built without -march, so each path holds only the instructions it names and
 * kern.c picks one at run time.
 *
 * ROWS kernels compute four outputs at once (four rows streamed together, one accumulator
 * each) and the leftover ones alone, with the same operations in the same order, so an
 * output's bits do not depend on how the outputs were split between threads. */
#include "kern_impl.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/* Bytes per weight of the 16- and 32-bit formats. */
static size_t elem_size(int fmt) { return fmt == SL_WF_F32 ? 4 : 2; }

/* ---------------------------------------------------------------- AVX2 (8 lanes) */

/* 8 weights at element c of a row, widened to F32. */
AVX2 static inline __m256 load8(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return _mm256_loadu_ps((const float *)row + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (fmt == SL_WF_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 static inline float elem_f32(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return ((const float *)row)[c];
    uint16_t h = ((const uint16_t *)row)[c];
    if (fmt == SL_WF_F16) return _cvtsh_ss(h);
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

AVX2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Outputs [o, o + R) of a 16/32-bit ROWS matrix (R = 4 or 1: the same per-row arithmetic). */
AVX2 static inline void rows8_group(const sl_kern_mv *mv, int o, int R, int fmt)
{
    const int C = mv->w->in, full = C & ~7;
    const size_t rb = (size_t)C * elem_size(fmt);
    const char *r0 = (const char *)mv->w->data + (size_t)o * rb;
    const float *x = mv->x;
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int c = 0; c < full; c += 8) {
        __m256 xv = _mm256_loadu_ps(x + c);
        for (int r = 0; r < R; r++)
            a[r] = _mm256_fmadd_ps(load8(r0 + r * rb, c, fmt), xv, a[r]);
    }
    for (int r = 0; r < R; r++) {
        float dot = hsum8(a[r]);
        for (int c = full; c < C; c++)
            dot = fmaf(elem_f32(r0 + r * rb, c, fmt), x[c], dot);
        mv->out[o + r] = sl_kern_base(mv, o + r) + dot;
    }
}

AVX2 static inline void rows8(const sl_kern_mv *mv, int o0, int o1, int fmt)
{
    int o = o0;
    for (; o + 4 <= o1; o += 4)
        rows8_group(mv, o, 4, fmt);
    for (; o < o1; o++)
        rows8_group(mv, o, 1, fmt);
}

AVX2 static void rows_f32_avx2(const sl_kern_mv *mv, int o0, int o1) { rows8(mv, o0, o1, SL_WF_F32); }
AVX2 static void rows_f16_avx2(const sl_kern_mv *mv, int o0, int o1) { rows8(mv, o0, o1, SL_WF_F16); }
AVX2 static void rows_bf16_avx2(const sl_kern_mv *mv, int o0, int o1) { rows8(mv, o0, o1, SL_WF_BF16); }

/* 8 int8 values widened to F32. */
AVX2 static inline __m256 q8_load8(const int8_t *q)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

/* Outputs [o, o + R) of a Q8_0 matrix: per block, the dot of its 32 values with x, times d. */
AVX2 static inline void q8_rows8_group(const sl_kern_mv *mv, int o, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const size_t rb = (size_t)nb * SL_Q8_BLOCK;
    const int8_t *q0 = (const int8_t *)mv->w->data + (size_t)o * rb;
    const uint16_t *s0 = mv->w->scales + (size_t)o * nb;
    const float *x = mv->x;
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int j = 0; j < nb; j++) {
        const float *xb = x + j * SL_Q8_BLOCK;
        __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
               x3 = _mm256_loadu_ps(xb + 24);
        for (int r = 0; r < R; r++) {
            const int8_t *q = q0 + r * rb + j * SL_Q8_BLOCK;
            __m256 t = _mm256_mul_ps(q8_load8(q), x0);
            t = _mm256_fmadd_ps(q8_load8(q + 8), x1, t);
            t = _mm256_fmadd_ps(q8_load8(q + 16), x2, t);
            t = _mm256_fmadd_ps(q8_load8(q + 24), x3, t);
            a[r] = _mm256_fmadd_ps(t, _mm256_set1_ps(_cvtsh_ss(s0[(size_t)r * nb + j])), a[r]);
        }
    }
    for (int r = 0; r < R; r++)
        mv->out[o + r] = sl_kern_base(mv, o + r) + hsum8(a[r]);
}

AVX2 static void rows_q8_avx2(const sl_kern_mv *mv, int o0, int o1)
{
    int o = o0;
    for (; o + 4 <= o1; o += 4)
        q8_rows8_group(mv, o, 4);
    for (; o < o1; o++)
        q8_rows8_group(mv, o, 1);
}

/* Conv1D F32: out[o0, o1) starts at its base, then gains x[c] * row c for every c, four rows
 * of W streamed at a time; each output sees the same fused multiply-adds in the same order. */
AVX2 static void conv1d_avx2(const sl_kern_mv *mv, int o0, int o1)
{
    const int C = mv->w->in, OC = mv->w->out, n = o1 - o0, full = n & ~7;
    const float *w = (const float *)mv->w->data + o0, *x = mv->x;
    float *out = mv->out + o0;
    for (int i = 0; i < n; i++)
        out[i] = sl_kern_base(mv, o0 + i);
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        const float *w0 = w + (size_t)c * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
        __m256 x0 = _mm256_set1_ps(x[c]), x1 = _mm256_set1_ps(x[c + 1]), x2 = _mm256_set1_ps(x[c + 2]),
               x3 = _mm256_set1_ps(x[c + 3]);
        for (int i = 0; i < full; i += 8) {
            __m256 a = _mm256_loadu_ps(out + i);
            a = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w0 + i), a);
            a = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w1 + i), a);
            a = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w2 + i), a);
            a = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w3 + i), a);
            _mm256_storeu_ps(out + i, a);
        }
        for (int i = full; i < n; i++)
            out[i] = fmaf(x[c + 3], w3[i], fmaf(x[c + 2], w2[i], fmaf(x[c + 1], w1[i], fmaf(x[c], w0[i], out[i]))));
    }
    for (; c < C; c++) {
        const float *wc = w + (size_t)c * OC;
        __m256 xc = _mm256_set1_ps(x[c]);
        for (int i = 0; i < full; i += 8)
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(xc, _mm256_loadu_ps(wc + i), _mm256_loadu_ps(out + i)));
        for (int i = full; i < n; i++)
            out[i] = fmaf(x[c], wc[i], out[i]);
    }
}

/* Tiles: rows are contiguous in the 16-bit formats, so a tile is one run of elements. */
AVX2 static inline void widen8(float *dst, const void *src, size_t n, int fmt)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load8((const char *)src + i * 2, 0, fmt));
    for (; i < n; i++)
        dst[i] = elem_f32((const char *)src + i * 2, 0, fmt);
}

AVX2 static void tile_f16_avx2(float *dst, const sl_wmat *w, int o0, int o1)
{
    widen8(dst, (const uint16_t *)w->data + (size_t)o0 * w->in, (size_t)(o1 - o0) * w->in, SL_WF_F16);
}

AVX2 static void tile_bf16_avx2(float *dst, const sl_wmat *w, int o0, int o1)
{
    widen8(dst, (const uint16_t *)w->data + (size_t)o0 * w->in, (size_t)(o1 - o0) * w->in, SL_WF_BF16);
}

AVX2 static void tile_q8_avx2(float *dst, const sl_wmat *w, int o0, int o1)
{
    const int C = w->in, nb = sl_wmat_q8_blocks(C), full = C / SL_Q8_BLOCK;
    for (int o = o0; o < o1; o++) {
        const int8_t *q = (const int8_t *)w->data + (size_t)o * nb * SL_Q8_BLOCK;
        const uint16_t *s = w->scales + (size_t)o * nb;
        float *d = dst + (size_t)(o - o0) * C;
        for (int j = 0; j < full; j++) {
            __m256 scale = _mm256_set1_ps(_cvtsh_ss(s[j]));
            for (int k = 0; k < SL_Q8_BLOCK; k += 8)
                _mm256_storeu_ps(d + j * SL_Q8_BLOCK + k, _mm256_mul_ps(scale, q8_load8(q + j * SL_Q8_BLOCK + k)));
        }
        for (int c = full * SL_Q8_BLOCK; c < C; c++)
            d[c] = _cvtsh_ss(s[full]) * (float)q[c];
    }
}

const sl_kern_fns sl_kern_fns_avx2 = {
    .rows = {rows_f32_avx2, rows_f16_avx2, rows_bf16_avx2, rows_q8_avx2},
    .conv1d = conv1d_avx2,
    .tile = {NULL, tile_f16_avx2, tile_bf16_avx2, tile_q8_avx2},
};

/* ---------------------------------------------------------------- AVX-512 (16 lanes) */

/* 16 weights at element c of a row, widened to F32; the masked form reads only lanes in m. */
AVX512 static inline __m512 load16(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return _mm512_loadu_ps((const float *)row + c);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c));
    if (fmt == SL_WF_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 static inline __m512 load16_masked(const void *row, int c, __mmask16 m, int fmt)
{
    if (fmt == SL_WF_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c);
    if (fmt == SL_WF_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 static inline void rows16_group(const sl_kern_mv *mv, int o, int R, int fmt)
{
    const int C = mv->w->in, full = C & ~15;
    const __mmask16 tail = (__mmask16)((1u << (C & 15)) - 1);
    const size_t rb = (size_t)C * elem_size(fmt);
    const char *r0 = (const char *)mv->w->data + (size_t)o * rb;
    const float *x = mv->x;
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int c = 0; c < full; c += 16) {
        __m512 xv = _mm512_loadu_ps(x + c);
        for (int r = 0; r < R; r++)
            a[r] = _mm512_fmadd_ps(load16(r0 + r * rb, c, fmt), xv, a[r]);
    }
    if (tail) {
        __m512 xv = _mm512_maskz_loadu_ps(tail, x + full);
        for (int r = 0; r < R; r++)
            a[r] = _mm512_fmadd_ps(load16_masked(r0 + r * rb, full, tail, fmt), xv, a[r]);
    }
    for (int r = 0; r < R; r++)
        mv->out[o + r] = sl_kern_base(mv, o + r) + _mm512_reduce_add_ps(a[r]);
}

AVX512 static inline void rows16(const sl_kern_mv *mv, int o0, int o1, int fmt)
{
    int o = o0;
    for (; o + 4 <= o1; o += 4)
        rows16_group(mv, o, 4, fmt);
    for (; o < o1; o++)
        rows16_group(mv, o, 1, fmt);
}

AVX512 static void rows_f32_avx512(const sl_kern_mv *mv, int o0, int o1) { rows16(mv, o0, o1, SL_WF_F32); }
AVX512 static void rows_f16_avx512(const sl_kern_mv *mv, int o0, int o1) { rows16(mv, o0, o1, SL_WF_F16); }
AVX512 static void rows_bf16_avx512(const sl_kern_mv *mv, int o0, int o1) { rows16(mv, o0, o1, SL_WF_BF16); }

/* 16 int8 values widened to F32. */
AVX512 static inline __m512 q8_load16(const int8_t *q)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
}

/* The F32 scales of blocks [j0, j0 + 16) (fewer at the end of the row: the rest 0). */
AVX512 static inline __m512 q8_scales16(const uint16_t *s, int j0, int nb)
{
    __mmask16 m = nb - j0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nb - j0)) - 1);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + j0));
}

AVX512 static inline void q8_rows16_group(const sl_kern_mv *mv, int o, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const size_t rb = (size_t)nb * SL_Q8_BLOCK;
    const int8_t *q0 = (const int8_t *)mv->w->data + (size_t)o * rb;
    const uint16_t *s0 = mv->w->scales + (size_t)o * nb;
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    float d[4][16];
    for (int j0 = 0; j0 < nb; j0 += 16) {
        for (int r = 0; r < R; r++)
            _mm512_storeu_ps(d[r], q8_scales16(s0 + (size_t)r * nb, j0, nb));
        for (int j = j0; j < nb && j < j0 + 16; j++) {
            const float *xb = mv->x + j * SL_Q8_BLOCK;
            __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
            for (int r = 0; r < R; r++) {
                const int8_t *q = q0 + r * rb + j * SL_Q8_BLOCK;
                __m512 t = _mm512_fmadd_ps(q8_load16(q + 16), x1, _mm512_mul_ps(q8_load16(q), x0));
                a[r] = _mm512_fmadd_ps(t, _mm512_set1_ps(d[r][j - j0]), a[r]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        mv->out[o + r] = sl_kern_base(mv, o + r) + _mm512_reduce_add_ps(a[r]);
}

AVX512 static void rows_q8_avx512(const sl_kern_mv *mv, int o0, int o1)
{
    int o = o0;
    for (; o + 4 <= o1; o += 4)
        q8_rows16_group(mv, o, 4);
    for (; o < o1; o++)
        q8_rows16_group(mv, o, 1);
}

AVX512 static void conv1d_avx512(const sl_kern_mv *mv, int o0, int o1)
{
    const int C = mv->w->in, OC = mv->w->out, n = o1 - o0, full = n & ~15;
    const __mmask16 tail = (__mmask16)((1u << (n & 15)) - 1);
    const float *w = (const float *)mv->w->data + o0, *x = mv->x;
    float *out = mv->out + o0;
    for (int i = 0; i < n; i++)
        out[i] = sl_kern_base(mv, o0 + i);
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        const float *w0 = w + (size_t)c * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
        __m512 x0 = _mm512_set1_ps(x[c]), x1 = _mm512_set1_ps(x[c + 1]), x2 = _mm512_set1_ps(x[c + 2]),
               x3 = _mm512_set1_ps(x[c + 3]);
        for (int i = 0; i < full; i += 16) {
            __m512 a = _mm512_loadu_ps(out + i);
            a = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w0 + i), a);
            a = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w1 + i), a);
            a = _mm512_fmadd_ps(x2, _mm512_loadu_ps(w2 + i), a);
            a = _mm512_fmadd_ps(x3, _mm512_loadu_ps(w3 + i), a);
            _mm512_storeu_ps(out + i, a);
        }
        if (tail) {
            __m512 a = _mm512_maskz_loadu_ps(tail, out + full);
            a = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(tail, w0 + full), a);
            a = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(tail, w1 + full), a);
            a = _mm512_fmadd_ps(x2, _mm512_maskz_loadu_ps(tail, w2 + full), a);
            a = _mm512_fmadd_ps(x3, _mm512_maskz_loadu_ps(tail, w3 + full), a);
            _mm512_mask_storeu_ps(out + full, tail, a);
        }
    }
    for (; c < C; c++) {
        const float *wc = w + (size_t)c * OC;
        __m512 xc = _mm512_set1_ps(x[c]);
        for (int i = 0; i < full; i += 16)
            _mm512_storeu_ps(out + i, _mm512_fmadd_ps(xc, _mm512_loadu_ps(wc + i), _mm512_loadu_ps(out + i)));
        if (tail)
            _mm512_mask_storeu_ps(
                out + full, tail,
                _mm512_fmadd_ps(xc, _mm512_maskz_loadu_ps(tail, wc + full), _mm512_maskz_loadu_ps(tail, out + full)));
    }
}

AVX512 static inline void widen16(float *dst, const uint16_t *src, size_t n, int fmt)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, load16(src + i, 0, fmt));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, load16_masked(src + i, 0, m, fmt));
    }
}

AVX512 static void tile_f16_avx512(float *dst, const sl_wmat *w, int o0, int o1)
{
    widen16(dst, (const uint16_t *)w->data + (size_t)o0 * w->in, (size_t)(o1 - o0) * w->in, SL_WF_F16);
}

AVX512 static void tile_bf16_avx512(float *dst, const sl_wmat *w, int o0, int o1)
{
    widen16(dst, (const uint16_t *)w->data + (size_t)o0 * w->in, (size_t)(o1 - o0) * w->in, SL_WF_BF16);
}

AVX512 static void tile_q8_avx512(float *dst, const sl_wmat *w, int o0, int o1)
{
    const int C = w->in, nb = sl_wmat_q8_blocks(C);
    for (int o = o0; o < o1; o++) {
        const int8_t *q = (const int8_t *)w->data + (size_t)o * nb * SL_Q8_BLOCK;
        const uint16_t *s = w->scales + (size_t)o * nb;
        float *d = dst + (size_t)(o - o0) * C;
        for (int c = 0; c < C; c += 16) {
            __m512 v = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(s[c / SL_Q8_BLOCK])), q8_load16(q + c));
            if (C - c >= 16)
                _mm512_storeu_ps(d + c, v);
            else
                _mm512_mask_storeu_ps(d + c, (__mmask16)((1u << (C - c)) - 1), v);
        }
    }
}

const sl_kern_fns sl_kern_fns_avx512 = {
    .rows = {rows_f32_avx512, rows_f16_avx512, rows_bf16_avx512, rows_q8_avx512},
    .conv1d = conv1d_avx512,
    .tile = {NULL, tile_f16_avx512, tile_bf16_avx512, tile_q8_avx512},
};

/* ---------------------------------------------------------------- AVX-512 VNNI (Q8_0 in int8) */

/* x in int8 blocks: d = max |x| / 127, q = x / d rounded to nearest even; xcorr = 128 d sum(q)
 * undoes the kernel's +128 on the weights (vpdpbusd multiplies unsigned by signed bytes). */
VNNI static void quantize_x_vnni(int8_t *xq, float *xd, float *xcorr, const float *x, int nb)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int j = 0; j < nb; j++) {
        __m512 v0 = _mm512_loadu_ps(x + j * SL_Q8_BLOCK), v1 = _mm512_loadu_ps(x + j * SL_Q8_BLOCK + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
        float d = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(inv)));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(inv)));
        _mm_storeu_si128((__m128i *)(xq + j * SL_Q8_BLOCK), _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(xq + j * SL_Q8_BLOCK + 16), _mm512_cvtsepi32_epi8(i1));
        xd[j] = d;
        xcorr[j] = 128.0f * d * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
    int nb2 = (nb + 1) & ~1, nb16 = (nb + 15) & ~15;
    memset(xq + nb * SL_Q8_BLOCK, 0, (size_t)(nb2 - nb) * SL_Q8_BLOCK);
    for (int j = nb; j < nb16; j++)
        xd[j] = xcorr[j] = 0.0f;
}

/* Outputs [o, o + R): per pair of blocks, vpdpbusd of (q_w + 128) by q_x gives 8 lanes per
 * block; they are scaled by d_w * d_x and summed in F32, and sum d_w * xcorr taken off. */
VNNI static inline void q8_vnni_group(const sl_kern_mv *mv, int o, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const size_t rb = (size_t)nb * SL_Q8_BLOCK;
    const int8_t *q0 = (const int8_t *)mv->w->data + (size_t)o * rb;
    const uint16_t *s0 = mv->w->scales + (size_t)o * nb;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 a[4], corr[4], sc[4];
    for (int r = 0; r < R; r++)
        a[r] = corr[r] = _mm512_setzero_ps();
    for (int j0 = 0; j0 < nb; j0 += 16) {
        __m512 xd = _mm512_loadu_ps(mv->xd + j0), xc = _mm512_loadu_ps(mv->xcorr + j0);
        for (int r = 0; r < R; r++) {
            __m512 dw = q8_scales16(s0 + (size_t)r * nb, j0, nb);
            corr[r] = _mm512_fmadd_ps(dw, xc, corr[r]);
            sc[r] = _mm512_mul_ps(dw, xd);
        }
        for (int j = j0; j < nb && j < j0 + 16; j += 2) {
            const __mmask64 m = j + 1 < nb ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
            const __m512i xv = _mm512_loadu_si512(mv->xq + j * SL_Q8_BLOCK);
            const __m512i idx = _mm512_add_epi32(pair, _mm512_set1_epi32(j - j0));
            for (int r = 0; r < R; r++) {
                __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, q0 + r * rb + j * SL_Q8_BLOCK), flip);
                __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
                a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(idx, sc[r]), a[r]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        mv->out[o + r] = sl_kern_base(mv, o + r) + (_mm512_reduce_add_ps(a[r]) - _mm512_reduce_add_ps(corr[r]));
}

VNNI static void rows_q8_vnni(const sl_kern_mv *mv, int o0, int o1)
{
    int o = o0;
    for (; o + 4 <= o1; o += 4)
        q8_vnni_group(mv, o, 4);
    for (; o < o1; o++)
        q8_vnni_group(mv, o, 1);
}

const sl_kern_fns sl_kern_fns_avx512vnni = {
    .rows = {rows_f32_avx512, rows_f16_avx512, rows_bf16_avx512, rows_q8_vnni},
    .conv1d = conv1d_avx512,
    .tile = {NULL, tile_f16_avx512, tile_bf16_avx512, tile_q8_avx512},
    .quantize_x = quantize_x_vnni,
};

#endif
