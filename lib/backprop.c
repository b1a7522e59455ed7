/* backprop.c — forward with saved activations, backward, and AdamW for one GPT-2 stage. */
#include "backprop.h"

#include "ops.h"
#include "safetensors.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

/* What one block's forward keeps for its backward; N = B*T rows. */
typedef struct block_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N,C) (N) (N) */
    float *qkv;                       /* (N,3C) */
    float *probs;                     /* (B, n_head, T, T) */
    float *atty;                      /* (N,C) */
    float *res2;                      /* (N,C): input + attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* (N,C) (N) (N) */
    float *fch, *fch_gelu;            /* (N,I) before and after GELU */
    float *res3;                      /* (N,C): the block's output */
} block_acts;

struct sl_backprop {
    sl_params *p;
    sl_params grads, m, v;
    int B, T, L;
    long steps;
    block_acts *acts;
    float *x0;                        /* (N,C) the stage's input (or embeddings) */
    int32_t *ids;                     /* (N) bottom: the ids of the last forward */
    float *lnf, *lnf_mean, *lnf_rstd; /* top */
    float *logits;                    /* (N,V) top: logits, then their gradient */
    /* backward scratch */
    float *dres, *dln, *dqkv, *datty, *dfch, *dfch_gelu, *dprobs, *dlnf;
    float *mem;
};

/* Lays out every buffer in one allocation; with mem NULL only counts. */
static size_t layout(sl_backprop *t, float *mem)
{
    const sl_config *c = &t->p->cfg;
    const size_t N = (size_t)t->B * t->T, C = (size_t)c->n_embd, I = (size_t)c->n_inner, V = (size_t)c->vocab_size;
    const size_t probs = (size_t)t->B * c->n_head * t->T * t->T;
    size_t used = 0;
#define TAKE(ptr, count)                                                                                               \
    do {                                                                                                               \
        if (mem) (ptr) = mem + used;                                                                                   \
        used += (count);                                                                                               \
    } while (0)
    for (int l = 0; l < t->L; l++) {
        block_acts *a = &t->acts[l];
        TAKE(a->ln1, N * C);
        TAKE(a->ln1_mean, N);
        TAKE(a->ln1_rstd, N);
        TAKE(a->qkv, 3 * N * C);
        TAKE(a->probs, probs);
        TAKE(a->atty, N * C);
        TAKE(a->res2, N * C);
        TAKE(a->ln2, N * C);
        TAKE(a->ln2_mean, N);
        TAKE(a->ln2_rstd, N);
        TAKE(a->fch, N * I);
        TAKE(a->fch_gelu, N * I);
        TAKE(a->res3, N * C);
    }
    TAKE(t->x0, N * C);
    if (t->p->head) {
        TAKE(t->lnf, N * C);
        TAKE(t->lnf_mean, N);
        TAKE(t->lnf_rstd, N);
        TAKE(t->logits, N * V);
        TAKE(t->dlnf, N * C);
    }
    TAKE(t->dres, N * C);
    TAKE(t->dln, N * C);
    TAKE(t->dqkv, 3 * N * C);
    TAKE(t->datty, N * C);
    TAKE(t->dfch, N * I);
    TAKE(t->dfch_gelu, N * I);
    TAKE(t->dprobs, (size_t)t->T * t->T);
#undef TAKE
    return used;
}

sl_backprop *sl_backprop_new(sl_params *params, int B, int T, sl_err *err)
{
    if (params->owned_count != sl_params_count(params)) {
        sl_fail(err, "training needs writable weights: load them with copy");
        return NULL;
    }
    if (B < 1 || T < 1 || T > params->cfg.n_positions) {
        sl_fail(err, "batch %d x %d tokens: need B >= 1 and 1 <= T <= %d", B, T, params->cfg.n_positions);
        return NULL;
    }
    sl_backprop *t = calloc(1, sizeof *t);
    if (!t) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    *t = (sl_backprop){.p = params, .B = B, .T = T, .L = params->last - params->first};
    t->acts = calloc((size_t)t->L + 1, sizeof *t->acts);
    t->ids = calloc((size_t)B * T, sizeof *t->ids);
    size_t floats = layout(t, NULL);
    t->mem = t->acts && t->ids ? malloc(floats * sizeof(float)) : NULL;
    if (!t->mem || sl_params_alloc_like(&t->grads, params, err) != 0 || sl_params_alloc_like(&t->m, params, err) != 0 ||
        sl_params_alloc_like(&t->v, params, err) != 0) {
        if (!t->mem) sl_fail(err, "out of memory for the activations of %d x %d tokens", B, T);
        sl_backprop_destroy(&t);
        return NULL;
    }
    layout(t, t->mem);
    return t;
}

