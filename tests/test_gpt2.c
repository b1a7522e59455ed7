/* test_gpt2.c — the forward pass against the HF references of ../shared/fixtures (tiny-a: F16,
 * tied, real vocab; tiny-b: F32, untied, n_inner != 4*n_embd): hidden state at every block
 * boundary, logits, argmax, greedy continuations with and without KV cache, and split stages
 * chained together giving the monolithic result. */
#include "fixtures.h"
#include "gpt2.h"

#define TOL 1e-5

typedef struct model {
    const char *name;
    sl_hf_model *ck;
    sl_st_file *refs;
    fixture_prompt prompts[8];
    int n_prompts;
} model;

/* Runs blocks [0, layers) (with head when head is true) and returns its output. */
static float *run_stage(model *m, int layers, bool head, const fixture_prompt *fp, sl_output which)
{
    const sl_config *c = sl_hf_model_config(m->ck);
    sl_params p;
    sl_err err;
    if (!CHECK(sl_params_load(&p, m->ck, 0, layers, true, head, false, &err) == 0, "%s", err.msg)) return NULL;
    sl_runner *s = sl_runner_new(&p, fp->n_ids, NULL, &err);
    sl_kv *kv = sl_kv_new(&p, fp->n_ids, SL_F32, &err);
    size_t width = which == SL_OUT_HIDDEN ? (size_t)c->n_embd : (size_t)c->vocab_size;
    float *out = malloc((size_t)fp->n_ids * width * sizeof(float));
    int rc = sl_runner_forward(s, kv, fp->n_ids, fp->ids, NULL, out, which, &err);
    CHECK(rc == 0, "forward: %s", err.msg);
    sl_kv_destroy(&kv);
    sl_runner_destroy(&s);
    sl_params_free(&p);
    return out;
}

