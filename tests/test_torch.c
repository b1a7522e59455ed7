/* test_torch.c — PyTorch checkpoints read without running code: the fixtures' real torch.save
 * files (zip F16, legacy F32, the seed's split parts) hold the safetensors fixtures' tensors bit
 * for bit; our own writer's zip and legacy files (shared storages, strided views, every dtype)
 * read back exactly and, when python3-torch is installed, agree with a real torch.save byte for
 * byte and load in torch.load(weights_only=True); the seed's parts, imported, give the references'
 * logits; hostile files (code globals, unknown calls,
 * huge sizes, offsets outside the data, truncated files, zip bombs) are each refused with a
 * message naming what and where.
 *
 * `test_torch --seeds DIR` writes the fuzz targets' seeds (our writer's files) under DIR; other
 * arguments name test cases (tests/check.h). */
#include "fileio.h"
#include "fixtures.h"
#include "gpt2.h"
#include "part.h"
#include "pickle.h"
#include "seed_import.h"
#include "torch_file.h"
#include "torch_writer.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[256];

static void tmp_path(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", tmp_root, name); }

/* ---- comparing tensors ---- */

static bool same_tensor(const sl_tensor *a, const sl_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim || a->nbytes != b->nbytes) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return memcmp(a->data, b->data, a->nbytes) == 0;
}

/* Every tensor of the safetensors file is in the torch file under rename(name), bit for bit. */
static void check_holds(const char *what, const sl_torch_file *pt, const sl_st_file *st,
                        bool (*rename)(const char *name, char *out, size_t size))
{
    size_t found = 0, wanted = 0;
    for (size_t i = 0; i < sl_st_count(st); i++) {
        const sl_tensor *want = sl_st_at(st, i);
        char name[256];
        if (!rename(want->name, name, sizeof name)) continue;
        wanted++;
        const sl_tensor *got = sl_torch_find(pt, name);
        if (CHECK(got, "%s: tensor %s missing", what, name))
            found += CHECK(same_tensor(got, want), "%s: tensor %s differs from the safetensors fixture", what, name);
    }
    CHECK(wanted > 0 && found == wanted, "%s: %zu of %zu tensors equal", what, found, wanted);
}

static bool same_name(const char *name, char *out, size_t size) { return snprintf(out, size, "%s", name) < (int)size; }

static void open_fixture(const char *model, const char *file, sl_st_file **st)
{
    char path[PATH_MAX];
    fixture_path(path, sizeof path, model, file);
    sl_err err;
    *st = sl_st_open(path, &err);
    CHECK(*st != NULL, "%s", err.msg);
}

static sl_torch_file *open_torch(const char *path)
{
    sl_err err;
    sl_torch_file *f = sl_torch_open(path, &err);
    CHECK(f != NULL, "open %s: %s", path, err.msg);
    return f;
}

static void test_fixture_files(void)
{
    char path[PATH_MAX];
    sl_st_file *st = NULL;
    open_fixture("tiny-a", "model.safetensors", &st);
    fixture_path(path, sizeof path, "torch/tiny-a-zip-f16", "pytorch_model.bin");
    sl_torch_file *pt = open_torch(path);
    if (st && pt) check_holds("tiny-a zip F16", pt, st, same_name);
    sl_torch_close(&pt);
    sl_st_close(&st);
    open_fixture("tiny-b", "model.safetensors", &st);
    fixture_path(path, sizeof path, "torch/tiny-b-legacy-f32", "pytorch_model.bin");
    pt = open_torch(path);
    if (st && pt) check_holds("tiny-b legacy F32", pt, st, same_name);
    sl_torch_close(&pt);
    sl_st_close(&st);
}

/* The seed's parts renumber their blocks from h.0 and drop "transformer.". */
static int part_first;
static int part_last;

static bool seed_name(const char *name, char *out, size_t size)
{
    int layer, used = 0;
    const char *bare = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
    if (sscanf(bare, "h.%d.%n", &layer, &used) == 1 && used > 0)
        return layer >= part_first && layer < part_last &&
               snprintf(out, size, "h.%d.%s", layer - part_first, bare + used) < (int)size;
    bool embed = strncmp(bare, "wte.", 4) == 0 || strncmp(bare, "wpe.", 4) == 0;
    bool head = strncmp(bare, "ln_f.", 5) == 0 || strcmp(bare, "lm_head.weight") == 0;
    return ((embed && part_first == 0) || (head && part_last == 5)) && snprintf(out, size, "%s", bare) < (int)size;
}

static void test_seed_parts(void)
{
    sl_st_file *st = NULL;
    open_fixture("tiny-b", "model.safetensors", &st);
    const char *roles[] = {"bottom", "trunk", "top"};
    const int ranges[][2] = {{0, 2}, {2, 4}, {4, 5}};
    for (int i = 0; i < 3 && st; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/torch/tiny-b-seed-parts/%s/tiny-b_2-4_%s.pt", check_fixtures(), roles[i],
                 roles[i]);
        sl_torch_file *pt = open_torch(path);
        part_first = ranges[i][0];
        part_last = ranges[i][1];
        if (pt) check_holds(roles[i], pt, st, seed_name);
        size_t expected = 12 * (size_t)(part_last - part_first) + (i == 0 ? 2 : i == 2 ? 3 : 0);
        CHECK(pt && sl_torch_count(pt) == expected, "seed %s holds %zu tensors, not %zu", roles[i],
              pt ? sl_torch_count(pt) : 0, expected);
        sl_torch_close(&pt);
    }
    sl_st_close(&st);
}

/* ---- our writer: a small state of every kind of tensor ---- */