void sl_backprop_destroy(sl_backprop **self)
{
    assert(self);
    if (!*self) return;
    sl_backprop *t = *self;
    sl_params_free(&t->grads);
    sl_params_free(&t->m);
    sl_params_free(&t->v);
    free(t->mem);
    free(t->acts);
    free(t->ids);
    free(t);
    *self = NULL;
}

sl_params *sl_backprop_grads(sl_backprop *self) { return &self->grads; }
long sl_backprop_steps(const sl_backprop *self) { return self->steps; }

double sl_backprop_grad_norm2(sl_backprop *self, float scale)
{
    double sum = 0;
    for (size_t i = 0; i < self->grads.owned_count; i++)
        sum += (double)self->grads.owned[i] * self->grads.owned[i];
    return sum * ((double)scale * scale);
}

void sl_backprop_zero_grad(sl_backprop *self) { memset(self->grads.owned, 0, self->grads.owned_count * sizeof(float)); }

/* ---- forward ---- */

static void block_forward(sl_backprop *t, const sl_block *w, block_acts *a, const float *in)
{
    const sl_config *c = &t->p->cfg;
    const int N = t->B * t->T, C = c->n_embd, I = c->n_inner, nh = c->n_head, hd = C / nh, T = t->T;
    const float eps = (float)c->layer_norm_epsilon;
    sl_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, in, w->ln1_w, w->ln1_b, N, C, eps);
    sl_matmul_forward(a->qkv, a->ln1, w->qkv_w, w->qkv_b, N, C, 3 * C, false);
    for (int b = 0; b < t->B; b++) {
        const float *q = a->qkv + (size_t)b * T * 3 * C;
        sl_attention_forward(a->atty + (size_t)b * T * C, a->probs + (size_t)b * nh * T * T, true, q, 3 * C, q + C,
                             q + 2 * C, 3 * C, T, 0, nh, hd);
    }
    memcpy(a->res2, in, (size_t)N * C * sizeof(float));
    sl_matmul_forward(a->res2, a->atty, w->attn_proj_w, w->attn_proj_b, N, C, C, true);
    sl_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, w->ln2_w, w->ln2_b, N, C, eps);
    sl_matmul_forward(a->fch, a->ln2, w->fc_w, w->fc_b, N, C, I, false);
    sl_gelu_forward(a->fch_gelu, a->fch, (size_t)N * I);
    memcpy(a->res3, a->res2, (size_t)N * C * sizeof(float));
    sl_matmul_forward(a->res3, a->fch_gelu, w->fc_proj_w, w->fc_proj_b, N, I, C, true);
}

static const float *stage_output(const sl_backprop *t) { return t->L ? t->acts[t->L - 1].res3 : t->x0; }

