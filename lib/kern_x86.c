/* kern_x86.c — the AVX2 and AVX-512 kernels. Every function carries its target attribute and
 * the file is built without -march, so each path holds only the instructions it names and
 * kern.c picks one at run time.
 *
 * Streaming: a thread given outputs [o0, o1) of a ROWS matrix reads GROUP rows at once, one from
 * each of GROUP equal parts of its range (GROUP streams far apart), and asks for each stream's
 * bytes PF_AHEAD ahead with software prefetch: measured on a 2-core VM, one stream per thread
 * reaches 24-30 GB/s, eight prefetched streams 42 (the read-only floor with prefetch: 45). The
 * leftover rows go one at a time through the same code, so an output's bits do not depend on
 * how the outputs were split between threads. Conv1D (F32 blocks): a thread's columns are read
 * four rows at a time, and the rows PF_ROWS below are prefetched (each row's run of columns is
 * short and in its own page, where the hardware prefetchers do not follow). */
#include "kern_impl.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/* The kernels' helpers take the format as a constant: inlined, each kernel is specialised. */
#define INLINE static inline __attribute__((always_inline))

enum { GROUP = 8, PF_AHEAD = 2048, PF_ROWS = 8, LINE = 64 };

/* Bytes per weight of the 16- and 32-bit formats. */
static size_t elem_size(int fmt) { return fmt == SL_WF_F32 ? 4 : 2; }

/* ---------------------------------------------------------------- AVX2 (8 lanes) */

