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
#include <sys/mman.h>
#include <unistd.h>

/* A matrix of a block is (in, out), HF's Conv1D; wte and the head are (out, in), rows. */
static int visit(sl_param_ref *ref, float **slot, sl_wmat *wmat, int ndim, int64_t d0, int64_t d1,
                 int (*fn)(sl_param_ref *, void *), void *ctx)
{
    const bool rows = strncmp(ref->name, "transformer.h.", 14) != 0;
    ref->slot = slot;
    ref->wmat = wmat;
    ref->layout = rows ? SL_WL_ROWS : SL_WL_CONV1D;
    ref->in = (int)(rows ? d1 : d0);
    ref->out = (int)(rows ? d0 : d1);
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
        sl_wmat *wmat;
        int ndim;
        int64_t d0, d1;
    } t[] = {
        {"ln_1.weight", &b->ln1_w, NULL, 1, C, 0},
        {"ln_1.bias", &b->ln1_b, NULL, 1, C, 0},
        {"attn.c_attn.weight", &b->qkv_w, &b->qkv, 2, C, 3 * C},
        {"attn.c_attn.bias", &b->qkv_b, NULL, 1, 3 * C, 0},
        {"attn.c_proj.weight", &b->attn_proj_w, &b->attn_proj, 2, C, C},
        {"attn.c_proj.bias", &b->attn_proj_b, NULL, 1, C, 0},
        {"ln_2.weight", &b->ln2_w, NULL, 1, C, 0},
        {"ln_2.bias", &b->ln2_b, NULL, 1, C, 0},
        {"mlp.c_fc.weight", &b->fc_w, &b->fc, 2, C, I},
        {"mlp.c_fc.bias", &b->fc_b, NULL, 1, I, 0},
        {"mlp.c_proj.weight", &b->fc_proj_w, &b->fc_proj, 2, I, C},
        {"mlp.c_proj.bias", &b->fc_proj_b, NULL, 1, C, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        sl_param_ref ref;
        snprintf(ref.name, sizeof ref.name, "transformer.h.%d.%s", layer, t[i].suffix);
        int rc = visit(&ref, t[i].slot, t[i].wmat, t[i].ndim, t[i].d0, t[i].d1, fn, ctx);
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
#define VISIT(nm, slot, wmat, nd, d0, d1)                                                                              \
    do {                                                                                                               \
        snprintf(ref.name, sizeof ref.name, "%s", nm);                                                                 \
        if ((rc = visit(&ref, slot, wmat, nd, d0, d1, fn, ctx)) != 0) return rc;                                       \
    } while (0)
    if (p->embed) {
        VISIT("transformer.wte.weight", &p->wte, &p->wte_m, 2, c->vocab_size, C);
        VISIT("transformer.wpe.weight", &p->wpe, NULL, 2, c->n_positions, C);
    }
    for (int l = p->first; l < p->last; l++)
        if ((rc = visit_block(&p->blocks[l - p->first], l, c, fn, ctx)) != 0) return rc;
    if (p->head) {
        VISIT("transformer.ln_f.weight", &p->lnf_w, NULL, 1, C, 0);
        VISIT("transformer.ln_f.bias", &p->lnf_b, NULL, 1, C, 0);
        if (!p->head_is_wte) VISIT("lm_head.weight", &p->lm_head, &p->head_m, 2, c->vocab_size, C);
    }
#undef VISIT
    return 0;
}

/* The F32 view of a matrix's floats, in the layout HF stores it in. */
static int view_f32(sl_param_ref *ref, void *ctx)
{
    (void)ctx;
    if (ref->wmat)
        *ref->wmat =
            (sl_wmat){.format = SL_WF_F32, .layout = ref->layout, .in = ref->in, .out = ref->out, .data = *ref->slot};
    return 0;
}

/* Once an F32 stage's float pointers are set: its views, and the head as wte when tied. */
static void bind_f32_views(sl_params *p)
{
    p->format = SL_WF_F32;
    if (p->head_is_wte) p->lm_head = p->wte;
    sl_params_foreach(p, view_f32, NULL);
    if (p->head_is_wte) p->head_m = p->wte_m;
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
    sl_wformat stored;   /* the file's matrices: F32 for HF's files (any float dtype, Conv1D) */
    size_t needed, used; /* floats in the owned allocation: counted, then filled */
    float *owned;
    sl_err *err;
} load_ctx;

/* The tensor name + suffix (""; ".scales"), or for a tied checkpoint's missing head, wte's. */
static const sl_tensor *find_tensor(load_ctx *lc, const sl_param_ref *ref, const char *suffix, const char **file)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", ref->name, suffix);
    const sl_tensor *t = sl_hf_model_tensor(lc->ck, name, file);
    if (!t && strcmp(ref->name, "lm_head.weight") == 0) {
        snprintf(name, sizeof name, "transformer.wte.weight%s", suffix);
        t = sl_hf_model_tensor(lc->ck, name, file);
    }
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

/* What an error names: the one file a part is, or the directory of an HF model's files. */
static const char *model_path(const sl_hf_model *ck)
{
    return sl_hf_model_file_count(ck) == 1 ? sl_hf_model_file_path(ck, 0) : sl_hf_model_dir(ck);
}

/* t (found in file) is dtype dt with shape [d0] or [d0, d1] (ndim), else an error naming both. */
static int expect_tensor(load_ctx *lc, const sl_tensor *t, const char *file, const char *name, sl_dtype dt, int ndim,
                         int64_t d0, int64_t d1, const char *why)
{
    if (!t) return sl_fail(lc->err, "%s: tensor '%s' is missing", file, name);
    bool same = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!same) {
        char got[96], want[96];
        const int64_t shape[2] = {d0, d1};
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        return sl_fail(lc->err, "%s: tensor '%s' has shape [%s] but %s implies [%s]", file, name, got, why, want);
    }
    if (t->dtype != dt)
        return sl_fail(lc->err, "%s: tensor '%s' is %s where %s implies %s", file, name, sl_dtype_name(t->dtype), why,
                       sl_dtype_name(dt));
    return 0;
}