int sl_backprop_forward(sl_backprop *t, const int32_t *ids, const float *in, const int32_t *targets, float *out,
                        float *loss, sl_err *err)
{
    const sl_config *c = &t->p->cfg;
    const int N = t->B * t->T, C = c->n_embd, V = c->vocab_size;
    if (t->p->embed) {
        if (!ids) return sl_fail(err, "a bottom takes token ids");
        for (int i = 0; i < N; i++)
            if (ids[i] < 0 || ids[i] >= V)
                return sl_fail(err, "token id %d at position %d is outside the vocabulary (0..%d)", ids[i], i, V - 1);
        memcpy(t->ids, ids, (size_t)N * sizeof *ids);
        for (int b = 0; b < t->B; b++)
            sl_encoder_forward(t->x0 + (size_t)b * t->T * C, ids + (size_t)b * t->T, t->p->wte, t->p->wpe, t->T, 0, C);
    } else {
        if (!in) return sl_fail(err, "a stage without embeddings takes activations");
        memcpy(t->x0, in, (size_t)N * C * sizeof(float));
    }
    const float *x = t->x0;
    for (int l = 0; l < t->L; l++) {
        block_forward(t, &t->p->blocks[l], &t->acts[l], x);
        x = t->acts[l].res3;
    }
    if (!t->p->head) {
        memcpy(out, x, (size_t)N * C * sizeof(float));
        return 0;
    }
    if (!targets) return sl_fail(err, "a top takes targets");
    int count = 0;
    for (int i = 0; i < N; i++) {
        if (targets[i] >= V) return sl_fail(err, "target %d at position %d is outside the vocabulary", targets[i], i);
        count += targets[i] >= 0;
    }
    if (count == 0) return sl_fail(err, "no position has a target");
    sl_layernorm_forward(t->lnf, t->lnf_mean, t->lnf_rstd, x, t->p->lnf_w, t->p->lnf_b, N, C,
                         (float)c->layer_norm_epsilon);
    sl_matmul_forward_wt(t->logits, t->lnf, t->p->lm_head, N, C, V);
    /* The logits become their gradient here: backward needs only that. */
    double sum = sl_crossentropy_forward_backward(t->logits, t->logits, targets, N, V, 1.0f / count);
    *loss = (float)(sum / count);
    return 0;
}

/* ---- backward ---- */

static void zero(float *x, size_t n) { memset(x, 0, n * sizeof *x); }

static void block_backward(sl_backprop *t, const sl_block *w, sl_block *g, const block_acts *a, const float *in)
{
    const sl_config *c = &t->p->cfg;
    const int N = t->B * t->T, C = c->n_embd, I = c->n_inner, nh = c->n_head, hd = C / nh, T = t->T;
    /* res3 = res2 + gelu(ln2 @ fc) @ fc_proj: t->dres is d res3, and flows on as d res2 */
    zero(t->dfch_gelu, (size_t)N * I);
    sl_matmul_backward(t->dfch_gelu, g->fc_proj_w, g->fc_proj_b, t->dres, a->fch_gelu, w->fc_proj_w, N, I, C);
    zero(t->dfch, (size_t)N * I);
    sl_gelu_backward(t->dfch, a->fch, t->dfch_gelu, (size_t)N * I);
    zero(t->dln, (size_t)N * C);
    sl_matmul_backward(t->dln, g->fc_w, g->fc_b, t->dfch, a->ln2, w->fc_w, N, C, I);
    sl_layernorm_backward(t->dres, g->ln2_w, g->ln2_b, t->dln, a->res2, w->ln2_w, a->ln2_mean, a->ln2_rstd, N, C);
    /* res2 = in + attention(ln1 @ qkv) @ attn_proj */
    zero(t->datty, (size_t)N * C);
    sl_matmul_backward(t->datty, g->attn_proj_w, g->attn_proj_b, t->dres, a->atty, w->attn_proj_w, N, C, C);
    zero(t->dqkv, (size_t)N * 3 * C);
    for (int b = 0; b < t->B; b++)
        sl_attention_backward(t->dqkv + (size_t)b * T * 3 * C, t->dprobs, t->datty + (size_t)b * T * C,
                              a->qkv + (size_t)b * T * 3 * C, a->probs + (size_t)b * nh * T * T, T, nh, hd);
    zero(t->dln, (size_t)N * C);
    sl_matmul_backward(t->dln, g->qkv_w, g->qkv_b, t->dqkv, a->ln1, w->qkv_w, N, C, 3 * C);
    sl_layernorm_backward(t->dres, g->ln1_w, g->ln1_b, t->dln, in, w->ln1_w, a->ln1_mean, a->ln1_rstd, N, C);
}

