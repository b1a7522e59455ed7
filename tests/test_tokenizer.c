/* test_tokenizer.c — GPT-2 BPE against the 28 reference cases of shared/fixtures/tokenizer.json
 * (made with HF tokenizers and tiktoken), merge order on a small made-up vocab, round trips of
 * arbitrary bytes, long pieces, token by token through the streaming UTF-8 helper, load and
 * decode errors, and HF's tokenizer.json (the same cases; what is not GPT-2's kind refused). */
#include "check.h"
#include "gpt2_alphabet.h"
#include "fileio.h"
#include "rng.h"
#include "tokenizer.h"
#include "utf8.h"

#include <cJSON.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

static void vocab_dir(char *out, size_t size)
{
    const char *env = getenv("SL_VOCAB");
    if (env && *env)
        snprintf(out, size, "%s", env);
    else
        snprintf(out, size, "%s/../gpt2-vocab", check_fixtures());
}

typedef struct ids {
    int32_t *v;
    size_t n, cap;
} ids;

/* Encodes then decodes; true when the bytes come back unchanged. */
static bool round_trips(sl_tokenizer *tok, const char *text, size_t len)
{
    ids out = {0};
    sl_err err;
    size_t back_len = 0;
    char *back = sl_tokenizer_encode(tok, text, len, &out.v, &out.n, &out.cap, &err) == 0
                     ? sl_tokenizer_decode(tok, out.v, out.n, &back_len, &err)
                     : NULL;
    bool same = back && back_len == len && memcmp(back, text, len) == 0;
    free(back);
    free(out.v);
    return same;
}

static bool same_ids(const ids *got, const int32_t *want, size_t n)
{
    return got->n == n && memcmp(got->v, want, n * sizeof *want) == 0;
}

static size_t utf8_length(unsigned char lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    return lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF); written apart from
 * lib/'s so that the test does not check the code against itself. */
static bool is_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0, len; i < n; i += len) {
        unsigned char c = s[i], d = i + 1 < n ? s[i + 1] : 0;
        len = utf8_length(c);
        if (len == 0 || i + len > n) return false;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) return false;
        if ((c == 0xe0 && d < 0xa0) || (c == 0xed && d > 0x9f) || (c == 0xf0 && d < 0x90) || (c == 0xf4 && d > 0x8f))
            return false;
    }
    return true;
}

/* ---- the reference cases ---- */

typedef struct reference_case {
    const char *text;
    const cJSON *ids;
    bool roundtrip;
} reference_case;

static cJSON *load_reference_cases(void)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", check_fixtures());
    sl_err err;
    char *text = sl_read_text_file(path, 1 << 20, &err);
    if (!CHECK(text != NULL, "%s", err.msg)) return NULL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(root, "cases")), "%s: no \"cases\" array", path);
    return root;
}

static reference_case case_at(const cJSON *root, int i)
{
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "cases"), i);
    return (reference_case){cJSON_GetStringValue(cJSON_GetObjectItem(c, "text")), cJSON_GetObjectItem(c, "ids"),
                            cJSON_IsTrue(cJSON_GetObjectItem(c, "roundtrip"))};
}

static bool ids_equal_json(const ids *got, const cJSON *want)
{
    if (got->n != (size_t)cJSON_GetArraySize(want)) return false;
    for (size_t i = 0; i < got->n; i++)
        if (got->v[i] != cJSON_GetArrayItem(want, (int)i)->valueint) return false;
    return true;
}

