/* test_trunk.c — the trunk's training protocol without processes: a forward/backward/update
 * through sl_trunk equals the same stage trained directly, every message that does not fit
 * the state (README, "A trunk's training state belongs to one run") is refused and changes
 * nothing, and a run's saves stay within max_checkpoint. */
#include "ckptstore.h"
#include "clock.h"
#include "fileio.h"
#include "fixtures.h"
#include "split.h"
#include "trunk.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

enum { B = 2, T = 8, C = 48, ROWS = B * T };

static char tmp[200], parts[PATH_MAX], root[PATH_MAX];
static float x[ROWS * C], g[ROWS * C];

static int make_split(void)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    sl_part_info info[3];
    const int splits[2] = {1, 3};
    sl_split_request req = {
        .model_path = src, .name = "tb", .splits = splits, .n_splits = 2, .format = SL_WF_F32, .out_dir = parts};
    int rc = ck ? sl_split_write(ck, &req, info, &err) : -1;
    CHECK(rc == 0, "split: %s", err.msg);
    sl_hf_model_destroy(&ck);
    return rc;
}

/* A trunk of layers [first, last) whose runs' saves may hold max_checkpoint bytes (0: no limit). */
static sl_trunk *limited_trunk(int first, int last, unsigned long long max_checkpoint)
{
    sl_trunk_opts o = {.name = "trunk1",
                       .parts = parts,
                       .first = first,
                       .last = last,
                       .max_checkpoint = max_checkpoint,
                       .max_train_tokens = 64,
                       .root = root,
                       .activations = SL_F32};
    sl_err err;
    sl_trunk *t = sl_trunk_new(&o, &err);
    CHECK(t != NULL, "trunk: %s", err.msg);
    return t;
}

static sl_trunk *new_trunk(int first, int last) { return limited_trunk(first, last, 0); }

static sl_msg forward_msg(uint64_t run, uint64_t step, uint32_t batch, uint64_t at_step)
{
    return (sl_msg){.kind = SL_MSG_FORWARD,
                    .session = {{(uint8_t)run}},
                    .step = step,
                    .train = true,
                    .batch = batch,
                    .has_at_step = true,
                    .at_step = at_step,
                    .x = x,
                    .rows = ROWS,
                    .cols = C,
                    .dtype = SL_F32};
}

static sl_msg backward_msg(uint64_t run, uint64_t step, bool update)
{
    return (sl_msg){.kind = SL_MSG_BACKWARD,
                    .session = {{(uint8_t)run}},
                    .step = step,
                    .x = g,
                    .rows = ROWS,
                    .cols = C,
                    .dtype = SL_F32,
                    .update = update,
                    .lr = 1e-2f,
                    .weight_decay = 0.01f,
                    .grad_scale = 1.0f};
}

/* Handles msg; returns the status, the reply in *reply. */
static int send_msg(sl_trunk *t, const sl_msg *msg, sl_msg *reply, sl_err *err)
{
    sl_trunk_to to;
    int rc = sl_trunk_handle(t, msg, reply, &to, err);
    if (rc == 0) rc = sl_trunk_finish(t, err);
    return rc;
}

/* One whole training step; the forward's output is copied into out. */
static int step(sl_trunk *t, uint64_t run, uint64_t n, float *out, sl_err *err)
{
    sl_msg reply, f = forward_msg(run, n, B, n - 1), b = backward_msg(run, n, true);
    if (send_msg(t, &f, &reply, err) != 0) return -1;
    if (out) sl_msg_copy_x(&reply, out);
    return send_msg(t, &b, &reply, err);
}

