/* seed_import.h — split parts written by the seed's tool (splitlearn_core's save_split_model),
 * imported into our split layout (part.h) so that nodes can serve them.
 *
 * A seed directory (<stem> = <name>_<splits>_<component>, e.g. gpt2_2-10_bottom):
 *
 *   SEED/bottom/<stem>.pt   wte.weight, wpe.weight and blocks [0, s1) as h.0.*, h.1.*, ...
 *   SEED/trunk/<stem>.pt    blocks [s1, s2) renumbered from h.0 (one file per trunk, if several)
 *   SEED/top/<stem>.pt      blocks [sN, L) renumbered from h.0, ln_f.*, lm_head.weight
 *   SEED/<role>/<stem>_metadata.json beside each: {"model_class", "component": "bottom" | "trunk"
 *     | "top", "start_layer", "end_layer" (blocks [start, end) of the model), "num_layers",
 *     "num_parameters", "memory_mb", "config": {the model's HF config}, "saved_at"}
 *
 * Each .pt is torch.save of a state dict (names without "transformer."), read without running
 * code (torch_file.h). The import checks that the components chain (the bottom from block 0, each
 * part starting where the one before ends, the top ending at n_layer), that they share one config,
 * every tensor's shape against it and every part's parameter count against its metadata; then
 * writes OUT as sl_split_write does (split.json; per part a safetensors file with HF names, block
 * numbers restored, and metadata with its SHA-256), naming the seed directory and the SHA-256 of
 * each of its files as the source. */
#ifndef SL_SEED_IMPORT_H
#define SL_SEED_IMPORT_H

#include "split.h"

typedef struct sl_seed_request {
    const char *seed_dir;
    const char *out_dir;
    const char *name;  /* model name in our file names; NULL: the seed's, from its file names */
    sl_wformat format; /* of the parts' matrices (params.h) */
} sl_seed_request;

/* Imports the seed's parts. parts (room for SL_MAX_SPLITS + 1) receives the parts written, in
 * chain order, and name (name_size bytes) the model name used. Returns the number of parts, or
 * -1 with err naming the file and what is wrong. */
int sl_seed_import(const sl_seed_request *req, sl_part_info *parts, char *name, size_t name_size, sl_err *err);

#endif
