/* data.h — training data: UTF-8 text files tokenized with the project's tokenizer, joined with
 * the end-of-text token between files, cut into sequences of T+1 tokens (T inputs, each
 * position's next token as its target), shuffled with a seed, served in batches. */
#ifndef SL_DATA_H
#define SL_DATA_H

#include "tokenizer.h"

#include <stdint.h>

typedef struct sl_data sl_data;

/* Tokenizes the files into sequences of seq_len+1 tokens (consecutive sequences share one
 * token, so every token but the first is a target). Fails when there is not a single sequence.
 * Caller owns the result. */
sl_data *sl_data_new(sl_tokenizer *tok, const char *const *files, int n_files, int seq_len, int eos, sl_err *err);
void sl_data_destroy(sl_data **self);

/* Moves the last `fraction` of the tokens into a new data set (a held-out split for the eval
 * loss) and keeps the rest; NULL with err when either side would hold no sequence. Caller owns
 * the result. */
sl_data *sl_data_hold_out(sl_data *self, double fraction, sl_err *err);

int sl_data_sequences(const sl_data *self);
long sl_data_tokens(const sl_data *self);

/* Batch number `batch` (counting across epochs: epoch = batch * B / sequences) of B sequences:
 * ids and targets (B * seq_len each). The order is a shuffle of the sequences by (seed, epoch),
 * so any batch can be produced again from its number alone (resuming is exact). */
void sl_data_batch(sl_data *self, long batch, int B, uint64_t seed, int32_t *ids, int32_t *targets);

#endif
