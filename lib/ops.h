/* ops.h — GPT-2's operations as plain functions over float32 arrays.
 *
 * Rows: N = B*T tokens; C = n_embd; OC = output channels; all arrays row-major. Every matmul
 * goes to OpenBLAS (sgemm, or sgemv for a single row). The *_forward functions keep, in the
 * buffers given, what the matching backward needs (LayerNorm's mean/rstd, attention weights). */
#ifndef SL_OPS_H
#define SL_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* out (T,C) = wte[ids[t]] + wpe[pos0 + t]; wte (V,C), wpe (P,C). ids are trusted here. */
void sl_encoder_forward(float *out, const int32_t *ids, const float *wte, const float *wpe, int T, int pos0, int C);

/* out (N,C) = (inp - mean) * rstd * w + b; mean, rstd (N) are written when not NULL. */
void sl_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N,
                          int C, float eps);

/* out (N,OC) = inp (N,C) @ w (C,OC) + bias (OC); with accumulate, out += instead of =.
 * bias may be NULL. */
void sl_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
                       bool accumulate);

/* Prepares out (N,OC) for a matmul that adds beta * out: out = bias in every row (out += bias
 * with accumulate); returns beta, 1 when out now holds something to keep, else 0. */
float sl_matmul_bias(float *out, const float *bias, int N, int OC, bool accumulate);

/* out (N,OC) = inp (N,C) @ w^T with w (OC,C): the LM head against wte's layout. */
void sl_matmul_forward_wt(float *out, const float *inp, const float *w, int N, int C, int OC);

/* Causal multi-head attention for T queries at positions past .. past+T-1.
 * q (T, q_stride): head h at columns h*hd; k, v (past+T, kv_stride): keys/values of every
 * position so far; out (T, n_head*hd). probs receives the softmax weights: (n_head, T, past+T)
 * with keep (backward needs them), else (T, past+T), reused by every head (inference). */
void sl_attention_forward(float *out, float *probs, bool keep, const float *q, int q_stride, const float *k,
                          const float *v, int kv_stride, int T, int past, int n_head, int hd);

/* out = gelu_new(inp) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); out may equal inp. */
void sl_gelu_forward(float *out, const float *inp, size_t n);

/* ---- backward: each accumulates (+=) into its gradient outputs, which the caller zeroes ---- */

/* dwte (V,C), dwpe (P,C) += scatter of dout (T,C) by ids / positions. */
void sl_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *ids, int T, int pos0, int C);

/* dinp (N,C), dw, db (C) from dout (N,C), the forward's inp, w and saved mean, rstd (N). */
void sl_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                           const float *mean, const float *rstd, int N, int C);

/* For out = inp (N,C) @ w (C,OC) + b: dinp += dout @ w^T, dw += inp^T @ dout, dbias += sum of
 * dout's rows. dinp and dbias may be NULL. */
void sl_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                        int N, int C, int OC);

/* For out = inp (N,C) @ w^T, w (OC,C): dinp += dout @ w, dw += dout^T @ inp. */
void sl_matmul_backward_wt(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int C,
                           int OC);

/* Attention of T queries over the same T positions (training: no cache, past 0).
 * dqkv (T,3C) += from dout (T,C), using the forward's qkv (T,3C) and probs (n_head,T,T);
 * dprobs (T,T) is scratch. */
void sl_attention_backward(float *dqkv, float *dprobs, const float *dout, const float *qkv, const float *probs, int T,
                           int n_head, int hd);

/* dinp += gelu_new'(inp) * dout. */
void sl_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* Mean next-token cross-entropy: logits (T,V) row t predicts targets[t] (< 0: no target).
 * Returns the sum of -log p over the rows with targets; when dlogits is not NULL it receives
 * (softmax - onehot) * scale for those rows and 0 for the others. */
double sl_crossentropy_forward_backward(float *dlogits, const float *logits, const int32_t *targets, int T, int V,
                                        float scale);

/* One AdamW update of n parameters in place, params p, moments m and v, gradients g (n each,
 * not overlapping): m, v = moving averages of g and g^2; p = p * decay - step_size * m /
 * (sqrt(v) / bc2_sqrt + eps). The caller folds the bias corrections into step_size and bc2_sqrt. */
void sl_adamw_update(float *restrict p, float *restrict m, float *restrict v, const float *restrict g, size_t n,
                     float beta1, float beta2, float eps, float decay, float step_size, float bc2_sqrt);

#endif
