/* kern.c — choosing the instruction set, and driving the kernels over the pool's threads:
 * matrix–vector products split into chunks of outputs, matrix–matrix products as tiles widened
 * to F32 for OpenBLAS's sgemm. */
#include "kern.h"

#include "kern_impl.h"
#include "ops.h"
#include "pool.h"

#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* A matrix–vector product on rows is cut into a multiple of the threads' count of chunks of about
 * CHUNK_BYTES of weights (a thread streams a chunk as 8 streams: long enough for prefetch to pay);
 * a worker waking late finds chunks still unclaimed. A Conv1D one into CONV1D_BANDS bands of rows
 * (a fixed count, so that the bands' sums, added in order, do not depend on the threads). */
enum { CHUNK_BYTES = 1 << 20, CONV1D_BANDS = 8 };
/* A prefill tile widened to F32 is at most this big (it stays in the caches for sgemm). */
enum { TILE_BYTES = 1 << 20, TILE_CHUNK_ROWS = 16 };

static const char *const isa_names[SL_KERN_ISA_COUNT] = {"portable", "avx2", "avx512", "avx512vnni"};

struct sl_kern {
    sl_kern_isa isa;
    const sl_kern_fns *fns;
    sl_pool *pool;
    float *x;     /* x padded to whole Q8_0 blocks */
    int8_t *xq;   /* x quantised */
    float *xd;    /* x's block scales and corrections: 2 * round_up(nb, 16) */
    int x_blocks; /* capacity of the three, in blocks */
    float *tile;  /* TILE_BYTES, at the first prefill on non-F32 weights */
    float *parts; /* Conv1D bands' partial sums */
    size_t parts_len;
    int linger_us; /* how long the workers watch for the next matrix–vector product */
};

const char *sl_kern_isa_name(sl_kern_isa isa) { return isa >= 0 && isa < SL_KERN_ISA_COUNT ? isa_names[isa] : "auto"; }

int sl_kern_isa_parse(const char *name, sl_kern_isa *out, sl_err *err)
{
    for (int i = 0; i < SL_KERN_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) {
            *out = (sl_kern_isa)i;
            return 0;
        }
    return sl_fail(err, "unknown kernel set '%s' (portable, avx2, avx512 or avx512vnni)", name);
}

#if defined(__x86_64__)
/* F16C has no __builtin_cpu_supports name in clang 14: CPUID leaf 1, ECX bit 29. */
static bool has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

bool sl_kern_isa_supported(sl_kern_isa isa)
{
    if (isa == SL_KERN_PORTABLE) return true;
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    switch (isa) {
    case SL_KERN_AVX2:
        return avx2;
    case SL_KERN_AVX512:
        return avx512;
    case SL_KERN_AVX512VNNI:
        return avx512 && __builtin_cpu_supports("avx512vnni");
    default:
        return false;
    }
#else
    return false;
#endif
}

static const sl_kern_fns *isa_fns(sl_kern_isa isa)
{
#if defined(__x86_64__)
    if (isa == SL_KERN_AVX2) return &sl_kern_fns_avx2;
    if (isa == SL_KERN_AVX512) return &sl_kern_fns_avx512;
    if (isa == SL_KERN_AVX512VNNI) return &sl_kern_fns_avx512vnni;
#endif
    (void)isa;
    return &sl_kern_fns_portable;
}

/* The set asked for: isa itself, else SL_KERNELS, else the best supported. */
static int resolve_isa(sl_kern_isa isa, sl_kern_isa *out, sl_err *err)
{
    const char *forced = getenv("SL_KERNELS");
    if (isa == SL_KERN_AUTO && forced && *forced) {
        if (sl_kern_isa_parse(forced, &isa, err) != 0) {
            sl_err_prefix(err, "SL_KERNELS");
            return -1;
        }
    }
    if (isa == SL_KERN_AUTO) {
        isa = SL_KERN_PORTABLE;
        for (int i = SL_KERN_ISA_COUNT - 1; i > 0 && isa == SL_KERN_PORTABLE; i--)
            if (sl_kern_isa_supported((sl_kern_isa)i)) isa = (sl_kern_isa)i;
    }
    if (isa < 0 || isa >= SL_KERN_ISA_COUNT) return sl_fail(err, "unknown kernel set %d", (int)isa);
    if (!sl_kern_isa_supported(isa)) return sl_fail(err, "this CPU cannot run the %s kernels", isa_names[isa]);
    *out = isa;
    return 0;
}

sl_kern *sl_kern_new(int n_threads, bool pin, sl_kern_isa isa, sl_err *err)
{
    sl_kern_isa chosen = SL_KERN_PORTABLE;
    if (resolve_isa(isa, &chosen, err) != 0) return NULL;
    sl_kern *k = calloc(1, sizeof *k);
    if (!k) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    k->isa = chosen;
    k->fns = isa_fns(chosen);
    k->pool = sl_pool_new(n_threads, pin, err);
    if (!k->pool) sl_kern_destroy(&k);
    return k;
}

void sl_kern_destroy(sl_kern **self)
{
    if (!self || !*self) return;
    sl_kern *k = *self;
    sl_pool_destroy(&k->pool);
    free(k->x);
    free(k->xq);
    free(k->xd);
    free(k->tile);
    free(k->parts);
    free(k);
    *self = NULL;
}

sl_kern_isa sl_kern_isa_used(const sl_kern *self) { return self->isa; }

void sl_kern_set_linger(sl_kern *self, int linger_us) { self->linger_us = linger_us > 0 ? linger_us : 0; }

void sl_kern_rest(sl_kern *self) { sl_pool_rest(self->pool); }

/* ---- one token: matrix–vector ---- */

typedef struct mv_job {
    sl_kern_mv mv;
    sl_kern_mv_fn fn;
    int per_chunk, total;
} mv_job;

static void mv_chunk(void *ctx, int chunk)
{
    mv_job *j = ctx;
    int o0 = chunk * j->per_chunk, o1 = o0 + j->per_chunk < j->total ? o0 + j->per_chunk : j->total;
    j->fn(&j->mv, o0, o1);
}

/* Room for x in whole Q8_0 blocks (and its int8 form): grows, never shrinks. */
static int reserve_x(sl_kern *k, int nb, sl_err *err)
{
    if (nb <= k->x_blocks) return 0;
    int nb16 = (nb + 15) & ~15; /* quantize_x's padding covers both of its own */
    float *x = realloc(k->x, (size_t)nb16 * SL_Q8_BLOCK * sizeof *x);
    if (x) k->x = x;
    int8_t *xq = realloc(k->xq, (size_t)nb16 * SL_Q8_BLOCK);
    if (xq) k->xq = xq;
    float *xd = realloc(k->xd, 2 * (size_t)nb16 * sizeof *xd);
    if (xd) k->xd = xd;
    if (!x || !xq || !xd) return sl_fail(err, "out of memory for a vector of %d inputs", nb * SL_Q8_BLOCK);
    k->x_blocks = nb16;
    return 0;
}

/* Q8_0 kernels read x in whole blocks: a copy padded with zeros, quantised when the set wants. */
static int prepare_q8_x(sl_kern *k, sl_kern_mv *mv, sl_err *err)
{
    const int C = mv->w->in, nb = sl_wmat_q8_blocks(C);
    if (reserve_x(k, nb, err) != 0) return -1;
    memcpy(k->x, mv->x, (size_t)C * sizeof *k->x);
    memset(k->x + C, 0, (size_t)(nb * SL_Q8_BLOCK - C) * sizeof *k->x);
    mv->x = k->x;
    if (k->fns->quantize_x) {
        float *xcorr = k->xd + k->x_blocks;
        k->fns->quantize_x(k->xq, k->xd, xcorr, k->x, nb);
        mv->xq = k->xq;
        mv->xd = k->xd;
        mv->xcorr = xcorr;
    }
    return 0;
}

/* Rows per chunk: a multiple of the threads' count of chunks, each at most max_units (when that
 * many chunks suffice), rounded up to `align` rows. */
static int units_per_chunk(int units, int max_units, int threads, int align)
{
    int rounds = (units + threads * max_units - 1) / (threads * max_units), chunks = threads * rounds;
    int per = (units + chunks - 1) / chunks;
    return (per + align - 1) / align * align;
}

static int rows_matvec(sl_kern *k, mv_job *j)
{
    const sl_wmat *w = j->mv.w;
    size_t data_bytes, scale_bytes;
    sl_wmat_sizes(w->format, w->in, w->out, &data_bytes, &scale_bytes, NULL);
    size_t row_bytes = (data_bytes + scale_bytes) / (size_t)w->out, rows = CHUNK_BYTES / row_bytes;
    j->fn = k->fns->rows[w->format];
    j->total = w->out;
    j->per_chunk = units_per_chunk(w->out, rows < 8 ? 8 : (int)rows, sl_pool_threads(k->pool), 8);
    sl_pool_run(k->pool, (j->total + j->per_chunk - 1) / j->per_chunk, mv_chunk, j, k->linger_us);
    return 0;
}

/* Conv1D: CONV1D_BANDS bands of rows, each summed into its own part, then the parts added in
 * order: the same bits for any thread count. */
typedef struct band_job {
    const sl_kern_mv *mv;
    sl_kern_band_fn fn;
    float *parts;
} band_job;

static void band_chunk(void *ctx, int band)
{
    band_job *b = ctx;
    const sl_wmat *w = b->mv->w;
    int c0 = (int)((int64_t)w->in * band / CONV1D_BANDS), c1 = (int)((int64_t)w->in * (band + 1) / CONV1D_BANDS);
    b->fn(b->parts + (size_t)band * w->out, b->mv->x, w, c0, c1);
}

static int conv1d_matvec(sl_kern *k, const sl_kern_mv *mv, sl_err *err)
{
    const size_t need = (size_t)CONV1D_BANDS * mv->w->out;
    if (need > k->parts_len) {
        float *parts = realloc(k->parts, need * sizeof *parts);
        if (!parts) return sl_fail(err, "out of memory for the partial sums of %d outputs", mv->w->out);
        k->parts = parts;
        k->parts_len = need;
    }
    band_job b = {.mv = mv, .fn = k->fns->conv1d_band, .parts = k->parts};
    sl_pool_run(k->pool, CONV1D_BANDS, band_chunk, &b, k->linger_us);
    k->fns->conv1d_sum(mv, k->parts, CONV1D_BANDS);
    return 0;
}

static int matvec(sl_kern *k, float *out, const float *x, const sl_wmat *w, const float *bias, bool accumulate,
                  sl_err *err)
{
    mv_job j = {.mv = {.out = out, .x = x, .w = w, .bias = bias, .accumulate = accumulate}};
    if (w->format == SL_WF_Q8_0 && prepare_q8_x(k, &j.mv, err) != 0) return -1;
    return w->layout == SL_WL_CONV1D ? conv1d_matvec(k, &j.mv, err) : rows_matvec(k, &j);
}

/* ---- several tokens: tiles widened to F32, then sgemm ---- */

typedef struct tile_job {
    float *dst;
    const sl_wmat *w;
    sl_kern_tile_fn fn;
    int o0, o1;
} tile_job;

static void tile_chunk(void *ctx, int chunk)
{
    tile_job *t = ctx;
    int from = t->o0 + chunk * TILE_CHUNK_ROWS, to = from + TILE_CHUNK_ROWS < t->o1 ? from + TILE_CHUNK_ROWS : t->o1;
    t->fn(t->dst + (size_t)(from - t->o0) * t->w->in, t->w, from, to);
}

/* out (n, OC) columns [o0, o0 + rows) (+)= inp @ rows (rows x C, F32)^T. */
static void sgemm_rows(float *out, const float *inp, int n, const float *rows_f32, int o0, int rows, int C, int OC,
                       float beta)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, C, 1.0f, inp, C, rows_f32, C, beta, out + o0, OC);
}

