/* test_kernels.c — the kernels of kern.h on every instruction set this CPU runs, each forced in
 * turn, with 1 and 2 threads: matrix–vector (n = 1) and matrix–matrix (n = 3) products on F32
 * (both layouts), F16, BF16 and Q8_0 weights against a double-precision product of the same
 * dequantised weights, at odd sizes; the F32 results against ops.c's OpenBLAS path; the weight
 * conversions and their layouts; the thread pool; the choice of instruction set; the errors.
 *
 * Bound on each output (u = 2^-24, F32's unit roundoff): 2 (C + 32) u (sum |x_c w_c| + |base|),
 * twice the worst case of summing C + 1 products in F32 in any order. The avx512vnni Q8_0
 * matrix–vector product also rounds x to int8 per block of 32 (d_x = max |x| / 127), which
 * adds up to sum over blocks of d_w d_x / 2 sum |q_w| (and F32 rounding of its +128 offset). */
#include "check.h"
#include "cpu.h"
#include "kern.h"
#include "ops.h"
#include "pool.h"
#include "rng.h"
#include "wmat.h"

#include <stdatomic.h>
#include <string.h>

#define U32 (1.0 / 16777216.0)

/* A weight matrix in one format, with the dequantised weights (OC,C) it stands for. */
typedef struct mat {
    sl_wmat w;
    void *data;
    uint16_t *scales;
    float *deq;
} mat;

static const struct {
    sl_wformat format;
    sl_wlayout layout;
} kinds[] = {{SL_WF_F32, SL_WL_CONV1D},
             {SL_WF_F32, SL_WL_ROWS},
             {SL_WF_F16, SL_WL_ROWS},
             {SL_WF_BF16, SL_WL_ROWS},
             {SL_WF_Q8_0, SL_WL_ROWS}};
enum { N_KINDS = sizeof kinds / sizeof kinds[0] };

/* C x OC: odd sizes, one output, one input, tails of every vector width, several chunks of a
 * matrix–vector product (rows and Conv1D columns) and several prefill tiles. */
static const int shapes[][2] = {{1, 1},    {7, 3},     {16, 16},  {31, 5},    {33, 1},   {48, 65},   {64, 64},
                                {100, 37}, {257, 130}, {768, 20}, {768, 200}, {40, 600}, {24, 22000}};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };

static float *random_floats(sl_rng *rng, size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = scale * sl_rng_normal(rng);
    return v;
}

static float f16_round(float f)
{
    uint16_t h;
    sl_dtype_from_f32(&h, SL_F16, &f, 1);
    sl_dtype_to_f32(&f, &h, SL_F16, 1);
    return f;
}

/* m = src (Conv1D, C x OC, F32) in format f and layout (F32 Conv1D: a copy of src). */
static int make_mat(mat *m, sl_wformat f, sl_wlayout layout, const float *src, int C, int OC)
{
    sl_err err;
    size_t data_bytes, scale_bytes;
    memset(m, 0, sizeof *m);
    if (!CHECK(sl_wmat_sizes(f, C, OC, &data_bytes, &scale_bytes, &err) == 0, "%s", err.msg)) return -1;
    m->data = malloc(data_bytes);
    m->scales = scale_bytes ? malloc(scale_bytes) : NULL;
    m->deq = malloc((size_t)C * OC * sizeof *m->deq);
    if (f == SL_WF_F32 && layout == SL_WL_CONV1D) {
        memcpy(m->data, src, data_bytes);
        m->w = (sl_wmat){.format = f, .layout = layout, .in = C, .out = OC, .data = m->data};
    } else if (sl_wmat_convert(&m->w, m->data, m->scales, f, src, SL_F32, SL_WL_CONV1D, C, OC, &err) != 0) {
        return CHECK(0, "convert to %s: %s", sl_wformat_name(f), err.msg) - 1;
    }
    sl_wmat_to_f32(&m->w, m->deq, SL_WL_ROWS);
    return 0;
}