static float f32_values[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static uint16_t f16_values[6], bf16_values[5];
static int64_t i64_values[3] = {0, 1, 2};
static int32_t i32_values[4] = {0, 1, 2, 3};
static uint8_t bool_values[4] = {1, 0, 1, 1};

static tw_storage small_storages[6] = {
    {"0", "FloatStorage", 4, f32_values, 12},    {"1", "HalfStorage", 2, f16_values, 6},
    {"2", "BFloat16Storage", 2, bf16_values, 5}, {"3", "LongStorage", 8, i64_values, 3},
    {"4", "IntStorage", 4, i32_values, 4},       {"5", "BoolStorage", 1, bool_values, 4},
};

/* The same state as the python script below builds with torch: w, its transpose, a row, a column
 * (all one storage), then F16, BF16, int64, int32 tensors, and HF's bool mask buffer. */
static const tw_tensor small_tensors[] = {
    {"w", 0, 0, 2, {3, 4}, {4, 1}}, {"wt", 0, 0, 2, {4, 3}, {1, 4}}, {"row", 0, 4, 1, {4}, {1}},
    {"col", 0, 1, 1, {3}, {4}},     {"h", 1, 0, 2, {2, 3}, {3, 1}},  {"b", 2, 0, 1, {5}, {1}},
    {"l", 3, 0, 1, {3}, {1}},       {"i", 4, 0, 1, {4}, {1}},        {"h.0.attn.bias", 5, 0, 2, {2, 2}, {2, 1}},
};
#define N_SMALL_PLAIN 8 /* the tensors torch's script saves: all but the mask buffer */

static const struct {
    const char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[2];
    double values[12];
} small_expected[] = {
    {"w", SL_F32, 2, {3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
    {"wt", SL_F32, 2, {4, 3}, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}},
    {"row", SL_F32, 1, {4}, {4, 5, 6, 7}},
    {"col", SL_F32, 1, {3}, {1, 5, 9}},
    {"h", SL_F16, 2, {2, 3}, {0, 1, 2, 3, 4, 5}},
    {"b", SL_BF16, 1, {5}, {0, 1, 2, 3, 4}},
    {"l", SL_I64, 1, {3}, {0, 1, 2}},
    {"i", SL_I32, 1, {4}, {0, 1, 2, 3}},
};

static void init_small_values(void)
{
    float f[6] = {0, 1, 2, 3, 4, 5};
    sl_dtype_from_f32(f16_values, SL_F16, f, 6);
    sl_dtype_from_f32(bf16_values, SL_BF16, f, 5);
}

static double element(const sl_tensor *t, size_t i)
{
    if (t->dtype == SL_I64) return (double)((const int64_t *)t->data)[i];
    if (t->dtype == SL_I32) return (double)((const int32_t *)t->data)[i];
    float f;
    sl_dtype_to_f32(&f, (const unsigned char *)t->data + i * sl_dtype_size(t->dtype), t->dtype, 1);
    return f;
}

/* The file holds exactly small_expected's tensors (the mask buffer dropped). */
static void check_small_state(const char *what, const char *path)
{
    sl_torch_file *f = open_torch(path);
    if (!f) return;
    const size_t n = sizeof small_expected / sizeof *small_expected;
    CHECK(sl_torch_count(f) == n, "%s: %zu tensors, not %zu", what, sl_torch_count(f), n);
    CHECK(!sl_torch_find(f, "h.0.attn.bias"), "%s: HF's mask buffer is dropped", what);
    for (size_t k = 0; k < n; k++) {
        const sl_tensor *t = sl_torch_find(f, small_expected[k].name);
        if (!CHECK(t, "%s: no tensor %s", what, small_expected[k].name)) continue;
        bool ok = t->dtype == small_expected[k].dtype && t->ndim == small_expected[k].ndim;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = t->shape[d] == small_expected[k].shape[d];
        for (size_t i = 0; ok && i < t->numel; i++)
            ok = element(t, i) == small_expected[k].values[i];
        CHECK(ok, "%s: tensor %s has the wrong dtype, shape or values", what, small_expected[k].name);
    }
    sl_torch_close(&f);
}

static tw_state small_state(bool legacy, size_t n_tensors)
{
    return (tw_state){.tensors = small_tensors,
                      .n_tensors = n_tensors,
                      .storages = small_storages,
                      .legacy = legacy,
                      .metadata = true};
}

static int write_small(const char *name, bool legacy, zip_int32_t method, char *path, size_t size)
{
    tmp_path(path, size, name);
    tw_state s = small_state(legacy, sizeof small_tensors / sizeof *small_tensors);
    tw_buf b = {0};
    tw_pickle_state(&b, &s);
    int rc = legacy ? tw_write_legacy(path, &b, small_storages, 6)
                    : tw_write_zip(path, "archive", &b, small_storages, 6, method);
    tw_free(&b);
    return CHECK(rc == 0, "write %s", path) ? 0 : -1;
}

static void test_small_state(void)
{
    char path[PATH_MAX];
    if (write_small("small-zip.pt", false, ZIP_CM_STORE, path, sizeof path) == 0)
        check_small_state("zip (stored)", path);
    if (write_small("small-zip-deflated.pt", false, ZIP_CM_DEFLATE, path, sizeof path) == 0)
        check_small_state("zip (deflated)", path);
    if (write_small("small-legacy.pt", true, 0, path, sizeof path) == 0) check_small_state("legacy", path);
}

/* A legacy storage view: the tensor's offset counts from the view's start. */
static void test_legacy_view(void)
{
    tw_buf b = {0};
    tw_byte(&b, 0x80);
    tw_byte(&b, 2);
    tw_byte(&b, '}');
    tw_str(&b, "v", false);
    tw_global(&b, "torch._utils", "_rebuild_tensor_v2");
    tw_byte(&b, '(');
    tw_byte(&b, '(');
    tw_str(&b, "storage", false);
    tw_global(&b, "torch", "FloatStorage");
    tw_str(&b, "0", false);
    tw_str(&b, "cpu", false);
    tw_int(&b, 12);
    tw_str(&b, "7", false); /* view (key, offset 6, numel 4) */
    tw_int(&b, 6);
    tw_int(&b, 4);
    tw_byte(&b, 0x87);
    tw_byte(&b, 't');
    tw_byte(&b, 'Q');
    tw_int(&b, 1); /* offset 1 into the view: elements 7, 8 */
    tw_int(&b, 2);
    tw_byte(&b, 0x85);
    tw_int(&b, 1);
    tw_byte(&b, 0x85);
    tw_byte(&b, 0x89);
    tw_byte(&b, '}');
    tw_byte(&b, 't');
    tw_byte(&b, 'R');
    tw_byte(&b, 's');
    tw_byte(&b, '.');
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "legacy-view.pt");
    CHECK(tw_write_legacy(path, &b, small_storages, 1) == 0, "write %s", path);
    tw_free(&b);
    sl_torch_file *f = open_torch(path);
    const sl_tensor *t = f ? sl_torch_find(f, "v") : NULL;
    CHECK(t && t->numel == 2 && element(t, 0) == 7 && element(t, 1) == 8, "legacy view: elements 7 and 8");
    sl_torch_close(&f);
}

/* ---- our writer: tiny-b re-saved in every layout, tensor for tensor ---- */

typedef struct resaved {
    tw_tensor tensors[128];
    tw_storage storages[128];
    char names[128][80], keys[128][16];
    void *converted[128];
    size_t n;
} resaved;

/* tiny-b's tensors as a state dict (one storage each, F32 converted to dtype). */
static int resave_state(const sl_st_file *st, sl_dtype dtype, bool prefix, resaved *r)
{
    static const char *const types[] = {
        [SL_F32] = "FloatStorage", [SL_F16] = "HalfStorage", [SL_BF16] = "BFloat16Storage"};
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < sl_st_count(st) && i < 128; i++, r->n++) {
        const sl_tensor *t = sl_st_at(st, i);
        const char *bare = strncmp(t->name, "transformer.", 12) == 0 ? t->name + 12 : t->name;
        snprintf(r->names[i], sizeof r->names[i], "%s", prefix ? t->name : bare);
        snprintf(r->keys[i], sizeof r->keys[i], "%zu", i);
        r->converted[i] = malloc(t->numel * sl_dtype_size(dtype));
        sl_dtype_from_f32(r->converted[i], dtype, t->data, t->numel);
        r->storages[i] = (tw_storage){r->keys[i], types[dtype], sl_dtype_size(dtype), r->converted[i], t->numel};
        tw_tensor *tt = &r->tensors[i];
        *tt = (tw_tensor){.name = r->names[i], .storage = (int)i, .ndim = t->ndim};
        int64_t stride = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            tt->shape[d] = t->shape[d];
            tt->stride[d] = stride;
            stride *= t->shape[d];
        }
    }
    return 0;
}

static void resaved_free(resaved *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->converted[i]);
}

static int write_resaved(const resaved *r, bool legacy, zip_int32_t method, const char *path)
{
    tw_state s = {
        .tensors = r->tensors, .n_tensors = r->n, .storages = r->storages, .legacy = legacy, .metadata = true};
    tw_buf b = {0};
    tw_pickle_state(&b, &s);
    int rc = legacy ? tw_write_legacy(path, &b, r->storages, r->n)
                    : tw_write_zip(path, "pytorch_model", &b, r->storages, r->n, method);
    tw_free(&b);
    return rc;
}

