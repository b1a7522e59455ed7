/* seed_import.c — the seed's split parts (torch.save state dicts + metadata JSON) into our split
 * layout. */
#include "seed_import.h"

#include "fileio.h"
#include "json.h"
#include "sha256.h"

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

static int parse_metadata(const cJSON *root, seed_part *sp, sl_err *err)
{
    char component[16];
    if (sl_json_get_string(root, "component", component, sizeof component, sp->meta, err) != 0) return -1;
    if (strcmp(component, sl_role_name(sp->role)) != 0)
        return sl_fail(err, "%s: \"component\" is not \"%s\", the directory it is in", sp->meta,
                       sl_role_name(sp->role));
    const sl_json_num layer = {.min = 0, .max = 1 << 20, .integer = true};
    const sl_json_num count = {.min = 0, .max = SL_JSON_MAX_EXACT, .integer = true};
    double first = 0, last = 0, parameters = 0;
    if (sl_json_get_number(root, "start_layer", layer, &first, sp->meta, err) != 0 ||
        sl_json_get_number(root, "end_layer", layer, &last, sp->meta, err) != 0 ||
        sl_json_get_number(root, "num_parameters", count, &parameters, sp->meta, err) != 0)
        return -1;
    char origin[PATH_MAX + 16];
    snprintf(origin, sizeof origin, "%s: \"config\"", sp->meta);
    if (sl_config_from_json(cJSON_GetObjectItemCaseSensitive(root, "config"), origin, &sp->cfg, err) != 0) return -1;
    sp->first = (int)first;
    sp->last = (int)last;
    sp->parameters = (size_t)parameters;
    if (!(sp->first < sp->last && sp->last <= sp->cfg.n_layer))
        return sl_fail(err, "%s: layers [%d, %d) are not a range of the model's %d", sp->meta, sp->first, sp->last,
                       sp->cfg.n_layer);
    return 0;
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
    cJSON *root = sl_json_read_file(sp->meta, 16u << 20, err);
    int rc = root ? parse_metadata(root, sp, err) : -1;
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

/* {"file": <role>/<name>, "sha256"} of a seed file, or NULL with err. */
static cJSON *hashed_file(const char *path, sl_role role, sl_err *err)
{
    uint8_t digest[32];
    char hex[65], rel[PATH_MAX];
    if (sl_sha256_file(path, digest, err) != 0) return NULL;
    sl_sha256_hex(digest, hex);
    snprintf(rel, sizeof rel, "%s/%s", sl_role_name(role), sl_path_base(path));
    cJSON *f = cJSON_CreateObject();
    if (!f || !sl_json_add(f, "file", cJSON_CreateString(rel)) || !sl_json_add(f, "sha256", cJSON_CreateString(hex))) {
        cJSON_Delete(f);
        sl_fail(err, "out of memory");
        return NULL;
    }
    return f;
}

/* {"path", "dir", "format", "files": [{"file", "sha256"}, ...]}: the seed directory and its files.
 * Caller frees it with cJSON_Delete; NULL with err. */
static cJSON *source_of(const char *seed_dir, const seed_split *split, sl_err *err)
{
    char *abs = realpath(seed_dir, NULL);
    cJSON *root = cJSON_CreateObject(), *files = cJSON_CreateArray();
    bool ok = root && sl_json_add(root, "path", cJSON_CreateString(seed_dir)) &&
              sl_json_add(root, "dir", cJSON_CreateString(abs ? abs : seed_dir)) &&
              sl_json_add(root, "format", cJSON_CreateString("splitlearn_core split parts (torch.save)")) &&
              sl_json_add(root, "files", files);
    free(abs);
    if (!ok) sl_fail(err, "out of memory");
    for (int i = 0; ok && i < split->n; i++) {
        const seed_part *sp = &split->parts[i];
        cJSON *pt = hashed_file(sp->pt, sp->role, err), *meta = pt ? hashed_file(sp->meta, sp->role, err) : NULL;
        ok = pt && meta && cJSON_AddItemToArray(files, pt) && cJSON_AddItemToArray(files, meta);
        if (!ok && pt && meta) sl_fail(err, "out of memory");
        if (!ok) cJSON_Delete(pt), cJSON_Delete(meta);
    }
    if (ok) return root;
    cJSON_Delete(root);
    return NULL;
}

/* Loads one component (its blocks numbered from h.0) and writes it as our part. */
static int import_part(const seed_part *sp, const sl_seed_request *req, const char *part_name, const char *stem,
                       const cJSON *source, sl_part_info *info, sl_err *err)
{
    sl_hf_model *ck = sl_hf_model_open_file(sp->pt, &sp->cfg, err);
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
            rc = sl_part_write(&p, part_name, sp->role, req->format, dir, stem, source, NULL, info, err);
        sl_params_free(&p);
    }
    sl_hf_model_destroy(&ck);
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
    cJSON *source = rc == 0 ? source_of(req->seed_dir, split, err) : NULL;
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
    cJSON_Delete(source);
    free(split);
    return rc == 0 ? n : -1;
}
