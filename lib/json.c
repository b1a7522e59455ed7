/* json.c — reading, checking and writing JSON files with cJSON. */
#include "json.h"

#include "fileio.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cJSON *sl_json_read_file(const char *path, size_t max_bytes, sl_err *err)
{
    char *text = sl_read_text_file(path, max_bytes, err);
    if (!text) return NULL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        sl_fail(err, root ? "%s: malformed JSON: not an object" : "%s: malformed JSON", path);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int sl_json_write_file(const char *path, const cJSON *root, sl_err *err)
{
    char *text = cJSON_Print(root);
    if (!text) return sl_fail(err, "%s: out of memory", path);
    int rc = sl_write_text_file(path, text, err);
    free(text);
    return rc;
}

int sl_json_number(const cJSON *item, const char *name, sl_json_num spec, double *out, const char *origin, sl_err *err)
{
    if (!item || cJSON_IsNull(item)) return spec.optional ? 0 : sl_fail(err, "%s: %s is missing", origin, name);
    if (!cJSON_IsNumber(item)) return sl_fail(err, "%s: %s is not a number", origin, name);
    double v = item->valuedouble;
    if (!(v >= spec.min && v <= spec.max)) /* also refuses NaN; infinity is outside any finite bound */
        return sl_fail(err, "%s: %s: %.16g is out of range %.16g..%.16g", origin, name, v, spec.min, spec.max);
    if (spec.integer && v != floor(v)) return sl_fail(err, "%s: %s: %.16g is not a whole number", origin, name, v);
    *out = v;
    return 0;
}

int sl_json_get_number(const cJSON *obj, const char *key, sl_json_num spec, double *out, const char *origin,
                       sl_err *err)
{
    char name[128];
    snprintf(name, sizeof name, "\"%.100s\"", key);
    return sl_json_number(cJSON_GetObjectItemCaseSensitive(obj, key), name, spec, out, origin, err);
}

int sl_json_get_string(const cJSON *obj, const char *key, char *out, size_t size, const char *origin, sl_err *err)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, key));
    if (!s) return sl_fail(err, "%s: \"%s\" is missing or not a string", origin, key);
    size_t len = strlen(s);
    if (len >= size) return sl_fail(err, "%s: \"%s\" is longer than %zu bytes", origin, key, size - 1);
    memcpy(out, s, len + 1);
    return 0;
}

bool sl_json_add(cJSON *obj, const char *key, cJSON *item)
{
    if (cJSON_AddItemToObject(obj, key, item)) return true;
    cJSON_Delete(item);
    return false;
}
