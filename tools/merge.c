/* merge.c — zmq-splitlearn-merge: joins the parts of a split (or a training checkpoint) back into
 * one HF GPT-2 model directory that zmq-splitlearn-run and HF transformers load. */
#include "cli.h"
#include "fileio.h"
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
    "HF_DIR must be new or empty, or --force replaces the model there. A checkpoint's trunk parts\n"
    "are written on their nodes' hosts: a missing one is named with its host and path.\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 written; 1 failure (a part missing or damaged, I/O); 2 usage error (options,\n"
    "a missing PARTS_DIR, an HF_DIR that holds a model)\n";

/* Where the trainer said a checkpoint's trunk wrote its part (DIR/trunks.json, written by
 * zmq-splitlearn-train): "HOST:PATH", or "" when it did not say. */
static void trunk_location(const char *dir, const char *name, char *out, size_t size)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/trunks.json", dir);
    char *text = sl_read_text_file(path, 1 << 20, NULL);
    cJSON *root = text ? cJSON_Parse(text) : NULL, *where = cJSON_GetObjectItemCaseSensitive(root, name);
    const char *host = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(where, "host"));
    const char *file = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(where, "file"));
    snprintf(out, size, "%s%s%s", host && file ? host : "", host && file ? ":" : "", host && file ? file : "");
    cJSON_Delete(root);
    free(text);
}

/* Every part's file is here: a missing one (a trunk's, saved on its host) is named with where it
 * was written. */
static int check_parts_present(const char *dir, sl_err *err)
{
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int n = sl_split_read_index(dir, parts, SL_MAX_SPLITS + 1, err);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) {
        if (access(parts[i].file, R_OK) == 0) continue;
        char where[PATH_MAX + 160];
        trunk_location(dir, parts[i].name, where, sizeof where);
        if (parts[i].role != SL_ROLE_TRUNK || !where[0])
            return sl_fail(err, "part %s: %s is missing", parts[i].name, parts[i].file);
        return sl_fail(err,
                       "part %s: %s is missing: the node %s wrote it on its host, at %s; copy that file (and "
                       "the _metadata.json and _optim.safetensors beside it) to %s",
                       parts[i].name, parts[i].file, parts[i].name, where, parts[i].file);
    }
    return 0;
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
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else if (c == 'V')
            return sl_tool_version(prog);
        else
            return sl_tool_usage_error(prog, NULL);
    }
    if (rc == 0 && (argc - optind != 1 || !out)) rc = sl_fail(&err, "give PARTS_DIR and -o HF_DIR");
    char existing[PATH_MAX + 32];
    snprintf(existing, sizeof existing, "%s/config.json", out ? out : ".");
    if (rc == 0 && !force && access(existing, F_OK) == 0)
        rc = sl_fail(&err, "%s holds a model already: give --force to replace it, or another -o", out);
    if (rc == 0 && sl_check_output(out, true, &err) != 0) rc = -1;
    if (rc == 0 && access(argv[optind], F_OK) != 0) rc = sl_fail(&err, "%s does not exist", argv[optind]);
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    if (check_parts_present(argv[optind], &err) != 0 || sl_split_merge(argv[optind], out, dtype, &err) != 0 ||
        sl_tokenizer_copy_files(argv[optind], out, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("merged %s into %s\n", argv[optind], out);
    return SL_EXIT_OK;
}
