/* checkpoint.c — finding an HF GPT-2 model's files (model directory, hub cache, shards) and its tensors. */
#include "checkpoint.h"

#include "fileio.h"
#include "json.h"
#include "safetensors.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct sl_checkpoint {
    char *dir;
    sl_config cfg;
    sl_st_file **files;
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

/* ---- opening ---- */

static int add_file(sl_checkpoint *ck, const char *path, sl_err *err)
{
    for (size_t i = 0; i < ck->file_count; i++)
        if (strcmp(sl_st_path(ck->files[i]), path) == 0) return 0;
    sl_st_file **files = realloc(ck->files, (ck->file_count + 1) * sizeof *files);
    if (!files) return sl_fail(err, "%s: out of memory", path);
    ck->files = files;
    if (!(ck->files[ck->file_count] = sl_st_open(path, err))) return -1;
    ck->file_count++;
    return 0;
}

/* Opens every shard the index names and checks each listed tensor is where it says. */
static int open_shards(sl_checkpoint *ck, const char *index_path, sl_err *err)
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
        if (!sl_checkpoint_tensor(ck, item->string, &found_in) || strcmp(found_in, path) != 0) {
            rc = sl_fail(err, "%s: tensor '%s' is not in %s as the index says", index_path, item->string, path);
            break;
        }
    }
    cJSON_Delete(root);
    return rc;
}

static sl_checkpoint *checkpoint_alloc(const char *dir, sl_err *err)
{
    sl_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->dir = strdup(dir))) {
        free(ck);
        sl_fail(err, "out of memory");
        return NULL;
    }
    return ck;
}

sl_checkpoint *sl_checkpoint_open(const char *path, sl_err *err)
{
    char dir[PATH_MAX], file[PATH_MAX + 64];
    if (resolve_model_dir(path, dir, sizeof dir, err) != 0) return NULL;
    sl_checkpoint *ck = checkpoint_alloc(dir, err);
    if (!ck) return NULL;
    snprintf(file, sizeof file, "%s/config.json", dir);
    int rc = sl_config_load(file, &ck->cfg, err);
    if (rc == 0) {
        snprintf(file, sizeof file, "%s/model.safetensors.index.json", dir);
        if (is_file(file)) {
            rc = open_shards(ck, file, err);
        } else {
            snprintf(file, sizeof file, "%s/model.safetensors", dir);
            if (is_file(file)) {
                rc = add_file(ck, file, err);
            } else {
                snprintf(file, sizeof file, "%s/pytorch_model.bin", dir);
                rc = sl_fail(err, "%s: no model.safetensors or model.safetensors.index.json%s", dir,
                             is_file(file) ? " (pytorch_model.bin is not read: save the model with "
                                             "safe_serialization=True)"
                                           : "");
            }
        }
    }
    if (rc != 0) sl_checkpoint_destroy(&ck);
    return ck;
}

sl_checkpoint *sl_checkpoint_open_file(const char *path, const sl_config *cfg, sl_err *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    sl_checkpoint *ck = checkpoint_alloc(dir, err);
    if (!ck) return NULL;
    ck->cfg = *cfg;
    if (add_file(ck, path, err) != 0) sl_checkpoint_destroy(&ck);
    return ck;
}

void sl_checkpoint_destroy(sl_checkpoint **self)
{
    if (!self || !*self) return;
    for (size_t i = 0; i < (*self)->file_count; i++)
        sl_st_close(&(*self)->files[i]);
    free((*self)->files);
    free((*self)->dir);
    free(*self);
    *self = NULL;
}

const sl_config *sl_checkpoint_config(const sl_checkpoint *self) { return &self->cfg; }
const char *sl_checkpoint_dir(const sl_checkpoint *self) { return self->dir; }
size_t sl_checkpoint_file_count(const sl_checkpoint *self) { return self->file_count; }
const char *sl_checkpoint_file_path(const sl_checkpoint *self, size_t i) { return sl_st_path(self->files[i]); }

const sl_tensor *sl_checkpoint_tensor(const sl_checkpoint *self, const char *name, const char **file)
{
    char prefixed[256];
    const char *bare = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
    snprintf(prefixed, sizeof prefixed, "transformer.%s", bare);
    for (size_t i = 0; i < self->file_count; i++) {
        const sl_tensor *t = sl_st_find(self->files[i], prefixed);
        if (!t) t = sl_st_find(self->files[i], bare);
        if (t) {
            if (file) *file = sl_st_path(self->files[i]);
            return t;
        }
    }
    return NULL;
}
