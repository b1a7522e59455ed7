/* gpt2.c — the forward pass of a stage: embeddings, transformer blocks, ln_f, LM head. */
#include "gpt2.h"

#include "cpu.h"
#include "ops.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Keys and values in F32, or in F16 (half the memory per session; widened a layer at a time into
 * the runner's scratch before attention, so attention itself is the F32 one). */
struct sl_kv {
    int layers, n_ctx, C, len;
    sl_dtype dtype;
    void *k, *v; /* (layers, n_ctx, C) each, one allocation */
};

sl_kv *sl_kv_new(const sl_params *p, int n_ctx, sl_dtype dtype, sl_err *err)
{
    if (n_ctx < 1 || n_ctx > p->cfg.n_positions) {
        sl_fail(err, "context of %d positions is outside 1..%d (n_positions)", n_ctx, p->cfg.n_positions);
        return NULL;
    }
    if (dtype != SL_F32 && dtype != SL_F16) {
        sl_fail(err, "a KV cache holds f32 or f16, not %s", sl_dtype_lower(dtype));
        return NULL;
    }
    sl_kv *kv = calloc(1, sizeof *kv);
    if (!kv) {
        sl_fail(err, "out of memory for a KV cache of %d positions", n_ctx);
        return NULL;
    }
    *kv = (sl_kv){.layers = p->last - p->first, .n_ctx = n_ctx, .C = p->cfg.n_embd, .dtype = dtype};
    size_t per = (size_t)kv->layers * n_ctx * kv->C * sl_dtype_size(dtype);
    kv->k = malloc(per ? 2 * per : 1);
    if (!kv->k) {
        free(kv);
        sl_fail(err, "out of memory for a KV cache of %d positions", n_ctx);
        return NULL;
    }
    kv->v = (char *)kv->k + per;
    return kv;
}

void sl_kv_destroy(sl_kv **self)
{
    assert(self);
    if (!*self) return;
    free((*self)->k);
    free(*self);
    *self = NULL;
}

int sl_kv_len(const sl_kv *self) { return self->len; }
void sl_kv_reset(sl_kv *self) { self->len = 0; }
void sl_kv_truncate(sl_kv *self, int len)
{
    if (len >= 0 && len < self->len) self->len = len;
}
int sl_kv_capacity(const sl_kv *self) { return self->n_ctx; }
size_t sl_kv_bytes(const sl_kv *self)
{
    return 2 * (size_t)self->layers * self->n_ctx * self->C * sl_dtype_size(self->dtype);
}
sl_dtype sl_kv_dtype(const sl_kv *self) { return self->dtype; }

/* Where layer l's keys (or values) of position `pos` are. */
static void *kv_row(const sl_kv *kv, void *base, int l, int pos)
{
    return (char *)base + (((size_t)l * kv->n_ctx + pos) * kv->C) * sl_dtype_size(kv->dtype);
}

/* Stores a key or value row (C floats) at position pos of layer l. */
static void kv_store(sl_kv *kv, void *base, int l, int pos, const float *row)
{
    void *dst = kv_row(kv, base, l, pos);
    if (kv->dtype == SL_F32)
        memcpy(dst, row, (size_t)kv->C * sizeof(float));
    else
        sl_dtype_from_f32(dst, kv->dtype, row, (size_t)kv->C);
}

/* Scratch of one forward call of up to max_tokens tokens: one block's worth, reused by every
 * block. Training keeps one of these per layer instead (see the training module). */
struct sl_runner {
    const sl_params *p;
    sl_kern *kern, *own_kern; /* the kernels in use; own_kern when the runner made them */
    int linger_us;            /* the workers' watch within a forward call */
    int max_tokens;
    float *x;       /* (T,C) residual stream */
    float *ln;      /* (T,C) */
    float *qkv;     /* (T,3C) */
    float *probs;   /* (T, n_positions): one head's attention weights at a time */
    float *atty;    /* (T,C) */
    float *fch;     /* (T,I) */
    float *kw, *vw; /* (n_positions, C) each: one layer's F16 keys and values widened; NULL for F32 */
    float *mem;
};

sl_runner *sl_runner_new(const sl_params *p, int max_tokens, sl_kern *kern, sl_err *err)
{
    const sl_config *c = &p->cfg;
    if (max_tokens < 1 || max_tokens > c->n_positions) max_tokens = c->n_positions;
    sl_runner *s = calloc(1, sizeof *s);
    if (!s) {
        sl_fail(err, "out of memory for a stage workspace of %d tokens", max_tokens);
        return NULL;
    }
    size_t T = (size_t)max_tokens, C = (size_t)c->n_embd, P = (size_t)c->n_positions;
    size_t sizes[] = {T * C, T * C, T * 3 * C, T * P, T * C, T * c->n_inner};
    float **slots[] = {&s->x, &s->ln, &s->qkv, &s->probs, &s->atty, &s->fch};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        total += sizes[i];
    if (!(s->mem = malloc(total * sizeof(float)))) {
        free(s);
        sl_fail(err, "out of memory for a stage workspace of %d tokens", max_tokens);
        return NULL;
    }
    float *next = s->mem;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        *slots[i] = next;
        next += sizes[i];
    }
    s->p = p;
    s->max_tokens = max_tokens;
    s->linger_us = SL_RUNNER_LINGER_US;
    s->kern = kern ? kern : (s->own_kern = sl_kern_new(sl_cpu_online(), false, SL_KERN_AUTO, err));
    if (!s->kern) sl_runner_destroy(&s);
    return s;
}

