/* seed_import.c — the seed's split parts (torch.save state dicts + metadata JSON) into our split
 * layout. */
#include "seed_import.h"

#include "fileio.h"
#include "sha256.h"

#include <cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define METADATA_SUFFIX "_metadata.json"

/* One component of the seed's split. */
typedef struct seed_part {
    sl_role role;
    int first, last; /* blocks [first, last) of the model */
    size_t parameters;
    sl_config cfg;
    char stem[256];      /* <name>_<splits>_<component> */
    char meta[PATH_MAX]; /* SEED/<role>/<stem>_metadata.json */
    char pt[PATH_MAX];   /* SEED/<role>/<stem>.pt */
} seed_part;

typedef struct seed_split {
    seed_part parts[SL_MAX_SPLITS + 1];
    int n;
} seed_split;

/* ---- reading the seed's metadata ---- */

static int json_count(const cJSON *root, const char *key, long *out, const char *path, sl_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e15 ||
        v->valuedouble != (double)(long)v->valuedouble)
        return sl_fail(err, "%s: \"%s\" is missing or not a non-negative integer", path, key);
    *out = (long)v->valuedouble;
    return 0;
}

static int parse_metadata(const cJSON *root, seed_part *sp, sl_err *err)
{
    const cJSON *component = cJSON_GetObjectItemCaseSensitive(root, "component");
    if (!cJSON_IsString(component) || strcmp(component->valuestring, sl_role_name(sp->role)) != 0)
        return sl_fail(err, "%s: \"component\" is not \"%s\", the directory it is in", sp->meta,
                       sl_role_name(sp->role));
    long first = 0, last = 0, parameters = 0;
    if (json_count(root, "start_layer", &first, sp->meta, err) != 0 ||
        json_count(root, "end_layer", &last, sp->meta, err) != 0 ||
        json_count(root, "num_parameters", &parameters, sp->meta, err) != 0)
        return -1;
    char *cfg_text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "config"));
    char origin[PATH_MAX + 16];
    snprintf(origin, sizeof origin, "%s: \"config\"", sp->meta);
    int rc = sl_config_parse(cfg_text ? cfg_text : "", origin, &sp->cfg, err);
    free(cfg_text);
    if (rc == 0 && !(first < last && last <= sp->cfg.n_layer))
        rc = sl_fail(err, "%s: layers [%ld, %ld) are not a range of the model's %d", sp->meta, first, last,
                     sp->cfg.n_layer);
    sp->first = (int)first;
    sp->last = (int)last;
    sp->parameters = (size_t)parameters;
    return rc;
}

