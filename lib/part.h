/* part.h — split parts: one safetensors file per stage holding only that stage's tensors, plus a
 * metadata JSON that says what it is; and the index of a split directory.
 *
 * Directory written by sl_split_write (name = model name, splits = "2-10"):
 *   OUT/split.json                                   index: name, splits, parts in chain order
 *   OUT/bottom/<name>_<splits>_bottom.safetensors    wte, wpe, blocks [0, s1)
 *   OUT/bottom/<name>_<splits>_bottom_metadata.json
 *   OUT/trunk/<name>_<splits>_trunkK.safetensors     blocks [sK, sK+1), K = 1, 2, ...
 *   OUT/top/<name>_<splits>_top.safetensors          blocks [sN, L), ln_f, lm_head.weight
 * Tensor names are HF's ("transformer.h.3.attn.c_attn.weight"), so a part is a subset of an HF
 * checkpoint. A tied model's top gets its own copy of wte as lm_head.weight: once split, the
 * embedding and the head are separate tensors (trained separately in split learning).
 *
 * Metadata JSON: {"format": "zmq-splitlearn-part", "version": 1, "name", "part", "role":
 * "bottom"|"trunk"|"top", "layers": [first, last], "splits": [...], "config": {HF config},
 * "parameters", "bytes", "dtype", "file", "sha256", "source": {"path", "files": [{"file",
 * "sha256"}]}, "tool", and after training "step", "loss"}. */
#ifndef SL_PART_H
#define SL_PART_H

#include "checkpoint.h"
#include "params.h"

#include <limits.h>

#define SL_MAX_SPLITS 64

typedef enum sl_role { SL_ROLE_BOTTOM, SL_ROLE_TRUNK, SL_ROLE_TOP } sl_role;

const char *sl_role_name(sl_role role);
int sl_role_parse(const char *name, sl_role *out);

typedef struct sl_part_info {
    char name[64]; /* part name: bottom, trunk1.., top */
    sl_role role;
    int first, last; /* blocks [first, last) */
    sl_config cfg;
    char dtype[8];       /* f32, f16, bf16 */
    char file[PATH_MAX]; /* the safetensors file, absolute or relative to the cwd */
    char sha256[65];
    size_t bytes, parameters;
    long step; /* training step of a checkpoint, -1 when never trained */
    double loss;
} sl_part_info;

/* The path of a file beside a part: its name without ".safetensors", then suffix
 * ("_metadata.json", "_optim.safetensors"). */
void sl_part_sibling(const char *part_file, const char *suffix, char *out, size_t size);

/* Reads a part's metadata JSON; info->file is resolved next to it. */
int sl_part_read_metadata(const char *path, sl_part_info *info, sl_err *err);

/* Reads OUT/split.json: the parts in chain order (at most max). Returns the count or -1. */
int sl_split_read_index(const char *dir, sl_part_info *parts, int max, sl_err *err);

/* A loaded part: its tensors mapped from disk. */
typedef struct sl_part sl_part;

/* Opens the part whose layers are [first, last) in a split directory. With verify, the file's
 * SHA-256 is recomputed and a mismatch refused. Caller owns the result. */
sl_part *sl_part_open(const char *dir, int first, int last, bool verify, sl_err *err);
void sl_part_destroy(sl_part **self);
const sl_part_info *sl_part_info_of(const sl_part *self);

/* Points p at the part's tensors (shapes checked against the metadata's config). copy as in
 * sl_params_load. The part must outlive p when copy is false. */
int sl_part_load_params(const sl_part *self, sl_params *p, bool copy, sl_err *err);

typedef void (*sl_progress_fn)(void *ctx, size_t done, size_t total);

typedef struct sl_split_request {
    const char *model_path; /* as given by the user, recorded as the source */
    const char *name;       /* model name used in file names */
    const int *splits;      /* strictly increasing, inside 1 .. n_layer-1 */
    int n_splits;
    sl_dtype dtype; /* F32, F16 or BF16 */
    const char *out_dir;
    sl_progress_fn progress; /* may be NULL; called with bytes written so far */
    void *progress_ctx;
} sl_split_request;

/* Writes the parts, their metadata and split.json; parts[] (n_splits + 1 entries) receives what
 * was written. */
int sl_split_write(const sl_checkpoint *ck, const sl_split_request *req, sl_part_info *parts, sl_err *err);

/* Joins the parts of a split directory (or a training checkpoint) into one HF GPT-2 model
 * directory: config.json and model.safetensors with transformer.-prefixed names in dtype (F32, F16
 * or BF16). The result is untied (lm_head.weight from the top, wte from the bottom). */
int sl_split_merge(const char *dir, const char *out, sl_dtype dtype, sl_err *err);

/* The same model in memory: p receives every block, the embeddings and the untied head of the
 * parts of dir (verified against their SHA-256), in one allocation it owns. */
int sl_split_join(const char *dir, sl_params *p, sl_err *err);

/* Writes OUT/split.json listing parts (in chain order, files under out_dir). */
int sl_split_write_index(const char *out_dir, const char *name, const sl_part_info *parts, int n,
                         const char *source_json, sl_err *err);

/* Writes one part file + metadata from params (used by split and by training checkpoints).
 * extra_json, when not NULL, is a JSON object whose members are added to the metadata. */
int sl_part_write(sl_params *p, const char *name, sl_role role, sl_dtype dtype, const char *dir, const char *file_stem,
                  const char *source_json, const char *extra_json, sl_part_info *info, sl_err *err);

/* A checkpoint keeps each part at DIR/<role>/checkpoint_<name>.safetensors, its metadata (with
 * the training step and, when known and finite, the loss of that step) and optimizer state
 * beside it, and the save before it in DIR/<role>/prev/. Whoever trains a part writes and reads
 * only its own files there, so a checkpoint spread over several hosts needs no shared directory,
 * and a save that stops half-way on some host leaves every part's previous save to resume from.
 *
 * Writing: sl_part_write_checkpoint writes the part and its metadata into DIR/<role>/next/
 * (info->file says where: the optimizer state goes beside it), then sl_part_commit_checkpoint
 * makes them the save of `step` (info->file follows). The current save becomes the previous one
 * when it is complete and of step `base`, the save this run resumed from or last committed (-1:
 * none); any other (an abandoned save of an interrupted run) is replaced, the previous kept. */
int sl_part_checkpoint_file(const char *dir, sl_role role, const char *name, char *out, size_t size, sl_err *err);
int sl_part_write_checkpoint(sl_params *p, const char *name, sl_role role, const char *dir, long step, double loss,
                             sl_part_info *info, sl_err *err);
int sl_part_commit_checkpoint(const char *dir, long base, long step, sl_part_info *info, sl_err *err);

/* Opens the part a checkpoint holds for (role, name) under dir, without its split.json: its
 * current save or, with step >= 0, the current or previous save of that step. Caller owns the
 * result. */
sl_part *sl_part_open_checkpoint(const char *dir, sl_role role, const char *name, long step, bool verify, sl_err *err);

#endif
