/* run.c — zmq-splitlearn-run: generates with the whole model in one process. The monolithic
 * reference that every pipeline's answer is compared against. */
#include "checkpoint.h"
#include "cli.h"
#include "cpu.h"
#include "generate.h"
#include "gpt2.h"
#include "tokenizer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-run MODEL_DIR [\"prompt text\" | --ids 1,2,3] [options]\n"
    "\n"
    "Generates from the prompt with the whole model in this process, streaming the text.\n"
    "MODEL_DIR: an HF GPT-2 directory (safetensors or pytorch_model.bin), an HF hub cache\n"
    "entry, a repo id in the hub cache, or one checkpoint file (.safetensors, .pt, .bin) with\n"
    "config.json beside it or given with --config.\n"
    "\n" SL_GEN_USAGE "  --config FILE          the config.json of a MODEL_DIR that is one checkpoint file\n"
    "  --threads N            compute threads (default: one per CPU)\n"
    "  --pin                  pin the compute threads one per CPU\n"
    "\n"
    "exit status: 0 done, 1 failure (model, vocab, I/O), 2 usage error\n";

typedef struct run {
    sl_gen_opts opts;
    const char *config; /* --config FILE, or NULL */
    sl_params p;
    sl_stage *stage;
    sl_kv *kv;
    sl_sampler *sampler;
    sl_tokenizer *tok;
    sl_gen_text text; /* what is streamed, whole characters */
    float *logits;
    int32_t *generated;
    int n_generated;
} run;

static int load(run *r, const char *model_dir, sl_checkpoint **ck, sl_err *err)
{
    if (!(*ck = sl_checkpoint_open_with_config(model_dir, r->config, err))) return -1;
    const sl_config *cfg = sl_checkpoint_config(*ck);
    if (sl_params_load(&r->p, *ck, 0, cfg->n_layer, true, true, false, err) != 0) return -1;
    bool need_text = r->opts.prompt || !r->opts.quiet;
    if (need_text) {
        char fallback[PATH_MAX];
        sl_default_vocab_dir(fallback, sizeof fallback);
        const char *dir = r->opts.vocab_dir ? r->opts.vocab_dir : fallback;
        r->tok =
            r->opts.vocab_dir ? sl_tokenizer_new(dir, err) : sl_tokenizer_for_model(sl_checkpoint_dir(*ck), dir, err);
        if (!r->tok && r->opts.prompt) return -1;
        if (!r->tok) fprintf(stderr, "zmq-splitlearn-run: no vocab (%s): text is not shown\n", err->msg);
        r->text.tok = r->tok;
    }
    if (r->opts.prompt) {
        size_t n = 0, cap = 0;
        int32_t *ids = NULL;
        if (sl_tokenizer_encode(r->tok, r->opts.prompt, strlen(r->opts.prompt), &ids, &n, &cap, err) != 0) return -1;
        if (n > SL_MAX_PROMPT) n = 0;
        memcpy(r->opts.ids, ids, n * sizeof *ids);
        r->opts.n_ids = (int)n;
        free(ids);
    }
    if (r->opts.n_ids < 1) return sl_fail(err, "the prompt is empty (or longer than %d tokens)", SL_MAX_PROMPT);
    int T = r->opts.n_ids, ctx = T + r->opts.max_new_tokens;
    if (T > cfg->n_positions) return sl_fail(err, "the prompt has %d tokens; the model takes %d", T, cfg->n_positions);
    if (ctx > cfg->n_positions) ctx = cfg->n_positions;
    r->stage = sl_stage_new(&r->p, T < 128 ? T : 128, err);
    r->kv = sl_kv_new(&r->p, ctx, err);
    r->sampler = sl_sampler_new(&r->opts.sampling, cfg->vocab_size);
    r->logits = malloc((size_t)(r->opts.logits_path ? T : 1) * cfg->vocab_size * sizeof(float));
    r->generated = malloc(((size_t)r->opts.max_new_tokens + 1) * sizeof(int32_t));
    if (!r->stage || !r->kv || !r->sampler || !r->logits || !r->generated) return sl_fail(err, "out of memory");
    return 0;
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
    if (sl_stage_forward(r->stage, r->kv, T, r->opts.ids, NULL, r->logits, which, err) != 0) return -1;
    if (r->opts.logits_path && sl_write_logits(r->opts.logits_path, r->logits, T, V, err) != 0) return -1;
    const float *last = r->logits + (r->opts.logits_path ? (size_t)(T - 1) * V : 0);
    for (int step = 0; step < r->opts.max_new_tokens; step++) {
        int32_t next = sl_sampler_next(r->sampler, last, (uint64_t)step);
        if (next == cfg->eos_token_id && !r->opts.ignore_eos) break;
        r->generated[r->n_generated++] = next;
        stream_token(r, next);
        if (step + 1 == r->opts.max_new_tokens) break;
        if (sl_kv_len(r->kv) == sl_kv_capacity(r->kv)) {
            fprintf(stderr, "\nzmq-splitlearn-run: stopped at the model's %d positions\n", cfg->n_positions);
            break;
        }
        if (sl_stage_forward(r->stage, r->kv, 1, &next, NULL, r->logits, SL_OUT_LOGITS_LAST, err) != 0) return -1;
        last = r->logits;
    }
    end_text(r);
    if (r->opts.print_ids) {
        for (int i = 0; i < r->n_generated; i++)
            printf("%s%d", i ? " " : "", r->generated[i]);
        putchar('\n');
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {SL_GEN_OPTIONS,     {"config", 1, 0, 'c'}, {"threads", 1, 0, 't'},
                                            {"pin", 0, 0, 'p'}, {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
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
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    const char *target = NULL;
    if (rc == 0) rc = sl_gen_opts_finish(&r.opts, argc, argv, optind, "MODEL_DIR", &target, &err);
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-run: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    sl_checkpoint *ck = NULL;
    rc = sl_threads_setup((int)threads, pin, &err);
    if (rc == 0) rc = load(&r, target, &ck, &err);
    if (rc == 0) rc = generate(&r, &err);
    if (rc != 0) fprintf(stderr, "zmq-splitlearn-run: %s\n", err.msg);
    free(r.logits);
    free(r.generated);
    sl_sampler_destroy(&r.sampler);
    sl_kv_destroy(&r.kv);
    sl_stage_destroy(&r.stage);
    sl_tokenizer_destroy(&r.tok);
    sl_params_free(&r.p);
    sl_checkpoint_destroy(&ck);
    return rc == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
}
