/* tokenizer.c — GPT-2 byte-level BPE: PCRE2 pre-tokenizer, cJSON vocab, heap-ordered merges and
 * a cache of recently encoded pieces. */
#include "tokenizer.h"

#include "fileio.h"
#include "json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <assert.h>
#include <cJSON.h>
#include <limits.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PCRE2_MATCH_INVALID_UTF
#error "PCRE2 10.34 or newer is needed: encoding arbitrary bytes relies on PCRE2_MATCH_INVALID_UTF"
#endif

/* GPT-2's pattern with \s spelled out as Unicode White_Space, which is what \s means to the
 * reference implementations (tiktoken and HF tokenizers): PCRE2's \s also matches U+180E. */
#define SPACE "\\t\\n\\v\\f\\r\\x{85}\\p{Z}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+"
                                   "| ?[^" SPACE "\\p{L}\\p{N}]+"
                                   "|[" SPACE "]+(?![^" SPACE "])|[" SPACE "]+";

enum {
    ALPHABET_SIZE = 256 + 68, /* GPT-2 moves the 68 bytes that do not print to U+0100.. */
    MAX_FILE_BYTES = 64 << 20,
    /* The cache keeps pieces up to CACHE_MAX_PIECE bytes (words, in practice) and starts over
     * when half full, so that its memory stays bounded (1.5 MB of slots, at most 9 MB of keys
     * and ids; about 2 MB for English text) however much is encoded. */
    CACHE_SLOTS = 1 << 16,
    CACHE_MAX_ENTRIES = CACHE_SLOTS / 2,
    CACHE_MAX_PIECE = 48,
};

/* merges.txt line `rank`: the adjacent pair (left, right) becomes `merged`. */
typedef struct merge_slot {
    uint64_t key; /* pair_key(left, right); 0: empty slot */
    int32_t rank, merged;
} merge_slot;

typedef struct cache_slot {
    uint64_t hash;
    uint32_t key_at, key_len; /* key_len 0: empty slot (pieces are never empty) */
    uint32_t ids_at, ids_len;
} cache_slot;

typedef struct piece_cache {
    cache_slot *slots;
    size_t count;
    char *keys;
    size_t keys_len, keys_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
} piece_cache;

/* One symbol of a piece during BPE: a doubly linked list over the piece's byte positions. */
typedef struct symbol {
    int32_t id; /* -1 once merged into the symbol on its left */
    int32_t prev, next;
} symbol;

/* A merge that may apply at `left`, valid while the symbols there still hold these ids. */
typedef struct candidate {
    int32_t rank, left, left_id, right_id;
} candidate;

typedef struct bpe_scratch {
    symbol *syms;
    candidate *heap;
    int32_t *out;
    size_t cap; /* syms and out hold cap entries, heap 3 * cap */
} bpe_scratch;

struct sl_tokenizer {
    int32_t vocab_size;
    char *bytes;     /* every token's bytes, in id order, back to back */
    size_t *offsets; /* token i is bytes[offsets[i] .. offsets[i + 1]) */
    int32_t byte_token[256];
    merge_slot *merges; /* open addressing, power-of-two size */
    size_t merge_mask;
    pcre2_code *pattern;
    pcre2_match_data *match;
    bpe_scratch scratch;
    piece_cache cache;
};

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then mixed so that the low bits spread */
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return mix64(h ^ len);
}

static uint64_t pair_key(int32_t left, int32_t right) { return ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1; }

static size_t power_of_two_at_least(size_t n)
{
    size_t size = 16;
    while (size < n)
        size <<= 1;
    return size;
}

/* ---- GPT-2's byte alphabet ---- */