/* Every case encodes to the reference ids and, where the reference says so, decodes back. */
static void test_reference_cases(sl_tokenizer *tok, const cJSON *root, const char *when)
{
    int count = cJSON_GetArraySize(cJSON_GetObjectItem(root, "cases"));
    CHECK(count == 28, "tokenizer.json has %d cases, expected 28", count);
    for (int i = 0; i < count; i++) {
        reference_case c = case_at(root, i);
        ids got = {0};
        sl_err err;
        int rc = sl_tokenizer_encode(tok, c.text, strlen(c.text), &got.v, &got.n, &got.cap, &err);
        CHECK(rc == 0 && ids_equal_json(&got, c.ids), "%s, case %d \"%.40s\": encode gives %zu ids, reference %d", when,
              i, c.text, got.n, cJSON_GetArraySize(c.ids));
        if (c.roundtrip) {
            size_t len = 0;
            char *back = sl_tokenizer_decode(tok, got.v, got.n, &len, &err);
            CHECK(back && len == strlen(c.text) && memcmp(back, c.text, len) == 0 && back[len] == '\0',
                  "%s, case %d: decode(encode(text)) != text", when, i);
            free(back);
        }
        free(got.v);
    }
}

/* encode appends: all cases into one array equals their ids one after the other. */
static void test_encode_appends(sl_tokenizer *tok, const cJSON *root)
{
    ids all = {0};
    sl_err err;
    bool ok = true;
    size_t expected = 0;
    for (int i = 0; ok && i < 28; i++) {
        reference_case c = case_at(root, i);
        size_t before = all.n;
        ok = sl_tokenizer_encode(tok, c.text, strlen(c.text), &all.v, &all.n, &all.cap, &err) == 0;
        for (int k = 0; ok && k < cJSON_GetArraySize(c.ids); k++)
            ok = all.v[before + (size_t)k] == cJSON_GetArrayItem(c.ids, k)->valueint;
        expected += (size_t)cJSON_GetArraySize(c.ids);
    }
    CHECK(ok && all.n == expected && all.cap >= all.n, "encode appends to the caller's array (%zu ids, want %zu)",
          all.n, expected);
    free(all.v);
}

/* ---- a small made-up vocab, to pin down merge order ---- */

/* Writes dir/vocab.json: the 256 byte tokens (id = byte) then the extra tokens (ids 256..). */
static void write_vocab(const char *dir, const char *const *extra, int n_extra)
{
    cJSON *vocab = cJSON_CreateObject();
    for (int b = 0; b < 256; b++) {
        char key[3];
        alphabet_char(b, key);
        cJSON_AddNumberToObject(vocab, key, b);
    }
    for (int i = 0; i < n_extra; i++)
        cJSON_AddNumberToObject(vocab, extra[i], 256 + i);
    char *json = cJSON_PrintUnformatted(vocab);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    sl_err err;
    if (sl_write_text_file(path, json, &err) != 0) fprintf(stderr, "%s\n", err.msg);
    free(json);
    cJSON_Delete(vocab);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sl_err err;
    if (sl_write_text_file(path, text, &err) != 0) fprintf(stderr, "%s\n", err.msg);
}

static void check_encodes(sl_tokenizer *tok, const char *text, const int32_t *want, size_t n)
{
    ids got = {0};
    sl_err err;
    int rc = sl_tokenizer_encode(tok, text, strlen(text), &got.v, &got.n, &got.cap, &err);
    char shown[256] = "";
    for (size_t i = 0, at = 0; i < got.n && at < sizeof shown - 12; i++)
        at += (size_t)snprintf(shown + at, sizeof shown - at, " %d", got.v[i]);
    CHECK(rc == 0 && same_ids(&got, want, n), "made-up vocab: \"%s\" gives%s (%zu ids, want %zu)", text, shown, got.n,
          n);
    free(got.v);
}

