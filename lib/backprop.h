/* backprop.h — training one stage of GPT-2: a forward pass that keeps what backward needs, the
 * backward pass, and AdamW with PyTorch's semantics. A stage is a bottom (ids in), trunk or
 * top (loss out), or the whole model; a pipeline chains stages exactly as inference does, with
 * gradients flowing back: sl_backprop_backward's din is what a stage sends to the previous one. */
#ifndef SL_BACKPROP_H
#define SL_BACKPROP_H

#include "params.h"

typedef struct sl_adamw {
    float lr, beta1, beta2, eps, weight_decay; /* weight decay applies to every parameter */
} sl_adamw;

/* PyTorch's defaults with lr 1e-3 and weight decay 0.01. */
#define SL_ADAMW_DEFAULT ((sl_adamw){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f})

typedef struct sl_backprop sl_backprop;

/* A trainer for B sequences of T tokens over params, which must own its weights in one
 * allocation (sl_params_load with copy). params is borrowed and updated in place by
 * sl_backprop_step. Caller owns the result. */
sl_backprop *sl_backprop_new(sl_params *params, int B, int T, sl_err *err);
void sl_backprop_destroy(sl_backprop **self);

/* Forward over B*T tokens. Input: ids (B*T) for a bottom, else in (B*T, C). A stage without
 * head writes out (B*T, C); a top reads targets (B*T, next token of each position, < 0 for
 * none) and writes the mean cross-entropy over the targets to *loss. */
int sl_backprop_forward(sl_backprop *self, const int32_t *ids, const float *in, const int32_t *targets, float *out,
                        float *loss, sl_err *err);

/* Backward of the last forward, accumulating into the gradients. A stage without head reads
 * dout (B*T, C), the gradient of its output; a stage without embeddings writes din (B*T, C). */
int sl_backprop_backward(sl_backprop *self, const float *dout, float *din, sl_err *err);

void sl_backprop_zero_grad(sl_backprop *self);

/* The gradients (same layout as the params). */
sl_params *sl_backprop_grads(sl_backprop *self);

/* One AdamW step over every parameter from the accumulated gradients multiplied by scale (1/K over
 * K micro-batches, times a clipping factor; they keep that product), bias-corrected, with
 * decoupled weight decay, as torch.optim.AdamW. */
void sl_backprop_step(sl_backprop *self, const sl_adamw *opt, float scale);

/* scale^2 times the squared norm of the accumulated gradients, summed in double in the
 * parameters' order: every stage computes it the same way so that global clipping gives the
 * same factor in one process and across nodes. */
double sl_backprop_grad_norm2(sl_backprop *self, float scale);

/* Optimizer steps taken so far (counting those of a restored state). */
long sl_backprop_steps(const sl_backprop *self);

/* Saves AdamW's moments and step count to a safetensors file ("m.<name>", "v.<name>",
 * metadata "step"). */
int sl_backprop_save_state(sl_backprop *self, const char *path, sl_err *err);

/* Restores what sl_backprop_save_state wrote. Returns 1 when path does not exist (a fresh start),
 * 0 when restored, -1 with err when the file is not a matching state. */
int sl_backprop_load_state(sl_backprop *self, const char *path, sl_err *err);

#endif
