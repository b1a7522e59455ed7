/* part.c — writing split parts with their metadata, and finding and loading them again. */
#include "part.h"

#include "fileio.h"
#include "sha256.h"
#include "version.h"

#include <cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const role_names[] = {"bottom", "trunk", "top"};

const char *sl_role_name(sl_role role) { return role_names[role]; }

int sl_role_parse(const char *name, sl_role *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, role_names[i]) == 0) {
            *out = (sl_role)i;
            return 0;
        }
    return -1;
}

/* ---- small JSON helpers that name the file and field on error ---- */

static int json_get_int(const cJSON *obj, const char *key, long *out, const char *origin, sl_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long)v->valuedouble)
        return sl_fail(err, "%s: \"%s\" is missing or not an integer", origin, key);
    *out = (long)v->valuedouble;
    return 0;
}

static int json_get_str(const cJSON *obj, const char *key, char *out, size_t size, const char *origin, sl_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size)
        return sl_fail(err, "%s: \"%s\" is missing or not a string", origin, key);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int json_get_range(const cJSON *obj, const char *key, int *first, int *last, const char *origin, sl_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(v, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(v, 1)))
        return sl_fail(err, "%s: \"%s\" is not [first, last]", origin, key);
    *first = cJSON_GetArrayItem(v, 0)->valueint;
    *last = cJSON_GetArrayItem(v, 1)->valueint;
    return 0;
}

static cJSON *json_read_file(const char *path, sl_err *err)
{
    char *text = sl_read_text_file(path, 16u << 20, err);
    if (!text) return NULL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        sl_fail(err, "%s: malformed JSON", path);
        return NULL;
    }
    return root;
}

static int write_json_file(const char *path, const cJSON *root, sl_err *err)
{
    char *text = cJSON_Print(root);
    if (!text) return sl_fail(err, "%s: out of memory", path);
    int rc = sl_write_text_file(path, text, err);
    free(text);
    return rc;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Joins dir and rel unless rel is absolute; -1 when it does not fit. */
static int join_path(char *out, size_t size, const char *dir, const char *rel)
{
    int n = rel[0] == '/' ? snprintf(out, size, "%s", rel) : snprintf(out, size, "%s/%s", dir, rel);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

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

static cJSON *metadata_json(const sl_part_info *info, const char *source_json, const char *extra_json)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "zmq-splitlearn-part");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "part", info->name);
    cJSON_AddStringToObject(root, "role", sl_role_name(info->role));
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    cJSON_AddItemToArray(layers, cJSON_CreateNumber(info->first));
    cJSON_AddItemToArray(layers, cJSON_CreateNumber(info->last));
    char *cfg_text = sl_config_to_json(&info->cfg);
    cJSON_AddItemToObject(root, "config", cJSON_Parse(cfg_text ? cfg_text : "{}"));
    free(cfg_text);
    cJSON_AddNumberToObject(root, "parameters", (double)info->parameters);
    cJSON_AddNumberToObject(root, "bytes", (double)info->bytes);
    cJSON_AddStringToObject(root, "dtype", info->dtype);
    cJSON_AddStringToObject(root, "file", base_name(info->file));
    cJSON_AddStringToObject(root, "sha256", info->sha256);
    if (source_json) cJSON_AddItemToObject(root, "source", cJSON_Parse(source_json));
    cJSON_AddStringToObject(root, "tool", SL_TOOL_NAME);
    cJSON *extra = extra_json ? cJSON_Parse(extra_json) : NULL, *item;
    cJSON_ArrayForEach(item, extra) cJSON_AddItemReferenceToObject(root, item->string, item);
    char *text = cJSON_Print(root); /* detach the references before extra goes */
    cJSON_Delete(root);
    cJSON_Delete(extra);
    root = text ? cJSON_Parse(text) : NULL;
    free(text);
    return root;
}