/* Lower rank first, whatever the position; leftmost first among equal ranks. */
static void test_merge_order(const char *dir)
{
    static const char *const extra[] = {"bc", "ab", "aa", "aaaa", "Ġx", "Ġxx"};
    write_vocab(dir, extra, 6);
    write_file(dir, "merges.txt", "#version: 0.2\nb c\na b\na a\naa aa\nĠ x\nĠx x\n");
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_new(dir, &err);
    if (!CHECK(tok != NULL, "made-up vocab: %s", err.msg)) return;
    CHECK(sl_tokenizer_vocab_size(tok) == 262, "made-up vocab size %d", sl_tokenizer_vocab_size(tok));
    check_encodes(tok, "abc", (const int32_t[]){'a', 256}, 2);        /* b c before a b */
    check_encodes(tok, "aaaaa", (const int32_t[]){259, 'a'}, 2);      /* aa aa | a */
    check_encodes(tok, "aaa", (const int32_t[]){258, 'a'}, 2);        /* leftmost pair first */
    check_encodes(tok, "ab xx", (const int32_t[]){257, 261}, 2);      /* the space joins the word */
    check_encodes(tok, "x  xx", (const int32_t[]){'x', ' ', 261}, 3); /* \s+(?!\S) */
    sl_tokenizer_destroy(&tok);
    CHECK(tok == NULL, "destroy nulls the pointer");
}

/* ---- arbitrary bytes ---- */

/* Random strings that mix ASCII words, spaces, UTF-8 lead and continuation bytes, any byte. */
static size_t random_text(sl_rng *rng, unsigned char *buf, size_t max)
{
    size_t len = sl_rng_below(rng, max) + 1;
    for (size_t i = 0; i < len; i++) {
        uint64_t r = sl_rng_next(rng);
        switch (r % 5) {
        case 0:
            buf[i] = (unsigned char)(r >> 8);
            break;
        case 1:
            buf[i] = ' ';
            break;
        case 2:
            buf[i] = (unsigned char)('a' + (r >> 8) % 26);
            break;
        case 3:
            buf[i] = (unsigned char)(0x80 | (r >> 8) % 0x40);
            break;
        default:
            buf[i] = (unsigned char)(0xc2 + (r >> 8) % 0x33);
            break;
        }
    }
    return len;
}

static void test_byte_round_trips(sl_tokenizer *tok)
{
    sl_rng rng;
    sl_rng_seed(&rng, 7);
    int failed = 0, first_failed = -1;
    for (int k = 0; k < 2000; k++) {
        unsigned char buf[300];
        size_t len = random_text(&rng, buf, sizeof buf);
        if (!round_trips(tok, (const char *)buf, len)) failed++, first_failed = k;
    }
    CHECK(failed == 0, "%d of 2000 random byte strings did not round-trip (e.g. #%d)", failed, first_failed);
    static const char *const odd[] = {"\xff",         "\xe2\x82",     "a\xe2\x82",         "\xe2\x82 b",
                                      "\xc0\xaf",     "\xed\xa0\x80", "\xf4\x90\x80\x80",  " \x80\x80 \x80",
                                      "\xf0\x9f\x99", "caf\xc3",      "x\xe3\x81\x93\x80y"};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++)
        CHECK(round_trips(tok, odd[i], strlen(odd[i])), "invalid UTF-8 #%zu round-trips", i);
    CHECK(round_trips(tok, "a\0b \0\0 c", 8), "NUL bytes round-trip");
    CHECK(round_trips(tok, "", 0), "empty text round-trips");
}

/* A character cut in half encodes as the pieces GPT-2 has for its bytes. */
static void test_truncated_character(sl_tokenizer *tok)
{
    ids whole = {0}, cut = {0};
    sl_err err;
    sl_tokenizer_encode(tok, "\xe2\x80\x99", 3, &whole.v, &whole.n, &whole.cap, &err); /* ’ */
    sl_tokenizer_encode(tok, "\xe2\x80", 2, &cut.v, &cut.n, &cut.cap, &err);
    size_t len = 0;
    const char *first = cut.n == 1 ? sl_tokenizer_token(tok, cut.v[0], &len) : NULL;
    CHECK(first && len == 2 && memcmp(first, "\xe2\x80", 2) == 0,
          "the first two bytes of U+2019 are one token (%zu ids)", cut.n);
    CHECK(whole.n == 2 && cut.n == 1 && whole.v[0] == cut.v[0],
          "U+2019 is that token and one for its last byte (%zu ids)", whole.n);
    free(whole.v);
    free(cut.v);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + 1e-9 * (double)(now.tv_nsec - start->tv_nsec);
}