static int matmul_tiles(sl_kern *k, float *out, const float *inp, int n, const sl_wmat *w, const float *bias,
                        bool accumulate, sl_err *err)
{
    const int C = w->in, OC = w->out;
    if (w->format == SL_WF_F32) {
        sgemm_rows(out, inp, n, w->data, 0, OC, C, OC, sl_matmul_bias(out, bias, n, OC, accumulate));
        return 0;
    }
    if ((size_t)C * sizeof(float) > TILE_BYTES)
        return sl_fail(err, "a row of %d inputs does not fit the %d MB weight tile", C, TILE_BYTES >> 20);
    if (!k->tile && !(k->tile = malloc(TILE_BYTES)))
        return sl_fail(err, "out of memory for a %d MB weight tile", TILE_BYTES >> 20);
    const float beta = sl_matmul_bias(out, bias, n, OC, accumulate);
    size_t fit = TILE_BYTES / ((size_t)C * sizeof(float));
    int per_tile = fit > (size_t)OC ? OC : (int)fit;
    tile_job t = {.dst = k->tile, .w = w, .fn = k->fns->tile[w->format]};
    for (t.o0 = 0; t.o0 < OC; t.o0 = t.o1) {
        t.o1 = t.o0 + per_tile < OC ? t.o0 + per_tile : OC;
        sl_pool_run(k->pool, (t.o1 - t.o0 + TILE_CHUNK_ROWS - 1) / TILE_CHUNK_ROWS, tile_chunk, &t, 0);
        sgemm_rows(out, inp, n, k->tile, t.o0, t.o1 - t.o0, C, OC, beta);
    }
    return 0;
}

