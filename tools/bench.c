/* bench.c — zmq-splitlearn-bench: the engine's benchmarks at a real model shape, with the
 * OpenBLAS sgemm time of the same matmuls measured in the same run so that the figures come
 * with ratios that survive a noisy machine. */
#include "clock.h"
#include "cli.h"
#include "cpu.h"
#include "gpt2.h"
#include "kern.h"
#include "part.h"
#include "split.h"

#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char usage[] =
    "usage: zmq-splitlearn-bench MODEL_DIR [--runs 7] [--prompt 64] [--decode 32] [--threads 2] [--no-pin]\n"
    "                            [--parts DIR]\n"
    "\n"
    "Times, single process, median of --runs after a warm-up: prefill of a --prompt-token prompt\n"
    "with logits at every position and at the last one only; OpenBLAS sgemm on the same shapes;\n"
    "decode ms/token for --decode tokens after the prompt (KV cache); loading a part (--parts, a\n"
    "split directory of MODEL_DIR). Prints a Markdown table.\n"
    "\n"
    "exit status: 0 done, 1 failure, 2 usage error\n";

typedef struct bench {
    sl_params p;
    sl_runner *stage;
    sl_kv *kv;
    int32_t *ids;
    float *logits;
    int prompt, decode, runs;
} bench;

static double time_prefill(bench *b, sl_output which)
{
    sl_err err;
    double t[64];
    for (int r = -1; r < b->runs; r++) {
        sl_kv_reset(b->kv);
        double t0 = sl_now();
        if (sl_runner_forward(b->stage, b->kv, b->prompt, b->ids, NULL, b->logits, which, &err) != 0) {
            fprintf(stderr, "prefill: %s\n", err.msg);
            exit(SL_EXIT_FAILURE);
        }
        if (r >= 0) t[r] = sl_now() - t0;
    }
    return sl_median(t, b->runs);
}

static double time_decode(bench *b)
{
    sl_err err;
    double t[64];
    for (int r = -1; r < b->runs; r++) {
        sl_kv_reset(b->kv);
        sl_runner_forward(b->stage, b->kv, b->prompt, b->ids, NULL, b->logits, SL_OUT_LOGITS_LAST, &err);
        int32_t next = 1;
        double t0 = sl_now();
        for (int i = 0; i < b->decode; i++) {
            if (sl_runner_forward(b->stage, b->kv, 1, &next, NULL, b->logits, SL_OUT_LOGITS_LAST, &err) != 0) {
                fprintf(stderr, "decode: %s\n", err.msg);
                exit(SL_EXIT_FAILURE);
            }
            next = (next * 7919 + 13) % b->p.cfg.vocab_size;
        }
        if (r >= 0) t[r] = (sl_now() - t0) / b->decode;
    }
    return sl_median(t, b->runs);
}

/* The prefill's matmuls alone, as plain sgemm calls on buffers of the same shapes. */
static double time_sgemm(bench *b, bool all_logits)
{
    const sl_config *c = &b->p.cfg;
    const int T = b->prompt, C = c->n_embd, H = c->n_inner, V = c->vocab_size;
    float *in = calloc((size_t)T * H, sizeof(float)), *out = calloc((size_t)T * (V > H ? V : H), sizeof(float));
    double t[64];
    for (int r = -1; r < b->runs; r++) {
        double t0 = sl_now();
        for (int l = 0; l < c->n_layer; l++) {
            const sl_block *w = &b->p.blocks[l];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, 3 * C, C, 1, in, C, w->qkv_w, 3 * C, 0, out,
                        3 * C);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, C, 1, in, C, w->attn_proj_w, C, 0, out, C);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, H, C, 1, in, C, w->fc_w, H, 0, out, H);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, H, 1, in, H, w->fc_proj_w, C, 0, out, C);
        }
        int rows = all_logits ? T : 1;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, C, 1, in, C, b->p.lm_head, C, 0, out, V);
        if (r >= 0) t[r] = sl_now() - t0;
    }
    free(in);
    free(out);
    return sl_median(t, b->runs);
}

