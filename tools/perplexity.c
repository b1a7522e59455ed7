/* perplexity.c — zmq-splitlearn-perplexity: the perplexity of a model on a text, at any weight
 * format and KV cache type, over fixed-length windows that slide by a stride (as Hugging Face's
 * guide to the perplexity of fixed-length models computes it; llama.cpp's llama-perplexity is the
 * same idea with half-window strides). */
#include "cli.h"
#include "cpu.h"
#include "fileio.h"
#include "gen_opts.h"
#include "gpt2.h"
#include "hf_model.h"
#include "ops.h"
#include "split.h"
#include "tokenizer.h"
#include "tool.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-perplexity";

static const char usage[] =
    "usage: zmq-splitlearn-perplexity MODEL (--text FILE | --tokens FILE) [options]\n"
    "\n"
    "The perplexity of MODEL on a text: exp of the mean cross-entropy (natural log) of its tokens,\n"
    "each given the ones before it in its window. Windows of --ctx tokens start every --stride\n"
    "tokens, the last ending at the end of the text; each scores the tokens no earlier window scored,\n"
    "but its first (which has no context in it), so every scored token after the first window has\n"
    "at least ctx - stride tokens of context. With --stride below --ctx every token but the text's\n"
    "first is scored; with windows side by side the first token of each is not.\n"
    "MODEL: what zmq-splitlearn-run takes (an HF GPT-2 directory, an HF hub cache entry or repo id,\n"
    "one checkpoint file with --config), or a split directory (split.json: its parts, checked against\n"
    "their SHA-256, joined in memory as one F32 model, as zmq-splitlearn-merge joins them).\n"
    "\n"
    "  --text FILE            a UTF-8 text, tokenized with the model's vocab (see --vocab)\n"
    "  --tokens FILE          token ids instead, separated by blanks, commas or newlines\n"
    "  --ctx N                window length (default: the model's n_positions)\n"
    "  --stride N             how far each window starts after the previous one (default: --ctx,\n"
    "                         windows side by side; smaller gives tokens more context and costs more)\n"
    "  --weights FMT          compute on the matrices in f32 (default), f16, bf16 or q8_0, converted\n"
    "                         at load (docs/WEIGHTS.md)\n"
    "  --kv f32|f16           what the KV cache holds (default f32)\n"
    "  --vocab DIR            vocab.json + merges.txt or tokenizer.json (default: the model's, else the\n"
    "                         bundled GPT-2 vocab, which the program then names on stderr)\n"
    "  --config FILE          the config.json of a MODEL that is one checkpoint file\n"
    "  --threads N            compute threads (default: one per CPU)\n"
    "  --pin                  pin the compute threads one per CPU\n"
    "  --help, --version\n"
    "\n"
    "Prints one line on stdout: perplexity P (cross-entropy X nats over N tokens; ctx, stride,\n"
    "weights, kv).\n"
    "\n"
    "exit status: 0 done; 1 failure (model, I/O); 2 usage error (options, a missing MODEL or FILE,\n"
    "a text of fewer than 2 tokens, a token outside the vocab, --ctx beyond n_positions, --stride\n"
    "beyond --ctx); 130 SIGINT\n";

/* Tokens computed at once: logits for that many positions at a time. */
enum { CHUNK = 64 };

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct options {
    const char *text, *tokens, *vocab, *config;
    long ctx, stride, threads;
    bool pin;
    sl_wformat weights;
    sl_dtype kv;
} options;

/* The model, its runner and what a window needs. */
typedef struct eval {
    sl_params p;
    sl_kern *kern;
    sl_runner *stage;
    sl_kv *kv;
    float *out; /* CHUNK x vocab logits, or CHUNK x n_embd hidden states for context alone */
    double nll; /* sum of the scored tokens' cross-entropies */
    long scored;
} eval;

/* MODEL into e->p as F32: a split directory's parts joined, else what run opens. The HF model
 * stays open in *ck (its tensors mapped) until the conversion. */
static int load_model(eval *e, const char *model, const options *o, sl_hf_model **ck, sl_err *err)
{
    char index[PATH_MAX];
    if (sl_path_join(index, sizeof index, model, "split.json") == 0 && access(index, F_OK) == 0)
        return sl_split_join(model, &e->p, err) == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
    if (!(*ck = sl_hf_model_open_with_config(model, o->config, err)))
        return access(model, F_OK) != 0 ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
    const sl_config *cfg = sl_hf_model_config(*ck);
    return sl_params_load(&e->p, *ck, 0, cfg->n_layer, true, true, false, err) == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
}

/* --weights: e->p converted, then the file it borrowed from closed (its mapping released). */
static int convert_weights(eval *e, sl_wformat format, sl_hf_model **ck, sl_err *err)
{
    if (format == e->p.format) return 0;
    if (sl_params_reformat(&e->p, format, err) != 0) return -1;
    sl_hf_model_destroy(ck);
    return 0;
}

