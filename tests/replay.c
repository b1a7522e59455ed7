/* replay.c — runs a libFuzzer harness (tests/fuzz_*.c) without libFuzzer: each file named on the
 * command line is one input, given to LLVMFuzzerTestOneInput after LLVMFuzzerInitialize (when the
 * harness has one). `make` links every harness with it as build/tests/fuzz_NAME, and
 * test_fuzz_seeds.sh replays the seed corpora through them (under the sanitizers with `make
 * sanitize`): a harness's own checks abort. Prints how many inputs ran. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* The whole file at path (caller frees), or NULL. */
static uint8_t *read_input(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    long len = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    uint8_t *data = len >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)len + 1) : NULL;
    if (data && fread(data, 1, (size_t)len, f) != (size_t)len) {
        free(data);
        data = NULL;
    }
    if (f) fclose(f);
    *size = data ? (size_t)len : 0;
    return data;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s INPUT...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        size_t size;
        uint8_t *data = read_input(argv[i], &size);
        if (!data) {
            fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[i]);
            return 1;
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
    }
    printf("%d inputs run\n", argc - 1);
    return 0;
}