/* 8 weights at element c of a row, widened to F32. */
AVX2 INLINE __m256 load8(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return _mm256_loadu_ps((const float *)row + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (fmt == SL_WF_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 INLINE float elem_f32(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return ((const float *)row)[c];
    uint16_t h = ((const uint16_t *)row)[c];
    if (fmt == SL_WF_F16) return _cvtsh_ss(h);
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

AVX2 INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Outputs o + k*stride (k < R) of a 16/32-bit ROWS matrix: one accumulator per row, fed in the
 * order of c, whatever R is. */
AVX2 INLINE void rows8_group(const sl_kern_mv *mv, int o, int stride, int R, int fmt)
{
    const int C = mv->w->in, es = (int)elem_size(fmt), line = LINE / es, lines = C / line * line, vecs = C & ~7;
    const float *x = mv->x;
    const char *row[GROUP];
    __m256 a[GROUP];
    for (int k = 0; k < R; k++) {
        row[k] = (const char *)mv->w->data + (size_t)(o + k * stride) * C * es;
        a[k] = _mm256_setzero_ps();
    }
    int c = 0;
    for (; c < lines; c += line) {
        for (int k = 0; k < R; k++)
            _mm_prefetch(row[k] + (size_t)c * es + PF_AHEAD, _MM_HINT_T0);
        for (int v = 0; v < line; v += 8) {
            __m256 xv = _mm256_loadu_ps(x + c + v);
            for (int k = 0; k < R; k++)
                a[k] = _mm256_fmadd_ps(load8(row[k], c + v, fmt), xv, a[k]);
        }
    }
    for (; c < vecs; c += 8) {
        __m256 xv = _mm256_loadu_ps(x + c);
        for (int k = 0; k < R; k++)
            a[k] = _mm256_fmadd_ps(load8(row[k], c, fmt), xv, a[k]);
    }
    for (int k = 0; k < R; k++) {
        float dot = hsum8(a[k]);
        for (int t = vecs; t < C; t++)
            dot = fmaf(elem_f32(row[k], t, fmt), x[t], dot);
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + dot;
    }
}

AVX2 INLINE void rows8(const sl_kern_mv *mv, int o0, int o1, int fmt)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        rows8_group(mv, o0 + i, q, GROUP, fmt);
    for (int o = o0 + q * GROUP; o < o1; o++)
        rows8_group(mv, o, 0, 1, fmt);
}

AVX2 static void rows_f32_avx2(const sl_kern_mv *mv, int o0, int o1) { rows8(mv, o0, o1, SL_WF_F32); }
AVX2 static void rows_f16_avx2(const sl_kern_mv *mv, int o0, int o1) { rows8(mv, o0, o1, SL_WF_F16); }
AVX2 static void rows_bf16_avx2(const sl_kern_mv *mv, int o0, int o1) { rows8(mv, o0, o1, SL_WF_BF16); }

/* 8 int8 values widened to F32. */
AVX2 INLINE __m256 q8_load8(const int8_t *q)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

/* Q8_0 outputs o + k*stride: per block, the dot of its 32 values with x, times d. */
AVX2 INLINE void q8_rows8_group(const sl_kern_mv *mv, int o, int stride, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const int8_t *q[GROUP];
    const uint16_t *s[GROUP];
    __m256 a[GROUP];
    for (int k = 0; k < R; k++) {
        q[k] = (const int8_t *)mv->w->data + (size_t)(o + k * stride) * nb * SL_Q8_BLOCK;
        s[k] = mv->w->scales + (size_t)(o + k * stride) * nb;
        a[k] = _mm256_setzero_ps();
    }
    for (int j = 0; j < nb; j++) {
        const float *xb = mv->x + j * SL_Q8_BLOCK;
        __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
               x3 = _mm256_loadu_ps(xb + 24);
        for (int k = 0; k < R; k++) {
            const int8_t *b = q[k] + j * SL_Q8_BLOCK;
            if (j % 2 == 0) _mm_prefetch((const char *)b + PF_AHEAD, _MM_HINT_T0);
            __m256 t = _mm256_mul_ps(q8_load8(b), x0);
            t = _mm256_fmadd_ps(q8_load8(b + 8), x1, t);
            t = _mm256_fmadd_ps(q8_load8(b + 16), x2, t);
            t = _mm256_fmadd_ps(q8_load8(b + 24), x3, t);
            a[k] = _mm256_fmadd_ps(t, _mm256_set1_ps(_cvtsh_ss(s[k][j])), a[k]);
        }
    }
    for (int k = 0; k < R; k++)
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + hsum8(a[k]);
}

AVX2 static void rows_q8_avx2(const sl_kern_mv *mv, int o0, int o1)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        q8_rows8_group(mv, o0 + i, q, GROUP);
    for (int o = o0 + q * GROUP; o < o1; o++)
        q8_rows8_group(mv, o, 0, 1);
}

/* Conv1D F32: out[o0, o1) starts at its base, then gains x[c] * row c for every c, four rows
 * at a time; each output sees the same fused multiply-adds in the same order. */
AVX2 static void conv1d_avx2(const sl_kern_mv *mv, int o0, int o1)
{
    const int C = mv->w->in, OC = mv->w->out, n = o1 - o0, full = n & ~7;
    const float *w = (const float *)mv->w->data + o0, *x = mv->x;
    const size_t ahead = (size_t)PF_ROWS * OC;
    float *out = mv->out + o0;
    for (int i = 0; i < n; i++)
        out[i] = sl_kern_base(mv, o0 + i);
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        const float *w0 = w + (size_t)c * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
        __m256 x0 = _mm256_set1_ps(x[c]), x1 = _mm256_set1_ps(x[c + 1]), x2 = _mm256_set1_ps(x[c + 2]),
               x3 = _mm256_set1_ps(x[c + 3]);
        for (int i = 0; i < full; i += 8) {
            if (i % 16 == 0) {
                _mm_prefetch((const char *)(w0 + i + ahead), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + i + ahead), _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + i + ahead), _MM_HINT_T0);
                _mm_prefetch((const char *)(w3 + i + ahead), _MM_HINT_T0);
            }
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
AVX2 INLINE void widen8(float *dst, const void *src, size_t n, int fmt)
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

/* The tail past the streams' whole 64-byte lines, a byte at a time. */
static uint64_t stream_tail(const unsigned char *s, size_t from, size_t n)
{
    uint64_t acc = 0;
    for (size_t i = from; i < n; i++)
        acc ^= s[i];
    return acc;
}

AVX2 static uint64_t stream_avx2(const void *p, size_t n)
{
    const unsigned char *s = p;
    const size_t part = n / SL_KERN_STREAMS / LINE * LINE;
    __m256i acc[SL_KERN_STREAMS];
    for (int k = 0; k < SL_KERN_STREAMS; k++)
        acc[k] = _mm256_setzero_si256();
    for (size_t i = 0; i < part; i += LINE)
        for (int k = 0; k < SL_KERN_STREAMS; k++) {
            const __m256i *line = (const __m256i *)(s + k * part + i);
            _mm_prefetch((const char *)line + PF_AHEAD, _MM_HINT_T0);
            acc[k] = _mm256_xor_si256(acc[k], _mm256_xor_si256(_mm256_loadu_si256(line), _mm256_loadu_si256(line + 1)));
        }
    for (int k = 1; k < SL_KERN_STREAMS; k++)
        acc[0] = _mm256_xor_si256(acc[0], acc[k]);
    return (uint64_t)_mm256_extract_epi64(acc[0], 0) ^ stream_tail(s, SL_KERN_STREAMS * part, n);
}

const sl_kern_fns sl_kern_fns_avx2 = {
    .rows = {rows_f32_avx2, rows_f16_avx2, rows_bf16_avx2, rows_q8_avx2},
    .conv1d = conv1d_avx2,
    .tile = {NULL, tile_f16_avx2, tile_bf16_avx2, tile_q8_avx2},
    .stream = stream_avx2,
};

/* ---------------------------------------------------------------- AVX-512 (16 lanes) */

/* 16 weights at element c of a row, widened to F32; the masked form reads only lanes in m. */
AVX512 INLINE __m512 load16(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return _mm512_loadu_ps((const float *)row + c);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c));
    if (fmt == SL_WF_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 INLINE __m512 load16_masked(const void *row, int c, __mmask16 m, int fmt)
{
    if (fmt == SL_WF_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c);
    if (fmt == SL_WF_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 INLINE void rows16_group(const sl_kern_mv *mv, int o, int stride, int R, int fmt)
{
    const int C = mv->w->in, es = (int)elem_size(fmt), line = LINE / es, lines = C / line * line, vecs = C & ~15;
    const __mmask16 tail = (__mmask16)((1u << (C & 15)) - 1);
    const float *x = mv->x;
    const char *row[GROUP];
    __m512 a[GROUP];
    for (int k = 0; k < R; k++) {
        row[k] = (const char *)mv->w->data + (size_t)(o + k * stride) * C * es;
        a[k] = _mm512_setzero_ps();
    }
    int c = 0;
    for (; c < lines; c += line) {
        for (int k = 0; k < R; k++)
            _mm_prefetch(row[k] + (size_t)c * es + PF_AHEAD, _MM_HINT_T0);
        for (int v = 0; v < line; v += 16) {
            __m512 xv = _mm512_loadu_ps(x + c + v);
            for (int k = 0; k < R; k++)
                a[k] = _mm512_fmadd_ps(load16(row[k], c + v, fmt), xv, a[k]);
        }
    }
    for (; c < vecs; c += 16) {
        __m512 xv = _mm512_loadu_ps(x + c);
        for (int k = 0; k < R; k++)
            a[k] = _mm512_fmadd_ps(load16(row[k], c, fmt), xv, a[k]);
    }
    if (tail) {
        __m512 xv = _mm512_maskz_loadu_ps(tail, x + vecs);
        for (int k = 0; k < R; k++)
            a[k] = _mm512_fmadd_ps(load16_masked(row[k], vecs, tail, fmt), xv, a[k]);
    }
    for (int k = 0; k < R; k++)
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + _mm512_reduce_add_ps(a[k]);
}

AVX512 INLINE void rows16(const sl_kern_mv *mv, int o0, int o1, int fmt)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        rows16_group(mv, o0 + i, q, GROUP, fmt);
    for (int o = o0 + q * GROUP; o < o1; o++)
        rows16_group(mv, o, 0, 1, fmt);
}

AVX512 static void rows_f32_avx512(const sl_kern_mv *mv, int o0, int o1) { rows16(mv, o0, o1, SL_WF_F32); }
AVX512 static void rows_f16_avx512(const sl_kern_mv *mv, int o0, int o1) { rows16(mv, o0, o1, SL_WF_F16); }
AVX512 static void rows_bf16_avx512(const sl_kern_mv *mv, int o0, int o1) { rows16(mv, o0, o1, SL_WF_BF16); }

/* 16 int8 values widened to F32. */
AVX512 INLINE __m512 q8_load16(const int8_t *q)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
}

/* The F32 scales of blocks [j0, j0 + 16) (fewer at the end of the row: the rest 0). */
AVX512 INLINE __m512 q8_scales16(const uint16_t *s, int j0, int nb)
{
    __mmask16 m = nb - j0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nb - j0)) - 1);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + j0));
}