void sl_runner_set_linger(sl_runner *self, int linger_us) { self->linger_us = linger_us; }

void sl_runner_destroy(sl_runner **self)
{
    assert(self);
    if (!*self) return;
    sl_kern_destroy(&(*self)->own_kern);
    free((*self)->kw);
    free((*self)->mem);
    free(*self);
    *self = NULL;
}

/* Layer l's keys and values for positions [0, n) as F32: the cache itself, or for an F16 cache
 * the rows widened into the runner's scratch (allocated at the first F16 cache it meets). */
static int kv_f32(sl_runner *s, const sl_kv *kv, int l, int n, const float **k, const float **v, sl_err *err)
{
    if (kv->dtype == SL_F32) {
        *k = kv_row(kv, kv->k, l, 0);
        *v = kv_row(kv, kv->v, l, 0);
        return 0;
    }
    const size_t rows = (size_t)s->p->cfg.n_positions, C = (size_t)kv->C;
    if (!s->kw && !(s->kw = malloc(2 * rows * C * sizeof(float))))
        return sl_fail(err, "out of memory for widening an f16 KV cache");
    s->vw = s->kw + rows * C;
    const sl_wmat keys = {.format = SL_WF_F16, .in = kv->C, .out = n, .data = kv_row(kv, kv->k, l, 0)};
    const sl_wmat values = {.format = SL_WF_F16, .in = kv->C, .out = n, .data = kv_row(kv, kv->v, l, 0)};
    sl_kern_widen(s->kern, s->kw, &keys, 0, n);
    sl_kern_widen(s->kern, s->vw, &values, 0, n);
    *k = s->kw;
    *v = s->vw;
    return 0;
}

/* One transformer block on s->x (T,C) in place; its keys and values go to layer l of kv. With
 * alternatives, the T rows are T alternatives for the one position after the cache: each attends
 * to the cached positions and to itself, its key and value passing through that position's slot. */
static int block_forward(sl_runner *s, const sl_block *w, sl_kv *kv, int l, int T, bool alternatives, sl_err *err)
{
    const sl_config *c = &s->p->cfg;
    const int C = c->n_embd, past = kv->len, hd = C / c->n_head;
    const float eps = (float)c->layer_norm_epsilon, *kc, *vc;
    sl_layernorm_forward(s->ln, NULL, NULL, s->x, w->ln1_w, w->ln1_b, T, C, eps);
    if (sl_kern_matmul(s->kern, s->qkv, s->ln, T, &w->qkv, w->qkv_b, false, err) != 0) return -1;
    for (int t = 0; t < T; t++) {
        const float *row = s->qkv + (size_t)t * 3 * C;
        const int slot = alternatives ? past : past + t;
        kv_store(kv, kv->k, l, slot, row + C);
        kv_store(kv, kv->v, l, slot, row + 2 * C);
        if (!alternatives) continue;
        if (kv_f32(s, kv, l, past + 1, &kc, &vc, err) != 0) return -1;
        sl_attention_forward(s->atty + (size_t)t * C, s->probs, false, row, 3 * C, kc, vc, C, 1, past, c->n_head, hd);
    }
    if (!alternatives) {
        if (kv_f32(s, kv, l, past + T, &kc, &vc, err) != 0) return -1;
        sl_attention_forward(s->atty, s->probs, false, s->qkv, 3 * C, kc, vc, C, T, past, c->n_head, hd);
    }
    if (sl_kern_matmul(s->kern, s->x, s->atty, T, &w->attn_proj, w->attn_proj_b, true, err) != 0) return -1;
    sl_layernorm_forward(s->ln, NULL, NULL, s->x, w->ln2_w, w->ln2_b, T, C, eps);
    if (sl_kern_matmul(s->kern, s->fch, s->ln, T, &w->fc, w->fc_b, false, err) != 0) return -1;
    sl_gelu_forward(s->fch, s->fch, (size_t)T * c->n_inner);
    return sl_kern_matmul(s->kern, s->x, s->fch, T, &w->fc_proj, w->fc_proj_b, true, err);
}

/* ln_f and the head on the T rows of s->x, writing what `which` asks for. */
static int head_forward(sl_runner *s, int T, float *out, sl_output which, sl_err *err)
{
    const sl_config *c = &s->p->cfg;
    const int C = c->n_embd;
    const float *rows = s->x;
    if (which == SL_OUT_LOGITS_LAST) {
        rows += (size_t)(T - 1) * C;
        T = 1;
    }
    float *normed = which == SL_OUT_HIDDEN ? out : s->ln;
    sl_layernorm_forward(normed, NULL, NULL, rows, s->p->lnf_w, s->p->lnf_b, T, C, (float)c->layer_norm_epsilon);
    if (which == SL_OUT_HIDDEN) return 0;
    return sl_kern_matmul(s->kern, out, normed, T, &s->p->head_m, NULL, false, err);
}

