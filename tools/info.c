/* info.c — zmq-splitlearn-info: describes what a path holds — an HF model (directory, hub cache
 * entry or repo id), a split or a training checkpoint (a directory with split.json), one part
 * (its safetensors file or metadata JSON), or a bare safetensors file: shapes, layers, dtype,
 * parameters, bytes, SHA-256 (recomputed and compared with --verify), step and loss. */
#include "hf_model.h"
#include "cli.h"
#include "config.h"
#include "fileio.h"
#include "json.h"
#include "part.h"
#include "safetensors.h"
#include "sha256.h"
#include "split.h"
#include "tool.h"

#include <cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-info";

static const char usage[] =
    "usage: zmq-splitlearn-info PATH [--verify] [--json]\n"
    "\n"
    "Describes PATH: an HF GPT-2 model (directory, hub cache entry or repo id), a split or a training\n"
    "checkpoint (a directory with split.json), one part (its .safetensors or _metadata.json), or a\n"
    "bare safetensors file. Prints the model's shape, each part's layers, dtype, parameters, bytes\n"
    "and SHA-256, a checkpoint's step and loss, and each file's tensors with their shapes (the\n"
    "blocks' tensors once, as h.*).\n"
    "  --verify   recompute every file's SHA-256 and compare it with the recorded one (a part's\n"
    "             metadata; a hub cache blob's name); a plain model's files get theirs printed\n"
    "  --json     one JSON object instead of text (what scripts read, e.g. config.n_layer)\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 described (and verified); 1 a file unreadable or a SHA-256 that does not match;\n"
    "2 usage error (options, PATH missing or of no known kind)\n";

/* ---- tensors ---- */

/* name without "transformer." and with a block number as "*": "h.*.attn.c_attn.weight". */
static void shape_key(const char *name, char *out, size_t size)
{
    if (!strncmp(name, "transformer.", 12)) name += 12;
    const char *digits = !strncmp(name, "h.", 2) ? name + 2 : NULL;
    size_t n = digits ? strspn(digits, "0123456789") : 0;
    if (n && digits[n] == '.')
        snprintf(out, size, "h.*%s", digits + n);
    else
        snprintf(out, size, "%s", name);
}

/* Adds a file's tensors to list (by shape_key: the blocks' once, with their count) and their
 * parameters to *parameters. */
static void add_tensors(const sl_st_file *f, cJSON *list, double *parameters)
{
    for (size_t i = 0; i < sl_st_count(f); i++) {
        const sl_tensor *t = sl_st_at(f, i);
        char key[256];
        shape_key(t->name, key, sizeof key);
        *parameters += (double)t->numel;
        cJSON *item, *seen = NULL;
        cJSON_ArrayForEach(item, list)
        {
            if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(item, "name")), key)) seen = item;
        }
        if (seen) {
            cJSON_SetNumberValue(cJSON_GetObjectItem(seen, "count"),
                                 cJSON_GetObjectItem(seen, "count")->valuedouble + 1);
            continue;
        }
        int shape[SL_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            shape[d] = (int)t->shape[d];
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddStringToObject(entry, "name", key);
        cJSON_AddStringToObject(entry, "dtype", sl_dtype_name(t->dtype));
        cJSON_AddItemToObject(entry, "shape", cJSON_CreateIntArray(shape, t->ndim));
        cJSON_AddNumberToObject(entry, "count", 1);
        cJSON_AddItemToArray(list, entry);
    }
}

/* ---- files ---- */