int sl_backprop_backward(sl_backprop *t, const float *dout, float *din, sl_err *err)
{
    const sl_config *c = &t->p->cfg;
    const int N = t->B * t->T, C = c->n_embd, V = c->vocab_size;
    sl_params *g = &t->grads;
    if (t->p->head) {
        zero(t->dlnf, (size_t)N * C);
        sl_matmul_backward_wt(t->dlnf, g->lm_head, t->logits, t->lnf, t->p->lm_head, N, C, V);
        zero(t->dres, (size_t)N * C);
        sl_layernorm_backward(t->dres, g->lnf_w, g->lnf_b, t->dlnf, stage_output(t), t->p->lnf_w, t->lnf_mean,
                              t->lnf_rstd, N, C);
    } else {
        if (!dout) return sl_fail(err, "a stage without head takes the gradient of its output");
        memcpy(t->dres, dout, (size_t)N * C * sizeof(float));
    }
    for (int l = t->L - 1; l >= 0; l--)
        block_backward(t, &t->p->blocks[l], &g->blocks[l], &t->acts[l], l ? t->acts[l - 1].res3 : t->x0);
    if (t->p->embed) {
        for (int b = 0; b < t->B; b++)
            sl_encoder_backward(g->wte, g->wpe, t->dres + (size_t)b * t->T * C, t->ids + (size_t)b * t->T, t->T, 0, C);
    } else {
        if (!din) return sl_fail(err, "a stage without embeddings gives the gradient of its input");
        memcpy(din, t->dres, (size_t)N * C * sizeof(float));
    }
    return 0;
}

/* ---- AdamW ---- */

void sl_backprop_step(sl_backprop *t, const sl_adamw *o, float scale)
{
    if (scale != 1.0f)
        for (size_t i = 0; i < t->grads.owned_count; i++)
            t->grads.owned[i] *= scale;
    t->steps++;
    const double bc1 = 1.0 - pow(o->beta1, (double)t->steps), bc2 = 1.0 - pow(o->beta2, (double)t->steps);
    const float step_size = (float)(o->lr / bc1), bc2_sqrt = (float)sqrt(bc2), decay = 1.0f - o->lr * o->weight_decay;
    sl_adamw_update(t->p->owned, t->m.owned, t->v.owned, t->grads.owned, t->p->owned_count, o->beta1, o->beta2, o->eps,
                    decay, step_size, bc2_sqrt);
}

/* ---- optimizer state ---- */

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

int sl_backprop_save_state(sl_backprop *t, const char *path, sl_err *err)
{
    char steps[32];
    snprintf(steps, sizeof steps, "%ld", t->steps);
    sl_st_writer *w = sl_st_writer_new();
    if (!w) return sl_fail(err, "out of memory");
    moments_ctx mc = {.w = w, .prefix = "m", .err = err};
    int rc = sl_st_writer_set_metadata(w, "step", steps, err);
    if (rc == 0) rc = sl_params_foreach(&t->m, add_moment, &mc);
    mc.prefix = "v";
    if (rc == 0) rc = sl_params_foreach(&t->v, add_moment, &mc);
    if (rc == 0) rc = sl_st_writer_write(w, path, NULL, err);
    sl_st_writer_destroy(&w);
    return rc;
}

int sl_backprop_load_state(sl_backprop *t, const char *path, sl_err *err)
{
    if (access(path, F_OK) != 0) return 1;
    sl_st_file *f = sl_st_open(path, err);
    if (!f) return -1;
    const char *steps = sl_st_metadata(f, "step");
    moments_ctx mc = {.f = f, .prefix = "m", .err = err};
    int rc = steps ? 0 : sl_fail(err, "%s: no \"step\" in its metadata", path);
    if (rc == 0) rc = sl_params_foreach(&t->m, read_moment, &mc);
    mc.prefix = "v";
    if (rc == 0) rc = sl_params_foreach(&t->v, read_moment, &mc);
    if (rc == 0) t->steps = atol(steps);
    sl_st_close(&f);
    return rc;
}
