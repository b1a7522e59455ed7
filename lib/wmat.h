/* wmat.h — weight matrices in the formats the kernels compute on directly (F32, F16, BF16, Q8_0):
 * their byte layout, their sizes, and conversion from and back to float32.
 *
 * A linear layer computes out (OC) = x (C) @ W + b. The kernels read W in one of two layouts:
 *
 *   SL_WL_CONV1D  (C,OC) row-major: row c holds the OC weights multiplied by x[c]. HF's GPT-2
 *                 files store every block matrix this way (Conv1D), and training updates it in
 *                 place, so F32 matrices stay in it, mapped from the file. F32 only.
 *   SL_WL_ROWS    (OC,C) row-major: row o holds the C weights of output o, contiguous (PyTorch's
 *                 nn.Linear layout; GPT-2's LM head, wte (V,C), is already in it). Every F16,
 *                 BF16 and Q8_0 matrix is stored in it: one output is one dot product over one
 *                 contiguous row, so a thread streams its share of the matrix front to back and
 *                 a Q8_0 block's 32 weights meet 32 consecutive inputs under one scale.
 *
 * Element formats (little-endian):
 *   F32   IEEE binary32.
 *   F16   IEEE binary16, rounded to nearest even from F32 (beyond ±65504: ±infinity).
 *   BF16  the upper 16 bits of the F32, rounded to nearest even (converted back by a shift).
 *   Q8_0  row o is cut along C into nb = ceil(C/32) blocks of 32 weights; block j holds 32 int8
 *         values q and one F16 scale d, and stands for w[o][32j + i] = d * q[i]. Two arrays:
 *           values  int8 (OC, nb*32)  row o starts at byte o*nb*32; positions past C are 0
 *           scales  F16  (OC, nb)     row o starts at element o*nb
 *         Quantisation: d = F16(max |w| over the block / 127); q = w / d rounded to nearest
 *         (ties away from zero), clamped to [-127, 127]; an all-zero block has d = 0, q = 0.
 *         So |w - d*q| <= d/2 (+ the clamp's share when F16 rounded d down): about 0.4% of the
 *         block's largest weight. In a safetensors file: NAME as I8 [OC, nb*32] and NAME.scales
 *         as F16 [OC, nb] (docs/WEIGHTS.md).
 *
 * A sl_wmat is a view: it borrows its arrays (a mapping, or memory its creator owns). */
#ifndef SL_WMAT_H
#define SL_WMAT_H

#include "dtype.h"
#include "err.h"

#include <stddef.h>
#include <stdint.h>

typedef enum sl_wformat { SL_WF_F32, SL_WF_F16, SL_WF_BF16, SL_WF_Q8_0, SL_WF_COUNT } sl_wformat;

typedef enum sl_wlayout { SL_WL_ROWS, SL_WL_CONV1D } sl_wlayout;

/* Weights per Q8_0 block. */
#define SL_Q8_BLOCK 32

typedef struct sl_wmat {
    sl_wformat format;
    sl_wlayout layout;
    int in, out;            /* C, OC */
    const void *data;       /* the values, as the layout above says (borrowed) */
    const uint16_t *scales; /* Q8_0: the F16 block scales (borrowed); else NULL */
} sl_wmat;

/* "f32", "f16", "bf16", "q8_0". */
const char *sl_wformat_name(sl_wformat f);

/* Parses a name of sl_wformat_name (any case); -1 if unknown. */
int sl_wformat_parse(const char *name, sl_wformat *out);

/* Q8_0 blocks per row of `in` weights. */
int sl_wmat_q8_blocks(int in);

/* Bytes of the values and of the scales (0 but Q8_0) of an in x out matrix of format f.
 * Fails on a non-positive size or one that does not fit in size_t. */
int sl_wmat_sizes(sl_wformat f, int in, int out, size_t *data_bytes, size_t *scale_bytes, sl_err *err);

/* How a ROWS matrix of format f, in x out, is stored as safetensors tensors: NAME's dtype and shape
 * (F16/BF16 [out, in]; Q8_0 I8 [out, nb*32]) and, for Q8_0, NAME.scales' shape (F16 [out, nb];
 * zeros for the other formats). */
sl_dtype sl_wmat_tensor_shapes(sl_wformat f, int in, int out, int64_t values[2], int64_t scales[2]);

/* Checks that w is a matrix the kernels accept: sizes positive, arrays present, CONV1D only
 * for F32. The error names the problem. */
int sl_wmat_check(const sl_wmat *w, sl_err *err);

/* Converts a float matrix src (elements src_dt: F32, F16 or BF16; layout src_layout) of in x out
 * weights into format f in the ROWS layout: data (sl_wmat_sizes bytes) and, for Q8_0, scales.
 * Fills *w with the view of them. */
int sl_wmat_convert(sl_wmat *w, void *data, uint16_t *scales, sl_wformat f, const void *src, sl_dtype src_dt,
                    sl_wlayout src_layout, int in, int out, sl_err *err);

/* dst (n floats) = weights [c0, c0 + n) of output o of w, dequantised (any layout). */
void sl_wmat_row_f32(const sl_wmat *w, int o, int c0, int n, float *dst);

/* Dequantises all of w into dst (in*out floats) in layout dst_layout. */
void sl_wmat_to_f32(const sl_wmat *w, float *dst, sl_wlayout dst_layout);

#endif
