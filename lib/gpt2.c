/* gpt2.c — the forward pass of a stage: embeddings, transformer blocks, ln_f, LM head. */
#include "gpt2.h"

#include "ops.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct sl_kv {
    int layers, n_ctx, C, len;
    float *k, *v; /* (layers, n_ctx, C) each, one allocation */
};

sl_kv *sl_kv_new(const sl_params *p, int n_ctx, sl_err *err)
{
    if (n_ctx < 1 || n_ctx > p->cfg.n_positions) {
        sl_fail(err, "context of %d positions is outside 1..%d (n_positions)", n_ctx, p->cfg.n_positions);
        return NULL;
    }
    sl_kv *kv = calloc(1, sizeof *kv);
    if (!kv) {
        sl_fail(err, "out of memory for a KV cache of %d positions", n_ctx);
        return NULL;
    }
    *kv = (sl_kv){.layers = p->last - p->first, .n_ctx = n_ctx, .C = p->cfg.n_embd};
    size_t per = (size_t)kv->layers * n_ctx * kv->C;
    kv->k = malloc((per ? 2 * per : 1) * sizeof(float));
    if (!kv->k) {
        free(kv);
        sl_fail(err, "out of memory for a KV cache of %d positions", n_ctx);
        return NULL;
    }
    kv->v = kv->k + per;
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
size_t sl_kv_bytes(const sl_kv *self) { return 2 * (size_t)self->layers * self->n_ctx * self->C * sizeof(float); }

/* Scratch of one forward call of up to max_tokens tokens: one block's worth, reused by every
 * block. Training keeps one of these per layer instead (see the training module). */
struct sl_runner {
    const sl_params *p;
    int max_tokens;
    float *x;     /* (T,C) residual stream */
    float *ln;    /* (T,C) */
    float *qkv;   /* (T,3C) */
    float *probs; /* (n_head, T, n_positions) */
    float *atty;  /* (T,C) */
    float *fch;   /* (T,I) */
    float *mem;
};

sl_runner *sl_runner_new(const sl_params *p, int max_tokens, sl_err *err)
{
    const sl_config *c = &p->cfg;
    if (max_tokens < 1 || max_tokens > c->n_positions) max_tokens = c->n_positions;
    sl_runner *s = calloc(1, sizeof *s);
    if (!s) {
        sl_fail(err, "out of memory for a stage workspace of %d tokens", max_tokens);
        return NULL;
    }
    size_t T = (size_t)max_tokens, C = (size_t)c->n_embd;
    size_t sizes[] = {T * C, T * C, T * 3 * C, (size_t)c->n_head * T * c->n_positions, T * C, T * c->n_inner};
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
    return s;
}

void sl_runner_destroy(sl_runner **self)
{
    assert(self);
    if (!*self) return;
    free((*self)->mem);
    free(*self);
    *self = NULL;
}

/* One transformer block on s->x (T,C) in place; its keys and values go to layer l of kv. With
 * alternatives, the T rows are T alternatives for the one position after the cache: each attends
 * to the cached positions and to itself, its key and value passing through that position's slot. */
static void block_forward(sl_runner *s, const sl_block *w, sl_kv *kv, int l, int T, bool alternatives)
{
    const sl_config *c = &s->p->cfg;
    const int C = c->n_embd, past = kv->len, hd = C / c->n_head;
    float *kc = kv->k + (size_t)l * kv->n_ctx * C, *vc = kv->v + (size_t)l * kv->n_ctx * C;
    sl_layernorm_forward(s->ln, NULL, NULL, s->x, w->ln1_w, w->ln1_b, T, C, (float)c->layer_norm_epsilon);
    sl_matmul_forward(s->qkv, s->ln, w->qkv_w, w->qkv_b, T, C, 3 * C, false);
    for (int t = 0; t < T; t++) {
        const float *row = s->qkv + (size_t)t * 3 * C;
        const int slot = alternatives ? past : past + t;
        memcpy(kc + (size_t)slot * C, row + C, (size_t)C * sizeof(float));
        memcpy(vc + (size_t)slot * C, row + 2 * C, (size_t)C * sizeof(float));
        if (alternatives)
            sl_attention_forward(s->atty + (size_t)t * C, s->probs, row, 3 * C, kc, vc, C, 1, past, c->n_head, hd);
    }
    if (!alternatives) sl_attention_forward(s->atty, s->probs, s->qkv, 3 * C, kc, vc, C, T, past, c->n_head, hd);
    sl_matmul_forward(s->x, s->atty, w->attn_proj_w, w->attn_proj_b, T, C, C, true);
    sl_layernorm_forward(s->ln, NULL, NULL, s->x, w->ln2_w, w->ln2_b, T, C, (float)c->layer_norm_epsilon);
    sl_matmul_forward(s->fch, s->ln, w->fc_w, w->fc_b, T, C, c->n_inner, false);
    sl_gelu_forward(s->fch, s->fch, (size_t)T * c->n_inner);
    sl_matmul_forward(s->x, s->fch, w->fc_proj_w, w->fc_proj_b, T, c->n_inner, C, true);
}

/* ln_f and the head on the T rows of s->x, writing what `which` asks for. */
static void head_forward(sl_runner *s, int T, float *out, sl_output which)
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
    if (which != SL_OUT_HIDDEN) sl_matmul_forward_wt(out, normed, s->p->lm_head, T, C, c->vocab_size);
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
    const int C = p->cfg.n_embd, V = p->cfg.vocab_size;
    for (int t0 = 0; t0 < T; t0 += self->max_tokens) {
        int n = T - t0 < self->max_tokens ? T - t0 : self->max_tokens;
        if (p->embed)
            sl_encoder_forward(self->x, ids + t0, p->wte, p->wpe, n, kv->len, C);
        else
            memcpy(self->x, hidden + (size_t)t0 * C, (size_t)n * C * sizeof(float));
        for (int l = 0; l < p->last - p->first; l++)
            block_forward(self, &p->blocks[l], kv, l, n, false);
        kv->len += n;
        bool last_chunk = t0 + n == T;
        if (!p->head)
            memcpy(out + (size_t)t0 * C, self->x, (size_t)n * C * sizeof(float));
        else if (which == SL_OUT_HIDDEN)
            head_forward(self, n, out + (size_t)t0 * C, which);
        else if (which == SL_OUT_LOGITS_ALL)
            head_forward(self, n, out + (size_t)t0 * V, which);
        else if (last_chunk)
            head_forward(self, n, out, which);
    }
    return 0;
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
            sl_encoder_forward(self->x + (size_t)k * C, ids + k, p->wte, p->wpe, 1, kv->len, C);
    } else {
        memcpy(self->x, hidden, (size_t)K * C * sizeof(float));
    }
    for (int l = 0; l < p->last - p->first; l++)
        block_forward(self, &p->blocks[l], kv, l, K, true);
    memcpy(out, self->x, (size_t)K * C * sizeof(float));
    return 0;
}
