/* config.c — HF GPT-2 config.json to sl_config and back. */
#include "config.h"

#include "json.h"

#include <float.h>
#include <limits.h>
#include <string.h>

/* A positive integer field; missing (or null) uses fallback when fallback > 0. */
static int config_int(const cJSON *root, const char *key, int fallback, int *out, const char *origin, sl_err *err)
{
    const sl_json_num positive = {.min = 1, .max = INT_MAX / 8, .integer = true, .optional = fallback > 0};
    double v = fallback;
    if (sl_json_get_number(root, key, positive, &v, origin, err) != 0) return -1;
    *out = (int)v;
    return 0;
}

static int config_check_supported(const cJSON *root, const char *origin, sl_err *err)
{
    const cJSON *model_type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(model_type) && strcmp(model_type->valuestring, "gpt2") != 0)
        return sl_fail(err, "%s: model_type \"%s\" is not supported (only gpt2)", origin, model_type->valuestring);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_new") != 0 &&
        strcmp(act->valuestring, "gelu_pytorch_tanh") != 0)
        return sl_fail(err, "%s: activation_function \"%s\" is not supported (gelu_new)", origin, act->valuestring);
    static const char *const unsupported_flags[] = {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                                                    "add_cross_attention"};
    for (size_t i = 0; i < sizeof unsupported_flags / sizeof *unsupported_flags; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, unsupported_flags[i])))
            return sl_fail(err, "%s: \"%s\": true is not supported", origin, unsupported_flags[i]);
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(root, "scale_attn_weights");
    if (cJSON_IsFalse(scale)) return sl_fail(err, "%s: \"scale_attn_weights\": false is not supported", origin);
    return 0;
}

/* layer_norm_epsilon (1e-5 when unset) and tie_word_embeddings (HF's default is tied). */
static int config_norm_and_tie(const cJSON *root, sl_config *c, const char *origin, sl_err *err)
{
    const sl_json_num finite = {.min = -DBL_MAX, .max = DBL_MAX, .optional = true};
    c->layer_norm_epsilon = 1e-5;
    if (sl_json_get_number(root, "layer_norm_epsilon", finite, &c->layer_norm_epsilon, origin, err) != 0) return -1;
    if (!(c->layer_norm_epsilon > 0)) return sl_fail(err, "%s: layer_norm_epsilon must be > 0", origin);
    c->tie_word_embeddings = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings"));
    return 0;
}

int sl_config_from_json(const cJSON *root, const char *origin, sl_config *cfg, sl_err *err)
{
    if (!cJSON_IsObject(root)) return sl_fail(err, "%s: not a JSON object", origin);
    sl_config c = {0};
    int rc = config_check_supported(root, origin, err);
    if (rc == 0) rc = config_int(root, "n_layer", 0, &c.n_layer, origin, err);
    if (rc == 0) rc = config_int(root, "n_embd", 0, &c.n_embd, origin, err);
    if (rc == 0) rc = config_int(root, "n_head", 0, &c.n_head, origin, err);
    if (rc == 0) rc = config_int(root, "vocab_size", 0, &c.vocab_size, origin, err);
    if (rc == 0) rc = config_int(root, "n_positions", 0, &c.n_positions, origin, err);
    if (rc == 0) rc = config_int(root, "n_inner", 4 * c.n_embd, &c.n_inner, origin, err);
    if (rc == 0) rc = config_int(root, "eos_token_id", c.vocab_size - 1, &c.eos_token_id, origin, err);
    if (rc == 0 && c.n_embd % c.n_head != 0)
        rc = sl_fail(err, "%s: n_embd %d is not a multiple of n_head %d", origin, c.n_embd, c.n_head);
    if (rc == 0) rc = config_norm_and_tie(root, &c, origin, err);
    if (rc == 0) *cfg = c;
    return rc;
}

int sl_config_load(const char *path, sl_config *cfg, sl_err *err)
{
    cJSON *root = sl_json_read_file(path, 1u << 20, err);
    int rc = root ? sl_config_from_json(root, path, cfg, err) : -1;
    cJSON_Delete(root);
    return rc;
}

cJSON *sl_config_to_json(const sl_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddStringToObject(root, "model_type", "gpt2");
    cJSON_AddStringToObject(root, "activation_function", "gelu_new");
    cJSON_AddNumberToObject(root, "n_layer", cfg->n_layer);
    cJSON_AddNumberToObject(root, "n_embd", cfg->n_embd);
    cJSON_AddNumberToObject(root, "n_head", cfg->n_head);
    cJSON_AddNumberToObject(root, "n_inner", cfg->n_inner);
    cJSON_AddNumberToObject(root, "vocab_size", cfg->vocab_size);
    cJSON_AddNumberToObject(root, "n_positions", cfg->n_positions);
    cJSON_AddNumberToObject(root, "n_ctx", cfg->n_positions);
    cJSON_AddNumberToObject(root, "layer_norm_epsilon", cfg->layer_norm_epsilon);
    cJSON_AddBoolToObject(root, "tie_word_embeddings", cfg->tie_word_embeddings);
    cJSON_AddNumberToObject(root, "bos_token_id", cfg->eos_token_id);
    cJSON_AddNumberToObject(root, "eos_token_id", cfg->eos_token_id);
    cJSON_AddNumberToObject(root, "initializer_range", 0.02);
    cJSON_AddNumberToObject(root, "attn_pdrop", 0.0);
    cJSON_AddNumberToObject(root, "embd_pdrop", 0.0);
    cJSON_AddNumberToObject(root, "resid_pdrop", 0.0);
    cJSON_AddBoolToObject(root, "scale_attn_weights", 1);
    cJSON_AddBoolToObject(root, "scale_attn_by_inverse_layer_idx", 0);
    cJSON_AddBoolToObject(root, "reorder_and_upcast_attn", 0);
    cJSON_AddBoolToObject(root, "add_cross_attention", 0);
    cJSON_AddBoolToObject(root, "use_cache", 1);
    return root;
}