int sl_part_read_metadata(const char *path, sl_part_info *info, sl_err *err)
{
    cJSON *root = json_read_file(path, err);
    if (!root) return -1;
    memset(info, 0, sizeof *info);
    char role[16], file[PATH_MAX], dir[PATH_MAX];
    long parameters = 0, bytes = 0, step = -1;
    int rc = json_get_str(root, "part", info->name, sizeof info->name, path, err);
    if (rc == 0) rc = json_get_str(root, "role", role, sizeof role, path, err);
    if (rc == 0 && sl_role_parse(role, &info->role) != 0)
        rc = sl_fail(err, "%s: \"role\" is \"%s\", not bottom, trunk or top", path, role);
    if (rc == 0) rc = json_get_range(root, "layers", &info->first, &info->last, path, err);
    if (rc == 0) rc = json_get_str(root, "dtype", info->dtype, sizeof info->dtype, path, err);
    if (rc == 0) rc = json_get_str(root, "file", file, sizeof file, path, err);
    if (rc == 0) rc = json_get_str(root, "sha256", info->sha256, sizeof info->sha256, path, err);
    if (rc == 0) rc = json_get_int(root, "parameters", &parameters, path, err);
    if (rc == 0) rc = json_get_int(root, "bytes", &bytes, path, err);
    if (rc == 0 && cJSON_GetObjectItemCaseSensitive(root, "step")) rc = json_get_int(root, "step", &step, path, err);
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
    info->loss = cJSON_IsNumber(loss) ? loss->valuedouble : 0;
    if (rc == 0) {
        char *cfg_text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "config"));
        char origin[PATH_MAX + 16];
        snprintf(origin, sizeof origin, "%s: \"config\"", path);
        rc = sl_config_parse(cfg_text ? cfg_text : "", origin, &info->cfg, err);
        free(cfg_text);
    }
    if (rc == 0 && (info->first < 0 || info->last > info->cfg.n_layer || info->first > info->last))
        rc = sl_fail(err, "%s: layers [%d, %d) are outside the model's %d", path, info->first, info->last,
                     info->cfg.n_layer);
    cJSON_Delete(root);
    dir_of(dir, sizeof dir, path);
    if (rc == 0 && join_path(info->file, sizeof info->file, dir, file) != 0)
        rc = sl_fail(err, "%s: path of \"file\" too long", path);
    info->parameters = (size_t)parameters;
    info->bytes = (size_t)bytes;
    info->step = step;
    return rc;
}

int sl_split_read_index(const char *dir, sl_part_info *parts, int max, sl_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/split.json", dir);
    cJSON *root = json_read_file(path, err);
    if (!root) return -1;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "parts"), *item;
    int n = cJSON_IsArray(list) ? 0 : sl_fail(err, "%s: \"parts\" is not an array", path);
    cJSON_ArrayForEach(item, list)
    {
        char rel[PATH_MAX], meta[PATH_MAX * 2];
        if (n == max) {
            n = sl_fail(err, "%s: more than %d parts", path, max);
            break;
        }
        if (json_get_str(item, "metadata", rel, sizeof rel, path, err) != 0) {
            n = -1;
            break;
        }
        if (join_path(meta, sizeof meta, dir, rel) != 0 || sl_part_read_metadata(meta, &parts[n], err) != 0) {
            n = -1;
            break;
        }
        n++;
    }
    cJSON_Delete(root);
    return n;
}

/* ---- loading ---- */

struct sl_part {
    sl_part_info info;
    sl_checkpoint *ck;
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

/* Maps the file info describes, after checking its size (and with verify its SHA-256). */
static sl_part *open_described(const sl_part_info *info, bool verify, sl_err *err)
{
    sl_part *self = calloc(1, sizeof *self);
    if (!self) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    self->info = *info;
    if (verify_file(&self->info, verify, err) == 0)
        self->ck = sl_checkpoint_open_file(self->info.file, &self->info.cfg, err);
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
    if (found >= 0) self = open_described(&parts[found], verify, err);
    free(parts);
    return self;
}

/* Where a part's checkpoint files are: the current ones, the previous save's, or the next one's
 * while it is written. */
typedef enum { SLOT_CURRENT, SLOT_PREV, SLOT_NEXT } slot;

/* A part's checkpoint files, in the order a reader needs them last: the metadata is written last
 * and removed first, so that metadata present means the files it names are there. */
static const char *const checkpoint_suffixes[3] = {".safetensors", "_optim.safetensors", "_metadata.json"};

/* DIR/<role>[/prev|/next]: where a slot's files are. */
static int slot_dir(const char *dir, sl_role role, slot where, char *out, size_t size, sl_err *err)
{
    static const char *const sub[] = {"", "/prev", "/next"};
    int n = snprintf(out, size, "%s/%s%s", dir, sl_role_name(role), sub[where]);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "%s: checkpoint path too long", dir);
}

