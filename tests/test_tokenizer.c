/* test_tokenizer.c — GPT-2 BPE against the 28 reference cases of ../shared/fixtures/tokenizer.json
 * (made with HF tokenizers and tiktoken), round trips of arbitrary bytes, and load errors. */
#include "check.h"
#include "fileio.h"
#include "rng.h"
#include "tokenizer.h"

#include <cJSON.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

static void vocab_dir(char *out, size_t size)
{
    const char *env = getenv("SL_VOCAB");
    if (env && *env) snprintf(out, size, "%s", env);
    else snprintf(out, size, "%s/../gpt2-vocab", check_fixtures());
}

static void test_reference_cases(sl_tokenizer *tok)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", check_fixtures());
    sl_err err;
    char *text = sl_read_text_file(path, 1 << 20, &err);
    if (!CHECK(text != NULL, "%s", err.msg)) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases"))
    {
        const char *input = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        int rc = sl_tokenizer_encode(tok, input, strlen(input), &ids, &n, &cap, &err);
        bool same = rc == 0 && n == (size_t)cJSON_GetArraySize(want);
        for (size_t i = 0; same && i < n; i++) same = ids[i] == cJSON_GetArrayItem(want, (int)i)->valueint;
        CHECK(same, "case %d \"%.40s\": encode differs from the reference (%zu ids, want %d)", cases, input, n,
              cJSON_GetArraySize(want));
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "roundtrip"))) {
            size_t len;
            char *back = sl_tokenizer_decode(tok, ids, n, &len, &err);
            CHECK(back && len == strlen(input) && memcmp(back, input, len) == 0, "case %d: decode(encode) != text", cases);
            free(back);
        }
        free(ids);
        cases++;
    }
    CHECK(cases == 28, "tokenizer.json has %d cases, expected 28", cases);
    cJSON_Delete(root);
}

static void test_byte_roundtrips(sl_tokenizer *tok)
{
    sl_rng rng;
    sl_rng_seed(&rng, 7);
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        unsigned char buf[200];
        size_t len = sl_rng_below(&rng, sizeof buf) + 1;
        for (size_t i = 0; i < len; i++) {
            uint64_t r = sl_rng_next(&rng);
            /* Mix ASCII words, spaces, UTF-8 lead/continuation bytes and arbitrary bytes. */
            buf[i] = r % 4 == 0 ? (unsigned char)(r >> 8) : r % 4 == 1 ? ' ' : r % 4 == 2 ? (unsigned char)('a' + (r >> 8) % 26)
                                                                                  : (unsigned char)(0x80 | (r >> 8) % 0x50);
        }
        int32_t *ids = NULL;
        size_t n = 0, cap = 0, out_len = 0;
        sl_err err;
        char *back = sl_tokenizer_encode(tok, (const char *)buf, len, &ids, &n, &cap, &err) == 0
                         ? sl_tokenizer_decode(tok, ids, n, &out_len, &err)
                         : NULL;
        bad += !back || out_len != len || memcmp(back, buf, len) != 0;
        free(back);
        free(ids);
    }
    CHECK(bad == 0, "%d of 300 random byte strings (invalid UTF-8 included) did not round-trip", bad);
    const char nul[] = "a\0b";
    int32_t *ids = NULL;
    size_t n = 0, cap = 0, len;
    sl_err err;
    sl_tokenizer_encode(tok, nul, 3, &ids, &n, &cap, &err);
    char *back = sl_tokenizer_decode(tok, ids, n, &len, &err);
    CHECK(back && len == 3 && memcmp(back, nul, 3) == 0, "a NUL byte round-trips");
    free(back);
    free(ids);
}

static void test_errors(sl_tokenizer *tok)
{
    sl_err err;
    int32_t bad[2] = {15496, 50257};
    CHECK(!sl_tokenizer_decode(tok, bad, 2, NULL, &err) && strstr(err.msg, "50257") && strstr(err.msg, "position 1"),
          "out-of-range id: %s", err.msg);
    size_t len;
    CHECK(!sl_tokenizer_token(tok, -1, &len), "negative id has no bytes");
    CHECK(sl_tokenizer_vocab_size(tok) == 50257, "vocab size %d", sl_tokenizer_vocab_size(tok));

    char dir[] = "/tmp/sl-test-tok-XXXXXX", path[PATH_MAX];
    if (!mkdtemp(dir)) return;
    CHECK(!sl_tokenizer_new(dir, &err) && strstr(err.msg, "vocab.json") && strstr(err.msg, dir), "missing vocab: %s",
          err.msg);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    sl_write_text_file(path, "{\"a\": 0, \"b\": ", &err);
    CHECK(!sl_tokenizer_new(dir, &err) && strstr(err.msg, "malformed JSON"), "malformed vocab: %s", err.msg);
    sl_write_text_file(path, "{\"a\": 0, \"b\": 7}", &err);
    CHECK(!sl_tokenizer_new(dir, &err) && strstr(err.msg, "\"b\""), "id out of range: %s", err.msg);
    sl_write_text_file(path, "{\"a\": 0, \"b\": 1, \"ab\": 2}", &err);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    sl_write_text_file(path, "#version: 0.2\na b\na c\n", &err);
    CHECK(!sl_tokenizer_new(dir, &err) && strstr(err.msg, "merges.txt:3") && strstr(err.msg, "a c"),
          "merge with unknown token names the line: %s", err.msg);
    sl_write_text_file(path, "#version: 0.2\na b\n", &err);
    CHECK(!sl_tokenizer_new(dir, &err) && strstr(err.msg, "no token for byte"), "missing byte tokens: %s", err.msg);
    char cmd[PATH_MAX];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    char dir[PATH_MAX];
    vocab_dir(dir, sizeof dir);
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_new(dir, &err);
    if (CHECK(tok != NULL, "load %s: %s", dir, err.msg)) {
        test_reference_cases(tok);
        test_byte_roundtrips(tok);
        test_errors(tok);
    }
    sl_tokenizer_destroy(&tok);
    return check_done();
}
