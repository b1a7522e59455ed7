/* bench-kernels.c — zmq-splitlearn-bench-kernels: the kernels of kern.h at the GPT-2 124M shape on
 * F32, F16, BF16 and Q8_0 weights: one decoded token's matrix–vector products and a prefill's
 * matmuls, each as a ratio to the time of reading that format's weights once (its floor), with a
 * STREAM triad checking the floor; every figure is a median of rounds that interleave them all. */
#include "clock.h"
#include "cli.h"
#include "bench_util.h"
#include "cpu.h"
#include "kern.h"
#include "ops.h"
#include "pool.h"
#include "rng.h"

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-bench-kernels [--rounds 9] [--threads 2] [--no-pin] [--prompt 64] [--layers 12]\n"
    "                                    [--detail]\n"
    "\n"
    "Random weights of the GPT-2 124M shape (768 wide, 3072 inner, vocab 50257, --layers blocks) in\n"
    "F32 (blocks in HF's Conv1D layout, the head as wte) and converted to F16, BF16 and Q8_0. Each\n"
    "round times, for every format: reading its matmul weights once (the floor, kern.h's\n"
    "sl_kern_stream), one decoded token's matrix-vector products (4 per block and the head), and a\n"
    "--prompt-token prefill's matmuls (blocks at every position, the head at the last); decode again\n"
    "with the workers lingering 200 us between products instead of sleeping; also F32\n"
    "through OpenBLAS (ops.c) and a STREAM triad. Prints medians as a Markdown table; --detail adds\n"
    "decode times per kind of matrix. SL_KERNELS forces a kernel set.\n"
    "\n"
    "exit status: 0 done, 1 failure, 2 usage error\n";

enum {
    C = 768,
    INNER = 3072,
    VOCAB = 50257,
    MAX_LAYERS = 48,
    KINDS = 5,
    MAX_ROUNDS = BENCH_MAX_ROUNDS,
    LINGER_US = 200
};
enum { MAX_MATS = 4 * MAX_LAYERS + 1 };
static const char *const kind_names[KINDS] = {"qkv", "attn proj", "fc", "fc proj", "head"};

/* One format's copy of the model's matmul weights: per block qkv, attn proj, fc, fc proj, then
 * the head; and the buffers that hold them (what the floor reads). */
typedef struct weights {
    sl_wformat format;
    sl_wmat mats[MAX_MATS];
    int n_mats;
    void *bufs[2 * MAX_MATS];
    size_t lens[2 * MAX_MATS];
    int n_bufs;
    size_t bytes;
} weights;

/* Timings of one round, in seconds: [format] and the F32 OpenBLAS path. */
typedef struct round_times {
    double floor[SL_WF_COUNT], decode[SL_WF_COUNT], linger[SL_WF_COUNT], prefill[SL_WF_COUNT], kind[SL_WF_COUNT][KINDS];
    double blas_decode, blas_prefill, triad;
} round_times;

typedef struct bench {
    sl_kern *kern;
    sl_pool *pool; /* the triad's threads */
    weights w[SL_WF_COUNT];
    int layers, prompt;
    float *x, *out; /* inputs (prompt x INNER) and outputs (prompt x VOCAB) */
    bench_triad triad;
} bench;

static void die(const char *what, const sl_err *err)
{
    fprintf(stderr, "zmq-splitlearn-bench-kernels: %s: %s\n", what, err ? err->msg : "out of memory");
    exit(SL_EXIT_FAILURE);
}

static void *alloc_or_die(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) die("allocating", NULL);
    return p;
}

static int kind_of(int mat, int layers) { return mat == 4 * layers ? 4 : mat % 4; }

static void mat_shape(int kind, int *in, int *out)
{
    static const int ins[KINDS] = {C, C, C, INNER, C}, outs[KINDS] = {3 * C, C, INNER, C, VOCAB};
    *in = ins[kind];
    *out = outs[kind];
}

static void add_buf(weights *w, void *p, size_t len)
{
    w->bufs[w->n_bufs] = p;
    w->lens[w->n_bufs++] = len;
    w->bytes += len;
}