/* The bytes that GPT-2 writes as the character of the same code point. */
static bool prints_as_itself(int b)
{
    return (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/* codepoint_byte[cp] = the byte that code point cp stands for, -1 if none. */
static void build_alphabet(int16_t codepoint_byte[ALPHABET_SIZE])
{
    for (int cp = 0; cp < ALPHABET_SIZE; cp++)
        codepoint_byte[cp] = -1;
    int moved = 0;
    for (int b = 0; b < 256; b++)
        codepoint_byte[prints_as_itself(b) ? b : 256 + moved++] = (int16_t)b;
}

/* Turns a vocab or merges token (UTF-8 of alphabet characters) into raw bytes, at most
 * SL_TOKENIZER_MAX_TOKEN_BYTES; -1 if a character is outside the alphabet or the token is too long. */
static int alphabet_to_bytes(const char *text, const int16_t codepoint_byte[ALPHABET_SIZE], char *out, size_t *len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = 0;
    while (*p) {
        int cp;
        if (p[0] < 0x80) {
            cp = *p++;
        } else if ((p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) {
            cp = (p[0] & 0x1f) << 6 | (p[1] & 0x3f);
            p += 2;
        } else {
            return -1; /* three-byte characters are all beyond the alphabet */
        }
        if (cp >= ALPHABET_SIZE || codepoint_byte[cp] < 0 || n == SL_TOKENIZER_MAX_TOKEN_BYTES) return -1;
        out[n++] = (char)codepoint_byte[cp];
    }
    *len = n;
    return 0;
}

/* ---- vocab.json ---- */

/* Checks that item maps a token to an id in 0..count-1 not seen before; returns the id. */
static int32_t vocab_entry_id(const cJSON *item, int count, const cJSON **by_id, const char *path, sl_err *err)
{
    const sl_json_num id_range = {.min = 0, .max = count - 1, .integer = true};
    char name[224];
    snprintf(name, sizeof name, "token \"%.200s\"", item->string);
    double v;
    if (sl_json_number(item, name, id_range, &v, path, err) != 0) return -1;
    int32_t id = (int32_t)v;
    if (by_id[id]) {
        sl_fail(err, "%s: tokens \"%.200s\" and \"%.200s\" both have id %d", path, by_id[id]->string, item->string, id);
        return -1;
    }
    return id;
}

/* Lays the tokens' bytes out in id order (by_id is complete: count distinct ids). */
static int store_tokens(sl_tokenizer *t, const cJSON **by_id, size_t key_bytes, const char *path, sl_err *err)
{
    int16_t codepoint_byte[ALPHABET_SIZE];
    build_alphabet(codepoint_byte);
    t->bytes = malloc(key_bytes + 1); /* a token has at most as many bytes as its key */
    t->offsets = malloc(((size_t)t->vocab_size + 1) * sizeof *t->offsets);
    if (!t->bytes || !t->offsets) return sl_fail(err, "%s: out of memory", path);
    size_t at = 0, len;
    for (int32_t id = 0; id < t->vocab_size; id++) {
        t->offsets[id] = at;
        if (alphabet_to_bytes(by_id[id]->string, codepoint_byte, t->bytes + at, &len) != 0)
            return sl_fail(err,
                           "%s: token \"%.200s\" (id %d) has a character outside GPT-2's "
                           "byte alphabet or is too long",
                           path, by_id[id]->string, id);
        at += len;
    }
    t->offsets[t->vocab_size] = at;
    return 0;
}

/* Reads a vocab object (token: id, as vocab.json and tokenizer.json's model.vocab hold it);
 * origin names it in errors. */
static int load_vocab_object(sl_tokenizer *t, const cJSON *root, const char *origin, sl_err *err)
{
    int count = cJSON_GetArraySize(root);
    if (!cJSON_IsObject(root)) return sl_fail(err, "%s: expected an object of token: id", origin);
    if (count == 0) return sl_fail(err, "%s: no tokens: expected a non-empty object of token: id", origin);
    const cJSON **by_id = calloc((size_t)count, sizeof *by_id);
    int rc = by_id ? 0 : sl_fail(err, "%s: out of memory", origin);
    size_t key_bytes = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        int32_t id = rc == 0 ? vocab_entry_id(item, count, by_id, origin, err) : -1;
        if (id < 0) {
            rc = -1;
            break;
        }
        by_id[id] = item;
        key_bytes += strlen(item->string);
    }
    t->vocab_size = count;
    if (rc == 0) rc = store_tokens(t, by_id, key_bytes, origin, err);
    free(by_id);
    return rc;
}

static int load_vocab(sl_tokenizer *t, const char *path, sl_err *err)
{
    cJSON *root = sl_json_read_file(path, MAX_FILE_BYTES, err);
    int rc = root ? load_vocab_object(t, root, path, err) : -1;
    cJSON_Delete(root);
    return rc;
}

/* ---- merges.txt ---- */

/* Token bytes to id while merges.txt is read: open addressing over the ids, -1 empty. */
typedef struct token_index {
    int32_t *slots;
    size_t mask;
} token_index;

static int32_t token_index_find(const sl_tokenizer *t, const token_index *index, const char *bytes, size_t len,
                                size_t *slot_out)
{
    size_t i = hash_bytes(bytes, len) & index->mask;
    for (;; i = (i + 1) & index->mask) {
        int32_t id = index->slots[i];
        size_t id_len = id < 0 ? 0 : t->offsets[id + 1] - t->offsets[id];
        if (id < 0 || (id_len == len && memcmp(t->bytes + t->offsets[id], bytes, len) == 0)) {
            if (slot_out) *slot_out = i;
            return id;
        }
    }
}

static int token_index_build(const sl_tokenizer *t, token_index *index)
{
    size_t size = power_of_two_at_least(2 * (size_t)t->vocab_size);
    index->slots = malloc(size * sizeof *index->slots);
    if (!index->slots) return -1;
    index->mask = size - 1;
    memset(index->slots, 0xff, size * sizeof *index->slots);
    for (int32_t id = 0; id < t->vocab_size; id++) {
        size_t slot, len = t->offsets[id + 1] - t->offsets[id];
        /* A repeated token keeps its first id, like a dictionary built from vocab.json. */
        if (token_index_find(t, index, t->bytes + t->offsets[id], len, &slot) < 0) index->slots[slot] = id;
    }
    return 0;
}

static merge_slot *merge_find(const sl_tokenizer *t, int32_t left, int32_t right)
{
    uint64_t key = pair_key(left, right);
    for (size_t i = mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        merge_slot *s = &t->merges[i];
        if (s->key == key || s->key == 0) return s;
    }
}

/* Reading merges: the token index and the alphabet, built once for all of them. */
typedef struct merges_reader {
    const token_index *index;
    int16_t codepoint_byte[ALPHABET_SIZE];
} merges_reader;

/* Adds the merge of tokens left and right (alphabet characters) with the given rank; err says
 * what is wrong, the caller where. */
static int add_merge(sl_tokenizer *t, const merges_reader *r, const char *left_text, const char *right_text,
                     int32_t rank, sl_err *err)
{
    char merged_bytes[2 * SL_TOKENIZER_MAX_TOKEN_BYTES], right_bytes[SL_TOKENIZER_MAX_TOKEN_BYTES];
    size_t left_len, right_len;
    if (alphabet_to_bytes(left_text, r->codepoint_byte, merged_bytes, &left_len) != 0 ||
        alphabet_to_bytes(right_text, r->codepoint_byte, right_bytes, &right_len) != 0)
        return sl_fail(err, "a token has a character outside GPT-2's byte alphabet");
    int32_t left = token_index_find(t, r->index, merged_bytes, left_len, NULL);
    int32_t right = token_index_find(t, r->index, right_bytes, right_len, NULL);
    memcpy(merged_bytes + left_len, right_bytes, right_len);
    int32_t merged = token_index_find(t, r->index, merged_bytes, left_len + right_len, NULL);
    if (left < 0 || right < 0 || merged < 0)
        return sl_fail(err, "merge \"%.200s %.200s\" uses a token missing from the vocab", left_text, right_text);
    /* A repeated pair takes its last rank, as the dict of OpenAI's encoder.py does. */
    *merge_find(t, left, right) = (merge_slot){pair_key(left, right), rank, merged};
    return 0;
}

/* Splits "A B" (one space between two tokens) in place into *left and *right. */
static int split_merge_line(char *line, char **left, char **right, sl_err *err)
{
    char *space = strchr(line, ' ');
    if (!space || space == line || !space[1] || strchr(space + 1, ' '))
        return sl_fail(err, "expected two tokens separated by one space");
    *space = '\0';
    *left = line;
    *right = space + 1;
    return 0;
}

/* The merge table, with room for count merges. */
static int merges_alloc(sl_tokenizer *t, size_t count, merges_reader *reader, const token_index *index, sl_err *err)
{
    size_t size = power_of_two_at_least(2 * count + 1);
    t->merges = calloc(size, sizeof *t->merges);
    t->merge_mask = size - 1;
    *reader = (merges_reader){.index = index};
    build_alphabet(reader->codepoint_byte);
    return t->merges ? 0 : sl_fail(err, "out of memory for %zu merges", count);
}

static int load_merges(sl_tokenizer *t, const token_index *index, const char *path, sl_err *err)
{
    char *text = sl_read_text_file(path, MAX_FILE_BYTES, err);
    if (!text) return -1;
    size_t lines = 1;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    merges_reader reader;
    int rc = merges_alloc(t, lines, &reader, index, err);
    int32_t rank = 0;
    int lineno = 0;
    for (char *line = text, *next; rc == 0 && line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[--n] = '\0';
        if (n == 0 || (lineno == 1 && strncmp(line, "#version", 8) == 0)) continue;
        char *left = NULL, *right = NULL;
        rc = split_merge_line(line, &left, &right, err);
        if (rc == 0) rc = add_merge(t, &reader, left, right, rank++, err);
        if (rc != 0) sl_err_prefix(err, "%s:%d", path, lineno);
    }
    free(text);
    return rc;
}

/* Every piece starts as one token per byte, so the vocab needs all 256 single-byte tokens. */
static int find_byte_tokens(sl_tokenizer *t, const token_index *index, const char *path, sl_err *err)
{
    for (int b = 0; b < 256; b++) {
        char byte = (char)b;
        if ((t->byte_token[b] = token_index_find(t, index, &byte, 1, NULL)) < 0)
            return sl_fail(err, "%s: no token for byte %d", path, b);
    }
    return 0;
}

/* ---- tokenizer.json (the HF fast tokenizer) ---- */

static const cJSON *member(const cJSON *obj, const char *name) { return cJSON_GetObjectItemCaseSensitive(obj, name); }

/* obj's "type", "" when obj is null or absent, "?" when it has no string type. */
static const char *type_of(const cJSON *obj)
{
    if (!obj || cJSON_IsNull(obj)) return "";
    const char *type = cJSON_GetStringValue(member(obj, "type"));
    return type ? type : "?";
}

static bool is_false_or_absent(const cJSON *item) { return !item || cJSON_IsNull(item) || cJSON_IsFalse(item); }

static bool is_empty_string_or_absent(const cJSON *item)
{
    return !item || cJSON_IsNull(item) || (cJSON_IsString(item) && !item->valuestring[0]);
}

/* What in the file is not GPT-2's byte-level BPE, or NULL when it all is: a BPE model over the
 * byte alphabet (no subword prefix or suffix, no byte fallback), the ByteLevel pre-tokenizer
 * with GPT-2's pattern and no prefix space, no normalizer, a ByteLevel decoder. */
static const char *not_gpt2(const cJSON *root, char *why, size_t size)
{
    const cJSON *model = member(root, "model"), *pre = member(root, "pre_tokenizer");
    const char *model_type = type_of(model);
    if (!cJSON_IsObject(model)) return "no \"model\" object";
    if (model_type[0] && strcmp(model_type, "BPE") != 0)
        return snprintf(why, size, "model type %.64s", model_type), why;
    if (!is_empty_string_or_absent(member(model, "continuing_subword_prefix")) ||
        !is_empty_string_or_absent(member(model, "end_of_word_suffix")))
        return "a BPE model with a subword prefix or suffix";
    if (!is_false_or_absent(member(model, "byte_fallback"))) return "a BPE model with byte_fallback";
    if (type_of(member(root, "normalizer"))[0])
        return snprintf(why, size, "normalizer %.64s", type_of(member(root, "normalizer"))), why;
    if (strcmp(type_of(pre), "ByteLevel") != 0)
        return snprintf(why, size, "pre-tokenizer %.64s", type_of(pre)[0] ? type_of(pre) : "none"), why;
    if (!is_false_or_absent(member(pre, "add_prefix_space"))) return "a ByteLevel pre-tokenizer with add_prefix_space";
    if (cJSON_IsFalse(member(pre, "use_regex"))) return "a ByteLevel pre-tokenizer without GPT-2's pattern";
    const char *decoder = type_of(member(root, "decoder"));
    if (decoder[0] && strcmp(decoder, "ByteLevel") != 0) return snprintf(why, size, "decoder %.64s", decoder), why;
    return NULL;
}

/* One entry of model.merges: "A B", or ["A", "B"] as newer versions of tokenizers write it. */
static int add_hf_merge(sl_tokenizer *t, const merges_reader *r, const cJSON *item, int32_t rank, sl_err *err)
{
    const char *left = cJSON_GetStringValue(cJSON_GetArrayItem(item, 0));
    const char *right = cJSON_GetStringValue(cJSON_GetArrayItem(item, 1));
    if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 && left && right)
        return add_merge(t, r, left, right, rank, err);
    if (!cJSON_IsString(item)) return sl_fail(err, "expected \"A B\" or [\"A\", \"B\"]");
    char *line = strdup(item->valuestring), *l = NULL, *rt = NULL;
    int rc = line ? split_merge_line(line, &l, &rt, err) : sl_fail(err, "out of memory");
    if (rc == 0) rc = add_merge(t, r, l, rt, rank, err);
    free(line);
    return rc;
}

static int load_hf_merges(sl_tokenizer *t, const token_index *index, const cJSON *merges, const char *path, sl_err *err)
{
    if (!cJSON_IsArray(merges)) return sl_fail(err, "%s: model.merges: expected an array", path);
    merges_reader reader;
    if (merges_alloc(t, (size_t)cJSON_GetArraySize(merges), &reader, index, err) != 0) return -1;
    int32_t rank = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, merges)
    {
        if (add_hf_merge(t, &reader, item, rank, err) != 0) {
            sl_err_prefix(err, "%s: model.merges[%d]", path, rank);
            return -1;
        }
        rank++;
    }
    return 0;
}

