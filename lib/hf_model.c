/* hf_model.c — finding an HF GPT-2 model's files (model directory, hub cache, shards) and its tensors. */
#include "hf_model.h"

#include "fileio.h"
#include "json.h"
#include "safetensors.h"
#include "torch_file.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One file of a checkpoint: safetensors (mapped), or a PyTorch pickle (read into memory). */
typedef struct ck_file {
    sl_st_file *st;
    sl_torch_file *pt;
} ck_file;

struct sl_hf_model {
    char *dir;
    sl_config cfg;
    ck_file *files;
    size_t file_count;
};

/* ---- locating the files ---- */

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* In a hub cache entry (has refs/main and snapshots/), the snapshot refs/main names. */
static int resolve_hub_entry(const char *entry, char *out, size_t out_size, sl_err *err)
{
    char refs[PATH_MAX];
    snprintf(refs, sizeof refs, "%s/refs/main", entry);
    char *rev = sl_read_text_file(refs, 256, err);
    if (!rev) return -1;
    rev[strcspn(rev, " \r\n\t")] = '\0';
    int rc = 0;
    if (!*rev || strchr(rev, '/') || strstr(rev, ".."))
        rc = sl_fail(err, "%s: not a revision hash", refs);
    else if (snprintf(out, out_size, "%s/snapshots/%s", entry, rev) >= (int)out_size)
        rc = sl_fail(err, "%s: path too long", entry);
    else if (!is_dir(out))
        rc = sl_fail(err, "%s: refs/main names revision %s but %s is missing", entry, rev, out);
    free(rev);
    return rc;
}

/* A repo id ("gpt2", "org/name") looked up in the hub cache directories, as huggingface_hub does. */
static int resolve_repo_id(const char *id, char *out, size_t out_size)
{
    char name[512] = "models--";
    size_t n = strlen(name);
    for (const char *p = id; *p && n + 2 < sizeof name; p++) {
        if (*p == '/') {
            name[n++] = '-';
            name[n++] = '-';
        } else {
            name[n++] = *p;
        }
    }
    name[n] = '\0';
    const char *hub = getenv("HF_HUB_CACHE"), *home = getenv("HF_HOME"), *user = getenv("HOME");
    char roots[3][PATH_MAX] = {{0}};
    if (hub) snprintf(roots[0], PATH_MAX, "%s", hub);
    if (home) snprintf(roots[1], PATH_MAX, "%s/hub", home);
    if (user) snprintf(roots[2], PATH_MAX, "%s/.cache/huggingface/hub", user);
    for (int i = 0; i < 3; i++) {
        if (!roots[i][0]) continue;
        if (snprintf(out, out_size, "%s/%s", roots[i], name) < (int)out_size && is_dir(out)) return 0;
    }
    return -1;
}

/* Turns what the user named into the directory that holds config.json. */
static int resolve_model_dir(const char *path, char *out, size_t out_size, sl_err *err)
{
    char entry[PATH_MAX];
    if (!is_dir(path)) {
        if (strchr(path, '/') && path[0] != '.' && path[0] != '/' && resolve_repo_id(path, entry, sizeof entry) == 0)
            return resolve_hub_entry(entry, out, out_size, err);
        if (!strchr(path, '/') && resolve_repo_id(path, entry, sizeof entry) == 0)
            return resolve_hub_entry(entry, out, out_size, err);
        return sl_fail(err, "%s: no such model directory (nor a repo id in the HF hub cache)", path);
    }
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/config.json", path);
    if (is_file(probe))
        return snprintf(out, out_size, "%s", path) < (int)out_size ? 0 : sl_fail(err, "%s: path too long", path);
    snprintf(probe, sizeof probe, "%s/refs/main", path);
    if (is_file(probe)) return resolve_hub_entry(path, out, out_size, err);
    return sl_fail(err, "%s: no config.json here (nor refs/main of an HF hub cache entry)", path);
}

/* ---- the files ---- */

static bool is_safetensors(const char *path)
{
    size_t n = strlen(path), ext = strlen(".safetensors");
    return n >= ext && strcmp(path + n - ext, ".safetensors") == 0;
}

static const char *file_path(const ck_file *f) { return f->st ? sl_st_path(f->st) : sl_torch_path(f->pt); }

static const sl_tensor *file_find(const ck_file *f, const char *name)
{
    return f->st ? sl_st_find(f->st, name) : sl_torch_find(f->pt, name);
}

/* Opens a .safetensors file, or any other as a PyTorch checkpoint (pytorch_model.bin, *.pt). */
static int add_file(sl_hf_model *ck, const char *path, sl_err *err)
{
    for (size_t i = 0; i < ck->file_count; i++)
        if (strcmp(file_path(&ck->files[i]), path) == 0) return 0;
    ck_file *files = realloc(ck->files, (ck->file_count + 1) * sizeof *files);
    if (!files) return sl_fail(err, "%s: out of memory", path);
    ck->files = files;
    ck_file *f = &ck->files[ck->file_count];
    *f = (ck_file){0};
    if (is_safetensors(path) ? !(f->st = sl_st_open(path, err)) : !(f->pt = sl_torch_open(path, err))) return -1;
    ck->file_count++;
    return 0;
}

/* ---- opening ---- */