/* The kernels read a mapped matrix's elements where they are: each must start on a multiple of
 * its size (a file whose tensors are placed otherwise is refused, not read unaligned). */
static int expect_aligned(load_ctx *lc, const sl_tensor *t, const char *file, const char *name)
{
    size_t size = sl_dtype_size(t->dtype);
    if ((uintptr_t)t->data % size != 0)
        return sl_fail(lc->err, "%s: tensor '%s' does not start on a multiple of its %zu-byte elements in the file",
                       file, name, size);
    return 0;
}

/* A matrix of a file in format lc->stored (not F32): its view of the mapping, checked. */
static int stored_view(load_ctx *lc, const sl_param_ref *ref, sl_wmat *view)
{
    const char *file = model_path(lc->ck), *scales_file = file;
    const sl_wformat f = lc->stored;
    const bool q8 = f == SL_WF_Q8_0;
    int64_t shape[2], scale_shape[2];
    const sl_dtype dtype = sl_wmat_tensor_shapes(f, ref->in, ref->out, shape, scale_shape);
    char why[64], scales_name[96];
    snprintf(why, sizeof why, "its weights_format %s", sl_wformat_name(f));
    snprintf(scales_name, sizeof scales_name, "%s.scales", ref->name);
    const sl_tensor *t = find_tensor(lc, ref, "", &file),
                    *scales = q8 ? find_tensor(lc, ref, ".scales", &scales_file) : NULL;
    if (expect_tensor(lc, t, file, ref->name, dtype, 2, shape[0], shape[1], why) != 0 ||
        expect_aligned(lc, t, file, ref->name) != 0)
        return -1;
    if (q8 &&
        (expect_tensor(lc, scales, scales_file, scales_name, SL_F16, 2, scale_shape[0], scale_shape[1], why) != 0 ||
         expect_aligned(lc, scales, scales_file, scales_name) != 0))
        return -1;
    *view = (sl_wmat){.format = f,
                      .layout = SL_WL_ROWS,
                      .in = ref->in,
                      .out = ref->out,
                      .data = t->data,
                      .scales = scales ? scales->data : NULL};
    if (sl_wmat_check(view, lc->err) != 0) {
        sl_err_prefix(lc->err, "%s: tensor '%s'", file, ref->name);
        return -1;
    }
    return 0;
}