/* Added tokens (GPT-2's <|endoftext|>) must be tokens of the vocab: ids beyond it are not read. */
static int check_added_tokens(const sl_tokenizer *t, const cJSON *added, const char *path, sl_err *err)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, added)
    {
        const char *content = cJSON_GetStringValue(member(item, "content"));
        const cJSON *id = member(item, "id");
        size_t len = 0;
        const char *bytes = cJSON_IsNumber(id) ? sl_tokenizer_token(t, (int32_t)id->valuedouble, &len) : NULL;
        if (!content || !bytes || len != strlen(content) || memcmp(bytes, content, len) != 0)
            return sl_fail(err, "%s: added token \"%.100s\" (id %g) is not that token of model.vocab (0..%d)", path,
                           content ? content : "?", cJSON_IsNumber(id) ? id->valuedouble : -1.0, t->vocab_size - 1);
    }
    return 0;
}

static int load_hf(sl_tokenizer *t, const char *path, sl_err *err)
{
    cJSON *root = sl_json_read_file(path, MAX_FILE_BYTES, err);
    if (!root) return -1;
    char why[128], origin[PATH_MAX + 16];
    snprintf(origin, sizeof origin, "%s model.vocab", path);
    const char *refused = not_gpt2(root, why, sizeof why);
    int rc = refused ? sl_fail(err,
                               "%s: %s: only GPT-2's byte-level BPE is read (model BPE, ByteLevel pre-tokenizer "
                               "without prefix space, no normalizer)",
                               path, refused)
                     : 0;
    const cJSON *model = member(root, "model");
    token_index index = {0};
    if (rc == 0) rc = load_vocab_object(t, member(model, "vocab"), origin, err);
    if (rc == 0 && token_index_build(t, &index) != 0) rc = sl_fail(err, "out of memory");
    if (rc == 0) rc = find_byte_tokens(t, &index, origin, err);
    if (rc == 0) rc = load_hf_merges(t, &index, member(model, "merges"), path, err);
    if (rc == 0) rc = check_added_tokens(t, member(root, "added_tokens"), path, err);
    free(index.slots);
    cJSON_Delete(root);
    return rc;
}