static void free_mat(mat *m)
{
    free(m->data);
    free(m->scales);
    free(m->deq);
}

/* The extra error of the int8 rounding of x (row o, one input vector x). */
static double vnni_bound(const mat *m, const float *x, int o)
{
    const int C = m->w.in, nb = sl_wmat_q8_blocks(C);
    const int8_t *q = (const int8_t *)m->data + (size_t)o * nb * SL_Q8_BLOCK;
    double bound = 0;
    for (int b = 0; b < nb; b++) {
        float amax = 0, dw;
        double qsum = 0;
        for (int c = b * SL_Q8_BLOCK; c < C && c < (b + 1) * SL_Q8_BLOCK; c++)
            amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
        for (int i = 0; i < SL_Q8_BLOCK; i++)
            qsum += abs(q[b * SL_Q8_BLOCK + i]);
        sl_dtype_to_f32(&dw, &m->scales[(size_t)o * nb + b], SL_F16, 1);
        double dx = amax / 127.0;
        bound += dw * dx * (0.5 * 1.001 * qsum + 2.0 * (nb + 64) * U32 * 255.0 * SL_Q8_BLOCK * 127.0);
    }
    return bound;
}

/* The largest excess of |got - exact| over the bound, over every output (<= 0: all within). */
static double worst_excess(const float *got, const mat *m, const float *x, int n, const float *bias, const float *prior,
                           bool vnni)
{
    const int C = m->w.in, OC = m->w.out;
    double worst = -INFINITY;
    for (int r = 0; r < n; r++)
        for (int o = 0; o < OC; o++) {
            const float *xr = x + (size_t)r * C, *wo = m->deq + (size_t)o * C;
            double base = (bias ? bias[o] : 0.0) + (prior ? prior[(size_t)r * OC + o] : 0.0), sum = base, mag = 0;
            for (int c = 0; c < C; c++) {
                sum += (double)xr[c] * wo[c];
                mag += fabs((double)xr[c] * wo[c]);
            }
            double bound = 2.0 * (C + 32) * U32 * (mag + fabs(base)) + (vnni ? vnni_bound(m, xr, o) : 0.0);
            double excess = fabs(got[(size_t)r * OC + o] - sum) - bound;
            if (excess != excess) return INFINITY;
            if (excess > worst) worst = excess;
        }
    return worst;
}

/* One product on both pools (1 and 2 threads): within the bound, and the same bits. */
static void check_product(sl_kern *k1, sl_kern *k2, const mat *m, sl_rng *rng, int n, int variant)
{
    const int C = m->w.in, OC = m->w.out;
    const bool with_bias = variant & 1, accumulate = variant & 2;
    float *x = random_floats(rng, (size_t)n * C, 1.0f), *bias = with_bias ? random_floats(rng, (size_t)OC, 1.0f) : NULL;
    float *prior = random_floats(rng, (size_t)n * OC, 1.0f), *out1 = malloc((size_t)n * OC * sizeof(float)),
          *out2 = malloc((size_t)n * OC * sizeof(float));
    memcpy(out1, prior, (size_t)n * OC * sizeof(float));
    memcpy(out2, prior, (size_t)n * OC * sizeof(float));
    sl_err err;
    sl_kern_isa isa = sl_kern_isa_used(k1);
    bool vnni = isa == SL_KERN_AVX512VNNI && m->w.format == SL_WF_Q8_0 && n == 1;
    char what[160];
    snprintf(what, sizeof what, "%s %s%s %dx%d n=%d%s%s", sl_kern_isa_name(isa), sl_wformat_name(m->w.format),
             m->w.layout == SL_WL_CONV1D ? " conv1d" : "", C, OC, n, with_bias ? " bias" : "",
             accumulate ? " accumulate" : "");
    int rc1 = sl_kern_matmul(k1, out1, x, n, &m->w, bias, accumulate, &err);
    if (CHECK(rc1 == 0, "%s: %s", what, err.msg)) {
        double excess = worst_excess(out1, m, x, n, bias, accumulate ? prior : NULL, vnni);
        CHECK(excess <= 0, "%s, 1 thread: an output is %.3g beyond its bound", what, excess);
    }
    int rc2 = sl_kern_matmul(k2, out2, x, n, &m->w, bias, accumulate, &err);
    if (CHECK(rc2 == 0, "%s: %s", what, err.msg))
        CHECK(memcmp(out1, out2, (size_t)n * OC * sizeof(float)) == 0, "%s: 2 threads give other bits", what);
    free(x);
    free(bias);
    free(prior);
    free(out1);
    free(out2);
}

