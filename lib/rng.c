/* rng.c — xoshiro256** and the distributions built on it. */
#include "rng.h"

#include <math.h>

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void sl_rng_seed(sl_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        rng->s[i] = z ^ (z >> 31);
    }
}

uint64_t sl_rng_next(sl_rng *rng)
{
    uint64_t *s = rng->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float sl_rng_uniform(sl_rng *rng) { return (float)(sl_rng_next(rng) >> 40) * (1.0f / 16777216.0f); }

float sl_rng_normal(sl_rng *rng)
{
    double u1 = ((double)(sl_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(sl_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* x % n alone favours the low values when n does not divide 2^64: the 2^64 mod n lowest draws are
 * rejected so that every value has as many draws mapping to it. Fewer than n in 2^64 draws are
 * rejected, so for the n of a data shuffle the values are those of x % n. */
uint64_t sl_rng_below(sl_rng *rng, uint64_t n)
{
    if (n == 0) return 0;
    const uint64_t rejected = -n % n; /* 2^64 mod n, in 64-bit arithmetic */
    uint64_t x;
    do
        x = sl_rng_next(rng);
    while (x < rejected);
    return x % n;
}
