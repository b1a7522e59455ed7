/* trunk.h — what a trunk node does with training messages: the protocol's state machine, apart
 * from sockets so that it can be tested without processes.
 *
 * A trunk trains for one run at a time (the trainer's session id): the first training message of
 * a run it has not seen starts from the part's own weights and a fresh optimizer, so one run's
 * progress never leaks into another. Within a run:
 *   forward (train)  keeps its activations; its at_step must equal the trunk's optimizer steps;
 *                    one batch shape per run, at most max_train_tokens rows
 *   backward         must answer the last training forward (same step, same rows), once;
 *                    with "update", AdamW follows once its gradient has been sent on
 *   update           needs the gradients of a backward; non-finite gradients are refused
 *   save             writes the part and optimizer state below checkpoint_root, unless the run's
 *                    saves (every file of this part in the directories it saved into or loaded
 *                    from) would hold more than max_checkpoint bytes with it; a dry run only
 *                    checks that it could (allowed, writable, room, the limit) and says where
 *   load             replaces weights and optimizer state by a checkpoint's below checkpoint_root
 * Anything else is refused with SL_TRUNK_BAD (the sender's mistake) or SL_TRUNK_INTERNAL.
 * Ownership: the trunk owns its learner; replies point into its buffers until the next call. */
#ifndef SL_TRUNK_H
#define SL_TRUNK_H

#include "learner.h"
#include "wire.h"

typedef struct sl_trunk_opts {
    const char *name;                         /* the node's name, in errors */
    const char *parts;                        /* the split directory the part comes from */
    int first, last;                          /* its layers */
    bool verify;                              /* recompute SHA-256 of what it opens */
    int max_train_tokens;                     /* B x T of a batch it accepts */
    unsigned long long max_checkpoint;        /* bytes a run's saves may hold on disk (0: no limit) */
    const char *root;                         /* checkpoint_root, an existing directory */
    sl_dtype activations;                     /* dtype of what it sends */
    void (*log)(void *ctx, const char *line); /* its events, for the node's log; may be NULL */
    void *log_ctx;
} sl_trunk_opts;

typedef struct sl_trunk sl_trunk;

/* Opens the part and its trunk state. Caller owns the result; NULL with err. */
sl_trunk *sl_trunk_new(const sl_trunk_opts *opts, sl_err *err);
void sl_trunk_destroy(sl_trunk **self);

/* The weights inference uses; see sl_learner_params and sl_learner_generation. */
const sl_params *sl_trunk_params(const sl_trunk *self);
unsigned sl_trunk_generation(const sl_trunk *self);
const sl_part_info *sl_trunk_info(const sl_trunk *self);

/* The run (trainer's session id) the training state belongs to; all-zero: none. */
sl_id sl_trunk_run(const sl_trunk *self);

/* Whether msg is a training message (this module's to handle). */
bool sl_trunk_takes(const sl_msg *msg);

typedef enum sl_trunk_to {
    SL_TRUNK_NEXT,   /* the next stage (a training forward's activations, an update passed on) */
    SL_TRUNK_PREV,   /* the previous stage (a backward's gradient) */
    SL_TRUNK_CLIENT, /* back to whoever asked (an ack of save or load) */
} sl_trunk_to;

/* Refusals: the sender's mistake; this node's failure; a training forward of another step than the
 * trunk's (it restarted, or another trainer used it: the trainer can reload its last checkpoint). */
enum { SL_TRUNK_BAD = -1, SL_TRUNK_INTERNAL = -2, SL_TRUNK_OUT_OF_STEP = -3 };

/* Handles one training message. Returns 0 with *reply to send to *to (its payload a view into
 * the trunk's buffers, valid until the next call), or SL_TRUNK_BAD / SL_TRUNK_INTERNAL with err.
 * After sending a backward's reply, call sl_trunk_finish. */
int sl_trunk_handle(sl_trunk *self, const sl_msg *msg, sl_msg *reply, sl_trunk_to *to, sl_err *err);

/* Applies the update a backward asked for (after its gradient went on, so that the previous stage
 * works meanwhile). 0 when there was none. */
int sl_trunk_finish(sl_trunk *self, sl_err *err);

/* Frees the training state (weights copy, gradients, moments) of a run whose trainer has sent
 * nothing for idle seconds (now and the messages' times on sl_now's clock): the trunk serves
 * its part's own weights again. Returns 1 when it freed something. */
int sl_trunk_expire(sl_trunk *self, double now, double idle, sl_err *err);

/* Stopped mid-training: what the run learned since its checkpoint DIR is saved to
 * DIR/stopped-step<K>, a checkpoint of this trunk alone, leaving DIR consistent for --resume.
 * Returns 1 when it saved (the path in saved_dir), 0 when there was nothing to save, -1. */
int sl_trunk_save_on_stop(sl_trunk *self, char *saved_dir, size_t size, sl_err *err);

#endif