static void test_products(sl_kern_isa isa)
{
    sl_err err;
    sl_kern *k1 = sl_kern_new(1, false, isa, &err), *k2 = sl_kern_new(2, false, isa, &err);
    if (!CHECK(k1 && k2, "kernels %s: %s", sl_kern_isa_name(isa), err.msg)) return;
    sl_kern_set_linger(k2, 100); /* the 2 threads' products come back to back: the worker lingers */
    CHECK(sl_kern_isa_used(k1) == isa, "kernels %s: asked for, got %s", sl_kern_isa_name(isa),
          sl_kern_isa_name(sl_kern_isa_used(k1)));
    sl_rng rng;
    sl_rng_seed(&rng, 7 + (uint64_t)isa);
    for (int s = 0; s < N_SHAPES; s++) {
        const int C = shapes[s][0], OC = shapes[s][1];
        float *src = random_floats(&rng, (size_t)C * OC, 0.5f);
        for (int kind = 0; kind < N_KINDS; kind++) {
            mat m;
            if (make_mat(&m, kinds[kind].format, kinds[kind].layout, src, C, OC) == 0) {
                check_product(k1, k2, &m, &rng, 1, (s + kind) % 4);
                check_product(k1, k2, &m, &rng, 3, (s + kind + 1) % 4);
            }
            free_mat(&m);
        }
        free(src);
    }
    sl_kern_destroy(&k1);
    sl_kern_destroy(&k2);
    CHECK(k1 == NULL, "destroy nulls the pointer");
}

/* F32 through the kernels against ops.c (OpenBLAS sgemv / sgemm): one token, both within the
 * bound of the exact product; several tokens on a Conv1D matrix bit for bit (the same sgemm). */
static void test_f32_against_ops(sl_kern_isa isa)
{
    sl_err err;
    sl_kern *k = sl_kern_new(2, false, isa, &err);
    if (!CHECK(k, "%s", err.msg)) return;
    sl_rng rng;
    sl_rng_seed(&rng, 99);
    const int sizes[][2] = {{768, 2304}, {3072, 768}, {45, 77}};
    for (int s = 0; s < 3; s++) {
        const int C = sizes[s][0], OC = sizes[s][1], n = 4, longest = C > OC ? C : OC;
        float *w = random_floats(&rng, (size_t)C * OC, 0.05f), *x = random_floats(&rng, (size_t)n * longest, 1.0f);
        float *bias = random_floats(&rng, (size_t)OC, 1.0f), *a = calloc((size_t)n * longest, sizeof(float)),
              *b = calloc((size_t)n * longest, sizeof(float));
        /* the same floats seen as Conv1D (C,OC) and as rows: OC inputs to C outputs */
        mat conv = {.w = {.format = SL_WF_F32, .layout = SL_WL_CONV1D, .in = C, .out = OC, .data = w}},
            rows = {.w = {.format = SL_WF_F32, .layout = SL_WL_ROWS, .in = OC, .out = C, .data = w}, .deq = w};
        conv.deq = malloc((size_t)C * OC * sizeof(float));
        sl_wmat_to_f32(&conv.w, conv.deq, SL_WL_ROWS);
        sl_matmul_forward(a, x, w, bias, 1, C, OC, false);
        sl_kern_matmul(k, b, x, 1, &conv.w, bias, false, &err);
        CHECK(worst_excess(a, &conv, x, 1, bias, NULL, false) <= 0 &&
                  worst_excess(b, &conv, x, 1, bias, NULL, false) <= 0,
              "%s f32 conv1d %dx%d: sgemv and the kernel both within the bound", sl_kern_isa_name(isa), C, OC);
        sl_matmul_forward_wt(a, x, w, 1, OC, C);
        sl_kern_matmul(k, b, x, 1, &rows.w, NULL, false, &err);
        CHECK(worst_excess(a, &rows, x, 1, NULL, NULL, false) <= 0 &&
                  worst_excess(b, &rows, x, 1, NULL, NULL, false) <= 0,
              "%s f32 rows %dx%d: sgemv and the kernel both within the bound", sl_kern_isa_name(isa), OC, C);
        memcpy(b, a, (size_t)n * OC * sizeof(float)); /* the same prior to accumulate into */
        sl_matmul_forward(a, x, w, bias, n, C, OC, true);
        sl_kern_matmul(k, b, x, n, &conv.w, bias, true, &err);
        CHECK(memcmp(a, b, (size_t)n * OC * sizeof(float)) == 0, "f32 conv1d, %d tokens: bit for bit sgemm", n);
        free(w);
        free(x);
        free(bias);
        free(a);
        free(b);
        free(conv.deq);
    }
    sl_kern_destroy(&k);
}