/* One piece of 300,000 bytes: quadratic BPE would take minutes, this must take well under a
 * second (5 s allows for valgrind and sanitizers). */
static void test_long_pieces(sl_tokenizer *tok)
{
    size_t len = 300000;
    char *text = malloc(len);
    if (!text) return;
    static const char fill[] = {'a', '7', ' ', '-', '\n'};
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(text, fill[f], len);
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        bool ok = round_trips(tok, text, len);
        double secs = seconds_since(&start);
        CHECK(ok && secs < 5, "300 KB of '%c': round trip %s in %.2f s", fill[f] == '\n' ? 'n' : fill[f],
              ok ? "ok" : "FAILED", secs);
    }
    free(text);
}

/* More distinct words than the piece cache holds, so that it starts over at least once. */
static void test_cache_turnover(sl_tokenizer *tok)
{
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    if (!text) return;
    for (int i = 0; i < 60000 && len + 16 < cap; i++)
        len += (size_t)snprintf(text + len, cap - len, " w%dq", i);
    CHECK(round_trips(tok, text, len), "60000 distinct words round-trip");
    free(text);
}

/* ---- streaming ---- */

/* Feeds ids one by one; true when the output equals decode and every chunk is whole UTF-8
 * (when the text is). */
static bool streams_whole_characters(sl_tokenizer *tok, const int32_t *v, size_t n, const char *text, size_t text_len,
                                     bool text_is_utf8)
{
    sl_utf8_stream stream = {0};
    char *out = malloc(text_len + 4), chunk[1200];
    size_t at = 0, len;
    bool whole = true;
    for (size_t i = 0; out && i < n; i++) {
        const char *bytes = sl_tokenizer_token(tok, v[i], &len);
        if (!bytes || len + 3 > sizeof chunk || at + len + 3 > text_len + 4) {
            free(out);
            return false;
        }
        size_t got = sl_utf8_stream_feed(&stream, bytes, len, chunk);
        whole = whole && (!text_is_utf8 || is_utf8((unsigned char *)chunk, got));
        memcpy(out + at, chunk, got);
        at += got;
    }
    if (out) at += sl_utf8_stream_flush(&stream, out + at);
    bool same = out && at == text_len && memcmp(out, text, text_len) == 0 && stream.n_held == 0;
    free(out);
    return same && whole;
}

static void test_stream(sl_tokenizer *tok, const cJSON *root)
{
    for (int i = 0; i < 28; i++) {
        reference_case c = case_at(root, i);
        ids got = {0};
        sl_err err;
        sl_tokenizer_encode(tok, c.text, strlen(c.text), &got.v, &got.n, &got.cap, &err);
        CHECK(streams_whole_characters(tok, got.v, got.n, c.text, strlen(c.text), true),
              "case %d streams as whole characters", i);
        free(got.v);
    }
    sl_rng rng;
    sl_rng_seed(&rng, 11);
    int failed = 0;
    for (int k = 0; k < 500; k++) {
        unsigned char buf[200];
        size_t len = random_text(&rng, buf, sizeof buf);
        ids got = {0};
        sl_err err;
        sl_tokenizer_encode(tok, (char *)buf, len, &got.v, &got.n, &got.cap, &err);
        bool utf8 = is_utf8(buf, len);
        failed += !streams_whole_characters(tok, got.v, got.n, (char *)buf, len, utf8);
        free(got.v);
    }
    CHECK(failed == 0, "%d of 500 random byte strings did not stream back unchanged", failed);
}

/* ---- errors ---- */

