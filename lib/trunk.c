/* trunk.c — the trunk's training protocol: one run at a time, forward/backward pairs, updates,
 * checkpoints confined below checkpoint_root. */
#include "trunk.h"

#include "ckptstore.h"
#include "clock.h"
#include "fileio.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sl_trunk {
    sl_trunk_opts opts;
    char name[64], parts[PATH_MAX], root[PATH_MAX];
    char host[256]; /* this machine's name, in the acks of dry-run saves */
    sl_learner *learner;
    sl_id run;             /* the trainer's session the training state belongs to (none: none) */
    uint64_t forward_step; /* the training forward whose activations a backward may use */
    bool pristine;         /* the learner holds the split's part as opened: a new run can start from it */
    bool forward_ready, grads_pending;
    sl_msg pending_update; /* the update a backward asked for, applied by sl_trunk_finish */
    bool update_due;
    char save_dir[PATH_MAX]; /* this run's checkpoint (its last save or load): a stop saves beside it */
    long saved_step;         /* the step of that checkpoint */
    double last_message;     /* when the run last sent a training message (sl_now) */
    char **run_dirs;         /* the directories the run saved into or loaded from: its disk use */
    int n_run_dirs;
    float *in, *out;         /* (rows, C): room for the run's batch */
    size_t rows, batch_rows; /* that room; the run's B x T */
};

