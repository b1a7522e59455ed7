/* bench.c — zmq-splitlearn-bench: the runner at a real model's shape with its weights in F32, F16,
 * BF16 and Q8_0, in one run of interleaved rounds: decode and prefill through sl_runner_forward,
 * each decode against the time of reading that format's weights once (its floor) and a STREAM
 * triad, and the F32 prefill against OpenBLAS's sgemm on the same shapes, so that the figures come
 * with ratios that survive a noisy machine. */
#include "bench_util.h"
#include "clock.h"
#include "cpu.h"
#include "gpt2.h"
#include "hf_model.h"
#include "kern.h"
#include "part.h"
#include "split.h"
#include "tool.h"

#include <cblas.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char prog[] = "zmq-splitlearn-bench";

static const char usage[] =
    "usage: zmq-splitlearn-bench MODEL_DIR [--runs 7] [--prompt 64] [--decode 32] [--threads 2] [--no-pin]\n"
    "                            [--parts DIR]\n"
    "\n"
    "Loads MODEL_DIR (F32) and converts its matrices to F16, BF16 and Q8_0 (sl_params_convert), then\n"
    "times in --runs interleaved rounds (medians, after a warm-up round), for every format through\n"
    "sl_runner_forward: prefill of a --prompt-token prompt (logits at the last position), decode\n"
    "ms/token for --decode tokens after it (KV cache), and the floor under decode: reading once every\n"
    "byte a token reads (the matrices in the format, the head included; LayerNorms and biases) with\n"
    "sl_kern_stream; also a STREAM triad, and the F32 prefill with logits at every position and at\n"
    "the last one against OpenBLAS sgemm on the same shapes. Times are medians; a ratio is the\n"
    "median over the rounds of the ratio within a round. Decode runs as shipped (the kernels' workers\n"
    "watch for the next product within a step: SL_RUNNER_LINGER_US) and with them sleeping after\n"
    "every product (linger 0), to show what waking them costs. --parts: time\n"
    "loading each part of that split directory. Prints Markdown tables. SL_KERNELS forces a kernel set.\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 done, 1 failure, 2 usage error\n";

enum { MAX_RUNS = BENCH_MAX_ROUNDS, MAX_BUFS = 1024, FLOOR_READS = 4 };

/* Every byte one decoded token reads from the weights, as buffers for sl_kern_stream. */
typedef struct read_list {
    const void *bufs[MAX_BUFS];
    size_t lens[MAX_BUFS];
    int n;
    size_t bytes;
} read_list;

/* One format's model, its runner and its cache. */
typedef struct model {
    sl_params p;
    sl_runner *stage;
    sl_kv *kv;
    read_list reads;
} model;

/* One round's times in seconds: [format] and the F32 extras. */
typedef struct round_times {
    double floor[SL_WF_COUNT], decode[SL_WF_COUNT], sleeping[SL_WF_COUNT], prefill[SL_WF_COUNT];
    double prefill_all, sgemm_all, sgemm_last, triad;
} round_times;

typedef struct bench {
    model m[SL_WF_COUNT];
    sl_kern *kern;
    sl_pool *pool; /* the triad's threads */
    bench_triad triad;
    int32_t *ids;
    float *logits, *sgemm_in, *sgemm_out;
    int prompt, decode;
} bench;

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, msg);
    exit(SL_EXIT_FAILURE);
}

static void add_read(read_list *l, const void *buf, size_t len)
{
    if (l->n == MAX_BUFS) die("the model", "more than 1024 tensors");
    l->bufs[l->n] = buf;
    l->lens[l->n++] = len;
    l->bytes += len;
}

/* What a token reads of a tensor: a matrix's values and scales in its format, a vector's floats;
 * of wte and wpe only a row each (unless wte is also the head). */