static void test_resaved_tiny_b(void)
{
    sl_st_file *st = NULL;
    open_fixture("tiny-b", "model.safetensors", &st);
    if (!st) return;
    const struct {
        const char *label;
        sl_dtype dtype;
        bool legacy, prefix;
        zip_int32_t method;
    } cases[] = {{"zip-f32", SL_F32, false, true, ZIP_CM_STORE},
                 {"zip-f32-deflated", SL_F32, false, false, ZIP_CM_DEFLATE},
                 {"legacy-f32", SL_F32, true, false, 0},
                 {"zip-bf16", SL_BF16, false, true, ZIP_CM_STORE},
                 {"legacy-f16", SL_F16, true, true, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        resaved r;
        resave_state(st, cases[c].dtype, cases[c].prefix, &r);
        char path[PATH_MAX];
        tmp_path(path, sizeof path, cases[c].label);
        if (CHECK(write_resaved(&r, cases[c].legacy, cases[c].method, path) == 0, "write %s", path)) {
            sl_torch_file *f = open_torch(path);
            size_t equal = 0;
            for (size_t i = 0; f && i < r.n; i++) {
                const sl_tensor *t = sl_torch_find(f, r.names[i]);
                const sl_tensor *src = sl_st_at(st, i);
                equal += t && t->dtype == cases[c].dtype && t->numel == src->numel &&
                         memcmp(t->data, r.converted[i], t->nbytes) == 0;
            }
            CHECK(f && equal == r.n && sl_torch_count(f) == r.n, "%s: %zu of %zu tensors read back exactly",
                  cases[c].label, equal, r.n);
            sl_torch_close(&f);
        }
        resaved_free(&r);
    }
    sl_st_close(&st);
}

/* ---- logits: the torch files through sl_hf_model give the references ---- */

/* The logits of a prompt from the checkpoint at path (opened with config_path when not NULL):
 * at every position ([T, vocab]) or only the last. NULL (a failed check) on failure. */
static float *logits_of(const char *path, const char *config_path, const fixture_prompt *fp, bool all)
{
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open_with_config(path, config_path, &err);
    if (!CHECK(ck != NULL, "open %s: %s", path, err.msg)) return NULL;
    const sl_config *c = sl_hf_model_config(ck);
    sl_params p;
    float *out = NULL;
    if (CHECK(sl_params_load(&p, ck, 0, c->n_layer, true, true, false, &err) == 0, "%s: %s", path, err.msg)) {
        sl_runner *stage = sl_runner_new(&p, fp->n_ids, NULL, &err);
        sl_kv *kv = sl_kv_new(&p, fp->n_ids, SL_F32, &err);
        out = malloc((size_t)(all ? fp->n_ids : 1) * c->vocab_size * sizeof(float));
        if (!CHECK(stage && kv &&
                       sl_runner_forward(stage, kv, fp->n_ids, fp->ids, NULL, out,
                                         all ? SL_OUT_LOGITS_ALL : SL_OUT_LOGITS_LAST, &err) == 0,
                   "%s: forward: %s", path, err.msg)) {
            free(out);
            out = NULL;
        }
        sl_kv_destroy(&kv);
        sl_runner_destroy(&stage);
        sl_params_free(&p);
    }
    sl_hf_model_destroy(&ck);
    return out;
}

/* Every prompt's logits from the torch directory equal the model's references within 1e-5. */
static void check_against_refs(const char *model, const char *torch_dir, bool all, int vocab)
{
    fixture_prompt prompts[8];
    int n = fixture_prompts(model, prompts, 8);
    sl_st_file *refs = NULL;
    open_fixture(model, "refs.safetensors", &refs);
    char dir[PATH_MAX];
    fixture_path(dir, sizeof dir, torch_dir, "");
    for (int i = 0; i < n && refs; i++) {
        char name[64], what[128];
        snprintf(name, sizeof name, "p%d.%s", i, all ? "logits" : "logits_last");
        const size_t count = (size_t)(all ? prompts[i].n_ids : 1) * (size_t)vocab;
        const float *want = fixture_f32(refs, name, count);
        float *got = logits_of(dir, NULL, &prompts[i], all);
        snprintf(what, sizeof what, "%s prompt %d: logits vs %s's references", torch_dir, i, model);
        if (want && got) CHECK_CLOSE(got, want, count, 1e-5, what);
        free(got);
    }
    sl_st_close(&refs);
}

static void test_fixture_logits(void)
{
    check_against_refs("tiny-a", "torch/tiny-a-zip-f16", false, 50257);
    check_against_refs("tiny-b", "torch/tiny-b-legacy-f32", true, 1000);
}

static void copy_config(const char *model, const char *dir)
{
    char src[PATH_MAX], dst[PATH_MAX + 16];
    fixture_path(src, sizeof src, model, "config.json");
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    sl_err err;
    char *text = sl_read_text_file(src, 1 << 20, &err);
    CHECK(text && sl_mkdirs(dir, &err) == 0 && sl_write_text_file(dst, text, &err) == 0, "config to %s: %s", dir,
          err.msg);
    free(text);
}

/* tiny-b's logits from dir equal, exactly, those from the safetensors model at want_dir. */
static void check_same_logits(const char *what, const char *dir, const char *config, const char *want_dir)
{
    fixture_prompt prompts[4];
    if (fixture_prompts("tiny-b", prompts, 4) < 3) return;
    float *got = logits_of(dir, config, &prompts[2], true), *want = logits_of(want_dir, NULL, &prompts[2], true);
    if (got && want) CHECK_CLOSE(got, want, (size_t)prompts[2].n_ids * 1000, 0, what);
    free(got);
    free(want);
}

/* pytorch_model.bin.index.json + two shards of our writer, each holding half of the tensors. */
static void write_sharded(const resaved *r, const char *dir)
{
    char path[PATH_MAX + 64], index[8192] = "{\"metadata\": {}, \"weight_map\": {";
    size_t half = r->n / 2;
    for (int k = 0; k < 2; k++) {
        size_t first = k ? half : 0, n = k ? r->n - half : half;
        tw_tensor tensors[128];
        for (size_t i = 0; i < n; i++) {
            tensors[i] = r->tensors[first + i];
            tensors[i].storage -= (int)first;
        }
        tw_state s = {.tensors = tensors, .n_tensors = n, .storages = r->storages + first, .metadata = true};
        tw_buf b = {0};
        tw_pickle_state(&b, &s);
        snprintf(path, sizeof path, "%s/pytorch_model-0000%d-of-00002.bin", dir, k + 1);
        CHECK(tw_write_zip(path, "pytorch_model", &b, r->storages + first, n, ZIP_CM_STORE) == 0, "write %s", path);
        tw_free(&b);
        for (size_t i = 0; i < n; i++)
            snprintf(index + strlen(index), sizeof index - strlen(index),
                     "%s\"%s\": \"pytorch_model-0000%d-of-00002.bin\"", strlen(index) > 40 ? ", " : "",
                     r->names[first + i], k + 1);
    }
    snprintf(index + strlen(index), sizeof index - strlen(index), "}}");
    snprintf(path, sizeof path, "%s/pytorch_model.bin.index.json", dir);
    sl_err err;
    CHECK(sl_write_text_file(path, index, &err) == 0, "%s", err.msg);
}

static void test_resaved_logits(void)
{
    sl_st_file *st = NULL;
    open_fixture("tiny-b", "model.safetensors", &st);
    if (!st) return;
    char tiny_b[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 32], config[PATH_MAX + 32];
    fixture_path(tiny_b, sizeof tiny_b, "tiny-b", "");
    const struct {
        const char *label;
        bool legacy, prefix;
    } f32_cases[] = {{"dir-zip", false, true}, {"dir-legacy-bare", true, false}};
    for (size_t c = 0; c < 2; c++) {
        resaved r;
        resave_state(st, SL_F32, f32_cases[c].prefix, &r);
        tmp_path(dir, sizeof dir, f32_cases[c].label);
        copy_config("tiny-b", dir);
        snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
        CHECK(write_resaved(&r, f32_cases[c].legacy, ZIP_CM_STORE, path) == 0, "write %s", path);
        check_same_logits(f32_cases[c].label, dir, NULL, tiny_b);
        resaved_free(&r);
    }

    /* 16-bit: the same as the safetensors copy in that dtype. */
    sl_hf_model *ck = sl_hf_model_open(tiny_b, NULL);
    sl_params p;
    sl_err err;
    const sl_dtype dtypes[] = {SL_BF16, SL_F16};
    for (int k = 0; ck && k < 2; k++) {
        char st_dir[PATH_MAX];
        snprintf(st_dir, sizeof st_dir, "%s/st-%s", tmp_root, sl_dtype_lower(dtypes[k]));
        CHECK(sl_params_load(&p, ck, 0, 5, true, true, false, &err) == 0 &&
                  sl_params_save_hf(&p, st_dir, dtypes[k], 1, true, &err) == 0,
              "%s", err.msg);
        sl_params_free(&p);
        resaved r;
        resave_state(st, dtypes[k], true, &r);
        snprintf(dir, sizeof dir, "%s/pt-%s", tmp_root, sl_dtype_lower(dtypes[k]));
        copy_config("tiny-b", dir);
        snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
        CHECK(write_resaved(&r, k == 1, ZIP_CM_STORE, path) == 0, "write %s", path);
        check_same_logits(sl_dtype_name(dtypes[k]), dir, NULL, st_dir);
        resaved_free(&r);
    }
    sl_hf_model_destroy(&ck);

    /* Sharded, with its index. */
    resaved r;
    resave_state(st, SL_F32, true, &r);
    tmp_path(dir, sizeof dir, "sharded");
    copy_config("tiny-b", dir);
    write_sharded(&r, dir);
    check_same_logits("sharded pytorch_model.bin", dir, NULL, tiny_b);

    /* One .pt file: with config.json beside it, with --config, without either. */
    tmp_path(dir, sizeof dir, "single");
    copy_config("tiny-b", dir);
    snprintf(path, sizeof path, "%s/tiny-b.pt", dir);
    CHECK(write_resaved(&r, false, ZIP_CM_STORE, path) == 0, "write %s", path);
    check_same_logits("a .pt file with config.json beside it", path, NULL, tiny_b);
    snprintf(config, sizeof config, "%s/config.json", dir);
    snprintf(path, sizeof path, "%s/alone.pt", tmp_root);
    CHECK(write_resaved(&r, true, 0, path) == 0, "write %s", path);
    check_same_logits("a .pt file with --config", path, config, tiny_b);
    CHECK(!sl_hf_model_open(path, &err) && strstr(err.msg, "needs the model's config.json beside it"),
          "a lone .pt file: %s", err.msg);
    CHECK(!sl_hf_model_open_with_config(dir, config, &err) && strstr(err.msg, "not a directory"),
          "--config with a directory: %s", err.msg);
    resaved_free(&r);
    sl_st_close(&st);
}

/* ---- the seed's split parts imported ---- */

static void test_seed_import(void)
{
    char seed[PATH_MAX], out[PATH_MAX], name[64];
    fixture_path(seed, sizeof seed, "torch", "tiny-b-seed-parts");
    tmp_path(out, sizeof out, "seed-import");
    sl_part_info parts[SL_MAX_SPLITS + 1];
    sl_seed_request req = {.seed_dir = seed, .out_dir = out, .format = SL_WF_F32};
    sl_err err;
    int n = sl_seed_import(&req, parts, name, sizeof name, &err);
    if (!CHECK(n == 3, "import %s: %d parts: %s", seed, n, n < 0 ? err.msg : "")) return;
    CHECK(strcmp(name, "tiny-b") == 0, "the model's name from the seed's files: %s", name);
    const char *names[] = {"bottom", "trunk1", "top"};
    const int ranges[][2] = {{0, 2}, {2, 4}, {4, 5}};
    for (int i = 0; i < 3; i++)
        CHECK(strcmp(parts[i].name, names[i]) == 0 && parts[i].first == ranges[i][0] && parts[i].last == ranges[i][1],
              "part %d is %s [%d,%d)", i, parts[i].name, parts[i].first, parts[i].last);
    fixture_prompt prompts[8];
    int n_prompts = fixture_prompts("tiny-b", prompts, 8);
    sl_st_file *refs = NULL;
    open_fixture("tiny-b", "refs.safetensors", &refs);
    for (int k = 0; k < n_prompts && refs; k++) {
        char ref_name[32], what[64];
        snprintf(ref_name, sizeof ref_name, "p%d.logits", k);
        const float *want = fixture_f32(refs, ref_name, (size_t)prompts[k].n_ids * 1000);
        float *got = fixture_chain_logits(out, parts, n, &prompts[k]);
        snprintf(what, sizeof what, "imported seed parts, prompt %d", k);
        if (want && got) CHECK_CLOSE(got, want + (size_t)(prompts[k].n_ids - 1) * 1000, 1000, 1e-5, what);
        free(got);
    }
    sl_st_close(&refs);
}

/* Replaces the first `from` in a text file by `to`. */
static void edit_file(const char *path, const char *from, const char *to)
{
    sl_err err;
    char *text = sl_read_text_file(path, 1 << 20, &err), *at = text ? strstr(text, from) : NULL;
    if (CHECK(at, "%s has '%s'", path, from)) {
        char *edited = malloc(strlen(text) + strlen(to) + 1);
        sprintf(edited, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        CHECK(sl_write_text_file(path, edited, &err) == 0, "%s", err.msg);
        free(edited);
    }
    free(text);
}

/* A fresh copy of the seed fixture, one file of it edited (or, with from NULL, removed). */
static void damaged_seed(const char *dir, const char *file, const char *from, const char *to)
{
    static const char *const files[] = {"bottom/tiny-b_2-4_bottom", "trunk/tiny-b_2-4_trunk", "top/tiny-b_2-4_top"};
    sl_err err;
    check_rmtree(dir);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++) {
            char src[PATH_MAX], dst[PATH_MAX + 64], sub[PATH_MAX + 64];
            const char *suffix = k ? "_metadata.json" : ".pt";
            snprintf(src, sizeof src, "%s/torch/tiny-b-seed-parts/%s%s", check_fixtures(), files[i], suffix);
            snprintf(dst, sizeof dst, "%s/%s%s", dir, files[i], suffix);
            snprintf(sub, sizeof sub, "%s/%.*s", dir, (int)(strchr(files[i], '/') - files[i]), files[i]);
            CHECK(sl_mkdirs(sub, &err) == 0 && sl_copy_file(src, dst, &err) == 0, "copy %s: %s", src, err.msg);
        }
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (from)
        edit_file(path, from, to);
    else
        CHECK(remove(path) == 0, "remove %s", path);
}

static void test_seed_refusals(void)
{
    const struct {
        const char *label, *file, *from, *to, *needle;
    } cases[] = {
        {"a component in the wrong directory", "trunk/tiny-b_2-4_trunk_metadata.json", "\"trunk\"", "\"top\"",
         "\"component\" is not \"trunk\""},
        {"parts that do not chain", "trunk/tiny-b_2-4_trunk_metadata.json", "\"start_layer\": 2", "\"start_layer\": 3",
         "starts at block 3, but"},
        {"a parameter count that is not the file's", "top/tiny-b_2-4_top_metadata.json", "71712", "71713",
         "71712 parameters but"},
        {"configs that differ", "top/tiny-b_2-4_top_metadata.json", "\"n_positions\": 64", "\"n_positions\": 32",
         "its config differs"},
        {"no top", "top/tiny-b_2-4_top_metadata.json", NULL, NULL, "/top: 0 files *_metadata.json, not one"},
        {"a .pt missing", "bottom/tiny-b_2-4_bottom.pt", NULL, NULL, "no tiny-b_2-4_bottom.pt beside it"},
    };
    char dir[PATH_MAX], out[PATH_MAX];
    tmp_path(dir, sizeof dir, "seed-damaged");
    tmp_path(out, sizeof out, "seed-damaged-out");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        damaged_seed(dir, cases[i].file, cases[i].from, cases[i].to);
        sl_part_info parts[SL_MAX_SPLITS + 1];
        char name[64];
        sl_seed_request req = {.seed_dir = dir, .out_dir = out, .format = SL_WF_F32};
        sl_err err = {{0}};
        int n = sl_seed_import(&req, parts, name, sizeof name, &err);
        CHECK(n < 0 && strstr(err.msg, cases[i].needle), "%s: refused saying '%s' (got '%s')", cases[i].label,
              cases[i].needle, n < 0 ? err.msg : "(imported)");
    }
}