static void test_decode_errors(sl_tokenizer *tok)
{
    sl_err err;
    int32_t bad[2] = {15496, 50257};
    CHECK(!sl_tokenizer_decode(tok, bad, 2, NULL, &err) && strstr(err.msg, "50257") && strstr(err.msg, "position 1"),
          "out-of-range id: %s", err.msg);
    int32_t negative = -3;
    CHECK(!sl_tokenizer_decode(tok, &negative, 1, NULL, &err) && strstr(err.msg, "-3"), "negative id: %s", err.msg);
    size_t len = 99;
    CHECK(!sl_tokenizer_token(tok, -1, &len) && !sl_tokenizer_token(tok, 50257, &len),
          "ids outside the vocab have no bytes");
    const char *eot = sl_tokenizer_token(tok, 50256, &len);
    CHECK(eot && len == 13 && memcmp(eot, "<|endoftext|>", 13) == 0, "id 50256 is <|endoftext|>");
    char *empty = sl_tokenizer_decode(tok, NULL, 0, &len, &err);
    CHECK(empty && len == 0 && empty[0] == '\0', "decoding no ids gives an empty string");
    free(empty);
    CHECK(sl_tokenizer_vocab_size(tok) == 50257, "vocab size %d", sl_tokenizer_vocab_size(tok));
}

/* Loading dir fails with a message that contains every one of the given strings. */
static void check_load_fails(const char *dir, const char *what, const char *want1, const char *want2)
{
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_new(dir, &err);
    CHECK(!tok && strstr(err.msg, want1) && (!want2 || strstr(err.msg, want2)), "%s: \"%s\"", what, err.msg);
    sl_tokenizer_destroy(&tok);
}

static void test_load_errors(const char *dir)
{
    check_load_fails(dir, "missing vocab", "vocab.json", dir);
    write_file(dir, "vocab.json", "{\"a\": 0, \"b\": ");
    check_load_fails(dir, "truncated vocab", "vocab.json", "malformed JSON");
    write_file(dir, "vocab.json", "[1, 2]");
    check_load_fails(dir, "vocab not an object", "vocab.json", "malformed JSON");
    write_file(dir, "vocab.json", "{\"a\": 0, \"b\": 7}");
    check_load_fails(dir, "id out of range", "\"b\"", "out of range");
    write_file(dir, "vocab.json", "{\"a\": 0, \"b\": \"1\"}");
    check_load_fails(dir, "id not a number", "\"b\"", "not a number");
    write_file(dir, "vocab.json", "{\"a\": 0, \"b\": 0}");
    check_load_fails(dir, "repeated id", "both have id 0", NULL);
    write_file(dir, "vocab.json", "{\"a\": 0, \"\\u00e9\\u3042\": 1}");
    check_load_fails(dir, "character outside the alphabet", "id 1", "alphabet");
    write_file(dir, "vocab.json", "{\"a\": 0, \"b\": 1}");
    check_load_fails(dir, "missing byte tokens", "no token for byte 0", "vocab.json");

    static const char *const extra[] = {"ab"};
    write_vocab(dir, extra, 1);
    check_load_fails(dir, "missing merges", "merges.txt", "cannot open");
    write_file(dir, "merges.txt", "#version: 0.2\na b\na c\n");
    check_load_fails(dir, "merge of a missing token", "merges.txt:3", "a c");
    write_file(dir, "merges.txt", "#version: 0.2\na b\nab\n");
    check_load_fails(dir, "merge line without a space", "merges.txt:3", "two tokens");
    write_file(dir, "merges.txt", "a b c\n");
    check_load_fails(dir, "merge line with two spaces", "merges.txt:1", "two tokens");
}

