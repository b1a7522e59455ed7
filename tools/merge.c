/* merge.c — zmq-splitlearn-merge: joins the parts of a split (or a training checkpoint) back into
 * one HF GPT-2 model directory that zmq-splitlearn-run and HF transformers load. */
#include "cli.h"
#include "ckptstore.h"
#include "fileio.h"
#include "json.h"
#include "part.h"
#include "split.h"
#include "tokenizer.h"
#include "tool.h"

#include <cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-merge";

static const char usage[] =
    "usage: zmq-splitlearn-merge PARTS_DIR -o HF_DIR [--dtype f32|f16|bf16] [--force]\n"
    "\n"
    "PARTS_DIR is a split directory (zmq-splitlearn-split) or a checkpoint (zmq-splitlearn-train).\n"
    "Writes HF_DIR/config.json and model.safetensors with transformer.-prefixed names. A split model\n"
    "is untied (the bottom's wte and the top's lm_head were trained apart), so lm_head.weight is\n"
    "written and tie_word_embeddings is false. The parts' vocab, when they have one, is copied.\n"
    "Parts written in f16, bf16 or q8_0 (split --dtype) are widened and written in --dtype (default\n"
    "f32): f16 parts merged with --dtype f16 give their weights back exactly; q8_0 parts are written\n"
    "dequantised, their quantisation error kept (merge says so).\n"
    "HF_DIR must be new or empty, or --force replaces the model there. A checkpoint's trunk parts\n"
    "are written on their nodes' hosts: a missing one is named with its host and path.\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 written; 1 failure (a part missing or damaged, I/O); 2 usage error (options,\n"
    "a missing PARTS_DIR, an HF_DIR that holds a model)\n";

/* A checkpoint's trunk parts stay on their nodes' hosts: each one the trainer listed in
 * DIR/trunks.json (host and path, as zmq-splitlearn-train wrote it) must have been copied here. */
static int check_trunks_present(const char *dir, sl_err *err)
{
    char path[PATH_MAX + 16], here[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/trunks.json", dir);
    if (access(path, F_OK) != 0) return 0;
    cJSON *where = sl_json_read_file(path, 1 << 20, err), *trunk;
    int rc = where ? 0 : -1;
    cJSON_ArrayForEach(trunk, where)
    {
        const char *host = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(trunk, "host"));
        const char *file = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(trunk, "file"));
        if (rc != 0 || sl_part_checkpoint_file(dir, SL_ROLE_TRUNK, trunk->string, here, sizeof here, err) != 0) break;
        if (access(here, R_OK) != 0)
            rc = sl_fail(err,
                         "part %s: %s is missing: the node %s wrote it on its host, at %s:%s; copy it here with the "
                         "_metadata.json and _optim.safetensors beside it",
                         trunk->string, here, trunk->string, host ? host : "?", file ? file : "?");
    }
    cJSON_Delete(where);
    return rc;
}

/* Says what becomes of q8_0 parts: written dequantised, their quantisation error kept. (A split
 * that cannot be read says nothing here: the merge names the problem.) */
static void note_q8_0(const char *dir, sl_dtype dtype)
{
    sl_part_info *parts = calloc(SL_MAX_SPLITS + 1, sizeof *parts);
    sl_err err;
    int n = parts ? sl_split_read_index(dir, parts, SL_MAX_SPLITS + 1, &err) : -1;
    bool q8_0 = false;
    for (int i = 0; i < n; i++)
        q8_0 = q8_0 || strcmp(parts[i].dtype, "q8_0") == 0;
    if (q8_0)
        fprintf(stderr,
                "%s: the parts hold q8_0 weights: writing them dequantised to %s (the quantisation error stays)\n",
                prog, sl_dtype_lower(dtype));
    free(parts);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"output", 1, 0, 'o'}, {"dtype", 1, 0, 'd'}, {"force", 0, 0, 'f'}, SL_TOOL_OPTIONS, {0, 0, 0, 0}};
    const char *out = NULL;
    sl_dtype dtype = SL_F32;
    bool force = false;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "o:h", options, NULL)) != -1 && rc == 0) {
        if (c == 'o')
            out = optarg;
        else if (c == 'd')
            rc = sl_parse_float_dtype(optarg, "--dtype", &dtype, &err);
        else if (c == 'f')
            force = true;
        else
            return sl_tool_other_option(c, prog, usage);
    }
    if (rc == 0 && (argc - optind != 1 || !out)) rc = sl_fail(&err, "give PARTS_DIR and -o HF_DIR");
    char existing[PATH_MAX + 32];
    snprintf(existing, sizeof existing, "%s/config.json", out ? out : ".");
    if (rc == 0 && !force && access(existing, F_OK) == 0)
        rc = sl_fail(&err, "%s holds a model already: give --force to replace it, or another -o", out);
    if (rc == 0 && sl_check_output(out, true, &err) != 0) rc = -1;
    if (rc == 0 && access(argv[optind], F_OK) != 0) rc = sl_fail(&err, "%s does not exist", argv[optind]);
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    note_q8_0(argv[optind], dtype);
    if (check_trunks_present(argv[optind], &err) != 0 || sl_split_merge(argv[optind], out, dtype, &err) != 0 ||
        sl_tokenizer_copy_files(argv[optind], out, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("merged %s into %s\n", argv[optind], out);
    return SL_EXIT_OK;
}