/* ---- a real torch.save, when python3-torch is installed ---- */

static const char torch_script[] =
    "import collections, sys, torch\n"
    "def state():\n"
    "    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)\n"
    "    sd = collections.OrderedDict()\n"
    "    sd['w'], sd['wt'], sd['row'], sd['col'] = w, w.t(), w[1], w[:, 1]\n"
    "    sd['h'] = torch.arange(6, dtype=torch.float16).reshape(2, 3)\n"
    "    sd['b'] = torch.arange(5, dtype=torch.bfloat16)\n"
    "    sd['l'] = torch.arange(3, dtype=torch.int64)\n"
    "    sd['i'] = torch.arange(4, dtype=torch.int32)\n"
    "    sd._metadata = collections.OrderedDict([('', {'version': 1})])\n"
    "    return sd\n"
    "if sys.argv[1] == 'save':\n"
    "    torch.save(state(), sys.argv[2])\n"
    "    torch.save(state(), sys.argv[3], _use_new_zipfile_serialization=False)\n"
    "else:\n"
    "    want = state()\n"
    "    for path in sys.argv[2:]:\n"
    "        got = torch.load(path, weights_only=True)\n"
    "        ok = list(got) == list(want) and all(got[k].dtype == want[k].dtype and got[k].shape == want[k].shape\n"
    "                                             and torch.equal(got[k], want[k]) for k in want)\n"
    "        print(('OK ' if ok else 'MISMATCH ') + path)\n";

