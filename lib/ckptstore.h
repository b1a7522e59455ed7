/* ckptstore.h — the checkpoint store: where training saves each part it trains, the save before
 * that one, and the save being written, so that an interrupted save never costs the last good one.
 *
 * A checkpoint directory DIR keeps each part at DIR/<role>/checkpoint_<name>.safetensors, its
 * metadata (part.h, with the training step and, when known and finite, the loss of that step) and
 * optimizer state (checkpoint_<name>_optim.safetensors) beside it, and the save before it in
 * DIR/<role>/prev/. Whoever trains a part writes and reads only its own files there, so a
 * checkpoint spread over several hosts needs no shared directory, and a save that stops half-way
 * on some host leaves every part's previous save to resume from. The trainer adds split.json
 * (split.h) so that a checkpoint loads like any split.
 *
 * Writing: sl_part_write_checkpoint writes the part and its metadata into DIR/<role>/next/
 * (info->file says where: the optimizer state goes beside it), then sl_part_commit_checkpoint
 * makes them the save of `step` (info->file follows). The current save becomes the previous one
 * when it is complete and of step `base`, the save this run resumed from or last committed (-1:
 * none); any other (an abandoned save of an interrupted run) is replaced, the previous kept. */
#ifndef SL_CKPTSTORE_H
#define SL_CKPTSTORE_H

#include "err.h"
#include "params.h"
#include "part.h"
#include "role.h"

#include <stdbool.h>
#include <stddef.h>

/* The current save's part file of (role, name) under dir: DIR/<role>/checkpoint_<name>.safetensors. */
int sl_part_checkpoint_file(const char *dir, sl_role role, const char *name, char *out, size_t size, sl_err *err);

/* The room a run's saves of a part of `parameters` weights take in a checkpoint directory: a save
 * is F32 weights and AdamW's two moments (12 bytes a weight) and metadata; a directory holds the
 * previous, the current and the next save, so three in a new directory and one more in the
 * directory the run resumed from. */
unsigned long long sl_checkpoint_room(size_t parameters, bool resumed_there);

/* Writes p (in its own format: F32 once trained, a part's F16, BF16 or Q8_0 as it was loaded when
 * it never trained) and its metadata with step and loss (NaN or infinite: no loss) into the next
 * save's slot; info receives what was written. */
int sl_part_write_checkpoint(sl_params *p, const char *name, sl_role role, const char *dir, long step, double loss,
                             sl_part_info *info, sl_err *err);

/* Makes the next save of info's part the current one, as described above. */
int sl_part_commit_checkpoint(const char *dir, long base, long step, sl_part_info *info, sl_err *err);

/* *bytes receives the size of the files (role, name) has under dir: its current save, the save
 * before it and a save being written or left unfinished. Missing files count 0. */
int sl_part_checkpoint_bytes(const char *dir, sl_role role, const char *name, unsigned long long *bytes, sl_err *err);

/* Opens the part a checkpoint holds for (role, name) under dir, without its split.json: its
 * current save or, with step >= 0, the current or previous save of that step. Caller owns the
 * result. */
sl_part *sl_part_open_checkpoint(const char *dir, sl_role role, const char *name, long step, bool verify, sl_err *err);

#endif