static int add_tensor(sl_param_ref *ref, void *ctx)
{
    model *m = ctx;
    const sl_params *p = &m->p;
    if (ref->slot == &m->p.wpe || (ref->slot == &m->p.wte && !(p->head && p->head_is_wte))) return 0;
    if (!ref->wmat) {
        add_read(&m->reads, *ref->slot, ref->numel * sizeof(float));
        return 0;
    }
    size_t data_bytes, scale_bytes;
    sl_wmat_sizes(ref->wmat->format, ref->in, ref->out, &data_bytes, &scale_bytes, NULL);
    add_read(&m->reads, ref->wmat->data, data_bytes);
    if (scale_bytes) add_read(&m->reads, ref->wmat->scales, scale_bytes);
    return 0;
}

/* Seconds per read of FLOOR_READS reads back to back after one untimed: the steady state of a
 * decode, which reads the same bytes token after token (what the caches keep between two reads
 * counts for both alike). */
static double time_floor(bench *b, const model *m)
{
    volatile uint64_t sink = sl_kern_stream(b->kern, m->reads.bufs, m->reads.lens, m->reads.n);
    double t0 = sl_now();
    for (int i = 0; i < FLOOR_READS; i++)
        sink ^= sl_kern_stream(b->kern, m->reads.bufs, m->reads.lens, m->reads.n);
    (void)sink;
    return (sl_now() - t0) / FLOOR_READS;
}

static void forward(bench *b, model *m, int T, const int32_t *ids, sl_output which)
{
    sl_err err;
    if (sl_runner_forward(m->stage, m->kv, T, ids, NULL, b->logits, which, &err) != 0) die("forward", err.msg);
}

static double time_prefill(bench *b, model *m, sl_output which)
{
    sl_kv_reset(m->kv);
    double t0 = sl_now();
    forward(b, m, b->prompt, b->ids, which);
    return sl_now() - t0;
}

/* Seconds per token of --decode tokens after the prompt (prefilled if the cache is empty). */
static double time_decode(bench *b, model *m)
{
    if (sl_kv_len(m->kv) != b->prompt) time_prefill(b, m, SL_OUT_LOGITS_LAST);
    int32_t next = 1;
    double t0 = sl_now();
    for (int i = 0; i < b->decode; i++) {
        forward(b, m, 1, &next, SL_OUT_LOGITS_LAST);
        next = (next * 7919 + 13) % m->p.cfg.vocab_size;
    }
    double per_token = (sl_now() - t0) / b->decode;
    sl_kv_truncate(m->kv, b->prompt);
    return per_token;
}

/* The F32 prefill's matmuls alone, as plain sgemm calls on buffers of the same shapes. */
static double time_sgemm(bench *b, bool all_logits)
{
    const sl_params *p = &b->m[SL_WF_F32].p;
    const sl_config *c = &p->cfg;
    const int T = b->prompt, C = c->n_embd, H = c->n_inner, V = c->vocab_size;
    float *in = b->sgemm_in, *out = b->sgemm_out;
    double t0 = sl_now();
    for (int l = 0; l < c->n_layer; l++) {
        const sl_block *w = &p->blocks[l];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, 3 * C, C, 1, in, C, w->qkv_w, 3 * C, 0, out, 3 * C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, C, 1, in, C, w->attn_proj_w, C, 0, out, C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, H, C, 1, in, C, w->fc_w, H, 0, out, H);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, H, 1, in, H, w->fc_proj_w, C, 0, out, C);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, all_logits ? T : 1, V, C, 1, in, C, p->lm_head, C, 0, out, V);
    return sl_now() - t0;
}

/* One round: the formats in a rotating order, each read once (its floor), decoded and prefilled
 * (as shipped, then with the workers sleeping between products); the triad; then the F32 sgemm
 * comparison. */
static void run_round(bench *b, int round, round_times *t)
{
    for (int i = 0; i < SL_WF_COUNT; i++) {
        int f = (i + round) % SL_WF_COUNT;
        model *m = &b->m[f];
        t->floor[f] = time_floor(b, m);
        t->prefill[f] = time_prefill(b, m, SL_OUT_LOGITS_LAST);
        t->decode[f] = time_decode(b, m);
        sl_runner_set_linger(m->stage, 0);
        t->sleeping[f] = time_decode(b, m);
        sl_runner_set_linger(m->stage, SL_RUNNER_LINGER_US);
    }
    t->triad = bench_triad_time(&b->triad);
    model *f32 = &b->m[SL_WF_F32];
    t->prefill_all = time_prefill(b, f32, SL_OUT_LOGITS_ALL);
    t->sgemm_all = time_sgemm(b, true);
    t->sgemm_last = time_sgemm(b, false);
}

