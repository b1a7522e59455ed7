/* run.c — zmq-splitlearn-run: generates with the whole model in one process. The monolithic
 * reference that every pipeline's answer is compared against. */
#include "hf_model.h"
#include "cli.h"
#include "clock.h"
#include "cpu.h"
#include "fileio.h"
#include "gen_opts.h"
#include "gpt2.h"
#include "tokenizer.h"
#include "tool.h"

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-run";

static const char usage[] =
    "usage: zmq-splitlearn-run MODEL_DIR [\"prompt text\" | --ids 1,2,3] [options]\n"
    "\n"
    "Generates from the prompt with the whole model in this process, streaming the text.\n"
    "MODEL_DIR: an HF GPT-2 directory (safetensors or pytorch_model.bin), an HF hub cache\n"
    "entry, a repo id in the hub cache, or one checkpoint file (.safetensors, .pt, .bin) with\n"
    "config.json beside it or given with --config.\n"
    "\n" SL_GEN_USAGE "  --config FILE          the config.json of a MODEL_DIR that is one checkpoint file\n"
    "  --weights FMT          compute on the matrices (wte, the blocks', the head) in f32 (default),\n"
    "                         f16, bf16 or q8_0, converted at load; only the converted copy stays\n"
    "                         in memory (docs/WEIGHTS.md)\n"
    "  --kv f32|f16           what the KV cache holds (default f32; f16: half the memory)\n"
    "  --threads N            compute threads (default: one per CPU)\n"
    "  --pin                  pin the compute threads one per CPU\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 done; 1 failure (model, I/O); 2 usage error (options, a missing\n"
    "MODEL_DIR, a vocab that does not fit the model, a prompt too long); 130 SIGINT\n";

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct run {
    sl_gen_opts opts;
    const char *config; /* --config FILE, or NULL */
    sl_wformat weights; /* --weights */
    sl_dtype kv_dtype;  /* --kv */
    sl_kern *kern;
    sl_params p;
    sl_runner *stage;
    sl_kv *kv;
    sl_sampler *sampler;
    sl_tokenizer *tok;
    sl_gen_text text; /* what is streamed, whole characters */
    float *logits;
    int32_t *generated;
    int n_generated;
} run;

/* Opens the model and what the options need: returns an exit status, err filled when not 0. */
static int load(run *r, const char *model_dir, sl_hf_model **ck, sl_err *err)
{
    if (!(*ck = sl_hf_model_open_with_config(model_dir, r->config, err)))
        return access(model_dir, F_OK) != 0 ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
    if (sl_params_load(&r->p, *ck, 0, sl_hf_model_config(*ck)->n_layer, true, true, false, err) != 0)
        return SL_EXIT_FAILURE;
    const sl_config *cfg = &r->p.cfg; /* the params' copy: it outlives the file (--weights closes it) */
    if (r->opts.prompt || !r->opts.quiet) {
        bool bundled;
        char vocab[PATH_MAX];
        r->tok = sl_gen_tokenizer(r->opts.vocab_dir, sl_hf_model_dir(*ck), cfg->vocab_size, &bundled, vocab,
                                  sizeof vocab, err);
        if (!r->tok && r->opts.prompt) return SL_EXIT_USAGE;
        if (!r->tok) fprintf(stderr, "%s: %s: the text is not shown\n", prog, err->msg);
        if (r->tok && bundled)
            fprintf(stderr, "%s: %s has no vocab: using the bundled GPT-2 vocab (%s)\n", prog, model_dir, vocab);
        r->text.tok = r->tok;
    }
    if (r->opts.prompt) {
        size_t n = 0, cap = 0;
        int32_t *ids = NULL;
        if (sl_tokenizer_encode(r->tok, r->opts.prompt, strlen(r->opts.prompt), &ids, &n, &cap, err) != 0)
            return SL_EXIT_FAILURE;
        int rc = sl_gen_check_prompt(n, cfg->n_positions < SL_MAX_PROMPT ? cfg->n_positions : SL_MAX_PROMPT, err);
        if (rc == 0) memcpy(r->opts.ids, ids, n * sizeof *ids), r->opts.n_ids = (int)n;
        free(ids);
        if (rc != 0) return SL_EXIT_USAGE;
    }
    if (r->weights != r->p.format) { /* converted, then the file's mapping released */
        if (sl_params_reformat(&r->p, r->weights, err) != 0) return SL_EXIT_FAILURE;
        sl_hf_model_destroy(ck);
    }
    int T = r->opts.n_ids, ctx = T + r->opts.max_new_tokens;
    if (sl_gen_check_prompt((size_t)T, cfg->n_positions, err) != 0) return SL_EXIT_USAGE;
    if (ctx > cfg->n_positions) ctx = cfg->n_positions;
    r->stage = sl_runner_new(&r->p, T < 128 ? T : 128, r->kern, err);
    r->kv = r->stage ? sl_kv_new(&r->p, ctx, r->kv_dtype, err) : NULL;
    if (!r->stage || !r->kv) return SL_EXIT_FAILURE;
    r->sampler = sl_sampler_new(&r->opts.sampling, cfg->vocab_size);
    r->logits = malloc((size_t)(r->opts.logits_path ? T : 1) * cfg->vocab_size * sizeof(float));
    r->generated = malloc(((size_t)r->opts.max_new_tokens + 1) * sizeof(int32_t));
    if (!r->stage || !r->kv || !r->sampler || !r->logits || !r->generated)
        return sl_fail(err, "out of memory"), SL_EXIT_FAILURE;
    return SL_EXIT_OK;
}

