/* split.h — a split directory: a model's parts in chain order and split.json, their index.
 * Writing one from an HF model, writing and reading the index, merging the parts back into one
 * HF model.
 *
 * Directory written by sl_split_write (name = model name, splits = "2-10"):
 *   OUT/split.json                                   index: name, splits, parts in chain order
 *   OUT/bottom/<name>_<splits>_bottom.safetensors    wte, wpe, blocks [0, s1)
 *   OUT/bottom/<name>_<splits>_bottom_metadata.json  (part.h)
 *   OUT/trunk/<name>_<splits>_trunkK.safetensors     blocks [sK, sK+1), K = 1, 2, ...
 *   OUT/top/<name>_<splits>_top.safetensors          blocks [sN, L), ln_f, lm_head.weight
 *
 * split.json: {"format": "zmq-splitlearn-split", "version": 1, "name", "splits": [s1, ...],
 * "dtype", "source" (as in the parts' metadata, when known), "tool", "parts": [{"name", "role",
 * "layers": [first, last], "metadata": its path relative to OUT, or absolute}]}. A training
 * checkpoint (ckptstore.h) has one too, so that it loads like any split. */
#ifndef SL_SPLIT_H
#define SL_SPLIT_H

#include "hf_model.h"
#include "dtype.h"
#include "err.h"
#include "part.h"

#include <stddef.h>

#define SL_MAX_SPLITS 64

struct cJSON;

typedef void (*sl_progress_fn)(void *ctx, size_t done, size_t total);

typedef struct sl_split_request {
    const char *model_path; /* as given by the user, recorded as the source */
    const char *name;       /* model name used in file names */
    const int *splits;      /* strictly increasing, inside 1 .. n_layer-1 */
    int n_splits;
    sl_wformat format; /* of the parts' matrices (params.h) */
    const char *out_dir;
    sl_progress_fn progress; /* may be NULL; called with bytes written so far */
    void *progress_ctx;
} sl_split_request;

/* Checks req's split points against the model: 1 to SL_MAX_SPLITS, increasing, inside
 * 1..n_layer-1 (sl_split_write checks them too). */
int sl_split_check(const sl_config *cfg, const sl_split_request *req, sl_err *err);

/* Writes the parts, their metadata and split.json; parts[] (n_splits + 1 entries) receives what
 * was written. */
int sl_split_write(const sl_hf_model *ck, const sl_split_request *req, sl_part_info *parts, sl_err *err);

/* Writes OUT/split.json listing parts (in chain order, files under out_dir). source may be NULL;
 * the index gets a copy of it, the caller keeps it. */
int sl_split_write_index(const char *out_dir, const char *name, const sl_part_info *parts, int n,
                         const struct cJSON *source, sl_err *err);

/* Reads OUT/split.json and each part's metadata: the parts in chain order (at most max). Returns
 * the count or -1. */
int sl_split_read_index(const char *dir, sl_part_info *parts, int max, sl_err *err);

/* Joins the parts of a split directory (or a training checkpoint) into one HF GPT-2 model
 * directory: config.json and model.safetensors with transformer.-prefixed names in dtype (F32, F16
 * or BF16). The result is untied (lm_head.weight from the top, wte from the bottom). */
int sl_split_merge(const char *dir, const char *out, sl_dtype dtype, sl_err *err);

/* The same model in memory: p receives every block, the embeddings and the untied head of the
 * parts of dir (verified against their SHA-256), in one allocation it owns. */
int sl_split_join(const char *dir, sl_params *p, sl_err *err);

#endif