AVX512 INLINE void q8_rows16_group(const sl_kern_mv *mv, int o, int stride, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const int8_t *q[GROUP];
    const uint16_t *s[GROUP];
    __m512 a[GROUP];
    float d[GROUP][16];
    for (int k = 0; k < R; k++) {
        q[k] = (const int8_t *)mv->w->data + (size_t)(o + k * stride) * nb * SL_Q8_BLOCK;
        s[k] = mv->w->scales + (size_t)(o + k * stride) * nb;
        a[k] = _mm512_setzero_ps();
    }
    for (int j0 = 0; j0 < nb; j0 += 16) {
        for (int k = 0; k < R; k++)
            _mm512_storeu_ps(d[k], q8_scales16(s[k], j0, nb));
        for (int j = j0; j < nb && j < j0 + 16; j++) {
            const float *xb = mv->x + j * SL_Q8_BLOCK;
            __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
            for (int k = 0; k < R; k++) {
                const int8_t *b = q[k] + j * SL_Q8_BLOCK;
                if (j % 2 == 0) _mm_prefetch((const char *)b + PF_AHEAD, _MM_HINT_T0);
                __m512 t = _mm512_fmadd_ps(q8_load16(b + 16), x1, _mm512_mul_ps(q8_load16(b), x0));
                a[k] = _mm512_fmadd_ps(t, _mm512_set1_ps(d[k][j - j0]), a[k]);
            }
        }
    }
    for (int k = 0; k < R; k++)
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + _mm512_reduce_add_ps(a[k]);
}

