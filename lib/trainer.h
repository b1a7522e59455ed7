/* trainer.h — split learning over the parts of a split: every stage (bottom, trunks, top) has its
 * own parameters and its own AdamW state; a step runs the forward stage by stage, the loss at the
 * top, the gradient back stage by stage, and updates each stage from its own gradients. A tied
 * checkpoint is untied once split: the bottom's wte and the top's lm_head are separate copies,
 * each trained by the gradient of its own path.
 *
 * This is the in-process chain: the reference the network pipeline must equal, and what
 * zmq-splitlearn-train runs. Checkpoints are split directories (parts + metadata with step and
 * loss, plus each part's optimizer state beside it) that the inference pipeline loads as is. */
#ifndef SL_TRAINER_H
#define SL_TRAINER_H

#include "ckptstore.h"
#include "privacy.h"
#include "split.h"
#include "topology.h"
#include "backprop.h"

typedef struct sl_trainer_opts {
    int batch, seq_len; /* B sequences of T tokens per micro-batch */
    int grad_accum;     /* micro-batches per step */
    sl_adamw adamw;     /* lr is the peak learning rate */
    float grad_clip;    /* clip the global gradient norm to this; 0: no clipping */
    long warmup, total_steps;
    bool cosine;             /* cosine decay to 10% of lr over total_steps after warmup */
    const char *cert;        /* with security = curve: the trainer's secret certificate (a name in trainers) */
    sl_privacy_opts privacy; /* defences at the cuts: the caller takes them from the topology (privacy.h) */
    /* Lines for the program's log: messages refused at the top's endpoint (not this run's, or not
     * from its last trunk's connection) and, with CURVE, the peers its ZAP handler refused (from
     * that handler's thread: log must be thread-safe). NULL: not logged. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} sl_trainer_opts;

typedef struct sl_trainer sl_trainer;

/* Loads every part of the split directory dir (copied, writable) with its optimizer state when
 * the directory is a checkpoint. Caller owns the result. */
sl_trainer *sl_trainer_new(const char *dir, const sl_trainer_opts *opts, sl_err *err);
/* The same chain with the trunks on the topology's nodes (which must be running): this process
 * runs the bottom and the top, binding their listen endpoints, so token ids and labels never
 * leave it; trunks receive activations and gradients only, and update themselves. The top's
 * endpoint takes answers of this run only (its id is 128 random bits), and once the last trunk
 * answered, from its connection only (with CURVE, from its key only: the ZAP handler admits no
 * other); everything else there is refused and logged, the 1st, 10th, 100th... time. With resume
 * (a checkpoint directory, which must exist at that path on every trunk's host too) every
 * stage continues from it. With gradient clipping the trunks report their gradient norms and
 * update only when the global factor is known. Caller owns the result. */
sl_trainer *sl_trainer_new_remote(const sl_topology *topo, const char *resume, const sl_trainer_opts *opts,
                                  sl_err *err);

void sl_trainer_destroy(sl_trainer **self);

/* One optimizer step over grad_accum micro-batches: ids and targets hold grad_accum * B * T
 * tokens (targets < 0: no target). *loss receives the mean loss of the step's forward passes,
 * before the update. */
int sl_trainer_step(sl_trainer *self, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err);

/* The loss of one micro-batch without training. */
int sl_trainer_eval(sl_trainer *self, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err);

/* The remote trunk whose connection dropped during the last failed step (it stopped or its host
 * went away), or NULL: the run can continue from its last checkpoint once the trunk is back. */
const char *sl_trainer_lost(const sl_trainer *self);

/* NoPeek's distance correlation in the last training micro-batch (NAN without NoPeek). */
double sl_trainer_dcor(const sl_trainer *self);

/* Whether the last failed step failed because the trunks did not answer within the topology's
 * timeout (a stage did not answer: exit status 3 for the programs). */
bool sl_trainer_timed_out(const sl_trainer *self);

/* Steps taken (counting those of the checkpoint it was loaded from). */
long sl_trainer_step_count(const sl_trainer *self);

/* The learning rate of the next step. */
float sl_trainer_lr(const sl_trainer *self);

/* Where a remote trunk saves its part of a checkpoint. */
typedef struct sl_trainer_place {
    char node[64];      /* the trunk's node */
    char host[256];     /* the host name of its machine, as that machine gives it */
    char dir[PATH_MAX]; /* the checkpoint directory there, absolute */
} sl_trainer_place;

/* Asks every remote trunk whether this run's saves into dir would work, before they cost a
 * step: a dry run of save (below its checkpoint_root, no other run's checkpoint there, writable,
 * room for its part and optimizer state; nothing is written). places (room for SL_MAX_SPLITS + 1)
 * gets where each one would save. Returns their number (0: every stage runs here), or -1 with the
 * first trunk's refusal, which says what to change. */
int sl_trainer_check_save(sl_trainer *self, const char *dir, sl_trainer_place *places, sl_err *err);

/* Writes a checkpoint split directory: every part, its metadata ("step", "loss") and its
 * optimizer state (<part>_optim.safetensors), and split.json; each part's save before keeps in
 * <role>/prev/ (see ckptstore.h). Nothing to do when dir holds this run's save of this step. */
int sl_trainer_save(sl_trainer *self, const char *dir, float loss, sl_err *err);

/* Number of stages and the parameters of stage i (for tests and merging). */
int sl_trainer_stages(const sl_trainer *self);
sl_params *sl_trainer_params(sl_trainer *self, int i);

#endif
