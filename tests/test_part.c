/* test_part.c — splitting checkpoints into parts and loading them back: every part holds only
 * its tensors, chained parts reproduce the fixture's logits, metadata is right, and a changed,
 * truncated or missing part file is refused with a clear message; merging a split gives back
 * HF's own model.safetensors and config.json; a part written with a source and extra members reads
 * back as written, and metadata with one field wrong is refused naming it. */
#include "fileio.h"
#include "fixtures.h"
#include "gpt2.h"
#include "json.h"
#include "part.h"
#include "sha256.h"
#include "split.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

static char tmp_root[256];

static int split(const char *model, const int *splits, int n, sl_wformat format, const char *out, sl_part_info *parts)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", check_fixtures(), model);
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    if (!CHECK(ck != NULL, "%s", err.msg)) return -1;
    sl_split_request req = {
        .model_path = src, .name = model, .splits = splits, .n_splits = n, .format = format, .out_dir = out};
    int rc = sl_split_write(ck, &req, parts, &err);
    CHECK(rc == 0, "split %s: %s", model, err.msg);
    sl_hf_model_destroy(&ck);
    return rc;
}

static void test_split_reproduces_logits(void)
{
    const int splits[][3] = {{1, 0, 0}, {2, 4, 0}, {1, 3, 5}, {5, 0, 0}};
    const int counts[] = {1, 2, 3, 1};
    fixture_prompt prompts[4];
    if (fixture_prompts("tiny-a", prompts, 4) < 4) return;
    char refs_path[PATH_MAX];
    fixture_path(refs_path, sizeof refs_path, "tiny-a", "refs.safetensors");
    sl_err err;
    sl_st_file *refs = sl_st_open(refs_path, &err);
    if (!CHECK(refs != NULL, "%s", err.msg)) return;
    const float *want = fixture_f32(refs, "p3.logits_last", 50257);
    for (int k = 0; k < 4; k++) {
        char out[PATH_MAX];
        snprintf(out, sizeof out, "%s/tiny-a-%d", tmp_root, k);
        sl_part_info parts[4];
        if (split("tiny-a", splits[k], counts[k], SL_WF_F32, out, parts) != 0) continue;
        float *got = fixture_chain_logits(out, parts, counts[k] + 1, &prompts[3]);
        char what[64];
        snprintf(what, sizeof what, "tiny-a split %d parts", counts[k] + 1);
        if (got && want) CHECK_CLOSE(got, want, 50257, 1e-5, what);
        free(got);
    }
    sl_st_close(&refs);
}

static void test_part_contents_and_metadata(void)
{
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/tiny-a-meta", tmp_root);
    const int splits[] = {2, 4};
    sl_part_info parts[3];
    if (split("tiny-a", splits, 2, SL_WF_F16, out, parts) != 0) return;
    const char *names[] = {"bottom", "trunk1", "top"};
    const int ranges[][2] = {{0, 2}, {2, 4}, {4, 6}};
    sl_part_info index[4];
    sl_err err;
    int n = sl_split_read_index(out, index, 4, &err);
    CHECK(n == 3, "index has %d parts: %s", n, err.msg);
    for (int i = 0; i < 3 && n == 3; i++) {
        CHECK(strcmp(index[i].name, names[i]) == 0, "part %d is %s", i, index[i].name);
        CHECK(index[i].first == ranges[i][0] && index[i].last == ranges[i][1], "%s layers [%d,%d)", names[i],
              index[i].first, index[i].last);
        CHECK(strcmp(index[i].dtype, "f16") == 0 && index[i].step == -1, "%s dtype %s", names[i], index[i].dtype);
        uint8_t digest[32];
        char hex[65];
        sl_sha256_file(index[i].file, digest, &err);
        sl_sha256_hex(digest, hex);
        CHECK(strcmp(hex, index[i].sha256) == 0, "%s sha256 in metadata matches the file", names[i]);
        CHECK(strstr(index[i].file, "/tiny-a_2-4_") != NULL, "%s file name %s", names[i], index[i].file);
        sl_st_file *f = sl_st_open(index[i].file, &err);
        if (!CHECK(f != NULL, "%s", err.msg)) continue;
        bool has_wte = sl_st_find(f, "transformer.wte.weight"), has_head = sl_st_find(f, "lm_head.weight");
        bool has_h0 = sl_st_find(f, "transformer.h.0.attn.c_attn.weight"),
             has_lnf = sl_st_find(f, "transformer.ln_f.weight");
        CHECK(has_wte == (i == 0) && has_h0 == (i == 0), "%s holds wte/h.0 only if bottom", names[i]);
        CHECK(has_head == (i == 2) && has_lnf == (i == 2), "%s holds lm_head/ln_f only if top (tied model)", names[i]);
        CHECK(sl_st_count(f) == (i == 0   ? 2 + 24u
                                 : i == 1 ? 24u
                                          : 24 + 3u),
              "%s has %zu tensors", names[i], sl_st_count(f));
        sl_st_close(&f);
    }
    char meta[PATH_MAX * 2];
    snprintf(meta, sizeof meta, "%s/top/tiny-a_2-4_top_metadata.json", out);
    char *text = sl_read_text_file(meta, 1 << 20, &err);
    CHECK(text && strstr(text, "\"source\"") && strstr(text, "\"sha256\"") && strstr(text, "zmq-splitlearn") &&
              strstr(text, "\"parameters\""),
          "metadata has source, sha256, tool, parameters");
    free(text);
}

