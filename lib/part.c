/* part.c — one part: its metadata, opening and checking its file, loading and writing it. */
#include "part.h"

#include "hf_model.h"
#include "fileio.h"
#include "json.h"
#include "safetensors.h"
#include "sha256.h"
#include "split.h"
#include "version.h"

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Metadata files are small; a larger one is refused rather than parsed. */
#define MAX_METADATA_BYTES (16u << 20)

static void dir_of(char *out, size_t size, const char *path)
{
    snprintf(out, size, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(out, size, ".");
}

void sl_part_sibling(const char *part_file, const char *suffix, char *out, size_t size)
{
    size_t len = strlen(part_file), ext = strlen(".safetensors");
    int stem = (int)(len >= ext && strcmp(part_file + len - ext, ".safetensors") == 0 ? len - ext : len);
    snprintf(out, size, "%.*s%s", stem, part_file, suffix);
}

/* ---- metadata ---- */

/* Adds a copy of every member of extra (NULL: none) to root. */
static bool add_members(cJSON *root, const cJSON *extra)
{
    const cJSON *item;
    bool ok = true;
    cJSON_ArrayForEach(item, extra) ok = ok && sl_json_add(root, item->string, cJSON_Duplicate(item, true));
    return ok;
}

/* The metadata object of info; NULL when out of memory. */
static cJSON *metadata_json(const sl_part_info *info, const cJSON *source, const cJSON *extra)
{
    cJSON *root = cJSON_CreateObject();
    const int layers[2] = {info->first, info->last};
    bool ok = root && cJSON_AddStringToObject(root, "format", "zmq-splitlearn-part") &&
              cJSON_AddNumberToObject(root, "version", 1) && cJSON_AddStringToObject(root, "part", info->name) &&
              cJSON_AddStringToObject(root, "role", sl_role_name(info->role)) &&
              sl_json_add(root, "layers", cJSON_CreateIntArray(layers, 2)) &&
              sl_json_add(root, "config", sl_config_to_json(&info->cfg)) &&
              cJSON_AddNumberToObject(root, "parameters", (double)info->parameters) &&
              cJSON_AddNumberToObject(root, "bytes", (double)info->bytes) &&
              cJSON_AddStringToObject(root, "dtype", info->dtype) &&
              cJSON_AddStringToObject(root, "file", sl_path_base(info->file)) &&
              cJSON_AddStringToObject(root, "sha256", info->sha256) &&
              (!source || sl_json_add(root, "source", cJSON_Duplicate(source, true))) &&
              cJSON_AddStringToObject(root, "tool", SL_TOOL_NAME) && add_members(root, extra);
    if (!ok) cJSON_Delete(root);
    return ok ? root : NULL;
}

/* "part", "role", "dtype", "file" (as written: relative to the metadata), "sha256". */
static int read_names(const cJSON *root, const char *path, sl_part_info *info, char *file, size_t file_size,
                      sl_err *err)
{
    char role[16];
    if (sl_json_get_string(root, "part", info->name, sizeof info->name, path, err) != 0 ||
        sl_json_get_string(root, "role", role, sizeof role, path, err) != 0)
        return -1;
    if (sl_role_parse(role, &info->role) != 0)
        return sl_fail(err, "%s: \"role\" is \"%s\", not bottom, trunk or top", path, role);
    if (sl_json_get_string(root, "dtype", info->dtype, sizeof info->dtype, path, err) != 0 ||
        sl_json_get_string(root, "file", file, file_size, path, err) != 0 ||
        sl_json_get_string(root, "sha256", info->sha256, sizeof info->sha256, path, err) != 0)
        return -1;
    return 0;
}

/* "layers": [first, last], inside the model's blocks. */
static int read_layers(const cJSON *root, const char *path, sl_part_info *info, sl_err *err)
{
    const sl_json_num block = {.min = 0, .max = info->cfg.n_layer, .integer = true};
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    double first, last;
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != 2)
        return sl_fail(err, "%s: \"layers\" is not [first, last]", path);
    if (sl_json_number(cJSON_GetArrayItem(layers, 0), "\"layers\"[0]", block, &first, path, err) != 0 ||
        sl_json_number(cJSON_GetArrayItem(layers, 1), "\"layers\"[1]", block, &last, path, err) != 0)
        return -1;
    if (first > last) return sl_fail(err, "%s: \"layers\" [%g, %g] ends before it begins", path, first, last);
    info->first = (int)first;
    info->last = (int)last;
    return 0;
}

