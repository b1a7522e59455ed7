/* test_json.c — the JSON helper: numbers within bounds (whole, finite, optional, missing), strings
 * that fit, files read as objects and written back; the GPT-2 config read from and written as
 * config.json on top of it; the role names. */
#include "check.h"
#include "config.h"
#include "fileio.h"
#include "json.h"
#include "role.h"

#include <float.h>
#include <limits.h>
#include <string.h>

static char tmp[256];

/* sl_json_get_number on the object text; the message lands in err. */
static int number_of(const char *text, const char *key, sl_json_num spec, double *out, sl_err *err)
{
    cJSON *root = cJSON_Parse(text);
    CHECK(root != NULL, "test JSON parses: %s", text);
    int rc = sl_json_get_number(root, key, spec, out, "t.json", err);
    cJSON_Delete(root);
    return rc;
}

/* Refused with a message holding want, and *out left as it was. */
static void refused(const char *text, sl_json_num spec, const char *want)
{
    sl_err err = {{0}};
    double v = 42;
    CHECK(number_of(text, "a", spec, &v, &err) != 0 && v == 42 && strstr(err.msg, want),
          "%s: want '%s', got '%s' (value %g)", text, want, err.msg, v);
}

static void test_integers(void)
{
    const sl_json_num byte = {.min = 0, .max = 255, .integer = true};
    sl_err err;
    double v = -1;
    CHECK(number_of("{\"a\": 7}", "a", byte, &v, &err) == 0 && v == 7, "7 in 0..255: %g", v);
    CHECK(number_of("{\"a\": 0}", "a", byte, &v, &err) == 0 && v == 0, "the minimum is inside: %g", v);
    CHECK(number_of("{\"a\": 255}", "a", byte, &v, &err) == 0 && v == 255, "the maximum is inside: %g", v);
    CHECK(number_of("{\"a\": 2.55e2}", "a", byte, &v, &err) == 0 && v == 255, "an exponent spelling: %g", v);
    refused("{\"a\": 256}", byte, "t.json: \"a\": 256 is out of range 0..255");
    refused("{\"a\": -1}", byte, "t.json: \"a\": -1 is out of range 0..255");
    refused("{\"a\": 2.5}", byte, "t.json: \"a\": 2.5 is not a whole number");
    refused("{\"a\": \"7\"}", byte, "t.json: \"a\" is not a number");
    refused("{\"a\": true}", byte, "t.json: \"a\" is not a number");
    refused("{\"a\": [7]}", byte, "t.json: \"a\" is not a number");
    refused("{\"b\": 7}", byte, "t.json: \"a\" is missing");
    refused("{\"a\": null}", byte, "t.json: \"a\" is missing");
    refused("{\"A\": 7}", byte, "t.json: \"a\" is missing"); /* keys are case-sensitive */

    const sl_json_num size = {.min = 0, .max = SL_JSON_MAX_EXACT, .integer = true};
    CHECK(number_of("{\"a\": 9007199254740992}", "a", size, &v, &err) == 0 && v == SL_JSON_MAX_EXACT,
          "2^53 is the largest exact size: %.17g", v);
    refused("{\"a\": 9007199254740994}", size, "out of range 0..9007199254740992");
    refused("{\"a\": 1e999}", size, "inf is out of range");
}

static void test_reals_and_optional(void)
{
    const sl_json_num finite = {.min = -DBL_MAX, .max = DBL_MAX};
    sl_err err;
    double v = 0;
    CHECK(number_of("{\"a\": -2.5e-300}", "a", finite, &v, &err) == 0 && v == -2.5e-300, "any finite real: %g", v);
    refused("{\"a\": 1e999}", finite, "inf is out of range");
    refused("{\"a\": -1e999}", finite, "-inf is out of range");
    const sl_json_num half_open = {.min = 0.5, .max = 1};
    refused("{\"a\": 0.25}", half_open, "0.25 is out of range 0.5..1");

    const sl_json_num optional = {.min = 0, .max = 10, .integer = true, .optional = true};
    v = 3;
    CHECK(number_of("{\"b\": 1}", "a", optional, &v, &err) == 0 && v == 3, "optional and missing: kept %g", v);
    CHECK(number_of("{\"a\": null}", "a", optional, &v, &err) == 0 && v == 3, "optional and null: kept %g", v);
    CHECK(number_of("{\"a\": 9}", "a", optional, &v, &err) == 0 && v == 9, "optional and present: %g", v);
    refused("{\"a\": 11}", optional, "\"a\": 11 is out of range 0..10");
    refused("{\"a\": \"x\"}", optional, "\"a\" is not a number");
}

