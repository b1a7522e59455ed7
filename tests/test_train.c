/* test_train.c — training against ../shared/fixtures/tiny-b/grads.*: the loss, the gradient of
 * every parameter, the gradient crossing every split point (bottom [0,K) + top [K,L) chained),
 * and every parameter after one AdamW step. */
#include "fileio.h"
#include "fixtures.h"
#include "backprop.h"

#include <limits.h>

#define GRAD_TOL 1e-6

static sl_st_file *grads_file;
static int32_t ids[64], targets[64];
static int T;
static float want_loss;

/* grads.safetensors and the 24 ids and the loss of grads.json; a missing or changed fixture is
 * a failure, not a skip. */
static bool load_fixture(void)
{
    char path[PATH_MAX];
    sl_err err;
    fixture_path(path, sizeof path, "tiny-b", "grads.safetensors");
    grads_file = sl_st_open(path, &err);
    if (!CHECK(grads_file != NULL, "%s", err.msg)) return false;
    fixture_path(path, sizeof path, "tiny-b", "grads.json");
    char *text = sl_read_text_file(path, 1 << 20, &err);
    if (!CHECK(text != NULL, "%s", err.msg)) return false;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *v, *loss = cJSON_GetObjectItem(root, "loss");
    int n = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(root, "ids")) if (n++ < 64) ids[T++] = v->valueint;
    bool ok = CHECK(n == 24 && cJSON_IsNumber(loss), "%s: 24 ids and a loss expected, got %d ids%s", path, n,
                    cJSON_IsNumber(loss) ? "" : " and no loss");
    if (ok) want_loss = (float)loss->valuedouble;
    cJSON_Delete(root);
    for (int t = 0; t < T; t++)
        targets[t] = t + 1 < T ? ids[t + 1] : -1;
    return ok;
}

static sl_hf_model *open_model(void)
{
    char path[PATH_MAX];
    sl_err err;
    snprintf(path, sizeof path, "%s/tiny-b", check_fixtures());
    sl_hf_model *ck = sl_hf_model_open(path, &err);
    CHECK(ck != NULL, "%s", err.msg);
    return ck;
}

/* Compares every tensor of got (a grads or params struct) with prefix.<name> in the fixture. */
static void compare_all(sl_params *got, const char *prefix, double tol, const char *label)
{
    fixture_refs l = {.n = 0};
    sl_params_foreach(got, fixture_collect, &l);
    int compared = 0;
    for (int i = 0; i < l.n; i++) {
        char name[128], what[160];
        snprintf(name, sizeof name, "%s.%s", prefix, l.refs[i].name);
        snprintf(what, sizeof what, "%s %s", label, name);
        const float *want = fixture_f32(grads_file, name, l.refs[i].numel);
        if (!want) continue;
        CHECK_CLOSE(*l.refs[i].slot, want, l.refs[i].numel, tol, what);
        compared++;
    }
    CHECK(compared == l.n && l.n > 0, "%s: compared %d of %d tensors", label, compared, l.n);
}

static void test_whole_model(void)
{
    sl_hf_model *ck = open_model();
    if (!ck) return;
    sl_params p;
    sl_err err;
    CHECK(sl_params_load(&p, ck, 0, 5, true, true, true, &err) == 0, "%s", err.msg);
    sl_backprop *tr = sl_backprop_new(&p, 1, T, &err);
    if (!CHECK(tr != NULL, "%s", err.msg)) return;
    float loss = 0;
    sl_backprop_zero_grad(tr);
    CHECK(sl_backprop_forward(tr, ids, NULL, targets, NULL, &loss, &err) == 0, "%s", err.msg);
    CHECK(fabsf(loss - want_loss) <= 1e-5f, "loss %.7f, reference %.7f", loss, want_loss);
    CHECK(sl_backprop_backward(tr, NULL, NULL, &err) == 0, "%s", err.msg);
    compare_all(sl_backprop_grads(tr), "grad", GRAD_TOL, "whole model");

    /* One AdamW step: within 1e-5, at most 0.01% beyond, none beyond 2 lr (fixture README). */
    sl_backprop_step(tr, &SL_ADAMW_DEFAULT, 1.0f);
    fixture_refs l = {.n = 0};
    sl_params_foreach(&p, fixture_collect, &l);
    size_t total = 0, beyond = 0;
    double worst = 0;
    for (int i = 0; i < l.n; i++) {
        char name[128];
        snprintf(name, sizeof name, "after_adamw.%s", l.refs[i].name);
        const float *want = fixture_f32(grads_file, name, l.refs[i].numel);
        for (size_t k = 0; want && k < l.refs[i].numel; k++) {
            double d = fabs((double)(*l.refs[i].slot)[k] - want[k]);
            beyond += d > 1e-5;
            worst = d > worst ? d : worst;
        }
        total += l.refs[i].numel;
    }
    CHECK(beyond * 10000 <= total && worst <= 2e-3, "after AdamW: %zu of %zu elements beyond 1e-5, worst %.3g", beyond,
          total, worst);
    sl_backprop_destroy(&tr);
    sl_params_free(&p);
    sl_hf_model_destroy(&ck);
}