/* "parameters" and "bytes", and once trained "step" and "loss". */
static int read_numbers(const cJSON *root, const char *path, sl_part_info *info, sl_err *err)
{
    const sl_json_num count = {.min = 0, .max = SL_JSON_MAX_EXACT, .integer = true};
    const sl_json_num step_spec = {.min = 0, .max = SL_JSON_MAX_EXACT, .integer = true, .optional = true};
    const sl_json_num loss_spec = {.min = -DBL_MAX, .max = DBL_MAX, .optional = true};
    double parameters, bytes, step = -1, loss = 0;
    if (sl_json_get_number(root, "parameters", count, &parameters, path, err) != 0 ||
        sl_json_get_number(root, "bytes", count, &bytes, path, err) != 0 ||
        sl_json_get_number(root, "step", step_spec, &step, path, err) != 0 ||
        sl_json_get_number(root, "loss", loss_spec, &loss, path, err) != 0)
        return -1;
    info->parameters = (size_t)parameters;
    info->bytes = (size_t)bytes;
    info->step = (long)step;
    info->loss = loss;
    return 0;
}

/* The model's identity: one SHA-256 over the source files' SHA-256s, in order ("" when the
 * metadata names no source, as a training checkpoint's does not). */
static void read_model(const cJSON *root, sl_part_info *info)
{
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "source"), "files");
    const cJSON *file;
    sl_sha256 *h = cJSON_IsArray(files) && cJSON_GetArraySize(files) > 0 ? sl_sha256_new() : NULL;
    if (!h) return;
    cJSON_ArrayForEach(file, files)
    {
        const char *sha = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(file, "sha256"));
        if (sha) sl_sha256_update(h, sha, strlen(sha));
    }
    uint8_t digest[32];
    sl_sha256_final(h, digest);
    sl_sha256_destroy(&h);
    sl_sha256_hex(digest, info->model);
}

int sl_part_read_metadata(const char *path, sl_part_info *info, sl_err *err)
{
    memset(info, 0, sizeof *info);
    info->step = -1;
    cJSON *root = sl_json_read_file(path, MAX_METADATA_BYTES, err);
    if (!root) return -1;
    char file[PATH_MAX], dir[PATH_MAX], origin[PATH_MAX + 16];
    snprintf(origin, sizeof origin, "%s: \"config\"", path);
    int rc = read_names(root, path, info, file, sizeof file, err);
    if (rc == 0) rc = sl_config_from_json(cJSON_GetObjectItemCaseSensitive(root, "config"), origin, &info->cfg, err);
    if (rc == 0) rc = read_layers(root, path, info, err);
    if (rc == 0) rc = read_numbers(root, path, info, err);
    if (rc == 0) read_model(root, info);
    cJSON_Delete(root);
    dir_of(dir, sizeof dir, path);
    if (rc == 0 && sl_path_join(info->file, sizeof info->file, dir, file) != 0)
        rc = sl_fail(err, "%s: path of \"file\" too long", path);
    return rc;
}

/* ---- loading ---- */

struct sl_part {
    sl_part_info info;
    sl_hf_model *ck;
};

static int verify_file(const sl_part_info *info, bool hash, sl_err *err)
{
    struct stat st;
    if (stat(info->file, &st) != 0) return sl_fail(err, "%s: missing part file: %s", info->file, strerror(errno));
    if ((size_t)st.st_size != info->bytes)
        return sl_fail(err, "%s: %zu bytes but its metadata says %zu (truncated or replaced?)", info->file,
                       (size_t)st.st_size, info->bytes);
    if (!hash) return 0;
    uint8_t digest[32];
    char hex[65];
    if (sl_sha256_file(info->file, digest, err) != 0) return -1;
    sl_sha256_hex(digest, hex);
    if (strcmp(hex, info->sha256) != 0)
        return sl_fail(err, "%s: SHA-256 %s does not match the metadata's %s: the file was changed or corrupted",
                       info->file, hex, info->sha256);
    return 0;
}

sl_part *sl_part_open_info(const sl_part_info *info, bool verify, sl_err *err)
{
    sl_part *self = calloc(1, sizeof *self);
    if (!self) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    self->info = *info;
    if (verify_file(&self->info, verify, err) == 0)
        self->ck = sl_hf_model_open_file(self->info.file, &self->info.cfg, err);
    if (!self->ck) sl_part_destroy(&self);
    return self;
}

sl_part *sl_part_open(const char *dir, int first, int last, bool verify, sl_err *err)
{
    sl_part_info *parts = calloc(SL_MAX_SPLITS + 1, sizeof *parts);
    sl_part *self = NULL;
    int n = parts ? sl_split_read_index(dir, parts, SL_MAX_SPLITS + 1, err) : sl_fail(err, "out of memory");
    int found = -1;
    for (int i = 0; i < n; i++)
        if (parts[i].first == first && parts[i].last == last) found = i;
    if (n >= 0 && found < 0) {
        char have[512] = "";
        for (int i = 0; i < n; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), " %s [%d,%d)", parts[i].name, parts[i].first,
                     parts[i].last);
        sl_fail(err, "%s: no part has layers [%d,%d); the split has:%s", dir, first, last, have);
    }
    if (found >= 0) self = sl_part_open_info(&parts[found], verify, err);
    free(parts);
    return self;
}

