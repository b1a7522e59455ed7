/* gpt2.h — running one stage of GPT-2 (blocks [first, last) with or without the embeddings and
 * the head) over a batch of tokens, with a KV cache so that generation feeds one token at a time.
 *
 * The same call serves the whole model (embed + all blocks + head), a bottom (embed + blocks),
 * a trunk (blocks) and a top (blocks + head): a split pipeline computes exactly what the
 * monolithic model computes, with the same kernels in the same order. */
#ifndef SL_GPT2_H
#define SL_GPT2_H

#include "kern.h"
#include "params.h"

/* The keys and values of one sequence for a stage's layers. */
typedef struct sl_kv sl_kv;

/* A cache for up to n_ctx positions (<= n_positions) of p's layers, holding F32 or F16 (half the
 * memory; each key and value rounded to F16 as it is stored). Caller owns the result. */
sl_kv *sl_kv_new(const sl_params *p, int n_ctx, sl_dtype dtype, sl_err *err);
void sl_kv_destroy(sl_kv **self);
/* Positions held so far: the position of the next token. */
int sl_kv_len(const sl_kv *self);
/* Forgets every position (a new sequence). */
void sl_kv_reset(sl_kv *self);
/* Keeps the first len positions only (len <= sl_kv_len), e.g. to re-run a suffix. */
void sl_kv_truncate(sl_kv *self, int len);
int sl_kv_capacity(const sl_kv *self);
size_t sl_kv_bytes(const sl_kv *self);
sl_dtype sl_kv_dtype(const sl_kv *self);

/* What a stage returns: its output activations (a stage without head, or a head stage's
 * hidden state after ln_f), or logits at every position or only at the last one. */
typedef enum sl_output {
    SL_OUT_HIDDEN,      /* out (T,C) */
    SL_OUT_LOGITS_ALL,  /* out (T,V) */
    SL_OUT_LOGITS_LAST, /* out (V) */
} sl_output;

/* A stage runner: borrowed params plus the scratch memory of one forward call, allocated once.
 * Its linear layers are sl_kern_matmul on the stage's matrices in their format. */
typedef struct sl_runner sl_runner;

/* max_tokens bounds the tokens computed at once (longer inputs run in chunks through the
 * cache). p must outlive the stage. kern (borrowed; it must outlive the runner) runs the linear
 * layers; NULL: the runner makes its own, one thread per online CPU (not only those a pinned caller
 * may use), unpinned. Caller owns the result. */
sl_runner *sl_runner_new(const sl_params *p, int max_tokens, sl_kern *kern, sl_err *err);

/* Within one forward call the kernels' workers watch for the next matrix–vector product this long
 * (sl_kern_set_linger) instead of sleeping between products: a decode step makes ~50 of them a
 * few microseconds apart, and waking a sleeping worker costs 20-40 us on a VM (about 10% of a
 * token). At the end of every call they sleep (sl_kern_rest): nothing spins between calls. */
#define SL_RUNNER_LINGER_US 200

/* Sets that watch (0: the workers sleep after every product). */
void sl_runner_set_linger(sl_runner *self, int linger_us);
void sl_runner_destroy(sl_runner **self);

/* Runs T tokens at positions sl_kv_len(kv) .. +T-1 and appends them to kv.
 * Input: ids (T) when the stage embeds, else hidden (T,C). The output is as `which` says; a
 * stage without head can only give SL_OUT_HIDDEN (its output activations, before ln_f).
 * Fails, leaving kv as it was, on a bad id, a full cache or a wrong request. */
int sl_runner_forward(sl_runner *self, sl_kv *kv, int T, const int32_t *ids, const float *hidden, float *out,
                      sl_output which, sl_err *err);

/* Runs K alternatives for the one position sl_kv_len(kv) (K <= the stage's max_tokens): row k of
 * out (K,C) is what the stage outputs there when the sequence continues with ids[k] (or hidden
 * row k), after the positions in kv. kv keeps its length: the alternatives are not appended (the
 * slot after the last position is used as scratch, so the cache needs room for one more). A stage
 * without head only. For white-box search over inputs (leakage.h) in one batched pass. */
int sl_runner_forward_alternatives(sl_runner *self, sl_kv *kv, int K, const int32_t *ids, const float *hidden,
                                   float *out, sl_err *err);

#endif
