/* split.c — zmq-splitlearn-split: cuts an HF GPT-2 checkpoint into bottom, trunk(s) and top
 * parts (one safetensors + metadata each) and optionally writes a local topology for them. */
#include "cli.h"
#include "fileio.h"
#include "hostdirs.h"
#include "part.h"
#include "split.h"
#include "tokenizer.h"
#include "tool.h"
#include "topology.h"

#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-split";

static const char usage[] =
    "usage: zmq-splitlearn-split MODEL_DIR --splits 2,10 -o OUT_DIR [--name NAME]\n"
    "                            [--dtype f32|f16|bf16|q8_0] [--topology FILE [--port 5701]] [--host-dirs "
    "TOPOLOGY.ini] [--config FILE]\n"
    "                            [--force]\n"
    "\n"
    "MODEL_DIR is an HF GPT-2 directory (config.json + model.safetensors or pytorch_model.bin, or\n"
    "shards of either), an HF hub cache entry (models--gpt2), a repo id found in the hub cache, or\n"
    "one checkpoint file (.safetensors, .pt, .bin) with config.json beside it or given with\n"
    "--config FILE. PyTorch files are read without running their code. --splits 2,10 gives bottom [0,2),\n"
    "trunk1 [2,10), top [10,L); every further point adds a trunk. Writes OUT_DIR/split.json and per\n"
    "part OUT_DIR/<role>/<name>_<splits>_<part>.safetensors + _metadata.json (SHA-256, config, layers).\n"
    "A tied model's top gets its own copy of wte as lm_head.weight.\n"
    "--dtype stores the matrices (wte, the blocks' four, lm_head) as f32 (default), f16, bf16 or q8_0\n"
    "(int8 in blocks of 32 with an f16 scale); wpe, LayerNorms and biases stay f32. Nodes compute on\n"
    "the stored format directly (docs/WEIGHTS.md); a trunk trained from such a part widens it to f32.\n"
    "--topology FILE also writes a local topology for these parts, endpoints tcp://127.0.0.1 from --port.\n"
    "--host-dirs TOPOLOGY.ini also lays the parts out one directory per host of that topology, ready to\n"
    "copy there: OUT_DIR/hosts/<host>/ holds the topology and, at its (relative) parts path, split.json,\n"
    "every part's metadata and only that host's part files (hard links when possible); with\n"
    "security = curve, at its (relative) certs path, every public certificate the topology names and\n"
    "the key pairs of that host's nodes only (those found in certs here).\n"
    "The model's vocab (vocab.json + merges.txt or tokenizer.json) is copied beside the parts.\n"
    "OUT_DIR must be new or empty: a split there (or a topology FILE that exists) is replaced only\n"
    "with --force, which first removes that split's files (and says so).\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 written; 1 could not read or write; 2 usage error (options, a missing MODEL_DIR,\n"
    "split points the model does not have, an output that exists)\n";

typedef struct progress {
    bool tty;
    struct timespec start;
} progress;

static void show_progress(void *ctx, size_t done, size_t total)
{
    progress *pr = ctx;
    if (!pr->tty || !total) return;
    int pct = (int)(100.0 * (double)done / (double)total);
    fprintf(stderr, "\rsplitting: %3d%%  %zu / %zu MB", pct, done >> 20, total >> 20);
    if (done >= total) fputc('\n', stderr);
}

/* Whether dir has no entries (a directory that does not exist has none). */
static bool is_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int entries = 0;
    while (d && (e = readdir(d)))
        entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return entries == 0;
}

/* Removes the files of the split in dir: each part, its metadata and optimizer state, the part
 * directories left empty, split.json. */
static void remove_split(const char *dir, const sl_part_info *parts, int n)
{
    static const char *const siblings[] = {"_metadata.json", "_optim.safetensors"};
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX + 32];
        unlink(parts[i].file);
        for (int k = 0; k < 2; k++) {
            sl_part_sibling(parts[i].file, siblings[k], path, sizeof path);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s", parts[i].file);
        if (strrchr(path, '/')) *strrchr(path, '/') = '\0', rmdir(path);
    }
    char index[PATH_MAX + 16];
    snprintf(index, sizeof index, "%s/split.json", dir);
    unlink(index);
}

/* OUT_DIR must be new or empty; with --force a split there is removed first (and named) and any
 * other content written over. Returns an exit status. */
