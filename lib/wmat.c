/* wmat.c — weight formats: sizes, checks, quantisation to F16/BF16/Q8_0 and back (portable C;
 * these run once at load time, the kernels in kern*.c run per token). */
#include "wmat.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Rows converted together: a CONV1D source is read 32 columns at a time (one cache line of
 * F16) instead of one element per row. */
enum { GROUP = 32 };

static const char *const names[SL_WF_COUNT] = {"f32", "f16", "bf16", "q8_0"};
static const sl_dtype elem_dtype[SL_WF_COUNT] = {SL_F32, SL_F16, SL_BF16, SL_I8};

const char *sl_wformat_name(sl_wformat f) { return f >= 0 && f < SL_WF_COUNT ? names[f] : "?"; }

int sl_wformat_parse(const char *name, sl_wformat *out)
{
    for (int i = 0; i < SL_WF_COUNT; i++)
        if (strcasecmp(name, names[i]) == 0) {
            *out = (sl_wformat)i;
            return 0;
        }
    return -1;
}

int sl_wmat_q8_blocks(int in) { return (in + SL_Q8_BLOCK - 1) / SL_Q8_BLOCK; }

sl_dtype sl_wmat_tensor_shapes(sl_wformat f, int in, int out, int64_t values[2], int64_t scales[2])
{
    const bool q8 = f == SL_WF_Q8_0;
    values[0] = out;
    values[1] = q8 ? (int64_t)sl_wmat_q8_blocks(in) * SL_Q8_BLOCK : in;
    scales[0] = q8 ? out : 0;
    scales[1] = q8 ? sl_wmat_q8_blocks(in) : 0;
    return elem_dtype[f];
}

int sl_wmat_sizes(sl_wformat f, int in, int out, size_t *data_bytes, size_t *scale_bytes, sl_err *err)
{
    if (f < 0 || f >= SL_WF_COUNT) return sl_fail(err, "unknown weight format %d", (int)f);
    if (in <= 0 || out <= 0) return sl_fail(err, "weight matrix %d x %d: sizes must be positive", in, out);
    size_t row =
        f == SL_WF_Q8_0 ? (size_t)sl_wmat_q8_blocks(in) * SL_Q8_BLOCK : (size_t)in * sl_dtype_size(elem_dtype[f]);
    size_t scales = f == SL_WF_Q8_0 ? (size_t)sl_wmat_q8_blocks(in) * 2 : 0;
    if (__builtin_mul_overflow(row, (size_t)out, data_bytes) ||
        __builtin_mul_overflow(scales, (size_t)out, scale_bytes))
        return sl_fail(err, "weight matrix %d x %d of %s does not fit in memory", in, out, names[f]);
    return 0;
}

int sl_wmat_check(const sl_wmat *w, sl_err *err)
{
    size_t data, scales;
    if (sl_wmat_sizes(w->format, w->in, w->out, &data, &scales, err) != 0) return -1;
    if (w->layout != SL_WL_ROWS && w->layout != SL_WL_CONV1D)
        return sl_fail(err, "weight matrix %d x %d: unknown layout %d", w->in, w->out, (int)w->layout);
    if (w->layout == SL_WL_CONV1D && w->format != SL_WF_F32)
        return sl_fail(err, "weight matrix %d x %d: %s is stored in rows (OC,C), not Conv1D (C,OC)", w->in, w->out,
                       names[w->format]);
    if (!w->data) return sl_fail(err, "weight matrix %d x %d: no data", w->in, w->out);
    if (w->format == SL_WF_Q8_0 && !w->scales)
        return sl_fail(err, "weight matrix %d x %d: q8_0 without scales", w->in, w->out);
    return 0;
}

static float f16_value(uint16_t h)
{
    float f;
    sl_dtype_to_f32(&f, &h, SL_F16, 1);
    return f;
}

