/* json.h — the project's JSON files through cJSON: a file read as an object, an object written to
 * a file, and checked members (numbers within bounds, strings that fit), every error naming the
 * file and the key. JSON travels between functions as cJSON objects, never as text. */
#ifndef SL_JSON_H
#define SL_JSON_H

#include "err.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* 2^53: the largest integer a JSON number (a double) holds exactly; the bound for sizes. */
#define SL_JSON_MAX_EXACT 9007199254740992.0

/* What a number must be. Infinity (cJSON reads 1e999 as one) and NaN are always refused. */
typedef struct sl_json_num {
    double min, max; /* inclusive */
    bool integer;    /* a whole number */
    bool optional;   /* missing or null is fine: *out keeps the value it had */
} sl_json_num;

/* Reads path (at most max_bytes) and parses it into an object. Caller frees the result with
 * cJSON_Delete; NULL and err when the file cannot be read, is malformed or is not an object. */
cJSON *sl_json_read_file(const char *path, size_t max_bytes, sl_err *err);

/* Prints root, indented, to path (atomically, see sl_write_text_file). */
int sl_json_write_file(const char *path, const cJSON *root, sl_err *err);

/* The number in item (NULL or null: missing) as spec says. Errors read "<origin>: <name> is
 * missing", "... is not a number", "<origin>: <name>: V is out of range MIN..MAX" or "... is not a
 * whole number". */
int sl_json_number(const cJSON *item, const char *name, sl_json_num spec, double *out, const char *origin, sl_err *err);

/* sl_json_number of obj's member key, named "key" in errors. */
int sl_json_get_number(const cJSON *obj, const char *key, sl_json_num spec, double *out, const char *origin,
                       sl_err *err);

/* Copies obj's member key, which must be a string shorter than size bytes, into out. */
int sl_json_get_string(const cJSON *obj, const char *key, char *out, size_t size, const char *origin, sl_err *err);

/* Adds item to obj under key, or frees item: obj owns it either way. False when item is NULL or
 * memory runs out, so that a chain of adds can be checked once. */
bool sl_json_add(cJSON *obj, const char *key, cJSON *item);

#endif