/* F32 weights, uniform in +-0.05: the blocks' in Conv1D layout, the head's (V,C) as wte. */
static void make_f32(weights *w, int layers, sl_rng *rng)
{
    *w = (weights){.format = SL_WF_F32, .n_mats = 4 * layers + 1};
    for (int m = 0; m < w->n_mats; m++) {
        int kind = kind_of(m, layers), in, out;
        mat_shape(kind, &in, &out);
        size_t n = (size_t)in * out;
        float *data = alloc_or_die(n * sizeof *data);
        for (size_t i = 0; i < n; i++)
            data[i] = 0.1f * (sl_rng_uniform(rng) - 0.5f);
        w->mats[m] = (sl_wmat){
            .format = SL_WF_F32, .layout = kind == 4 ? SL_WL_ROWS : SL_WL_CONV1D, .in = in, .out = out, .data = data};
        add_buf(w, data, n * sizeof *data);
    }
}

static void convert(weights *w, const weights *f32, sl_wformat format)
{
    *w = (weights){.format = format, .n_mats = f32->n_mats};
    for (int m = 0; m < f32->n_mats; m++) {
        const sl_wmat *src = &f32->mats[m];
        size_t data_bytes, scale_bytes;
        sl_err err;
        if (sl_wmat_sizes(format, src->in, src->out, &data_bytes, &scale_bytes, &err) != 0) die("sizes", &err);
        void *data = alloc_or_die(data_bytes);
        uint16_t *scales = scale_bytes ? alloc_or_die(scale_bytes) : NULL;
        if (sl_wmat_convert(&w->mats[m], data, scales, format, src->data, SL_F32, src->layout, src->in, src->out,
                            &err) != 0)
            die("converting", &err);
        add_buf(w, data, data_bytes);
        if (scales) add_buf(w, scales, scale_bytes);
    }
}

static double time_floor(bench *b, const weights *w)
{
    double t0 = sl_now();
    volatile uint64_t sink = sl_kern_stream(b->kern, (const void *const *)w->bufs, w->lens, w->n_bufs);
    (void)sink;
    return sl_now() - t0;
}

/* One token: every matrix once, from a vector of its input width; kind[] gets the time per kind. */
static double time_decode(bench *b, const weights *w, double *kind)
{
    sl_err err;
    memset(kind, 0, KINDS * sizeof *kind);
    double start = sl_now();
    for (int m = 0; m < w->n_mats; m++) {
        double t0 = sl_now();
        if (sl_kern_matmul(b->kern, b->out, b->x, 1, &w->mats[m], NULL, false, &err) != 0) die("decode", &err);
        kind[kind_of(m, b->layers)] += sl_now() - t0;
    }
    return sl_now() - start;
}

/* A prefill's matmuls: the blocks' at every position, the head's at the last. */
static double time_prefill(bench *b, const weights *w)
{
    sl_err err;
    double t0 = sl_now();
    for (int m = 0; m < w->n_mats; m++) {
        int n = kind_of(m, b->layers) == 4 ? 1 : b->prompt;
        if (sl_kern_matmul(b->kern, b->out, b->x, n, &w->mats[m], NULL, false, &err) != 0) die("prefill", &err);
    }
    return sl_now() - t0;
}

/* The same through ops.c's OpenBLAS calls (sgemv for one row, sgemm for several). */
static double time_blas(bench *b, const weights *f32, int n)
{
    double t0 = sl_now();
    for (int m = 0; m < f32->n_mats; m++) {
        const sl_wmat *w = &f32->mats[m];
        if (w->layout == SL_WL_CONV1D)
            sl_matmul_forward(b->out, b->x, w->data, NULL, n, w->in, w->out, false);
        else
            sl_matmul_forward_wt(b->out, b->x, w->data, 1, w->in, w->out);
    }
    return sl_now() - t0;
}

/* One round: the formats in a rotating order, the memory-bound work first (each format's floor,
 * decode, lingering decode, the triad), then the sgemm work. */