#define MEDIAN(t, rounds, member) bench_median_ms(t, sizeof *(t), rounds, offsetof(round_times, member))

/* Median over rounds of the ratio, within each round, of the doubles at offsets a and b: a noisy
 * machine slows both sides of one round alike, so this moves less than a ratio of medians. */
static double median_ratio(const round_times *t, int rounds, size_t a, size_t b)
{
    double v[MAX_RUNS];
    for (int r = 0; r < rounds; r++) {
        double x, y;
        memcpy(&x, (const char *)&t[r] + a, sizeof x);
        memcpy(&y, (const char *)&t[r] + b, sizeof y);
        v[r] = x / y;
    }
    return sl_median(v, rounds);
}

#define RATIO(t, rounds, a, b) median_ratio(t, rounds, offsetof(round_times, a), offsetof(round_times, b))

/* The F32 table: prefill against bare sgemm. */
static void print_f32_table(const bench *b, const round_times *t, int rounds, const double *prefill_last)
{
    const sl_config *cfg = &b->m[SL_WF_F32].p.cfg;
    double all = MEDIAN(t, rounds, prefill_all), sg_all = MEDIAN(t, rounds, sgemm_all);
    double sg_last = MEDIAN(t, rounds, sgemm_last);
    printf("| F32 prefill against OpenBLAS (%d layers, %d wide, vocab %d) | ms | sgemm-only ms | ratio |\n",
           cfg->n_layer, cfg->n_embd, cfg->vocab_size);
    printf("|---|---|---|---|\n");
    printf("| prefill %d tokens, logits at every position | %.1f | %.1f | %.3f |\n", b->prompt, all, sg_all,
           RATIO(t, rounds, prefill_all, sgemm_all));
    printf("| prefill %d tokens, logits at the last position | %.1f | %.1f | %.3f |\n", b->prompt,
           prefill_last[SL_WF_F32], sg_last, RATIO(t, rounds, prefill[SL_WF_F32], sgemm_last));
}