static void note(const sl_trunk *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const sl_trunk *t, const char *fmt, ...)
{
    if (!t->opts.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    t->opts.log(t->opts.log_ctx, line);
}

static sl_part *open_own_part(const sl_trunk *t, sl_err *err)
{
    return sl_part_open(t->parts, t->opts.first, t->opts.last, t->opts.verify, err);
}

sl_trunk *sl_trunk_new(const sl_trunk_opts *opts, sl_err *err)
{
    sl_trunk *t = calloc(1, sizeof *t);
    if (!t) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    t->opts = *opts;
    snprintf(t->name, sizeof t->name, "%s", opts->name);
    snprintf(t->parts, sizeof t->parts, "%s", opts->parts);
    snprintf(t->root, sizeof t->root, "%s", opts->root);
    t->opts.name = t->name;
    t->opts.parts = t->parts;
    t->opts.root = t->root;
    t->saved_step = -1;
    t->pristine = true;
    if (gethostname(t->host, sizeof t->host) != 0) snprintf(t->host, sizeof t->host, "?");
    t->host[sizeof t->host - 1] = '\0'; /* gethostname need not end a truncated name */
    sl_part *part = open_own_part(t, err);
    if (!part || !(t->learner = sl_learner_new(part, false, err))) sl_trunk_destroy(&t);
    return t;
}

/* A new run has written nothing yet. */
static void forget_run_dirs(sl_trunk *t)
{
    for (int i = 0; i < t->n_run_dirs; i++)
        free(t->run_dirs[i]);
    free(t->run_dirs);
    t->run_dirs = NULL;
    t->n_run_dirs = 0;
}

void sl_trunk_destroy(sl_trunk **self)
{
    assert(self);
    if (!*self) return;
    forget_run_dirs(*self);
    sl_learner_destroy(&(*self)->learner);
    free((*self)->in);
    free((*self)->out);
    free(*self);
    *self = NULL;
}

const sl_params *sl_trunk_params(const sl_trunk *self) { return sl_learner_params(self->learner); }
unsigned sl_trunk_generation(const sl_trunk *self) { return sl_learner_generation(self->learner); }
const sl_part_info *sl_trunk_info(const sl_trunk *self) { return sl_learner_info(self->learner); }

sl_id sl_trunk_run(const sl_trunk *self) { return self->run; }

bool sl_trunk_takes(const sl_msg *msg)
{
    return (msg->kind == SL_MSG_FORWARD && msg->train) || msg->kind == SL_MSG_BACKWARD || msg->kind == SL_MSG_UPDATE ||
           msg->kind == SL_MSG_SAVE || msg->kind == SL_MSG_LOAD;
}

/* Gives the training state to run: a run this trunk has not seen starts from the part's own
 * weights and a fresh optimizer. */
static int begin_run(sl_trunk *t, sl_id run, sl_err *err)
{
    if (sl_id_equal(t->run, run)) return 0;
    if (!t->pristine) {
        if (sl_learner_replace(t->learner, open_own_part(t, err), false, err) != 0) return -1;
        t->pristine = true;
        note(t, "training run %04x..: starting from the part's weights", SL_ID_SHORT(run));
    }
    t->run = run;
    t->forward_ready = t->grads_pending = t->update_due = false;
    t->save_dir[0] = '\0'; /* a stop saves only where this run saved */
    t->saved_step = -1;
    forget_run_dirs(t);
    return 0;
}

/* Buffers for a batch of rows activations. */
static int size_buffers(sl_trunk *t, size_t rows, sl_err *err)
{
    if (rows <= t->rows) return 0;
    size_t C = (size_t)sl_trunk_params(t)->cfg.n_embd;
    float *in = realloc(t->in, rows * C * sizeof(float));
    if (in) t->in = in;
    float *out = in ? realloc(t->out, rows * C * sizeof(float)) : NULL;
    if (out) t->out = out;
    if (!in || !out) return sl_fail(err, "out of memory for a batch of %zu rows", rows);
    t->rows = rows;
    return 0;
}

/* The training state for B x T tokens, made at the run's first training forward. */
static int prepare(sl_trunk *t, int B, int T, sl_err *err)
{
    const sl_params *p = sl_trunk_params(t);
    if (p->embed || p->head)
        return sl_fail(err, "%s is a %s: in training the bottom and the top run inside zmq-splitlearn-train", t->name,
                       p->embed ? "bottom" : "top");
    if ((long)B * T > t->opts.max_train_tokens)
        return sl_fail(err, "a training batch of %d x %d tokens is over this pipeline's max_train_tokens (%d)", B, T,
                       t->opts.max_train_tokens);
    bool fresh = !sl_learner_train(t->learner);
    long restored = sl_learner_steps(t->learner);
    t->pristine = false;
    if (sl_learner_prepare(t->learner, B, T, err) != 0 || size_buffers(t, (size_t)B * T, err) != 0) return -1;
    t->batch_rows = (size_t)B * T;
    if (fresh) {
        note(t, "training: weights copied out of the part (%.1f MB)", (double)sl_params_count(p) * 4 / 1e6);
        if (restored > 0) note(t, "optimizer state restored at step %ld", restored);
    }
    return 0;
}

static int train_forward(sl_trunk *t, const sl_msg *req, sl_msg *reply, sl_err *err)
{
    if (!req->x) return sl_fail(err, "a training forward to %s carries activations", t->name), SL_TRUNK_BAD;
    const int B = (int)req->batch, T = (int)req->rows / B; /* the decoder checked that B divides rows */
    if (begin_run(t, req->session, err) != 0 || prepare(t, B, T, err) != 0) return SL_TRUNK_BAD;
    long steps = sl_learner_steps(t->learner);
    if (req->has_at_step && steps != (long)req->at_step)
        return sl_fail(err,
                       "%s has taken %ld optimizer steps in this run, the trainer %llu: the node restarted or "
                       "another trainer used it meanwhile; continue with --resume from the last checkpoint",
                       t->name, steps, (unsigned long long)req->at_step),
               SL_TRUNK_OUT_OF_STEP;
    sl_msg_copy_x(req, t->in);
    if (sl_backprop_forward(sl_learner_train(t->learner), NULL, t->in, NULL, t->out, NULL, err) != 0)
        return SL_TRUNK_INTERNAL;
    t->forward_step = req->step;
    t->forward_ready = true;
    *reply = *req;
    reply->x = t->out;
    reply->dtype = t->opts.activations;
    return 0;
}

/* Whether req belongs to the run this trunk trains for. */
static int in_run(const sl_trunk *t, const sl_msg *req, sl_err *err)
{
    if (sl_learner_train(t->learner) && sl_id_equal(req->session, t->run)) return 0;
    return sl_fail(err, "%s has no training state of run %04x.. (a trainer that is gone?)", t->name,
                   SL_ID_SHORT(req->session));
}

static int backward(sl_trunk *t, const sl_msg *req, sl_msg *reply, sl_err *err)
{
    if (in_run(t, req, err) != 0) return SL_TRUNK_BAD;
    if (!t->forward_ready || req->step != t->forward_step || (size_t)req->rows != t->batch_rows)
        return sl_fail(err, "%s holds no training forward of step %llu with %u rows to go back through", t->name,
                       (unsigned long long)req->step, req->rows),
               SL_TRUNK_BAD;
    sl_backprop *train = sl_learner_train(t->learner);
    t->forward_ready = false;  /* its saved activations go into this backward, once */
    sl_msg_copy_x(req, t->in); /* the gradient of this stage's output */
    if (sl_backprop_backward(train, t->in, t->out, err) != 0) return SL_TRUNK_INTERNAL;
    t->grads_pending = true;
    *reply = *req;
    if (req->has_gnorm2) reply->gnorm2 = req->gnorm2 + sl_backprop_grad_norm2(train, req->grad_scale);
    reply->x = t->out;
    reply->dtype = t->opts.activations;
    t->update_due = req->update;
    t->pending_update = *req;
    return 0;
}

/* AdamW on the accumulated gradients times the request's scale (1/K, clipping). Non-finite
 * gradients are dropped, not applied: one NaN would poison every later answer. */
static int apply_update(sl_trunk *t, const sl_msg *req, sl_err *err)
{
    sl_backprop *train = sl_learner_train(t->learner);
    t->grads_pending = false;
    if (!isfinite(sl_backprop_grad_norm2(train, req->grad_scale))) {
        sl_backprop_zero_grad(train);
        return sl_fail(err, "non-finite gradients in step %llu: update refused, weights unchanged",
                       (unsigned long long)req->step);
    }
    sl_adamw opt = SL_ADAMW_DEFAULT;
    opt.lr = req->lr;
    opt.weight_decay = req->weight_decay;
    sl_backprop_step(train, &opt, req->grad_scale);
    sl_backprop_zero_grad(train);
    return 0;
}

/* A clipped step's update: applied here, then passed along the forward path (so it always comes
 * before the next forward), back to the trainer at the end. */
static int update(sl_trunk *t, const sl_msg *req, sl_msg *reply, sl_err *err)
{
    if (in_run(t, req, err) != 0) return SL_TRUNK_BAD;
    if (!t->grads_pending)
        return sl_fail(err, "%s has no gradients to apply in step %llu", t->name, (unsigned long long)req->step),
               SL_TRUNK_BAD;
    if (apply_update(t, req, err) != 0) return SL_TRUNK_INTERNAL;
    *reply = *req;
    return 0;
}

int sl_trunk_finish(sl_trunk *self, sl_err *err)
{
    if (!self->update_due) return 0;
    self->update_due = false;
    return apply_update(self, &self->pending_update, err);
}

/* Where a trainer's save or load directory lies on this host: below checkpoint_root (a relative
 * one is taken there), with no ".." anywhere, so a trainer cannot make a node write or read
 * elsewhere. */
static int checkpoint_dir(const sl_trunk *t, const char *asked, char *out, size_t size, sl_err *err)
{
    if (!asked[0]) return sl_fail(err, "no checkpoint directory given");
    for (const char *c = asked; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return sl_fail(err, "a checkpoint directory with a control character (byte %ld) is not allowed",
                           (long)(c - asked));
    for (const char *p = asked; p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL)
        if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == '\0'))
            return sl_fail(err, "checkpoint directory %s: '..' is not allowed", asked);
    size_t len = strlen(t->root);
    bool under = !strncmp(asked, t->root, len) && (asked[len] == '/' || asked[len] == '\0' || len == 1);
    if (asked[0] == '/' && !under)
        return sl_fail(err,
                       "checkpoint directory %s is outside %s, where %s keeps checkpoints (checkpoint_root): set "
                       "checkpoint_root = %s in [pipeline], or use a path below %s (a relative one is taken there)",
                       asked, t->root, t->name, asked, t->root);
    int written = asked[0] == '/' ? snprintf(out, size, "%s", asked) : snprintf(out, size, "%s/%s", t->root, asked);
    return written < (int)size ? 0 : sl_fail(err, "checkpoint directory %s: path too long", asked);
}

