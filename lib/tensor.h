/* tensor.h — one stored tensor as a reader sees it: name, element type, shape and its bytes
 * (borrowed from the file that holds it). */
#ifndef SL_TENSOR_H
#define SL_TENSOR_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

#define SL_MAX_DIMS 8

typedef struct sl_tensor {
    const char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    size_t numel;
    const void *data; /* into the file's mapping: valid while the file is open */
    size_t nbytes;
} sl_tensor;

#endif
