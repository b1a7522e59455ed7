/* config.h — a GPT-2 model's shape and constants (what HF's config.json says), read from and
 * written as that JSON. */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include "err.h"

#include <stdbool.h>

struct cJSON;

typedef struct sl_config {
    int n_layer, n_embd, n_head, n_inner, vocab_size, n_positions;
    double layer_norm_epsilon;
    bool tie_word_embeddings;
    int eos_token_id;
} sl_config;

/* Reads an HF GPT-2 config object; origin names it in errors. Unset n_inner means 4*n_embd. */
int sl_config_from_json(const struct cJSON *root, const char *origin, sl_config *cfg, sl_err *err);

/* Reads and parses a config.json file. */
int sl_config_load(const char *path, sl_config *cfg, sl_err *err);

/* An HF-style config.json object for cfg. Caller frees it with cJSON_Delete; NULL when out of
 * memory. */
struct cJSON *sl_config_to_json(const sl_config *cfg);

#endif