/* sl_json_number on an array element: the caller names it. */
static void test_named_items(void)
{
    const sl_json_num dim = {.min = 0, .max = 100, .integer = true};
    cJSON *shape = cJSON_Parse("[4, -3]");
    sl_err err = {{0}};
    double v = 0;
    CHECK(sl_json_number(cJSON_GetArrayItem(shape, 0), "shape[0]", dim, &v, "f: tensor 'w'", &err) == 0 && v == 4,
          "shape[0] = %g", v);
    CHECK(sl_json_number(cJSON_GetArrayItem(shape, 1), "shape[1]", dim, &v, "f: tensor 'w'", &err) != 0 &&
              strcmp(err.msg, "f: tensor 'w': shape[1]: -3 is out of range 0..100") == 0,
          "the element's name: %s", err.msg);
    CHECK(sl_json_number(cJSON_GetArrayItem(shape, 2), "shape[2]", dim, &v, "f", &err) != 0 &&
              strcmp(err.msg, "f: shape[2] is missing") == 0,
          "past the end is missing: %s", err.msg);
    cJSON_Delete(shape);
}

static void test_strings(void)
{
    cJSON *root = cJSON_Parse("{\"s\": \"abc\", \"n\": 3, \"long\": \"abcd\"}");
    char out[4] = "";
    sl_err err = {{0}};
    CHECK(sl_json_get_string(root, "s", out, sizeof out, "t.json", &err) == 0 && strcmp(out, "abc") == 0,
          "a string that just fits: '%s'", out);
    CHECK(sl_json_get_string(root, "long", out, sizeof out, "t.json", &err) != 0 &&
              strstr(err.msg, "t.json: \"long\" is longer than 3 bytes") && strcmp(out, "abc") == 0,
          "one byte too long: %s", err.msg);
    CHECK(sl_json_get_string(root, "n", out, sizeof out, "t.json", &err) != 0 &&
              strstr(err.msg, "t.json: \"n\" is missing or not a string"),
          "a number is not a string: %s", err.msg);
    CHECK(sl_json_get_string(root, "x", out, sizeof out, "t.json", &err) != 0 && strstr(err.msg, "\"x\" is missing"),
          "missing: %s", err.msg);
    CHECK(!sl_json_add(root, "none", NULL) && !cJSON_GetObjectItem(root, "none"), "adding NULL fails, adds nothing");
    CHECK(sl_json_add(root, "t", cJSON_CreateTrue()) && cJSON_IsTrue(cJSON_GetObjectItem(root, "t")), "adding works");
    cJSON_Delete(root);
}

static void test_files(void)
{
    char path[512];
    sl_err err = {{0}};
    snprintf(path, sizeof path, "%s/none.json", tmp);
    CHECK(!sl_json_read_file(path, 1024, &err) && strstr(err.msg, path), "a missing file is named: %s", err.msg);
    snprintf(path, sizeof path, "%s/bad.json", tmp);
    sl_write_text_file(path, "{\"a\": ", &err);
    CHECK(!sl_json_read_file(path, 1024, &err) && strstr(err.msg, path) && strstr(err.msg, "malformed JSON"),
          "truncated JSON: %s", err.msg);
    sl_write_text_file(path, "[1, 2]", &err);
    CHECK(!sl_json_read_file(path, 1024, &err) && strstr(err.msg, "not an object"), "an array: %s", err.msg);
    sl_write_text_file(path, "{\"a\": \"0123456789\"}", &err);
    CHECK(!sl_json_read_file(path, 10, &err) && strstr(err.msg, "too large"), "larger than allowed: %s", err.msg);

    cJSON *root = cJSON_Parse("{\"a\": [1, 2.5, \"x\"], \"b\": {\"c\": null, \"d\": false}}");
    snprintf(path, sizeof path, "%s/round.json", tmp);
    CHECK(sl_json_write_file(path, root, &err) == 0, "write: %s", err.msg);
    cJSON *back = sl_json_read_file(path, 1024, &err);
    CHECK(back && cJSON_Compare(root, back, true), "read back equals what was written");
    char *text = sl_read_text_file(path, 1024, &err), *printed = cJSON_Print(root);
    CHECK(text && printed && strncmp(text, printed, strlen(printed)) == 0 && strcmp(text + strlen(printed), "\n") == 0,
          "the file is cJSON's indented print and a newline");
    free(text);
    free(printed);
    cJSON_Delete(back);
    cJSON_Delete(root);
}

/* Every value differs from what a missing key defaults to, so that reading the defaults shows. */
static const sl_config small = {.n_layer = 3,
                                .n_embd = 16,
                                .n_head = 4,
                                .n_inner = 48,
                                .vocab_size = 100,
                                .n_positions = 32,
                                .layer_norm_epsilon = 1e-6,
                                .tie_word_embeddings = false,
                                .eos_token_id = 7};