/* Counts dir among the run's directories (once). */
static int add_run_dir(sl_trunk *t, const char *dir, sl_err *err)
{
    for (int i = 0; i < t->n_run_dirs; i++)
        if (sl_same_dir(dir, t->run_dirs[i])) return 0;
    char **more = realloc(t->run_dirs, (size_t)(t->n_run_dirs + 1) * sizeof *more);
    char *copy = more ? strdup(dir) : NULL;
    if (more) t->run_dirs = more;
    if (!copy) return sl_fail(err, "out of memory");
    t->run_dirs[t->n_run_dirs++] = copy;
    return 0;
}

/* Adds to *held the bytes of this part's checkpoint files in dir. */
static int add_held(const sl_trunk *t, const char *dir, unsigned long long *held, sl_err *err)
{
    unsigned long long bytes;
    const sl_part_info *info = sl_trunk_info(t);
    if (sl_part_checkpoint_bytes(dir, info->role, info->name, &bytes, err) != 0) return -1;
    *held += bytes;
    return 0;
}

/* Whether run's save into dir keeps its disk use within max_checkpoint: what its saves of this
 * part hold in its directories (dir's too; a run that is not the trunk's yet has none) and the
 * room of the save to write. */
static int within_checkpoint_limit(const sl_trunk *t, sl_id run, const char *dir, sl_err *err)
{
    if (!t->opts.max_checkpoint) return 0;
    unsigned long long held = 0, save = sl_checkpoint_room(sl_params_count(sl_trunk_params(t)), true);
    bool listed = false, ours = sl_id_equal(run, t->run);
    for (int i = 0; ours && i < t->n_run_dirs; i++) {
        listed = listed || sl_same_dir(t->run_dirs[i], dir);
        if (add_held(t, t->run_dirs[i], &held, err) != 0) return -1;
    }
    if (!listed && add_held(t, dir, &held, err) != 0) return -1;
    if (held + save <= t->opts.max_checkpoint) return 0;
    return sl_fail(err,
                   "this run's checkpoints of %s would take %.1f MB with this save (%.1f MB saved, up to %.1f MB "
                   "for this one), over max_checkpoint_mb = %.1f: raise it in [pipeline] or [node.%s]",
                   t->name, (double)(held + save) / 1048576.0, (double)held / 1048576.0, (double)save / 1048576.0,
                   (double)t->opts.max_checkpoint / 1048576.0, t->name);
}

