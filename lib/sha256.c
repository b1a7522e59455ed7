/* sha256.c — SHA-256 through libcrypto's EVP interface. */
#include "sha256.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct sl_sha256 {
    EVP_MD_CTX *ctx;
};

sl_sha256 *sl_sha256_new(void)
{
    sl_sha256 *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->ctx = EVP_MD_CTX_new();
    if (!self->ctx || EVP_DigestInit_ex(self->ctx, EVP_sha256(), NULL) != 1) {
        sl_sha256_destroy(&self);
        return NULL;
    }
    return self;
}

void sl_sha256_update(sl_sha256 *self, const void *data, size_t len) { EVP_DigestUpdate(self->ctx, data, len); }

void sl_sha256_final(sl_sha256 *self, uint8_t digest[32])
{
    unsigned int len = 32;
    EVP_DigestFinal_ex(self->ctx, digest, &len);
}

void sl_sha256_destroy(sl_sha256 **self)
{
    assert(self);
    if (!*self) return;
    EVP_MD_CTX_free((*self)->ctx);
    free(*self);
    *self = NULL;
}

int sl_sha256_file(const char *path, uint8_t digest[32], sl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return sl_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t size = (size_t)st.st_size;
    void *map = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (map == MAP_FAILED) return sl_fail(err, "%s: cannot map: %s", path, strerror(errno));
    if (size) madvise(map, size, MADV_SEQUENTIAL);
    sl_sha256 *hash = sl_sha256_new();
    if (!hash) {
        if (size) munmap(map, size);
        return sl_fail(err, "%s: out of memory", path);
    }
    sl_sha256_update(hash, map, size);
    sl_sha256_final(hash, digest);
    sl_sha256_destroy(&hash);
    if (size) munmap(map, size);
    return 0;
}

void sl_sha256_hex(const uint8_t digest[32], char hex[SL_SHA256_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[SL_SHA256_HEX_LEN] = '\0';
}