static bool same_config(const sl_config *a, const sl_config *b)
{
    return a->n_layer == b->n_layer && a->n_embd == b->n_embd && a->n_head == b->n_head && a->n_inner == b->n_inner &&
           a->vocab_size == b->vocab_size && a->n_positions == b->n_positions &&
           a->layer_norm_epsilon == b->layer_norm_epsilon && a->tie_word_embeddings == b->tie_word_embeddings &&
           a->eos_token_id == b->eos_token_id;
}

/* The config object of small with key set to the JSON value (NULL: removed). */
static cJSON *config_with(const char *key, const char *value)
{
    cJSON *root = sl_config_to_json(&small);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (value) cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    return root;
}

static void config_case(const char *key, const char *value, const char *want, const sl_config *expect)
{
    cJSON *root = config_with(key, value);
    sl_config c;
    sl_err err = {{0}};
    int rc = sl_config_from_json(root, "cfg", &c, &err);
    if (want)
        CHECK(rc != 0 && strstr(err.msg, want), "\"%s\": %s: want '%s', got '%s'", key, value, want, err.msg);
    else
        CHECK(rc == 0 && same_config(&c, expect), "\"%s\": %s is read: %s", key, value, err.msg);
    cJSON_Delete(root);
}

static void test_config(void)
{
    sl_err err = {{0}};
    sl_config c;
    cJSON *root = sl_config_to_json(&small);
    CHECK(root && sl_config_from_json(root, "cfg", &c, &err) == 0 && same_config(&c, &small),
          "to_json then from_json gives the config back: %s", err.msg);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(root, "tie_word_embeddings")) &&
              cJSON_GetNumberValue(cJSON_GetObjectItem(root, "n_ctx")) == 32,
          "HF's keys: tie_word_embeddings, n_ctx");
    cJSON_Delete(root);

    sl_config inner = small, eos = small, eps = small, tied = small;
    inner.n_inner = 4 * small.n_embd;
    eos.eos_token_id = small.vocab_size - 1;
    eps.layer_norm_epsilon = 1e-5;
    tied.tie_word_embeddings = true;
    config_case("n_inner", "null", NULL, &inner);
    config_case("n_inner", NULL, NULL, &inner);
    config_case("eos_token_id", NULL, NULL, &eos);
    config_case("layer_norm_epsilon", NULL, NULL, &eps);
    config_case("tie_word_embeddings", NULL, NULL, &tied);
    config_case("n_head", NULL, "cfg: \"n_head\" is missing", NULL);
    config_case("n_layer", "0", "cfg: \"n_layer\": 0 is out of range 1..", NULL);
    config_case("n_embd", "16.5", "\"n_embd\": 16.5 is not a whole number", NULL);
    config_case("vocab_size", "\"100\"", "\"vocab_size\" is not a number", NULL);
    config_case("n_head", "5", "n_embd 16 is not a multiple of n_head 5", NULL);
    config_case("layer_norm_epsilon", "-1", "layer_norm_epsilon must be > 0", NULL);
    config_case("layer_norm_epsilon", "\"tiny\"", "\"layer_norm_epsilon\" is not a number", NULL);
    config_case("model_type", "\"bert\"", "model_type \"bert\" is not supported", NULL);
    CHECK(sl_config_from_json(NULL, "cfg", &c, &err) != 0 && strstr(err.msg, "cfg: not a JSON object"), "no object: %s",
          err.msg);

    char path[512];
    snprintf(path, sizeof path, "%s/config.json", tmp);
    root = sl_config_to_json(&small);
    CHECK(sl_json_write_file(path, root, &err) == 0 && sl_config_load(path, &c, &err) == 0 && same_config(&c, &small),
          "a written config.json loads back: %s", err.msg);
    cJSON_Delete(root);
}

static void test_roles(void)
{
    const sl_role roles[] = {SL_ROLE_BOTTOM, SL_ROLE_TRUNK, SL_ROLE_TOP};
    const char *const names[] = {"bottom", "trunk", "top"};
    for (int i = 0; i < 3; i++) {
        sl_role r = SL_ROLE_TOP - roles[i];
        CHECK(strcmp(sl_role_name(roles[i]), names[i]) == 0 && sl_role_parse(names[i], &r) == 0 && r == roles[i],
              "%s round trip", names[i]);
    }
    sl_role r = SL_ROLE_TRUNK;
    CHECK(sl_role_parse("middle", &r) != 0 && sl_role_parse("Top", &r) != 0 && r == SL_ROLE_TRUNK,
          "unknown names are refused");
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "json") != 0) return 1;
    if (check_selected("integers")) test_integers();
    if (check_selected("reals_and_optional")) test_reals_and_optional();
    if (check_selected("named_items")) test_named_items();
    if (check_selected("strings")) test_strings();
    if (check_selected("files")) test_files();
    if (check_selected("config")) test_config();
    if (check_selected("roles")) test_roles();
    check_rmtree(tmp);
    return check_done();
}