int sl_kern_matmul(sl_kern *self, float *out, const float *inp, int n, const sl_wmat *w, const float *bias,
                   bool accumulate, sl_err *err)
{
    if (sl_wmat_check(w, err) != 0) return -1;
    if (n < 1) return sl_fail(err, "matmul of %d rows", n);
    if (n == 1) return matvec(self, out, inp, w, bias, accumulate, err);
    if (w->layout == SL_WL_CONV1D) {
        sl_matmul_forward(out, inp, w->data, bias, n, w->in, w->out, accumulate);
        return 0;
    }
    return matmul_tiles(self, out, inp, n, w, bias, accumulate, err);
}

void sl_kern_widen(sl_kern *self, float *dst, const sl_wmat *w, int o0, int o1)
{
    if (o1 > o0) self->fns->tile[w->format](dst, w, o0, o1);
}

/* ---- the floor: reading bytes once ---- */

typedef struct stream_job {
    const sl_kern_fns *fns;
    const void *const *bufs;
    const size_t *lens;
    int n, shares;
    uint64_t folded[64]; /* one per share: no two threads write the same */
} stream_job;

static void stream_share(void *ctx, int share)
{
    stream_job *j = ctx;
    uint64_t v = 0;
    for (int i = 0; i < j->n; i++) {
        size_t from = j->lens[i] / (size_t)j->shares * (size_t)share;
        size_t to = share == j->shares - 1 ? j->lens[i] : from + j->lens[i] / (size_t)j->shares;
        v ^= j->fns->stream((const unsigned char *)j->bufs[i] + from, to - from);
    }
    j->folded[share] = v;
}

uint64_t sl_kern_stream(sl_kern *self, const void *const *bufs, const size_t *lens, int n)
{
    stream_job j = {.fns = self->fns, .bufs = bufs, .lens = lens, .n = n, .shares = sl_pool_threads(self->pool)};
    sl_pool_run(self->pool, j.shares, stream_share, &j, 0);
    uint64_t v = 0;
    for (int i = 0; i < j.shares; i++)
        v ^= j.folded[i];
    return v;
}