/* The stem of a part's checkpoint files: checkpoint_<name>. */
static int checkpoint_stem(const char *name, char *out, size_t size, sl_err *err)
{
    int n = snprintf(out, size, "checkpoint_%s", name);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "part name %s: too long", name);
}

/* SLOT_DIR/checkpoint_<name><suffix>. */
static int checkpoint_path(const char *dir, sl_role role, const char *name, slot where, const char *suffix, char *out,
                           size_t size, sl_err *err)
{
    char sub[PATH_MAX], stem[300];
    if (slot_dir(dir, role, where, sub, sizeof sub, err) != 0 || checkpoint_stem(name, stem, sizeof stem, err) != 0)
        return -1;
    int n = snprintf(out, size, "%s/%s%s", sub, stem, suffix);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "%s: checkpoint path too long", dir);
}

int sl_part_checkpoint_file(const char *dir, sl_role role, const char *name, char *out, size_t size, sl_err *err)
{
    return checkpoint_path(dir, role, name, SLOT_CURRENT, ".safetensors", out, size, err);
}

/* The checkpoint of (role, name) in a slot, if complete: its metadata, a part file of the size
 * it says and, once trained, its optimizer state. */
static int read_checkpoint(const char *dir, sl_role role, const char *name, slot where, sl_part_info *info, sl_err *err)
{
    char meta[PATH_MAX], optim[PATH_MAX];
    struct stat st;
    if (checkpoint_path(dir, role, name, where, "_metadata.json", meta, sizeof meta, err) != 0 ||
        checkpoint_path(dir, role, name, where, "_optim.safetensors", optim, sizeof optim, err) != 0)
        return -1;
    if (access(meta, F_OK) != 0)
        return sl_fail(err, "%s: no such file: no %s part '%s' saved here", meta, sl_role_name(role), name);
    if (sl_part_read_metadata(meta, info, err) != 0) return -1;
    if (stat(info->file, &st) != 0 || (size_t)st.st_size != info->bytes)
        return sl_fail(err, "%s: missing or not the size its metadata says (an unfinished save?)", info->file);
    if (info->step > 0 && access(optim, F_OK) != 0) return sl_fail(err, "%s: missing (an unfinished save?)", optim);
    return 0;
}

sl_part *sl_part_open_checkpoint(const char *dir, sl_role role, const char *name, long step, bool verify, sl_err *err)
{
    sl_part_info now, before;
    sl_err why_now, why_before;
    int rc = read_checkpoint(dir, role, name, SLOT_CURRENT, &now, &why_now);
    if (rc == 0 && (step < 0 || now.step == step)) return open_described(&now, verify, err);
    /* A save after it did not finish, here or on another host: the one before. */
    int rc_before = read_checkpoint(dir, role, name, SLOT_PREV, &before, &why_before);
    if (rc_before == 0 && (step < 0 || before.step == step)) return open_described(&before, verify, err);
    if (rc == 0)
        sl_fail(err, "%s/%s: its part '%s' was saved at step %ld, not at step %ld (nor is the save before it)", dir,
                sl_role_name(role), name, now.step, step);
    else if (rc_before == 0)
        sl_fail(err, "%s/%s: the last save of part '%s' is unfinished (%s) and the one before is of step %ld, not %ld",
                dir, sl_role_name(role), name, why_now.msg, before.step, step);
    else
        *err = why_now;
    return NULL;
}

void sl_part_destroy(sl_part **self)
{
    if (!self || !*self) return;
    sl_checkpoint_destroy(&(*self)->ck);
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
    sl_dtype dtype;
    sl_err *err;
} add_ctx;

static int add_param(sl_param_ref *ref, void *ctx)
{
    add_ctx *ac = ctx;
    return sl_st_writer_add_f32(ac->w, ref->name, ac->dtype, *ref->slot, ref->ndim, ref->shape, ac->err);
}

