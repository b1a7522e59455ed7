/* cutguard.h — defences at a cut: what a stage sends to the next one (activations forward, or the
 * top's gradient backward) is clipped row by row to an L2 norm of at most C and gets Gaussian
 * noise of standard deviation sigma * C; and NoPeek's distance correlation between a bottom's
 * input embeddings and its output, as a loss term with its exact gradient.
 *
 * The operations are plain functions over float arrays (rows N, width C, row-major), as in ops.h:
 * each *_backward accumulates (+=) the gradient of exactly what its forward computed. The noise is
 * a constant of the forward (drawn once, not differentiated), so its backward is the identity.
 *
 * Privacy accounting (docs/PRIVACY.md): a released row clip(x) + N(0, (sigma C)^2 I) is the
 * Gaussian mechanism on one row with L2 sensitivity 2C under replace-one adjacency (the row of one
 * input replaced by the row of any other: ||clip(x) - clip(x')|| <= 2C). sl_gauss_epsilon gives
 * the exact epsilon at a delta (Balle and Wang's analytic Gaussian mechanism). It bounds what one
 * row reveals about the input that produced it, nothing more: rows of a sequence depend on every
 * earlier token (attention), so a token's exposure composes over all the rows after it. */
#ifndef SL_CUTGUARD_H
#define SL_CUTGUARD_H

#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- operations ---- */

/* out (N,C) = inp rows scaled to an L2 norm of at most clip; norm (N) receives each input row's
 * norm (backward needs it). out may equal inp. */
void sl_clip_forward(float *out, float *norm, const float *inp, int N, int C, float clip);

/* dinp (N,C) += J^T dout, J the Jacobian of a row's clip: the identity for a row within the
 * bound, else (clip / |x|) (I - x x^T / |x|^2). inp and norm as the forward saw and wrote them. */
void sl_clip_backward(float *dinp, const float *dout, const float *inp, const float *norm, int N, int C, float clip);

/* out (n) = inp + std * z, z standard normal draws (sl_gauss_fill). out may equal inp. */
void sl_noise_forward(float *out, const float *inp, const float *z, size_t n, float std);

/* dinp (n) += dout: the noise is a constant of the forward. */
void sl_noise_backward(float *dinp, const float *dout, size_t n);

/* Doubles of scratch sl_dcor_forward_backward needs for N rows: 3 N^2. */
size_t sl_dcor_scratch_size(int N);

/* Distance correlation (Szekely et al.; the sample V-statistic) between the rows of x (N,Dx) and
 * y (N,Dy): dCor = sqrt(dCov^2(x,y) / sqrt(dVar^2(x) dVar^2(y))) from the double-centred matrices
 * of pairwise Euclidean distances, in [0, 1]. Returns it, 0 when either side has no spread. With
 * dx and/or dy not NULL, += scale * its gradient with respect to x / y (a zero distance, as between
 * equal rows, contributes no gradient: the subgradient 0). scratch: sl_dcor_scratch_size(N). */
double sl_dcor_forward_backward(float *dx, float *dy, const float *x, const float *y, int N, int Dx, int Dy,
                                float scale, double *scratch);

/* ---- noise sources ---- */

/* Standard normal numbers, either from a seeded generator (tests and measurements, reproducible)
 * or from the kernel's cryptographic generator (getrandom): what a deployment uses, so that the
 * noise cannot be predicted or replayed by whoever receives the rows. */
typedef struct sl_gauss sl_gauss;

/* seed NULL: the cryptographic source. Caller owns the result. */
sl_gauss *sl_gauss_new(const uint64_t *seed, sl_err *err);
void sl_gauss_destroy(sl_gauss **self);

/* n standard normal draws into z (Box-Muller in double from 53-bit uniforms). */
int sl_gauss_fill(sl_gauss *self, float *z, size_t n, sl_err *err);

/* epsilon of the Gaussian mechanism with noise standard deviation std and L2 sensitivity
 * `sensitivity` at delta (0 < delta < 1): the smallest epsilon with
 * Phi(D/2s - eps s/D) - e^eps Phi(-D/2s - eps s/D) <= delta. INFINITY without noise. */
double sl_gauss_epsilon(double sensitivity, double std, double delta);

/* ---- a defended cut ---- */

/* What a stage does to the rows it sends: clip to L2 norm `clip` (0: no clipping), then noise of
 * standard deviation noise * clip (noise 0: none; noise needs a clip, which sets its scale). */
typedef struct sl_cut_defence {
    float clip, noise;
} sl_cut_defence;

bool sl_cut_defence_active(sl_cut_defence d);

/* The defence of one cut for rows of width C, keeping what the backward needs. Caller owns it. */
typedef struct sl_cutguard sl_cutguard;

/* seed as in sl_gauss_new (NULL: cryptographic noise). */
sl_cutguard *sl_cutguard_new(sl_cut_defence d, int C, const uint64_t *seed, sl_err *err);
void sl_cutguard_destroy(sl_cutguard **self);
sl_cut_defence sl_cutguard_defence(const sl_cutguard *self);

/* Applies the defence to N rows of x (N,C) in place. With keep, what backward needs is kept
 * (the rows before clipping), replacing what an earlier forward kept. */
int sl_cutguard_forward(sl_cutguard *self, float *x, int N, bool keep, sl_err *err);

/* dx (N,C) in place: the gradient with respect to the released rows becomes the gradient with
 * respect to the rows before the defence (clip's Jacobian; the noise passes it through). N must
 * be the last kept forward's. */
int sl_cutguard_backward(sl_cutguard *self, float *dx, int N, sl_err *err);

#endif