static void test_conversions(void)
{
    enum { C = 45, OC = 7 };
    sl_rng rng;
    sl_rng_seed(&rng, 3);
    float *src = random_floats(&rng, (size_t)C * OC, 1.0f);
    for (int c = 32; c < C; c++)
        src[(size_t)c * OC + 2] = 0; /* output 2's second block is all zero */
    src[5 * OC + 4] = 3e4f;          /* a large weight: block 0 of output 4 has a large scale */
    sl_err err;
    uint16_t half[C * OC], scales[OC * 2];
    int8_t q[OC * 64];
    float wide[C * OC], back[C * OC];
    sl_wmat w;
    for (int f = SL_WF_F16; f <= SL_WF_BF16; f++) {
        sl_dtype dt = f == SL_WF_F16 ? SL_F16 : SL_BF16;
        CHECK(sl_wmat_convert(&w, half, NULL, (sl_wformat)f, src, SL_F32, SL_WL_CONV1D, C, OC, &err) == 0, "%s",
              err.msg);
        int bad = 0;
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++) {
                uint16_t want;
                sl_dtype_from_f32(&want, dt, &src[(size_t)c * OC + o], 1);
                bad += half[o * C + c] != want;
            }
        CHECK(bad == 0, "%s: element (o, c) is the rounded Conv1D element (c, o) (%d differ)",
              sl_wformat_name((sl_wformat)f), bad);
        /* from those 16-bit Conv1D... the same values as rows of F32 again */
        sl_wmat_to_f32(&w, back, SL_WL_CONV1D);
        sl_wmat again;
        uint16_t conv16[C * OC];
        sl_dtype_from_f32(conv16, dt, src, (size_t)C * OC);
        CHECK(sl_wmat_convert(&again, wide, NULL, SL_WF_F32, conv16, dt, SL_WL_CONV1D, C, OC, &err) == 0, "%s",
              err.msg);
        bad = 0;
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++)
                bad += wide[o * C + c] != back[(size_t)c * OC + o];
        CHECK(bad == 0, "%s Conv1D source widened to F32 rows = the matrix dequantised to Conv1D (%d differ)",
              sl_wformat_name((sl_wformat)f), bad);
    }
    CHECK(sl_wmat_convert(&w, q, scales, SL_WF_Q8_0, src, SL_F32, SL_WL_CONV1D, C, OC, &err) == 0, "%s", err.msg);
    sl_wmat_to_f32(&w, back, SL_WL_ROWS);
    int bad = 0, pad = 0;
    for (int o = 0; o < OC; o++)
        for (int b = 0; b < 2; b++) {
            float amax = 0, d;
            for (int c = b * 32; c < C && c < b * 32 + 32; c++)
                amax = fmaxf(amax, fabsf(src[(size_t)c * OC + o]));
            sl_dtype_to_f32(&d, &scales[o * 2 + b], SL_F16, 1);
            bad += d != f16_round(amax / 127.0f);
            for (int c = b * 32; c < C && c < b * 32 + 32; c++)
                bad += fabsf(back[o * C + c] - src[(size_t)c * OC + o]) > d / 2 + amax * 0x1p-11f;
            for (int c = C; c < 64 && b == 1; c++)
                pad += q[o * 64 + c] != 0;
        }
    CHECK(bad == 0, "q8_0: scale = F16(max/127), every weight within d/2 (%d wrong)", bad);
    CHECK(pad == 0, "q8_0: the last block's positions past C hold 0 (%d do not)", pad);
    CHECK(scales[2 * 2 + 1] == 0 && back[2 * C + 40] == 0, "q8_0: an all-zero block has scale 0");
    src[0] = 1e7f;
    CHECK(sl_wmat_convert(&w, q, scales, SL_WF_Q8_0, src, SL_F32, SL_WL_CONV1D, C, OC, &err) != 0 &&
              strstr(err.msg, "row 0, block 0"),
          "q8_0 refuses a weight beyond F16 scales: %s", err.msg);
    free(src);
}

