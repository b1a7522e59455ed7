/* kern_x86.c — the AVX2 and AVX-512 kernels. Every function carries its target attribute and
 * the file is built without -march, so each path holds only the instructions it names and
 * kern.c picks one at run time. The kernels common to both are written once (kern_vec.h) and
 * instantiated here for 8 and 16 lanes; the int8 Q8_0 product of avx512vnni is its own.
 *
 * Streaming: a thread given outputs [o0, o1) of a ROWS matrix reads GROUP rows at once, one from
 * each of GROUP equal parts of its range (GROUP streams far apart), and asks for each stream's
 * bytes PF_AHEAD ahead with software prefetch: measured on a 2-core VM, one stream per thread
 * reaches 24-30 GB/s, eight prefetched streams 42 (the read-only floor with prefetch: 45). The
 * leftover rows go one at a time through the same code, so an output's bits do not depend on
 * how the outputs were split between threads. Conv1D (F32 blocks) is cut the other way, in bands
 * of whole rows (each row is contiguous), streamed the same way; kern.c adds the bands' sums. */
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

enum { GROUP = 8, PF_AHEAD = 2048, LINE = 64 };

/* Bytes per weight of the 16- and 32-bit formats. */
static size_t elem_size(int fmt) { return fmt == SL_WF_F32 ? 4 : 2; }

/* Element c of a 32- or 16-bit row as F32 (the tails past whole vectors). */
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

/* d[0, n) = n <= 8 F16 scales s[0, n) in F32. */
AVX2 INLINE void scales8(float *d, const uint16_t *s, int n)
{
    if (n == 8) {
        _mm256_storeu_ps(d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s)));
        return;
    }
    for (int i = 0; i < n; i++)
        d[i] = _cvtsh_ss(s[i]);
}

/* The bytes past the streams' whole lines, one at a time. */
static uint64_t stream_tail(const unsigned char *s, size_t from, size_t n)
{
    uint64_t acc = 0;
    for (size_t i = from; i < n; i++)
        acc ^= s[i];
    return acc;
}

/* ---------------------------------------------------------------- AVX2 (8 lanes) */

AVX2 INLINE __m256 load8_w(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return _mm256_loadu_ps((const float *)row + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (fmt == SL_WF_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define TARGET AVX2
#define NAME(x) x##_avx2
#define vec __m256
#define LANES 8
#define vzero() _mm256_setzero_ps()
#define vset1(f) _mm256_set1_ps(f)
#define vloadx(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps(p, v)
#define vfma(a, b, acc) _mm256_fmadd_ps(a, b, acc)
#define vmul(a, b) _mm256_mul_ps(a, b)
#define vadd(a, b) _mm256_add_ps(a, b)
#define vhsum(v) hsum8(v)
#define vload_w(row, c, fmt) load8_w(row, c, fmt)
#define vload_q8(q) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q))))
#define vbits __m256i
#define BITS_BYTES 32
#define bits_zero() _mm256_setzero_si256()
#define bits_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define bits_xor(a, b) _mm256_xor_si256(a, b)
#define bits_low(v) ((uint64_t)_mm256_extract_epi64(v, 0))
#include "kern_vec.h"

const sl_kern_fns sl_kern_fns_avx2 = {
    .rows = {rows_f32_avx2, rows_f16_avx2, rows_bf16_avx2, rows_q8_avx2},
    .conv1d_band = conv1d_band_avx2,
    .conv1d_sum = conv1d_sum_avx2,
    .tile = {NULL, tile_f16_avx2, tile_bf16_avx2, tile_q8_avx2},
    .stream = stream_avx2,
};

/* ---------------------------------------------------------------- AVX-512 (16 lanes) */

AVX512 INLINE __m512 load16_w(const void *row, int c, int fmt)
{
    if (fmt == SL_WF_F32) return _mm512_loadu_ps((const float *)row + c);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c));
    if (fmt == SL_WF_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#define TARGET AVX512
#define NAME(x) x##_avx512
#define vec __m512
#define LANES 16
#define vzero() _mm512_setzero_ps()
#define vset1(f) _mm512_set1_ps(f)
#define vloadx(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps(p, v)
#define vfma(a, b, acc) _mm512_fmadd_ps(a, b, acc)
#define vmul(a, b) _mm512_mul_ps(a, b)
#define vadd(a, b) _mm512_add_ps(a, b)
#define vhsum(v) _mm512_reduce_add_ps(v)
#define vload_w(row, c, fmt) load16_w(row, c, fmt)
#define vload_q8(q) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q))))
#define vbits __m512i
#define BITS_BYTES 64
#define bits_zero() _mm512_setzero_si512()
#define bits_load(p) _mm512_loadu_si512(p)
#define bits_xor(a, b) _mm512_xor_si512(a, b)
#define bits_low(v) ((uint64_t)_mm512_reduce_or_epi64(v))
#include "kern_vec.h"

const sl_kern_fns sl_kern_fns_avx512 = {
    .rows = {rows_f32_avx512, rows_f16_avx512, rows_bf16_avx512, rows_q8_avx512},
    .conv1d_band = conv1d_band_avx512,
    .conv1d_sum = conv1d_sum_avx512,
    .tile = {NULL, tile_f16_avx512, tile_bf16_avx512, tile_q8_avx512},
    .stream = stream_avx512,
};

/* The F32 scales of blocks [j0, j0 + 16) (fewer at the end of the row: the rest 0). */
AVX512 INLINE __m512 q8_scales16(const uint16_t *s, int j0, int nb)
{
    __mmask16 m = nb - j0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nb - j0)) - 1);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + j0));
}

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
    .conv1d_band = conv1d_band_avx512,
    .conv1d_sum = conv1d_sum_avx512,
    .tile = {NULL, tile_f16_avx512, tile_bf16_avx512, tile_q8_avx512},
    .quantize_x = quantize_x_vnni,
    .stream = stream_avx512,
};

#endif