static void stream_token(run *r, int32_t id)
{
    if (r->opts.quiet || !r->tok) return;
    size_t len = 0;
    const char *bytes = sl_gen_text_token(&r->text, id, &len);
    if (bytes) fwrite(bytes, 1, len, stdout);
    fflush(stdout);
}

/* The rest of the streamed text (an unfinished character is printed as it is) and its newline. */
static void end_text(run *r)
{
    if (r->opts.quiet || !r->tok) return;
    size_t len;
    const char *bytes = sl_gen_text_end(&r->text, &len);
    fwrite(bytes, 1, len, stdout);
    putchar('\n');
}

static int generate(run *r, sl_err *err)
{
    const sl_config *cfg = &r->p.cfg;
    const int T = r->opts.n_ids, V = cfg->vocab_size;
    sl_output which = r->opts.logits_path ? SL_OUT_LOGITS_ALL : SL_OUT_LOGITS_LAST;
    sl_gen_timings timings = {.prompt_tokens = T};
    double t0 = sl_now();
    if (sl_runner_forward(r->stage, r->kv, T, r->opts.ids, NULL, r->logits, which, err) != 0) return -1;
    timings.prefill_ms = (sl_now() - t0) * 1e3;
    if (r->opts.logits_path && sl_write_logits(r->opts.logits_path, r->logits, T, V, err) != 0) return -1;
    const float *last = r->logits + (r->opts.logits_path ? (size_t)(T - 1) * V : 0);
    t0 = sl_now(); /* decode: the rest, without writing --logits */
    for (int step = 0; step < r->opts.max_new_tokens && !interrupted; step++) {
        int32_t next = sl_sampler_next(r->sampler, last, (uint64_t)step);
        if (next == cfg->eos_token_id && !r->opts.ignore_eos) break;
        r->generated[r->n_generated++] = next;
        stream_token(r, next);
        if (step + 1 == r->opts.max_new_tokens) break;
        if (sl_kv_len(r->kv) == sl_kv_capacity(r->kv)) {
            fprintf(stderr, "\n%s: stopped at the model's context limit (%d positions)\n", prog, cfg->n_positions);
            break;
        }
        if (sl_runner_forward(r->stage, r->kv, 1, &next, NULL, r->logits, SL_OUT_LOGITS_LAST, err) != 0) return -1;
        last = r->logits;
        timings.decoded++;
    }
    timings.decode_ms = (sl_now() - t0) * 1e3;
    end_text(r);
    if (r->opts.print_ids) {
        for (int i = 0; i < r->n_generated; i++)
            printf("%s%d", i ? " " : "", r->generated[i]);
        putchar('\n');
    }
    char text[160];
    if (r->opts.timings) fputs(sl_gen_timings_text(&timings, text, sizeof text), stderr);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        SL_GEN_OPTIONS,         {"config", 1, 0, 'c'}, {"threads", 1, 0, 't'}, {"pin", 0, 0, 'p'},
        {"weights", 1, 0, 'w'}, {"kv", 1, 0, 'k'},     SL_TOOL_OPTIONS,        {0, 0, 0, 0}};
    run r = {0};
    sl_gen_opts_init(&r.opts);
    long threads = 0;
    bool pin = false;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c >= 1000)
            rc = sl_gen_opts_apply(&r.opts, c, optarg, &err);
        else if (c == 'c')
            r.config = optarg;
        else if (c == 't')
            rc = sl_parse_long(optarg, "--threads", 1, 1024, &threads, &err);
        else if (c == 'p')
            pin = true;
        else if (c == 'w')
            rc = sl_parse_wformat(optarg, "--weights", &r.weights, &err);
        else if (c == 'k')
            rc = sl_parse_kv_dtype(optarg, "--kv", &r.kv_dtype, &err);
        else
            return sl_tool_other_option(c, prog, usage);
    }
    const char *target = NULL;
    if (rc == 0) rc = sl_gen_opts_finish(&r.opts, argc, argv, optind, "MODEL_DIR", &target, &err);
    if (rc == 0 && r.opts.logits_path) rc = sl_check_output(r.opts.logits_path, false, &err);
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    if (r.opts.seed_drawn)
        fprintf(stderr, "%s: sampling with --seed %llu\n", prog, (unsigned long long)r.opts.sampling.seed);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sl_hf_model *ck = NULL;
    const int n_threads = threads ? (int)threads : sl_cpu_count(); /* counted before pinning */
    int status =
        sl_threads_setup((int)threads, pin, &err) != 0 || !(r.kern = sl_kern_new(n_threads, pin, SL_KERN_AUTO, &err))
            ? SL_EXIT_FAILURE
            : load(&r, target, &ck, &err);
    if (status == SL_EXIT_OK && generate(&r, &err) != 0) status = SL_EXIT_FAILURE;
    if (status != SL_EXIT_OK) fprintf(stderr, "%s: %s\n", prog, err.msg);
    if (status == SL_EXIT_OK && interrupted) status = SL_EXIT_INTERRUPTED;
    free(r.logits);
    free(r.generated);
    sl_sampler_destroy(&r.sampler);
    sl_kv_destroy(&r.kv);
    sl_runner_destroy(&r.stage);
    sl_kern_destroy(&r.kern);
    sl_tokenizer_destroy(&r.tok);
    sl_params_free(&r.p);
    sl_hf_model_destroy(&ck);
    return status;
}