static int prepare_output(const char *out, bool force, sl_err *err)
{
    if (sl_check_output(out, true, err) != 0) return SL_EXIT_USAGE;
    if (is_empty_dir(out)) return SL_EXIT_OK;
    sl_part_info old[SL_MAX_SPLITS + 1];
    sl_err ignored;
    int n = sl_split_read_index(out, old, SL_MAX_SPLITS + 1, &ignored);
    if (!force && n > 0)
        return sl_fail(err, "%s holds a split already (%d parts): give --force to replace it, or another -o", out, n),
               SL_EXIT_USAGE;
    if (!force)
        return sl_fail(err, "%s is not empty: give --force to write into it anyway, or another -o", out), SL_EXIT_USAGE;
    if (n > 0) {
        remove_split(out, old, n);
        printf("removed the split that was in %s (%d parts)\n", out, n);
    } else {
        printf("writing into %s, which is not empty and holds no split (--force)\n", out);
    }
    return SL_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"splits", 1, 0, 's'},
                                            {"output", 1, 0, 'o'},
                                            {"dtype", 1, 0, 'd'},
                                            {"name", 1, 0, 'n'},
                                            {"topology", 1, 0, 't'},
                                            {"port", 1, 0, 'p'},
                                            {"host-dirs", 1, 0, 'H'},
                                            {"config", 1, 0, 'c'},
                                            {"force", 0, 0, 'f'},
                                            SL_TOOL_OPTIONS,
                                            {0, 0, 0, 0}};
    int32_t splits[SL_MAX_SPLITS];
    int n_splits = 0;
    long port = 5701;
    const char *out = NULL, *topology = NULL, *name = NULL, *host_dirs = NULL, *config = NULL;
    sl_wformat format = SL_WF_F32;
    bool force = false;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "o:h", options, NULL)) != -1 && rc == 0) {
        switch (c) {
        case 's':
            rc = (n_splits = sl_parse_int_list(optarg, "--splits", splits, SL_MAX_SPLITS, &err)) < 0 ? -1 : 0;
            break;
        case 'o':
            out = optarg;
            break;
        case 'd':
            rc = sl_parse_wformat(optarg, "--dtype", &format, &err);
            break;
        case 'n':
            name = optarg;
            break;
        case 't':
            topology = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'p':
            rc = sl_parse_long(optarg, "--port", 1, 65535, &port, &err);
            break;
        case 'f':
            force = true;
            break;
        case 'H':
            host_dirs = optarg;
            break;
        default:
            return sl_tool_other_option(c, prog, usage);
        }
    }
    if (rc == 0 && optind != argc - 1) rc = sl_fail(&err, "give exactly one MODEL_DIR");
    if (rc == 0 && !n_splits) rc = sl_fail(&err, "--splits is required");
    if (rc == 0 && !out) rc = sl_fail(&err, "-o OUT_DIR is required");
    if (rc == 0 && port + n_splits > 65535)
        rc = sl_fail(&err, "--port %ld: the %d parts need ports up to %ld, over 65535", port, n_splits + 1,
                     port + n_splits);
    if (rc == 0 && topology && !force && access(topology, F_OK) == 0)
        rc = sl_fail(&err, "--topology %s exists: give --force to replace it, or another FILE", topology);
    if (rc == 0 && topology && sl_check_output(topology, false, &err) != 0) sl_err_prefix(&err, "--topology"), rc = -1;
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    static sl_topology hosts_topo;
    if (host_dirs && (sl_topology_load(host_dirs, &hosts_topo, false, &err) != 0 ||
                      sl_hostdirs_check(out, &hosts_topo, &err) != 0)) {
        sl_err_prefix(&err, "--host-dirs");
        return sl_tool_usage_error(prog, err.msg);
    }
    const char *model = argv[optind];
    sl_hf_model *ck = sl_hf_model_open_with_config(model, config, &err);
    if (!ck) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return access(model, F_OK) != 0 ? SL_EXIT_USAGE : SL_EXIT_FAILURE;
    }
    char default_name[256];
    if (!name) {
        /* The model directory's name, the repo's for a hub cache entry, a checkpoint file's stem. */
        char trimmed[PATH_MAX];
        snprintf(trimmed, sizeof trimmed, "%s", model);
        for (size_t n = strlen(trimmed); n > 1 && trimmed[n - 1] == '/'; n--) /* "tiny-b/" is tiny-b */
            trimmed[n - 1] = '\0';
        const char *base = sl_path_base(trimmed);
        snprintf(default_name, sizeof default_name, "%s", strncmp(base, "models--", 8) == 0 ? base + 8 : base);
        char *ext = strrchr(default_name, '.'); /* a checkpoint file: its stem */
        if (ext && ext != default_name &&
            (strcmp(ext, ".pt") == 0 || strcmp(ext, ".bin") == 0 || strcmp(ext, ".safetensors") == 0))
            *ext = '\0';
        name = default_name;
    }
    int splits_int[SL_MAX_SPLITS];
    for (int i = 0; i < n_splits; i++)
        splits_int[i] = splits[i];
    progress pr = {.tty = isatty(STDERR_FILENO)};
    sl_split_request req = {.model_path = model,
                            .name = name,
                            .splits = splits_int,
                            .n_splits = n_splits,
                            .format = format,
                            .out_dir = out,
                            .progress = show_progress,
                            .progress_ctx = &pr};
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int status =
        sl_split_check(sl_hf_model_config(ck), &req, &err) != 0 ? SL_EXIT_USAGE : prepare_output(out, force, &err);
    if (status != SL_EXIT_OK) {
        sl_hf_model_destroy(&ck);
        return sl_tool_usage_error(prog, err.msg);
    }
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    rc = sl_split_write(ck, &req, parts, &err);
    if (rc == 0) rc = sl_tokenizer_copy_files(sl_hf_model_dir(ck), out, &err);
    if (rc == 0 && topology)
        rc = sl_topology_write_local(topology, parts, n_splits + 1, name, out, (int)port, prog, &err);
    if (rc == 0 && host_dirs) rc = sl_hostdirs_write(out, host_dirs, &hosts_topo, parts, n_splits + 1, &err);
    sl_hf_model_destroy(&ck);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return SL_EXIT_FAILURE;
    }
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    for (int i = 0; i <= n_splits; i++)
        printf("%-8s layers [%d,%d)  %10zu parameters  %s\n", parts[i].name, parts[i].first, parts[i].last,
               parts[i].parameters, parts[i].file);
    printf("split %s into %d parts in %.2f s%s%s\n", model, n_splits + 1,
           (double)(end.tv_sec - pr.start.tv_sec) + 1e-9 * (double)(end.tv_nsec - pr.start.tv_nsec),
           topology ? "; topology: " : "", topology ? topology : "");
    for (int i = 0; host_dirs && i < hosts_topo.n_nodes; i++)
        printf("host %-10s node %-8s %s/hosts/%s/%s\n", hosts_topo.nodes[i].host, hosts_topo.nodes[i].name, out,
               hosts_topo.nodes[i].host, hosts_topo.parts_given);
    return SL_EXIT_OK;
}