/* Writes the part and optimizer state as dir's checkpoint of the current step (nothing when dir
 * already holds this run's save of it). */
static int save_to(sl_trunk *t, const char *dir, double loss, sl_err *err)
{
    long step = sl_learner_steps(t->learner);
    long base = t->save_dir[0] && sl_same_dir(dir, t->save_dir) ? t->saved_step : -1;
    if (base == step && base >= 0) return 0;
    sl_part_info saved;
    if (within_checkpoint_limit(t, t->run, dir, err) != 0 ||
        sl_learner_save(t->learner, dir, base, loss, &saved, err) != 0 || add_run_dir(t, dir, err) != 0)
        return -1;
    note(t, "saved %s (step %ld)", saved.file, step);
    return 0;
}

static void ack(const sl_trunk *t, const sl_msg *req, sl_msg *reply)
{
    *reply = (sl_msg){.kind = SL_MSG_ACK, .session = req->session, .step = req->step};
    snprintf(reply->node, sizeof reply->node, "%s", t->name);
}

/* Whether dir is run's checkpoint here: where it last saved or resumed from. */
static bool run_dir(const sl_trunk *t, sl_id run, const char *dir)
{
    return sl_id_equal(t->run, run) && t->save_dir[0] && sl_same_dir(dir, t->save_dir);
}

