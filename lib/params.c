/* params.c — enumerating, loading and allocating a stage's GPT-2 tensors. */
#include "params.h"

#include "hf_model.h"
#include "fileio.h"
#include "json.h"
#include "rng.h"
#include "safetensors.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int visit(sl_param_ref *ref, float **slot, int ndim, int64_t d0, int64_t d1, int (*fn)(sl_param_ref *, void *),
                 void *ctx)
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
        {"ln_1.weight", &b->ln1_w, 1, C, 0},
        {"ln_1.bias", &b->ln1_b, 1, C, 0},
        {"attn.c_attn.weight", &b->qkv_w, 2, C, 3 * C},
        {"attn.c_attn.bias", &b->qkv_b, 1, 3 * C, 0},
        {"attn.c_proj.weight", &b->attn_proj_w, 2, C, C},
        {"attn.c_proj.bias", &b->attn_proj_b, 1, C, 0},
        {"ln_2.weight", &b->ln2_w, 1, C, 0},
        {"ln_2.bias", &b->ln2_b, 1, C, 0},
        {"mlp.c_fc.weight", &b->fc_w, 2, C, I},
        {"mlp.c_fc.bias", &b->fc_b, 1, I, 0},
        {"mlp.c_proj.weight", &b->fc_proj_w, 2, I, C},
        {"mlp.c_proj.bias", &b->fc_proj_b, 1, C, 0},
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
#define VISIT(nm, slot, nd, d0, d1)                                                                                    \
    do {                                                                                                               \
        snprintf(ref.name, sizeof ref.name, "%s", nm);                                                                 \
        if ((rc = visit(&ref, slot, nd, d0, d1, fn, ctx)) != 0) return rc;                                             \
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
    const sl_hf_model *ck;
    bool copy;
    size_t needed, used; /* floats in the owned allocation: counted, then filled */
    float *owned;
    sl_err *err;
} load_ctx;

