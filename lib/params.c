/* params.c — enumerating, loading and allocating a stage's GPT-2 tensors. */
#include "params.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int visit(sl_param_ref *ref, float **slot, int ndim, int64_t d0, int64_t d1,
                 int (*fn)(sl_param_ref *, void *), void *ctx)
{
    ref->slot = slot;
    ref->ndim = ndim;
    ref->shape[0] = d0;
    ref->shape[1] = d1;
    ref->numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    return fn(ref, ctx);
}

static int visit_block(sl_block *b, int layer, const sl_config *c, int (*fn)(sl_param_ref *, void *), void *ctx)
{
    const int64_t C = c->n_embd, I = c->n_inner;
    const struct {
        const char *suffix;
        float **slot;
        int ndim;
        int64_t d0, d1;
    } t[] = {
        {"ln_1.weight", &b->ln1_w, 1, C, 0},          {"ln_1.bias", &b->ln1_b, 1, C, 0},
        {"attn.c_attn.weight", &b->qkv_w, 2, C, 3 * C}, {"attn.c_attn.bias", &b->qkv_b, 1, 3 * C, 0},
        {"attn.c_proj.weight", &b->attn_proj_w, 2, C, C}, {"attn.c_proj.bias", &b->attn_proj_b, 1, C, 0},
        {"ln_2.weight", &b->ln2_w, 1, C, 0},          {"ln_2.bias", &b->ln2_b, 1, C, 0},
        {"mlp.c_fc.weight", &b->fc_w, 2, C, I},       {"mlp.c_fc.bias", &b->fc_b, 1, I, 0},
        {"mlp.c_proj.weight", &b->fc_proj_w, 2, I, C}, {"mlp.c_proj.bias", &b->fc_proj_b, 1, C, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        sl_param_ref ref;
        snprintf(ref.name, sizeof ref.name, "transformer.h.%d.%s", layer, t[i].suffix);
        int rc = visit(&ref, t[i].slot, t[i].ndim, t[i].d0, t[i].d1, fn, ctx);
        if (rc) return rc;
    }
    return 0;
}

int sl_params_foreach(sl_params *p, int (*fn)(sl_param_ref *ref, void *ctx), void *ctx)
{
    const sl_config *c = &p->cfg;
    const int64_t C = c->n_embd;
    sl_param_ref ref;
    int rc = 0;
#define VISIT(nm, slot, nd, d0, d1)                                                \
    do {                                                                           \
        snprintf(ref.name, sizeof ref.name, "%s", nm);                             \
        if ((rc = visit(&ref, slot, nd, d0, d1, fn, ctx)) != 0) return rc;         \
    } while (0)
    if (p->embed) {
        VISIT("transformer.wte.weight", &p->wte, 2, c->vocab_size, C);
        VISIT("transformer.wpe.weight", &p->wpe, 2, c->n_positions, C);
    }
    for (int l = p->first; l < p->last; l++)
        if ((rc = visit_block(&p->blocks[l - p->first], l, c, fn, ctx)) != 0) return rc;
    if (p->head) {
        VISIT("transformer.ln_f.weight", &p->lnf_w, 1, C, 0);
        VISIT("transformer.ln_f.bias", &p->lnf_b, 1, C, 0);
        if (!p->head_is_wte) VISIT("lm_head.weight", &p->lm_head, 2, c->vocab_size, C);
    }
#undef VISIT
    return 0;
}

static int add_numel(sl_param_ref *ref, void *ctx)
{
    *(size_t *)ctx += ref->numel;
    return 0;
}

size_t sl_params_count(const sl_params *p)
{
    size_t n = 0;
    sl_params_foreach((sl_params *)p, add_numel, &n);
    return n;
}

/* Sets up the struct's shape fields and block array without any tensor. */
static int params_init(sl_params *p, const sl_config *cfg, int first, int last, bool embed, bool head, sl_err *err)
{
    memset(p, 0, sizeof *p);
    if (first < 0 || last > cfg->n_layer || first > last)
        return sl_fail(err, "layers [%d, %d) are outside the model's 0..%d", first, last, cfg->n_layer);
    p->cfg = *cfg;
    p->first = first;
    p->last = last;
    p->embed = embed;
    p->head = head;
    p->head_is_wte = embed && head && cfg->tie_word_embeddings;
    p->blocks = calloc((size_t)(last - first) + 1, sizeof *p->blocks);
    return p->blocks ? 0 : sl_fail(err, "out of memory");
}

typedef struct load_ctx {
    const sl_checkpoint *ck;
    bool copy;
    size_t needed, used; /* floats in the owned allocation: counted, then filled */
    float *owned;
    sl_err *err;
} load_ctx;

static const sl_tensor *find_tensor(load_ctx *lc, const sl_param_ref *ref, const char **file)
{
    const sl_tensor *t = sl_checkpoint_tensor(lc->ck, ref->name, file);
    /* A tied checkpoint has no lm_head.weight: the head is wte. */
    if (!t && strcmp(ref->name, "lm_head.weight") == 0)
        t = sl_checkpoint_tensor(lc->ck, "transformer.wte.weight", file);
    return t;
}

static bool in_place(const load_ctx *lc, const sl_tensor *t)
{
    return !lc->copy && t->dtype == SL_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
}

static void format_shape(char *out, size_t size, int ndim, const int64_t *shape)
{
    size_t len = 0;
    out[0] = '\0';
    for (int d = 0; d < ndim && len < size; d++)
        len += (size_t)snprintf(out + len, size - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
}

static int check_tensor(sl_param_ref *ref, void *ctx)
{
    load_ctx *lc = ctx;
    const char *file = sl_checkpoint_dir(lc->ck);
    const sl_tensor *t = find_tensor(lc, ref, &file);
    if (!t) return sl_fail(lc->err, "%s: tensor '%s' is missing", file, ref->name);
    bool same = t->ndim == ref->ndim && t->shape[0] == ref->shape[0] && (ref->ndim == 1 || t->shape[1] == ref->shape[1]);
    if (!same) {
        char got[96], want[96];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ref->ndim, ref->shape);
        return sl_fail(lc->err, "%s: tensor '%s' has shape [%s] but config.json implies [%s]", file, ref->name, got,
                       want);
    }
    if (t->dtype != SL_F32 && t->dtype != SL_F16 && t->dtype != SL_BF16)
        return sl_fail(lc->err, "%s: tensor '%s' is %s; weights must be F32, F16 or BF16", file, ref->name,
                       sl_dtype_name(t->dtype));
    if (!in_place(lc, t)) lc->needed += ref->numel;
    return 0;
}

static int bind_tensor(sl_param_ref *ref, void *ctx)
{
    load_ctx *lc = ctx;
    const sl_tensor *t = find_tensor(lc, ref, NULL);
    if (in_place(lc, t)) {
        *ref->slot = (float *)t->data; /* read-only mapping: the inference path never writes */
        return 0;
    }
    float *dst = lc->owned + lc->used;
    sl_dtype_to_f32(dst, t->data, t->dtype, ref->numel);
    *ref->slot = dst;
    lc->used += ref->numel;
    return 0;
}

int sl_params_load(sl_params *p, const sl_checkpoint *ck, int first, int last, bool embed, bool head, bool copy,
                   sl_err *err)
{
    if (params_init(p, sl_checkpoint_config(ck), first, last, embed, head, err) != 0) return -1;
    load_ctx lc = {.ck = ck, .copy = copy, .err = err};
    if (sl_params_foreach(p, check_tensor, &lc) != 0) {
        sl_params_free(p);
        return -1;
    }
    if (lc.needed && !(lc.owned = malloc(lc.needed * sizeof(float)))) {
        sl_params_free(p);
        return sl_fail(err, "out of memory for %zu weights", lc.needed);
    }
    p->owned = lc.owned;
    p->owned_count = lc.needed;
    sl_params_foreach(p, bind_tensor, &lc);
    if (p->head_is_wte) p->lm_head = p->wte;
    return 0;
}

static int bind_zeroed(sl_param_ref *ref, void *ctx)
{
    sl_params *dst = ctx;
    *ref->slot = dst->owned + dst->owned_count;
    dst->owned_count += ref->numel;
    return 0;
}

int sl_params_alloc_like(sl_params *dst, const sl_params *src, sl_err *err)
{
    if (params_init(dst, &src->cfg, src->first, src->last, src->embed, src->head, err) != 0) return -1;
    dst->head_is_wte = src->head_is_wte;
    size_t n = sl_params_count(src);
    if (!(dst->owned = calloc(n ? n : 1, sizeof(float)))) {
        sl_params_free(dst);
        return sl_fail(err, "out of memory for %zu floats", n);
    }
    sl_params_foreach(dst, bind_zeroed, dst);
    if (dst->head_is_wte) dst->lm_head = dst->wte;
    return 0;
}

void sl_params_free(sl_params *p)
{
    free(p->blocks);
    free(p->owned);
    memset(p, 0, sizeof *p);
}
