/* gen_opts.c — generation options and the logits file shared by run and send. */
#include "gen_opts.h"

#include "cli.h"
#include "safetensors.h"

#include <limits.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

void sl_gen_opts_init(sl_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_new_tokens = 32;
    o->sampling = SL_SAMPLING_GREEDY;
}

int sl_gen_opts_apply(sl_gen_opts *o, int code, const char *arg, sl_err *err)
{
    long v;
    double d;
    switch (code) {
    case 1000:
        o->n_ids = sl_parse_int_list(arg, "--ids", o->ids, SL_MAX_PROMPT, err);
        return o->n_ids < 0 ? -1 : 0;
    case 1001:
        if (sl_parse_long(arg, "--max-new-tokens", 0, 1 << 20, &v, err) != 0) return -1;
        o->max_new_tokens = (int)v;
        return 0;
    case 1002:
        o->sampling.greedy = true;
        return 0;
    case 1003: /* 0 means greedy, whatever --top-k and --top-p say */
        if (sl_parse_double(arg, "--temperature", 0, 1e6, &d, err) != 0) return -1;
        if (d > 0 && d < 1e-6) return sl_fail(err, "--temperature: '%s' is too small (0 means greedy)", arg);
        o->sampling.temperature = (float)d;
        o->sampling.greedy = d == 0;
        return 0;
    case 1004:
        if (sl_parse_long(arg, "--top-k", 0, INT_MAX, &v, err) != 0) return -1;
        o->sampling.top_k = (int)v;
        o->sampling.greedy = o->sampling.temperature == 0;
        return 0;
    case 1005:
        if (sl_parse_double(arg, "--top-p", 1e-9, 1, &d, err) != 0) return -1;
        o->sampling.top_p = (float)d;
        o->sampling.greedy = o->sampling.temperature == 0;
        return 0;
    case 1006:
        if (sl_parse_long(arg, "--seed", 0, __LONG_MAX__, &v, err) != 0) return -1;
        o->sampling.seed = (uint64_t)v;
        o->seed_given = true;
        return 0;
    case 1007:
        o->print_ids = true;
        return 0;
    case 1008:
        o->logits_path = arg;
        return 0;
    case 1009:
        o->ignore_eos = true;
        return 0;
    case 1010:
        o->vocab_dir = arg;
        return 0;
    case 1011:
        o->quiet = true;
        return 0;
    case 1012:
        o->timings = true;
        return 0;
    default:
        return sl_fail(err, "unknown option");
    }
}

int sl_gen_opts_finish(sl_gen_opts *o, int argc, char **argv, int first, const char *what, const char **target,
                       sl_err *err)
{
    if (first >= argc || argc - first > 2) return sl_fail(err, "give %s and at most one prompt", what);
    *target = argv[first];
    if (argc - first == 2) o->prompt = argv[first + 1];
    if (!o->prompt == !o->n_ids) return sl_fail(err, "give a prompt text or --ids (one of them)");
    if (sl_sampling_check(&o->sampling, err) != 0) return -1;
    if (o->sampling.greedy || o->seed_given) return 0;
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        return sl_fail(err, "cannot draw a seed: give --seed");
    o->sampling.seed = seed & (uint64_t)__LONG_MAX__; /* what --seed takes back */
    o->seed_drawn = true;
    return 0;
}

int sl_gen_check_prompt(size_t n, int n_positions, sl_err *err)
{
    if (n == 0) return sl_fail(err, "the prompt is empty");
    if (n > (size_t)n_positions)
        return sl_fail(err, "the prompt has %zu tokens; this model takes at most %d", n, n_positions);
    return 0;
}

const char *sl_gen_stop_reason(int n_prompt, int n_out, int max_new_tokens, int n_positions)
{
    if (n_out >= max_new_tokens) return "max_new_tokens";
    return n_prompt + n_out > n_positions ? "context_limit" : "eos";
}

sl_tokenizer *sl_gen_tokenizer(const char *vocab_dir, const char *model_dir, int vocab_size, bool *bundled,
                               char *used_dir, size_t used_size, sl_err *err)
{
    char fallback[PATH_MAX];
    sl_default_vocab_dir(fallback, sizeof fallback);
    const char *dir = vocab_dir ? vocab_dir : sl_tokenizer_dir_has_vocab(model_dir) ? model_dir : fallback;
    *bundled = dir == fallback;
    snprintf(used_dir, used_size, "%s", dir);
    sl_tokenizer *tok = sl_tokenizer_new(dir, err);
    if (tok && vocab_size > 0 && sl_tokenizer_vocab_size(tok) != vocab_size) {
        sl_fail(err,
                "the model has a vocabulary of %d tokens but the vocab in use (%s%s) has %d: give the model's own with "
                "--vocab DIR",
                vocab_size, *bundled ? "the bundled GPT-2 vocab, " : "", dir, sl_tokenizer_vocab_size(tok));
        sl_tokenizer_destroy(&tok);
    }
    return tok;
}

int sl_write_logits(const char *path, const float *logits, int T, int vocab, sl_err *err)
{
    sl_st_writer *w = sl_st_writer_new();
    if (!w) return sl_fail(err, "out of memory");
    int64_t shape[2] = {T, vocab};
    int rc = sl_st_writer_add_f32(w, "logits", SL_F32, logits, 2, shape, err);
    if (rc == 0) rc = sl_st_writer_write(w, path, NULL, err);
    sl_st_writer_destroy(&w);
    return rc;
}

const char *sl_gen_timings_text(const sl_gen_timings *t, char *out, size_t size)
{
    int n = snprintf(out, size, "prefill: %d tokens in %.2f ms\ndecode: %d tokens in %.2f ms", t->prompt_tokens,
                     t->prefill_ms, t->decoded, t->decode_ms);
    if (n < 0 || (size_t)n >= size) return out;
    if (t->decoded > 0)
        snprintf(out + n, size - (size_t)n, " (%.2f ms/token)\n", t->decode_ms / t->decoded);
    else
        snprintf(out + n, size - (size_t)n, "\n");
    return out;
}

const char *sl_gen_text_token(sl_gen_text *self, int32_t id, size_t *len)
{
    size_t n;
    const char *bytes = sl_tokenizer_token(self->tok, id, &n);
    if (!bytes) return NULL;
    *len = sl_utf8_stream_feed(&self->utf8, bytes, n, self->out);
    return self->out;
}

const char *sl_gen_text_end(sl_gen_text *self, size_t *len)
{
    *len = sl_utf8_stream_flush(&self->utf8, self->out);
    return self->out;
}

void sl_default_vocab_dir(char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (access("models/gpt2-vocab/vocab.json", R_OK) == 0 || n <= 0) {
        snprintf(out, size, "models/gpt2-vocab");
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(out, size, "%s/../models/gpt2-vocab", exe);
    if (sl_tokenizer_dir_has_vocab(out)) return;
    snprintf(out, size, "%s/../share/zmq-splitlearn/gpt2-vocab", exe); /* installed: PREFIX/bin/.. */
}