static void test_damaged_parts(void)
{
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/tiny-b-damaged", tmp_root);
    const int splits[] = {3};
    sl_part_info parts[2];
    if (split("tiny-b", splits, 1, SL_WF_F32, out, parts) != 0) return;
    sl_err err;
    /* Flip one byte of the top's data: same size, different hash. */
    FILE *fp = fopen(parts[1].file, "r+b");
    fseek(fp, -5, SEEK_END);
    int byte = fgetc(fp);
    fseek(fp, -5, SEEK_END);
    fputc(byte ^ 0x55, fp);
    fclose(fp);
    sl_part *part = sl_part_open(out, 3, 5, false, &err);
    CHECK(part != NULL, "without --verify the changed part still loads: %s", err.msg);
    sl_part_destroy(&part);
    part = sl_part_open(out, 3, 5, true, &err);
    CHECK(part == NULL && strstr(err.msg, "SHA-256") && strstr(err.msg, parts[1].file), "verify refuses: %s", err.msg);
    sl_part_destroy(&part);
    CHECK(truncate(parts[0].file, 100) == 0, "truncate");
    part = sl_part_open(out, 0, 3, false, &err);
    CHECK(part == NULL && strstr(err.msg, "metadata says"), "truncated part refused: %s", err.msg);
    sl_part_destroy(&part);
    part = sl_part_open(out, 0, 2, false, &err);
    CHECK(part == NULL && strstr(err.msg, "no part has layers [0,2)") && strstr(err.msg, "bottom [0,3)"),
          "unknown range lists the parts: %s", err.msg);
    sl_part_destroy(&part);
    unlink(parts[1].file);
    part = sl_part_open(out, 3, 5, false, &err);
    CHECK(part == NULL && strstr(err.msg, "missing part file"), "missing part file: %s", err.msg);
    sl_part_destroy(&part);
}

/* What HF's config.json says must be what the merged one says, for every key both have. */
static void check_config_like_hf(const char *merged_dir, const char *model)
{
    char path[PATH_MAX + 32];
    sl_err err;
    snprintf(path, sizeof path, "%s/config.json", merged_dir);
    char *ours_text = sl_read_text_file(path, 1 << 20, &err);
    fixture_path(path, sizeof path, model, "config.json");
    char *hf_text = sl_read_text_file(path, 1 << 20, &err);
    cJSON *ours = cJSON_Parse(ours_text ? ours_text : ""), *hf = cJSON_Parse(hf_text ? hf_text : ""), *item;
    static const char *const required[] = {"architectures",
                                           "model_type",
                                           "activation_function",
                                           "n_layer",
                                           "n_embd",
                                           "n_head",
                                           "vocab_size",
                                           "n_positions",
                                           "layer_norm_epsilon",
                                           "tie_word_embeddings",
                                           "scale_attn_weights",
                                           "scale_attn_by_inverse_layer_idx",
                                           "reorder_and_upcast_attn"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        CHECK(cJSON_GetObjectItem(ours, required[i]) != NULL, "%s: merged config.json has \"%s\"", model, required[i]);
    int compared = 0;
    cJSON_ArrayForEach(item, hf)
    {
        const cJSON *mine = cJSON_GetObjectItem(ours, item->string);
        if (!mine || !strcmp(item->string, "tie_word_embeddings")) continue;
        compared++;
        if (!strcmp(item->string, "n_inner") && cJSON_IsNull(item)) /* null: 4 * n_embd */
            CHECK(mine->valuedouble == 4 * cJSON_GetObjectItem(hf, "n_embd")->valuedouble, "%s: n_inner 4 n_embd",
                  model);
        else
            CHECK(cJSON_Compare(item, mine, true), "%s: config.json \"%s\" as HF wrote it", model, item->string);
    }
    CHECK(compared >= 15, "%s: %d keys compared with HF's config.json", model, compared);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(ours, "tie_word_embeddings")), "%s: merged model is untied", model);
    cJSON_Delete(ours);
    cJSON_Delete(hf);
    free(ours_text);
    free(hf_text);
}

