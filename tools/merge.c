/* merge.c — zmq-splitlearn-merge: joins the parts of a split (or a training checkpoint) back into
 * one HF GPT-2 model directory that zmq-splitlearn-run and HF transformers load. */
#include "cli.h"
#include "split.h"

#include <getopt.h>
#include <stdio.h>

static const char usage[] =
    "usage: zmq-splitlearn-merge PARTS_DIR -o HF_DIR [--dtype f32|f16|bf16]\n"
    "\n"
    "PARTS_DIR is a split directory (zmq-splitlearn-split) or a checkpoint (zmq-splitlearn-train).\n"
    "Writes HF_DIR/config.json and model.safetensors with transformer.-prefixed names. A split model\n"
    "is untied (the bottom's wte and the top's lm_head were trained apart), so lm_head.weight is\n"
    "written and tie_word_embeddings is false.\n"
    "\n"
    "exit status: 0 written, 1 failure, 2 usage error\n";

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"output", 1, 0, 'o'}, {"dtype", 1, 0, 'd'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL;
    sl_dtype dtype = SL_F32;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "o:h", options, NULL)) != -1 && rc == 0) {
        if (c == 'o')
            out = optarg;
        else if (c == 'd')
            rc = sl_parse_float_dtype(optarg, "--dtype", &dtype, &err);
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    if (rc == 0 && (argc - optind != 1 || !out)) rc = sl_fail(&err, "give PARTS_DIR and -o HF_DIR");
    if (rc != 0) return fprintf(stderr, "zmq-splitlearn-merge: %s\n%s", err.msg, usage), SL_EXIT_USAGE;
    if (sl_split_merge(argv[optind], out, dtype, &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-merge: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("merged %s into %s\n", argv[optind], out);
    return SL_EXIT_OK;
}
