/* learner.c — a part's weights, training state and checkpoints. */
#include "learner.h"

#include "ckptstore.h"
#include "fileio.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct sl_learner {
    sl_part *part; /* while the weights are used from its mapping */
    sl_part_info info;
    sl_params params;
    bool writable; /* params copied out of the mapping */
    sl_backprop *train;
    int B, T;
    char pending_state[PATH_MAX + 32]; /* optimizer state to restore at prepare ("": none) */
    unsigned generation;
};

void sl_learner_state_path(const char *part_file, char *out, size_t size)
{
    sl_part_sibling(part_file, "_optim.safetensors", out, size);
}

/* Points the learner at part's weights, mapped; the optimizer state beside it when asked. */
static int adopt(sl_learner *l, sl_part *part, bool with_state, sl_err *err)
{
    sl_params mapped;
    if (!part || sl_part_load_params(part, &mapped, false, err) != 0) {
        sl_part_destroy(&part);
        return -1;
    }
    sl_backprop_destroy(&l->train);
    sl_params_free(&l->params);
    sl_part_destroy(&l->part);
    l->part = part;
    l->info = *sl_part_info_of(part);
    l->params = mapped;
    l->writable = false;
    l->generation++;
    l->pending_state[0] = '\0';
    if (with_state) {
        sl_learner_state_path(l->info.file, l->pending_state, sizeof l->pending_state);
        if (access(l->pending_state, F_OK) != 0) l->pending_state[0] = '\0';
    }
    return 0;
}

sl_learner *sl_learner_new(sl_part *part, bool with_state, sl_err *err)
{
    sl_learner *l = calloc(1, sizeof *l);
    if (!l) {
        sl_part_destroy(&part);
        sl_fail(err, "out of memory");
        return NULL;
    }
    if (adopt(l, part, with_state, err) != 0) sl_learner_destroy(&l);
    return l;
}

void sl_learner_destroy(sl_learner **self)
{
    assert(self);
    if (!*self) return;
    sl_learner *l = *self;
    sl_backprop_destroy(&l->train);
    sl_params_free(&l->params);
    sl_part_destroy(&l->part);
    free(l);
    *self = NULL;
}

int sl_learner_replace(sl_learner *self, sl_part *part, bool with_state, sl_err *err)
{
    return adopt(self, part, with_state, err);
}

sl_params *sl_learner_params(sl_learner *self) { return &self->params; }
unsigned sl_learner_generation(const sl_learner *self) { return self->generation; }
const sl_part_info *sl_learner_info(const sl_learner *self) { return &self->info; }
sl_backprop *sl_learner_train(sl_learner *self) { return self->train; }

long sl_learner_steps(const sl_learner *self)
{
    return self->train ? sl_backprop_steps(self->train) : self->pending_state[0] ? self->info.step : 0;
}

/* The weights in one writable allocation of their own, the mapping released. */
static int copy_out(sl_learner *l, sl_err *err)
{
    sl_params copy;
    if (sl_part_load_params(l->part, &copy, true, err) != 0) return -1;
    sl_params_free(&l->params);
    l->params = copy;
    l->writable = true;
    l->generation++;
    sl_part_destroy(&l->part);
    return 0;
}

int sl_learner_prepare(sl_learner *self, int B, int T, sl_err *err)
{
    if (self->train) {
        if (self->B == B && self->T == T) return 0;
        return sl_fail(err, "this run trains batches of %d x %d here, not %d x %d", self->B, self->T, B, T);
    }
    if (!self->writable && copy_out(self, err) != 0) return -1;
    if (!(self->train = sl_backprop_new(&self->params, B, T, err))) return -1;
    self->B = B;
    self->T = T;
    if (self->pending_state[0] && sl_backprop_load_state(self->train, self->pending_state, err) < 0) {
        sl_backprop_destroy(&self->train); /* no training on without the optimizer state it resumes */
        return -1;
    }
    self->pending_state[0] = '\0';
    return 0;
}

int sl_learner_save(sl_learner *self, const char *dir, long base, double loss, sl_part_info *saved, sl_err *err)
{
    char state[PATH_MAX + 32];
    long step = sl_learner_steps(self);
    sl_part_info written;
    if (sl_part_write_checkpoint(&self->params, self->info.name, self->info.role, dir, step, loss, &written, err) != 0)
        return -1;
    sl_learner_state_path(written.file, state, sizeof state);
    int rc = self->train              ? sl_backprop_save_state(self->train, state, err)
             : self->pending_state[0] ? sl_copy_file(self->pending_state, state, err)
                                      : 0;
    if (rc != 0 || sl_part_commit_checkpoint(dir, base, step, &written, err) != 0) return -1;
    if (saved) *saved = written;
    return 0;
}