static const sl_tensor *find_tensor(load_ctx *lc, const sl_param_ref *ref, const char **file)
{
    const sl_tensor *t = sl_hf_model_tensor(lc->ck, ref->name, file);
    /* A tied checkpoint has no lm_head.weight: the head is wte. */
    if (!t && strcmp(ref->name, "lm_head.weight") == 0) t = sl_hf_model_tensor(lc->ck, "transformer.wte.weight", file);
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
    const char *file = sl_hf_model_dir(lc->ck);
    const sl_tensor *t = find_tensor(lc, ref, &file);
    if (!t) return sl_fail(lc->err, "%s: tensor '%s' is missing", file, ref->name);
    bool same =
        t->ndim == ref->ndim && t->shape[0] == ref->shape[0] && (ref->ndim == 1 || t->shape[1] == ref->shape[1]);
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

int sl_params_load(sl_params *p, const sl_hf_model *ck, int first, int last, bool embed, bool head, bool copy,
                   sl_err *err)
{
    if (params_init(p, sl_hf_model_config(ck), first, last, embed, head, err) != 0) return -1;
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

int sl_params_alloc(sl_params *p, const sl_config *cfg, int first, int last, bool embed, bool head, sl_err *err)
{
    if (params_init(p, cfg, first, last, embed, head, err) != 0) return -1;
    size_t n = sl_params_count(p);
    if (!(p->owned = calloc(n ? n : 1, sizeof(float)))) {
        sl_params_free(p);
        return sl_fail(err, "out of memory for %zu floats", n);
    }
    sl_params_foreach(p, bind_zeroed, p);
    if (p->head_is_wte) p->lm_head = p->wte;
    return 0;
}

int sl_params_alloc_like(sl_params *dst, const sl_params *src, sl_err *err)
{
    return sl_params_alloc(dst, &src->cfg, src->first, src->last, src->embed, src->head, err);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int init_tensor(sl_param_ref *ref, void *ctx)
{
    sl_rng *rng = ((void **)ctx)[0];
    const sl_config *cfg = ((void **)ctx)[1];
    float *x = *ref->slot, value = 0, std = 0.02f;
    if (strstr(ref->name, "ln_") && ends_with(ref->name, ".weight")) value = 1;
    if (ref->ndim == 1) {
        for (size_t i = 0; i < ref->numel; i++)
            x[i] = value;
        return 0;
    }
    if (ends_with(ref->name, "c_proj.weight")) std = 0.02f / sqrtf(2.0f * cfg->n_layer);
    for (size_t i = 0; i < ref->numel; i++)
        x[i] = std * sl_rng_normal(rng);
    return 0;
}

void sl_params_init_gpt2(sl_params *p, uint64_t seed)
{
    sl_rng rng;
    sl_rng_seed(&rng, seed);
    void *ctx[2] = {&rng, &p->cfg};
    sl_params_foreach(p, init_tensor, ctx);
}

typedef struct save_ctx {
    sl_st_writer **shards;
    int n_shards, shard;
    size_t per_shard, in_shard;
    sl_dtype dtype;
    bool prefix;
    cJSON *weight_map;
    char (*names)[64];
    sl_err *err;
} save_ctx;

static int save_tensor(sl_param_ref *ref, void *ctx)
{
    save_ctx *sc = ctx;
    size_t bytes = ref->numel * sl_dtype_size(sc->dtype);
    if (sc->in_shard > 0 && sc->in_shard + bytes > sc->per_shard && sc->shard + 1 < sc->n_shards) {
        sc->shard++;
        sc->in_shard = 0;
    }
    sc->in_shard += bytes;
    const char *name = sc->prefix || strncmp(ref->name, "transformer.", 12) != 0 ? ref->name : ref->name + 12;
    if (sc->weight_map) cJSON_AddStringToObject(sc->weight_map, name, sc->names[sc->shard]);
    return sl_st_writer_add_f32(sc->shards[sc->shard], name, sc->dtype, *ref->slot, ref->ndim, ref->shape, sc->err);
}

static int write_config(const sl_config *cfg, const char *dir, sl_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *root = sl_config_to_json(cfg);
    int rc = root ? sl_json_write_file(path, root, err) : sl_fail(err, "out of memory");
    cJSON_Delete(root);
    return rc;
}

static int write_index(cJSON *weight_map, size_t total_bytes, const char *dir, sl_err *err)
{
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total_bytes);
    cJSON_AddItemReferenceToObject(root, "weight_map", weight_map);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int rc = sl_json_write_file(path, root, err);
    cJSON_Delete(root);
    return rc;
}

int sl_params_save_hf(sl_params *p, const char *dir, sl_dtype dtype, int n_shards, bool prefix, sl_err *err)
{
    if (!p->embed || !p->head || p->first != 0 || p->last != p->cfg.n_layer)
        return sl_fail(err, "only a whole model can be saved as an HF directory");
    if (n_shards < 1 || n_shards > 99) return sl_fail(err, "shards must be 1..99");
    if (sl_mkdirs(dir, err) != 0) return -1;
    sl_config cfg = p->cfg;
    cfg.tie_word_embeddings = p->head_is_wte;
    if (write_config(&cfg, dir, err) != 0) return -1;
    sl_st_writer *shards[99] = {0};
    char names[99][64];
    size_t total = sl_params_count(p) * sl_dtype_size(dtype);
    save_ctx sc = {.shards = shards,
                   .n_shards = n_shards,
                   .per_shard = (total + n_shards - 1) / n_shards,
                   .dtype = dtype,
                   .prefix = prefix,
                   .names = names,
                   .err = err};
    for (int i = 0; i < n_shards; i++) {
        if (n_shards == 1)
            snprintf(names[i], sizeof names[i], "model.safetensors");
        else
            snprintf(names[i], sizeof names[i], "model-%05d-of-%05d.safetensors", i + 1, n_shards);
    }
    int rc = 0;
    for (int i = 0; i < n_shards && rc == 0; i++)
        if (!(shards[i] = sl_st_writer_new()) || sl_st_writer_set_metadata(shards[i], "format", "pt", err) != 0)
            rc = sl_fail(err, "out of memory");
    if (rc == 0 && n_shards > 1 && !(sc.weight_map = cJSON_CreateObject())) rc = sl_fail(err, "out of memory");
    if (rc == 0) rc = sl_params_foreach(p, save_tensor, &sc);
    for (int i = 0; i < n_shards && rc == 0; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
            rc = sl_fail(err, "%s: path too long", dir);
        else
            rc = sl_st_writer_write(shards[i], path, NULL, err);
    }
    if (rc == 0 && sc.weight_map) rc = write_index(sc.weight_map, total, dir, err);
    for (int i = 0; i < n_shards; i++)
        sl_st_writer_destroy(&shards[i]);
    cJSON_Delete(sc.weight_map);
    return rc;
}

void sl_params_free(sl_params *p)
{
    free(p->blocks);
    free(p->owned);
    memset(p, 0, sizeof *p);
}