/* Token ids separated by blanks, commas or newlines, each checked against the vocab. */
static int parse_tokens(const char *path, const char *text, int vocab, int32_t **ids, size_t *n, sl_err *err)
{
    size_t cap = 0;
    for (const char *s = text;;) {
        s += strspn(s, " \t\r\n,");
        if (!*s) return 0;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v >= vocab)
            return sl_fail(err, "%s: token %zu ('%.12s') is not an id of the vocab (0..%d)", path, *n + 1, s,
                           vocab - 1);
        if (*n == cap) {
            int32_t *grown = realloc(*ids, (cap = cap ? 2 * cap : 1024) * sizeof *grown);
            if (!grown) return sl_fail(err, "%s: out of memory for %zu tokens", path, cap);
            *ids = grown;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
}

/* The text of --text (tokenized) or --tokens: an exit status, err filled when not 0. */
static int read_tokens(const options *o, const sl_config *cfg, const char *model_dir, int32_t **ids, size_t *n,
                       sl_err *err)
{
    const char *path = o->text ? o->text : o->tokens;
    char *text = sl_read_text_file(path, (size_t)1 << 30, err);
    if (!text) return access(path, R_OK) != 0 ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
    int status = SL_EXIT_OK;
    if (o->tokens) {
        status = parse_tokens(path, text, cfg->vocab_size, ids, n, err) == 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
    } else {
        bool bundled;
        char vocab[PATH_MAX];
        sl_tokenizer *tok = sl_gen_tokenizer(o->vocab, model_dir, cfg->vocab_size, &bundled, vocab, sizeof vocab, err);
        size_t cap = 0;
        if (!tok)
            status = SL_EXIT_USAGE;
        else if (sl_tokenizer_encode(tok, text, strlen(text), ids, n, &cap, err) != 0)
            status = SL_EXIT_FAILURE;
        if (tok && bundled)
            fprintf(stderr, "%s: %s has no vocab: using the bundled GPT-2 vocab (%s)\n", prog, model_dir, vocab);
        sl_tokenizer_destroy(&tok);
    }
    free(text);
    if (status == SL_EXIT_OK && *n < 2)
        status = (sl_fail(err, "%s holds %zu token%s: perplexity needs at least 2", path, *n, *n == 1 ? "" : "s"),
                  SL_EXIT_USAGE);
    return status;
}

/* Runs the window ids[0, len) from an empty cache; the positions from `score_from` on (>= 1)
 * predict the next token of the window and are scored. Context alone gives hidden states only. */
static int run_window(eval *e, const int32_t *ids, int len, int score_from, sl_err *err)
{
    const int V = e->p.cfg.vocab_size;
    sl_kv_reset(e->kv);
    for (int t0 = 0; t0 < len - 1 && !interrupted; t0 += CHUNK) {
        int n = len - 1 - t0 < CHUNK ? len - 1 - t0 : CHUNK; /* the last token predicts nothing here */
        bool scores = t0 + n > score_from - 1;
        if (sl_runner_forward(e->stage, e->kv, n, ids + t0, NULL, e->out, scores ? SL_OUT_LOGITS_ALL : SL_OUT_HIDDEN,
                              err) != 0)
            return -1;
        if (!scores) continue;
        int32_t targets[CHUNK];
        for (int t = t0; t < t0 + n; t++) {
            targets[t - t0] = t + 1 >= score_from ? ids[t + 1] : -1;
            e->scored += t + 1 >= score_from;
        }
        /* the logits' softmax overwrites them: they are not needed again */
        e->nll += sl_crossentropy_forward_backward(e->out, e->out, targets, n, V, 1.0f);
    }
    return 0;
}

/* Every window: [begin, begin + ctx) for begin = 0, stride, 2 stride ... until one reaches the end. */
static int run_windows(eval *e, const int32_t *ids, size_t n, int ctx, int stride, sl_err *err)
{
    size_t scored_to = 1; /* tokens [1, scored_to) are scored */
    for (size_t begin = 0; scored_to < n && !interrupted; begin += (size_t)stride) {
        size_t end = begin + (size_t)ctx < n ? begin + (size_t)ctx : n;
        if (run_window(e, ids + begin, (int)(end - begin), (int)(scored_to - begin), err) != 0) return -1;
        scored_to = end;
    }
    return 0;
}

static int prepare(eval *e, const options *o, int ctx, sl_err *err)
{
    const sl_config *cfg = &e->p.cfg;
    size_t widest = cfg->vocab_size > cfg->n_embd ? (size_t)cfg->vocab_size : (size_t)cfg->n_embd;
    if (!(e->stage = sl_runner_new(&e->p, CHUNK, e->kern, err)) || !(e->kv = sl_kv_new(&e->p, ctx, o->kv, err)))
        return -1;
    if (!(e->out = malloc((size_t)CHUNK * widest * sizeof(float)))) return sl_fail(err, "out of memory");
    return 0;
}

/* Loads, reads the text, runs the windows and prints the line: an exit status. */
static int measure(eval *e, const char *model, const options *o, sl_err *err)
{
    sl_hf_model *ck = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int status = load_model(e, model, o, &ck, err);
    const sl_config *cfg = &e->p.cfg;
    const char *model_dir = ck ? sl_hf_model_dir(ck) : model;
    if (status == SL_EXIT_OK) status = read_tokens(o, cfg, model_dir, &ids, &n, err);
    int ctx = o->ctx ? (int)o->ctx : cfg->n_positions, stride = o->stride ? (int)o->stride : ctx;
    if (status == SL_EXIT_OK && (ctx < 2 || ctx > cfg->n_positions))
        status = (sl_fail(err, "--ctx %d: this model takes 2..%d (n_positions)", ctx, cfg->n_positions), SL_EXIT_USAGE);
    if (status == SL_EXIT_OK && stride > ctx)
        status = (sl_fail(err, "--stride %d is longer than the window (--ctx %d)", stride, ctx), SL_EXIT_USAGE);
    if (status == SL_EXIT_OK && (convert_weights(e, o->weights, &ck, err) != 0 || prepare(e, o, ctx, err) != 0 ||
                                 run_windows(e, ids, n, ctx, stride, err) != 0))
        status = SL_EXIT_FAILURE;
    if (status == SL_EXIT_OK && !interrupted)
        printf("perplexity %.4f (cross-entropy %.6f nats over %ld tokens; ctx %d, stride %d, weights %s, kv %s)\n",
               exp(e->nll / (double)e->scored), e->nll / (double)e->scored, e->scored, ctx, stride,
               sl_wformat_name(e->p.format), sl_dtype_lower(o->kv));
    free(ids);
    sl_hf_model_destroy(&ck);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option options_table[] = {{"text", 1, 0, 'x'},   {"tokens", 1, 0, 'T'},  {"ctx", 1, 0, 'c'},
                                                  {"stride", 1, 0, 's'}, {"weights", 1, 0, 'w'}, {"kv", 1, 0, 'k'},
                                                  {"vocab", 1, 0, 'v'},  {"config", 1, 0, 'C'},  {"threads", 1, 0, 't'},
                                                  {"pin", 0, 0, 'p'},    SL_TOOL_OPTIONS,        {0, 0, 0, 0}};
    options o = {.weights = SL_WF_F32, .kv = SL_F32};
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options_table, NULL)) != -1 && rc == 0) {
        if (c == 'x')
            o.text = optarg;
        else if (c == 'T')
            o.tokens = optarg;
        else if (c == 'c')
            rc = sl_parse_long(optarg, "--ctx", 2, INT_MAX, &o.ctx, &err);
        else if (c == 's')
            rc = sl_parse_long(optarg, "--stride", 1, INT_MAX, &o.stride, &err);
        else if (c == 'w')
            rc = sl_parse_wformat(optarg, "--weights", &o.weights, &err);
        else if (c == 'k')
            rc = sl_parse_kv_dtype(optarg, "--kv", &o.kv, &err);
        else if (c == 'v')
            o.vocab = optarg;
        else if (c == 'C')
            o.config = optarg;
        else if (c == 't')
            rc = sl_parse_long(optarg, "--threads", 1, 1024, &o.threads, &err);
        else if (c == 'p')
            o.pin = true;
        else
            return sl_tool_other_option(c, prog, usage);
    }
    if (rc == 0 && optind != argc - 1) rc = sl_fail(&err, "give exactly one MODEL");
    if (rc == 0 && !o.text == !o.tokens) rc = sl_fail(&err, "give one of --text FILE and --tokens FILE");
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    eval e = {0};
    const int n_threads = o.threads ? (int)o.threads : sl_cpu_count(); /* counted before pinning */
    int status = sl_threads_setup((int)o.threads, o.pin, &err) != 0 ||
                         !(e.kern = sl_kern_new(n_threads, o.pin, SL_KERN_AUTO, &err))
                     ? SL_EXIT_FAILURE
                     : measure(&e, argv[optind], &o, &err);
    if (status != SL_EXIT_OK) fprintf(stderr, "%s: %s\n", prog, err.msg);
    if (status == SL_EXIT_OK && interrupted) status = SL_EXIT_INTERRUPTED;
    free(e.out);
    sl_kv_destroy(&e.kv);
    sl_runner_destroy(&e.stage);
    sl_kern_destroy(&e.kern);
    sl_params_free(&e.p);
    return status;
}