static void print_tables(const bench *b, const round_times *t, int rounds, int threads, bool pin)
{
    double mb[SL_WF_COUNT], floor[SL_WF_COUNT], dec[SL_WF_COUNT], slept[SL_WF_COUNT], pre[SL_WF_COUNT];
    double r_floor[SL_WF_COUNT], r_f32[SL_WF_COUNT], r_pre[SL_WF_COUNT], r_slept[SL_WF_COUNT], r_slept32[SL_WF_COUNT];
    for (int f = 0; f < SL_WF_COUNT; f++) {
        mb[f] = (double)b->m[f].reads.bytes / 1e6;
        floor[f] = MEDIAN(t, rounds, floor[f]);
        dec[f] = MEDIAN(t, rounds, decode[f]);
        slept[f] = MEDIAN(t, rounds, sleeping[f]);
        pre[f] = MEDIAN(t, rounds, prefill[f]);
    }
    for (int f = 0; f < SL_WF_COUNT; f++) {
        r_floor[f] = RATIO(t, rounds, decode[f], floor[f]);
        r_f32[f] = RATIO(t, rounds, decode[f], decode[SL_WF_F32]);
        r_pre[f] = RATIO(t, rounds, prefill[f], prefill[SL_WF_F32]);
        r_slept[f] = RATIO(t, rounds, sleeping[f], floor[f]);
        r_slept32[f] = RATIO(t, rounds, sleeping[f], sleeping[SL_WF_F32]);
    }
    double triad_gbs = bench_triad_gbs(&b->triad, MEDIAN(t, rounds, triad) / 1e3);
    double read_gbs = mb[SL_WF_F32] / floor[SL_WF_F32];
    const sl_config *cfg = &b->m[SL_WF_F32].p.cfg;
    printf("OpenBLAS: %s; kernels: %s. Ours: %s (SL_KERNELS forces another); %d threads%s; medians of %d "
           "interleaved rounds\n",
           openblas_get_config(), openblas_get_corename(), sl_kern_isa_name(sl_kern_isa_used(b->kern)), threads,
           pin ? ", pinned" : "", rounds);
    printf("Memory: STREAM triad %.1f GB/s (%.0f MB x 3); streaming read of the F32 weights %.1f GB/s%s\n\n", triad_gbs,
           (double)b->triad.n * 4 / 1e6, read_gbs,
           read_gbs < 0.9 * triad_gbs ? " — SLOWER than the triad: the floor is not the memory's limit" : "");
    printf("| runner, whole model (%d layers, %d wide, vocab %d) | f32 | f16 | bf16 | q8_0 |\n|---|---|---|---|---|\n",
           cfg->n_layer, cfg->n_embd, cfg->vocab_size);
    char label[160];
    bench_format_row("weights a token reads (matrices in the format, head included; LayerNorms, biases), MB", mb,
                     " %.1f |");
    bench_format_row("floor: reading them once (sl_kern_stream), ms", floor, " %.2f |");
    snprintf(label, sizeof label, "decode, ms per token (%d tokens after %d, KV cache)", b->decode, b->prompt);
    bench_format_row(label, dec, " %.2f |");
    bench_format_row("decode / its floor", r_floor, " %.3f |");
    bench_format_row("decode / F32 decode", r_f32, " %.3f |");
    bench_format_row("decode with the workers sleeping after every product (linger 0), ms per token", slept, " %.2f |");
    bench_format_row("sleeping decode / its floor", r_slept, " %.3f |");
    bench_format_row("sleeping decode / F32 sleeping decode", r_slept32, " %.3f |");
    snprintf(label, sizeof label, "prefill %d tokens (logits at the last position), ms", b->prompt);
    bench_format_row(label, pre, " %.1f |");
    bench_format_row("prefill / F32 prefill", r_pre, " %.3f |");
    printf("\n");
    print_f32_table(b, t, rounds, pre);
}

/* The F32 model from MODEL_DIR and its conversions, each with a runner on the shared kernels. */
static void setup(bench *b, const char *model_dir, sl_hf_model **ck, int threads, bool pin)
{
    sl_err err;
    if (!(*ck = sl_hf_model_open(model_dir, &err))) die(model_dir, err.msg);
    const sl_config *cfg = sl_hf_model_config(*ck);
    if (b->prompt + b->decode > cfg->n_positions) die("--prompt + --decode", "more than the model's n_positions");
    if (sl_params_load(&b->m[SL_WF_F32].p, *ck, 0, cfg->n_layer, true, true, false, &err) != 0) die(model_dir, err.msg);
    for (int f = SL_WF_F16; f < SL_WF_COUNT; f++)
        if (sl_params_convert(&b->m[f].p, &b->m[SL_WF_F32].p, (sl_wformat)f, &err) != 0) die("converting", err.msg);
    if (!(b->kern = sl_kern_new(threads, pin, SL_KERN_AUTO, &err))) die("kernels", err.msg);
    if (!(b->pool = sl_pool_new(threads, pin, &err))) die("threads", err.msg);
    if (!bench_triad_init(&b->triad, b->pool)) die("triad", "out of memory");
    for (int f = 0; f < SL_WF_COUNT; f++) {
        model *m = &b->m[f];
        sl_params_foreach(&m->p, add_tensor, m);
        if (!(m->stage = sl_runner_new(&m->p, b->prompt, b->kern, &err)) ||
            !(m->kv = sl_kv_new(&m->p, b->prompt + b->decode, SL_F32, &err)))
            die("runner", err.msg);
    }
    const size_t T = (size_t)b->prompt, H = (size_t)cfg->n_inner, V = (size_t)cfg->vocab_size;
    const size_t widest = V > H ? (V > 3 * (size_t)cfg->n_embd ? V : 3 * (size_t)cfg->n_embd) : H;
    b->ids = malloc(T * sizeof *b->ids);
    b->logits = malloc(T * cfg->vocab_size * sizeof(float));
    b->sgemm_in = calloc(T * cfg->n_inner, sizeof(float));
    b->sgemm_out = calloc(T * widest, sizeof(float));
    if (!b->ids || !b->logits || !b->sgemm_in || !b->sgemm_out) die("buffers", "out of memory");
    for (int i = 0; i < b->prompt; i++)
        b->ids[i] = (i * 7919 + 13) % cfg->vocab_size;
}

