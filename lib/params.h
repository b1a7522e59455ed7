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
 * HF name, so loading, saving, gradients and the optimizer share one list.
 *
 * Weight formats (wmat.h). The matrices (wte, the four of each block, the head) are what the
 * kernels read, through sl_wmat views: in an F32 stage these are views of the float pointers
 * (block matrices in HF's Conv1D layout, wte and the head as rows), which training updates in
 * place; in an F16, BF16 or Q8_0 stage (a part written so, or sl_params_convert) the views are
 * the only copy, in the ROWS layout, and the matrices' float pointers are NULL (such a stage is
 * run, not trained: loading it with copy widens it to F32). wpe, LayerNorms and biases are F32
 * in every format (3 MB for GPT-2 124M; wpe's error would reach every token undamped).
 *
 * In a safetensors file a stage in format F is marked by "__metadata__": {"weights_format": F}
 * ("f16", "bf16", "q8_0"); its matrices are stored as wmat.h says (F16/BF16 as NAME [OC, C];
 * Q8_0 as NAME, I8 [OC, nb*32], and NAME.scales, F16 [OC, nb]). Without that key a file is HF's:
 * Conv1D block matrices in F32, F16 or BF16, the latter two widened to F32 at load. */
#ifndef SL_PARAMS_H
#define SL_PARAMS_H

#include "config.h"
#include "dtype.h"
#include "err.h"
#include "wmat.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The tensors a stage loads from (hf_model.h). */
typedef struct sl_hf_model sl_hf_model;

typedef struct sl_block {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *attn_proj_w, *attn_proj_b;
    float *ln2_w, *ln2_b, *fc_w, *fc_b, *fc_proj_w, *fc_proj_b;
    sl_wmat qkv, attn_proj, fc, fc_proj; /* the four matrices as the kernels read them */
} sl_block;

typedef struct sl_params {
    sl_config cfg;
    int first, last;   /* blocks [first, last) */
    bool embed, head;  /* has wte+wpe / has ln_f+head */
    bool head_is_wte;  /* tied, both in this stage: head aliases wte */
    sl_wformat format; /* of the matrices (see above) */
    float *wte, *wpe;
    sl_block *blocks; /* last - first of them */
    float *lnf_w, *lnf_b, *lm_head;
    sl_wmat wte_m, head_m; /* wte (V,C) and the head (V,C) as rows; the same when head_is_wte */
    float *owned;          /* the floats this struct owns (converted or copied tensors) */
    size_t owned_count;
    void *owned_mats; /* the matrices this struct owns in a format other than F32 */
} sl_params;

/* One tensor of a stage: its HF name (with "transformer."), where its pointer lives, its HF shape
 * (block matrices (in, out), wte and the head (V, C)), and for a matrix its view (NULL for the
 * others). In a stage whose format is not F32 a matrix's *slot is NULL: its values are the view's. */
typedef struct sl_param_ref {
    char name[64];
    float **slot;
    sl_wmat *wmat;
    sl_wlayout layout; /* a matrix's: HF's Conv1D for a block's, rows for wte and the head */
    int in, out;       /* a matrix's inputs and outputs */
    int ndim;
    int64_t shape[2];
    size_t numel;
} sl_param_ref;

/* Calls fn for every tensor of the stage in a fixed order; stops at the first non-zero return. */
int sl_params_foreach(sl_params *p, int (*fn)(sl_param_ref *ref, void *ctx), void *ctx);

/* Number of floats in the stage's tensors (an aliased head counted once). */
size_t sl_params_count(const sl_params *p);

/* Points p at blocks [first, last) of ck (plus embeddings / head as asked). F32 tensors, and the
 * matrices of a file in F16, BF16 or Q8_0 (see above), are used in place from the mapping unless
 * copy is true (training needs writable F32 weights, owned in one allocation); HF's F16/BF16
 * tensors are widened into that allocation. p->format is the file's format, or F32 with copy.
 * Shapes and dtypes are checked against the config and the format; errors name the file and
 * tensor. ck must outlive p when copy is false. */
int sl_params_load(sl_params *p, const sl_hf_model *ck, int first, int last, bool embed, bool head, bool copy,
                   sl_err *err);

/* Makes dst an independent copy of src (an F32 stage) with its matrices converted to format (the
 * others copied as F32): it owns everything, so src and what src borrows can then be freed. */
int sl_params_convert(sl_params *dst, const sl_params *src, sl_wformat format, sl_err *err);

/* Converts p itself to format (nothing to do when it is in it already), giving each of its
 * tensors back to the system once copied (the whole pages inside it: a mapped file's are read
 * again if touched, memory p owns reads zeros), so that the peak is about one copy, not two.
 * Afterwards p owns everything: what it borrowed may be closed. On failure p is freed. */
int sl_params_reformat(sl_params *p, sl_wformat format, sl_err *err);

/* Bytes of the stage's tensors as held in its format (a view's values and scales, an aliased head
 * counted once). */
size_t sl_params_bytes(const sl_params *p);

/* Gives p the layout of a stage in one zeroed allocation it owns. */
int sl_params_alloc(sl_params *p, const sl_config *cfg, int first, int last, bool embed, bool head, sl_err *err);

/* Gives dst the layout of src in one zeroed allocation (gradients, Adam moments). */
int sl_params_alloc_like(sl_params *dst, const sl_params *src, sl_err *err);

/* GPT-2's initialisation, reproducible from seed: weights N(0, 0.02), the residual projections
 * (attn.c_proj, mlp.c_proj) N(0, 0.02/sqrt(2 n_layer)), biases 0, LayerNorm weight 1, bias 0. */
void sl_params_init_gpt2(sl_params *p, uint64_t seed);

/* Saves a whole model (blocks [0, n_layer), embeddings and head; an F32 stage) as an HF model directory:
 * config.json and model.safetensors, or n_shards > 1 files model-0000K-of-0000N.safetensors
 * with model.safetensors.index.json. Names carry "transformer." unless prefix is false;
 * lm_head.weight is written when the head is not wte itself. */
int sl_params_save_hf(sl_params *p, const char *dir, sl_dtype dtype, int n_shards, bool prefix, sl_err *err);

/* Frees what p owns and zeroes it; accepts a zeroed struct. */
void sl_params_free(sl_params *p);

#endif