static const char *const python = "/usr/bin/python3";

static bool torch_installed(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", python);
    return system(cmd) == 0;
}

/* Reads a zip member of path into a new buffer. */
static unsigned char *zip_member(const char *path, const char *member, size_t *size)
{
    int code;
    zip_t *za = zip_open(path, ZIP_RDONLY, &code);
    zip_stat_t st;
    zip_file_t *zf = za && zip_stat(za, member, 0, &st) == 0 ? zip_fopen(za, member, 0) : NULL;
    unsigned char *buf = zf ? malloc(st.size + 1) : NULL;
    if (buf && zip_fread(zf, buf, st.size) != (zip_int64_t)st.size) {
        free(buf);
        buf = NULL;
    }
    if (zf) zip_fclose(zf);
    if (za) zip_discard(za);
    *size = buf ? st.size : 0;
    return buf;
}

static void test_real_torch(void)
{
    if (!torch_installed()) {
        printf("SKIPPED (not counted): python3-torch is not installed (apt-get install python3-torch), so our files "
               "were not compared with a real torch.save nor loaded by torch.load\n");
        return;
    }
    char script[PATH_MAX], zip_path[PATH_MAX], legacy_path[PATH_MAX], ours_zip[PATH_MAX], ours_legacy[PATH_MAX];
    char cmd[PATH_MAX * 4];
    tmp_path(script, sizeof script, "torch_check.py");
    tmp_path(zip_path, sizeof zip_path, "torch-zip.pt");
    tmp_path(legacy_path, sizeof legacy_path, "torch-legacy.pt");
    sl_err err;
    CHECK(sl_write_text_file(script, torch_script, &err) == 0, "%s", err.msg);
    snprintf(cmd, sizeof cmd, "%s %s save %s %s", python, script, zip_path, legacy_path);
    if (!CHECK(system(cmd) == 0, "torch.save failed: %s", cmd)) return;
    check_small_state("torch.save zip", zip_path);
    check_small_state("torch.save legacy", legacy_path);

    /* Our pickle of the same state is torch's, opcode for opcode and memo index for memo index. */
    tw_state s = small_state(false, N_SMALL_PLAIN);
    tw_buf b = {0};
    tw_pickle_state(&b, &s);
    size_t n = 0;
    unsigned char *theirs = zip_member(zip_path, "torch-zip/data.pkl", &n);
    CHECK(theirs && n == b.n && memcmp(theirs, b.p, n) == 0,
          "our data.pkl (%zu bytes) is byte for byte torch's (%zu bytes)", b.n, n);
    free(theirs);
    tmp_path(ours_zip, sizeof ours_zip, "ours-zip.pt");
    tmp_path(ours_legacy, sizeof ours_legacy, "ours-legacy.pt");
    CHECK(tw_write_zip(ours_zip, "ours-zip", &b, small_storages, 5, ZIP_CM_STORE) == 0, "write %s", ours_zip);
    tw_free(&b);
    s.legacy = true;
    tw_pickle_state(&b, &s);
    CHECK(tw_write_legacy(ours_legacy, &b, small_storages, 5) == 0, "write %s", ours_legacy);
    tw_free(&b);

    /* torch.load(weights_only=True) of our files gives torch's own tensors. */
    snprintf(cmd, sizeof cmd, "%s %s load %s %s 2>&1", python, script, ours_zip, ours_legacy);
    FILE *out = popen(cmd, "r");
    char line[PATH_MAX + 32];
    int ok = 0, lines = 0;
    while (out && fgets(line, sizeof line, out)) {
        lines++;
        ok += CHECK(strncmp(line, "OK ", 3) == 0, "torch.load of our file: %s", line);
    }
    CHECK(out && pclose(out) == 0 && ok == 2 && lines == 2, "torch.load read both of our files (%d of %d lines OK)", ok,
          lines);
}

/* ---- hostile pickles ---- */

typedef struct hostile {
    const char *label;
    const char *bytes;
    size_t size;
    const char *needle; /* the message must say this */
} hostile;

#define P(s) s, sizeof(s) - 1

static const hostile hostile_pickles[] = {
    {"GLOBAL os system",
     P("\x80\x02"
       "cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R."),
     "byte 2: GLOBAL os.system is not allowed"},
    {"GLOBAL builtins eval",
     P("\x80\x02"
       "cbuiltins\neval\n."),
     "byte 2: GLOBAL builtins.eval is not allowed"},
    {"GLOBAL with control bytes",
     P("\x80\x02"
       "cposix\nsys\x1btem\n."),
     "GLOBAL posix.sys\\x1btem is not allowed"},
    {"REDUCE of a string",
     P("\x80\x02X\x04\x00\x00\x00"
       "evil)R."),
     "byte 12: REDUCE of a string"},
    {"REDUCE of a storage class",
     P("\x80\x02"
       "ctorch\nFloatStorage\n)R."),
     "REDUCE of torch.FloatStorage"},
    {"INST", P("\x80\x02(ios\nsystem\nX\x02\x00\x00\x00ls."), "byte 3: opcode INST (0x69) is not allowed"},
    {"OBJ", P("\x80\x02(o."), "opcode OBJ (0x6f) is not allowed"},
    {"NEWOBJ",
     P("\x80\x02"
       "ccollections\nOrderedDict\n)\x81."),
     "opcode NEWOBJ (0x81) is not allowed"},
    {"STACK_GLOBAL", P("\x80\x04X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93."), "opcode STACK_GLOBAL"},
    {"EXT1", P("\x80\x02\x82\x01."), "opcode EXT1"},
    {"not an opcode", P("\x80\x02\xff."), "byte 2: 0xff is not a pickle opcode"},
    {"BUILD on a list", P("\x80\x02]}b."), "BUILD on a list"},
    {"BUILD on a plain dict", P("\x80\x02}}b."), "BUILD on a dict"},
    {"BINPERSID of a string",
     P("\x80\x02X\x03\x00\x00\x00"
       "abcQ."),
     "BINPERSID of a string"},
    {"persistent id of another kind", P("\x80\x02(X\x06\x00\x00\x00moduleNNNNtQ."), "BINPERSID of a tuple"},
    {"storage key with a path",
     P("\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x04\x00\x00\x00../xX\x03\x00\x00\x00"
       "cpuK\x01tQ."),
     "storage key is not a short name"},
    {"storage of 2^62 floats",
     P("\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00"
       "0X\x03\x00\x00\x00"
       "cpu\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40tQ."),
     "too large"},
    {"unset memo entry", P("\x80\x02h\x05."), "byte 2: memo entry 5 was never stored"},
    {"memo index far out", P("\x80\x02Nr\xff\xff\xff\x7f."), "memo index 2147483647 is out of range"},
    {"TUPLE without MARK", P("\x80\x02t."), "TUPLE without a MARK"},
    {"REDUCE on an empty stack", P("\x80\x02R."), "REDUCE needs 2 values on the stack, has 0"},
    {"APPEND to a dict", P("\x80\x02}Na."), "APPEND into a dict, not a list"},
    {"SETITEMS odd", P("\x80\x02}(Nu."), "odd number"},
    {"string past the end",
     P("\x80\x02X\xff\x00\x00\x00"
       "ab"),
     "needs 255 bytes, 2 are left (truncated?)"},
    {"no STOP", P("\x80\x02N"), "ends without STOP"},
    {"LONG1 of 9 bytes", P("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09."), "LONG1 of 9 bytes"},
    {"GLOBAL without newline",
     P("\x80\x02"
       "ctorch"),
     "GLOBAL without its newline"},
    {"two values at STOP", P("\x80\x02NN."), "STOP with 2 values"},
    {"unknown protocol", P("\x80\x09N."), "unknown pickle protocol 9"},
};