/* A run saves where it saved before or resumed from, or where no checkpoint of this part is: a
 * save never replaces another run's. */
static int own_checkpoint_dir(const sl_trunk *t, sl_id run, const char *dir, sl_err *err)
{
    if (run_dir(t, run, dir)) return 0;
    sl_err ignored;
    sl_part *there = sl_part_open_checkpoint(dir, sl_trunk_info(t)->role, sl_trunk_info(t)->name, -1, false, &ignored);
    bool taken = there != NULL;
    sl_part_destroy(&there);
    return taken ? sl_fail(err, "%s holds another run's checkpoint of %s: give this run a directory of its own", dir,
                           t->name)
                 : 0;
}

static int save(sl_trunk *t, const sl_msg *req, sl_msg *reply, sl_err *err)
{
    char dir[PATH_MAX];
    if (checkpoint_dir(t, req->dir, dir, sizeof dir, err) != 0 || begin_run(t, req->session, err) != 0 ||
        own_checkpoint_dir(t, req->session, dir, err) != 0 ||
        save_to(t, dir, req->has_loss ? req->loss : NAN, err) != 0) {
        sl_err_prefix(err, "cannot save");
        return SL_TRUNK_INTERNAL;
    }
    t->saved_step = sl_learner_steps(t->learner);
    snprintf(t->save_dir, sizeof t->save_dir, "%s", dir);
    ack(t, req, reply);
    return 0;
}

/* Whether dir (there, or made by the save) takes files and has room for a run's saves of the
 * part; the error says what to change. */
static int check_room(const sl_trunk *t, const char *dir, bool resumed_there, sl_err *err)
{
    sl_err why;
    if (sl_check_output(dir, true, &why) != 0)
        return sl_fail(err,
                       "%s: use another directory, or set checkpoint_root in [pipeline] to a directory %s can "
                       "write on its host",
                       why.msg, t->name);
    if (sl_check_space(dir, sl_checkpoint_room(sl_params_count(sl_trunk_params(t)), resumed_there), &why) != 0)
        return sl_fail(err,
                       "%s: free space there, or set checkpoint_root in [pipeline] to a file system of %s's host "
                       "with room",
                       why.msg, t->name);
    return 0;
}

/* A dry run of save: whether the run's saves into the directory asked would work (the rule,
 * another run's checkpoint, write access, room, max_checkpoint), acked with that directory as an
 * absolute path and this host's name. Nothing is written and the training state stays as it is. */
static int check_save(const sl_trunk *t, const sl_msg *req, sl_msg *reply, sl_err *err)
{
    char dir[PATH_MAX];
    if (checkpoint_dir(t, req->dir, dir, sizeof dir, err) != 0 || own_checkpoint_dir(t, req->session, dir, err) != 0 ||
        check_room(t, dir, run_dir(t, req->session, dir), err) != 0 ||
        within_checkpoint_limit(t, req->session, dir, err) != 0) {
        sl_err_prefix(err, "cannot save");
        return SL_TRUNK_INTERNAL;
    }
    ack(t, req, reply);
    snprintf(reply->host, sizeof reply->host, "%s", t->host);
    if (snprintf(reply->dir, sizeof reply->dir, "%s", dir) >= (int)sizeof reply->dir)
        return sl_fail(err, "cannot save in %s: its path is longer than the %zu bytes a message carries", dir,
                       sizeof reply->dir - 1),
               SL_TRUNK_INTERNAL;
    return 0;
}

/* Whether a checkpoint's part can replace this trunk's: same layers, same model. (The step is
 * sl_part_open_checkpoint's to match.) */
static int check_checkpoint(const sl_trunk *t, const sl_part_info *info, sl_err *err)
{
    const sl_config *a = &info->cfg, *b = &sl_trunk_params(t)->cfg;
    if (info->first != t->opts.first || info->last != t->opts.last)
        return sl_fail(err, "%s holds layers [%d,%d), this node runs [%d,%d)", info->file, info->first, info->last,
                       t->opts.first, t->opts.last);
    if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->n_head != b->n_head || a->n_inner != b->n_inner ||
        a->vocab_size != b->vocab_size || a->n_positions != b->n_positions)
        return sl_fail(err, "%s is a part of another model (its config differs from %s's)", info->file, t->parts);
    return 0;
}