/* The SHA-256 a hub cache records for path: the name of the blob its snapshot links to. */
static bool hub_blob_sha256(const char *path, char out[65])
{
    char target[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = '\0';
    const char *base = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
    if (strlen(base) != 64 || strspn(base, "0123456789abcdef") != 64) return false;
    memcpy(out, base, 65);
    return true;
}

/* With --verify: hashes path into entry ("sha256"), compares it with recorded (when not NULL or
 * empty: "verified" true or false); returns -1 on a mismatch or a read error. */
static int verify_file(const char *path, const char *recorded, cJSON *entry, sl_err *err)
{
    uint8_t digest[32];
    char hex[SL_SHA256_HEX_LEN + 1];
    if (sl_sha256_file(path, digest, err) != 0) return -1;
    sl_sha256_hex(digest, hex);
    cJSON_DeleteItemFromObject(entry, "sha256");
    cJSON_AddStringToObject(entry, "sha256", hex);
    if (!recorded || !recorded[0]) return 0;
    bool same = strcmp(hex, recorded) == 0;
    cJSON_AddBoolToObject(entry, "verified", same);
    return same ? 0 : sl_fail(err, "%s: SHA-256 %s, but %s was recorded", path, hex, recorded);
}

/* One safetensors file: its bytes, tensors and (with verify) SHA-256. */
static int describe_file(const char *path, const char *recorded, bool verify, cJSON *files, double *parameters,
                         sl_err *err)
{
    sl_st_file *f = sl_st_open(path, err);
    if (!f) return -1;
    struct stat st;
    cJSON *entry = cJSON_CreateObject();
    cJSON_AddItemToArray(files, entry);
    cJSON_AddStringToObject(entry, "file", path);
    cJSON_AddNumberToObject(entry, "bytes", stat(path, &st) == 0 ? (double)st.st_size : 0);
    if (recorded && recorded[0]) cJSON_AddStringToObject(entry, "sha256", recorded);
    add_tensors(f, cJSON_AddArrayToObject(entry, "tensors"), parameters);
    sl_st_close(&f);
    return verify ? verify_file(path, recorded, entry, err) : 0;
}

/* The model's config.json, as HF writes it. */
static void add_config(cJSON *root, const sl_config *cfg)
{
    cJSON_AddItemToObject(root, "config", sl_config_to_json(cfg));
}

/* ---- what a path holds ---- */

/* Parts (a split, a checkpoint or one part): each with its metadata, file and tensors. */
static int describe_parts(const sl_part_info *parts, int n, bool one_part, bool verify, cJSON *root, sl_err *err)
{
    cJSON_AddStringToObject(root, "kind", one_part ? "part" : parts[0].step >= 0 ? "checkpoint" : "split");
    add_config(root, &parts[0].cfg);
    cJSON *list = cJSON_AddArrayToObject(root, "parts");
    double parameters = 0, bytes = 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const sl_part_info *p = &parts[i];
        cJSON *part = cJSON_CreateObject();
        cJSON_AddItemToArray(list, part);
        cJSON_AddStringToObject(part, "name", p->name);
        cJSON_AddStringToObject(part, "role", sl_role_name(p->role));
        cJSON_AddItemToObject(part, "layers", cJSON_CreateIntArray((const int[]){p->first, p->last}, 2));
        cJSON_AddStringToObject(part, "dtype", p->dtype);
        cJSON_AddNumberToObject(part, "parameters", (double)p->parameters);
        if (p->step >= 0) cJSON_AddNumberToObject(part, "step", (double)p->step);
        if (p->step >= 0) cJSON_AddNumberToObject(part, "loss", p->loss);
        parameters += (double)p->parameters;
        bytes += (double)p->bytes;
        cJSON *files = cJSON_AddArrayToObject(part, "files");
        double counted = 0;
        if (p->step == -2 || access(p->file, R_OK) != 0) {
            cJSON_AddStringToObject(part, "missing", p->file); /* a trunk's save stays on its host */
            if (verify && rc == 0) rc = sl_fail(err, "part %s: %s is missing", p->name, p->file);
        } else if (describe_file(p->file, p->sha256, verify, files, &counted, err) != 0 && rc == 0) {
            rc = -1;
        }
    }
    cJSON_AddNumberToObject(root, "parameters", parameters);
    cJSON_AddNumberToObject(root, "bytes", bytes);
    if (parts[0].step >= 0) cJSON_AddNumberToObject(root, "step", (double)parts[0].step);
    if (parts[0].step >= 0) cJSON_AddNumberToObject(root, "loss", parts[0].loss);
    return rc;
}

/* An HF model: its config and every safetensors file (a hub blob's SHA-256 is its name). */
static int describe_model(const char *path, bool verify, cJSON *root, sl_err *err)
{
    sl_hf_model *ck = sl_hf_model_open(path, err);
    if (!ck) return -1;
    cJSON_AddStringToObject(root, "kind", "model");
    cJSON_AddStringToObject(root, "dir", sl_hf_model_dir(ck));
    add_config(root, sl_hf_model_config(ck));
    cJSON *files = cJSON_AddArrayToObject(root, "files"), *f;
    double parameters = 0, bytes = 0;
    int rc = 0;
    for (size_t i = 0; i < sl_hf_model_file_count(ck) && rc == 0; i++) {
        char blob[65] = "";
        const char *file = sl_hf_model_file_path(ck, i);
        hub_blob_sha256(file, blob);
        rc = describe_file(file, blob, verify, files, &parameters, err);
    }
    cJSON_ArrayForEach(f, files) bytes += cJSON_GetObjectItem(f, "bytes")->valuedouble;
    cJSON_AddNumberToObject(root, "parameters", parameters);
    cJSON_AddNumberToObject(root, "bytes", bytes);
    sl_hf_model_destroy(&ck);
    return rc;
}