void sl_part_destroy(sl_part **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    sl_hf_model_destroy(&(*self)->ck);
    free(*self);
    *self = NULL;
}

const sl_part_info *sl_part_info_of(const sl_part *self) { return &self->info; }

int sl_part_load_params(const sl_part *self, sl_params *p, bool copy, sl_err *err)
{
    const sl_part_info *in = &self->info;
    if (sl_params_load(p, self->ck, in->first, in->last, in->role == SL_ROLE_BOTTOM, in->role == SL_ROLE_TOP, copy,
                       err) != 0)
        return -1;
    size_t count = sl_params_count(p);
    if (count != in->parameters) {
        sl_params_free(p);
        return sl_fail(err, "%s: %zu parameters but its metadata says %zu", in->file, count, in->parameters);
    }
    return 0;
}

/* ---- writing ---- */

typedef struct add_ctx {
    sl_st_writer *w;
    sl_wformat format;
    sl_err *err;
} add_ctx;

/* A tensor as the part stores it: F32, or a matrix in the stage's format (params.h). */
static int add_param(sl_param_ref *ref, void *ctx)
{
    add_ctx *ac = ctx;
    if (!ref->wmat || ac->format == SL_WF_F32)
        return sl_st_writer_add_f32(ac->w, ref->name, SL_F32, *ref->slot, ref->ndim, ref->shape, ac->err);
    const sl_wmat *m = ref->wmat;
    int64_t shape[2], scale_shape[2];
    const sl_dtype dtype = sl_wmat_tensor_shapes(m->format, m->in, m->out, shape, scale_shape);
    if (sl_st_writer_add_raw(ac->w, ref->name, dtype, m->data, 2, shape, ac->err) != 0) return -1;
    if (m->format != SL_WF_Q8_0) return 0;
    char name[96];
    snprintf(name, sizeof name, "%s.scales", ref->name);
    return sl_st_writer_add_raw(ac->w, name, SL_F16, m->scales, 2, scale_shape, ac->err);
}

/* Writes p (in its own format) to info->file; info->sha256 and bytes receive what was written. */
static int write_part_file(sl_params *p, sl_part_info *info, sl_err *err)
{
    sl_st_writer *w = sl_st_writer_new();
    if (!w) return sl_fail(err, "out of memory");
    add_ctx ac = {w, p->format, err};
    uint8_t digest[32];
    int rc = sl_st_writer_set_metadata(w, "format", "pt", err);
    if (rc == 0 && p->format != SL_WF_F32)
        rc = sl_st_writer_set_metadata(w, "weights_format", sl_wformat_name(p->format), err);
    if (rc == 0) rc = sl_params_foreach(p, add_param, &ac);
    if (rc == 0) rc = sl_st_writer_write(w, info->file, digest, err);
    sl_st_writer_destroy(&w);
    if (rc != 0) return -1;
    sl_sha256_hex(digest, info->sha256);
    struct stat st;
    info->bytes = stat(info->file, &st) == 0 ? (size_t)st.st_size : 0;
    return 0;
}

int sl_part_write_tensors(sl_params *p, const char *name, sl_role role, sl_wformat format, const char *dir,
                          const char *file_stem, sl_part_info *info, sl_err *err)
{
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", name);
    info->role = role;
    info->first = p->first;
    info->last = p->last;
    info->cfg = p->cfg;
    info->parameters = sl_params_count(p);
    info->step = -1;
    snprintf(info->dtype, sizeof info->dtype, "%s", sl_wformat_name(format));
    snprintf(info->file, sizeof info->file, "%s/%s.safetensors", dir, file_stem);
    if (sl_mkdirs(dir, err) != 0) return -1;
    if (p->format == format) return write_part_file(p, info, err);
    sl_params converted;
    if (sl_params_convert(&converted, p, format, err) != 0) return -1;
    int rc = write_part_file(&converted, info, err);
    sl_params_free(&converted);
    return rc;
}

int sl_part_write_metadata(const sl_part_info *info, const cJSON *source, const cJSON *extra, sl_err *err)
{
    char path[PATH_MAX + 32];
    sl_part_sibling(info->file, "_metadata.json", path, sizeof path);
    cJSON *root = metadata_json(info, source, extra);
    int rc = root ? sl_json_write_file(path, root, err) : sl_fail(err, "%s: out of memory", path);
    cJSON_Delete(root);
    return rc;
}

int sl_part_write(sl_params *p, const char *name, sl_role role, sl_wformat format, const char *dir,
                  const char *file_stem, const cJSON *source, const cJSON *extra, sl_part_info *info, sl_err *err)
{
    if (sl_part_write_tensors(p, name, role, format, dir, file_stem, info, err) != 0) return -1;
    return sl_part_write_metadata(info, source, extra, err);
}
