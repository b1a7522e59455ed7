/* privacy.h — what a split-learning client does at its cuts in training, so that the trainer only
 * calls it there: the bottom's clip and noise on the activations it sends (backward: the exact
 * gradient through the clip, the noise a constant), NoPeek's loss on the bottom (lambda times the
 * distance correlation between the bottom's input embeddings wte[id] + wpe[pos] and its output,
 * per batch, with its exact gradient into the bottom: through the output and into wte and wpe),
 * and the top's clip and noise on the gradient it sends back.
 *
 * NoPeek is computed on the bottom's output before clip and noise (the function the bottom
 * learns), over the batch's B*T rows, which holds 3 (B*T)^2 doubles: at most SL_NOPEEK_MAX_ROWS.
 * The loss the trainer reports stays the cross-entropy; sl_privacy_dcor tells the last batch's
 * distance correlation. Ownership: the caller owns the result of sl_privacy_new. */
#ifndef SL_PRIVACY_H
#define SL_PRIVACY_H

#include "cutguard.h"
#include "params.h"

enum { SL_NOPEEK_MAX_ROWS = 4096 };

typedef struct sl_privacy_opts {
    sl_cut_defence activations; /* the bottom's (topology: clip, noise) */
    sl_cut_defence gradients;   /* the top's (topology: grad_clip, grad_noise) */
    float nopeek;               /* lambda; 0: off */
    bool seeded;                /* noise from noise_seed (tests), else from getrandom */
    uint64_t noise_seed;
} sl_privacy_opts;

/* Whether any of it is on. */
bool sl_privacy_active(const sl_privacy_opts *o);

typedef struct sl_privacy sl_privacy;

/* For batches of B sequences of T rows of width C. */
sl_privacy *sl_privacy_new(const sl_privacy_opts *o, int B, int T, int C, sl_err *err);
void sl_privacy_destroy(sl_privacy **self);

/* The bottom's output rows (B*T, C) for ids (B*T) in place into what it sends. With train, NoPeek's
 * term is computed and what the backward needs kept. */
int sl_privacy_bottom_forward(sl_privacy *self, const sl_params *bottom, const int32_t *ids, float *rows, bool train,
                              sl_err *err);

/* dout (B*T, C) in place: the gradient with respect to the rows sent becomes the gradient with
 * respect to the bottom's output, NoPeek's added; NoPeek's gradient with respect to the embeddings
 * goes into grads' wte and wpe (the bottom's gradients, accumulated). */
int sl_privacy_bottom_backward(sl_privacy *self, sl_params *grads, const int32_t *ids, float *dout, sl_err *err);

/* The top's gradient to the stage before it, din (B*T, C), in place into what it sends. */
int sl_privacy_top_gradient(sl_privacy *self, float *din, sl_err *err);

/* The distance correlation of the last training batch (NAN before one, or with NoPeek off). */
double sl_privacy_dcor(const sl_privacy *self);

#endif