/* The same stage trained directly with sl_backprop: forward outputs and weights must match. */
static void test_equals_direct_training(void)
{
    sl_trunk *t = new_trunk(1, 3);
    sl_err err;
    sl_part *part = sl_part_open(parts, 1, 3, false, &err);
    sl_params p;
    CHECK(part && sl_part_load_params(part, &p, true, &err) == 0, "%s", err.msg);
    sl_backprop *tr = sl_backprop_new(&p, B, T, &err);
    float want[ROWS * C], got[ROWS * C], din[ROWS * C];
    sl_adamw opt = SL_ADAMW_DEFAULT;
    opt.lr = 1e-2f;
    bool same = t && tr;
    for (uint64_t s = 1; same && s <= 3; s++) {
        same = step(t, 7, s, got, &err) == 0;
        CHECK(same, "step %llu: %s", (unsigned long long)s, err.msg);
        sl_backprop_zero_grad(tr);
        sl_backprop_forward(tr, NULL, x, NULL, want, NULL, &err);
        sl_backprop_backward(tr, g, din, &err);
        sl_backprop_step(tr, &opt, 1.0f);
        same = same && memcmp(want, got, sizeof want) == 0;
    }
    CHECK(same, "three steps through the protocol give the direct training's activations bit for bit");
    const sl_params *q = t ? sl_trunk_params(t) : NULL;
    CHECK(q && !memcmp(q->blocks[0].fc_w, p.blocks[0].fc_w, (size_t)C * 144 * sizeof(float)),
          "and the same weights after the updates");
    sl_backprop_destroy(&tr);
    sl_params_free(&p);
    sl_part_destroy(&part);
    sl_trunk_destroy(&t);
}

/* rc is a refusal of the given class whose message names needle. */
static void refused(int rc, int want, const sl_err *err, const char *needle, const char *what)
{
    CHECK(rc == want && strstr(err->msg, needle), "%s refused (%d): %s", what, rc, err->msg);
}

static void test_refusals(void)
{
    sl_trunk *t = new_trunk(1, 3);
    if (!t) return;
    sl_err err;
    sl_msg reply, m;
    CHECK(step(t, 9, 1, NULL, &err) == 0, "a first step: %s", err.msg);
    m = forward_msg(9, 2, B, 5);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_OUT_OF_STEP, &err, "optimizer steps", "a forward at another step");
    m = forward_msg(9, 2, 4, 1);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "not 4 x 4", "another batch shape");
    m = backward_msg(9, 2, false);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "no training forward", "a backward with no forward");
    m = forward_msg(9, 2, B, 1);
    CHECK(send_msg(t, &m, &reply, &err) == 0, "a forward: %s", err.msg);
    m = backward_msg(9, 3, false);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "step 3", "a backward for another step");
    m = backward_msg(9, 2, false);
    m.rows = ROWS / 2;
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "rows", "a backward of other rows");
    m = (sl_msg){.kind = SL_MSG_UPDATE, .session = {{9}}, .step = 2, .lr = 1e-2f, .grad_scale = 1};
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "no gradients", "an update without gradients");
    m = backward_msg(9, 2, false);
    CHECK(send_msg(t, &m, &reply, &err) == 0, "the backward: %s", err.msg);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "no training forward", "the same backward twice");
    m = backward_msg(8, 2, false);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "no training state of run", "another run's backward");
    float before = sl_trunk_params(t)->blocks[0].fc_w[0];
    m = (sl_msg){.kind = SL_MSG_UPDATE, .session = {{9}}, .step = 2, .lr = 1e-2f, .grad_scale = NAN};
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, "non-finite", "non-finite gradients");
    CHECK(sl_trunk_params(t)->blocks[0].fc_w[0] == before, "weights unchanged by the refused update");
    m = forward_msg(9, 3, 1, 1);
    m.rows = 128;
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "max_train_tokens", "a batch over max_train_tokens");
    m = (sl_msg){.kind = SL_MSG_SAVE, .session = {{9}}, .step = 4};
    snprintf(m.dir, sizeof m.dir, "a/../../b");
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, "'..'", "a save with '..'");
    snprintf(m.dir, sizeof m.dir, "/etc/x");
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, "outside", "a save outside checkpoint_root");
    m = (sl_msg){.kind = SL_MSG_END, .session = {{9}}};
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "does not take", "a message of no training kind");
    sl_trunk_destroy(&t);
}