/* Bottom [0,K) and top [K,L) chained: the top's input gradient is actgrad.K, and every
 * parameter gradient is the whole model's. */
static void test_split_gradients(void)
{
    sl_hf_model *ck = open_model();
    if (!ck) return;
    const int C = 48;
    float *act = malloc((size_t)T * C * sizeof(float)), *dact = malloc((size_t)T * C * sizeof(float));
    for (int K = 0; K < 5; K++) {
        sl_params bp, tp;
        sl_err err;
        int rc = sl_params_load(&bp, ck, 0, K, true, false, true, &err);
        rc |= sl_params_load(&tp, ck, K, 5, false, true, true, &err);
        if (!CHECK(rc == 0, "load K=%d: %s", K, err.msg)) continue;
        sl_backprop *bottom = sl_backprop_new(&bp, 1, T, &err), *top = sl_backprop_new(&tp, 1, T, &err);
        float loss;
        sl_backprop_zero_grad(bottom);
        sl_backprop_zero_grad(top);
        rc = sl_backprop_forward(bottom, ids, NULL, NULL, act, NULL, &err);
        rc |= sl_backprop_forward(top, NULL, act, targets, NULL, &loss, &err);
        rc |= sl_backprop_backward(top, NULL, dact, &err);
        rc |= sl_backprop_backward(bottom, dact, NULL, &err);
        CHECK(rc == 0 && fabsf(loss - want_loss) <= 1e-5f, "split at %d: loss %.7f: %s", K, loss, rc ? err.msg : "");
        char name[32], what[64];
        snprintf(name, sizeof name, "actgrad.%d", K);
        snprintf(what, sizeof what, "gradient crossing a split before layer %d", K);
        const float *want = fixture_f32(grads_file, name, (size_t)T * C);
        if (want) CHECK_CLOSE(dact, want, (size_t)T * C, GRAD_TOL, what);
        snprintf(what, sizeof what, "split at %d, bottom", K);
        compare_all(sl_backprop_grads(bottom), "grad", GRAD_TOL, what);
        snprintf(what, sizeof what, "split at %d, top", K);
        compare_all(sl_backprop_grads(top), "grad", GRAD_TOL, what);
        sl_backprop_destroy(&bottom);
        sl_backprop_destroy(&top);
        sl_params_free(&bp);
        sl_params_free(&tp);
    }
    free(act);
    free(dact);
    sl_hf_model_destroy(&ck);
}

static void test_errors(void)
{
    sl_hf_model *ck = open_model();
    if (!ck) return;
    sl_params p;
    sl_err err;
    sl_params_load(&p, ck, 0, 5, true, true, false, &err);
    CHECK(!sl_backprop_new(&p, 1, 8, &err) && strstr(err.msg, "writable"), "mmap'd weights refused: %s", err.msg);
    sl_params_free(&p);
    sl_params_load(&p, ck, 0, 5, true, true, true, &err);
    CHECK(!sl_backprop_new(&p, 1, 65, &err) && strstr(err.msg, "64"), "T beyond n_positions: %s", err.msg);
    sl_backprop *tr = sl_backprop_new(&p, 1, 4, &err);
    int32_t bad[4] = {1, 2, 1000, 3}, none[4] = {-1, -1, -1, -1};
    float loss;
    CHECK(sl_backprop_forward(tr, bad, NULL, none, NULL, &loss, &err) != 0 && strstr(err.msg, "1000"), "bad id: %s",
          err.msg);
    CHECK(sl_backprop_forward(tr, ids, NULL, none, NULL, &loss, &err) != 0 && strstr(err.msg, "no position"),
          "no targets: %s", err.msg);
    sl_backprop_destroy(&tr);
    sl_params_free(&p);
    sl_hf_model_destroy(&ck);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (load_fixture()) {
        if (check_selected("whole_model")) test_whole_model();
        if (check_selected("split_gradients")) test_split_gradients();
        if (check_selected("errors")) test_errors();
    }
    sl_st_close(&grads_file);
    return check_done();
}