static void test_hidden_states(model *m)
{
    const sl_config *c = sl_hf_model_config(m->ck);
    for (int i = 0; i < m->n_prompts; i++) {
        const fixture_prompt *fp = &m->prompts[i];
        for (int k = 0; k <= c->n_layer; k++) {
            char name[64], what[128];
            snprintf(name, sizeof name, "p%d.hidden.%d", i, k);
            snprintf(what, sizeof what, "%s %s", m->name, name);
            const float *ref = fixture_f32(m->refs, name, (size_t)fp->n_ids * c->n_embd);
            float *got = run_stage(m, k, k == c->n_layer, fp, SL_OUT_HIDDEN);
            if (ref && got) CHECK_CLOSE(got, ref, (size_t)fp->n_ids * c->n_embd, TOL, what);
            free(got);
        }
    }
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void test_logits(model *m)
{
    const sl_config *c = sl_hf_model_config(m->ck);
    const int V = c->vocab_size;
    for (int i = 0; i < m->n_prompts; i++) {
        const fixture_prompt *fp = &m->prompts[i];
        const int T = fp->n_ids;
        char name[64], what[128];
        float *all = run_stage(m, c->n_layer, true, fp, SL_OUT_LOGITS_ALL);
        float *last = run_stage(m, c->n_layer, true, fp, SL_OUT_LOGITS_LAST);
        if (!all || !last) continue;
        snprintf(name, sizeof name, "p%d.logits", i);
        const sl_tensor *full = sl_st_find(m->refs, name);
        if (full) {
            snprintf(what, sizeof what, "%s %s", m->name, name);
            if (CHECK(full->numel == (size_t)T * V, "%s shape", name))
                CHECK_CLOSE(all, (const float *)full->data, (size_t)T * V, TOL, what);
        } else {
            snprintf(name, sizeof name, "p%d.logits_last", i);
            const float *ref = fixture_f32(m->refs, name, (size_t)V);
            snprintf(what, sizeof what, "%s %s (all-positions run)", m->name, name);
            if (ref) CHECK_CLOSE(all + (size_t)(T - 1) * V, ref, (size_t)V, TOL, what);
        }
        snprintf(what, sizeof what, "%s p%d last-only logits equal the all-positions run", m->name, i);
        CHECK_CLOSE(last, all + (size_t)(T - 1) * V, (size_t)V, 1e-6, what);
        snprintf(name, sizeof name, "p%d.argmax", i);
        const sl_tensor *am = sl_st_find(m->refs, name);
        if (CHECK(am && am->dtype == SL_I64 && am->numel == (size_t)T, "%s missing", name)) {
            int bad = 0;
            for (int t = 0; t < T; t++) {
                int64_t want;
                memcpy(&want, (const char *)am->data + 8 * t, 8);
                bad += argmax(all + (size_t)t * V, V) != want;
            }
            CHECK(bad == 0, "%s %s: %d of %d positions differ", m->name, name, bad, T);
        }
        free(all);
        free(last);
    }
}

/* Steps of the greedy reference we can hold a float32 run to: up to the first tiny margin. */
static int comparable_steps(const fixture_prompt *fp)
{
    int n = 0;
    while (n < fp->n_greedy && fp->margins[n] >= 1e-3)
        n++;
    return n;
}

/* Greedy decoding, either incrementally through the KV cache or recomputing the whole
 * sequence every step (the cache-free reference path). */
static void greedy(model *m, const fixture_prompt *fp, int steps, bool use_cache, int32_t *gen)
{
    const sl_config *c = sl_hf_model_config(m->ck);
    sl_params p;
    sl_err err;
    if (!CHECK(sl_params_load(&p, m->ck, 0, c->n_layer, true, true, false, &err) == 0, "%s", err.msg)) return;
    int total = fp->n_ids + steps;
    sl_runner *s = sl_runner_new(&p, total, NULL, &err);
    sl_kv *kv = sl_kv_new(&p, total, SL_F32, &err);
    float *logits = malloc((size_t)c->vocab_size * sizeof(float));
    int32_t seq[256];
    memcpy(seq, fp->ids, (size_t)fp->n_ids * sizeof *seq);
    int len = fp->n_ids, rc = 0;
    for (int step = 0; step < steps && rc == 0; step++) {
        if (use_cache) {
            int from = sl_kv_len(kv);
            rc = sl_runner_forward(s, kv, len - from, seq + from, NULL, logits, SL_OUT_LOGITS_LAST, &err);
        } else {
            sl_kv_reset(kv);
            rc = sl_runner_forward(s, kv, len, seq, NULL, logits, SL_OUT_LOGITS_LAST, &err);
        }
        seq[len++] = gen[step] = argmax(logits, c->vocab_size);
    }
    CHECK(rc == 0, "greedy: %s", err.msg);
    free(logits);
    sl_kv_destroy(&kv);
    sl_runner_destroy(&s);
    sl_params_free(&p);
}

static void test_greedy(model *m)
{
    for (int i = 0; i < m->n_prompts; i++) {
        const fixture_prompt *fp = &m->prompts[i];
        int steps = comparable_steps(fp);
        for (int cached = 0; cached <= 1; cached++) {
            int32_t gen[128] = {0};
            greedy(m, fp, steps, cached, gen);
            int first_bad = -1;
            for (int t = 0; t < steps && first_bad < 0; t++)
                if (gen[t] != fp->greedy[t]) first_bad = t;
            CHECK(first_bad < 0, "%s p%d greedy (%s KV cache): step %d gives %d, reference %d", m->name, i,
                  cached ? "with" : "without", first_bad, first_bad < 0 ? 0 : gen[first_bad],
                  first_bad < 0 ? 0 : fp->greedy[first_bad]);
        }
        CHECK(steps > 0 || fp->n_greedy == 0, "%s p%d: no comparable greedy step", m->name, i);
    }
}

/* Bottom [0,a), trunk [a,b), top [b,L) chained equal the whole model, for every split. */
static void test_split_chain(model *m)
{
    const sl_config *c = sl_hf_model_config(m->ck);
    const fixture_prompt *fp = &m->prompts[m->n_prompts - 1];
    const int T = fp->n_ids, C = c->n_embd, V = c->vocab_size;
    float *whole = run_stage(m, c->n_layer, true, fp, SL_OUT_LOGITS_ALL);
    float *a_out = malloc((size_t)T * C * sizeof(float)), *b_out = malloc((size_t)T * C * sizeof(float));
    float *logits = malloc((size_t)T * V * sizeof(float));
    int worst_a = -1, worst_b = -1;
    double worst = 0;
    for (int a = 1; a < c->n_layer; a++) {
        for (int b = a; b < c->n_layer; b++) {
            sl_params pp[3];
            sl_err err;
            int rc = sl_params_load(&pp[0], m->ck, 0, a, true, false, false, &err);
            rc |= sl_params_load(&pp[1], m->ck, a, b, false, false, false, &err);
            rc |= sl_params_load(&pp[2], m->ck, b, c->n_layer, false, true, false, &err);
            if (!CHECK(rc == 0, "load split %d,%d: %s", a, b, err.msg)) return;
            const float *in = NULL;
            float *outs[3] = {a_out, b_out, logits};
            for (int k = 0; k < 3; k++) {
                sl_runner *s = sl_runner_new(&pp[k], T, NULL, &err);
                sl_kv *kv = sl_kv_new(&pp[k], T, SL_F32, &err);
                rc |= sl_runner_forward(s, kv, T, k == 0 ? fp->ids : NULL, in, outs[k],
                                        k == 2 ? SL_OUT_LOGITS_ALL : SL_OUT_HIDDEN, &err);
                in = outs[k];
                sl_kv_destroy(&kv);
                sl_runner_destroy(&s);
                sl_params_free(&pp[k]);
            }
            double d = check_max_diff(logits, whole, (size_t)T * V);
            if (rc != 0 || d > worst) {
                worst = rc ? INFINITY : d;
                worst_a = a;
                worst_b = b;
            }
        }
    }
    CHECK(worst <= 1e-6, "%s: split %d,%d differs from the whole model by %.3g", m->name, worst_a, worst_b, worst);
    free(whole);
    free(a_out);
    free(b_out);
    free(logits);
}

static void test_model(const char *name)
{
    model m = {.name = name};
    char path[1024];
    sl_err err;
    snprintf(path, sizeof path, "%s/%s", check_fixtures(), name);
    m.ck = sl_hf_model_open(path, &err);
    if (!CHECK(m.ck != NULL, "%s", err.msg)) return;
    fixture_path(path, sizeof path, name, "refs.safetensors");
    m.refs = sl_st_open(path, &err);
    if (CHECK(m.refs != NULL, "%s", err.msg)) {
        m.n_prompts = fixture_prompts(name, m.prompts, 8);
        test_hidden_states(&m);
        test_logits(&m);
        test_greedy(&m);
        test_split_chain(&m);
    }
    sl_st_close(&m.refs);
    sl_hf_model_destroy(&m.ck);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_selected("tiny-a")) test_model("tiny-a");
    if (check_selected("tiny-b")) test_model("tiny-b");
    return check_done();
}