/* Writes the tensors of p to dir/stem.safetensors and fills info (all but the metadata). */
static int write_part_tensors(sl_params *p, const char *name, sl_role role, sl_dtype dtype, const char *dir,
                              const char *stem, sl_part_info *info, sl_err *err)
{
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", name);
    info->role = role;
    info->first = p->first;
    info->last = p->last;
    info->cfg = p->cfg;
    info->parameters = sl_params_count(p);
    info->step = -1;
    snprintf(info->dtype, sizeof info->dtype, "%s", sl_dtype_lower(dtype));
    snprintf(info->file, sizeof info->file, "%s/%s.safetensors", dir, stem);
    if (sl_mkdirs(dir, err) != 0) return -1;
    sl_st_writer *w = sl_st_writer_new();
    if (!w) return sl_fail(err, "out of memory");
    add_ctx ac = {w, dtype, err};
    uint8_t digest[32];
    int rc = sl_st_writer_set_metadata(w, "format", "pt", err);
    if (rc == 0) rc = sl_params_foreach(p, add_param, &ac);
    if (rc == 0) rc = sl_st_writer_write(w, info->file, digest, err);
    sl_st_writer_destroy(&w);
    if (rc != 0) return -1;
    sl_sha256_hex(digest, info->sha256);
    struct stat st;
    info->bytes = stat(info->file, &st) == 0 ? (size_t)st.st_size : 0;
    return 0;
}

static int write_part_metadata(const sl_part_info *info, const char *source_json, const char *extra_json, sl_err *err)
{
    char path[PATH_MAX + 32];
    sl_part_sibling(info->file, "_metadata.json", path, sizeof path);
    cJSON *root = metadata_json(info, source_json, extra_json);
    if (!root) return sl_fail(err, "%s: out of memory", path);
    int rc = write_json_file(path, root, err);
    cJSON_Delete(root);
    return rc;
}

int sl_part_write(sl_params *p, const char *name, sl_role role, sl_dtype dtype, const char *dir, const char *file_stem,
                  const char *source_json, const char *extra_json, sl_part_info *info, sl_err *err)
{
    if (write_part_tensors(p, name, role, dtype, dir, file_stem, info, err) != 0) return -1;
    return write_part_metadata(info, source_json, extra_json, err);
}

int sl_part_write_checkpoint(sl_params *p, const char *name, sl_role role, const char *dir, long step, double loss,
                             sl_part_info *info, sl_err *err)
{
    char extra[96];
    if (isfinite(loss))
        snprintf(extra, sizeof extra, "{\"step\": %ld, \"loss\": %.9g}", step, loss);
    else
        snprintf(extra, sizeof extra, "{\"step\": %ld}", step);
    char next[PATH_MAX], stem[300];
    if (slot_dir(dir, role, SLOT_NEXT, next, sizeof next, err) != 0 ||
        checkpoint_stem(name, stem, sizeof stem, err) != 0)
        return -1;
    return sl_part_write(p, name, role, SL_F32, next, stem, NULL, extra, info, err);
}

/* Puts a slot's files into another, by rename (move) or as hard links (the source stays whole).
 * Metadata present means the files beside it are of its save, so the destination's metadata goes
 * first and the source's comes last; a file the source lacks is removed from the destination. */
static int put_slot(const char *dir, sl_role role, const char *name, slot from, slot to, bool move, sl_err *err)
{
    char src[3][PATH_MAX], dst[3][PATH_MAX];
    for (int i = 0; i < 3; i++)
        if (checkpoint_path(dir, role, name, from, checkpoint_suffixes[i], src[i], sizeof src[i], err) != 0 ||
            checkpoint_path(dir, role, name, to, checkpoint_suffixes[i], dst[i], sizeof dst[i], err) != 0)
            return -1;
    const int metadata = 2;
    if (unlink(dst[metadata]) != 0 && errno != ENOENT)
        return sl_fail(err, "%s: cannot remove: %s", dst[metadata], strerror(errno));
    for (int i = 0; i <= metadata; i++) {
        if (!move && unlink(dst[i]) != 0 && errno != ENOENT) /* link() does not replace */
            return sl_fail(err, "%s: cannot remove: %s", dst[i], strerror(errno));
        bool present = access(src[i], F_OK) == 0;
        if (present && (move ? rename(src[i], dst[i]) : link(src[i], dst[i])) != 0)
            return sl_fail(err, "%s: cannot %s it to %s: %s", src[i], move ? "move" : "link", dst[i], strerror(errno));
        if (!present && move && unlink(dst[i]) != 0 && errno != ENOENT)
            return sl_fail(err, "%s: cannot remove: %s", dst[i], strerror(errno));
    }
    return 0;
}