/* Opens every shard the index names and checks each listed tensor is where it says. */
static int open_shards(sl_hf_model *ck, const char *index_path, sl_err *err)
{
    cJSON *root = sl_json_read_file(index_path, 64u << 20, err);
    if (!root) return -1;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int rc = cJSON_IsObject(map) ? 0 : sl_fail(err, "%s: no \"weight_map\" object", index_path);
    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        if (rc != 0) break;
        char path[PATH_MAX];
        if (!cJSON_IsString(item) || strchr(item->valuestring, '/') ||
            snprintf(path, sizeof path, "%s/%s", ck->dir, item->valuestring) >= (int)sizeof path) {
            rc = sl_fail(err, "%s: weight_map entry '%s' is not a file name", index_path, item->string);
            break;
        }
        if ((rc = add_file(ck, path, err)) != 0) break;
        const char *found_in = NULL;
        if (!sl_hf_model_tensor(ck, item->string, &found_in) || strcmp(found_in, path) != 0) {
            rc = sl_fail(err, "%s: tensor '%s' is not in %s as the index says", index_path, item->string, path);
            break;
        }
    }
    cJSON_Delete(root);
    return rc;
}

static sl_hf_model *checkpoint_alloc(const char *dir, sl_err *err)
{
    sl_hf_model *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->dir = strdup(dir))) {
        free(ck);
        sl_fail(err, "out of memory");
        return NULL;
    }
    return ck;
}

/* The weights of a model directory, in the first layout found: safetensors (sharded or not),
 * then PyTorch's pytorch_model.bin (sharded or not). */
static int open_weights(sl_hf_model *ck, sl_err *err)
{
    static const struct {
        const char *name;
        bool index;
    } layouts[] = {{"model.safetensors.index.json", true},
                   {"model.safetensors", false},
                   {"pytorch_model.bin.index.json", true},
                   {"pytorch_model.bin", false}};
    char file[PATH_MAX + 64];
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++) {
        snprintf(file, sizeof file, "%s/%s", ck->dir, layouts[i].name);
        if (is_file(file)) return layouts[i].index ? open_shards(ck, file, err) : add_file(ck, file, err);
    }
    return sl_fail(err, "%s: no model.safetensors, pytorch_model.bin or sharded index of either", ck->dir);
}

static void dir_of(const char *path, char *dir, size_t size)
{
    snprintf(dir, size, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, size, ".");
}

/* A single checkpoint file (.pt, .bin, .safetensors) with the config.json beside it. */
static sl_hf_model *open_single_file(const char *path, sl_err *err)
{
    char dir[PATH_MAX], config[PATH_MAX + 16];
    dir_of(path, dir, sizeof dir);
    snprintf(config, sizeof config, "%s/config.json", dir);
    if (!is_file(config)) {
        sl_fail(err, "%s: a checkpoint file needs the model's config.json beside it (or --config FILE)", path);
        return NULL;
    }
    sl_config cfg;
    return sl_config_load(config, &cfg, err) == 0 ? sl_hf_model_open_file(path, &cfg, err) : NULL;
}

sl_hf_model *sl_hf_model_open(const char *path, sl_err *err)
{
    if (is_file(path)) return open_single_file(path, err);
    char dir[PATH_MAX], file[PATH_MAX + 64];
    if (resolve_model_dir(path, dir, sizeof dir, err) != 0) return NULL;
    sl_hf_model *ck = checkpoint_alloc(dir, err);
    if (!ck) return NULL;
    snprintf(file, sizeof file, "%s/config.json", dir);
    int rc = sl_config_load(file, &ck->cfg, err);
    if (rc == 0) rc = open_weights(ck, err);
    if (rc != 0) sl_hf_model_destroy(&ck);
    return ck;
}

sl_hf_model *sl_hf_model_open_file(const char *path, const sl_config *cfg, sl_err *err)
{
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    sl_hf_model *ck = checkpoint_alloc(dir, err);
    if (!ck) return NULL;
    ck->cfg = *cfg;
    if (add_file(ck, path, err) != 0) sl_hf_model_destroy(&ck);
    return ck;
}

sl_hf_model *sl_hf_model_open_with_config(const char *path, const char *config_path, sl_err *err)
{
    if (!config_path) return sl_hf_model_open(path, err);
    if (!is_file(path)) {
        sl_fail(err, "%s: --config goes with a checkpoint file (.pt, .bin, .safetensors), not a directory", path);
        return NULL;
    }
    sl_config cfg;
    return sl_config_load(config_path, &cfg, err) == 0 ? sl_hf_model_open_file(path, &cfg, err) : NULL;
}

void sl_hf_model_destroy(sl_hf_model **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    for (size_t i = 0; i < (*self)->file_count; i++) {
        sl_st_close(&(*self)->files[i].st);
        sl_torch_close(&(*self)->files[i].pt);
    }
    free((*self)->files);
    free((*self)->dir);
    free(*self);
    *self = NULL;
}

const sl_config *sl_hf_model_config(const sl_hf_model *self) { return &self->cfg; }
const char *sl_hf_model_dir(const sl_hf_model *self) { return self->dir; }
size_t sl_hf_model_file_count(const sl_hf_model *self) { return self->file_count; }
const char *sl_hf_model_file_path(const sl_hf_model *self, size_t i) { return file_path(&self->files[i]); }

const char *sl_hf_model_metadata(const sl_hf_model *self, const char *key)
{
    for (size_t i = 0; i < self->file_count; i++) {
        const char *value = self->files[i].st ? sl_st_metadata(self->files[i].st, key) : NULL;
        if (value) return value;
    }
    return NULL;
}

const sl_tensor *sl_hf_model_tensor(const sl_hf_model *self, const char *name, const char **file)
{
    char prefixed[256];
    const char *bare = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
    snprintf(prefixed, sizeof prefixed, "transformer.%s", bare);
    for (size_t i = 0; i < self->file_count; i++) {
        const sl_tensor *t = file_find(&self->files[i], prefixed);
        if (!t) t = file_find(&self->files[i], bare);
        if (t) {
            if (file) *file = file_path(&self->files[i]);
            return t;
        }
    }
    return NULL;
}