/* The metadata JSON of a part given as its safetensors file or its metadata ("" if neither). */
static void part_metadata(const char *path, char *out, size_t size)
{
    size_t len = strlen(path);
    out[0] = '\0';
    if (len > 14 && !strcmp(path + len - 14, "_metadata.json"))
        snprintf(out, size, "%s", path);
    else
        sl_part_sibling(path, "_metadata.json", out, size);
    if (access(out, R_OK) != 0) out[0] = '\0';
}

/* The parts split.json lists, each with its metadata; a part whose metadata is not here (a
 * checkpoint's trunk, saved on its host) keeps the index's name, role and layers, with step -2 and
 * its file named. Returns the count, or -1. */
static int read_index(const char *dir, sl_part_info *parts, sl_err *err)
{
    char path[PATH_MAX + 16], meta[2 * PATH_MAX];
    snprintf(path, sizeof path, "%s/split.json", dir);
    cJSON *root = sl_json_read_file(path, 16 << 20, err), *item;
    int n = root ? 0 : -1;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(root, "parts"))
    {
        const char *rel = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "metadata"));
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(item, "layers");
        if (n < 0 || n > SL_MAX_SPLITS || !rel || sl_path_join(meta, sizeof meta, dir, rel) != 0) {
            n = n < 0 ? n : sl_fail(err, "%s: part %d has no usable \"metadata\"", path, n + 1);
            break;
        }
        sl_part_info *p = &parts[n++];
        if (access(meta, F_OK) == 0) {
            if (sl_part_read_metadata(meta, p, err) != 0) n = -1;
            continue;
        }
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(item, "name"));
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItem(item, "role"));
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", name ? name : "?");
        sl_role_parse(role ? role : "", &p->role);
        p->first = cJSON_GetArrayItem(layers, 0) ? cJSON_GetArrayItem(layers, 0)->valueint : 0;
        p->last = cJSON_GetArrayItem(layers, 1) ? cJSON_GetArrayItem(layers, 1)->valueint : 0;
        p->step = -2; /* metadata missing */
        if (snprintf(p->file, sizeof p->file, "%s", meta) >= (int)sizeof p->file) p->file[0] = '\0';
    }
    cJSON_Delete(root);
    if (n > 0 && parts[0].step == -2) n = sl_fail(err, "%s: the first part's metadata is missing", path);
    return n;
}

/* Fills root with what path holds; returns an exit status. */
static int describe(const char *path, bool verify, cJSON *root, sl_err *err)
{
    struct stat st;
    char meta[PATH_MAX + 32], index[PATH_MAX + 16];
    sl_part_info parts[SL_MAX_SPLITS + 1];
    cJSON_AddStringToObject(root, "path", path);
    snprintf(index, sizeof index, "%s/split.json", path);
    if (access(index, F_OK) == 0) {
        int n = read_index(path, parts, err);
        return n < 1 || describe_parts(parts, n, false, verify, root, err) != 0 ? SL_EXIT_FAILURE : SL_EXIT_OK;
    }
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        part_metadata(path, meta, sizeof meta);
        if (meta[0]) {
            if (sl_part_read_metadata(meta, &parts[0], err) != 0) return SL_EXIT_FAILURE;
            return describe_parts(parts, 1, true, verify, root, err) != 0 ? SL_EXIT_FAILURE : SL_EXIT_OK;
        }
        double parameters = 0;
        cJSON_AddStringToObject(root, "kind", "safetensors");
        int rc = describe_file(path, NULL, verify, cJSON_AddArrayToObject(root, "files"), &parameters, err);
        cJSON_AddNumberToObject(root, "parameters", parameters);
        cJSON_AddNumberToObject(root, "bytes", (double)st.st_size);
        return rc != 0 ? SL_EXIT_FAILURE : SL_EXIT_OK;
    }
    if (describe_model(path, verify, root, err) == 0) return SL_EXIT_OK;
    return access(path, F_OK) != 0 || !cJSON_GetObjectItem(root, "kind") ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
}

/* ---- text ---- */

static double number(const cJSON *obj, const char *name) { return cJSON_GetObjectItem(obj, name)->valuedouble; }

