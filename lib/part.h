/* part.h — one part of a split model: a safetensors file holding only one stage's tensors, and a
 * metadata JSON beside it that says what it is. Opening a part (its size and, on request, its
 * SHA-256 checked against the metadata), reading the metadata, loading the tensors as a stage's
 * parameters, and writing a part. Where parts live: split.h (a split directory, split.json) and
 * ckptstore.h (the checkpoints training saves).
 *
 * Tensor names are HF's ("transformer.h.3.attn.c_attn.weight"), so a part is a subset of an HF
 * checkpoint. A tied model's top gets its own copy of wte as lm_head.weight: once split, the
 * embedding and the head are separate tensors (trained separately in split learning).
 *
 * Metadata JSON (<file stem>_metadata.json): {"format": "zmq-splitlearn-part", "version": 1,
 * "part", "role": "bottom"|"trunk"|"top", "layers": [first, last], "config": {HF config},
 * "parameters", "bytes", "dtype", "file", "sha256", "source": {"path", "dir", "files": [{"file",
 * "sha256"}]}, "tool", and after training "step", "loss"}. */
#ifndef SL_PART_H
#define SL_PART_H

#include "config.h"
#include "dtype.h"
#include "err.h"
#include "params.h"
#include "role.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

struct cJSON;

typedef struct sl_part_info {
    char name[64]; /* part name: bottom, trunk1.., top */
    sl_role role;
    int first, last; /* blocks [first, last) */
    sl_config cfg;
    char dtype[8];       /* its matrices' format: f32, f16, bf16, q8_0 (wmat.h) */
    char file[PATH_MAX]; /* the safetensors file, absolute or relative to the cwd */
    char sha256[65];
    char model[65]; /* the model it was cut from: SHA-256 of its source files' SHA-256s ("": unknown) */
    size_t bytes, parameters;
    long step; /* training step of a checkpoint, -1 when never trained */
    double loss;
} sl_part_info;

/* The path of a file beside a part: its name without ".safetensors", then suffix
 * ("_metadata.json", "_optim.safetensors"). */
void sl_part_sibling(const char *part_file, const char *suffix, char *out, size_t size);

/* Reads a part's metadata JSON; info->file is resolved next to it. */
int sl_part_read_metadata(const char *path, sl_part_info *info, sl_err *err);

/* A loaded part: its tensors mapped from disk. */
typedef struct sl_part sl_part;

/* Opens the part whose layers are [first, last) in a split directory (split.h). With verify, the
 * file's SHA-256 is recomputed and a mismatch refused. Caller owns the result. */
sl_part *sl_part_open(const char *dir, int first, int last, bool verify, sl_err *err);

/* Opens the part file info describes (its size checked against info, and with verify its
 * SHA-256). Caller owns the result. */
sl_part *sl_part_open_info(const sl_part_info *info, bool verify, sl_err *err);

void sl_part_destroy(sl_part **self);
const sl_part_info *sl_part_info_of(const sl_part *self);

/* Points p at the part's tensors (shapes checked against the metadata's config). copy as in
 * sl_params_load. The part must outlive p when copy is false. */
int sl_part_load_params(const sl_part *self, sl_params *p, bool copy, sl_err *err);

/* Writes one part file and its metadata from p: dir/file_stem.safetensors with its matrices in
 * format (params.h; an F32 stage is converted on the way, other stages are written in their own
 * format only), and info receives what was written. source and extra may be NULL; the metadata
 * gets a copy of source as "source" and of extra's members at its end (a checkpoint's "step" and
 * "loss"). The caller keeps both. */
int sl_part_write(sl_params *p, const char *name, sl_role role, sl_wformat format, const char *dir,
                  const char *file_stem, const struct cJSON *source, const struct cJSON *extra, sl_part_info *info,
                  sl_err *err);

/* sl_part_write in its two halves, for a writer that learns source only once the tensors are
 * written (a split hashes its model's files meanwhile): the tensors and info, then the metadata. */
int sl_part_write_tensors(sl_params *p, const char *name, sl_role role, sl_wformat format, const char *dir,
                          const char *file_stem, sl_part_info *info, sl_err *err);
int sl_part_write_metadata(const sl_part_info *info, const struct cJSON *source, const struct cJSON *extra,
                           sl_err *err);

#endif
