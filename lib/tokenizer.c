/* tokenizer.c — GPT-2 byte-level BPE over PCRE2 (pre-tokenizer) and cJSON (vocab.json). */
#include "tokenizer.h"

#include "fileio.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <limits.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* A merge: the pair (left, right) becomes `merged`; lower rank merges first. */
typedef struct merge_slot {
    uint64_t pair; /* (left << 32 | right) + 1; 0: empty */
    int32_t rank, merged;
} merge_slot;

struct sl_tokenizer {
    int32_t vocab_size;
    char *bytes;          /* every token's bytes, back to back */
    size_t *offsets;      /* token i is bytes[offsets[i] .. offsets[i+1]) */
    int32_t byte_token[256];
    merge_slot *merges;   /* open addressing, power-of-two size */
    size_t merge_mask;
    pcre2_code *pattern;
    pcre2_match_data *match;
    int32_t *work;        /* BPE scratch: symbols of the current piece */
    size_t work_cap;
};

/* ---- GPT-2's byte alphabet: bytes that print stand for themselves, the rest map to 256+ ---- */

static int byte_to_codepoint(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

/* Inverse of byte_to_codepoint over 0..323, -1 elsewhere. */
static void build_codepoint_table(int16_t table[324])
{
    for (int i = 0; i < 324; i++) table[i] = -1;
    for (int b = 0; b < 256; b++) table[byte_to_codepoint(b)] = (int16_t)b;
}

/* Decodes a vocab key (UTF-8 of alphabet characters) into raw bytes; -1 if not of the alphabet. */
static int key_to_bytes(const char *key, const int16_t table[324], char *out, size_t *len)
{
    const unsigned char *p = (const unsigned char *)key;
    size_t n = 0;
    while (*p) {
        int cp;
        if (p[0] < 0x80) cp = *p++;
        else if ((p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) cp = (p[0] & 0x1f) << 6 | (p[1] & 0x3f), p += 2;
        else return -1;
        if (cp >= 324 || table[cp] < 0) return -1;
        out[n++] = (char)table[cp];
    }
    *len = n;
    return 0;
}

/* ---- the merge table ---- */

static size_t hash_pair(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key;
}

static merge_slot *merge_find(const sl_tokenizer *t, int32_t left, int32_t right)
{
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    for (size_t i = hash_pair(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        merge_slot *s = &t->merges[i];
        if (s->pair == key || s->pair == 0) return s;
    }
}

/* ---- loading ---- */

/* Token strings to ids while merges.txt is read: a sorted array searched by bytes. */
typedef struct named {
    const char *bytes;
    size_t len;
    int32_t id;
} named;

static int cmp_named(const void *a, const void *b)
{
    const named *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->bytes, y->bytes, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int32_t lookup(const named *index, int32_t count, const char *bytes, size_t len)
{
    named key = {bytes, len, 0};
    const named *hit = bsearch(&key, index, (size_t)count, sizeof key, cmp_named);
    return hit ? hit->id : -1;
}

static int load_vocab(sl_tokenizer *t, const char *path, sl_err *err)
{
    char *text = sl_read_text_file(path, 64u << 20, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sl_fail(err, "%s: malformed JSON (expected an object of token: id)", path);
    }
    int count = cJSON_GetArraySize(root), rc = 0;
    int16_t table[324];
    build_codepoint_table(table);
    size_t total = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) total += strlen(item->string);
    t->vocab_size = count;
    t->bytes = malloc(total + 1);
    size_t *lens = calloc((size_t)count + 1, sizeof *lens);
    char **starts = calloc((size_t)count + 1, sizeof *starts);
    t->offsets = calloc((size_t)count + 1, sizeof *t->offsets);
    if (!t->bytes || !lens || !starts || !t->offsets) rc = sl_fail(err, "%s: out of memory", path);
    size_t used = 0;
    cJSON_ArrayForEach(item, root)
    {
        if (rc != 0) break;
        double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
        if (!(v >= 0 && v < count) || v != (double)(int)v) {
            rc = sl_fail(err, "%s: token \"%s\" has id %s; ids must be 0..%d", path, item->string,
                         cJSON_IsNumber(item) ? "out of range" : "that is not a number", count - 1);
        } else if (starts[(int)v]) {
            rc = sl_fail(err, "%s: id %d is given twice", path, (int)v);
        } else if (key_to_bytes(item->string, table, t->bytes + used, &lens[(int)v]) != 0) {
            rc = sl_fail(err, "%s: token \"%s\" has a character outside GPT-2's byte alphabet", path, item->string);
        } else {
            starts[(int)v] = t->bytes + used;
            used += lens[(int)v];
        }
    }
    cJSON_Delete(root);
    /* Lay the tokens out in id order so that offsets are monotonic. */
    char *ordered = rc == 0 ? malloc(used + 1) : NULL;
    if (rc == 0 && !ordered) rc = sl_fail(err, "%s: out of memory", path);
    size_t at = 0;
    for (int i = 0; rc == 0 && i < count; i++) {
        t->offsets[i] = at;
        memcpy(ordered + at, starts[i], lens[i]);
        at += lens[i];
    }
    if (rc == 0) {
        t->offsets[count] = at;
        free(t->bytes);
        t->bytes = ordered;
    }
    free(lens);
    free(starts);
    return rc;
}

static int add_merge(sl_tokenizer *t, const named *index, const int16_t table[324], char *line, int rank,
                     const char *path, int lineno, sl_err *err)
{
    char *space = strchr(line, ' ');
    if (!space || strchr(space + 1, ' '))
        return sl_fail(err, "%s:%d: expected two tokens separated by one space", path, lineno);
    *space = '\0';
    char a[512], b[512], ab[1024];
    size_t la, lb;
    if (strlen(line) >= sizeof a || strlen(space + 1) >= sizeof b || key_to_bytes(line, table, a, &la) != 0 ||
        key_to_bytes(space + 1, table, b, &lb) != 0)
        return sl_fail(err, "%s:%d: a token has a character outside GPT-2's byte alphabet", path, lineno);
    memcpy(ab, a, la);
    memcpy(ab + la, b, lb);
    int32_t left = lookup(index, t->vocab_size, a, la), right = lookup(index, t->vocab_size, b, lb);
    int32_t merged = lookup(index, t->vocab_size, ab, la + lb);
    if (left < 0 || right < 0 || merged < 0)
        return sl_fail(err, "%s:%d: merge \"%s %s\" uses a token missing from vocab.json", path, lineno, line, space + 1);
    merge_slot *s = merge_find(t, left, right);
    if (s->pair == 0) *s = (merge_slot){((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1, rank, merged};
    return 0;
}

static int load_merges(sl_tokenizer *t, const char *path, sl_err *err)
{
    char *text = sl_read_text_file(path, 64u << 20, err);
    if (!text) return -1;
    size_t lines = 1;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    size_t size = 1;
    while (size < 2 * lines) size <<= 1;
    t->merges = calloc(size, sizeof *t->merges);
    t->merge_mask = size - 1;
    named *index = malloc((size_t)t->vocab_size * sizeof *index);
    int rc = t->merges && index ? 0 : sl_fail(err, "%s: out of memory", path);
    for (int32_t i = 0; rc == 0 && i < t->vocab_size; i++)
        index[i] = (named){t->bytes + t->offsets[i], t->offsets[i + 1] - t->offsets[i], i};
    if (rc == 0) qsort(index, (size_t)t->vocab_size, sizeof *index, cmp_named);
    int16_t table[324];
    build_codepoint_table(table);
    int rank = 0, lineno = 0;
    for (char *line = text, *next; rc == 0 && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[--n] = '\0';
        if (n == 0 || (lineno == 1 && strncmp(line, "#version", 8) == 0)) continue;
        rc = add_merge(t, index, table, line, rank++, path, lineno, err);
    }
    for (int b = 0; rc == 0 && b < 256; b++) {
        char byte = (char)b;
        if ((t->byte_token[b] = lookup(index, t->vocab_size, &byte, 1)) < 0)
            rc = sl_fail(err, "%s: vocab.json has no token for byte %d", path, b);
    }
    free(index);
    free(text);
    return rc;
}

static int compile_pattern(sl_tokenizer *t, sl_err *err)
{
    int code;
    PCRE2_SIZE offset;
    t->pattern = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &offset, NULL);
    if (!t->pattern) return sl_fail(err, "cannot compile the pre-tokenizer pattern (PCRE2 error %d)", code);
    pcre2_jit_compile(t->pattern, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if no JIT */
    t->match = pcre2_match_data_create_from_pattern(t->pattern, NULL);
    return t->match ? 0 : sl_fail(err, "out of memory");
}

sl_tokenizer *sl_tokenizer_new(const char *dir, sl_err *err)
{
    sl_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    int rc = load_vocab(t, path, err);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    if (rc == 0) rc = load_merges(t, path, err);
    if (rc == 0) rc = compile_pattern(t, err);
    if (rc != 0) sl_tokenizer_destroy(&t);
    return t;
}

sl_tokenizer *sl_tokenizer_for_model(const char *model_dir, const char *fallback_dir, sl_err *err)
{
    char vocab[PATH_MAX], merges[PATH_MAX];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", model_dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", model_dir);
    bool own = access(vocab, R_OK) == 0 && access(merges, R_OK) == 0;
    return sl_tokenizer_new(own ? model_dir : fallback_dir, err);
}

void sl_tokenizer_destroy(sl_tokenizer **self)
{
    if (!self || !*self) return;
    sl_tokenizer *t = *self;
    pcre2_match_data_free(t->match);
    pcre2_code_free(t->pattern);
    free(t->bytes);
    free(t->offsets);
    free(t->merges);
    free(t->work);
    free(t);
    *self = NULL;
}

/* ---- encoding ---- */

static int push_ids(int32_t **ids, size_t *n, size_t *cap, const int32_t *src, size_t count, sl_err *err)
{
    if (*n + count > *cap) {
        size_t want = *cap ? *cap : 64;
        while (want < *n + count) want *= 2;
        int32_t *more = realloc(*ids, want * sizeof *more);
        if (!more) return sl_fail(err, "out of memory");
        *ids = more;
        *cap = want;
    }
    memcpy(*ids + *n, src, count * sizeof *src);
    *n += count;
    return 0;
}

/* BPE on one piece: start from its bytes' tokens, merge the lowest-ranked pair until none. */
static int encode_piece(sl_tokenizer *t, const unsigned char *piece, size_t len, int32_t **ids, size_t *n,
                        size_t *cap, sl_err *err)
{
    if (len > t->work_cap) {
        int32_t *more = realloc(t->work, len * sizeof *more);
        if (!more) return sl_fail(err, "out of memory");
        t->work = more;
        t->work_cap = len;
    }
    int32_t *sym = t->work;
    size_t count = len;
    for (size_t i = 0; i < len; i++) sym[i] = t->byte_token[piece[i]];
    while (count > 1) {
        int32_t best_rank = INT32_MAX, merged = -1;
        size_t best = 0;
        for (size_t i = 0; i + 1 < count; i++) {
            const merge_slot *s = merge_find(t, sym[i], sym[i + 1]);
            if (s->pair && s->rank < best_rank) best_rank = s->rank, best = i, merged = s->merged;
        }
        if (merged < 0) break;
        /* Every occurrence of the best pair, left to right, as GPT-2 does. */
        int32_t left = sym[best], right = sym[best + 1];
        size_t out = 0;
        for (size_t i = 0; i < count; i++) {
            if (i + 1 < count && sym[i] == left && sym[i + 1] == right) sym[out++] = merged, i++;
            else sym[out++] = sym[i];
        }
        count = out;
    }
    return push_ids(ids, n, cap, sym, count, err);
}

int sl_tokenizer_encode(sl_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap,
                        sl_err *err)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t at = 0;
    while (at < len) {
        int rc = pcre2_match(t->pattern, s, len, at, 0, t->match, NULL);
        size_t start = len, end = len;
        if (rc > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->match);
            start = ov[0];
            end = ov[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            return sl_fail(err, "pre-tokenizer failed at byte %zu (PCRE2 error %d)", at, rc);
        }
        /* Bytes the pattern skipped (invalid UTF-8) are a piece of their own. */
        if (start > at && encode_piece(t, s + at, start - at, ids, n, cap, err) != 0) return -1;
        if (end > start && encode_piece(t, s + start, end - start, ids, n, cap, err) != 0) return -1;
        if (end == start && start < len) return sl_fail(err, "pre-tokenizer matched nothing at byte %zu", start);
        at = end;
    }
    return 0;
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
        sl_fail(err, "out of memory");
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