static void teardown(bench *b)
{
    for (int f = SL_WF_COUNT - 1; f >= 0; f--) {
        sl_kv_destroy(&b->m[f].kv);
        sl_runner_destroy(&b->m[f].stage);
        sl_params_free(&b->m[f].p);
    }
    bench_triad_free(&b->triad);
    sl_pool_destroy(&b->pool);
    sl_kern_destroy(&b->kern);
    free(b->ids);
    free(b->logits);
    free(b->sgemm_in);
    free(b->sgemm_out);
}

static double time_part_load(const char *parts_dir, int first, int last, int runs)
{
    double t[MAX_RUNS];
    sl_err err;
    for (int r = -1; r < runs; r++) {
        double t0 = sl_now();
        sl_part *part = sl_part_open(parts_dir, first, last, false, &err);
        sl_params p;
        if (!part || sl_part_load_params(part, &p, false, &err) != 0) die("part load", err.msg);
        if (r >= 0) t[r] = sl_now() - t0;
        sl_params_free(&p);
        sl_part_destroy(&part);
    }
    return sl_median(t, runs);
}

static void print_part_loads(const char *parts_dir, int runs)
{
    sl_err err;
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int n = sl_split_read_index(parts_dir, parts, SL_MAX_SPLITS + 1, &err);
    if (n < 0) die(parts_dir, err.msg);
    for (int i = 0; i < n; i++)
        printf("| load part %s [%d,%d) (mmap, no verify) | %.2f | | |\n", parts[i].name, parts[i].first, parts[i].last,
               time_part_load(parts_dir, parts[i].first, parts[i].last, runs) * 1e3);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"runs", 1, 0, 'r'},    {"prompt", 1, 0, 'p'}, {"decode", 1, 0, 'd'},
                                            {"threads", 1, 0, 't'}, {"no-pin", 0, 0, 'n'}, {"parts", 1, 0, 'P'},
                                            SL_TOOL_OPTIONS,        {0, 0, 0, 0}};
    long runs = 7, prompt = 64, decode = 32, threads = 2;
    bool pin = true;
    const char *parts_dir = NULL;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c == 'r')
            rc = sl_parse_long(optarg, "--runs", 1, MAX_RUNS, &runs, &err);
        else if (c == 'p')
            rc = sl_parse_long(optarg, "--prompt", 2, 1024, &prompt, &err);
        else if (c == 'd')
            rc = sl_parse_long(optarg, "--decode", 1, 1024, &decode, &err);
        else if (c == 't')
            rc = sl_parse_long(optarg, "--threads", 1, 64, &threads, &err);
        else if (c == 'n')
            pin = false;
        else if (c == 'P')
            parts_dir = optarg;
        else
            return sl_tool_other_option(c, prog, usage);
    }
    if (rc == 0 && optind != argc - 1) rc = sl_fail(&err, "give exactly one MODEL_DIR");
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    if (sl_threads_setup((int)threads, pin, &err) != 0) fprintf(stderr, "warning: %s\n", err.msg), pin = false;
    bench b = {.prompt = (int)prompt, .decode = (int)decode};
    sl_hf_model *ck = NULL;
    setup(&b, argv[optind], &ck, (int)threads, pin);
    round_times *t = calloc((size_t)runs + 1, sizeof *t);
    if (!t) die("rounds", "out of memory");
    for (int r = -1; r < runs; r++) /* round -1 warms up */
        run_round(&b, r + 1, &t[r < 0 ? runs : r]);
    print_tables(&b, t, (int)runs, (int)threads, pin);
    if (parts_dir) print_part_loads(parts_dir, (int)runs);
    free(t);
    teardown(&b);
    sl_hf_model_destroy(&ck);
    return SL_EXIT_OK;
}