/* ---- setup ---- */

static int compile_pattern(sl_tokenizer *t, sl_err *err)
{
    int code;
    PCRE2_SIZE offset;
    uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    t->pattern = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, options, &code, &offset, NULL);
    if (!t->pattern) {
        PCRE2_UCHAR why[256];
        pcre2_get_error_message(code, why, sizeof why);
        return sl_fail(err, "pre-tokenizer pattern, offset %zu: %s", (size_t)offset, why);
    }
    /* Without JIT support pcre2_match interprets the pattern: slower, same result. */
    pcre2_jit_compile(t->pattern, PCRE2_JIT_COMPLETE);
    t->match = pcre2_match_data_create_from_pattern(t->pattern, NULL);
    return t->match ? 0 : sl_fail(err, "out of memory");
}

static int load_vocab_and_merges(sl_tokenizer *t, const char *vocab, const char *merges, sl_err *err)
{
    token_index index = {0};
    int rc = load_vocab(t, vocab, err);
    if (rc == 0 && token_index_build(t, &index) != 0) rc = sl_fail(err, "out of memory");
    if (rc == 0) rc = find_byte_tokens(t, &index, vocab, err);
    if (rc == 0) rc = load_merges(t, &index, merges, err);
    free(index.slots);
    return rc;
}