static void test_hostile_pickles(void)
{
    for (size_t i = 0; i < sizeof hostile_pickles / sizeof *hostile_pickles; i++) {
        const hostile *h = &hostile_pickles[i];
        sl_err err = {{0}};
        sl_pickle *p = sl_pickle_load(h->bytes, h->size, "evil.pkl", 0, &err);
        CHECK(!p && strstr(err.msg, h->needle) && strstr(err.msg, "evil.pkl"), "%s: refused saying '%s' (got '%s')",
              h->label, h->needle, p ? "(accepted)" : err.msg);
        sl_pickle_destroy(&p);
    }
}

/* A state dict pickle with one tensor, for the tensor-level refusals. */
static void tensor_pickle(tw_buf *b, const char *storage_type, int64_t numel, int64_t offset, int ndim,
                          const int64_t *shape, const int64_t *stride, bool hooks)
{
    tw_byte(b, 0x80);
    tw_byte(b, 2);
    tw_byte(b, '}');
    tw_str(b, "t", false);
    tw_global(b, "torch._utils", "_rebuild_tensor_v2");
    tw_byte(b, '(');
    tw_byte(b, '(');
    tw_str(b, "storage", false);
    tw_global(b, "torch", storage_type);
    tw_str(b, "0", false);
    tw_str(b, "cpu", false);
    tw_int(b, numel);
    tw_byte(b, 't');
    tw_byte(b, 'Q');
    tw_int(b, offset);
    tw_byte(b, '(');
    for (int d = 0; d < ndim; d++)
        tw_int(b, shape[d]);
    tw_byte(b, 't');
    tw_byte(b, '(');
    for (int d = 0; d < ndim; d++)
        tw_int(b, stride[d]);
    tw_byte(b, 't');
    tw_byte(b, 0x89);
    tw_byte(b, '}');
    if (hooks) { /* a "hook": any value in the dict */
        tw_str(b, "hook", false);
        tw_byte(b, 'N');
        tw_byte(b, 's');
    }
    tw_byte(b, 't');
    tw_byte(b, 'R');
    tw_byte(b, 's');
    tw_byte(b, '.');
}

static void expect_tensor_refused(const char *label, int64_t numel, int64_t offset, int ndim, const int64_t *shape,
                                  const int64_t *stride, bool hooks, const char *needle)
{
    tw_buf b = {0};
    tensor_pickle(&b, "FloatStorage", numel, offset, ndim, shape, stride, hooks);
    sl_err err = {{0}};
    sl_pickle *p = sl_pickle_load(b.p, b.n, "evil.pkl", 0, &err);
    CHECK(!p && strstr(err.msg, needle) && strstr(err.msg, "byte "), "%s: refused saying '%s' (got '%s')", label,
          needle, p ? "(accepted)" : err.msg);
    sl_pickle_destroy(&p);
    tw_free(&b);
}

