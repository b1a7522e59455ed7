/* tokenizer_seeds.c — writes texts our tokenizer decodes from GPT-2 token ids, one file each into
 * a directory: the seed corpus `make fuzz` gives fuzz_tokenizer. Every byte token, runs of
 * consecutive ids across the vocabulary (words, spaces, punctuation, pieces of multi-byte
 * characters) and whole-vocabulary strides. The vocab is $SL_VOCAB, else models/gpt2-vocab (run
 * from the project root). Usage: tokenizer_seeds DIR */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>

enum { RUN = 64, RUNS = 12 };

/* Decodes n ids from first by step and writes the text as DIR/seed-NAME. */
static int write_text(const sl_tokenizer *tok, const char *dir, const char *name, int32_t first, int32_t step, int n,
                      sl_err *err)
{
    int32_t ids[RUN * 4];
    for (int i = 0; i < n; i++)
        ids[i] = (first + i * step) % sl_tokenizer_vocab_size(tok);
    size_t len;
    char *text = sl_tokenizer_decode(tok, ids, (size_t)n, &len, err), path[4096];
    if (!text) return -1;
    snprintf(path, sizeof path, "%s/seed-%s", dir, name);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(text, 1, len, f) == len ? 0 : sl_fail(err, "%s: cannot write it", path);
    if (f && fclose(f) != 0) rc = sl_fail(err, "%s: cannot write it", path);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *vocab = getenv("SL_VOCAB");
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_new(vocab && *vocab ? vocab : "models/gpt2-vocab", &err);
    int rc = tok ? write_text(tok, argv[1], "bytes", 0, 1, 256, &err) : -1;
    for (int r = 0; rc == 0 && r < RUNS; r++) {
        char name[32];
        int32_t first = (int32_t)((long)r * sl_tokenizer_vocab_size(tok) / RUNS);
        snprintf(name, sizeof name, "run-%d", (int)first);
        rc = write_text(tok, argv[1], name, first, 1, RUN, &err);
    }
    if (rc == 0) rc = write_text(tok, argv[1], "stride", 7, 211, RUN * 4, &err);
    if (rc != 0) fprintf(stderr, "tokenizer_seeds: %s\n", err.msg);
    sl_tokenizer_destroy(&tok);
    return rc == 0 ? 0 : 1;
}
