/* test_ckptstore.c — the checkpoint store: where a part's save goes, what its metadata says
 * (step, the loss to 9 digits, no loss when not finite), the save before it kept in prev/ only
 * when it is the one this run continued from, and opening the save of a step again: from prev/
 * when the current one is of another step or unfinished, with a clear error when neither is. */
#include "check.h"
#include "ckptstore.h"
#include "fileio.h"
#include "fixtures.h"
#include "json.h"

#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];

/* A trunk of blocks [1, 3) whose weights depend on seed. */
static int trunk(sl_params *p, uint64_t seed)
{
    sl_err err;
    const sl_config cfg = fixture_small_config();
    if (!CHECK(sl_params_alloc(p, &cfg, 1, 3, false, false, &err) == 0, "alloc: %s", err.msg)) return -1;
    sl_params_init_gpt2(p, seed);
    return 0;
}

/* Writes p as the save of step (with an optimizer state beside it) and commits it over base. */
static int save(sl_params *p, long base, long step, double loss, sl_part_info *info)
{
    sl_err err = {{0}};
    char optim[PATH_MAX + 32];
    int rc = sl_part_write_checkpoint(p, "trunk1", SL_ROLE_TRUNK, tmp, step, loss, info, &err);
    sl_part_sibling(info->file, "_optim.safetensors", optim, sizeof optim);
    if (rc == 0) rc = sl_write_text_file(optim, "optimizer state", &err);
    if (rc == 0) rc = sl_part_commit_checkpoint(tmp, base, step, info, &err);
    CHECK(rc == 0, "save of step %ld: %s", step, err.msg);
    return rc;
}

/* The save opened for step (-1: the current one): its step, and whether its weights are p's. */
static long opened_step(long step, const sl_params *want, bool *same, sl_err *err)
{
    sl_part *part = sl_part_open_checkpoint(tmp, SL_ROLE_TRUNK, "trunk1", step, true, err);
    sl_params got;
    if (!part || sl_part_load_params(part, &got, false, err) != 0) {
        sl_part_destroy(&part);
        return -2;
    }
    long at = sl_part_info_of(part)->step;
    size_t n = (size_t)want->cfg.n_embd * 3 * want->cfg.n_embd; /* the last block's qkv weight */
    *same = memcmp(got.blocks[1].qkv_w, want->blocks[1].qkv_w, n * sizeof(float)) == 0;
    sl_params_free(&got);
    sl_part_destroy(&part);
    return at;
}

static void expect_open(long step, long want_step, const sl_params *want, const char *what)
{
    sl_err err = {{0}};
    bool same = false;
    long at = opened_step(step, want, &same, &err);
    CHECK(at == want_step && same, "%s: opened step %ld (want %ld), same weights %d: %s", what, at, want_step, same,
          err.msg);
}

static void expect_refused(long step, const char *want, const char *what)
{
    sl_err err = {{0}};
    sl_part *part = sl_part_open_checkpoint(tmp, SL_ROLE_TRUNK, "trunk1", step, false, &err);
    CHECK(!part && strstr(err.msg, want), "%s: want '%s', got '%s'", what, want, err.msg);
    sl_part_destroy(&part);
}

/* The metadata of the current save (prev: of the save before), parsed. */
static cJSON *metadata(bool prev)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/trunk/%scheckpoint_trunk1_metadata.json", tmp, prev ? "prev/" : "");
    sl_err err;
    cJSON *root = sl_json_read_file(path, 1 << 20, &err);
    CHECK(root != NULL, "%s", err.msg);
    return root;
}

/* A member's number, NaN when missing or not a number; a member's string, "" when not one. */
static double number(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *string(const cJSON *obj, const char *key)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(obj, key));
    return v ? v : "";
}

static bool exists(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    return access(path, F_OK) == 0;
}

