/* split.c — writing a split directory (parts on threads of their own while the model's files are
 * hashed), its split.json index, reading it back, and merging the parts into one model. */
#include "split.h"

#include "fileio.h"
#include "json.h"
#include "sha256.h"
#include "version.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* split.json is small; a larger one is refused rather than parsed. */
#define MAX_INDEX_BYTES (16u << 20)

/* ---- the index ---- */

/* One entry of "parts": name, role, layers and the metadata's path (relative to out_dir when the
 * part is under it). */
static cJSON *index_entry(const char *out_dir, const sl_part_info *part)
{
    size_t dir_len = strlen(out_dir);
    const char *file = strncmp(part->file, out_dir, dir_len) == 0 && part->file[dir_len] == '/'
                           ? part->file + dir_len + 1
                           : part->file;
    char rel[PATH_MAX];
    sl_part_sibling(file, "_metadata.json", rel, sizeof rel);
    const int layers[2] = {part->first, part->last};
    cJSON *e = cJSON_CreateObject();
    bool ok = e && cJSON_AddStringToObject(e, "name", part->name) &&
              cJSON_AddStringToObject(e, "role", sl_role_name(part->role)) &&
              sl_json_add(e, "layers", cJSON_CreateIntArray(layers, 2)) && cJSON_AddStringToObject(e, "metadata", rel);
    if (!ok) cJSON_Delete(e);
    return ok ? e : NULL;
}

/* The split.json object; NULL when out of memory. */
static cJSON *index_json(const char *out_dir, const char *name, const sl_part_info *parts, int n, const cJSON *source)
{
    cJSON *root = cJSON_CreateObject(), *splits = NULL, *list = NULL;
    bool ok = root && cJSON_AddStringToObject(root, "format", "zmq-splitlearn-split") &&
              cJSON_AddNumberToObject(root, "version", 1) && cJSON_AddStringToObject(root, "name", name) &&
              (splits = cJSON_AddArrayToObject(root, "splits")) &&
              cJSON_AddStringToObject(root, "dtype", parts[0].dtype) &&
              (!source || sl_json_add(root, "source", cJSON_Duplicate(source, true))) &&
              cJSON_AddStringToObject(root, "tool", SL_TOOL_NAME) && (list = cJSON_AddArrayToObject(root, "parts"));
    for (int i = 1; ok && i < n; i++)
        ok = cJSON_AddItemToArray(splits, cJSON_CreateNumber(parts[i].first));
    for (int i = 0; ok && i < n; i++)
        ok = cJSON_AddItemToArray(list, index_entry(out_dir, &parts[i]));
    if (!ok) cJSON_Delete(root);
    return ok ? root : NULL;
}

int sl_split_write_index(const char *out_dir, const char *name, const sl_part_info *parts, int n, const cJSON *source,
                         sl_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/split.json", out_dir) >= (int)sizeof path)
        return sl_fail(err, "%s: path too long", out_dir);
    cJSON *root = index_json(out_dir, name, parts, n, source);
    int rc = root ? sl_json_write_file(path, root, err) : sl_fail(err, "%s: out of memory", path);
    cJSON_Delete(root);
    return rc;
}

int sl_split_read_index(const char *dir, sl_part_info *parts, int max, sl_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/split.json", dir);
    cJSON *root = sl_json_read_file(path, MAX_INDEX_BYTES, err);
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
        if (sl_json_get_string(item, "metadata", rel, sizeof rel, path, err) != 0) {
            n = -1;
            break;
        }
        if (sl_path_join(meta, sizeof meta, dir, rel) != 0 || sl_part_read_metadata(meta, &parts[n], err) != 0) {
            n = -1;
            break;
        }
        n++;
    }
    cJSON_Delete(root);
    return n;
}

/* ---- writing a split ---- */

/* The source model's files and their SHA-256, hashed on another thread while parts are written
 * (both are bound by memory bandwidth, and there are two cores). */
typedef struct source_hash {
    const sl_hf_model *ck;
    const char *model_path;
    cJSON *source; /* result: {"path", "dir", "files": [{"file", "sha256"}]}, NULL when out of memory */
    sl_err err;
    int rc;
} source_hash;

/* {"file": the file's name, "sha256"}, or NULL (sh->rc and sh->err say why when hashing failed). */
static cJSON *hashed_file(source_hash *sh, const char *path)
{
    uint8_t digest[32];
    char hex[65];
    if ((sh->rc = sl_sha256_file(path, digest, &sh->err)) != 0) return NULL;
    sl_sha256_hex(digest, hex);
    cJSON *f = cJSON_CreateObject();
    bool ok = f && cJSON_AddStringToObject(f, "file", sl_path_base(path)) && cJSON_AddStringToObject(f, "sha256", hex);
    if (!ok) cJSON_Delete(f);
    return ok ? f : NULL;
}

static void *hash_source(void *arg)
{
    source_hash *sh = arg;
    cJSON *root = cJSON_CreateObject(), *files = NULL;
    bool ok = root && cJSON_AddStringToObject(root, "path", sh->model_path) &&
              cJSON_AddStringToObject(root, "dir", sl_hf_model_dir(sh->ck)) &&
              (files = cJSON_AddArrayToObject(root, "files"));
    for (size_t i = 0; ok && i < sl_hf_model_file_count(sh->ck); i++)
        ok = cJSON_AddItemToArray(files, hashed_file(sh, sl_hf_model_file_path(sh->ck, i)));
    if (!ok) cJSON_Delete(root);
    sh->source = ok ? root : NULL;
    return NULL;
}

int sl_split_check(const sl_config *cfg, const sl_split_request *req, sl_err *err)
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

/* One part of a split, written on a thread of its own: the parts and the source hash are
 * independent, and each is bound by memory bandwidth, so two cores finish in about half the time. */
typedef struct part_job {
    const sl_hf_model *ck;
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
        j->rc = sl_part_write_tensors(&p, j->name, j->role, j->req->format, j->dir, j->stem, j->info, &j->err);
        sl_params_free(&p);
    }
    return NULL;
}

/* Part i's role, layers, name and file: OUT/<role>/<name>_<splits>_<part>. */
static void plan_part(part_job *j, const sl_hf_model *ck, const sl_split_request *req, int i, const char *splits,
                      sl_part_info *info)
{
    const int n = req->n_splits + 1, n_layer = sl_hf_model_config(ck)->n_layer;
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

int sl_split_write(const sl_hf_model *ck, const sl_split_request *req, sl_part_info *parts, sl_err *err)
{
    const sl_config *cfg = sl_hf_model_config(ck);
    if (sl_split_check(cfg, req, err) != 0) return -1;
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
    if (rc == 0 && !sh.source) rc = sl_fail(err, "out of memory");
    for (int i = 0; i < n && rc == 0; i++)
        rc = sl_part_write_metadata(&parts[i], sh.source, NULL, err);
    if (rc == 0) rc = sl_split_write_index(req->out_dir, req->name, parts, n, sh.source, err);
    cJSON_Delete(sh.source);
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
        if (!part || sl_part_load_params(part, &p, true, err) != 0) { /* F32 whatever the part holds */
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
