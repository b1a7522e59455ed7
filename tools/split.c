/* split.c — zmq-splitlearn-split: cuts an HF GPT-2 checkpoint into bottom, trunk(s) and top
 * parts (one safetensors + metadata each) and optionally writes a local topology for them. */
#include "cli.h"
#include "fileio.h"
#include "hostdirs.h"
#include "split.h"
#include "topology.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: zmq-splitlearn-split MODEL_DIR --splits 2,10 -o OUT_DIR [--dtype f32|f16|bf16] [--name NAME]\n"
    "                            [--topology FILE [--port 5701]] [--host-dirs TOPOLOGY.ini] [--config FILE]\n"
    "\n"
    "MODEL_DIR is an HF GPT-2 directory (config.json + model.safetensors or pytorch_model.bin, or\n"
    "shards of either), an HF hub cache entry (models--gpt2), a repo id found in the hub cache, or\n"
    "one checkpoint file (.safetensors, .pt, .bin) with config.json beside it or given with\n"
    "--config FILE. PyTorch files are read without running their code. --splits 2,10 gives bottom [0,2),\n"
    "trunk1 [2,10), top [10,L); every further point adds a trunk. Writes OUT_DIR/split.json and per\n"
    "part OUT_DIR/<role>/<name>_<splits>_<part>.safetensors + _metadata.json (SHA-256, config, layers).\n"
    "A tied model's top gets its own copy of wte as lm_head.weight.\n"
    "--topology FILE also writes a local topology for these parts, endpoints tcp://127.0.0.1 from --port.\n"
    "--host-dirs TOPOLOGY.ini also lays the parts out one directory per host of that topology, ready to\n"
    "copy there: OUT_DIR/hosts/<host>/ holds the topology and, at its (relative) parts path, split.json,\n"
    "every part's metadata and only that host's part files (hard links when possible).\n"
    "\n"
    "exit status: 0 written, 1 could not read or write, 2 usage error\n";

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

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"splits", 1, 0, 's'},   {"output", 1, 0, 'o'}, {"dtype", 1, 0, 'd'},     {"name", 1, 0, 'n'},
        {"topology", 1, 0, 't'}, {"port", 1, 0, 'p'},   {"host-dirs", 1, 0, 'H'}, {"config", 1, 0, 'c'},
        {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    int32_t splits[SL_MAX_SPLITS];
    int n_splits = 0;
    long port = 5701;
    const char *out = NULL, *topology = NULL, *name = NULL, *host_dirs = NULL, *config = NULL;
    sl_dtype dtype = SL_F32;
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
            rc = sl_parse_float_dtype(optarg, "--dtype", &dtype, &err);
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
            rc = sl_parse_long(optarg, "--port", 1, 65000, &port, &err);
            break;
        case 'H':
            host_dirs = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return SL_EXIT_OK;
        default:
            fputs(usage, stderr);
            return SL_EXIT_USAGE;
        }
    }
    if (rc == 0 && optind != argc - 1) rc = sl_fail(&err, "give exactly one MODEL_DIR");
    if (rc == 0 && !n_splits) rc = sl_fail(&err, "--splits is required");
    if (rc == 0 && !out) rc = sl_fail(&err, "-o OUT_DIR is required");
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-split: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    static sl_topology hosts_topo;
    if (host_dirs && (sl_topology_load(host_dirs, &hosts_topo, false, &err) != 0 ||
                      sl_hostdirs_check(out, &hosts_topo, &err) != 0)) {
        fprintf(stderr, "zmq-splitlearn-split: --host-dirs: %s\n", err.msg);
        return SL_EXIT_USAGE;
    }
    const char *model = argv[optind];
    sl_checkpoint *ck = sl_checkpoint_open_with_config(model, config, &err);
    if (!ck) {
        fprintf(stderr, "zmq-splitlearn-split: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    char default_name[256];
    if (!name) {
        /* The model directory's name, the repo's for a hub cache entry, a checkpoint file's stem. */
        const char *base = strrchr(model, '/') && strrchr(model, '/')[1] ? strrchr(model, '/') + 1 : model;
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
    clock_gettime(CLOCK_MONOTONIC, &pr.start);
    sl_split_request req = {.model_path = model,
                            .name = name,
                            .splits = splits_int,
                            .n_splits = n_splits,
                            .dtype = dtype,
                            .out_dir = out,
                            .progress = show_progress,
                            .progress_ctx = &pr};
    sl_part_info parts[SL_MAX_SPLITS + 1];
    rc = sl_split_write(ck, &req, parts, &err);
    if (rc == 0 && topology)
        rc = sl_topology_write_local(topology, parts, n_splits + 1, name, out, (int)port, "zmq-splitlearn-split", &err);
    if (rc == 0 && host_dirs) rc = sl_hostdirs_write(out, host_dirs, &hosts_topo, parts, n_splits + 1, &err);
    sl_checkpoint_destroy(&ck);
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-split: %s\n", err.msg);
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
