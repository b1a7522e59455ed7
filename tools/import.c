/* import.c — zmq-splitlearn-import: split parts written by the seed's tool (splitlearn_core's
 * save_split_model: torch.save files + metadata JSON) into our split layout, ready for nodes, and
 * optionally a local topology for them. */
#include "cli.h"
#include "tool.h"
#include "seed_import.h"
#include "topology.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-import SEED_DIR -o OUT_DIR [--name NAME] [--dtype f32|f16|bf16|q8_0]\n"
    "                             [--topology FILE [--port 5701]]\n"
    "\n"
    "SEED_DIR holds the split parts the seed's tool writes (splitlearn_core's save_split_model):\n"
    "bottom/, trunk/ and top/, each with <stem>.pt (torch.save of the part's state dict, its blocks\n"
    "numbered from h.0) and <stem>_metadata.json (start_layer, end_layer, config). The .pt files are\n"
    "read without running any of their code. Writes, as zmq-splitlearn-split does, OUT_DIR/split.json\n"
    "and per part OUT_DIR/<role>/<name>_<splits>_<part>.safetensors + _metadata.json (SHA-256,\n"
    "config, layers, and the seed's files with their SHA-256 as the source).\n"
    "--name NAME is the model name in file names (default: the seed's); --dtype the stored format of the\n"
    "matrices, as for zmq-splitlearn-split.\n"
    "--topology FILE also writes a local topology for these parts, endpoints tcp://127.0.0.1 from --port.\n"
    "\n"
    "exit status: 0 written, 1 could not read or write, 2 usage error\n";

int main(int argc, char **argv)
{
    static const struct option options[] = {{"output", 1, 0, 'o'}, {"name", 1, 0, 'n'},     {"dtype", 1, 0, 'd'},
                                            {"port", 1, 0, 'p'},   {"topology", 1, 0, 't'}, SL_TOOL_OPTIONS,
                                            {0, 0, 0, 0}};
    sl_seed_request req = {.format = SL_WF_F32};
    const char *topology = NULL;
    long port = 5701;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "o:h", options, NULL)) != -1 && rc == 0) {
        switch (c) {
        case 'o':
            req.out_dir = optarg;
            break;
        case 'n':
            req.name = optarg;
            break;
        case 'd':
            rc = sl_parse_wformat(optarg, "--dtype", &req.format, &err);
            break;
        case 't':
            topology = optarg;
            break;
        case 'p':
            rc = sl_parse_long(optarg, "--port", 1, 65000, &port, &err);
            break;
        default:
            return sl_tool_other_option(c, "zmq-splitlearn-import", usage);
        }
    }
    if (rc == 0 && optind != argc - 1) rc = sl_fail(&err, "give exactly one SEED_DIR");
    if (rc == 0 && !req.out_dir) rc = sl_fail(&err, "-o OUT_DIR is required");
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-import: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    req.seed_dir = argv[optind];
    sl_part_info *parts = calloc(SL_MAX_SPLITS + 1, sizeof *parts);
    char name[256];
    int n = parts ? sl_seed_import(&req, parts, name, sizeof name, &err) : sl_fail(&err, "out of memory");
    if (n > 0 && topology)
        n = sl_topology_write_local(topology, parts, n, name, req.out_dir, (int)port, "zmq-splitlearn-import", &err)
                ? -1
                : n;
    if (n < 0) {
        fprintf(stderr, "zmq-splitlearn-import: %s\n", err.msg);
        free(parts);
        return SL_EXIT_FAILURE;
    }
    for (int i = 0; i < n; i++)
        printf("%-8s layers [%d,%d)  %10zu parameters  %s\n", parts[i].name, parts[i].first, parts[i].last,
               parts[i].parameters, parts[i].file);
    printf("imported %s as %d parts into %s%s%s\n", req.seed_dir, n, req.out_dir, topology ? "; topology: " : "",
           topology ? topology : "");
    free(parts);
    return SL_EXIT_OK;
}