/* for_model takes the model's own vocab when it has one, else the fallback. */
static void test_for_model(const char *own_dir, const char *gpt2_dir)
{
    static const char *const extra[] = {"ab"};
    write_vocab(own_dir, extra, 1);
    write_file(own_dir, "merges.txt", "a b\n");
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_for_model(own_dir, gpt2_dir, NULL, &err);
    CHECK(tok && sl_tokenizer_vocab_size(tok) == 257, "the model's own vocab is used");
    sl_tokenizer_destroy(&tok);
    tok = sl_tokenizer_for_model("/nonexistent-model-dir", gpt2_dir, NULL, &err);
    CHECK(tok && sl_tokenizer_vocab_size(tok) == 50257, "without one, the fallback is used");
    sl_tokenizer_destroy(&tok);
    tok = sl_tokenizer_for_model("/nonexistent-model-dir", "/nonexistent-vocab", NULL, &err);
    CHECK(!tok && strstr(err.msg, "/nonexistent-vocab/vocab.json"), "a missing fallback names its file: %s", err.msg);
    sl_tokenizer_destroy(&tok); /* *self == NULL is fine */
    CHECK(tok == NULL, "destroying a destroyed tokenizer again leaves NULL");
}

/* ---- tokenizer.json ---- */

/* An HF tokenizer.json as transformers' GPT2TokenizerFast saves it, from vocab.json and
 * merges.txt in from_dir: merges as "A B" strings, or (pairs) as ["A", "B"] the way tokenizers
 * 0.20 writes them. NULL when the files cannot be read. */
static cJSON *hf_tokenizer_json(const char *from_dir, bool pairs)
{
    char path[PATH_MAX + 16];
    sl_err err;
    snprintf(path, sizeof path, "%s/vocab.json", from_dir);
    char *vocab_text = sl_read_text_file(path, 64 << 20, &err);
    snprintf(path, sizeof path, "%s/merges.txt", from_dir);
    char *merges_text = sl_read_text_file(path, 64 << 20, &err);
    cJSON *vocab = vocab_text ? cJSON_Parse(vocab_text) : NULL;
    if (!CHECK(vocab && merges_text, "read the vocab to write a tokenizer.json from: %s", err.msg)) {
        free(vocab_text), free(merges_text), cJSON_Delete(vocab);
        return NULL;
    }
    cJSON *merges = cJSON_CreateArray();
    for (char *line = strtok(merges_text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#version", 8) == 0) continue;
        char *space = strchr(line, ' ');
        if (!pairs || !space) {
            cJSON_AddItemToArray(merges, cJSON_CreateString(line));
            continue;
        }
        *space = '\0';
        const char *both[2] = {line, space + 1};
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(both, 2));
    }
    const char *text = "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,"
                       " \"added_tokens\": [{\"id\": 50256, \"content\": \"<|endoftext|>\", \"single_word\": false,"
                       "   \"lstrip\": false, \"rstrip\": false, \"normalized\": true, \"special\": true}],"
                       " \"normalizer\": null,"
                       " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false,"
                       "   \"trim_offsets\": true, \"use_regex\": true},"
                       " \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true,"
                       "   \"trim_offsets\": false, \"use_regex\": true},"
                       " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true,"
                       "   \"use_regex\": true},"
                       " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null,"
                       "   \"continuing_subword_prefix\": \"\", \"end_of_word_suffix\": \"\", \"fuse_unk\": false,"
                       "   \"byte_fallback\": false}}";
    cJSON *root = cJSON_Parse(text);
    cJSON *model = cJSON_GetObjectItem(root, "model");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    free(vocab_text);
    free(merges_text);
    return root;
}

static void write_json(const char *dir, const char *name, const cJSON *root)
{
    char *text = cJSON_PrintUnformatted(root);
    write_file(dir, name, text);
    free(text);
}