/* Resuming: the part and optimizer state from a checkpoint directory on this host. */
static int load(sl_trunk *t, const sl_msg *req, sl_msg *reply, sl_err *err)
{
    char dir[PATH_MAX];
    long at = req->has_at_step ? (long)req->at_step : -1;
    sl_part *part =
        checkpoint_dir(t, req->dir, dir, sizeof dir, err) == 0
            ? sl_part_open_checkpoint(dir, sl_trunk_info(t)->role, sl_trunk_info(t)->name, at, t->opts.verify, err)
            : NULL;
    if (part && check_checkpoint(t, sl_part_info_of(part), err) != 0) sl_part_destroy(&part);
    if (!part || sl_learner_replace(t->learner, part, true, err) != 0) {
        sl_err_prefix(err, "cannot load the checkpoint");
        return SL_TRUNK_INTERNAL;
    }
    t->pristine = false;
    t->run = req->session;
    t->forward_ready = t->grads_pending = t->update_due = false;
    forget_run_dirs(t);
    if (add_run_dir(t, dir, err) != 0) return SL_TRUNK_INTERNAL;
    snprintf(t->save_dir, sizeof t->save_dir, "%s", dir);
    t->saved_step = sl_trunk_info(t)->step;
    note(t, "loaded %s (step %ld)", sl_trunk_info(t)->file, sl_trunk_info(t)->step);
    ack(t, req, reply);
    return 0;
}

int sl_trunk_handle(sl_trunk *self, const sl_msg *msg, sl_msg *reply, sl_trunk_to *to, sl_err *err)
{
    self->last_message = sl_now();
    switch (msg->kind) {
    case SL_MSG_FORWARD:
        *to = SL_TRUNK_NEXT;
        return train_forward(self, msg, reply, err);
    case SL_MSG_BACKWARD:
        *to = SL_TRUNK_PREV;
        return backward(self, msg, reply, err);
    case SL_MSG_UPDATE:
        *to = SL_TRUNK_NEXT;
        return update(self, msg, reply, err);
    case SL_MSG_SAVE:
        *to = SL_TRUNK_CLIENT;
        return msg->dry_run ? check_save(self, msg, reply, err) : save(self, msg, reply, err);
    case SL_MSG_LOAD:
        *to = SL_TRUNK_CLIENT;
        return load(self, msg, reply, err);
    default:
        return sl_fail(err, "%s does not take '%s' messages in training", self->name, sl_msg_kind_name(msg->kind)),
               SL_TRUNK_BAD;
    }
}

int sl_trunk_expire(sl_trunk *self, double now, double idle, sl_err *err)
{
    if (self->pristine || now - self->last_message <= idle) return 0;
    if (sl_learner_replace(self->learner, open_own_part(self, err), false, err) != 0) return -1;
    note(self, "training run %04x.. idle for %.0f s: its training state freed", SL_ID_SHORT(self->run),
         now - self->last_message);
    self->pristine = true;
    self->run = (sl_id){{0}};
    self->forward_ready = self->grads_pending = self->update_due = false;
    self->save_dir[0] = '\0';
    self->saved_step = -1;
    forget_run_dirs(self);
    free(self->in);
    free(self->out);
    self->in = self->out = NULL;
    self->rows = self->batch_rows = 0;
    return 1;
}

int sl_trunk_save_on_stop(sl_trunk *self, char *saved_dir, size_t size, sl_err *err)
{
    long step = sl_learner_steps(self->learner);
    if (!sl_learner_train(self->learner) || !self->save_dir[0] || step == self->saved_step) return 0;
    int written = snprintf(saved_dir, size, "%s/stopped-step%ld", self->save_dir, step);
    if (written >= (int)size) return sl_fail(err, "%s/stopped-step%ld: path too long", self->save_dir, step);
    return save_to(self, saved_dir, NAN, err) == 0 ? 1 : -1; /* the loss is the top's */
}
