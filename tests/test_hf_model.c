/* test_hf_model.c — reading HF checkpoints in every layout users bring (sharded, BF16/F16,
 * names without "transformer.", hub cache), each checked to give the fixture's logits; and
 * every malformed input giving a clear error that names the file and tensor. */
#include "fileio.h"
#include "fixtures.h"
#include "gpt2.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[256];

/* Logits at every position of tiny-b's prompt 2 from the checkpoint at path. NULL on failure. */
static float *logits_of(const char *path, int *T_out)
{
    fixture_prompt prompts[4];
    if (fixture_prompts("tiny-b", prompts, 4) < 3) return NULL;
    const fixture_prompt *fp = &prompts[2];
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(path, &err);
    if (!CHECK(ck != NULL, "open %s: %s", path, err.msg)) return NULL;
    const sl_config *c = sl_hf_model_config(ck);
    sl_params p;
    float *out = NULL;
    if (CHECK(sl_params_load(&p, ck, 0, c->n_layer, true, true, false, &err) == 0, "%s", err.msg)) {
        sl_runner *s = sl_runner_new(&p, fp->n_ids, NULL, &err);
        sl_kv *kv = sl_kv_new(&p, fp->n_ids, SL_F32, &err);
        out = malloc((size_t)fp->n_ids * c->vocab_size * sizeof(float));
        CHECK(sl_runner_forward(s, kv, fp->n_ids, fp->ids, NULL, out, SL_OUT_LOGITS_ALL, &err) == 0, "%s", err.msg);
        sl_kv_destroy(&kv);
        sl_runner_destroy(&s);
        sl_params_free(&p);
    }
    sl_hf_model_destroy(&ck);
    *T_out = fp->n_ids;
    return out;
}