/* Reads SEED/<role>/<file> (a metadata file) and finds the .pt beside it. */
static int read_part(const char *dir, const char *file, sl_role role, seed_part *sp, sl_err *err)
{
    size_t stem_len = strlen(file) - strlen(METADATA_SUFFIX);
    if (stem_len >= sizeof sp->stem) return sl_fail(err, "%s/%s: name too long", dir, file);
    memcpy(sp->stem, file, stem_len);
    sp->stem[stem_len] = '\0';
    sp->role = role;
    if (snprintf(sp->meta, sizeof sp->meta, "%s/%s", dir, file) >= (int)sizeof sp->meta ||
        snprintf(sp->pt, sizeof sp->pt, "%s/%.*s.pt", dir, (int)stem_len, file) >= (int)sizeof sp->pt)
        return sl_fail(err, "%s: path too long", dir);
    struct stat st;
    if (stat(sp->pt, &st) != 0 || !S_ISREG(st.st_mode))
        return sl_fail(err, "%s: no %s.pt beside it", sp->meta, sp->stem);
    char *text = sl_read_text_file(sp->meta, 16u << 20, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    int rc = cJSON_IsObject(root) ? parse_metadata(root, sp, err) : sl_fail(err, "%s: malformed JSON", sp->meta);
    cJSON_Delete(root);
    return rc;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

/* Every component in SEED/<role>/, appended to split; how many were found, or -1. */
static int read_role(const char *seed_dir, sl_role role, seed_split *split, sl_err *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", seed_dir, sl_role_name(role));
    DIR *d = opendir(dir);
    if (!d) return role == SL_ROLE_TRUNK ? 0 : sl_fail(err, "%s: missing (not a seed split directory?)", seed_dir);
    int found = 0, rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        if (!has_suffix(e->d_name, METADATA_SUFFIX)) continue;
        if (split->n == SL_MAX_SPLITS + 1) rc = sl_fail(err, "%s: more than %d parts", seed_dir, SL_MAX_SPLITS + 1);
        if (rc == 0) rc = read_part(dir, e->d_name, role, &split->parts[split->n], err);
        if (rc == 0) split->n++, found++;
    }
    closedir(d);
    if (rc == 0 && role != SL_ROLE_TRUNK && found != 1)
        rc = sl_fail(err, "%s: %d files *%s, not one", dir, found, METADATA_SUFFIX);
    return rc == 0 ? found : -1;
}

/* Chain order: the bottom, the trunks by their first block, the top (roles are in that order). */
static int by_chain_order(const void *a, const void *b)
{
    const seed_part *x = a, *y = b;
    return x->role != y->role ? (int)x->role - (int)y->role : x->first - y->first;
}

static bool same_config(const sl_config *a, const sl_config *b)
{
    return a->n_layer == b->n_layer && a->n_embd == b->n_embd && a->n_head == b->n_head && a->n_inner == b->n_inner &&
           a->vocab_size == b->vocab_size && a->n_positions == b->n_positions &&
           a->layer_norm_epsilon == b->layer_norm_epsilon && a->tie_word_embeddings == b->tie_word_embeddings &&
           a->eos_token_id == b->eos_token_id;
}

/* The components in chain order: bottom, trunks by their first block, top; they must chain. */
static int read_split(const char *seed_dir, seed_split *split, sl_err *err)
{
    split->n = 0;
    const sl_role roles[] = {SL_ROLE_BOTTOM, SL_ROLE_TRUNK, SL_ROLE_TOP};
    for (int i = 0; i < 3; i++)
        if (read_role(seed_dir, roles[i], split, err) < 0) return -1;
    qsort(split->parts, (size_t)split->n, sizeof *split->parts, by_chain_order);
    const seed_part *p = split->parts;
    if (p[0].first != 0) return sl_fail(err, "%s: the bottom starts at block %d, not 0", p[0].meta, p[0].first);
    for (int i = 1; i < split->n; i++) {
        if (!same_config(&p[i].cfg, &p[0].cfg))
            return sl_fail(err, "%s: its config differs from %s's", p[i].meta, p[0].meta);
        if (p[i].first != p[i - 1].last)
            return sl_fail(err, "%s: starts at block %d, but %s ends at %d", p[i].meta, p[i].first, p[i - 1].meta,
                           p[i - 1].last);
    }
    const seed_part *top = &p[split->n - 1];
    if (top->last != top->cfg.n_layer)
        return sl_fail(err, "%s: the top ends at block %d, not at the model's %d", top->meta, top->last,
                       top->cfg.n_layer);
    return 0;
}

/* ---- writing ours ---- */

/* The model name in the seed's stems, <name>_<splits>_bottom. */
static void seed_name(const seed_split *split, const char *splits, char *out, size_t size)
{
    snprintf(out, size, "%s", split->parts[0].stem);
    size_t n = strlen(out), role = strlen("_bottom"), tail = strlen(splits) + 1;
    if (n > role && strcmp(out + n - role, "_bottom") == 0) out[n -= role] = '\0';
    if (n > tail && out[n - tail] == '_' && strcmp(out + n - tail + 1, splits) == 0) out[n - tail] = '\0';
    if (!*out) snprintf(out, size, "model");
}

/* {"path", "dir", "format", "files": [{"file", "sha256"}, ...]}: the seed directory and its files. */
static char *source_json(const char *seed_dir, const seed_split *split, sl_err *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", seed_dir);
    char *abs = realpath(seed_dir, NULL);
    cJSON_AddStringToObject(root, "dir", abs ? abs : seed_dir);
    free(abs);
    cJSON_AddStringToObject(root, "format", "splitlearn_core split parts (torch.save)");
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    int rc = 0;
    for (int i = 0; i < split->n && rc == 0; i++) {
        const seed_part *sp = &split->parts[i];
        const char *paths[2] = {sp->pt, sp->meta};
        for (int k = 0; k < 2 && rc == 0; k++) {
            uint8_t digest[32];
            char hex[65], rel[PATH_MAX];
            rc = sl_sha256_file(paths[k], digest, err);
            sl_sha256_hex(digest, hex);
            snprintf(rel, sizeof rel, "%s/%s", sl_role_name(sp->role), strrchr(paths[k], '/') + 1);
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "file", rel);
            cJSON_AddStringToObject(f, "sha256", hex);
            cJSON_AddItemToArray(files, f);
        }
    }
    char *text = rc == 0 ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (rc == 0 && !text) sl_fail(err, "out of memory");
    return text;
}

