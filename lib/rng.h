/* rng.h — a small seeded random generator (xoshiro256**, seeded through splitmix64), so that
 * sampling, model initialisation and data shuffling are reproducible from --seed. */
#ifndef SL_RNG_H
#define SL_RNG_H

#include <stdint.h>

typedef struct sl_rng {
    uint64_t s[4];
} sl_rng;

void sl_rng_seed(sl_rng *rng, uint64_t seed);
uint64_t sl_rng_next(sl_rng *rng);
/* Uniform in [0, 1). */
float sl_rng_uniform(sl_rng *rng);
/* Standard normal (Box-Muller). */
float sl_rng_normal(sl_rng *rng);
/* Uniform integer in [0, n), without modulo bias; 0 when n is 0. */
uint64_t sl_rng_below(sl_rng *rng, uint64_t n);

#endif