/* A bottom trains inside the trainer; a new run starts from the part's own weights. */
static void test_runs(void)
{
    sl_err err;
    sl_msg reply, m = forward_msg(1, 1, B, 0);
    sl_trunk *bottom = new_trunk(0, 1);
    if (bottom) refused(send_msg(bottom, &m, &reply, &err), SL_TRUNK_BAD, &err, "bottom", "training a bottom");
    sl_trunk_destroy(&bottom);
    sl_trunk *t = new_trunk(1, 3);
    if (!t) return;
    float first[ROWS * C], again[ROWS * C];
    CHECK(step(t, 1, 1, first, &err) == 0 && step(t, 1, 2, NULL, &err) == 0, "run 1: %s", err.msg);
    CHECK(step(t, 2, 1, again, &err) == 0, "run 2: %s", err.msg);
    CHECK(!memcmp(first, again, sizeof first), "a new run starts from the part's weights, not the last run's");
    sl_trunk_destroy(&t);
}

/* A run whose trainer went quiet loses its training state; the trunk serves its part again. */
static void test_idle_expiry(void)
{
    sl_trunk *t = new_trunk(1, 3), *fresh = new_trunk(1, 3);
    if (!t || !fresh) goto done;
    sl_err err;
    CHECK(step(t, 5, 1, NULL, &err) == 0, "a step: %s", err.msg);
    CHECK(sl_trunk_expire(t, sl_now(), 60, &err) == 0, "a run active a moment ago keeps its state");
    const size_t n = (size_t)C * 144 * sizeof(float);
    CHECK(memcmp(sl_trunk_params(t)->blocks[0].fc_w, sl_trunk_params(fresh)->blocks[0].fc_w, n) != 0,
          "the step changed the weights");
    CHECK(sl_trunk_expire(t, sl_now() + 61, 60, &err) == 1, "an idle run's state is freed");
    CHECK(!memcmp(sl_trunk_params(t)->blocks[0].fc_w, sl_trunk_params(fresh)->blocks[0].fc_w, n),
          "the trunk serves its part's own weights again");
    sl_msg reply, m = backward_msg(5, 1, false);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_BAD, &err, "no training state", "the idle run's messages");
done:
    sl_trunk_destroy(&t);
    sl_trunk_destroy(&fresh);
}