static void run_round(bench *b, int round, round_times *t)
{
    for (int i = 0; i < SL_WF_COUNT; i++) {
        int f = (i + round) % SL_WF_COUNT;
        double unused[KINDS];
        t->floor[f] = time_floor(b, &b->w[f]);
        t->decode[f] = time_decode(b, &b->w[f], t->kind[f]);
        sl_kern_set_linger(b->kern, LINGER_US);
        t->linger[f] = time_decode(b, &b->w[f], unused);
        sl_kern_set_linger(b->kern, 0);
    }
    t->triad = bench_triad_time(&b->triad);
    t->blas_decode = time_blas(b, &b->w[SL_WF_F32], 1);
    for (int i = 0; i < SL_WF_COUNT; i++) {
        int f = (i + round) % SL_WF_COUNT;
        t->prefill[f] = time_prefill(b, &b->w[f]);
    }
    t->blas_prefill = time_blas(b, &b->w[SL_WF_F32], b->prompt);
}

#define MEDIAN(t, rounds, member) bench_median_ms(t, sizeof *(t), rounds, offsetof(round_times, member))

static void print_table(const bench *b, const round_times *t, int rounds, int threads, bool pin, bool detail)
{
    double mb[SL_WF_COUNT], floor[SL_WF_COUNT], dec[SL_WF_COUNT], lin[SL_WF_COUNT], pre[SL_WF_COUNT];
    double r1[SL_WF_COUNT], r2[SL_WF_COUNT], r3[SL_WF_COUNT], r4[SL_WF_COUNT], r5[SL_WF_COUNT];
    for (int f = 0; f < SL_WF_COUNT; f++) {
        mb[f] = (double)b->w[f].bytes / 1e6;
        floor[f] = MEDIAN(t, rounds, floor[f]);
        dec[f] = MEDIAN(t, rounds, decode[f]);
        lin[f] = MEDIAN(t, rounds, linger[f]);
        pre[f] = MEDIAN(t, rounds, prefill[f]);
    }
    for (int f = 0; f < SL_WF_COUNT; f++) {
        r1[f] = dec[f] / floor[f];
        r2[f] = dec[f] / dec[SL_WF_F32];
        r3[f] = pre[f] / pre[SL_WF_F32];
        r4[f] = lin[f] / floor[f];
        r5[f] = lin[f] / lin[SL_WF_F32];
    }
    double triad_ms = MEDIAN(t, rounds, triad), triad_gbs = bench_triad_gbs(&b->triad, triad_ms / 1e3);
    double read_gbs = mb[SL_WF_F32] / floor[SL_WF_F32];
    printf("Kernels: %s (SL_KERNELS forces another); %d threads%s; medians of %d interleaved rounds\n",
           sl_kern_isa_name(sl_kern_isa_used(b->kern)), threads, pin ? ", pinned" : "", rounds);
    printf("Memory: STREAM triad %.1f GB/s (%.0f MB x 3); streaming read of the F32 weights %.1f GB/s%s\n\n", triad_gbs,
           b->triad.n * 4 / 1e6, read_gbs,
           read_gbs < 0.9 * triad_gbs ? " — SLOWER than the triad: the floor is not the memory's limit" : "");
    printf("| %d layers, %d wide, vocab %d | f32 | f16 | bf16 | q8_0 |\n|---|---|---|---|---|\n", b->layers, C, VOCAB);
    char label[128];
    bench_format_row("matmul weights, MB", mb, " %.1f |");
    bench_format_row("floor: reading them once, ms", floor, " %.2f |");
    bench_format_row("decode: one token's matrix-vector products, ms", dec, " %.2f |");
    bench_format_row("decode / its floor", r1, " %.3f |");
    bench_format_row("decode / F32 decode", r2, " %.3f |");
    snprintf(label, sizeof label, "decode, workers lingering %d us between products (sl_kern_set_linger), ms",
             LINGER_US);
    bench_format_row(label, lin, " %.2f |");
    bench_format_row("lingering decode / its floor", r4, " %.3f |");
    bench_format_row("lingering decode / F32 lingering decode", r5, " %.3f |");
    snprintf(label, sizeof label, "prefill %d tokens (blocks at every position, head at the last), ms", b->prompt);
    bench_format_row(label, pre, " %.1f |");
    bench_format_row("prefill / F32 prefill", r3, " %.3f |");
    printf("| F32 through OpenBLAS (ops.c: sgemv, sgemm): decode ms, prefill ms | %.2f | %.1f | | |\n",
           MEDIAN(t, rounds, blas_decode), MEDIAN(t, rounds, blas_prefill));
    for (int k = 0; detail && k < KINDS; k++) {
        double v[SL_WF_COUNT];
        for (int f = 0; f < SL_WF_COUNT; f++)
            v[f] = MEDIAN(t, rounds, kind[f][k]);
        snprintf(label, sizeof label, "decode, %s matrices, ms", kind_names[k]);
        bench_format_row(label, v, " %.3f |");
    }
}