/* A directory holding only tokenizer.json encodes the 28 reference cases exactly. */
static void test_hf_reference(const char *dir, const char *gpt2_dir, const cJSON *cases)
{
    for (int pairs = 0; pairs < 2; pairs++) {
        cJSON *root = hf_tokenizer_json(gpt2_dir, pairs);
        if (!root) return;
        write_json(dir, "tokenizer.json", root);
        cJSON_Delete(root);
        CHECK(sl_tokenizer_dir_has_vocab(dir), "a directory with tokenizer.json has a vocab");
        bool fell_back = true;
        sl_err err;
        sl_tokenizer *tok = sl_tokenizer_for_model(dir, "/nonexistent-vocab", &fell_back, &err);
        if (CHECK(tok && !fell_back, "tokenizer.json (merges as %s) is the model's own vocab: %s",
                  pairs ? "pairs" : "strings", tok ? "" : err.msg)) {
            CHECK(sl_tokenizer_vocab_size(tok) == 50257, "vocab size %d", sl_tokenizer_vocab_size(tok));
            test_reference_cases(tok, cases, pairs ? "tokenizer.json, merges as pairs" : "tokenizer.json");
        }
        sl_tokenizer_destroy(&tok);
    }
}

/* A small tokenizer.json (the 256 byte tokens, "ab", merge "a b") with one change, which must be
 * refused with a message holding want. */
static void check_hf_refused(const char *dir, const char *what, const char *path, const char *json, const char *want)
{
    static const char base[] = "{\"added_tokens\": [], \"normalizer\": null,"
                               " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
                               " \"decoder\": {\"type\": \"ByteLevel\"},"
                               " \"model\": {\"type\": \"BPE\", \"merges\": [\"a b\"]}}";
    cJSON *root = cJSON_Parse(base), *vocab = cJSON_CreateObject();
    for (int b = 0; b < 256; b++) {
        char key[3];
        alphabet_char(b, key);
        cJSON_AddNumberToObject(vocab, key, b);
    }
    cJSON_AddNumberToObject(vocab, "ab", 256);
    cJSON_AddItemToObject(cJSON_GetObjectItem(root, "model"), "vocab", vocab);
    if (path) { /* "model.merges": replace model's member merges; "normalizer": root's member */
        const char *dot = strchr(path, '.');
        cJSON *parent = dot ? cJSON_GetObjectItem(root, "model") : root;
        cJSON_DeleteItemFromObject(parent, dot ? dot + 1 : path);
        cJSON_AddItemToObject(parent, dot ? dot + 1 : path, cJSON_Parse(json));
    }
    write_json(dir, "tokenizer.json", root);
    cJSON_Delete(root);
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_new(dir, &err);
    if (!want)
        CHECK(tok != NULL && sl_tokenizer_vocab_size(tok) == 257, "%s: read (%s)", what, tok ? "" : err.msg);
    else
        CHECK(!tok && strstr(err.msg, "tokenizer.json") && strstr(err.msg, want), "%s: refused: \"%s\"", what, err.msg);
    sl_tokenizer_destroy(&tok);
}