AVX512 static void rows_q8_avx512(const sl_kern_mv *mv, int o0, int o1)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        q8_rows16_group(mv, o0 + i, q, GROUP);
    for (int o = o0 + q * GROUP; o < o1; o++)
        q8_rows16_group(mv, o, 0, 1);
}

AVX512 static void conv1d_avx512(const sl_kern_mv *mv, int o0, int o1)
{
    const int C = mv->w->in, OC = mv->w->out, n = o1 - o0, full = n & ~15;
    const __mmask16 tail = (__mmask16)((1u << (n & 15)) - 1);
    const float *w = (const float *)mv->w->data + o0, *x = mv->x;
    const size_t ahead = (size_t)PF_ROWS * OC;
    float *out = mv->out + o0;
    for (int i = 0; i < n; i++)
        out[i] = sl_kern_base(mv, o0 + i);
    int c = 0;
    for (; c + 4 <= C; c += 4) {
        const float *w0 = w + (size_t)c * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
        __m512 x0 = _mm512_set1_ps(x[c]), x1 = _mm512_set1_ps(x[c + 1]), x2 = _mm512_set1_ps(x[c + 2]),
               x3 = _mm512_set1_ps(x[c + 3]);
        for (int i = 0; i < full; i += 16) {
            _mm_prefetch((const char *)(w0 + i + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + i + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + i + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(w3 + i + ahead), _MM_HINT_T0);
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

AVX512 INLINE void widen16(float *dst, const uint16_t *src, size_t n, int fmt)
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

AVX512 static uint64_t stream_avx512(const void *p, size_t n)
{
    const unsigned char *s = p;
    const size_t part = n / SL_KERN_STREAMS / LINE * LINE;
    __m512i acc[SL_KERN_STREAMS];
    for (int k = 0; k < SL_KERN_STREAMS; k++)
        acc[k] = _mm512_setzero_si512();
    for (size_t i = 0; i < part; i += LINE)
        for (int k = 0; k < SL_KERN_STREAMS; k++) {
            _mm_prefetch((const char *)s + k * part + i + PF_AHEAD, _MM_HINT_T0);
            acc[k] = _mm512_xor_si512(acc[k], _mm512_loadu_si512(s + k * part + i));
        }
    for (int k = 1; k < SL_KERN_STREAMS; k++)
        acc[0] = _mm512_xor_si512(acc[0], acc[k]);
    return (uint64_t)_mm512_reduce_or_epi64(acc[0]) ^ stream_tail(s, SL_KERN_STREAMS * part, n);
}

const sl_kern_fns sl_kern_fns_avx512 = {
    .rows = {rows_f32_avx512, rows_f16_avx512, rows_bf16_avx512, rows_q8_avx512},
    .conv1d = conv1d_avx512,
    .tile = {NULL, tile_f16_avx512, tile_bf16_avx512, tile_q8_avx512},
    .stream = stream_avx512,
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

/* Outputs o + k*stride: per pair of blocks (one 64-byte line of a row), vpdpbusd of (q_w + 128)
 * by q_x gives 8 lanes per block; they are scaled by d_w d_x and summed in F32 with
 * -d_w xcorr per block. */
VNNI INLINE void q8_vnni_group(const sl_kern_mv *mv, int o, int stride, int R)
{
    const int nb = sl_wmat_q8_blocks(mv->w->in);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const int8_t *q[GROUP];
    const uint16_t *s[GROUP];
    __m512 a[GROUP], sc[GROUP];
    for (int k = 0; k < R; k++) {
        q[k] = (const int8_t *)mv->w->data + (size_t)(o + k * stride) * nb * SL_Q8_BLOCK;
        s[k] = mv->w->scales + (size_t)(o + k * stride) * nb;
        a[k] = _mm512_setzero_ps();
    }
    for (int j0 = 0; j0 < nb; j0 += 16) {
        __m512 xd = _mm512_loadu_ps(mv->xd + j0), xc = _mm512_loadu_ps(mv->xcorr + j0);
        for (int k = 0; k < R; k++) {
            __m512 dw = q8_scales16(s[k], j0, nb);
            a[k] = _mm512_fnmadd_ps(dw, xc, a[k]);
            sc[k] = _mm512_mul_ps(dw, xd);
        }
        for (int j = j0; j < nb && j < j0 + 16; j += 2) {
            const __mmask64 m = j + 1 < nb ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
            const __m512i xv = _mm512_loadu_si512(mv->xq + j * SL_Q8_BLOCK);
            const __m512i idx = _mm512_add_epi32(pair, _mm512_set1_epi32(j - j0));
            for (int k = 0; k < R; k++) {
                const int8_t *b = q[k] + j * SL_Q8_BLOCK;
                _mm_prefetch((const char *)b + PF_AHEAD, _MM_HINT_T0);
                __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, b), flip);
                __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
                a[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(idx, sc[k]), a[k]);
            }
        }
    }
    for (int k = 0; k < R; k++)
        mv->out[o + k * stride] = sl_kern_base(mv, o + k * stride) + _mm512_reduce_add_ps(a[k]);
}

VNNI static void rows_q8_vnni(const sl_kern_mv *mv, int o0, int o1)
{
    const int q = (o1 - o0) / GROUP;
    for (int i = 0; i < q; i++)
        q8_vnni_group(mv, o0 + i, q, GROUP);
    for (int o = o0 + q * GROUP; o < o1; o++)
        q8_vnni_group(mv, o, 0, 1);
}

const sl_kern_fns sl_kern_fns_avx512vnni = {
    .rows = {rows_f32_avx512, rows_f16_avx512, rows_bf16_avx512, rows_q8_vnni},
    .conv1d = conv1d_avx512,
    .tile = {NULL, tile_f16_avx512, tile_bf16_avx512, tile_q8_avx512},
    .quantize_x = quantize_x_vnni,
    .stream = stream_avx512,
};

#endif