int sl_part_commit_checkpoint(const char *dir, long base, long step, sl_part_info *info, sl_err *err)
{
    const sl_role role = info->role;
    const char *name = info->name;
    sl_part_info now;
    sl_err ignored;
    char prev_dir[PATH_MAX], next_dir[PATH_MAX];
    if (slot_dir(dir, role, SLOT_PREV, prev_dir, sizeof prev_dir, err) != 0 ||
        slot_dir(dir, role, SLOT_NEXT, next_dir, sizeof next_dir, err) != 0)
        return -1;
    /* The current save becomes the previous one when it is this run's last, complete and older.
     * Linked first, then replaced: at every moment one of the two is a whole save. */
    bool keep = base >= 0 && base < step && read_checkpoint(dir, role, name, SLOT_CURRENT, &now, &ignored) == 0 &&
                now.step == base;
    if (keep && (sl_mkdirs(prev_dir, err) != 0 || put_slot(dir, role, name, SLOT_CURRENT, SLOT_PREV, false, err) != 0))
        return -1;
    if (put_slot(dir, role, name, SLOT_NEXT, SLOT_CURRENT, true, err) != 0) return -1;
    rmdir(next_dir);
    return sl_part_checkpoint_file(dir, role, name, info->file, sizeof info->file, err);
}

/* The source checkpoint's files and their SHA-256, hashed on another thread while parts are
 * written (both are bound by memory bandwidth, and there are two cores). */
typedef struct source_hash {
    const sl_checkpoint *ck;
    const char *model_path;
    char *json; /* result */
    sl_err err;
    int rc;
} source_hash;

static void *hash_source(void *arg)
{
    source_hash *sh = arg;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", sh->model_path);
    cJSON_AddStringToObject(root, "dir", sl_checkpoint_dir(sh->ck));
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    for (size_t i = 0; i < sl_checkpoint_file_count(sh->ck) && sh->rc == 0; i++) {
        const char *path = sl_checkpoint_file_path(sh->ck, i);
        uint8_t digest[32];
        char hex[65];
        sh->rc = sl_sha256_file(path, digest, &sh->err);
        sl_sha256_hex(digest, hex);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "file", base_name(path));
        cJSON_AddStringToObject(f, "sha256", hex);
        cJSON_AddItemToArray(files, f);
    }
    sh->json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return NULL;
}

static int check_splits(const sl_config *cfg, const sl_split_request *req, sl_err *err)
{
    if (req->n_splits < 1 || req->n_splits > SL_MAX_SPLITS)
        return sl_fail(err, "give 1 to %d split points", SL_MAX_SPLITS);
    for (int i = 0; i < req->n_splits; i++) {
        int s = req->splits[i];
        if (s < 1 || s >= cfg->n_layer)
            return sl_fail(err, "split point %d is outside 1..%d (the model has %d layers)", s, cfg->n_layer - 1,
                           cfg->n_layer);
        if (i > 0 && s <= req->splits[i - 1])
            return sl_fail(err, "split points must increase: %d after %d", s, req->splits[i - 1]);
    }
    return 0;
}

