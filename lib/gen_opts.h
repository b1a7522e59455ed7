/* gen_opts.h — what zmq-splitlearn-run and zmq-splitlearn-send share: the generation options,
 * their parsing, and the output contract (streamed text, --print-ids, --logits FILE). */
#ifndef SL_GEN_OPTS_H
#define SL_GEN_OPTS_H

#include "err.h"
#include "sampler.h"
#include "tokenizer.h"
#include "utf8.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define SL_MAX_PROMPT 4096

typedef struct sl_gen_opts {
    const char *prompt; /* text, or NULL when ids are given */
    int32_t ids[SL_MAX_PROMPT];
    int n_ids;
    int max_new_tokens;
    sl_sampling sampling;
    bool seed_given; /* --seed S; else sampling draws a fresh seed (sl_gen_opts_finish) */
    bool seed_drawn; /* the seed was drawn: the tool prints it, so the run can be repeated */
    bool print_ids, ignore_eos, quiet;
    bool timings;            /* --timings: the prefill and decode times on stderr at the end */
    const char *logits_path; /* --logits FILE */
    const char *vocab_dir;   /* --vocab DIR */
} sl_gen_opts;

/* The long options of generation, to put in a tool's getopt_long table. */
#define SL_GEN_OPTIONS                                                                                                 \
    {"ids", 1, 0, 1000}, {"max-new-tokens", 1, 0, 1001}, {"greedy", 0, 0, 1002}, {"temperature", 1, 0, 1003},          \
        {"top-k", 1, 0, 1004}, {"top-p", 1, 0, 1005}, {"seed", 1, 0, 1006}, {"print-ids", 0, 0, 1007},                 \
        {"logits", 1, 0, 1008}, {"ignore-eos", 0, 0, 1009}, {"vocab", 1, 0, 1010}, {"timings", 0, 0, 1012},            \
    {                                                                                                                  \
        "quiet", 0, 0, 1011                                                                                            \
    }

#define SL_GEN_USAGE                                                                                                   \
    "  --ids 1,2,3            the prompt as token ids instead of text\n"                                               \
    "  --max-new-tokens N     tokens to generate (default 32; 0: only the prompt's logits)\n"                          \
    "  --greedy               argmax decoding (the default; so is --temperature 0)\n"                                  \
    "  --temperature T --top-k K --top-p P --seed S   sampling, reproducible with --seed (without\n"                   \
    "                         one a fresh seed is drawn and printed on stderr)\n"                                      \
    "  --ignore-eos           do not stop at the end-of-text token\n"                                                  \
    "  --print-ids            print the generated ids (not the prompt) on one last line\n"                             \
    "  --logits FILE          write F32 'logits' [T, vocab] at every prompt position\n"                                \
    "  --vocab DIR            vocab.json + merges.txt or tokenizer.json (default: the model's, else the\n"             \
    "                         bundled GPT-2 vocab, which the program then names on stderr)\n"                          \
    "  --quiet                do not stream the generated text\n"                                                      \
    "  --timings              at the end, on stderr: \"prefill: N tokens in X ms\" (the prompt, up to its\n"           \
    "                         first token) and \"decode: N tokens in Y ms (Z ms/token)\" (the rest)\n"

/* Defaults: 32 greedy tokens. */
void sl_gen_opts_init(sl_gen_opts *o);

/* Applies one of SL_GEN_OPTIONS (code >= 1000); returns 0, or -1 with err for a bad value. */
int sl_gen_opts_apply(sl_gen_opts *o, int code, const char *arg, sl_err *err);

/* After the options: takes the positional arguments (the target, e.g. MODEL_DIR, named `what`
 * in errors, and an optional prompt text), checks that exactly one of a prompt and --ids was
 * given and that the sampling options are in range. Sampling without --seed gets a fresh seed
 * (o->seed_drawn). */
int sl_gen_opts_finish(sl_gen_opts *o, int argc, char **argv, int first, const char *what, const char **target,
                       sl_err *err);

/* A prompt of n tokens for a model of n_positions: fails when it is empty or too long, naming both. */
int sl_gen_check_prompt(size_t n, int n_positions, sl_err *err);

/* Why a generation of n_out tokens after a prompt of n_prompt stopped: "max_new_tokens",
 * "context_limit" (the model's n_positions) or "eos". */
const char *sl_gen_stop_reason(int n_prompt, int n_out, int max_new_tokens, int n_positions);

/* The vocab a program uses: vocab_dir (--vocab) when given, else the model's own (model_dir may
 * be NULL), else the bundled GPT-2 vocab (sl_default_vocab_dir), and *bundled says so. A vocab
 * whose size is not vocab_size (when > 0), the model's, is refused, naming both. Caller owns the
 * result. */
sl_tokenizer *sl_gen_tokenizer(const char *vocab_dir, const char *model_dir, int vocab_size, bool *bundled,
                               char *used_dir, size_t used_size, sl_err *err);

/* Writes the logits [T, vocab] to a safetensors file with one F32 tensor "logits". */
int sl_write_logits(const char *path, const float *logits, int T, int vocab, sl_err *err);

/* --timings of one generation: the prompt's time up to its first token (run: the prompt's
 * forward; send: from sending the prompt to the first token's answer) and the rest. The first
 * token comes from the prompt's pass; each later one costs one decode step, so decoded counts
 * those steps (llama.cpp's "runs") and ms/token is decode_ms / decoded. */
typedef struct sl_gen_timings {
    int prompt_tokens;
    double prefill_ms;
    int decoded;
    double decode_ms;
} sl_gen_timings;

/* The lines "prefill: N tokens in X ms" and "decode: N tokens in Y ms (Z ms/token)" (without the
 * ms/token when no token was decoded), each ending in a newline, into out; returns out. */
const char *sl_gen_timings_text(const sl_gen_timings *t, char *out, size_t size);

/* The text of generated tokens as they arrive, cut on character boundaries (a character split
 * between two tokens comes out whole with the second). Zero-initialise, then set tok (borrowed). */
typedef struct sl_gen_text {
    const sl_tokenizer *tok;
    sl_utf8_stream utf8;
    char out[SL_TOKENIZER_MAX_TOKEN_BYTES + 3];
} sl_gen_text;

/* The bytes to print for token id (held bytes first; an unfinished character at the end is held
 * back), *len of them, owned by self until the next call; NULL for an id outside the vocabulary. */
const char *sl_gen_text_token(sl_gen_text *self, int32_t id, size_t *len);

/* At the end of the generation: the bytes still held (an unfinished character), *len of them. */
const char *sl_gen_text_end(sl_gen_text *self, size_t *len);

/* The bundled vocab directory: models/gpt2-vocab in the working directory, else beside the
 * program's bin/ (a build tree), else PREFIX/share/zmq-splitlearn/gpt2-vocab for a program
 * installed in PREFIX/bin (make install). */
void sl_default_vocab_dir(char *out, size_t size);

#endif