/* Save, train on, load: the loaded trunk continues as the saved one did. */
static void test_save_load(void)
{
    sl_trunk *t = new_trunk(1, 3), *u = new_trunk(1, 3);
    if (!t || !u) goto done;
    sl_err err;
    sl_msg reply, m = {.kind = SL_MSG_SAVE, .session = {{3}}, .step = 10, .has_loss = true, .loss = 2.5f};
    snprintf(m.dir, sizeof m.dir, "ck");
    float want[ROWS * C], got[ROWS * C];
    CHECK(step(t, 3, 1, NULL, &err) == 0 && send_msg(t, &m, &reply, &err) == 0, "save: %s", err.msg);
    CHECK(reply.kind == SL_MSG_ACK && !strcmp(reply.node, "trunk1"), "a save is acknowledged by the node");
    CHECK(step(t, 3, 2, want, &err) == 0, "step 2: %s", err.msg);
    m = (sl_msg){.kind = SL_MSG_LOAD, .session = {{4}}, .step = 1, .has_at_step = true, .at_step = 1};
    snprintf(m.dir, sizeof m.dir, "%.400s/ck", root);
    CHECK(send_msg(u, &m, &reply, &err) == 0, "load: %s", err.msg);
    CHECK(sl_trunk_info(u)->step == 1, "the loaded part is of step 1 (%ld)", sl_trunk_info(u)->step);
    CHECK(step(u, 4, 2, got, &err) == 0 && !memcmp(want, got, sizeof want), "the loaded trunk continues exactly: %s",
          err.msg);
    m.at_step = 5;
    refused(send_msg(u, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, "step", "a load of a step not saved");
    char stopped[PATH_MAX];
    CHECK(sl_trunk_save_on_stop(t, stopped, sizeof stopped, &err) == 1 && strstr(stopped, "stopped-step2"),
          "a stop saves beside the run's checkpoint: %s", stopped);
    sl_trunk *v = new_trunk(1, 3);
    sl_msg save_over = {.kind = SL_MSG_SAVE, .session = {{5}}, .step = 1};
    snprintf(save_over.dir, sizeof save_over.dir, "ck");
    if (v && step(v, 5, 1, NULL, &err) == 0)
        refused(send_msg(v, &save_over, &reply, &err), SL_TRUNK_INTERNAL, &err, "another run's checkpoint",
                "a save over another run's checkpoint");
    snprintf(save_over.dir, sizeof save_over.dir, "ck\n2");
    if (v)
        refused(send_msg(v, &save_over, &reply, &err), SL_TRUNK_INTERNAL, &err, "control character",
                "a checkpoint directory with a control character");
    sl_trunk_destroy(&v);
    sl_trunk *other = new_trunk(3, 5);
    m.at_step = 1;
    if (other)
        refused(send_msg(other, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, "cannot load", "a load of another part");
    sl_trunk_destroy(&other);
done:
    sl_trunk_destroy(&t);
    sl_trunk_destroy(&u);
}

/* The bytes of the part's checkpoint files in root/dir. */
static unsigned long long held_in(const sl_trunk *t, const char *dir)
{
    char path[PATH_MAX + 64];
    unsigned long long bytes = 0;
    snprintf(path, sizeof path, "%s/%s", root, dir);
    sl_part_checkpoint_bytes(path, sl_trunk_info(t)->role, sl_trunk_info(t)->name, &bytes, NULL);
    return bytes;
}

/* A run's saves hold at most max_checkpoint bytes: a trainer saving into one new directory after
 * another is refused once the next save could pass the limit, told the limit and the size, and
 * nothing more is written; saving over its own checkpoint step after step stays within it; a new
 * run counts its own saves. */
static void test_checkpoint_limit(void)
{
    sl_trunk *probe = new_trunk(1, 3);
    const unsigned long long save = probe ? sl_checkpoint_room(sl_params_count(sl_trunk_params(probe)), true) : 0,
                             limit = 3 * save;
    sl_trunk_destroy(&probe);
    sl_trunk *t = limited_trunk(1, 3, limit);
    sl_err err = {{0}};
    if (!CHECK(t && step(t, 6, 1, NULL, &err) == 0, "a limited trunk trains: %s", err.msg)) goto done;
    enum { TRIES = 8 };
    int saved = 0, refused_at = -1;
    sl_msg reply, m = {.kind = SL_MSG_SAVE, .session = {{6}}, .step = 1};
    for (int i = 0; i < TRIES; i++) {
        snprintf(m.dir, sizeof m.dir, "fill-%d", i);
        m.step++;
        if (send_msg(t, &m, &reply, &err) == 0)
            saved++;
        else if (refused_at < 0)
            refused_at = i;
    }
    unsigned long long on_disk = 0;
    char dir[32];
    for (int i = 0; i < TRIES; i++) {
        snprintf(dir, sizeof dir, "fill-%d", i);
        on_disk += held_in(t, dir);
    }
    CHECK(saved >= 2 && refused_at == saved, "saves into new directories go on until the limit: %d saved, then refused",
          saved);
    CHECK(strstr(err.msg, "max_checkpoint_mb = ") && strstr(err.msg, "MB with this save"),
          "the refusal names the limit and the size: %s", err.msg);
    CHECK(on_disk <= limit && on_disk + save > limit,
          "the run's saves hold %llu bytes: within the limit (%llu), and one more could pass it", on_disk, limit);
    snprintf(dir, sizeof dir, "fill-%d", saved);
    CHECK(held_in(t, dir) == 0, "a refused save writes nothing");
    bool rotated = true;
    for (uint64_t s = 1; rotated && s <= 4; s++) {
        sl_msg over = {.kind = SL_MSG_SAVE, .session = {{7}}, .step = 100 + s};
        snprintf(over.dir, sizeof over.dir, "own");
        rotated = step(t, 7, s, NULL, &err) == 0 && send_msg(t, &over, &reply, &err) == 0;
    }
    CHECK(rotated && held_in(t, "own") <= limit,
          "a new run saving over its own checkpoint four times stays within the limit (%llu bytes): %s",
          held_in(t, "own"), rotated ? "" : err.msg);
done:
    sl_trunk_destroy(&t);
}

/* A dry run of save: acked with the absolute directory and this host's name, writing nothing and
 * leaving every run's state as it was; refused, saying what to change, where a save would fail. */
static void test_dry_run(void)
{
    sl_trunk *t = new_trunk(1, 3);
    if (!t) return;
    sl_err err;
    char host[256] = "", want[PATH_MAX + 16], made[PATH_MAX + 16], fix[PATH_MAX + 128];
    gethostname(host, sizeof host - 1);
    CHECK(step(t, 12, 1, NULL, &err) == 0, "a step of run 12: %s", err.msg);
    sl_msg reply, m = {.kind = SL_MSG_SAVE, .session = {{13}}, .step = 1, .dry_run = true};
    snprintf(m.dir, sizeof m.dir, "dry/run");
    snprintf(want, sizeof want, "%s/dry/run", root);
    int rc = send_msg(t, &m, &reply, &err);
    CHECK(rc == 0 && reply.kind == SL_MSG_ACK && !strcmp(reply.dir, want) && !strcmp(reply.host, host),
          "a dry run is acked with where the save would go: %s:%s %s", reply.host, reply.dir, rc ? err.msg : "");
    snprintf(made, sizeof made, "%s/dry", root);
    CHECK(access(made, F_OK) != 0, "... and writes nothing there");
    CHECK(step(t, 12, 2, NULL, &err) == 0, "another run's dry run leaves run 12's training state: %s", err.msg);
    snprintf(m.dir, sizeof m.dir, "/etc/x");
    snprintf(fix, sizeof fix, "set checkpoint_root = /etc/x in [pipeline], or use a path below %s", root);
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, fix, "a dry run outside checkpoint_root");
    snprintf(made, sizeof made, "%s/dry-file", root);
    FILE *f = fopen(made, "w");
    if (f) fclose(f);
    snprintf(m.dir, sizeof m.dir, "dry-file/ck");
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_INTERNAL, &err,
            "set checkpoint_root in [pipeline] to a directory trunk1 can write", "a dry run where nothing can be made");
    sl_msg save = {.kind = SL_MSG_SAVE, .session = {{12}}, .step = 3};
    snprintf(save.dir, sizeof save.dir, "dry-taken");
    CHECK(send_msg(t, &save, &reply, &err) == 0, "run 12 saves: %s", err.msg);
    snprintf(m.dir, sizeof m.dir, "dry-taken");
    refused(send_msg(t, &m, &reply, &err), SL_TRUNK_INTERNAL, &err, "another run's checkpoint",
            "a dry run of another run into a checkpoint");
    m.session = (sl_id){{12}};
    CHECK(send_msg(t, &m, &reply, &err) == 0, "... which its own run may save into again: %s", err.msg);
    sl_trunk_destroy(&t);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "trunk") != 0) return 1;
    snprintf(parts, sizeof parts, "%s/parts", tmp);
    snprintf(root, sizeof root, "%s/root", tmp);
    mkdir(root, 0700);
    for (int i = 0; i < ROWS * C; i++) {
        x[i] = sinf(0.37f * (float)i);
        g[i] = 0.01f * cosf(0.11f * (float)i);
    }
    if (make_split() == 0) {
        if (check_selected("equals_direct_training")) test_equals_direct_training();
        if (check_selected("refusals")) test_refusals();
        if (check_selected("runs")) test_runs();
        if (check_selected("save_load")) test_save_load();
        if (check_selected("idle_expiry")) test_idle_expiry();
        if (check_selected("checkpoint_limit")) test_checkpoint_limit();
        if (check_selected("dry_run")) test_dry_run();
    }
    check_rmtree(tmp);
    return check_done();
}