/* split + merge gives back HF's own file: every tensor's name, dtype, shape and bytes (a tied
 * model gains lm_head.weight, a copy of wte), and "format": "pt", which transformers requires. */
static void test_merge_gives_back_hf(const char *model, sl_dtype dtype)
{
    const int splits[] = {2, 4};
    char parts_dir[PATH_MAX], merged[PATH_MAX], path[PATH_MAX + 32];
    snprintf(parts_dir, sizeof parts_dir, "%s/%s-merge-parts", tmp_root, model);
    snprintf(merged, sizeof merged, "%s/%s-merged", tmp_root, model);
    sl_part_info parts[3];
    sl_err err;
    if (split(model, splits, 2, dtype == SL_F16 ? SL_WF_F16 : SL_WF_F32, parts_dir, parts) != 0) return;
    if (!CHECK(sl_split_merge(parts_dir, merged, dtype, &err) == 0, "merge %s: %s", model, err.msg)) return;
    snprintf(path, sizeof path, "%s/model.safetensors", merged);
    sl_st_file *ours = sl_st_open(path, &err);
    fixture_path(path, sizeof path, model, "model.safetensors");
    sl_st_file *hf = sl_st_open(path, &err);
    if (!CHECK(ours && hf, "open: %s", err.msg)) goto done;
    const char *format = sl_st_metadata(ours, "format");
    CHECK(format && !strcmp(format, "pt"), "%s: merged file says format pt", model);
    const sl_tensor *wte = sl_st_find(hf, "transformer.wte.weight");
    bool tied = !sl_st_find(hf, "lm_head.weight");
    CHECK(sl_st_count(ours) == sl_st_count(hf) + tied, "%s: %zu tensors (HF %zu%s)", model, sl_st_count(ours),
          sl_st_count(hf), tied ? " + lm_head.weight" : "");
    int same = 0;
    for (size_t i = 0; i < sl_st_count(hf); i++) {
        const sl_tensor *want = sl_st_at(hf, i), *got = sl_st_find(ours, want->name);
        same += got && got->dtype == want->dtype && got->ndim == want->ndim &&
                !memcmp(got->shape, want->shape, sizeof got->shape) && got->nbytes == want->nbytes &&
                !memcmp(got->data, want->data, want->nbytes);
    }
    CHECK(same == (int)sl_st_count(hf), "%s: %d of %zu tensors equal HF's in name, dtype, shape and bytes", model, same,
          sl_st_count(hf));
    if (tied) {
        const sl_tensor *head = sl_st_find(ours, "lm_head.weight");
        CHECK(head && wte && head->nbytes == wte->nbytes && !memcmp(head->data, wte->data, wte->nbytes),
              "%s: lm_head.weight is a copy of the tied wte", model);
    }
    check_config_like_hf(merged, model);
done:
    sl_st_close(&ours);
    sl_st_close(&hf);
}

/* sl_part_write: the metadata gets copies of source and of extra's members after the rest (the
 * caller keeps both), and reading it back gives what was written. */
static void test_write_with_members(char *meta, size_t size)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/written", tmp_root);
    sl_err err = {{0}};
    sl_params p;
    const sl_config small = fixture_small_config();
    if (!CHECK(sl_params_alloc(&p, &small, 1, 3, false, false, &err) == 0, "alloc: %s", err.msg)) return;
    sl_params_init_gpt2(&p, 5);
    cJSON *source = cJSON_Parse("{\"path\": \"m\", \"files\": [{\"file\": \"a\", \"sha256\": \"00\"}]}");
    cJSON *extra = cJSON_Parse("{\"step\": 12, \"loss\": 3.5}");
    sl_part_info info, back;
    int rc = sl_part_write(&p, "trunk1", SL_ROLE_TRUNK, SL_WF_BF16, dir, "stem", source, extra, &info, &err);
    sl_part_sibling(info.file, "_metadata.json", meta, size);
    if (CHECK(rc == 0 && sl_part_read_metadata(meta, &back, &err) == 0, "write and read back: %s", err.msg)) {
        CHECK(back.step == 12 && back.loss == 3.5 && info.step == -1, "step %ld and loss %g from extra", back.step,
              back.loss);
        CHECK(!strcmp(back.name, "trunk1") && back.role == SL_ROLE_TRUNK && back.first == 1 && back.last == 3 &&
                  !strcmp(back.dtype, "bf16") && !strcmp(back.file, info.file) && !strcmp(back.sha256, info.sha256) &&
                  back.bytes == info.bytes && back.parameters == sl_params_count(&p) &&
                  back.cfg.n_inner == small.n_inner,
              "metadata read back equals what was written");
        cJSON *root = sl_json_read_file(meta, 1 << 20, &err);
        const cJSON *last = root ? cJSON_GetArrayItem(root, cJSON_GetArraySize(root) - 1) : NULL;
        CHECK(root && cJSON_Compare(cJSON_GetObjectItem(root, "source"), source, true) && last &&
                  !strcmp(last->string, "loss") && !strcmp(last->prev->string, "step"),
              "\"source\" as given, extra's members last");
        cJSON_Delete(root);
        sl_part *part = sl_part_open_info(&back, true, &err);
        sl_params q;
        CHECK(part && sl_part_load_params(part, &q, true, &err) == 0 && sl_params_count(&q) == back.parameters,
              "the part opens (SHA-256 checked) and loads: %s", err.msg);
        if (part) sl_params_free(&q);
        sl_part_destroy(&part);
    }
    CHECK(cJSON_GetObjectItem(extra, "step") && cJSON_GetObjectItem(source, "files"), "the caller keeps its objects");
    cJSON_Delete(source);
    cJSON_Delete(extra);
    sl_params_free(&p);
}

