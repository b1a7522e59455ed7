/* fuzz_tokenizer.c — libFuzzer harness: any input must encode, decode back to itself, and stream
 * back to itself through sl_utf8_stream; abort() on any mismatch.
 *
 * `make fuzz` runs it with the other harnesses (FUZZ_SECONDS each). By hand, from the project
 * root (libFuzzer comes with clang; on Debian: libclang-rt-14-dev):
 *
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Ilib \
 *       $(pkg-config --cflags libcjson libpcre2-8) tests/fuzz_tokenizer.c lib/tokenizer.c \
 *       lib/utf8.c lib/fileio.c lib/err.c $(pkg-config --libs libcjson libpcre2-8) -o build/fuzz_tokenizer
 *   mkdir -p build/fuzz-corpus
 *   build/fuzz_tokenizer -max_total_time=60 -max_len=4096 build/fuzz-corpus
 *
 * The vocab is $SL_VOCAB, else models/gpt2-vocab. One tokenizer serves every input, so its
 * piece cache carries over from one input to the next, as in a long-running program. */
#include "tokenizer.h"
#include "utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sl_tokenizer *tokenizer;

static void close_tokenizer(void) { sl_tokenizer_destroy(&tokenizer); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("SL_VOCAB");
    sl_err err;
    tokenizer = sl_tokenizer_new(dir && *dir ? dir : "models/gpt2-vocab", &err);
    if (!tokenizer) {
        fprintf(stderr, "fuzz_tokenizer: %s (set SL_VOCAB to the vocab directory)\n", err.msg);
        exit(1);
    }
    atexit(close_tokenizer);
    return 0;
}

/* Checks that the streamed bytes of the ids are the input again. */
static void check_stream(const int32_t *ids, size_t n, const uint8_t *data, size_t size)
{
    sl_utf8_stream stream = {0};
    char chunk[4096];
    size_t at = 0, len;
    for (size_t i = 0; i < n; i++) {
        const char *bytes = sl_tokenizer_token(tokenizer, ids[i], &len);
        if (!bytes || len + 3 > sizeof chunk) abort();
        size_t got = sl_utf8_stream_feed(&stream, bytes, len, chunk);
        if (at + got > size || memcmp(chunk, data + at, got) != 0) abort();
        at += got;
    }
    at += sl_utf8_stream_flush(&stream, chunk);
    if (at != size) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int32_t *ids = NULL;
    size_t n = 0, cap = 0, len = 0;
    sl_err err;
    if (sl_tokenizer_encode(tokenizer, (const char *)data, size, &ids, &n, &cap, &err) != 0) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        abort();
    }
    char *back = sl_tokenizer_decode(tokenizer, ids, n, &len, &err);
    if (!back || len != size || memcmp(back, data, size) != 0) {
        fprintf(stderr, "round trip failed: %zu bytes in, %zu out\n", size, len);
        abort();
    }
    check_stream(ids, n, data, size);
    free(back);
    free(ids);
    return 0;
}