static int check_tensor(sl_param_ref *ref, void *ctx)
{
    load_ctx *lc = ctx;
    if (ref->wmat && lc->stored != SL_WF_F32) {
        sl_wmat view;
        if (stored_view(lc, ref, &view) != 0) return -1;
        if (lc->copy) lc->needed += ref->numel;
        return 0;
    }
    const char *file = model_path(lc->ck);
    const sl_tensor *t = find_tensor(lc, ref, "", &file);
    sl_dtype dt = t && (t->dtype == SL_F16 || t->dtype == SL_BF16) ? t->dtype : SL_F32;
    if (expect_tensor(lc, t, file, ref->name, dt, ref->ndim, ref->shape[0], ref->shape[1], "config.json") != 0)
        return -1;
    if (!in_place(lc, t)) lc->needed += ref->numel;
    return 0;
}

static int bind_tensor(sl_param_ref *ref, void *ctx)
{
    load_ctx *lc = ctx;
    if (ref->wmat && lc->stored != SL_WF_F32) {
        sl_wmat view;
        stored_view(lc, ref, &view); /* checked by check_tensor */
        if (!lc->copy) {
            *ref->wmat = view;
            *ref->slot = NULL;
            return 0;
        }
        *ref->slot = lc->owned + lc->used;
        sl_wmat_to_f32(&view, *ref->slot, ref->layout);
        lc->used += ref->numel;
        return 0;
    }
    const sl_tensor *t = find_tensor(lc, ref, "", NULL);
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

/* The format the file's metadata declares for its matrices (F32: an HF file). */
static int stored_format(const sl_hf_model *ck, sl_wformat *out, sl_err *err)
{
    const char *name = sl_hf_model_metadata(ck, "weights_format");
    *out = SL_WF_F32;
    if (name && sl_wformat_parse(name, out) != 0)
        return sl_fail(err, "%s: weights_format \"%.32s\" is not f32, f16, bf16 or q8_0", model_path(ck), name);
    return 0;
}

int sl_params_load(sl_params *p, const sl_hf_model *ck, int first, int last, bool embed, bool head, bool copy,
                   sl_err *err)
{
    if (params_init(p, sl_hf_model_config(ck), first, last, embed, head, err) != 0) return -1;
    load_ctx lc = {.ck = ck, .copy = copy, .err = err};
    if (stored_format(ck, &lc.stored, err) != 0 || sl_params_foreach(p, check_tensor, &lc) != 0) {
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
    if (copy || lc.stored == SL_WF_F32) {
        bind_f32_views(p);
    } else {
        p->format = lc.stored;
        if (p->head_is_wte) p->head_m = p->wte_m;
    }
    return 0;
}

/* ---- converting ---- */

/* Matrices of a converted stage start on 64-byte boundaries (whole cache lines for the kernels). */
#define MAT_ALIGN 64

typedef struct convert_ctx {
    sl_wformat format;
    bool fill;            /* false: count what is needed; true: copy into it */
    bool release;         /* true: each source tensor's pages go back to the system once copied */
    size_t floats, bytes; /* F32 floats and matrix bytes: counted, then used */
    float *f;             /* dst->owned */
    unsigned char *m;     /* dst->owned_mats */
    sl_err *err;
} convert_ctx;

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* The whole pages of [p, p + n) back to the system (MADV_DONTNEED): a file's mapping reads them
 * again if touched, anonymous memory reads zeros. Only for bytes nobody reads again. */
static void release_pages(const void *p, size_t n)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), from = ((uintptr_t)p + page - 1) / page * page;
    const uintptr_t to = ((uintptr_t)p + n) / page * page;
    if (to > from) madvise((void *)from, to - from, MADV_DONTNEED);
}