/* The floor under decode: every weight read once by the kernels' threads (sl_kern_stream: each
 * thread its share of every tensor as 8 prefetched streams, enough loads in flight to reach the
 * memory's bandwidth; a plain loop with 16 accumulators reaches only about two thirds of it). */
typedef struct tensor_list {
    const void *bufs[1024];
    size_t lens[1024];
    int n;
} tensor_list;

static int add_tensor(sl_param_ref *ref, void *ctx)
{
    tensor_list *l = ctx;
    if (l->n == 1024) return -1;
    for (int i = 0; i < l->n; i++)
        if (l->bufs[i] == *ref->slot) return 0; /* a tied head is wte: read once */
    l->bufs[l->n] = *ref->slot;
    l->lens[l->n++] = ref->numel * sizeof(float);
    return 0;
}

static double time_weight_read(sl_params *p, sl_kern *kern, int runs)
{
    tensor_list l = {.n = 0};
    if (sl_params_foreach(p, add_tensor, &l) != 0) {
        fprintf(stderr, "zmq-splitlearn-bench: more than 1024 tensors\n");
        exit(SL_EXIT_FAILURE);
    }
    double t[64];
    for (int r = -1; r < runs; r++) {
        double t0 = sl_now();
        volatile uint64_t sink = sl_kern_stream(kern, l.bufs, l.lens, l.n);
        (void)sink;
        if (r >= 0) t[r] = sl_now() - t0;
    }
    return sl_median(t, runs);
}