/* The files a vocab directory holds: vocab.json + merges.txt, else tokenizer.json (hf). */
typedef struct vocab_files {
    char vocab[PATH_MAX], merges[PATH_MAX], hf[PATH_MAX];
    bool use_hf;
} vocab_files;

static int find_vocab_files(const char *dir, vocab_files *f, sl_err *err)
{
    if (snprintf(f->vocab, sizeof f->vocab, "%s/vocab.json", dir) >= (int)sizeof f->vocab ||
        snprintf(f->merges, sizeof f->merges, "%s/merges.txt", dir) >= (int)sizeof f->merges ||
        snprintf(f->hf, sizeof f->hf, "%s/tokenizer.json", dir) >= (int)sizeof f->hf)
        return sl_fail(err, "%s: path too long", dir);
    f->use_hf = access(f->vocab, F_OK) != 0 && access(f->hf, F_OK) == 0;
    return 0;
}

static int load(sl_tokenizer *t, const char *dir, sl_err *err)
{
    vocab_files f;
    if (find_vocab_files(dir, &f, err) != 0) return -1;
    int rc = f.use_hf ? load_hf(t, f.hf, err) : load_vocab_and_merges(t, f.vocab, f.merges, err);
    if (rc == 0) rc = compile_pattern(t, err);
    if (rc == 0 && !(t->cache.slots = calloc(CACHE_SLOTS, sizeof *t->cache.slots))) rc = sl_fail(err, "out of memory");
    return rc;
}

