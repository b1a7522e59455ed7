/* fuzz_safetensors.c — libFuzzer harness for the safetensors reader (`make fuzz`): any bytes
 * must open as a valid file or be refused, never crash or read outside the mapping. */
#include "safetensors.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.safetensors", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    sl_err err;
    sl_st_file *f = sl_st_open(path, &err);
    volatile unsigned char sink = 0;
    for (size_t i = 0; f && i < sl_st_count(f); i++) {
        const sl_tensor *t = sl_st_at(f, i);
        if (t->nbytes) sink ^= ((const unsigned char *)t->data)[t->nbytes - 1]; /* must be mapped */
    }
    (void)sink;
    sl_st_close(&f);
    close(fd);
    return 0;
}
