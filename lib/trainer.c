/* trainer.c — the in-process split-learning chain: stages, schedule, clipping, checkpoints. */
#include "trainer.h"

#include "fileio.h"

#include <cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stage {
    sl_part_info info;
    sl_part *part;
    sl_params params;
    sl_train *train;
} stage;

struct sl_trainer {
    sl_trainer_opts opts;
    stage stages[SL_MAX_SPLITS + 1];
    int n;
    long steps;
    float *act, *grad; /* (B*T, C) crossing the boundaries, two of each to ping-pong */
    float *act2, *grad2;
    char name[128];
};

/* The optimizer state file beside a part: <stem>_optim.safetensors. */
static void optim_path(const char *part_file, char *out, size_t size)
{
    snprintf(out, size, "%.*s_optim.safetensors", (int)(strlen(part_file) - strlen(".safetensors")), part_file);
}

typedef struct moments_ctx {
    sl_st_writer *w;
    sl_st_file *f;
    const char *prefix;
    sl_err *err;
} moments_ctx;

static int add_moment(sl_param_ref *ref, void *ctx)
{
    moments_ctx *mc = ctx;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", mc->prefix, ref->name);
    return sl_st_writer_add_f32(mc->w, name, SL_F32, *ref->slot, ref->ndim, ref->shape, mc->err);
}

static int read_moment(sl_param_ref *ref, void *ctx)
{
    moments_ctx *mc = ctx;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", mc->prefix, ref->name);
    const sl_tensor *t = sl_st_find(mc->f, name);
    if (!t || t->dtype != SL_F32 || t->numel != ref->numel)
        return sl_fail(mc->err, "%s: optimizer state '%s' is missing or has the wrong shape", sl_st_path(mc->f), name);
    memcpy(*ref->slot, t->data, ref->numel * sizeof(float));
    return 0;
}

/* Restores m and v when the part has an optimizer state file; returns the steps it records. */
static long load_optimizer(stage *s, sl_err *err)
{
    char path[PATH_MAX + 32];
    optim_path(s->info.file, path, sizeof path);
    sl_st_file *f = sl_st_open(path, NULL);
    if (!f) return 0; /* a fresh split: no state yet */
    long steps = -1;
    const char *text = sl_st_metadata(f, "step");
    if (text) steps = atol(text);
    moments_ctx mc = {.f = f, .prefix = "m", .err = err};
    int rc = steps < 0 ? sl_fail(err, "%s: no \"step\" in its metadata", path) : 0;
    if (rc == 0) rc = sl_params_foreach(sl_train_moments(s->train, 0), read_moment, &mc);
    mc.prefix = "v";
    if (rc == 0) rc = sl_params_foreach(sl_train_moments(s->train, 1), read_moment, &mc);
    sl_st_close(&f);
    if (rc == 0) sl_train_set_steps(s->train, steps);
    return rc == 0 ? steps : -1;
}

sl_trainer *sl_trainer_new(const char *dir, const sl_trainer_opts *opts, sl_err *err)
{
    sl_trainer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->opts = *opts;
    sl_part_info infos[SL_MAX_SPLITS + 1];
    t->n = sl_split_read_index(dir, infos, SL_MAX_SPLITS + 1, err);
    int rc = t->n > 0 ? 0 : -1;
    for (int i = 0; rc == 0 && i < t->n; i++) {
        stage *s = &t->stages[i];
        s->info = infos[i];
        if (!(s->part = sl_part_open(dir, infos[i].first, infos[i].last, false, err)) ||
            sl_part_load_params(s->part, &s->params, true, err) != 0 ||
            !(s->train = sl_train_new(&s->params, opts->batch, opts->seq_len, err))) {
            rc = -1;
            break;
        }
        long steps = load_optimizer(s, err);
        if (steps < 0) rc = -1;
        else if (i > 0 && steps != t->steps) rc = sl_fail(err, "%s: its parts were saved at different steps", dir);
        t->steps = steps;
    }
    if (rc == 0) {
        size_t rows = (size_t)opts->batch * opts->seq_len, C = (size_t)infos[0].cfg.n_embd;
        t->act = malloc(rows * C * sizeof(float));
        t->act2 = malloc(rows * C * sizeof(float));
        t->grad = malloc(rows * C * sizeof(float));
        t->grad2 = malloc(rows * C * sizeof(float));
        if (!t->act || !t->act2 || !t->grad || !t->grad2) rc = sl_fail(err, "out of memory");
    }
    if (rc != 0) sl_trainer_destroy(&t);
    return t;
}

void sl_trainer_destroy(sl_trainer **self)
{
    if (!self || !*self) return;
    sl_trainer *t = *self;
    for (int i = 0; i < SL_MAX_SPLITS + 1; i++) {
        sl_train_destroy(&t->stages[i].train);
        sl_params_free(&t->stages[i].params);
        sl_part_destroy(&t->stages[i].part);
    }
    free(t->act);
    free(t->act2);
    free(t->grad);
    free(t->grad2);
    free(t);
    *self = NULL;
}

long sl_trainer_step_count(const sl_trainer *self) { return self->steps; }
int sl_trainer_stages(const sl_trainer *self) { return self->n; }
sl_params *sl_trainer_params(sl_trainer *self, int i) { return &self->stages[i].params; }