static double time_part_load(const char *parts_dir, int first, int last, int runs)
{
    double t[64];
    sl_err err;
    for (int r = -1; r < runs; r++) {
        double t0 = sl_now();
        sl_part *part = sl_part_open(parts_dir, first, last, false, &err);
        sl_params p;
        if (!part || sl_part_load_params(part, &p, false, &err) != 0) {
            fprintf(stderr, "part load: %s\n", err.msg);
            exit(SL_EXIT_FAILURE);
        }
        if (r >= 0) t[r] = sl_now() - t0;
        sl_params_free(&p);
        sl_part_destroy(&part);
    }
    return sl_median(t, runs);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"runs", 1, 0, 'r'},    {"prompt", 1, 0, 'p'}, {"decode", 1, 0, 'd'},
                                            {"threads", 1, 0, 't'}, {"no-pin", 0, 0, 'n'}, {"parts", 1, 0, 'P'},
                                            {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    long runs = 7, prompt = 64, decode = 32, threads = 2;
    bool pin = true;
    const char *parts_dir = NULL;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        switch (c) {
        case 'r':
            rc = sl_parse_long(optarg, "--runs", 1, 64, &runs, &err);
            break;
        case 'p':
            rc = sl_parse_long(optarg, "--prompt", 1, 1024, &prompt, &err);
            break;
        case 'd':
            rc = sl_parse_long(optarg, "--decode", 1, 1024, &decode, &err);
            break;
        case 't':
            rc = sl_parse_long(optarg, "--threads", 1, 256, &threads, &err);
            break;
        case 'n':
            pin = false;
            break;
        case 'P':
            parts_dir = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return SL_EXIT_OK;
        default:
            fputs(usage, stderr);
            return SL_EXIT_USAGE;
        }
    }
    if (rc == 0 && optind != argc - 1) rc = sl_fail(&err, "give exactly one MODEL_DIR");
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-bench: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    if (sl_threads_setup((int)threads, pin, &err) != 0) fprintf(stderr, "warning: %s\n", err.msg), pin = false;
    bench b = {.prompt = (int)prompt, .decode = (int)decode, .runs = (int)runs};
    sl_hf_model *ck = sl_hf_model_open(argv[optind], &err);
    if (!ck || sl_params_load(&b.p, ck, 0, sl_hf_model_config(ck)->n_layer, true, true, getenv("BENCH_COPY") != NULL,
                              &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-bench: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    const sl_config *cfg = &b.p.cfg;
    if (prompt + decode > cfg->n_positions) {
        fprintf(stderr, "zmq-splitlearn-bench: --prompt + --decode exceed n_positions %d\n", cfg->n_positions);
        return SL_EXIT_USAGE;
    }
    b.stage = sl_runner_new(&b.p, (int)prompt, NULL, &err);
    b.kv = sl_kv_new(&b.p, (int)(prompt + decode), SL_F32, &err);
    b.ids = malloc((size_t)prompt * sizeof *b.ids);
    b.logits = malloc((size_t)prompt * cfg->vocab_size * sizeof(float));
    for (int i = 0; i < prompt; i++)
        b.ids[i] = (i * 7919 + 13) % cfg->vocab_size;

    double prefill_all = time_prefill(&b, SL_OUT_LOGITS_ALL), sgemm_all = time_sgemm(&b, true);
    double prefill_last = time_prefill(&b, SL_OUT_LOGITS_LAST), sgemm_last = time_sgemm(&b, false);
    double decode_ms = time_decode(&b) * 1e3;
    sl_kern *kern = sl_kern_new((int)threads, pin, SL_KERN_AUTO, &err);
    if (!kern) {
        fprintf(stderr, "zmq-splitlearn-bench: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    double floor_ms = time_weight_read(&b.p, kern, (int)runs) * 1e3;
    sl_kern_destroy(&kern);
    /* Which kernels OpenBLAS chose for this CPU: a CPU newer than the library gets generic ones. */
    printf("OpenBLAS: %s; kernels: %s\n\n", openblas_get_config(), openblas_get_corename());
    printf("| work (%d layers, %d wide, vocab %d; %ld threads%s; median of %ld) | ms | sgemm-only ms | ratio |\n",
           cfg->n_layer, cfg->n_embd, cfg->vocab_size, threads, pin ? ", pinned" : "", runs);
    printf("|---|---|---|---|\n");
    printf("| prefill %ld tokens, logits at every position | %.1f | %.1f | %.3f |\n", prompt, prefill_all * 1e3,
           sgemm_all * 1e3, prefill_all / sgemm_all);
    printf("| prefill %ld tokens, logits at the last position | %.1f | %.1f | %.3f |\n", prompt, prefill_last * 1e3,
           sgemm_last * 1e3, prefill_last / sgemm_last);
    printf("| decode, ms per token (%ld tokens after %ld, KV cache) | %.2f | | |\n", decode, prompt, decode_ms);
    printf("| reading every weight once (%.0f MB, %ld threads, 8 prefetched streams each; the STREAM triad is in "
           "the kernels' table): the decode floor | %.2f | | %.3f |\n",
           (double)sl_params_count(&b.p) * 4 / 1e6, threads, floor_ms, decode_ms / floor_ms);
    if (parts_dir) {
        sl_part_info parts[SL_MAX_SPLITS + 1];
        int n = sl_split_read_index(parts_dir, parts, SL_MAX_SPLITS + 1, &err);
        for (int i = 0; i < n; i++)
            printf("| load part %s [%d,%d) (mmap, no verify) | %.2f | | |\n", parts[i].name, parts[i].first,
                   parts[i].last, time_part_load(parts_dir, parts[i].first, parts[i].last, (int)runs) * 1e3);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| peak RSS of this process (inference), MB; weights %.0f MB | %.0f | | %.3f |\n",
           (double)sl_params_count(&b.p) * 4 / 1048576, (double)ru.ru_maxrss / 1024,
           (double)ru.ru_maxrss * 1024 / ((double)sl_params_count(&b.p) * 4));
    free(b.ids);
    free(b.logits);
    sl_kv_destroy(&b.kv);
    sl_runner_destroy(&b.stage);
    sl_params_free(&b.p);
    sl_hf_model_destroy(&ck);
    return SL_EXIT_OK;
}
