/* dtype.h — element types of stored tensors and conversion to and from the float32 we compute in. */
#ifndef SL_DTYPE_H
#define SL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sl_dtype { SL_F32, SL_F16, SL_BF16, SL_I64, SL_I32, SL_I8, SL_DTYPE_COUNT } sl_dtype;

/* Bytes per element. */
size_t sl_dtype_size(sl_dtype dt);

/* Safetensors spelling: "F32", "F16", "BF16", "I64", "I32", "I8". */
const char *sl_dtype_name(sl_dtype dt);

/* The lower-case spelling used on the command line, in metadata and on the wire: "f32", "bf16". */
const char *sl_dtype_lower(sl_dtype dt);

/* Parses a safetensors dtype name (also accepts lower case "f32", "f16", "bf16"); -1 if unknown. */
int sl_dtype_parse(const char *name, sl_dtype *out);

/* dst[i] = float(src[i]) for n elements of a float type (F32, F16, BF16). src may be unaligned. */
void sl_dtype_to_f32(float *dst, const void *src, sl_dtype src_dt, size_t n);

/* Stores n floats as dst_dt (F32, F16, BF16), rounding to nearest even. dst may be unaligned. */
void sl_dtype_from_f32(void *dst, sl_dtype dst_dt, const float *src, size_t n);

#endif