static void test_wmat_errors(void)
{
    sl_err err;
    size_t a, b;
    CHECK(sl_wmat_sizes(SL_WF_F16, 0, 5, &a, &b, &err) != 0 && strstr(err.msg, "positive"), "size 0: %s", err.msg);
    CHECK(sl_wmat_sizes(SL_WF_Q8_0, 33, 2, &a, &b, &err) == 0 && a == 128 && b == 8, "q8_0 33x2: 2 blocks per row");
    uint16_t data[4] = {0};
    sl_wmat w = {.format = SL_WF_F16, .layout = SL_WL_CONV1D, .in = 2, .out = 2, .data = data};
    CHECK(sl_wmat_check(&w, &err) != 0 && strstr(err.msg, "rows"), "f16 in Conv1D refused: %s", err.msg);
    w = (sl_wmat){.format = SL_WF_Q8_0, .layout = SL_WL_ROWS, .in = 2, .out = 2, .data = data};
    CHECK(sl_wmat_check(&w, &err) != 0 && strstr(err.msg, "scales"), "q8_0 without scales refused: %s", err.msg);
    w = (sl_wmat){.format = SL_WF_F32, .layout = SL_WL_ROWS, .in = 2, .out = 2};
    CHECK(sl_wmat_check(&w, &err) != 0 && strstr(err.msg, "no data"), "no data refused: %s", err.msg);
    sl_wformat f;
    CHECK(sl_wformat_parse("Q8_0", &f) == 0 && f == SL_WF_Q8_0 && sl_wformat_parse("q4", &f) != 0, "format names");

    sl_kern *k = sl_kern_new(1, false, SL_KERN_PORTABLE, &err);
    float x[2] = {1, 2}, out[2];
    w = (sl_wmat){.format = SL_WF_F32, .layout = SL_WL_ROWS, .in = 2, .out = 1, .data = x};
    CHECK(sl_kern_matmul(k, out, x, 0, &w, NULL, false, &err) != 0 && strstr(err.msg, "0 rows"), "n = 0: %s", err.msg);
    w.format = SL_WF_BF16;
    w.layout = SL_WL_CONV1D;
    CHECK(sl_kern_matmul(k, out, x, 1, &w, NULL, false, &err) != 0, "a malformed matrix is refused: %s", err.msg);
    sl_kern_destroy(&k);
    sl_kern_destroy(&k);
}

