/* fuzz_tokenizer_json.c — libFuzzer harness: any bytes as an HF tokenizer.json must load or be
 * refused with a message, never crash; a tokenizer that loads must encode and decode a text back.
 * `make fuzz` runs it with the other harnesses. */
#include "tokenizer.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/sl-fuzz-tokenizer-json-XXXXXX";
static char path[sizeof dir + 32];

static void remove_dir(void)
{
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!mkdtemp(dir)) return perror("mkdtemp"), exit(1), 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, size, fp) != size || fclose(fp) != 0) abort();
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_new(dir, &err);
    if (!tok) {
        if (!err.msg[0]) abort(); /* a refusal says why */
        return 0;
    }
    static const char text[] = "Hello world, \xe2\x82\xac 12!";
    int32_t *ids = NULL;
    size_t n = 0, cap = 0, len = 0;
    if (sl_tokenizer_encode(tok, text, sizeof text - 1, &ids, &n, &cap, &err) != 0) abort();
    char *back = sl_tokenizer_decode(tok, ids, n, &len, &err);
    if (!back || len != sizeof text - 1 || memcmp(back, text, len) != 0) abort();
    free(back);
    free(ids);
    sl_tokenizer_destroy(&tok);
    return 0;
}