int sl_split_write_index(const char *out_dir, const char *name, const sl_part_info *parts, int n,
                         const char *source_json, sl_err *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "zmq-splitlearn-split");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "name", name);
    cJSON *splits = cJSON_AddArrayToObject(root, "splits");
    for (int i = 1; i < n; i++)
        cJSON_AddItemToArray(splits, cJSON_CreateNumber(parts[i].first));
    cJSON_AddStringToObject(root, "dtype", parts[0].dtype);
    if (source_json) cJSON_AddItemToObject(root, "source", cJSON_Parse(source_json));
    cJSON_AddStringToObject(root, "tool", SL_TOOL_NAME);
    cJSON *list = cJSON_AddArrayToObject(root, "parts");
    size_t dir_len = strlen(out_dir);
    for (int i = 0; i < n; i++) {
        const char *file = strncmp(parts[i].file, out_dir, dir_len) == 0 && parts[i].file[dir_len] == '/'
                               ? parts[i].file + dir_len + 1
                               : parts[i].file;
        char rel[PATH_MAX];
        sl_part_sibling(file, "_metadata.json", rel, sizeof rel);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", parts[i].name);
        cJSON_AddStringToObject(e, "role", sl_role_name(parts[i].role));
        int range[2] = {parts[i].first, parts[i].last};
        cJSON_AddItemToObject(e, "layers", cJSON_CreateIntArray(range, 2));
        cJSON_AddStringToObject(e, "metadata", rel);
        cJSON_AddItemToArray(list, e);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/split.json", out_dir);
    int rc = write_json_file(path, root, err);
    cJSON_Delete(root);
    return rc;
}

/* One part of a split, written on a thread of its own: the parts and the source hash are
 * independent, and each is bound by memory bandwidth, so two cores finish in about half the time. */
typedef struct part_job {
    const sl_checkpoint *ck;
    const sl_split_request *req;
    sl_role role;
    int first, last;
    char name[32], dir[PATH_MAX], stem[1024];
    sl_part_info *info;
    sl_err err;
    int rc;
} part_job;

static void *write_part_job(void *arg)
{
    part_job *j = arg;
    sl_params p;
    j->rc =
        sl_params_load(&p, j->ck, j->first, j->last, j->role == SL_ROLE_BOTTOM, j->role == SL_ROLE_TOP, false, &j->err);
    if (j->rc == 0) {
        j->rc = write_part_tensors(&p, j->name, j->role, j->req->dtype, j->dir, j->stem, j->info, &j->err);
        sl_params_free(&p);
    }
    return NULL;
}

static void plan_part(part_job *j, const sl_checkpoint *ck, const sl_split_request *req, int i, const char *splits,
                      sl_part_info *info)
{
    const int n = req->n_splits + 1, n_layer = sl_checkpoint_config(ck)->n_layer;
    *j = (part_job){.ck = ck, .req = req, .info = info};
    j->role = i == 0 ? SL_ROLE_BOTTOM : i == n - 1 ? SL_ROLE_TOP : SL_ROLE_TRUNK;
    j->first = i == 0 ? 0 : req->splits[i - 1];
    j->last = i == n - 1 ? n_layer : req->splits[i];
    if (j->role == SL_ROLE_TRUNK)
        snprintf(j->name, sizeof j->name, "trunk%d", i);
    else
        snprintf(j->name, sizeof j->name, "%s", sl_role_name(j->role));
    snprintf(j->dir, sizeof j->dir, "%s/%s", req->out_dir, sl_role_name(j->role));
    snprintf(j->stem, sizeof j->stem, "%.200s_%s_%s", req->name, splits, j->name);
}

