/* safetensors.h — reading (mmap, every field validated) and writing safetensors files.
 *
 * Byte layout of a file:
 *
 *   offset 0        u64 little-endian N: length of the header
 *   offset 8        N bytes of UTF-8 JSON (may be padded with trailing spaces):
 *                     { "__metadata__": { "key": "value", ... },           (optional, strings only)
 *                       "<tensor name>": { "dtype": "F32" | "F16" | "BF16" | "I64" | "I32" | "I8",
 *                                          "shape": [d0, d1, ...],
 *                                          "data_offsets": [begin, end] }, ... }
 *   offset 8 + N    the data: tensor bytes, little-endian, row-major; begin/end (end exclusive)
 *                   are relative to here.
 *
 * The reader checks that N fits in the file, the JSON parses, every dtype is known, every
 * shape is non-negative and its byte size (checked against SIZE_MAX) equals end - begin,
 * every range lies inside the file, and no two ranges overlap. Errors name the file and the
 * tensor. The writer pads the header so the data starts 8-byte aligned and stores tensors
 * back to back in the order they were added. */
#ifndef SL_SAFETENSORS_H
#define SL_SAFETENSORS_H

#include "dtype.h"
#include "err.h"
#include "tensor.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sl_st_file sl_st_file;

/* Maps and validates path. Returns NULL and fills err on failure. Caller owns the result. */
sl_st_file *sl_st_open(const char *path, sl_err *err);

/* Unmaps and frees; accepts *self == NULL (self itself must not be NULL); sets *self to NULL. */
void sl_st_close(sl_st_file **self);

const char *sl_st_path(const sl_st_file *self);
size_t sl_st_count(const sl_st_file *self);
/* The i-th tensor in name order; owned by the file. */
const sl_tensor *sl_st_at(const sl_st_file *self, size_t i);
/* The tensor called name, or NULL; owned by the file. */
const sl_tensor *sl_st_find(const sl_st_file *self, const char *name);
/* A "__metadata__" value, or NULL; owned by the file. */
const char *sl_st_metadata(const sl_st_file *self, const char *key);

typedef struct sl_st_writer sl_st_writer;

/* Returns a writer with no tensors, NULL when out of memory. Caller owns the result. */
sl_st_writer *sl_st_writer_new(void);
void sl_st_writer_destroy(sl_st_writer **self);

/* Adds a tensor whose float32 values are stored as dtype (F32, F16 or BF16). The writer keeps
 * a pointer to data, not a copy: data must stay valid until sl_st_writer_write returns. */
int sl_st_writer_add_f32(sl_st_writer *self, const char *name, sl_dtype dtype, const float *data, int ndim,
                         const int64_t *shape, sl_err *err);

/* Adds a tensor whose bytes are already in dtype (any); stored as they are. The same lifetime rule
 * as sl_st_writer_add_f32. */
int sl_st_writer_add_raw(sl_st_writer *self, const char *name, sl_dtype dtype, const void *data, int ndim,
                         const int64_t *shape, sl_err *err);

/* Adds a "__metadata__" entry (both strings copied). */
int sl_st_writer_set_metadata(sl_st_writer *self, const char *key, const char *value, sl_err *err);

/* Writes the file to path.tmp, then renames it onto path, so readers never see half a file.
 * When sha256 is not NULL it receives the SHA-256 of the file's bytes. */
int sl_st_writer_write(sl_st_writer *self, const char *path, uint8_t sha256[32], sl_err *err);

#endif