sl_tokenizer *sl_tokenizer_new(const char *dir, sl_err *err)
{
    sl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    if (load(t, dir, err) != 0) sl_tokenizer_destroy(&t);
    return t;
}

bool sl_tokenizer_dir_has_vocab(const char *dir)
{
    vocab_files f;
    if (!dir || find_vocab_files(dir, &f, NULL) != 0) return false;
    return f.use_hf ? access(f.hf, R_OK) == 0 : access(f.vocab, R_OK) == 0 && access(f.merges, R_OK) == 0;
}

int sl_tokenizer_copy_files(const char *from_dir, const char *to_dir, sl_err *err)
{
    static const char *const names[] = {"vocab.json", "merges.txt", "tokenizer.json"};
    for (int i = 0; i < 3; i++) {
        char from[PATH_MAX + 32], to[PATH_MAX + 32];
        snprintf(from, sizeof from, "%s/%s", from_dir, names[i]);
        snprintf(to, sizeof to, "%s/%s", to_dir, names[i]);
        if (access(from, R_OK) == 0 && sl_copy_file(from, to, err) != 0) return -1;
    }
    return 0;
}

sl_tokenizer *sl_tokenizer_for_model(const char *model_dir, const char *fallback_dir, bool *fell_back, sl_err *err)
{
    bool own = sl_tokenizer_dir_has_vocab(model_dir);
    if (fell_back) *fell_back = !own;
    return sl_tokenizer_new(own ? model_dir : fallback_dir, err);
}

void sl_tokenizer_destroy(sl_tokenizer **self)
{
    assert(self);
    if (!*self) return;
    sl_tokenizer *t = *self;
    pcre2_match_data_free(t->match);
    pcre2_code_free(t->pattern);
    free(t->bytes);
    free(t->offsets);
    free(t->merges);
    free(t->scratch.syms);
    free(t->scratch.heap);
    free(t->scratch.out);
    free(t->cache.slots);
    free(t->cache.keys);
    free(t->cache.ids);
    free(t);
    *self = NULL;
}

/* ---- growable arrays ---- */

/* buf (capacity *cap elements of size bytes) with room for need elements: buf itself, or a
 * bigger copy (updating *cap), or NULL when out of memory (buf is then left as it was). */
static void *grown(void *buf, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return buf;
    size_t want = *cap ? *cap : 64;
    while (want < need)
        want *= 2;
    if (want > SIZE_MAX / size) return NULL;
    void *more = realloc(buf, want * size);
    if (more) *cap = want;
    return more;
}

static int push_ids(int32_t **ids, size_t *n, size_t *cap, const int32_t *src, size_t count, sl_err *err)
{
    int32_t *room = grown(*ids, cap, *n + count, sizeof *room);
    if (!room) return sl_fail(err, "out of memory for %zu token ids", *n + count);
    *ids = room;
    memcpy(room + *n, src, count * sizeof *src);
    *n += count;
    return 0;
}

/* ---- the piece cache ---- */