float sl_trainer_lr(const sl_trainer *self)
{
    const sl_trainer_opts *o = &self->opts;
    long s = self->steps;
    if (o->warmup > 0 && s < o->warmup) return o->adamw.lr * (float)(s + 1) / (float)o->warmup;
    if (!o->cosine || o->total_steps <= o->warmup) return o->adamw.lr;
    double progress = (double)(s - o->warmup) / (double)(o->total_steps - o->warmup);
    if (progress > 1) progress = 1;
    return o->adamw.lr * (float)(0.1 + 0.9 * 0.5 * (1.0 + cos(M_PI * progress)));
}

/* Forward through every stage; with backward, the gradient back through every stage. */
static int run_chain(sl_trainer *t, const int32_t *ids, const int32_t *targets, bool backward, float *loss,
                     sl_err *err)
{
    float *in = NULL, *out = t->act;
    for (int i = 0; i < t->n; i++) {
        bool top = i == t->n - 1;
        if (sl_train_forward(t->stages[i].train, i == 0 ? ids : NULL, in, top ? targets : NULL, top ? NULL : out,
                             loss, err) != 0)
            return -1;
        in = out;
        out = out == t->act ? t->act2 : t->act;
    }
    if (!backward) return 0;
    const float *dout = NULL;
    float *din = t->grad;
    for (int i = t->n - 1; i >= 0; i--) {
        if (sl_train_backward(t->stages[i].train, dout, i == 0 ? NULL : din, err) != 0) return -1;
        dout = din;
        din = din == t->grad ? t->grad2 : t->grad;
    }
    return 0;
}

static double grad_norm_sq(sl_trainer *t)
{
    double sum = 0;
    for (int i = 0; i < t->n; i++) {
        const sl_params *g = sl_train_grads(t->stages[i].train);
        for (size_t k = 0; k < g->owned_count; k++) sum += (double)g->owned[k] * g->owned[k];
    }
    return sum;
}

int sl_trainer_step(sl_trainer *t, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err)
{
    const sl_trainer_opts *o = &t->opts;
    const size_t micro = (size_t)o->batch * o->seq_len;
    const int K = o->grad_accum > 0 ? o->grad_accum : 1;
    for (int i = 0; i < t->n; i++) sl_train_zero_grad(t->stages[i].train);
    double total = 0;
    for (int k = 0; k < K; k++) {
        float l;
        if (run_chain(t, ids + k * micro, targets + k * micro, true, &l, err) != 0) return -1;
        total += l;
    }
    float scale = 1.0f / (float)K; /* the mean over micro-batches */
    if (o->grad_clip > 0) {
        double norm = sqrt(grad_norm_sq(t)) * scale;
        if (norm > o->grad_clip) scale *= (float)(o->grad_clip / norm);
    }
    sl_adamw opt = o->adamw;
    opt.lr = sl_trainer_lr(t);
    for (int i = 0; i < t->n; i++) {
        sl_params *g = sl_train_grads(t->stages[i].train);
        if (scale != 1.0f)
            for (size_t k = 0; k < g->owned_count; k++) g->owned[k] *= scale;
        sl_train_step(t->stages[i].train, &opt);
    }
    t->steps++;
    *loss = (float)(total / K);
    return 0;
}

int sl_trainer_eval(sl_trainer *t, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err)
{
    return run_chain(t, ids, targets, false, loss, err);
}

static int save_optimizer(stage *s, const char *part_file, long steps, sl_err *err)
{
    char path[PATH_MAX + 32], step_text[32];
    optim_path(part_file, path, sizeof path);
    snprintf(step_text, sizeof step_text, "%ld", steps);
    sl_st_writer *w = sl_st_writer_new();
    if (!w) return sl_fail(err, "out of memory");
    moments_ctx mc = {.w = w, .prefix = "m", .err = err};
    int rc = sl_st_writer_set_metadata(w, "step", step_text, err);
    if (rc == 0) rc = sl_params_foreach(sl_train_moments(s->train, 0), add_moment, &mc);
    mc.prefix = "v";
    if (rc == 0) rc = sl_params_foreach(sl_train_moments(s->train, 1), add_moment, &mc);
    if (rc == 0) rc = sl_st_writer_write(w, path, NULL, err);
    sl_st_writer_destroy(&w);
    return rc;
}

int sl_trainer_save(sl_trainer *t, const char *dir, float loss, sl_err *err)
{
    sl_part_info saved[SL_MAX_SPLITS + 1];
    char extra[128], splits[SL_MAX_SPLITS * 8] = "";
    if (sl_mkdirs(dir, err) != 0) return -1;
    snprintf(extra, sizeof extra, "{\"step\": %ld, \"loss\": %.9g}", t->steps, (double)loss);
    for (int i = 1; i < t->n; i++)
        snprintf(splits + strlen(splits), sizeof splits - strlen(splits), "%s%d", i > 1 ? "-" : "", t->stages[i].info.first);
    for (int i = 0; i < t->n; i++) {
        stage *s = &t->stages[i];
        char sub[PATH_MAX], stem[256];
        snprintf(sub, sizeof sub, "%s/%s", dir, sl_role_name(s->info.role));
        snprintf(stem, sizeof stem, "checkpoint_%s_%s", splits, s->info.name); /* re-saves replace */
        if (sl_part_write(&s->params, s->info.name, s->info.role, SL_F32, sub, stem, NULL, extra, &saved[i], err) != 0)
            return -1;
        if (save_optimizer(s, saved[i].file, t->steps, err) != 0) return -1;
    }
    return sl_split_write_index(dir, "checkpoint", saved, t->n, NULL, err);
}
