/* fixtures.h — reading ../shared/fixtures for the tests: the models, their refs.safetensors
 * tensors and the prompts of refs.json; running a split's parts in chain order. */
#ifndef SL_TEST_FIXTURES_H
#define SL_TEST_FIXTURES_H

#include "check.h"
#include "hf_model.h"
#include "gpt2.h"
#include "params.h"
#include "part.h"
#include "fileio.h"
#include "safetensors.h"

#include <cJSON.h>
#include <stdint.h>
#include <string.h>

typedef struct fixture_prompt {
    int32_t ids[128], greedy[128];
    double margins[128];
    int n_ids, n_greedy;
} fixture_prompt;

static inline void fixture_path(char *out, size_t size, const char *model, const char *file)
{
    snprintf(out, size, "%s/%s/%s", check_fixtures(), model, file);
}

/* Reads refs.json's prompts; returns how many (at most max), 0 on failure (reported). */
static inline int fixture_prompts(const char *model, fixture_prompt *out, int max)
{
    char path[1024];
    fixture_path(path, sizeof path, model, "refs.json");
    sl_err err;
    char *text = sl_read_text_file(path, 1 << 24, &err);
    if (!CHECK(text != NULL, "%s", err.msg)) return 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts"), *p;
    int n = 0;
    cJSON_ArrayForEach(p, prompts)
    {
        if (n == max) break;
        fixture_prompt *fp = &out[n++];
        memset(fp, 0, sizeof *fp);
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(p, "ids")) fp->ids[fp->n_ids++] = v->valueint;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(p, "greedy")) fp->greedy[fp->n_greedy++] = v->valueint;
        int m = 0;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(p, "margins")) fp->margins[m++] = v->valuedouble;
    }
    cJSON_Delete(root);
    CHECK(n > 0, "%s: no prompts", path);
    return n;
}

/* The F32 data of a reference tensor, checking its element count; NULL (reported) if absent. */
static inline const float *fixture_f32(const sl_st_file *refs, const char *name, size_t numel)
{
    const sl_tensor *t = sl_st_find(refs, name);
    if (!CHECK(t && t->dtype == SL_F32 && t->numel == numel, "reference %s missing or not F32[%zu]", name, numel))
        return NULL;
    return t->data;
}

/* A 3-layer model small enough to build in memory, for tests that write parts without a fixture. */
static inline sl_config fixture_small_config(void)
{
    return (sl_config){.n_layer = 3,
                       .n_embd = 8,
                       .n_head = 2,
                       .n_inner = 32,
                       .vocab_size = 16,
                       .n_positions = 8,
                       .layer_norm_epsilon = 1e-5,
                       .eos_token_id = 15};
}

/* Every tensor reference of a params struct, in its fixed order. */
typedef struct fixture_refs {
    sl_param_ref refs[256];
    int n;
} fixture_refs;

static inline int fixture_collect(sl_param_ref *ref, void *ctx)
{
    fixture_refs *l = ctx;
    l->refs[l->n++] = *ref;
    return 0;
}

/* Runs the prompt through the parts of a split directory in chain order; returns the last
 * position's logits (caller frees), NULL (a failed check) on failure. */
static inline float *fixture_chain_logits(const char *dir, const sl_part_info *parts, int n, const fixture_prompt *fp)
{
    const sl_config *c = &parts[0].cfg;
    const int T = fp->n_ids;
    float *act = malloc((size_t)T * c->n_embd * sizeof(float)), *next = malloc((size_t)T * c->n_embd * sizeof(float));
    float *logits = malloc((size_t)c->vocab_size * sizeof(float));
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        sl_err err;
        sl_part *part = sl_part_open(dir, parts[i].first, parts[i].last, true, &err);
        sl_params p;
        if (!CHECK(part && sl_part_load_params(part, &p, false, &err) == 0, "load %s: %s", parts[i].name, err.msg)) {
            sl_part_destroy(&part);
            rc = -1;
            break;
        }
        sl_runner *s = sl_runner_new(&p, T, NULL, &err);
        sl_kv *kv = sl_kv_new(&p, T, SL_F32, &err);
        bool top = i == n - 1;
        rc = sl_runner_forward(s, kv, T, i == 0 ? fp->ids : NULL, act, top ? logits : next,
                               top ? SL_OUT_LOGITS_LAST : SL_OUT_HIDDEN, &err);
        CHECK(rc == 0, "forward %s: %s", parts[i].name, err.msg);
        float *t = act;
        act = next;
        next = t;
        sl_kv_destroy(&kv);
        sl_runner_destroy(&s);
        sl_params_free(&p);
        sl_part_destroy(&part);
    }
    free(act);
    free(next);
    if (rc != 0) free(logits);
    return rc == 0 ? logits : NULL;
}

#endif