static cache_slot *cache_slot_for(const piece_cache *c, const unsigned char *piece, size_t len, uint64_t hash)
{
    for (size_t i = hash & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *s = &c->slots[i];
        if (s->key_len == 0) return s;
        if (s->hash == hash && s->key_len == len && memcmp(c->keys + s->key_at, piece, len) == 0) return s;
    }
}

/* Remembers a piece's ids; when memory is short the piece just stays uncached. */
static void cache_add(piece_cache *c, const unsigned char *piece, size_t len, uint64_t hash, const int32_t *ids,
                      size_t count)
{
    if (c->count == CACHE_MAX_ENTRIES) {
        memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots);
        c->count = c->keys_len = c->ids_len = 0;
    }
    char *keys = grown(c->keys, &c->keys_cap, c->keys_len + len, 1);
    if (keys) c->keys = keys;
    int32_t *ids_room = grown(c->ids, &c->ids_cap, c->ids_len + count, sizeof *ids_room);
    if (ids_room) c->ids = ids_room;
    if (!keys || !ids_room) return;
    cache_slot *s = cache_slot_for(c, piece, len, hash);
    *s = (cache_slot){hash, (uint32_t)c->keys_len, (uint32_t)len, (uint32_t)c->ids_len, (uint32_t)count};
    memcpy(c->keys + c->keys_len, piece, len);
    memcpy(c->ids + c->ids_len, ids, count * sizeof *ids);
    c->keys_len += len;
    c->ids_len += count;
    c->count++;
}

/* ---- BPE on one piece ---- */

/* Pieces index their symbols with int32_t; a longer run without a break is refused. */
#define MAX_PIECE_BYTES ((size_t)INT32_MAX / 4)

static int scratch_reserve(bpe_scratch *s, size_t len)
{
    if (len <= s->cap) return 0;
    size_t cap = power_of_two_at_least(len);
    symbol *syms = realloc(s->syms, cap * sizeof *syms);
    if (syms) s->syms = syms;
    int32_t *out = realloc(s->out, cap * sizeof *out);
    if (out) s->out = out;
    candidate *heap = realloc(s->heap, 3 * cap * sizeof *heap);
    if (heap) s->heap = heap;
    if (!syms || !out || !heap) return -1;
    s->cap = cap;
    return 0;
}

/* Heap order: lowest rank first; among equal ranks the leftmost, which is what GPT-2's loop
 * (merge every occurrence of the best pair, left to right) amounts to. */