static void test_isa_choice(void)
{
    sl_err err;
    sl_kern_isa isa, best = SL_KERN_PORTABLE;
    for (int i = 0; i < SL_KERN_ISA_COUNT; i++) {
        CHECK(sl_kern_isa_parse(sl_kern_isa_name((sl_kern_isa)i), &isa, &err) == 0 && isa == i, "name %d", i);
        if (sl_kern_isa_supported((sl_kern_isa)i)) {
            best = (sl_kern_isa)i;
            continue;
        }
        sl_kern *k = sl_kern_new(1, false, (sl_kern_isa)i, &err);
        CHECK(!k && strstr(err.msg, "cannot run"), "%s unsupported here: refused (%s)", sl_kern_isa_name(i), err.msg);
    }
    CHECK(sl_kern_isa_parse("sse", &isa, &err) != 0 && strstr(err.msg, "avx512vnni"), "unknown set: %s", err.msg);
    unsetenv("SL_KERNELS");
    sl_kern *k = sl_kern_new(1, false, SL_KERN_AUTO, &err);
    CHECK(k && sl_kern_isa_used(k) == best, "auto picks the best supported set, %s", sl_kern_isa_name(best));
    sl_kern_destroy(&k);
    setenv("SL_KERNELS", "portable", 1);
    k = sl_kern_new(1, false, SL_KERN_AUTO, &err);
    CHECK(k && sl_kern_isa_used(k) == SL_KERN_PORTABLE, "SL_KERNELS=portable forces it");
    sl_kern_destroy(&k);
    setenv("SL_KERNELS", "neon", 1);
    k = sl_kern_new(1, false, SL_KERN_AUTO, &err);
    CHECK(!k && strstr(err.msg, "SL_KERNELS") && strstr(err.msg, "neon"), "SL_KERNELS=neon refused: %s", err.msg);
    unsetenv("SL_KERNELS");
}

static void count_chunk(void *ctx, int chunk) { atomic_fetch_add(&((atomic_int *)ctx)[chunk], 1); }

/* Every chunk of every job runs exactly once, over many short jobs (the workers wake late,
 * early, or not at all). */
static void test_pool(void)
{
    sl_err err;
    static const int setups[][2] = {{1, 0}, {2, 0}, {3, 0}, {2, 50}}; /* threads, linger (us) */
    for (int s = 0; s < 4; s++) {
        const int n_threads = setups[s][0], linger = setups[s][1];
        sl_pool *p = sl_pool_new(n_threads, false, &err);
        if (!CHECK(p && sl_pool_threads(p) == n_threads, "pool of %d: %s", n_threads, err.msg)) continue;
        int wrong = 0;
        for (int round = 0; round < 3000; round++) {
            atomic_int hits[40];
            int n = 1 + round % 40;
            for (int i = 0; i < n; i++)
                atomic_init(&hits[i], 0);
            sl_pool_run(p, n, count_chunk, hits, linger);
            for (int i = 0; i < n; i++)
                wrong += atomic_load(&hits[i]) != 1;
        }
        CHECK(wrong == 0, "pool of %d, linger %d us: every chunk once in 3000 jobs (%d wrong)", n_threads, linger,
              wrong);
        sl_pool_destroy(&p);
    }
    if (sl_cpu_count() >= 2) {
        sl_pool *p = sl_pool_new(2, true, &err);
        CHECK(p != NULL, "a pinned pool of 2: %s", p ? "" : err.msg);
        sl_pool_destroy(&p);
    }
    CHECK(sl_pool_new(65, false, &err) == NULL && strstr(err.msg, "65"), "65 threads refused: %s", err.msg);
}

int main(void)
{
    test_conversions();
    test_wmat_errors();
    test_isa_choice();
    test_pool();
    for (int i = 0; i < SL_KERN_ISA_COUNT; i++) {
        if (!sl_kern_isa_supported((sl_kern_isa)i)) {
            printf("kernels %s: not supported by this CPU, not tested\n", sl_kern_isa_name((sl_kern_isa)i));
            continue;
        }
        test_products((sl_kern_isa)i);
        test_f32_against_ops((sl_kern_isa)i);
    }
    return check_done();
}
