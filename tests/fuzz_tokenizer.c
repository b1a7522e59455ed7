/* fuzz_tokenizer.c — libFuzzer harness for the tokenizer (`make fuzz`): every byte string
 * encodes, and decodes back to itself. Uses models/gpt2-vocab (run from the project root). */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sl_tokenizer *tok;
    sl_err err;
    if (!tok && !(tok = sl_tokenizer_new("models/gpt2-vocab", &err))) abort();
    int32_t *ids = NULL;
    size_t n = 0, cap = 0, len = 0;
    if (sl_tokenizer_encode(tok, (const char *)data, size, &ids, &n, &cap, &err) != 0) abort();
    char *back = sl_tokenizer_decode(tok, ids, n, &len, &err);
    if (!back || len != size || memcmp(back, data, size) != 0) abort();
    free(back);
    free(ids);
    return 0;
}
