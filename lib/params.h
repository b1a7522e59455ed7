/* params.h — the weights of one stage of GPT-2: blocks [first, last), plus the embeddings when
 * the stage is the bottom and ln_f + LM head when it is the top.
 *
 * Shapes (C = n_embd, I = n_inner, V = vocab_size, P = n_positions), HF's Conv1D layout, so
 * every linear layer computes out (T,OC) = inp (T,C) @ w (C,OC) + b (OC):
 *   wte (V,C)  wpe (P,C)
 *   block: ln1_w, ln1_b (C)  qkv_w (C,3C) qkv_b (3C)  attn_proj_w (C,C) attn_proj_b (C)
 *          ln2_w, ln2_b (C)  fc_w (C,I) fc_b (I)  fc_proj_w (I,C) fc_proj_b (C)
 *   lnf_w, lnf_b (C)  head (V,C)   (a tied model's head is wte itself when one stage has both)
 *
 * The same struct holds gradients and optimizer moments: sl_params_alloc_like() gives one
 * zeroed allocation with the same layout. sl_params_foreach() enumerates every tensor with its
 * HF name, so loading, saving, gradients and the optimizer share one list. */
#ifndef SL_PARAMS_H
#define SL_PARAMS_H

#include "config.h"
#include "dtype.h"
#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The tensors a stage loads from (hf_model.h). */
typedef struct sl_hf_model sl_hf_model;

typedef struct sl_block {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
    float *ln2_w, *ln2_b, *fc_w, *fc_b, *fc_proj_w, *fc_proj_b;
} sl_block;

typedef struct sl_params {
    sl_config cfg;
    int first, last;  /* blocks [first, last) */
    bool embed, head; /* has wte+wpe / has ln_f+head */
    bool head_is_wte; /* tied, both in this stage: head aliases wte */
    float *wte, *wpe;
    sl_block *blocks; /* last - first of them */
    float *lnf_w, *lnf_b, *lm_head;
    float *owned; /* the floats this struct owns (converted or copied tensors) */
    size_t owned_count;
} sl_params;

/* One tensor of a stage: its HF name (with "transformer."), where its pointer lives, shape. */
typedef struct sl_param_ref {
    char name[64];
    float **slot;
    int ndim;
    int64_t shape[2];
    size_t numel;
} sl_param_ref;

/* Calls fn for every tensor of the stage in a fixed order; stops at the first non-zero return. */
int sl_params_foreach(sl_params *p, int (*fn)(sl_param_ref *ref, void *ctx), void *ctx);

/* Number of floats in the stage's tensors (an aliased head counted once). */
size_t sl_params_count(const sl_params *p);

/* Points p at blocks [first, last) of ck (plus embeddings / head as asked). F32 tensors are used
 * in place from the mapping unless copy is true (training needs writable weights, owned in
 * one allocation); F16/BF16 are converted into that allocation. Shapes are checked against the
 * config; errors name the file and tensor. ck must outlive p when copy is false. */
int sl_params_load(sl_params *p, const sl_hf_model *ck, int first, int last, bool embed, bool head, bool copy,
                   sl_err *err);

/* Gives p the layout of a stage in one zeroed allocation it owns. */
int sl_params_alloc(sl_params *p, const sl_config *cfg, int first, int last, bool embed, bool head, sl_err *err);

/* Gives dst the layout of src in one zeroed allocation (gradients, Adam moments). */
int sl_params_alloc_like(sl_params *dst, const sl_params *src, sl_err *err);

/* GPT-2's initialisation, reproducible from seed: weights N(0, 0.02), the residual projections
 * (attn.c_proj, mlp.c_proj) N(0, 0.02/sqrt(2 n_layer)), biases 0, LayerNorm weight 1, bias 0. */
void sl_params_init_gpt2(sl_params *p, uint64_t seed);

/* Saves a whole model (blocks [0, n_layer), embeddings and head) as an HF model directory:
 * config.json and model.safetensors, or n_shards > 1 files model-0000K-of-0000N.safetensors
 * with model.safetensors.index.json. Names carry "transformer." unless prefix is false;
 * lm_head.weight is written when the head is not wte itself. */
int sl_params_save_hf(sl_params *p, const char *dir, sl_dtype dtype, int n_shards, bool prefix, sl_err *err);

/* Frees what p owns and zeroes it; accepts a zeroed struct. */
void sl_params_free(sl_params *p);

#endif