static void setup(bench *b, int threads, bool pin)
{
    sl_err err;
    if (sl_threads_setup(threads, pin, &err) != 0) die("threads", &err);
    if (!(b->kern = sl_kern_new(threads, pin, SL_KERN_AUTO, &err))) die("kernels", &err);
    if (!(b->pool = sl_pool_new(threads, pin, &err))) die("threads", &err);
    sl_rng rng;
    sl_rng_seed(&rng, 1);
    make_f32(&b->w[SL_WF_F32], b->layers, &rng);
    for (int f = SL_WF_F16; f < SL_WF_COUNT; f++)
        convert(&b->w[f], &b->w[SL_WF_F32], (sl_wformat)f);
    b->x = alloc_or_die((size_t)b->prompt * INNER * sizeof *b->x);
    b->out = alloc_or_die((size_t)b->prompt * VOCAB * sizeof *b->out);
    for (size_t i = 0; i < (size_t)b->prompt * INNER; i++)
        b->x[i] = sl_rng_normal(&rng);
    if (!bench_triad_init(&b->triad, b->pool)) die("allocating", NULL);
}

static void teardown(bench *b)
{
    for (int f = 0; f < SL_WF_COUNT; f++)
        for (int i = 0; i < b->w[f].n_bufs; i++)
            free(b->w[f].bufs[i]);
    bench_triad_free(&b->triad);
    free(b->x);
    free(b->out);
    sl_pool_destroy(&b->pool);
    sl_kern_destroy(&b->kern);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"rounds", 1, 0, 'r'}, {"threads", 1, 0, 't'}, {"no-pin", 0, 0, 'n'}, {"prompt", 1, 0, 'p'},
        {"layers", 1, 0, 'l'}, {"detail", 0, 0, 'd'},  {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    long rounds = 9, threads = 2, prompt = 64, layers = 12;
    bool pin = true, detail = false;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c == 'r')
            rc = sl_parse_long(optarg, "--rounds", 1, MAX_ROUNDS, &rounds, &err);
        else if (c == 't')
            rc = sl_parse_long(optarg, "--threads", 1, 64, &threads, &err);
        else if (c == 'p')
            rc = sl_parse_long(optarg, "--prompt", 2, 1024, &prompt, &err);
        else if (c == 'l')
            rc = sl_parse_long(optarg, "--layers", 1, MAX_LAYERS, &layers, &err);
        else if (c == 'n')
            pin = false;
        else if (c == 'd')
            detail = true;
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    if (rc == 0 && optind != argc) rc = sl_fail(&err, "unexpected argument '%s'", argv[optind]);
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-bench-kernels: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    bench b = {.layers = (int)layers, .prompt = (int)prompt};
    setup(&b, (int)threads, pin);
    round_times *t = calloc((size_t)rounds + 1, sizeof *t);
    if (!t) die("allocating", NULL);
    for (int r = -1; r < rounds; r++) /* round -1 warms up */
        run_round(&b, r + 1, &t[r < 0 ? rounds : r]);
    print_table(&b, t, (int)rounds, (int)threads, pin, detail);
    free(t);
    teardown(&b);
    return SL_EXIT_OK;
}
