/* sha256.h — SHA-256 of buffers and files (OpenSSL's libcrypto, which uses the CPU's SHA
 * instructions), and its lower-case hex spelling as stored in metadata. */
#ifndef SL_SHA256_H
#define SL_SHA256_H

#include "err.h"

#include <stddef.h>
#include <stdint.h>

#define SL_SHA256_HEX_LEN 64

typedef struct sl_sha256 sl_sha256;

/* Incremental hashing. new returns NULL when out of memory; caller owns the result. */
sl_sha256 *sl_sha256_new(void);
void sl_sha256_update(sl_sha256 *self, const void *data, size_t len);
void sl_sha256_final(sl_sha256 *self, uint8_t digest[32]);
void sl_sha256_destroy(sl_sha256 **self);

/* Hashes a whole file (read through mmap). */
int sl_sha256_file(const char *path, uint8_t digest[32], sl_err *err);

/* Writes 64 hex digits and a NUL into hex. */
void sl_sha256_hex(const uint8_t digest[32], char hex[SL_SHA256_HEX_LEN + 1]);

#endif