/* One tensor of dst, whose slot and view still point at src's: counted, or copied into dst's. */
static int convert_tensor(sl_param_ref *ref, void *ctx)
{
    convert_ctx *cc = ctx;
    if (!ref->wmat || cc->format == SL_WF_F32) {
        if (cc->fill) {
            memcpy(cc->f + cc->floats, *ref->slot, ref->numel * sizeof(float));
            if (cc->release) release_pages(*ref->slot, ref->numel * sizeof(float));
            *ref->slot = cc->f + cc->floats;
        }
        cc->floats += ref->numel;
        return 0;
    }
    size_t data_bytes, scale_bytes;
    if (sl_wmat_sizes(cc->format, ref->in, ref->out, &data_bytes, &scale_bytes, cc->err) != 0) return -1;
    if (cc->fill) {
        const sl_wmat from = *ref->wmat;
        unsigned char *data = cc->m + cc->bytes;
        uint16_t *scales = scale_bytes ? (uint16_t *)(data + round_up(data_bytes, MAT_ALIGN)) : NULL;
        if (sl_wmat_convert(ref->wmat, data, scales, cc->format, from.data, SL_F32, from.layout, ref->in, ref->out,
                            cc->err) != 0) {
            sl_err_prefix(cc->err, "%s", ref->name);
            return -1;
        }
        if (cc->release) release_pages(from.data, (size_t)ref->in * (size_t)ref->out * sizeof(float));
        *ref->slot = NULL;
    }
    cc->bytes += round_up(data_bytes, MAT_ALIGN) + round_up(scale_bytes, MAT_ALIGN);
    return 0;
}

/* sl_params_convert and sl_params_reformat: with release, src's tensors are given back. */
static int convert(sl_params *dst, const sl_params *src, sl_wformat format, bool release, sl_err *err)
{
    if (src->format != SL_WF_F32)
        return sl_fail(err, "weights are converted from F32, not from %s", sl_wformat_name(src->format));
    *dst = *src;
    dst->owned = NULL;
    dst->owned_mats = NULL;
    size_t n_blocks = (size_t)(src->last - src->first) + 1;
    if (!(dst->blocks = malloc(n_blocks * sizeof *dst->blocks))) {
        memset(dst, 0, sizeof *dst);
        return sl_fail(err, "out of memory");
    }
    memcpy(dst->blocks, src->blocks, n_blocks * sizeof *dst->blocks);
    convert_ctx cc = {.format = format, .err = err};
    int rc = sl_params_foreach(dst, convert_tensor, &cc);
    if (rc == 0) {
        dst->owned_count = cc.floats;
        dst->owned = malloc((cc.floats ? cc.floats : 1) * sizeof(float));
        dst->owned_mats = cc.bytes ? aligned_alloc(MAT_ALIGN, cc.bytes) : NULL;
        if (!dst->owned || (cc.bytes && !dst->owned_mats))
            rc = sl_fail(err, "out of memory for %zu bytes of %s weights", cc.bytes + cc.floats * sizeof(float),
                         sl_wformat_name(format));
    }
    if (rc == 0) {
        cc = (convert_ctx){
            .format = format, .fill = true, .release = release, .f = dst->owned, .m = dst->owned_mats, .err = err};
        rc = sl_params_foreach(dst, convert_tensor, &cc);
    }
    if (rc != 0) {
        sl_params_free(dst);
        return -1;
    }
    if (format == SL_WF_F32) {
        bind_f32_views(dst);
    } else {
        dst->format = format;
        dst->lm_head = NULL;
        if (dst->head_is_wte) dst->head_m = dst->wte_m;
    }
    return 0;
}

int sl_params_convert(sl_params *dst, const sl_params *src, sl_wformat format, sl_err *err)
{
    return convert(dst, src, format, false, err);
}

int sl_params_reformat(sl_params *p, sl_wformat format, sl_err *err)
{
    if (p->format == format) return 0;
    sl_params converted;
    int rc = convert(&converted, p, format, true, err);
    sl_params_free(p);
    if (rc == 0) *p = converted;
    return rc;
}

static int add_bytes(sl_param_ref *ref, void *ctx)
{
    size_t data_bytes = ref->numel * sizeof(float), scale_bytes = 0;
    if (ref->wmat) sl_wmat_sizes(ref->wmat->format, ref->in, ref->out, &data_bytes, &scale_bytes, NULL);
    *(size_t *)ctx += data_bytes + scale_bytes;
    return 0;
}

size_t sl_params_bytes(const sl_params *p)
{
    size_t n = 0;
    sl_params_foreach((sl_params *)p, add_bytes, &n);
    return n;
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
    bind_f32_views(p);
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
    free(p->owned_mats);
    memset(p, 0, sizeof *p);
}
