/* hf_model.h — a GPT-2 model as Hugging Face stores it: its config (config.h) and its tensors.
 *
 * A checkpoint is opened from:
 *   - an HF model directory: config.json + model.safetensors, or
 *     model.safetensors.index.json + model-0000N-of-0000M.safetensors shards, or PyTorch's
 *     pytorch_model.bin, or pytorch_model.bin.index.json + its shards (torch_file.h);
 *   - an HF hub cache entry (models--org--name/, snapshots/<rev>/ symlinks into blobs/): the
 *     revision that refs/main names; a bare repo id ("gpt2", "org/name") is looked up in
 *     $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub;
 *   - a single file, safetensors or PyTorch (.pt, .bin), with the config.json beside it, or with
 *     a config known or named (a split part, see part.h; a tool's --config).
 * Tensors are looked up by their HF names with or without the "transformer." prefix. */
#ifndef SL_HF_MODEL_H
#define SL_HF_MODEL_H

#include "config.h"
#include "err.h"
#include "tensor.h"

#include <stddef.h>

typedef struct sl_hf_model sl_hf_model;

/* Opens a model directory, hub cache entry or repo id as described above. Caller owns it. */
sl_hf_model *sl_hf_model_open(const char *path, sl_err *err);

/* Opens one file (safetensors, or PyTorch for any other name) whose config is already known (a
 * split part). */
sl_hf_model *sl_hf_model_open_file(const char *path, const sl_config *cfg, sl_err *err);

/* sl_hf_model_open, or with config_path (not NULL) the checkpoint file path with that
 * config.json (a tool's --config). */
sl_hf_model *sl_hf_model_open_with_config(const char *path, const char *config_path, sl_err *err);

void sl_hf_model_destroy(sl_hf_model **self);

const sl_config *sl_hf_model_config(const sl_hf_model *self);

/* The directory the files were found in (a hub snapshot resolved), or the file's directory. */
const char *sl_hf_model_dir(const sl_hf_model *self);

/* Number of weight files and the path of the i-th (for hashing and messages). */
size_t sl_hf_model_file_count(const sl_hf_model *self);
const char *sl_hf_model_file_path(const sl_hf_model *self, size_t i);

/* The tensor with this name (tried as "transformer.<name>" and "<name>"), or NULL. When file
 * is not NULL it receives the path of the file holding it. Owned by the checkpoint. */
const sl_tensor *sl_hf_model_tensor(const sl_hf_model *self, const char *name, const char **file);

/* A "__metadata__" value of its safetensors files (the first file that has key), or NULL. Owned
 * by the checkpoint. */
const char *sl_hf_model_metadata(const sl_hf_model *self, const char *key);

#endif
