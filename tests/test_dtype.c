/* test_dtype.c — lib/dtype: names and sizes; F16 and BF16 to float32 for every bit pattern against
 * an independent decoding; float32 to F16 and BF16 rounding to nearest even at every midpoint
 * between two neighbours (normal and subnormal), overflow to infinity, underflow to zero, signed
 * zeros, infinities and NaNs; round trips; unaligned buffers. */
#include "check.h"
#include "dtype.h"

#include <stdint.h>
#include <string.h>

static float f32_of_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint32_t bits_of_f32(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

static float to_f32(sl_dtype dt, uint16_t h)
{
    float f;
    sl_dtype_to_f32(&f, &h, dt, 1);
    return f;
}

static uint16_t from_f32(sl_dtype dt, float f)
{
    uint16_t h;
    sl_dtype_from_f32(&h, dt, &f, 1);
    return h;
}

/* IEEE binary16 by its definition, in double. */
static double half_value(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v = exp == 0 ? ldexp(man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

static void test_names(void)
{
    sl_dtype dt;
    CHECK(sl_dtype_size(SL_F32) == 4 && sl_dtype_size(SL_F16) == 2 && sl_dtype_size(SL_BF16) == 2 &&
              sl_dtype_size(SL_I64) == 8 && sl_dtype_size(SL_I32) == 4,
          "element sizes");
    CHECK(sl_dtype_parse("BF16", &dt) == 0 && dt == SL_BF16 && sl_dtype_parse("f16", &dt) == 0 && dt == SL_F16,
          "names parse in either case");
    CHECK(sl_dtype_parse("F64", &dt) == -1 && sl_dtype_parse("", &dt) == -1, "unknown names are refused");
    for (int i = 0; i < SL_DTYPE_COUNT; i++)
        CHECK(sl_dtype_parse(sl_dtype_name((sl_dtype)i), &dt) == 0 && dt == (sl_dtype)i &&
                  sl_dtype_parse(sl_dtype_lower((sl_dtype)i), &dt) == 0 && dt == (sl_dtype)i,
              "%s and %s name dtype %d", sl_dtype_name((sl_dtype)i), sl_dtype_lower((sl_dtype)i), i);
}

static void test_decode_every_pattern(void)
{
    int f16_wrong = 0, bf16_wrong = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        double want = half_value((uint16_t)h);
        float got = to_f32(SL_F16, (uint16_t)h);
        f16_wrong += isnan(want) ? !isnan(got) : (double)got != want || !signbit(got) != !signbit(want);
        /* BF16 is the top half of a float32: its value is those bits with zeros below. */
        float b = to_f32(SL_BF16, (uint16_t)h), bw = f32_of_bits(h << 16);
        bf16_wrong += isnan(bw) ? !isnan(b) : bits_of_f32(b) != bits_of_f32(bw);
    }
    CHECK(f16_wrong == 0, "%d of 65536 F16 patterns decode to another value", f16_wrong);
    CHECK(bf16_wrong == 0, "%d of 65536 BF16 patterns decode to another value", bf16_wrong);
}

static void test_round_trips(void)
{
    int f16_wrong = 0, bf16_wrong = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t f = from_f32(SL_F16, to_f32(SL_F16, (uint16_t)h)), b = from_f32(SL_BF16, to_f32(SL_BF16, (uint16_t)h));
        f16_wrong += isnan(half_value((uint16_t)h)) ? !isnan(half_value(f)) : f != h;
        bf16_wrong += isnan(f32_of_bits(h << 16)) ? !isnan(f32_of_bits((uint32_t)b << 16)) : b != h;
    }
    CHECK(f16_wrong == 0, "%d of 65536 F16 values do not come back from float32 unchanged", f16_wrong);
    CHECK(bf16_wrong == 0, "%d of 65536 BF16 values do not come back from float32 unchanged", bf16_wrong);
}

/* For every two neighbouring positive finite values lo < hi of a 16-bit type (hi may be +inf for
 * the largest): the midpoint rounds to the one with an even last bit, and the floats just below
 * and above it round to lo and hi. */
static int midpoint_errors(sl_dtype dt, float (*value)(uint16_t), uint16_t last)
{
    int wrong = 0;
    for (uint32_t lo = 0; lo < last; lo++) {
        uint16_t hi = (uint16_t)(lo + 1);
        double top = hi == 0x7c00 && dt == SL_F16 ? 65536.0 : hi == 0x7f80 && dt == SL_BF16 ? ldexp(1, 128) : value(hi);
        float mid = (float)(((double)value((uint16_t)lo) + top) / 2); /* exact: 16-bit types have < 24 bits */
        uint16_t even = (lo & 1) ? hi : (uint16_t)lo;
        wrong += from_f32(dt, mid) != even;
        wrong += from_f32(dt, nextafterf(mid, 0)) != lo;
        wrong += from_f32(dt, nextafterf(mid, INFINITY)) != hi;
        wrong += from_f32(dt, -mid) != (even | 0x8000); /* the sign does not change the rounding */
    }
    return wrong;
}

static float f16_value(uint16_t h) { return (float)half_value(h); }
static float bf16_value(uint16_t h) { return f32_of_bits((uint32_t)h << 16); }

static void test_round_to_nearest_even(void)
{
    /* from zero through the subnormals and normals to the largest finite value and infinity */
    CHECK(midpoint_errors(SL_F16, f16_value, 0x7bff) == 0, "F16: %d conversions at midpoints are not RNE",
          midpoint_errors(SL_F16, f16_value, 0x7bff));
    CHECK(midpoint_errors(SL_BF16, bf16_value, 0x7f7f) == 0, "BF16: %d conversions at midpoints are not RNE",
          midpoint_errors(SL_BF16, bf16_value, 0x7f7f));
    CHECK(from_f32(SL_F16, 65520.0f) == 0x7c00 && from_f32(SL_F16, nextafterf(65520.0f, 0)) == 0x7bff,
          "F16 overflows to infinity from 65520 (the midpoint above 65504) on");
    CHECK(from_f32(SL_F16, 1e30f) == 0x7c00 && from_f32(SL_F16, -1e30f) == 0xfc00, "huge values are +-infinity");
    CHECK(from_f32(SL_BF16, f32_of_bits(0x7f7fffff)) == 0x7f80, "BF16: FLT_MAX rounds up to infinity");
    CHECK(from_f32(SL_F16, ldexpf(1, -25)) == 0 && from_f32(SL_F16, nextafterf(ldexpf(1, -25), 1)) == 1 &&
              from_f32(SL_F16, ldexpf(1, -30)) == 0 && from_f32(SL_F16, -ldexpf(1, -30)) == 0x8000,
          "F16 underflow: half the smallest subnormal ties to zero, a little more is the smallest subnormal");
    CHECK(from_f32(SL_BF16, f32_of_bits(1)) == 0 && from_f32(SL_BF16, f32_of_bits(0x8000)) == 0 &&
              from_f32(SL_BF16, f32_of_bits(0x8001)) == 1,
          "BF16 of float32 subnormals rounds like any other value");
}

static void test_specials(void)
{
    static const sl_dtype types[2] = {SL_F16, SL_BF16};
    static const uint16_t pinf[2] = {0x7c00, 0x7f80}, ninf[2] = {0xfc00, 0xff80};
    for (int i = 0; i < 2; i++) {
        sl_dtype dt = types[i];
        const char *name = sl_dtype_name(dt);
        CHECK(from_f32(dt, INFINITY) == pinf[i] && from_f32(dt, -INFINITY) == ninf[i], "%s: infinities", name);
        CHECK(from_f32(dt, 0.0f) == 0 && from_f32(dt, -0.0f) == 0x8000, "%s: signed zeros", name);
        CHECK(isinf(to_f32(dt, pinf[i])) && to_f32(dt, ninf[i]) < 0 && signbit(to_f32(dt, 0x8000)),
              "%s: infinities and -0 decode", name);
        float nans[4] = {NAN, -NAN, f32_of_bits(0x7f800001), f32_of_bits(0xffc00123)}; /* quiet, signalling, payloads */
        int kept = 0;
        for (int k = 0; k < 4; k++) {
            uint16_t h = from_f32(dt, nans[k]);
            kept += isnan(to_f32(dt, h)) && (h >> 15) == (bits_of_f32(nans[k]) >> 31);
        }
        CHECK(kept == 4, "%s: %d of 4 NaNs (quiet, signalling, either sign) stay NaN with their sign", name, kept);
    }
}

static void test_unaligned(void)
{
    const float src[5] = {1.0f, -2.5f, 0.333333343f, 65504.0f, -0.0f};
    unsigned char buf[1 + 5 * 4];
    float back[5], copy[6];
    for (int t = 0; t < 3; t++) {
        sl_dtype dt = t == 0 ? SL_F32 : t == 1 ? SL_F16 : SL_BF16;
        sl_dtype_from_f32(buf + 1, dt, src, 5);
        sl_dtype_to_f32(back, buf + 1, dt, 5);
        sl_dtype_to_f32(copy + 1, buf + 1, dt, 5); /* a float destination off its usual alignment is fine too */
        double tol = dt == SL_F32 ? 0 : dt == SL_F16 ? 1e-3 : 1e-2;
        bool close = true;
        for (int i = 0; i < 5; i++)
            close = close && fabs((double)back[i] - src[i]) <= tol * fabs((double)src[i]) && back[i] == copy[i + 1];
        CHECK(close, "%s through a buffer at an odd address", sl_dtype_name(dt));
    }
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_selected("names")) test_names();
    if (check_selected("decode_every_pattern")) test_decode_every_pattern();
    if (check_selected("round_trips")) test_round_trips();
    if (check_selected("round_to_nearest_even")) test_round_to_nearest_even();
    if (check_selected("specials")) test_specials();
    if (check_selected("unaligned")) test_unaligned();
    return check_done();
}