static void test_hostile_tensors(void)
{
    const int64_t big[] = {1ll << 40, 1ll << 40}, big_stride[] = {1ll << 40, 1}, four[] = {4}, one[] = {1};
    const int64_t neg[] = {-1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    expect_tensor_refused("shape overflowing", 16, 0, 2, big, big_stride, false, "overflows");
    expect_tensor_refused("tensor past its storage", 3, 0, 1, four, one, false,
                          "tensor reaches element 3 of storage '0', which holds 3");
    expect_tensor_refused("offset past its storage", 4, 2, 1, four, one, false, "reaches element 5");
    expect_tensor_refused("negative size", 4, 0, 1, neg, one, false, "the size is not a tuple");
    expect_tensor_refused("negative stride", 4, 0, 1, four, neg, false, "the stride is not");
    expect_tensor_refused("negative offset", 4, -1, 1, four, one, false, "storage offset is not");
    expect_tensor_refused("nine dimensions", 4, 0, 9, nine, nine, false, "at most 8");
    expect_tensor_refused("backward hooks", 4, 0, 1, four, one, true, "backward hooks must be an empty dict");

    /* The same name twice. */
    const tw_tensor twice[2] = {{"t", 0, 0, 1, {4}, {1}}, {"t", 0, 0, 1, {4}, {1}}};
    tw_state s = {.tensors = twice, .n_tensors = 2, .storages = small_storages};
    tw_buf b = {0};
    tw_pickle_state(&b, &s);
    sl_err err = {{0}};
    sl_pickle *p = sl_pickle_load(b.p, b.n, "evil.pkl", 0, &err);
    const sl_pickle_tensor *tensors;
    size_t n;
    CHECK(p && sl_pickle_tensors(p, &tensors, &n, &err) != 0 && strstr(err.msg, "tensor 't' appears twice"),
          "a name twice: %s", err.msg);
    sl_pickle_destroy(&p);
    tw_free(&b);
    p = sl_pickle_load("\x80\x02N.", 4, "none.pkl", 0, &err);
    CHECK(p && sl_pickle_tensors(p, &tensors, &n, &err) != 0 && strstr(err.msg, "holds None, not a state dict"),
          "None is not a state dict: %s", err.msg);
    sl_pickle_destroy(&p);
}

/* ---- hostile files ---- */

static void expect_file_refused(const char *label, const char *path, const char *needle)
{
    sl_err err = {{0}};
    sl_torch_file *f = sl_torch_open(path, &err);
    CHECK(!f && strstr(err.msg, needle) && strstr(err.msg, path),
          "%s: refused naming the file and saying '%s' (got '%s')", label, needle, f ? "(accepted)" : err.msg);
    sl_torch_close(&f);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    CHECK(fp && fwrite(data, 1, n, fp) == n && fclose(fp) == 0, "write %s", path);
}

/* A file with one tensor "t" of shape [4] over storage "0" whose persistent id says numel floats,
 * and a storage of `have` floats. */
static void write_one_tensor(const char *path, bool legacy, int64_t numel, size_t have, zip_int32_t method)
{
    static float data[1 << 12];
    const int64_t four[] = {4}, one[] = {1};
    tw_buf b = {0};
    tensor_pickle(&b, "FloatStorage", numel, 0, 1, four, one, false);
    if (legacy) { /* legacy persistent ids have a view: rebuild with one */
        tw_free(&b);
        tw_tensor t = {"t", 0, 0, 1, {4}, {1}};
        tw_storage st = {"0", "FloatStorage", 4, data, (size_t)numel};
        tw_state s = {.tensors = &t, .n_tensors = 1, .storages = &st, .legacy = true};
        tw_pickle_state(&b, &s);
    }
    tw_storage st = {"0", "FloatStorage", 4, data, have};
    int rc = legacy ? tw_write_legacy(path, &b, &st, 1) : tw_write_zip(path, "evil", &b, &st, 1, method);
    CHECK(rc == 0, "write %s", path);
    tw_free(&b);
}

/* Finds a member's local header and central directory entry in a zip held in memory. */
static bool zip_entry(unsigned char *zip, size_t n, const char *name, unsigned char **local, unsigned char **central)
{
    size_t eocd = n - 22;
    while (eocd > 0 && memcmp(zip + eocd, "PK\5\6", 4) != 0)
        eocd--;
    uint32_t cd = (uint32_t)zip[eocd + 16] | (uint32_t)zip[eocd + 17] << 8 | (uint32_t)zip[eocd + 18] << 16 |
                  (uint32_t)zip[eocd + 19] << 24;
    for (size_t at = cd; at + 46 < n && memcmp(zip + at, "PK\1\2", 4) == 0;) {
        size_t name_len = zip[at + 28] | zip[at + 29] << 8, extra = zip[at + 30] | zip[at + 31] << 8,
               comment = zip[at + 32] | zip[at + 33] << 8;
        uint32_t off = (uint32_t)zip[at + 42] | (uint32_t)zip[at + 43] << 8 | (uint32_t)zip[at + 44] << 16 |
                       (uint32_t)zip[at + 45] << 24;
        if (name_len == strlen(name) && memcmp(zip + at + 46, name, name_len) == 0) {
            *central = zip + at;
            *local = zip + off;
            return true;
        }
        at += 46 + name_len + extra + comment;
    }
    return false;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned char *read_file(const char *path, size_t *n)
{
    unsigned char *bytes = NULL;
    FILE *fp = fopen(path, "rb");
    *n = 0;
    if (fp && fseek(fp, 0, SEEK_END) == 0) {
        long size = ftell(fp);
        rewind(fp);
        bytes = size > 0 ? malloc((size_t)size) : NULL;
        if (bytes && fread(bytes, 1, (size_t)size, fp) == (size_t)size) *n = (size_t)size;
    }
    if (fp) fclose(fp);
    return bytes;
}

/* Rewrites the uncompressed size a zip member claims, in its local header and central entry. */
static void patch_claimed_size(const char *path, const char *member, uint32_t size)
{
    size_t n = 0;
    unsigned char *zip = read_file(path, &n);
    unsigned char *local = NULL, *central = NULL;
    if (!CHECK(zip && n && zip_entry(zip, n, member, &local, &central), "patch %s: no member %s", path, member)) {
        free(zip);
        return;
    }
    put32(local + 22, size);
    put32(central + 24, size);
    write_bytes(path, zip, n);
    free(zip);
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc >> 1 ^ (0xedb88320u & -(crc & 1));
    }
    return ~crc;
}

static void le(tw_buf *b, uint64_t v, int n) { tw_le(b, v, n); }

/* A zip entry's fields: the local header is written where the entry's data begins. */
typedef struct raw_entry {
    const char *name;
    int method;
    uint32_t crc, comp, size, offset;
    size_t extra; /* bytes of an unknown extra field in the local header */
} raw_entry;

static void local_header(tw_buf *b, const raw_entry *e)
{
    tw_bytes(b, "PK\3\4", 4);
    le(b, 20, 2), le(b, 0, 2), le(b, (uint64_t)e->method, 2), le(b, 0, 4);
    le(b, e->crc, 4), le(b, e->comp, 4), le(b, e->size, 4), le(b, strlen(e->name), 2), le(b, e->extra, 2);
    tw_bytes(b, e->name, strlen(e->name));
    if (e->extra) le(b, 0xcafe, 2), le(b, e->extra - 4, 2);
    for (size_t i = 4; i < e->extra; i++)
        tw_byte(b, 0);
}

static void central_entry(tw_buf *b, const raw_entry *e)
{
    tw_bytes(b, "PK\1\2", 4);
    le(b, 20, 2), le(b, 20, 2), le(b, 0, 2), le(b, (uint64_t)e->method, 2), le(b, 0, 4);
    le(b, e->crc, 4), le(b, e->comp, 4), le(b, e->size, 4), le(b, strlen(e->name), 2), le(b, 0, 2);
    le(b, 0, 2), le(b, 0, 2), le(b, 0, 2), le(b, 0, 4), le(b, e->offset, 4);
    tw_bytes(b, e->name, strlen(e->name));
}

/* evil/data.pkl (stored), evil/data/0 = deflate [stored block: data/1's local header] + data/1's
 * deflate [final stored block: 1024 bytes]: inflating data/0 runs through data/1. */
static void write_overlapping_zip(const char *path)
{
    static unsigned char kernel[1024];
    for (size_t i = 0; i < sizeof kernel; i++)
        kernel[i] = (unsigned char)(i * 7);
    raw_entry pkl = {.name = "evil/data.pkl"}, a = {.name = "evil/data/0", .method = 8},
              b1 = {.name = "evil/data/1", .method = 8, .extra = 7};
    tw_buf lh_b = {0}, comp_b = {0}, comp_a = {0}, out_a = {0}, pickle = {0}, zip = {0};
    tw_byte(&comp_b, 1), le(&comp_b, sizeof kernel, 2), le(&comp_b, ~sizeof kernel & 0xffff, 2);
    tw_bytes(&comp_b, kernel, sizeof kernel);
    b1.crc = crc32_of(kernel, sizeof kernel), b1.comp = (uint32_t)comp_b.n, b1.size = sizeof kernel;
    local_header(&lh_b, &b1);
    tw_byte(&comp_a, 0), le(&comp_a, lh_b.n, 2), le(&comp_a, ~lh_b.n & 0xffff, 2);
    tw_bytes(&comp_a, lh_b.p, lh_b.n);
    tw_bytes(&comp_a, comp_b.p, comp_b.n);
    tw_bytes(&out_a, lh_b.p, lh_b.n);
    tw_bytes(&out_a, kernel, sizeof kernel);
    a.crc = crc32_of(out_a.p, out_a.n), a.comp = (uint32_t)comp_a.n, a.size = (uint32_t)out_a.n;
    tw_tensor ts[2] = {{"a", 0, 0, 1, {(int64_t)out_a.n / 4}, {1}}, {"b", 1, 0, 1, {sizeof kernel / 4}, {1}}};
    tw_storage st[2] = {{"0", "FloatStorage", 4, out_a.p, out_a.n / 4},
                        {"1", "FloatStorage", 4, kernel, sizeof kernel / 4}};
    tw_state s = {.tensors = ts, .n_tensors = 2, .storages = st};
    tw_pickle_state(&pickle, &s);
    pkl.crc = crc32_of(pickle.p, pickle.n), pkl.comp = pkl.size = (uint32_t)pickle.n;
    local_header(&zip, &pkl);
    tw_bytes(&zip, pickle.p, pickle.n);
    a.offset = (uint32_t)zip.n;
    local_header(&zip, &a);
    b1.offset = (uint32_t)zip.n + 5; /* inside data/0's data, after the stored block's header */
    tw_bytes(&zip, comp_a.p, comp_a.n);
    size_t cd = zip.n;
    central_entry(&zip, &pkl), central_entry(&zip, &a), central_entry(&zip, &b1);
    tw_bytes(&zip, "PK\5\6", 4);
    le(&zip, 0, 4), le(&zip, 3, 2), le(&zip, 3, 2), le(&zip, zip.n - 4 - 8 - cd, 4), le(&zip, cd, 4), le(&zip, 0, 2);
    write_bytes(path, zip.p, zip.n);
    tw_free(&lh_b), tw_free(&comp_b), tw_free(&comp_a), tw_free(&out_a), tw_free(&pickle), tw_free(&zip);
}

static void test_hostile_zip_files(void)
{
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "short-member.pt");
    write_one_tensor(path, false, 100, 4, ZIP_CM_STORE);
    expect_file_refused("member shorter than its storage", path,
                        "evil/data/0 holds 16 bytes; its storage declares 400");
    tmp_path(path, sizeof path, "long-member.pt");
    write_one_tensor(path, false, 4, 8, ZIP_CM_STORE);
    expect_file_refused("member longer than its storage", path, "holds 32 bytes; its storage declares 16");

    /* Truncated: the central directory at the end is gone. */
    tmp_path(path, sizeof path, "truncated.pt");
    write_one_tensor(path, false, 4, 4, ZIP_CM_STORE);
    struct stat st;
    if (stat(path, &st) == 0) CHECK(truncate(path, st.st_size / 2) == 0, "truncate %s", path);
    expect_file_refused("truncated zip", path, "not a readable zip archive");

    /* Zip bombs: a data.pkl that inflates to 20 MiB; a member claiming far more than its
     * compressed bytes can hold; a member inflating past what it claims. */
    tmp_path(path, sizeof path, "bomb-pickle.pt");
    tw_buf huge = {0};
    tw_byte(&huge, 0x80);
    tw_byte(&huge, 2);
    for (int i = 0; i < 20 << 20; i++)
        tw_byte(&huge, '(');
    tw_storage none = {"0", "FloatStorage", 4, f32_values, 0};
    CHECK(tw_write_zip(path, "evil", &huge, &none, 0, ZIP_CM_DEFLATE) == 0, "write %s", path);
    tw_free(&huge);
    expect_file_refused("20 MiB data.pkl", path, "evil/data.pkl is 20971522 bytes, more than 16777216");
    tmp_path(path, sizeof path, "bomb-ratio.pt");
    write_one_tensor(path, false, 1 << 30, 4, ZIP_CM_DEFLATE);
    patch_claimed_size(path, "evil/data/0", 0xfffffff0u);
    expect_file_refused("claims 4 GiB from a few bytes", path, "more than deflate can produce");
    tmp_path(path, sizeof path, "bomb-past.pt");
    write_one_tensor(path, false, 4, 4096, ZIP_CM_DEFLATE);
    patch_claimed_size(path, "evil/data/0", 16);
    expect_file_refused("inflates past its claim", path, "inflates past the 16 bytes it claims");

    /* Members whose data overlap (the trick of non-recursive zip bombs): data/1's local header and
     * data lie inside data/0's deflate stream, quoted by a stored block. */
    tmp_path(path, sizeof path, "overlap.pt");
    write_overlapping_zip(path);
    expect_file_refused("overlapping members", path, "the members read add up to more than the file: they overlap");
}

