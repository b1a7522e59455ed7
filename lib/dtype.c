/* dtype.c — element sizes, names and float conversions (F16 via the compiler's _Float16). */
#include "dtype.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name, *lower;
    size_t size;
} dtypes[SL_DTYPE_COUNT] = {
    [SL_F32] = {"F32", "f32", 4}, [SL_F16] = {"F16", "f16", 2}, [SL_BF16] = {"BF16", "bf16", 2},
    [SL_I64] = {"I64", "i64", 8}, [SL_I32] = {"I32", "i32", 4}, [SL_I8] = {"I8", "i8", 1},
};

size_t sl_dtype_size(sl_dtype dt) { return dtypes[dt].size; }

const char *sl_dtype_name(sl_dtype dt) { return dtypes[dt].name; }

const char *sl_dtype_lower(sl_dtype dt) { return dtypes[dt].lower; }

int sl_dtype_parse(const char *name, sl_dtype *out)
{
    for (int i = 0; i < SL_DTYPE_COUNT; i++)
        if (strcasecmp(name, dtypes[i].name) == 0) {
            *out = (sl_dtype)i;
            return 0;
        }
    return -1;
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);                                          /* to nearest even */
    return (uint16_t)(bits >> 16);
}

#ifdef __FLT16_MAX__ /* the compiler has _Float16: conversions compile to F16C instructions */
static float f16_to_f32(uint16_t h)
{
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}

static uint16_t f32_to_f16(float f)
{
    _Float16 v = (_Float16)f;
    uint16_t h;
    memcpy(&h, &v, 2);
    return h;
}
#else /* IEEE half by hand, rounding to nearest even */
static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | man << 13;
    else if (exp)
        bits = sign | (exp + 112) << 23 | man << 13;
    else if (!man)
        bits = sign;
    else {
        int e = -1;
        do
            e++, man <<= 1;
        while (!(man & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t sign = (bits >> 16) & 0x8000, abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to infinity */
    if (abs < 0x38800000u) {                                  /* subnormal or zero */
        if (abs < 0x33000000u) return (uint16_t)sign;
        uint32_t man = (abs & 0x7fffff) | 0x800000, shift = 126 - (abs >> 23);
        uint32_t half = man >> shift, rest = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        half += rest > mid || (rest == mid && (half & 1));
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((abs >> 13) - (112u << 10)), rest = abs & 0x1fff;
    half += rest > 0x1000 || (rest == 0x1000 && (half & 1));
    return (uint16_t)(sign | half);
}
#endif

void sl_dtype_to_f32(float *dst, const void *src, sl_dtype src_dt, size_t n)
{
    const unsigned char *s = src;
    if (src_dt == SL_F32) {
        memcpy(dst, src, n * 4);
    } else if (src_dt == SL_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
    } else if (src_dt == SL_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
    }
}

void sl_dtype_from_f32(void *dst, sl_dtype dst_dt, const float *src, size_t n)
{
    unsigned char *d = dst;
    if (dst_dt == SL_F32) {
        memcpy(dst, src, n * 4);
    } else if (dst_dt == SL_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f32_to_f16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
    } else if (dst_dt == SL_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
    }
}
