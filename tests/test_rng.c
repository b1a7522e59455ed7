/* test_rng.c — lib/rng: the reference xoshiro256** outputs seeded through splitmix64, the same
 * sequence for the same seed, the ranges of every distribution, their moments, and no modulo
 * bias in sl_rng_below (a range of 2/3 of 2^64, where x % n would put 2/3 of the draws in its
 * lower half). */
#include "check.h"
#include "rng.h"

static void test_reference_outputs(void)
{
    /* splitmix64(0)'s first outputs are the state (0xe220a8397b1dcdaf is its published first
     * value); the outputs are xoshiro256**'s (Blackman and Vigna), computed apart from lib/. */
    sl_rng rng;
    sl_rng_seed(&rng, 0);
    CHECK(rng.s[0] == 0xe220a8397b1dcdafull && rng.s[1] == 0x6e789e6aa1b965f4ull && rng.s[2] == 0x06c45d188009454full &&
              rng.s[3] == 0xf88bb8a8724c81ecull,
          "seed 0: splitmix64's state");
    uint64_t a = sl_rng_next(&rng), b = sl_rng_next(&rng), c = sl_rng_next(&rng);
    CHECK(a == 0x99ec5f36cb75f2b4ull && b == 0xbf6e1f784956452aull && c == 0x1a5f849d4933e6e0ull,
          "seed 0: xoshiro256** gives %016llx %016llx %016llx", (unsigned long long)a, (unsigned long long)b,
          (unsigned long long)c);
    sl_rng_seed(&rng, 12345);
    a = sl_rng_next(&rng);
    CHECK(a == 0xbe6a36374160d49bull, "seed 12345: first output %016llx", (unsigned long long)a);
}

static void test_determinism(void)
{
    sl_rng x, y, z;
    sl_rng_seed(&x, 42);
    sl_rng_seed(&y, 42);
    sl_rng_seed(&z, 43);
    int same = 0, differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t a = sl_rng_next(&x), b = sl_rng_next(&y), c = sl_rng_next(&z);
        same += a == b;
        differ += a != c;
    }
    CHECK(same == 1000, "the same seed gives the same sequence (%d of 1000)", same);
    CHECK(differ == 1000, "a neighbouring seed gives another (%d of 1000 differ)", differ);
    sl_rng_seed(&x, 42);
    sl_rng_seed(&y, 42);
    for (int i = 0; i < 500; i++)
        sl_rng_below(&x, (uint64_t)i + 1), sl_rng_below(&y, (uint64_t)i + 1);
    CHECK(sl_rng_next(&x) == sl_rng_next(&y), "sl_rng_below draws the same way from the same state");
}

static void test_ranges_and_moments(void)
{
    sl_rng rng;
    sl_rng_seed(&rng, 7);
    enum { N = 200000 };
    double sum_u = 0, sum_n = 0, sum_n2 = 0;
    int outside = 0, not_finite = 0;
    for (int i = 0; i < N; i++) {
        float u = sl_rng_uniform(&rng), g = sl_rng_normal(&rng);
        outside += !(u >= 0.0f && u < 1.0f);
        not_finite += !isfinite(g);
        sum_u += u, sum_n += g, sum_n2 += (double)g * g;
    }
    CHECK(outside == 0, "%d uniform draws outside [0, 1)", outside);
    CHECK(not_finite == 0, "%d normal draws not finite", not_finite);
    CHECK(fabs(sum_u / N - 0.5) < 0.005, "uniform mean %.4f", sum_u / N);
    CHECK(fabs(sum_n / N) < 0.01 && fabs(sum_n2 / N - 1) < 0.02, "normal mean %.4f, variance %.4f", sum_n / N,
          sum_n2 / N);
    static const uint64_t ns[] = {1, 2, 3, 10, 1000, 4294967297ull, 0x8000000000000001ull, UINT64_MAX};
    int beyond = 0;
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
        for (int i = 0; i < 2000; i++)
            beyond += sl_rng_below(&rng, ns[k]) >= ns[k];
    CHECK(beyond == 0, "%d sl_rng_below(n) draws at n or beyond", beyond);
    CHECK(sl_rng_below(&rng, 0) == 0 && sl_rng_below(&rng, 1) == 0, "n 0 and 1 give 0");
    int counts[10] = {0};
    for (int i = 0; i < 100000; i++)
        counts[sl_rng_below(&rng, 10)]++;
    double chi2 = 0;
    for (int v = 0; v < 10; v++)
        chi2 += (counts[v] - 10000.0) * (counts[v] - 10000.0) / 10000.0;
    CHECK(chi2 < 27.9, "sl_rng_below(10): chi-square %.1f over 9 degrees of freedom (p < 0.001 beyond 27.9)", chi2);
}

static void test_no_modulo_bias(void)
{
    const uint64_t n = 0xaaaaaaaaaaaaaaabull; /* 2/3 of 2^64: x % n maps two draws to each of its n/2 lowest */
    sl_rng rng;
    sl_rng_seed(&rng, 1);
    int low = 0;
    enum { N = 20000 };
    for (int i = 0; i < N; i++)
        low += sl_rng_below(&rng, n) < n / 2;
    CHECK(fabs((double)low / N - 0.5) < 0.02, "%.3f of the draws in the lower half of [0, n) (x %% n: 0.667)",
          (double)low / N);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_selected("reference_outputs")) test_reference_outputs();
    if (check_selected("determinism")) test_determinism();
    if (check_selected("ranges_and_moments")) test_ranges_and_moments();
    if (check_selected("no_modulo_bias")) test_no_modulo_bias();
    return check_done();
}