static bool comes_before(const candidate *a, const candidate *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(candidate *heap, size_t *n, candidate c)
{
    size_t i = (*n)++;
    while (i > 0 && comes_before(&c, &heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = c;
}

static candidate heap_pop(candidate *heap, size_t *n)
{
    candidate top = heap[0], last = heap[--*n];
    size_t i = 0;
    for (size_t child; (child = 2 * i + 1) < *n; i = child) {
        if (child + 1 < *n && comes_before(&heap[child + 1], &heap[child])) child++;
        if (!comes_before(&heap[child], &last)) break;
        heap[i] = heap[child];
    }
    heap[i] = last;
    return top;
}

/* Queues the merge of the symbol at left with its right neighbour, if merges.txt has one. */
static void consider_pair(const sl_tokenizer *t, bpe_scratch *s, size_t *heap_len, int32_t left)
{
    if (left < 0 || s->syms[left].next < 0) return;
    int32_t left_id = s->syms[left].id, right_id = s->syms[s->syms[left].next].id;
    const merge_slot *m = merge_find(t, left_id, right_id);
    if (m->key) heap_push(s->heap, heap_len, (candidate){m->rank, left, left_id, right_id});
}

/* Merges the pieces's byte tokens, best rank first, until no pair has a merge; writes the
 * resulting ids to s->out and returns their count. A heap of candidate merges, some stale,
 * keeps this O(n log n) where rescanning the piece after each merge would be quadratic. */
static size_t bpe(const sl_tokenizer *t, bpe_scratch *s, const unsigned char *piece, size_t len)
{
    int32_t n = (int32_t)len;
    for (int32_t i = 0; i < n; i++)
        s->syms[i] = (symbol){t->byte_token[piece[i]], i - 1, i + 1 < n ? i + 1 : -1};
    size_t heap_len = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        consider_pair(t, s, &heap_len, i);
    while (heap_len > 0) {
        candidate c = heap_pop(s->heap, &heap_len);
        symbol *left = &s->syms[c.left];
        int32_t right = left->next;
        /* Stale when either symbol has merged with another since the candidate was queued. */
        if (left->id != c.left_id || right < 0 || s->syms[right].id != c.right_id) continue;
        left->id = merge_find(t, c.left_id, c.right_id)->merged;
        left->next = s->syms[right].next;
        if (left->next >= 0) s->syms[left->next].prev = c.left;
        s->syms[right].id = -1;
        consider_pair(t, s, &heap_len, left->prev);
        consider_pair(t, s, &heap_len, c.left);
    }
    size_t count = 0;
    for (int32_t i = 0; i >= 0; i = s->syms[i].next)
        s->out[count++] = s->syms[i].id;
    return count;
}

static int encode_piece(sl_tokenizer *t, const unsigned char *piece, size_t len, int32_t **ids, size_t *n, size_t *cap,
                        sl_err *err)
{
    bool cacheable = len <= CACHE_MAX_PIECE;
    uint64_t hash = cacheable ? hash_bytes(piece, len) : 0;
    if (cacheable) {
        const cache_slot *hit = cache_slot_for(&t->cache, piece, len, hash);
        if (hit->key_len) return push_ids(ids, n, cap, t->cache.ids + hit->ids_at, hit->ids_len, err);
    }
    if (len > MAX_PIECE_BYTES)
        return sl_fail(err, "a run of %zu bytes without a word break is too long to encode", len);
    if (scratch_reserve(&t->scratch, len) != 0) return sl_fail(err, "out of memory for a piece of %zu bytes", len);
    size_t count = bpe(t, &t->scratch, piece, len);
    if (cacheable) cache_add(&t->cache, piece, len, hash, t->scratch.out, count);
    return push_ids(ids, n, cap, t->scratch.out, count, err);
}

/* ---- encoding ---- */

/* The next match of the pattern at or after byte at: [*start, *end), or len, len if none. */
static int next_match(sl_tokenizer *t, const unsigned char *text, size_t len, size_t at, size_t *start, size_t *end,
                      sl_err *err)
{
    int rc = pcre2_match(t->pattern, text, len, at, 0, t->match, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) {
        *start = *end = len;
        return 0;
    }
    if (rc < 0) {
        PCRE2_UCHAR why[256];
        pcre2_get_error_message(rc, why, sizeof why);
        return sl_fail(err, "pre-tokenizer failed at byte %zu: %s", at, why);
    }
    const PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(t->match);
    *start = ovector[0];
    *end = ovector[1];
    /* No alternative of the pattern matches the empty string; this guards the loop anyway. */
    if (*end <= *start) return sl_fail(err, "pre-tokenizer matched nothing at byte %zu", *start);
    return 0;
}

int sl_tokenizer_encode(sl_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap,
                        sl_err *err)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t first = *n, at = 0, start, end;
    while (at < len) {
        if (next_match(t, s, len, at, &start, &end, err) != 0) goto fail;
        /* What the pattern stepped over is a run of bytes that are not valid UTF-8. */
        if (start > at && encode_piece(t, s + at, start - at, ids, n, cap, err) != 0) goto fail;
        if (end > start && encode_piece(t, s + start, end - start, ids, n, cap, err) != 0) goto fail;
        at = end;
    }
    return 0;
fail:
    *n = first;
    return -1;
}

/* ---- decoding ---- */

const char *sl_tokenizer_token(const sl_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->vocab_size) return NULL;
    *len = t->offsets[id + 1] - t->offsets[id];
    return t->bytes + t->offsets[id];
}

char *sl_tokenizer_decode(const sl_tokenizer *t, const int32_t *ids, size_t n, size_t *out_len, sl_err *err)
{
    size_t total = 0, len;
    for (size_t i = 0; i < n; i++) {
        if (!sl_tokenizer_token(t, ids[i], &len)) {
            sl_fail(err, "token id %d at position %zu is outside the vocabulary (0..%d)", ids[i], i, t->vocab_size - 1);
            return NULL;
        }
        total += len;
    }
    char *out = malloc(total + 1);
    if (!out) {
        sl_fail(err, "out of memory for %zu bytes of text", total);
        return NULL;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *bytes = sl_tokenizer_token(t, ids[i], &len);
        memcpy(out + at, bytes, len);
        at += len;
    }
    out[at] = '\0';
    if (out_len) *out_len = at;
    return out;
}

int32_t sl_tokenizer_vocab_size(const sl_tokenizer *t) { return t->vocab_size; }
