/* merge.c — zmq-splitlearn-merge: joins the parts of a split (or a training checkpoint) back into
 * one HF GPT-2 model directory that zmq-splitlearn-run and HF transformers load. */
#include "cli.h"
#include "part.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-merge PARTS_DIR -o HF_DIR [--dtype f32|f16|bf16]\n"
    "\n"
    "PARTS_DIR is a split directory (zmq-splitlearn-split) or a checkpoint (zmq-splitlearn-train).\n"
    "Writes HF_DIR/config.json and model.safetensors with transformer.-prefixed names. A split model\n"
    "is untied (the bottom's wte and the top's lm_head were trained apart), so lm_head.weight is\n"
    "written and tie_word_embeddings is false.\n"
    "\n"
    "exit status: 0 written, 1 failure, 2 usage error\n";

typedef struct copy_ctx {
    sl_params *whole;
    const char *name;
    const float *src;
    int copied;
} copy_ctx;

static int copy_into(sl_param_ref *ref, void *ctx)
{
    copy_ctx *c = ctx;
    if (strcmp(ref->name, c->name) != 0) return 0;
    memcpy(*ref->slot, c->src, ref->numel * sizeof(float));
    c->copied++;
    return 1; /* found: stop */
}

static int copy_part(sl_param_ref *ref, void *ctx)
{
    copy_ctx *c = ctx;
    c->name = ref->name;
    c->src = *ref->slot;
    sl_params_foreach(c->whole, copy_into, c);
    return 0;
}

static int count_tensor(sl_param_ref *ref, void *ctx)
{
    (void)ref;
    ++*(int *)ctx;
    return 0;
}

static int merge(const char *dir, const char *out, sl_dtype dtype, sl_err *err)
{
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int n = sl_split_read_index(dir, parts, SL_MAX_SPLITS + 1, err);
    if (n < 1) return -1;
    sl_config cfg = parts[0].cfg;
    cfg.tie_word_embeddings = false;
    sl_params whole;
    if (sl_params_alloc(&whole, &cfg, 0, cfg.n_layer, true, true, err) != 0) return -1;
    copy_ctx c = {.whole = &whole};
    int rc = 0, expected = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        sl_part *part = sl_part_open(dir, parts[i].first, parts[i].last, true, err);
        sl_params p;
        if (!part || sl_part_load_params(part, &p, false, err) != 0) {
            sl_part_destroy(&part);
            rc = -1;
            break;
        }
        sl_params_foreach(&p, copy_part, &c);
        sl_params_free(&p);
        sl_part_destroy(&part);
    }
    sl_params_foreach(&whole, count_tensor, &expected);
    if (rc == 0 && c.copied != expected)
        rc = sl_fail(err, "%s: the parts hold %d of the model's %d tensors", dir, c.copied, expected);
    if (rc == 0) rc = sl_params_save_hf(&whole, out, dtype, 1, true, err);
    sl_params_free(&whole);
    return rc;
}

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
            rc =
                sl_dtype_parse(optarg, &dtype) != 0 || dtype > SL_BF16 ? sl_fail(&err, "--dtype: f32, f16 or bf16") : 0;
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    if (rc == 0 && (argc - optind != 1 || !out)) rc = sl_fail(&err, "give PARTS_DIR and -o HF_DIR");
    if (rc != 0) return fprintf(stderr, "zmq-splitlearn-merge: %s\n%s", err.msg, usage), SL_EXIT_USAGE;
    if (merge(argv[optind], out, dtype, &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-merge: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("merged %s into %s\n", argv[optind], out);
    return SL_EXIT_OK;
}
