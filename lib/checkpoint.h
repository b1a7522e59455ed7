/* checkpoint.h — a GPT-2 model's configuration and tensors as Hugging Face stores them.
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
#ifndef SL_CHECKPOINT_H
#define SL_CHECKPOINT_H

#include "err.h"
#include "safetensors.h"

#include <stdbool.h>

typedef struct sl_config {
    int n_layer, n_embd, n_head, n_inner, vocab_size, n_positions;
    double layer_norm_epsilon;
    bool tie_word_embeddings;
    int eos_token_id;
} sl_config;

/* Parses an HF GPT-2 config.json text; origin names it in errors. Unset n_inner means 4*n_embd. */
int sl_config_parse(const char *json, const char *origin, sl_config *cfg, sl_err *err);

/* Reads and parses a config.json file. */
int sl_config_load(const char *path, sl_config *cfg, sl_err *err);

/* An HF-style config.json text for cfg. Caller frees the result; NULL when out of memory. */
char *sl_config_to_json(const sl_config *cfg);

typedef struct sl_checkpoint sl_checkpoint;

/* Opens a model directory, hub cache entry or repo id as described above. Caller owns it. */
sl_checkpoint *sl_checkpoint_open(const char *path, sl_err *err);

/* Opens one file (safetensors, or PyTorch for any other name) whose config is already known (a
 * split part). */
sl_checkpoint *sl_checkpoint_open_file(const char *path, const sl_config *cfg, sl_err *err);

/* sl_checkpoint_open, or with config_path (not NULL) the checkpoint file path with that
 * config.json (a tool's --config). */
sl_checkpoint *sl_checkpoint_open_with_config(const char *path, const char *config_path, sl_err *err);

void sl_checkpoint_destroy(sl_checkpoint **self);

const sl_config *sl_checkpoint_config(const sl_checkpoint *self);

/* The directory the files were found in (a hub snapshot resolved), or the file's directory. */
const char *sl_checkpoint_dir(const sl_checkpoint *self);

/* Number of weight files and the path of the i-th (for hashing and messages). */
size_t sl_checkpoint_file_count(const sl_checkpoint *self);
const char *sl_checkpoint_file_path(const sl_checkpoint *self, size_t i);

/* The tensor with this name (tried as "transformer.<name>" and "<name>"), or NULL. When file
 * is not NULL it receives the path of the file holding it. Owned by the checkpoint. */
const sl_tensor *sl_checkpoint_tensor(const sl_checkpoint *self, const char *name, const char **file);

#endif
