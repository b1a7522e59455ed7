/* data.c — tokenized, sequence-cut, reproducibly shuffled training data. */
#include "data.h"

#include "fileio.h"
#include "rng.h"
#include "utf8.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct sl_data {
    int32_t *tokens;
    size_t n_tokens;
    int seq_len, sequences;
    int *order;       /* the shuffled order of (order_seed, order_epoch) */
    long order_epoch; /* -1: none yet */
    uint64_t order_seed;
};

static int push_token(sl_data *d, size_t *cap, int32_t id, sl_err *err)
{
    if (d->n_tokens == *cap) {
        size_t more = *cap ? 2 * *cap : 1024;
        int32_t *grown = realloc(d->tokens, more * sizeof *grown);
        if (!grown) return sl_fail(err, "out of memory");
        d->tokens = grown;
        *cap = more;
    }
    d->tokens[d->n_tokens++] = id;
    return 0;
}

sl_data *sl_data_new(sl_tokenizer *tok, const char *const *files, int n_files, int seq_len, int eos, sl_err *err)
{
    sl_data *d = calloc(1, sizeof *d);
    if (!d) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    d->seq_len = seq_len;
    d->order_epoch = -1;
    size_t cap = 0;
    int rc = 0;
    for (int f = 0; f < n_files && rc == 0; f++) {
        char *text = sl_read_text_file(files[f], (size_t)1 << 31, err);
        if (!text) {
            rc = -1;
            break;
        }
        size_t len = strlen(text), bad;
        if (len == 0) {
            rc = sl_fail(err,
                         "%s is empty: training needs text (in all, at least %d + 1 tokens: one sequence of the "
                         "sequence length %d and its next token)",
                         files[f], seq_len, seq_len);
            free(text);
            break;
        }
        if (sl_utf8_check(text, len, &bad, err) != 0) {
            size_t line = 1;
            for (size_t i = 0; i < bad; i++)
                line += text[i] == '\n';
            sl_err_prefix(err, "%s:%zu (byte %zu)", files[f], line, bad);
            free(text);
            rc = -1;
            break;
        }
        if (f > 0) rc = push_token(d, &cap, eos, err); /* documents are separated as GPT-2 saw them */
        if (rc == 0) rc = sl_tokenizer_encode(tok, text, len, &d->tokens, &d->n_tokens, &cap, err);
        if (rc != 0) sl_err_prefix(err, "%s", files[f]);
        free(text);
    }
    if (rc == 0 && d->n_tokens < (size_t)seq_len + 1)
        rc = n_files > 1 ? sl_fail(err,
                                   "the %d data files (%s, ...) have %zu tokens in all, fewer than one sequence "
                                   "needs (%d + 1 at a sequence length of %d): give more text or a shorter --seq-len",
                                   n_files, files[0], d->n_tokens, seq_len, seq_len)
                         : sl_fail(err,
                                   "%s has %zu tokens, fewer than one sequence needs (%d + 1 at a sequence length "
                                   "of %d): give more text or a shorter --seq-len",
                                   files[0], d->n_tokens, seq_len, seq_len);
    if (rc == 0) {
        d->sequences = (int)((d->n_tokens - 1) / (size_t)seq_len);
        if (!(d->order = malloc((size_t)d->sequences * sizeof *d->order))) rc = sl_fail(err, "out of memory");
    }
    if (rc != 0) sl_data_destroy(&d);
    return d;
}

void sl_data_destroy(sl_data **self)
{
    assert(self);
    if (!*self) return;
    free((*self)->tokens);
    free((*self)->order);
    free(*self);
    *self = NULL;
}

sl_data *sl_data_hold_out(sl_data *self, double fraction, sl_err *err)
{
    size_t keep = (size_t)((double)self->n_tokens * (1.0 - fraction));
    size_t held = self->n_tokens - keep;
    if (keep < (size_t)self->seq_len + 1 || held < (size_t)self->seq_len + 1) {
        sl_fail(err, "%zu tokens cannot give both a training and a held-out sequence of %d + 1", self->n_tokens,
                self->seq_len);
        return NULL;
    }
    sl_data *eval = calloc(1, sizeof *eval);
    if (eval) {
        *eval = (sl_data){.n_tokens = held, .seq_len = self->seq_len, .order_epoch = -1};
        eval->sequences = (int)((held - 1) / (size_t)self->seq_len);
        eval->tokens = malloc(held * sizeof *eval->tokens);
        eval->order = malloc((size_t)eval->sequences * sizeof *eval->order);
    }
    if (!eval || !eval->tokens || !eval->order) {
        sl_data_destroy(&eval);
        sl_fail(err, "out of memory");
        return NULL;
    }
    memcpy(eval->tokens, self->tokens + keep, held * sizeof *eval->tokens);
    self->n_tokens = keep;
    self->sequences = (int)((keep - 1) / (size_t)self->seq_len);
    self->order_epoch = -1;
    return eval;
}

int sl_data_sequences(const sl_data *self) { return self->sequences; }
long sl_data_tokens(const sl_data *self) { return (long)self->n_tokens; }

/* The epoch's order: a Fisher-Yates shuffle drawn from (seed, epoch) alone. */
static void shuffle(sl_data *d, uint64_t seed, long epoch)
{
    sl_rng rng;
    sl_rng_seed(&rng, seed ^ ((uint64_t)epoch * 0x9e3779b97f4a7c15ull));
    for (int k = 0; k < d->sequences; k++)
        d->order[k] = k;
    for (int k = d->sequences - 1; k > 0; k--) {
        int j = (int)sl_rng_below(&rng, (uint64_t)k + 1), tmp = d->order[k];
        d->order[k] = d->order[j];
        d->order[j] = tmp;
    }
    d->order_epoch = epoch;
    d->order_seed = seed;
}

void sl_data_batch(sl_data *self, long batch, int B, uint64_t seed, int32_t *ids, int32_t *targets)
{
    for (int b = 0; b < B; b++) {
        long global = batch * B + b, epoch = global / self->sequences;
        if (epoch != self->order_epoch || seed != self->order_seed) shuffle(self, seed, epoch);
        const int32_t *src = self->tokens + (size_t)self->order[global % self->sequences] * self->seq_len;
        memcpy(ids + (size_t)b * self->seq_len, src, (size_t)self->seq_len * sizeof *ids);
        memcpy(targets + (size_t)b * self->seq_len, src + 1, (size_t)self->seq_len * sizeof *targets);
    }
}