static void print_tensors(const cJSON *files)
{
    const cJSON *file, *t, *d;
    cJSON_ArrayForEach(file, files)
    {
        const cJSON *sha = cJSON_GetObjectItem(file, "sha256"), *ok = cJSON_GetObjectItem(file, "verified");
        printf("  %s  %.0f bytes%s%s%s\n", cJSON_GetStringValue(cJSON_GetObjectItem(file, "file")),
               number(file, "bytes"), sha ? "  sha256 " : "", sha ? sha->valuestring : "",
               !ok                ? ""
               : cJSON_IsTrue(ok) ? " (verified)"
                                  : " (DOES NOT MATCH)");
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(file, "tensors"))
        {
            printf("    %-35s %-4s [", cJSON_GetStringValue(cJSON_GetObjectItem(t, "name")),
                   cJSON_GetStringValue(cJSON_GetObjectItem(t, "dtype")));
            int k = 0;
            cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "shape")) printf("%s%d", k++ ? ", " : "", d->valueint);
            int count = (int)number(t, "count");
            printf("]%s", count > 1 ? "" : "\n");
            if (count > 1) printf(" x %d blocks\n", count);
        }
    }
}

static void print_text(const cJSON *root)
{
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(root, "kind"));
    const cJSON *cfg = cJSON_GetObjectItem(root, "config"), *parts = cJSON_GetObjectItem(root, "parts"), *p;
    printf("%s: %s", cJSON_GetStringValue(cJSON_GetObjectItem(root, "path")), kind);
    if (parts && strcmp(kind, "part") != 0) printf(" of %d parts", cJSON_GetArraySize(parts));
    if (cJSON_GetObjectItem(root, "step")) printf(", step %.0f, loss %.6f", number(root, "step"), number(root, "loss"));
    printf("\n");
    if (cfg)
        printf("model: %.0f layers, %.0f wide, %.0f heads, n_inner %.0f, vocab %.0f, %.0f positions%s\n",
               number(cfg, "n_layer"), number(cfg, "n_embd"), number(cfg, "n_head"), number(cfg, "n_inner"),
               number(cfg, "vocab_size"), number(cfg, "n_positions"),
               cJSON_IsTrue(cJSON_GetObjectItem(cfg, "tie_word_embeddings")) ? ", tied head" : "");
    printf("%.0f parameters, %.0f bytes\n", number(root, "parameters"), number(root, "bytes"));
    cJSON_ArrayForEach(p, parts)
    {
        const cJSON *layers = cJSON_GetObjectItem(p, "layers"), *missing = cJSON_GetObjectItem(p, "missing");
        const char *dtype = cJSON_GetStringValue(cJSON_GetObjectItem(p, "dtype"));
        printf("part %s: %s, layers [%d,%d)", cJSON_GetStringValue(cJSON_GetObjectItem(p, "name")),
               cJSON_GetStringValue(cJSON_GetObjectItem(p, "role")), cJSON_GetArrayItem(layers, 0)->valueint,
               cJSON_GetArrayItem(layers, 1)->valueint);
        if (dtype[0]) printf(", %s, %.0f parameters", dtype, number(p, "parameters"));
        if (cJSON_GetObjectItem(p, "step")) printf(", step %.0f, loss %.6f", number(p, "step"), number(p, "loss"));
        printf("\n");
        if (missing) printf("  %s is missing (a trunk's save stays on its host)\n", missing->valuestring);
        print_tensors(cJSON_GetObjectItem(p, "files"));
    }
    print_tensors(cJSON_GetObjectItem(root, "files"));
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"verify", 0, 0, 'v'}, {"json", 0, 0, 'j'}, SL_TOOL_OPTIONS, {0, 0, 0, 0}};
    bool verify = false, json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'v')
            verify = true;
        else if (c == 'j')
            json = true;
        else
            return sl_tool_other_option(c, prog, usage);
    }
    if (argc - optind != 1) return sl_tool_usage_error(prog, "give one PATH");
    sl_err err;
    cJSON *root = cJSON_CreateObject();
    int status = describe(argv[optind], verify, root, &err);
    if (cJSON_GetObjectItem(root, "parameters")) {
        char *text = json ? cJSON_Print(root) : NULL;
        if (text) puts(text);
        if (!json) print_text(root);
        free(text);
    }
    if (status != SL_EXIT_OK) fprintf(stderr, "%s: %s\n", prog, err.msg);
    cJSON_Delete(root);
    return status;
}