/* Loads one component (its blocks numbered from h.0) and writes it as our part. */
static int import_part(const seed_part *sp, const sl_seed_request *req, const char *part_name, const char *stem,
                       const char *source, sl_part_info *info, sl_err *err)
{
    sl_checkpoint *ck = sl_checkpoint_open_file(sp->pt, &sp->cfg, err);
    if (!ck) return -1;
    sl_params p;
    int rc = sl_params_load(&p, ck, 0, sp->last - sp->first, sp->role == SL_ROLE_BOTTOM, sp->role == SL_ROLE_TOP, false,
                            err);
    if (rc == 0) {
        /* The file's h.0 is the model's block sp->first: named so, the part holds HF's names. */
        p.first += sp->first;
        p.last += sp->first;
        size_t count = sl_params_count(&p);
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s", req->out_dir, sl_role_name(sp->role));
        if (count != sp->parameters)
            rc = sl_fail(err, "%s: %zu parameters but %s says %zu", sp->pt, count, sp->meta, sp->parameters);
        else
            rc = sl_part_write(&p, part_name, sp->role, req->dtype, dir, stem, source, NULL, info, err);
        sl_params_free(&p);
    }
    sl_checkpoint_destroy(&ck);
    return rc;
}

int sl_seed_import(const sl_seed_request *req, sl_part_info *parts, char *name, size_t name_size, sl_err *err)
{
    seed_split *split = calloc(1, sizeof *split);
    if (!split) return sl_fail(err, "out of memory");
    int rc = read_split(req->seed_dir, split, err);
    char splits[SL_MAX_SPLITS * 8] = "";
    for (int i = 1; rc == 0 && i < split->n; i++)
        snprintf(splits + strlen(splits), sizeof splits - strlen(splits), "%s%d", i > 1 ? "-" : "",
                 split->parts[i].first);
    if (rc == 0 && req->name)
        snprintf(name, name_size, "%s", req->name);
    else if (rc == 0)
        seed_name(split, splits, name, name_size);
    char *source = rc == 0 ? source_json(req->seed_dir, split, err) : NULL;
    if (rc == 0 && !source) rc = -1;
    for (int i = 0; rc == 0 && i < split->n; i++) {
        const seed_part *sp = &split->parts[i];
        char part_name[32], stem[1024];
        if (sp->role == SL_ROLE_TRUNK)
            snprintf(part_name, sizeof part_name, "trunk%d", i);
        else
            snprintf(part_name, sizeof part_name, "%s", sl_role_name(sp->role));
        snprintf(stem, sizeof stem, "%.200s_%s_%s", name, splits, part_name);
        rc = import_part(sp, req, part_name, stem, source, &parts[i], err);
    }
    if (rc == 0) rc = sl_split_write_index(req->out_dir, name, parts, split->n, source, err);
    int n = split->n;
    free(source);
    free(split);
    return rc == 0 ? n : -1;
}
