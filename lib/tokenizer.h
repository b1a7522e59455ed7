/* tokenizer.h — GPT-2's byte-level BPE (vocab.json + merges.txt): text to token ids and back.
 *
 * Encoding splits the text with GPT-2's pattern ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
 * ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+, Unicode classes, PCRE2), maps each piece's bytes to GPT-2's
 * byte alphabet and applies the merges by rank. Bytes that are not valid UTF-8 never match the
 * pattern; each such run is encoded as a piece of its own, so any byte string round-trips.
 * A tokenizer is not safe to use from two threads at once (it keeps match scratch). */
#ifndef SL_TOKENIZER_H
#define SL_TOKENIZER_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sl_tokenizer sl_tokenizer;

/* Loads dir/vocab.json and dir/merges.txt. Errors name the file and the entry or line.
 * Caller owns the result. */
sl_tokenizer *sl_tokenizer_new(const char *dir, sl_err *err);

/* The model directory's vocab when it has vocab.json and merges.txt, else fallback_dir's. */
sl_tokenizer *sl_tokenizer_for_model(const char *model_dir, const char *fallback_dir, sl_err *err);

void sl_tokenizer_destroy(sl_tokenizer **self);

/* Appends the ids of len bytes of text to the caller-owned growable array (*ids, *n, *cap),
 * growing it with realloc. */
int sl_tokenizer_encode(sl_tokenizer *self, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap,
                        sl_err *err);

/* The bytes of one token (maybe part of a UTF-8 character), owned by the tokenizer; NULL for an
 * id outside the vocabulary. */
const char *sl_tokenizer_token(const sl_tokenizer *self, int32_t id, size_t *len);

/* The text of n ids as a NUL-terminated malloc'ed string (caller frees) of *out_len bytes. */
char *sl_tokenizer_decode(const sl_tokenizer *self, const int32_t *ids, size_t n, size_t *out_len, sl_err *err);

int32_t sl_tokenizer_vocab_size(const sl_tokenizer *self);

#endif