static void test_layout_and_metadata(sl_params *p0)
{
    char want[PATH_MAX], got[PATH_MAX];
    sl_err err;
    snprintf(want, sizeof want, "%s/trunk/checkpoint_trunk1.safetensors", tmp);
    CHECK(sl_part_checkpoint_file(tmp, SL_ROLE_TRUNK, "trunk1", got, sizeof got, &err) == 0 && !strcmp(got, want),
          "the current save's file: %s", got);
    CHECK(sl_part_checkpoint_file(tmp, SL_ROLE_TRUNK, "trunk1", got, 10, &err) != 0 && strstr(err.msg, "too long"),
          "a path that does not fit: %s", err.msg);
    sl_part_info info;
    if (save(p0, -1, 0, NAN, &info) != 0) return;
    CHECK(!strcmp(info.file, want), "after commit info->file is the current save's: %s", info.file);
    CHECK(exists("trunk/checkpoint_trunk1_metadata.json") && exists("trunk/checkpoint_trunk1_optim.safetensors") &&
              !exists("trunk/next") && !exists("trunk/prev"),
          "the save is in trunk/, next/ is gone, no prev/ yet");
    cJSON *meta = metadata(false);
    CHECK(number(meta, "step") == 0 && !cJSON_GetObjectItem(meta, "loss"), "step 0 and no loss when the loss is NaN");
    CHECK(!strcmp(string(meta, "role"), "trunk") && !strcmp(string(meta, "dtype"), "f32"), "a trunk, stored as f32");
    cJSON_Delete(meta);
    expect_open(-1, 0, p0, "the only save");
}

static void test_previous_save(sl_params *p0, sl_params *p2, sl_params *p4)
{
    sl_part_info info;
    if (save(p2, 0, 2, 1.234567891234, &info) != 0) return;
    cJSON *meta = metadata(false), *before = metadata(true);
    CHECK(number(meta, "loss") == 1.23456789, "the loss to 9 significant digits: %.17g", number(meta, "loss"));
    CHECK(number(before, "step") == 0, "the save of step 0 moved to prev/");
    cJSON_Delete(meta);
    cJSON_Delete(before);
    expect_open(-1, 2, p2, "current");
    expect_open(2, 2, p2, "step 2");
    expect_open(0, 0, p0, "step 0, from prev/");
    expect_refused(1, "saved at step 2, not at step 1 (nor is the save before it)", "a step never saved");

    /* A run that resumed from step 3 (not this directory's current save) replaces the current
     * save, an abandoned one from its point of view, and keeps prev/. */
    if (save(p4, 3, 4, 2.5, &info) != 0) return;
    expect_open(4, 4, p4, "step 4");
    expect_open(0, 0, p0, "prev/ still holds step 0");
    expect_refused(2, "not at step 2", "the abandoned save of step 2 is gone");

    /* Its next save continues from step 4: step 4 becomes the previous one. */
    if (save(p2, 4, 5, 2.25, &info) != 0) return;
    expect_open(5, 5, p2, "step 5");
    expect_open(4, 4, p4, "step 4, now from prev/");
    expect_refused(0, "not at step 0", "step 0 is no longer kept");
}

static void test_unfinished_save(sl_params *p0, sl_params *p4)
{
    sl_err err = {{0}};
    sl_part_info info;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/trunk/checkpoint_trunk1_optim.safetensors", tmp);
    CHECK(unlink(path) == 0, "remove the current optimizer state");
    expect_open(-1, 4, p4, "no optimizer state: the current save is unfinished, prev/ is used");
    expect_refused(5, "the last save of part 'trunk1' is unfinished", "step 5 without its optimizer state");
    expect_refused(5, "the one before is of step 4, not 5", "... and prev/ is of another step");
    snprintf(path, sizeof path, "%s/trunk/checkpoint_trunk1.safetensors", tmp);
    CHECK(truncate(path, 100) == 0, "truncate the current part");
    expect_refused(5, "unfinished", "a truncated part is unfinished");

    /* A save written but not committed changes nothing. */
    CHECK(sl_part_write_checkpoint(p0, "trunk1", SL_ROLE_TRUNK, tmp, 9, 1, &info, &err) == 0, "write: %s", err.msg);
    CHECK(strstr(info.file, "/trunk/next/checkpoint_trunk1.safetensors") != NULL, "written into next/: %s", info.file);
    expect_refused(9, "not 9", "an uncommitted save is not opened");
    sl_part *other = sl_part_open_checkpoint(tmp, SL_ROLE_TRUNK, "trunk2", -1, false, &err);
    CHECK(!other && strstr(err.msg, "no trunk part 'trunk2' saved here"), "another part: %s", err.msg);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "ckptstore") != 0) return 1;
    sl_params p0 = {0}, p2 = {0}, p4 = {0};
    /* One story: each case continues the directory the one before left. */
    if (check_selected("save_sequence") && trunk(&p0, 1) == 0 && trunk(&p2, 2) == 0 && trunk(&p4, 3) == 0) {
        test_layout_and_metadata(&p0);
        test_previous_save(&p0, &p2, &p4);
        test_unfinished_save(&p0, &p4);
    }
    sl_params_free(&p0);
    sl_params_free(&p2);
    sl_params_free(&p4);
    check_rmtree(tmp);
    return check_done();
}