static void test_hf_refusals(const char *dir)
{
    check_hf_refused(dir, "the small tokenizer.json itself", NULL, NULL, NULL);
    check_hf_refused(dir, "a WordPiece model", "model.type", "\"WordPiece\"", "model type WordPiece");
    check_hf_refused(dir, "a normalizer", "normalizer", "{\"type\": \"NFC\"}", "normalizer NFC");
    check_hf_refused(dir, "a Metaspace pre-tokenizer", "pre_tokenizer", "{\"type\": \"Metaspace\"}",
                     "pre-tokenizer Metaspace");
    check_hf_refused(dir, "no pre-tokenizer", "pre_tokenizer", "null", "pre-tokenizer none");
    check_hf_refused(dir, "a prefix space", "pre_tokenizer", "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}",
                     "add_prefix_space");
    check_hf_refused(dir, "no regex", "pre_tokenizer", "{\"type\": \"ByteLevel\", \"use_regex\": false}",
                     "without GPT-2's pattern");
    check_hf_refused(dir, "a WordPiece decoder", "decoder", "{\"type\": \"WordPiece\"}", "decoder WordPiece");
    check_hf_refused(dir, "byte fallback", "model.byte_fallback", "true", "byte_fallback");
    check_hf_refused(dir, "a subword prefix", "model.continuing_subword_prefix", "\"##\"", "subword prefix");
    check_hf_refused(dir, "an added token outside the vocab", "added_tokens",
                     "[{\"id\": 257, \"content\": \"<pad>\", \"special\": true}]", "added token \"<pad>\" (id 257)");
    check_hf_refused(dir, "an added token that is another token", "added_tokens",
                     "[{\"id\": 256, \"content\": \"<|endoftext|>\"}]", "added token \"<|endoftext|>\"");
    check_hf_refused(dir, "an added token of the vocab", "added_tokens", "[{\"id\": 256, \"content\": \"ab\"}]", NULL);
    check_hf_refused(dir, "merges as pairs", "model.merges", "[[\"a\", \"b\"]]", NULL);
    check_hf_refused(dir, "a merge without a space", "model.merges", "[\"a b\", \"ab\"]", "model.merges[1]");
    check_hf_refused(dir, "a merge of a missing token", "model.merges", "[\"a c\"]", "missing from the vocab");
    check_hf_refused(dir, "a merge that is a number", "model.merges", "[7]", "model.merges[0]");
    check_hf_refused(dir, "no merges", "model.merges", "{}", "model.merges: expected an array");
    check_hf_refused(dir, "no vocab", "model.vocab", "[]", "model.vocab");
    write_file(dir, "tokenizer.json", "{\"model\": ");
    check_load_fails(dir, "truncated tokenizer.json", "tokenizer.json", "malformed JSON");
    write_file(dir, "tokenizer.json", "{\"version\": \"1.0\"}");
    check_load_fails(dir, "tokenizer.json without a model", "tokenizer.json", "no \"model\"");
    write_vocab(dir, NULL, 0);
    check_load_fails(dir, "vocab.json beside tokenizer.json is read first", "merges.txt", NULL);
}

static void with_scratch_dir(void (*test)(const char *dir))
{
    char dir[] = "/tmp/sl-test-tok-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    test(dir);
    check_rmtree(dir);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    char dir[PATH_MAX];
    vocab_dir(dir, sizeof dir);
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_new(dir, &err);
    cJSON *root = load_reference_cases();
    if (CHECK(tok != NULL, "load %s: %s", dir, err.msg) && root) {
        if (check_selected("reference_cases")) {
            test_reference_cases(tok, root, "cold cache");
            test_reference_cases(tok, root, "warm cache");
        }
        if (check_selected("encode_appends")) test_encode_appends(tok, root);
        if (check_selected("byte_round_trips")) test_byte_round_trips(tok);
        if (check_selected("truncated_character")) test_truncated_character(tok);
        if (check_selected("long_pieces")) test_long_pieces(tok);
        if (check_selected("cache_turnover")) {
            test_cache_turnover(tok);
            test_reference_cases(tok, root, "after cache turnover");
        }
        if (check_selected("stream")) test_stream(tok, root);
        if (check_selected("decode_errors")) test_decode_errors(tok);
    }
    if (check_selected("merge_order")) with_scratch_dir(test_merge_order);
    if (check_selected("load_errors")) with_scratch_dir(test_load_errors);
    if (check_selected("tokenizer_json") && root) {
        char hf[] = "/tmp/sl-test-tok-XXXXXX";
        if (CHECK(mkdtemp(hf) != NULL, "mkdtemp")) {
            test_hf_reference(hf, dir, root);
            check_rmtree(hf);
        }
    }
    if (check_selected("tokenizer_json_refusals")) with_scratch_dir(test_hf_refusals);
    char own[] = "/tmp/sl-test-tok-XXXXXX";
    if (check_selected("for_model") && CHECK(mkdtemp(own) != NULL, "mkdtemp")) {
        test_for_model(own, dir);
        check_rmtree(own);
    }
    cJSON_Delete(root);
    sl_tokenizer_destroy(&tok);
    return check_done();
}
