/* fuzz_torch_file.c — libFuzzer harness for whole PyTorch checkpoints, zip and legacy (`make
 * fuzz`, seeded with our writer's files by `test_torch --seeds`): any bytes open as tensors that
 * are all readable, or are refused; never a crash, a read outside what was read, or a leak. */
#include "torch_file.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.pt", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        if (fd >= 0) close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    sl_err err;
    sl_torch_file *f = sl_torch_open(path, &err);
    volatile unsigned char sink = 0;
    for (size_t i = 0; f && i < sl_torch_count(f); i++) {
        const sl_tensor *t = sl_torch_at(f, i);
        if (t->nbytes) sink ^= ((const unsigned char *)t->data)[0] ^ ((const unsigned char *)t->data)[t->nbytes - 1];
    }
    (void)sink;
    sl_torch_close(&f);
    close(fd);
    return 0;
}