/* Re-saves tiny-b with our writer in another layout and checks the logits are the same. */
static void test_layout(const char *label, sl_dtype dtype, int shards, bool prefix, double tol)
{
    char src[PATH_MAX], dst[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    snprintf(dst, sizeof dst, "%s/%s", tmp_root, label);
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    if (!CHECK(ck != NULL, "%s", err.msg)) return;
    sl_params p;
    const sl_config *c = sl_hf_model_config(ck);
    int rc = sl_params_load(&p, ck, 0, c->n_layer, true, true, false, &err);
    if (rc == 0) rc = sl_params_save_hf(&p, dst, dtype, shards, prefix, &err);
    CHECK(rc == 0, "%s: save: %s", label, err.msg);
    sl_params_free(&p);
    sl_hf_model_destroy(&ck);
    int T1, T2;
    float *want = logits_of(src, &T1), *got = logits_of(dst, &T2);
    if (want && got) CHECK_CLOSE(got, want, (size_t)T1 * 1000, tol, label);
    free(want);
    free(got);
}

static void test_layouts(void)
{
    test_layout("f32-plain", SL_F32, 1, true, 0);
    test_layout("f32-sharded-3", SL_F32, 3, true, 0);
    test_layout("f32-no-prefix", SL_F32, 1, false, 0);
    /* 16-bit copies round the weights, so the logits move by about 1e-2 at most here. */
    test_layout("bf16-sharded-2", SL_BF16, 2, true, 0.1);
    test_layout("f16-plain", SL_F16, 1, false, 0.02);
    char index[PATH_MAX];
    snprintf(index, sizeof index, "%s/f32-sharded-3/model-00003-of-00003.safetensors", tmp_root);
    CHECK(access(index, R_OK) == 0, "sharded save wrote %s", index);
}

/* Builds models--org--tiny/{refs/main, snapshots/<rev>/ -> ../../blobs/<hash>} like huggingface_hub. */
static void test_hub_cache(void)
{
    char hub[512], entry[1024], path[PATH_MAX * 2], target[PATH_MAX * 2];
    snprintf(hub, sizeof hub, "%s/hub", tmp_root);
    snprintf(entry, sizeof entry, "%s/models--org--tiny", hub);
    const char *rev = "0123456789abcdef0123456789abcdef01234567";
    const char *files[] = {"config.json", "model.safetensors"};
    sl_err err;
    snprintf(path, sizeof path, "%s/snapshots/%s", entry, rev);
    CHECK(sl_mkdirs(path, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/blobs", entry);
    CHECK(sl_mkdirs(path, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/refs", entry);
    CHECK(sl_mkdirs(path, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 2; i++) {
        char src[PATH_MAX];
        snprintf(src, sizeof src, "%s/tiny-b/%s", check_fixtures(), files[i]);
        char *abs = realpath(src, NULL);
        snprintf(path, sizeof path, "%s/blobs/blob%d", entry, i);
        CHECK(abs && symlink(abs, path) == 0, "link blob %s", path);
        free(abs);
        snprintf(path, sizeof path, "%s/snapshots/%s/%s", entry, rev, files[i]);
        snprintf(target, sizeof target, "../../blobs/blob%d", i);
        CHECK(symlink(target, path) == 0, "link snapshot %s", path);
    }
    snprintf(path, sizeof path, "%s/refs/main", entry);
    CHECK(sl_write_text_file(path, rev, &err) == 0, "%s", err.msg);
    int T;
    float *by_entry = logits_of(entry, &T);
    setenv("HF_HUB_CACHE", hub, 1);
    float *by_id = logits_of("org/tiny", &T);
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    float *want = logits_of(src, &T);
    if (by_entry && want) CHECK_CLOSE(by_entry, want, (size_t)T * 1000, 0, "hub cache entry");
    if (by_id && want) CHECK_CLOSE(by_id, want, (size_t)T * 1000, 0, "hub repo id");
    free(by_entry);
    free(by_id);
    free(want);
}

/* Writes a safetensors file from a header text and data size, for malformed cases. */
static void write_raw(const char *path, const char *header, size_t data_bytes, uint64_t claimed_len)
{
    FILE *fp = fopen(path, "wb");
    uint64_t n = claimed_len ? claimed_len : strlen(header);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, fp);
    fputs(header, fp);
    for (size_t i = 0; i < data_bytes; i++)
        fputc(0, fp);
    fclose(fp);
}

static void expect_open_error(const char *label, const char *header, size_t data, uint64_t claimed, const char *needle)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmp_root, label);
    write_raw(path, header, data, claimed);
    sl_err err = {{0}};
    sl_st_file *f = sl_st_open(path, &err);
    CHECK(f == NULL, "%s: opened a malformed file", label);
    CHECK(strstr(err.msg, needle) && strstr(err.msg, path), "%s: message '%s' should name the file and say '%s'", label,
          err.msg, needle);
    sl_st_close(&f);
}

static void test_malformed_files(void)
{
    expect_open_error("empty-header", "", 0, 0, "malformed JSON");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/short.safetensors", tmp_root);
    FILE *fp = fopen(path, "wb");
    fputs("abc", fp);
    fclose(fp);
    sl_err err;
    CHECK(sl_st_open(path, &err) == NULL && strstr(err.msg, "too short"), "3-byte file: %s", err.msg);
    expect_open_error("bad-json", "{\"a\": [1, 2", 0, 0, "malformed JSON");
    expect_open_error("header-past-end", "{}", 0, 1000, "does not fit");
    expect_open_error("unknown-dtype", "{\"w\":{\"dtype\":\"F8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 0,
                      "unsupported dtype");
    expect_open_error("outside", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0,
                      "truncated");
    expect_open_error("size-mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16, 0,
                      "shape needs 12 bytes");
    expect_open_error("overlap",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, 0, "overlap");
    expect_open_error("negative-shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 0,
                      "shape[0]");
    expect_open_error("huge-shape",
                      "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}", 0, 0,
                      "overflows");
    expect_open_error("bad-offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, 0,
                      "data_offsets");
}

/* A model directory whose config disagrees with the tensors, or that misses one. */
static void test_bad_models(void)
{
    char dir[PATH_MAX], path[PATH_MAX * 2], src[PATH_MAX];
    sl_err err = {{0}};
    snprintf(dir, sizeof dir, "%s/bad-shape", tmp_root);
    sl_mkdirs(dir, &err);
    snprintf(src, sizeof src, "%s/tiny-b/model.safetensors", check_fixtures());
    char *abs = realpath(src, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(abs && symlink(abs, path) == 0, "link %s", path);
    free(abs);
    snprintf(path, sizeof path, "%s/config.json", dir);
    sl_write_text_file(path,
                       "{\"n_layer\": 5, \"n_embd\": 48, \"n_head\": 3, \"n_inner\": 192, \"vocab_size\": 1000,"
                       " \"n_positions\": 64, \"tie_word_embeddings\": false}",
                       &err);
    sl_hf_model *ck = sl_hf_model_open(dir, &err);
    sl_params p;
    CHECK(ck != NULL, "open: %s", err.msg);
    if (ck) {
        CHECK(sl_params_load(&p, ck, 0, 5, true, true, false, &err) != 0, "n_inner 192 accepted");
        CHECK(strstr(err.msg, "mlp.c_fc.weight") && strstr(err.msg, "shape [48, 144]") && strstr(err.msg, "[48, 192]"),
              "shape error names tensor and shapes: %s", err.msg);
        CHECK(sl_params_load(&p, ck, 0, 6, true, true, false, &err) != 0 && strstr(err.msg, "outside"),
              "layer range beyond n_layer: %s", err.msg);
    }
    sl_hf_model_destroy(&ck);
    sl_write_text_file(path,
                       "{\"n_layer\": 6, \"n_embd\": 48, \"n_head\": 3, \"n_inner\": 144, \"vocab_size\": 1000,"
                       " \"n_positions\": 64, \"tie_word_embeddings\": false}",
                       &err);
    ck = sl_hf_model_open(dir, &err);
    if (ck) {
        CHECK(sl_params_load(&p, ck, 0, 6, true, true, false, &err) != 0 && strstr(err.msg, "transformer.h.5.") &&
                  strstr(err.msg, "missing"),
              "missing tensor named: %s", err.msg);
    }
    sl_hf_model_destroy(&ck);
    sl_write_text_file(path, "{\"n_layer\": 6, \"n_embd\": ", &err);
    CHECK(sl_hf_model_open(dir, &err) == NULL && strstr(err.msg, "config.json") && strstr(err.msg, "malformed"),
          "malformed config: %s", err.msg);
    sl_write_text_file(path, "{\"n_layer\": 6, \"n_embd\": 48, \"vocab_size\": 10, \"n_positions\": 8}", &err);
    CHECK(sl_hf_model_open(dir, &err) == NULL && strstr(err.msg, "n_head"), "missing n_head: %s", err.msg);
    sl_write_text_file(path,
                       "{\"n_layer\": 1, \"n_embd\": 4, \"n_head\": 1, \"vocab_size\": 10, \"n_positions\": 8, "
                       "\"activation_function\": \"relu\"}",
                       &err);
    CHECK(sl_hf_model_open(dir, &err) == NULL && strstr(err.msg, "relu"), "unsupported activation: %s", err.msg);
    snprintf(path, sizeof path, "%s/nothing-here", tmp_root);
    CHECK(sl_hf_model_open(path, &err) == NULL && strstr(err.msg, "nothing-here"), "missing dir: %s", err.msg);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp_root, sizeof tmp_root, "checkpoint") != 0) return 1;
    if (check_selected("layouts")) test_layouts();
    if (check_selected("hub_cache")) test_hub_cache();
    if (check_selected("malformed_files")) test_malformed_files();
    if (check_selected("bad_models")) test_bad_models();
    check_rmtree(tmp_root);
    return check_done();
}