/* A metadata file with one field wrong is refused, naming the file and the field. */
static void test_bad_metadata(const char *good)
{
    static const char *const cases[][3] = {
        {"bytes", "-1", "\"bytes\": -1 is out of range"},
        {"parameters", "\"many\"", "\"parameters\" is not a number"},
        {"layers", "[0, 99]", "\"layers\"[1]: 99 is out of range 0..3"},
        {"layers", "[2, 1]", "ends before it begins"},
        {"layers", "[1]", "\"layers\" is not [first, last]"},
        {"role", "\"middle\"", "\"role\" is \"middle\", not bottom, trunk or top"},
        {"sha256", NULL, "\"sha256\" is missing or not a string"},
        {"step", "1.5", "\"step\": 1.5 is not a whole number"},
        {"loss", "\"low\"", "\"loss\" is not a number"},
        {"config", "{}", "\"config\": \"n_layer\" is missing"},
    };
    char bad[PATH_MAX];
    snprintf(bad, sizeof bad, "%s/written/bad_metadata.json", tmp_root);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_err err = {{0}};
        cJSON *root = sl_json_read_file(good, 1 << 20, &err);
        if (!CHECK(root != NULL, "%s", err.msg)) return;
        if (cases[i][1])
            cJSON_ReplaceItemInObjectCaseSensitive(root, cases[i][0], cJSON_Parse(cases[i][1]));
        else
            cJSON_DeleteItemFromObjectCaseSensitive(root, cases[i][0]);
        sl_json_write_file(bad, root, &err);
        cJSON_Delete(root);
        sl_part_info info;
        CHECK(sl_part_read_metadata(bad, &info, &err) != 0 && strstr(err.msg, bad) && strstr(err.msg, cases[i][2]),
              "\"%s\": %s: want '%s', got '%s'", cases[i][0], cases[i][1], cases[i][2], err.msg);
    }
}

static void test_bad_splits(void)
{
    char out[PATH_MAX], src[PATH_MAX];
    snprintf(out, sizeof out, "%s/bad", tmp_root);
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    const int cases[][2] = {{0, 2}, {3, 3}, {4, 2}, {2, 5}};
    const char *needles[] = {"outside", "increase", "increase", "outside"};
    sl_part_info parts[3];
    for (int i = 0; i < 4 && ck; i++) {
        sl_split_request req = {
            .model_path = src, .name = "x", .splits = cases[i], .n_splits = 2, .format = SL_WF_F32, .out_dir = out};
        CHECK(sl_split_write(ck, &req, parts, &err) != 0 && strstr(err.msg, needles[i]), "splits %d,%d: %s",
              cases[i][0], cases[i][1], err.msg);
    }
    sl_hf_model_destroy(&ck);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp_root, sizeof tmp_root, "part") != 0) return 1;
    if (check_selected("split_reproduces_logits")) test_split_reproduces_logits();
    if (check_selected("merge_tiny-a_f16")) test_merge_gives_back_hf("tiny-a", SL_F16);
    if (check_selected("merge_tiny-b_f32")) test_merge_gives_back_hf("tiny-b", SL_F32);
    if (check_selected("part_contents_and_metadata")) test_part_contents_and_metadata();
    if (check_selected("damaged_parts")) test_damaged_parts();
    if (check_selected("bad_splits")) test_bad_splits();
    if (check_selected("written_part_metadata")) {
        char meta[PATH_MAX + 32] = "";
        test_write_with_members(meta, sizeof meta);
        test_bad_metadata(meta);
    }
    check_rmtree(tmp_root);
    return check_done();
}