/* x (T,C) = wte[ids] + wpe[pos0 ..]: the token rows read from wte in its format. */
static void embed_forward(const sl_params *p, float *x, const int32_t *ids, int T, int pos0)
{
    const int C = p->cfg.n_embd;
    for (int t = 0; t < T; t++) {
        float *o = x + (size_t)t * C;
        const float *pe = p->wpe + (size_t)(pos0 + t) * C;
        sl_wmat_row_f32(&p->wte_m, ids[t], 0, C, o);
        for (int i = 0; i < C; i++)
            o[i] += pe[i];
    }
}

static int check_request(const sl_runner *s, const sl_kv *kv, int T, const int32_t *ids, const float *hidden,
                         sl_output which, sl_err *err)
{
    const sl_params *p = s->p;
    if (T < 1) return sl_fail(err, "no tokens to run");
    if (kv->layers != p->last - p->first || kv->C != p->cfg.n_embd)
        return sl_fail(err, "KV cache was made for another stage");
    if (T > kv->n_ctx - kv->len)
        return sl_fail(err, "context full: %d positions held + %d new > %d", kv->len, T, kv->n_ctx);
    if (p->embed && !ids) return sl_fail(err, "an embedding stage takes token ids");
    if (!p->embed && !hidden) return sl_fail(err, "a stage without embeddings takes activations");
    if (!p->head && which != SL_OUT_HIDDEN) return sl_fail(err, "a stage without head gives activations only");
    for (int t = 0; p->embed && t < T; t++)
        if (ids[t] < 0 || ids[t] >= p->cfg.vocab_size)
            return sl_fail(err, "token id %d at position %d is outside the vocabulary (0..%d)", ids[t], t,
                           p->cfg.vocab_size - 1);
    return 0;
}

int sl_runner_forward(sl_runner *self, sl_kv *kv, int T, const int32_t *ids, const float *hidden, float *out,
                      sl_output which, sl_err *err)
{
    if (check_request(self, kv, T, ids, hidden, which, err) != 0) return -1;
    const sl_params *p = self->p;
    const int C = p->cfg.n_embd, V = p->cfg.vocab_size, len0 = kv->len;
    int rc = 0;
    sl_kern_set_linger(self->kern, self->linger_us);
    for (int t0 = 0; t0 < T && rc == 0; t0 += self->max_tokens) {
        int n = T - t0 < self->max_tokens ? T - t0 : self->max_tokens;
        if (p->embed)
            embed_forward(p, self->x, ids + t0, n, kv->len);
        else
            memcpy(self->x, hidden + (size_t)t0 * C, (size_t)n * C * sizeof(float));
        for (int l = 0; l < p->last - p->first && rc == 0; l++)
            rc = block_forward(self, &p->blocks[l], kv, l, n, false, err);
        if (rc != 0) break;
        kv->len += n;
        bool last_chunk = t0 + n == T;
        if (!p->head)
            memcpy(out + (size_t)t0 * C, self->x, (size_t)n * C * sizeof(float));
        else if (which == SL_OUT_HIDDEN)
            rc = head_forward(self, n, out + (size_t)t0 * C, which, err);
        else if (which == SL_OUT_LOGITS_ALL)
            rc = head_forward(self, n, out + (size_t)t0 * V, which, err);
        else if (last_chunk)
            rc = head_forward(self, n, out, which, err);
    }
    if (rc != 0) kv->len = len0; /* as it was: the positions written are past its length */
    sl_kern_rest(self->kern);    /* a lingering worker does not spin until the next call */
    return rc;
}

int sl_runner_forward_alternatives(sl_runner *self, sl_kv *kv, int K, const int32_t *ids, const float *hidden,
                                   float *out, sl_err *err)
{
    const sl_params *p = self->p;
    if (p->head) return sl_fail(err, "alternatives are run by a stage without head");
    if (K > self->max_tokens) return sl_fail(err, "%d alternatives for a stage of %d tokens", K, self->max_tokens);
    if (check_request(self, kv, 1, ids, hidden, SL_OUT_HIDDEN, err) != 0) return -1;
    for (int k = 1; p->embed && k < K; k++)
        if (ids[k] < 0 || ids[k] >= p->cfg.vocab_size)
            return sl_fail(err, "alternative token id %d is outside the vocabulary", ids[k]);
    const int C = p->cfg.n_embd;
    if (p->embed) {
        for (int k = 0; k < K; k++) /* every alternative at the same position */
            embed_forward(p, self->x + (size_t)k * C, ids + k, 1, kv->len);
    } else {
        memcpy(self->x, hidden, (size_t)K * C * sizeof(float));
    }
    sl_kern_set_linger(self->kern, self->linger_us);
    int rc = 0;
    for (int l = 0; l < p->last - p->first && rc == 0; l++)
        rc = block_forward(self, &p->blocks[l], kv, l, K, true, err);
    sl_kern_rest(self->kern);
    if (rc == 0) memcpy(out, self->x, (size_t)K * C * sizeof(float));
    return rc;
}