int sl_split_write(const sl_checkpoint *ck, const sl_split_request *req, sl_part_info *parts, sl_err *err)
{
    const sl_config *cfg = sl_checkpoint_config(ck);
    if (check_splits(cfg, req, err) != 0) return -1;
    if (sl_mkdirs(req->out_dir, err) != 0) return -1;
    char splits_text[SL_MAX_SPLITS * 8] = "";
    for (int i = 0; i < req->n_splits; i++)
        snprintf(splits_text + strlen(splits_text), sizeof splits_text - strlen(splits_text), "%s%d", i ? "-" : "",
                 req->splits[i]);
    const int n = req->n_splits + 1;
    part_job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *threads = calloc((size_t)n + 1, sizeof *threads);
    bool *started = calloc((size_t)n + 1, sizeof *started);
    if (!jobs || !threads || !started) {
        free(jobs);
        free(threads);
        free(started);
        return sl_fail(err, "out of memory");
    }
    source_hash sh = {.ck = ck, .model_path = req->model_path};
    started[n] = pthread_create(&threads[n], NULL, hash_source, &sh) == 0;
    if (!started[n]) hash_source(&sh);
    for (int i = 0; i < n; i++) {
        plan_part(&jobs[i], ck, req, i, splits_text, &parts[i]);
        started[i] = pthread_create(&threads[i], NULL, write_part_job, &jobs[i]) == 0;
        if (!started[i]) write_part_job(&jobs[i]);
    }
    int rc = 0;
    size_t done = 0;
    for (int i = 0; i < n; i++) {
        if (started[i]) pthread_join(threads[i], NULL);
        if (rc == 0 && jobs[i].rc != 0) rc = sl_fail(err, "%s", jobs[i].err.msg);
        done += parts[i].bytes;
        if (req->progress) req->progress(req->progress_ctx, done, i == n - 1 ? done : done * n / (i + 1));
    }
    if (started[n]) pthread_join(threads[n], NULL);
    if (rc == 0 && sh.rc != 0) rc = sl_fail(err, "%s", sh.err.msg);
    if (rc == 0 && !sh.json) rc = sl_fail(err, "out of memory");
    for (int i = 0; i < n && rc == 0; i++)
        rc = write_part_metadata(&parts[i], sh.json, NULL, err);
    if (rc == 0) rc = sl_split_write_index(req->out_dir, req->name, parts, n, sh.json, err);
    free(sh.json);
    free(jobs);
    free(threads);
    free(started);
    return rc;
}

/* ---- merging a split back into one model ---- */

typedef struct copy_ctx {
    sl_params *whole;
    const char *name;
    const float *src;
    int copied;
} copy_ctx;

static int copy_into(sl_param_ref *ref, void *ctx)
{
    copy_ctx *c = ctx;
    if (strcmp(ref->name, c->name) != 0) return 0;
    memcpy(*ref->slot, c->src, ref->numel * sizeof(float));
    c->copied++;
    return 1; /* found: stop */
}

static int copy_part(sl_param_ref *ref, void *ctx)
{
    copy_ctx *c = ctx;
    c->name = ref->name;
    c->src = *ref->slot;
    sl_params_foreach(c->whole, copy_into, c);
    return 0;
}

static int count_tensor(sl_param_ref *ref, void *ctx)
{
    (void)ref;
    ++*(int *)ctx;
    return 0;
}

int sl_split_join(const char *dir, sl_params *whole, sl_err *err)
{
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int n = sl_split_read_index(dir, parts, SL_MAX_SPLITS + 1, err);
    if (n < 1) return -1;
    for (int i = 1; i < n; i++)
        if (parts[i].step != parts[0].step)
            return sl_fail(err,
                           "%s: its %s part was saved at step %ld, its %s part at step %ld (a save that stopped "
                           "half-way): resume it and save again before merging",
                           dir, parts[0].name, parts[0].step, parts[i].name, parts[i].step);
    sl_config cfg = parts[0].cfg;
    cfg.tie_word_embeddings = false;
    if (sl_params_alloc(whole, &cfg, 0, cfg.n_layer, true, true, err) != 0) return -1;
    copy_ctx c = {.whole = whole};
    int rc = 0, expected = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        sl_part *part = sl_part_open(dir, parts[i].first, parts[i].last, true, err);
        sl_params p;
        if (!part || sl_part_load_params(part, &p, false, err) != 0) {
            sl_part_destroy(&part);
            rc = -1;
            break;
        }
        sl_params_foreach(&p, copy_part, &c);
        sl_params_free(&p);
        sl_part_destroy(&part);
    }
    sl_params_foreach(whole, count_tensor, &expected);
    if (rc == 0 && c.copied != expected)
        rc = sl_fail(err, "%s: the parts hold %d of the model's %d tensors", dir, c.copied, expected);
    if (rc != 0) sl_params_free(whole);
    return rc;
}

int sl_split_merge(const char *dir, const char *out, sl_dtype dtype, sl_err *err)
{
    sl_params whole;
    if (sl_split_join(dir, &whole, err) != 0) return -1;
    int rc = sl_params_save_hf(&whole, out, dtype, 1, true, err);
    sl_params_free(&whole);
    return rc;
}
