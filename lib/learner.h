/* learner.h — one part being trained: its weights (used in place from the part's mapping until
 * training needs a writable copy), its gradients and AdamW state for one batch shape, and its
 * checkpoints (the part, its metadata and its optimizer state, written and committed as one save).
 *
 * Every trained stage is a learner: the trainer's bottom and top (and its trunks when they run in
 * the same process) and each trunk node's part (driven by the trunk protocol, trunk.h).
 * Ownership: a learner owns the part it is given and the weights it copies. */
#ifndef SL_LEARNER_H
#define SL_LEARNER_H

#include "part.h"
#include "backprop.h"

/* The optimizer state beside a part file: <stem>_optim.safetensors. */
void sl_learner_state_path(const char *part_file, char *out, size_t size);

typedef struct sl_learner sl_learner;

/* A learner of part (taken over, even on failure). With state, the optimizer state saved beside
 * the part (a checkpoint's) is restored when training starts. NULL with err on failure. */
sl_learner *sl_learner_new(sl_part *part, bool with_state, sl_err *err);
void sl_learner_destroy(sl_learner **self);

/* Replaces the weights with part's (taken over, even on failure), dropping the training state:
 * the part's own weights again (a new run), or a checkpoint's (with_state: its optimizer state
 * too). On failure the learner keeps what it had. */
int sl_learner_replace(sl_learner *self, sl_part *part, bool with_state, sl_err *err);

/* The weights. The struct stays where it is for the learner's life; its contents change when
 * sl_learner_generation does. */
sl_params *sl_learner_params(sl_learner *self);

/* Changes whenever the weights are replaced or copied (not when updated in place): whoever keeps
 * state computed from them (a runner's buffers, KV caches) makes it again. */
unsigned sl_learner_generation(const sl_learner *self);

/* What the part is: name, role, layers, file; step and loss of a checkpoint. */
const sl_part_info *sl_learner_info(const sl_learner *self);

/* Makes the training state for batches of B x T tokens: copies the weights out of the mapping
 * (dropping it: its pages would count in the process's RSS for nothing) and restores a pending
 * optimizer state. One shape per learner: another shape is refused. */
int sl_learner_prepare(sl_learner *self, int B, int T, sl_err *err);

/* The training state; NULL before sl_learner_prepare. */
sl_backprop *sl_learner_train(sl_learner *self);

/* Optimizer steps taken: the trainer's, or those of a checkpoint whose state waits for prepare. */
long sl_learner_steps(const sl_learner *self);

/* Writes the weights and optimizer state as dir's save of the current step (see part.h's
 * checkpoint store; base as there). saved, when not NULL, receives what was written. */
int sl_learner_save(sl_learner *self, const char *dir, long base, double loss, sl_part_info *saved, sl_err *err);

#endif