/* Quantises one row of `in` floats into nb blocks; fails on a weight F16 scales cannot hold. */
static int q8_row(int8_t *q, uint16_t *scales, const float *w, int in, int row, sl_err *err)
{
    for (int j = 0, nb = sl_wmat_q8_blocks(in); j < nb; j++) {
        int from = j * SL_Q8_BLOCK, n = in - from < SL_Q8_BLOCK ? in - from : SL_Q8_BLOCK;
        float amax = 0;
        for (int i = 0; i < n; i++)
            amax = fabsf(w[from + i]) > amax ? fabsf(w[from + i]) : amax;
        float d_wanted = amax / 127.0f;
        sl_dtype_from_f32(&scales[j], SL_F16, &d_wanted, 1);
        float d = f16_value(scales[j]);
        if (!isfinite(amax) || !isfinite(d))
            return sl_fail(err, "row %d, block %d: weight %g is beyond q8_0's range (|w| <= 8.3e6)", row, j, amax);
        for (int i = 0; i < SL_Q8_BLOCK; i++) {
            float v = i < n && d > 0 ? roundf(w[from + i] / d) : 0.0f;
            q[from + i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
    }
    return 0;
}

/* Rows [o, o + n) of src as floats into rows (n x in), whatever src's element type and layout. */
static void gather_rows(float *rows, const void *src, sl_dtype dt, sl_wlayout layout, int in, int out, int o, int n)
{
    const unsigned char *s = src;
    size_t esize = sl_dtype_size(dt);
    if (layout == SL_WL_ROWS) {
        sl_dtype_to_f32(rows, s + (size_t)o * in * esize, dt, (size_t)n * in);
        return;
    }
    float column[GROUP];
    for (int c = 0; c < in; c++) {
        sl_dtype_to_f32(column, s + ((size_t)c * out + o) * esize, dt, (size_t)n);
        for (int k = 0; k < n; k++)
            rows[(size_t)k * in + c] = column[k];
    }
}

int sl_wmat_convert(sl_wmat *w, void *data, uint16_t *scales, sl_wformat f, const void *src, sl_dtype src_dt,
                    sl_wlayout src_layout, int in, int out, sl_err *err)
{
    size_t data_bytes, scale_bytes;
    if (sl_wmat_sizes(f, in, out, &data_bytes, &scale_bytes, err) != 0) return -1;
    if (src_dt != SL_F32 && src_dt != SL_F16 && src_dt != SL_BF16)
        return sl_fail(err, "cannot convert %s weights to %s", sl_dtype_name(src_dt), names[f]);
    float *rows = malloc((size_t)GROUP * in * sizeof *rows);
    if (!rows) return sl_fail(err, "out of memory converting a %d x %d matrix to %s", in, out, names[f]);
    size_t row_bytes = data_bytes / (size_t)out;
    int nb = sl_wmat_q8_blocks(in), rc = 0;
    for (int o = 0; o < out && rc == 0; o += GROUP) {
        int n = out - o < GROUP ? out - o : GROUP;
        gather_rows(rows, src, src_dt, src_layout, in, out, o, n);
        for (int k = 0; k < n && rc == 0; k++) {
            unsigned char *dst = (unsigned char *)data + (size_t)(o + k) * row_bytes;
            if (f == SL_WF_Q8_0)
                rc = q8_row((int8_t *)dst, scales + (size_t)(o + k) * nb, rows + (size_t)k * in, in, o + k, err);
            else
                sl_dtype_from_f32(dst, elem_dtype[f], rows + (size_t)k * in, (size_t)in);
        }
    }
    free(rows);
    *w = (sl_wmat){.format = f,
                   .layout = SL_WL_ROWS,
                   .in = in,
                   .out = out,
                   .data = data,
                   .scales = f == SL_WF_Q8_0 ? scales : NULL};
    return rc;
}

void sl_wmat_row_f32(const sl_wmat *w, int o, int c0, int n, float *dst)
{
    if (w->layout == SL_WL_CONV1D) {
        const float *src = w->data;
        for (int c = 0; c < n; c++)
            dst[c] = src[(size_t)(c0 + c) * w->out + o];
    } else if (w->format == SL_WF_Q8_0) {
        int nb = sl_wmat_q8_blocks(w->in);
        const int8_t *q = (const int8_t *)w->data + (size_t)o * nb * SL_Q8_BLOCK;
        for (int c = c0; c < c0 + n;) {
            float d = f16_value(w->scales[(size_t)o * nb + c / SL_Q8_BLOCK]);
            for (int end = (c / SL_Q8_BLOCK + 1) * SL_Q8_BLOCK; c < end && c < c0 + n; c++)
                dst[c - c0] = d * (float)q[c];
        }
    } else {
        sl_dtype dt = elem_dtype[w->format];
        sl_dtype_to_f32(dst, (const unsigned char *)w->data + ((size_t)o * w->in + c0) * sl_dtype_size(dt), dt,
                        (size_t)n);
    }
}

void sl_wmat_to_f32(const sl_wmat *w, float *dst, sl_wlayout dst_layout)
{
    float part[256];
    for (int o = 0; o < w->out; o++) {
        if (dst_layout == SL_WL_ROWS) {
            sl_wmat_row_f32(w, o, 0, w->in, dst + (size_t)o * w->in);
            continue;
        }
        for (int c0 = 0; c0 < w->in; c0 += 256) {
            int n = w->in - c0 < 256 ? w->in - c0 : 256;
            sl_wmat_row_f32(w, o, c0, n, part);
            for (int c = 0; c < n; c++)
                dst[(size_t)(c0 + c) * w->out + o] = part[c];
        }
    }
}