static void test_hostile_legacy_files(void)
{
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "legacy-count.pt");
    write_one_tensor(path, true, 4, 3, 0);
    expect_file_refused("record of another size", path, "storage '0' holds 3 elements; the pickle declares 4");
    tmp_path(path, sizeof path, "legacy-cut.pt");
    write_one_tensor(path, true, 4, 4, 0);
    struct stat st;
    if (stat(path, &st) == 0) CHECK(truncate(path, st.st_size - 1) == 0, "truncate %s", path);
    expect_file_refused("record cut short", path, "needs 16 bytes, 15 are left (truncated?)");
    if (stat(path, &st) == 0) CHECK(truncate(path, 100) == 0, "truncate %s", path);
    expect_file_refused("cut in the pickles", path, "truncated");

    /* Storages not listed, or listed twice / unused; a big-endian file; another protocol. */
    tw_tensor t = {"t", 0, 0, 1, {4}, {1}};
    tw_storage sts[2] = {{"0", "FloatStorage", 4, f32_values, 4}, {"9", "FloatStorage", 4, f32_values, 4}};
    tw_state s = {.tensors = &t, .n_tensors = 1, .storages = sts, .legacy = true};
    tw_buf b = {0};
    tw_pickle_state(&b, &s);
    tmp_path(path, sizeof path, "legacy-unused.pt");
    CHECK(tw_write_legacy(path, &b, sts, 2) == 0, "write");
    expect_file_refused("a record no tensor uses", path, "storage '9' is listed but no tensor uses it");
    tmp_path(path, sizeof path, "legacy-missing.pt");
    CHECK(tw_write_legacy(path, &b, sts, 0) == 0, "write");
    expect_file_refused("no record", path, "storage '0' has no record");
    tw_storage again[2] = {sts[0], sts[0]};
    tmp_path(path, sizeof path, "legacy-twice.pt");
    CHECK(tw_write_legacy(path, &b, again, 2) == 0, "write");
    expect_file_refused("a record twice", path, "storage '0' is listed twice");
    tmp_path(path, sizeof path, "legacy-big-endian.pt");
    CHECK(tw_write_legacy(path, &b, sts, 1) == 0, "write");
    size_t n = 0;
    char *bytes = NULL;
    FILE *fp = fopen(path, "rb");
    if (fp) {
        bytes = malloc(1 << 16);
        n = fread(bytes, 1, 1 << 16, fp);
        fclose(fp);
    }
    char *flag = bytes ? memmem(bytes, n, "little_endian", 13) : NULL;
    if (CHECK(flag, "the writer's sys_info has little_endian")) {
        flag[13 + 2] = (char)0x89; /* q NN NEWTRUE -> NEWFALSE */
        write_bytes(path, bytes, n);
        expect_file_refused("big-endian", path, "saved big-endian");
        flag[13 + 2] = (char)0x88;
        bytes[18] = (char)0xea; /* protocol version 1001 -> 1002 */
        write_bytes(path, bytes, n);
        expect_file_refused("another protocol version", path, "legacy protocol version 1002");
    }
    free(bytes);
    tw_free(&b);

    /* Neither format; the tar format of PyTorch < 0.4; a tensor of a type not computed in. */
    tmp_path(path, sizeof path, "text.pt");
    write_bytes(path, "hello, world\n", 13);
    expect_file_refused("a text file", path, "not a PyTorch checkpoint");
    char tar[1024] = "file.txt";
    memcpy(tar + 257, "ustar", 5);
    tmp_path(path, sizeof path, "old.tar");
    write_bytes(path, tar, sizeof tar);
    expect_file_refused("a tar archive", path, "tar archive");
    tmp_path(path, sizeof path, "double.pt");
    const int64_t two[] = {2}, one[] = {1};
    tensor_pickle(&b, "DoubleStorage", 2, 0, 1, two, one, false);
    tw_storage dbl = {"0", "DoubleStorage", 8, f32_values, 2};
    CHECK(tw_write_zip(path, "evil", &b, &dbl, 1, ZIP_CM_STORE) == 0, "write");
    tw_free(&b);
    expect_file_refused("float64 tensor", path, "tensor 't' is stored as DoubleStorage");
}

/* ---- fuzz seeds ---- */

/* Our writer's files as seeds: DIR/seeds-fuzz_pickle/ the pickles (a zip's and a legacy state
 * dict, a key list), DIR/seeds-fuzz_torch_file/ whole files (zip stored and deflated, legacy). */
static int write_seeds(const char *dir)
{
    char pickles[PATH_MAX], files[PATH_MAX], path[PATH_MAX + 32];
    snprintf(pickles, sizeof pickles, "%s/seeds-fuzz_pickle", dir);
    snprintf(files, sizeof files, "%s/seeds-fuzz_torch_file", dir);
    sl_err err;
    if (sl_mkdirs(pickles, &err) != 0 || sl_mkdirs(files, &err) != 0) return fprintf(stderr, "%s\n", err.msg), 1;
    init_small_values();
    const size_t n = sizeof small_tensors / sizeof *small_tensors;
    for (int legacy = 0; legacy < 2; legacy++) {
        tw_state s = small_state(legacy, n);
        tw_buf b = {0};
        tw_pickle_state(&b, &s);
        snprintf(path, sizeof path, "%s/%s.pkl", pickles, legacy ? "legacy" : "zip");
        write_bytes(path, b.p, b.n);
        snprintf(path, sizeof path, "%s/%s.pt", files, legacy ? "legacy" : "zip");
        CHECK((legacy ? tw_write_legacy(path, &b, small_storages, 6)
                      : tw_write_zip(path, "archive", &b, small_storages, 6, ZIP_CM_STORE)) == 0,
              "write %s", path);
        if (!legacy) {
            snprintf(path, sizeof path, "%s/zip-deflated.pt", files);
            CHECK(tw_write_zip(path, "archive", &b, small_storages, 6, ZIP_CM_DEFLATE) == 0, "write %s", path);
        }
        tw_free(&b);
    }
    tw_buf keys = {0};
    tw_pickle_keys(&keys, small_storages, 6);
    snprintf(path, sizeof path, "%s/keys.pkl", pickles);
    write_bytes(path, keys.p, keys.n);
    tw_free(&keys);
    return check_failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--seeds") == 0) return write_seeds(argv[2]);
    check_init(argc, argv);
    if (check_tmpdir(tmp_root, sizeof tmp_root, "torch") != 0) return 1;
    init_small_values();
    if (check_selected("fixture_files")) test_fixture_files();
    if (check_selected("seed_parts")) test_seed_parts();
    if (check_selected("small_state")) test_small_state();
    if (check_selected("legacy_view")) test_legacy_view();
    if (check_selected("resaved_tiny_b")) test_resaved_tiny_b();
    if (check_selected("fixture_logits")) test_fixture_logits();
    if (check_selected("resaved_logits")) test_resaved_logits();
    if (check_selected("seed_import")) test_seed_import();
    if (check_selected("seed_refusals")) test_seed_refusals();
    if (check_selected("real_torch")) test_real_torch();
    if (check_selected("hostile_pickles")) test_hostile_pickles();
    if (check_selected("hostile_tensors")) test_hostile_tensors();
    if (check_selected("hostile_zip_files")) test_hostile_zip_files();
    if (check_selected("hostile_legacy_files")) test_hostile_legacy_files();
    check_rmtree(tmp_root);
    return check_done();
}
