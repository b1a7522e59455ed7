/* tokenizer.h — GPT-2's byte-level BPE (vocab.json + merges.txt, or an HF tokenizer.json): text
 * to token ids and back.
 *
 * Encoding splits the text with GPT-2's pre-tokenizer pattern
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (PCRE2, Unicode classes; \s is Unicode White_Space, as tiktoken and HF tokenizers read it),
 * maps each piece's bytes to GPT-2's byte alphabet and applies the merges lowest rank first, as
 * OpenAI's encoder.py, HF tokenizers and tiktoken do.
 *
 * Any byte string encodes and round-trips: decode(encode(x)) == x. Bytes that are not valid
 * UTF-8 (stray continuation bytes, truncated or overlong sequences, surrogates) match no part of
 * the pattern (PCRE2_MATCH_INVALID_UTF); each maximal run of them between two matches is a piece
 * of its own, so a character cut in half still encodes as GPT-2's partial-character tokens.
 * "<|endoftext|>" in the text is ordinary text (not id 50256), as with tiktoken's encode_ordinary.
 *
 * Ownership: the caller owns the tokenizer (sl_tokenizer_destroy), the id arrays it passes to
 * encode and the strings decode returns (free). sl_tokenizer_token's bytes belong to the
 * tokenizer. One tokenizer must not be used by two threads at once: encode keeps scratch space
 * and a cache of recent pieces in it (the const functions may run concurrently). */
#ifndef SL_TOKENIZER_H
#define SL_TOKENIZER_H

#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_tokenizer sl_tokenizer;

/* The most bytes one token has: loading refuses a vocab entry longer than this. */
enum { SL_TOKENIZER_MAX_TOKEN_BYTES = 1024 };

/* Loads dir/vocab.json and dir/merges.txt or, when dir has no vocab.json, dir/tokenizer.json: the
 * HF fast tokenizer's file, read for its BPE vocab, merges and added tokens. A tokenizer.json
 * that is not GPT-2's kind (another model type, a normalizer, another pre-tokenizer, a prefix
 * space, a subword prefix, byte fallback, added tokens outside the vocab) is refused, naming
 * what. Errors name the file and the entry or line. Caller owns the result. */
sl_tokenizer *sl_tokenizer_new(const char *dir, sl_err *err);

/* Whether dir holds a vocab sl_tokenizer_new reads (vocab.json + merges.txt or tokenizer.json);
 * false for NULL. */
bool sl_tokenizer_dir_has_vocab(const char *dir);

/* Copies the vocab files from_dir has (vocab.json, merges.txt, tokenizer.json) into to_dir. */
int sl_tokenizer_copy_files(const char *from_dir, const char *to_dir, sl_err *err);

/* The model directory's vocab when it has one, else fallback_dir's; *fell_back (may be NULL)
 * says which. */
sl_tokenizer *sl_tokenizer_for_model(const char *model_dir, const char *fallback_dir, bool *fell_back, sl_err *err);

/* Frees the tokenizer and sets *self to NULL; *self == NULL is fine (self itself must not be NULL). */
void sl_tokenizer_destroy(sl_tokenizer **self);

/* Appends the ids of len bytes of text to the caller-owned array (*ids, *n, *cap), growing it
 * with realloc (start with NULL, 0, 0). Returns 0, or -1 with err (out of memory); on failure
 * *n is left as it was. */
int sl_tokenizer_encode(sl_tokenizer *self, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap,
                        sl_err *err);

/* The raw bytes of one token (maybe part of a UTF-8 character; not NUL-terminated), owned by
 * the tokenizer; sets *len. NULL for an id outside the vocabulary. */
const char *sl_tokenizer_token(const sl_tokenizer *self, int32_t id, size_t *len);

/* The bytes of n ids as a malloc'ed string (caller frees), NUL-terminated after *out_len bytes
 * (out_len may be NULL). NULL with err naming the id and its position for an id outside the
 * vocabulary. */
char *sl_tokenizer_decode(const sl_tokenizer *self, const int32_t *ids, size_t n, size_t *out_len, sl_err *err);

int32_t sl_tokenizer_vocab_size(const sl_tokenizer *self);

#endif
