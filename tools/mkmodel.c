/* mkmodel.c — zmq-splitlearn-mkmodel: writes a randomly initialised GPT-2 of any shape as an HF
 * model directory, so tests and benchmarks run at real shapes without downloads. */
#include "cli.h"
#include "fileio.h"
#include "gen_opts.h"
#include "params.h"
#include "tool.h"

#include <cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char prog[] = "zmq-splitlearn-mkmodel";

static const char usage[] =
    "usage: zmq-splitlearn-mkmodel -o DIR [--n-layer 12] [--n-embd 768] [--n-head 12] [--n-inner 4*n_embd]\n"
    "                              [--vocab 50257] [--n-positions 1024] [--seed 0] [--dtype f32|f16|bf16]\n"
    "                              [--shards 1] [--untied]\n"
    "\n"
    "Writes DIR/config.json and DIR/model.safetensors (or N shards with an index) holding a GPT-2\n"
    "with GPT-2's initialisation (weights N(0, 0.02), residual projections scaled by 1/sqrt(2L)),\n"
    "reproducible from --seed. The defaults are GPT-2 124M; 355M is --n-layer 24 --n-embd 1024 --n-head 16.\n"
    "With --vocab N of at most 50257 it also writes DIR/vocab.json + merges.txt: GPT-2's vocab cut to\n"
    "its first N tokens (and the merges that make them), so that the model's text tools work.\n"
    "  --force               write into a DIR that holds a model already\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 written, 1 could not write, 2 usage error (options, DIR holds a model)\n";

enum { GPT2_VOCAB = 50257, GPT2_BYTES = 256 };

/* DIR/vocab.json + merges.txt: GPT-2's first n tokens and first n - 256 merges (GPT-2's merge r
 * makes token 256 + r, so these are exactly the merges of those tokens). */
static int write_cut_vocab(const char *dir, int n, sl_err *err)
{
    char from[PATH_MAX], path[PATH_MAX + 32];
    sl_default_vocab_dir(from, sizeof from);
    snprintf(path, sizeof path, "%s/vocab.json", from);
    char *text = sl_read_text_file(path, 64 << 20, err);
    cJSON *vocab = text ? cJSON_Parse(text) : NULL, *cut = cJSON_CreateObject(), *item;
    free(text);
    int rc = vocab && cut ? 0 : sl_fail(err, "%s: cannot read GPT-2's vocab", path);
    cJSON_ArrayForEach(item, vocab)
    {
        if (rc == 0 && item->valueint < n) cJSON_AddNumberToObject(cut, item->string, item->valueint);
    }
    char *json = rc == 0 ? cJSON_PrintUnformatted(cut) : NULL;
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    if (rc == 0) rc = json ? sl_write_text_file(path, json, err) : sl_fail(err, "out of memory");
    free(json);
    cJSON_Delete(vocab);
    cJSON_Delete(cut);
    snprintf(path, sizeof path, "%s/merges.txt", from);
    char *merges = rc == 0 ? sl_read_text_file(path, 64 << 20, err) : NULL, *end = merges;
    for (int line = 0; end && line <= n - GPT2_BYTES; line++) /* the "#version" line, then the merges */
        end = strchr(end, '\n') ? strchr(end, '\n') + 1 : end + strlen(end);
    if (end) *end = '\0';
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    if (rc == 0) rc = merges ? sl_write_text_file(path, merges, err) : -1;
    free(merges);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"n-layer", 1, 0, 'L'}, {"n-embd", 1, 0, 'C'}, {"n-head", 1, 0, 'H'},
                                            {"n-inner", 1, 0, 'I'}, {"vocab", 1, 0, 'v'},  {"n-positions", 1, 0, 'P'},
                                            {"seed", 1, 0, 's'},    {"dtype", 1, 0, 'd'},  {"shards", 1, 0, 'S'},
                                            {"untied", 0, 0, 'u'},  {"output", 1, 0, 'o'}, {"force", 0, 0, 'f'},
                                            SL_TOOL_OPTIONS,        {0, 0, 0, 0}};
    sl_config cfg = {.n_layer = 12,
                     .n_embd = 768,
                     .n_head = 12,
                     .vocab_size = 50257,
                     .n_positions = 1024,
                     .layer_norm_epsilon = 1e-5f,
                     .tie_word_embeddings = true,
                     .eos_token_id = 50256};
    long v, seed = 0, shards = 1, inner = 0;
    bool force = false;
    const char *out = NULL;
    sl_dtype dtype = SL_F32;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "o:h", options, NULL)) != -1 && rc == 0) {
        switch (c) {
        case 'L':
            rc = sl_parse_long(optarg, "--n-layer", 1, 1000, &v, &err), cfg.n_layer = (int)v;
            break;
        case 'C':
            rc = sl_parse_long(optarg, "--n-embd", 1, 1 << 16, &v, &err), cfg.n_embd = (int)v;
            break;
        case 'H':
            rc = sl_parse_long(optarg, "--n-head", 1, 1024, &v, &err), cfg.n_head = (int)v;
            break;
        case 'I':
            rc = sl_parse_long(optarg, "--n-inner", 1, 1 << 18, &inner, &err);
            break;
        case 'v':
            rc = sl_parse_long(optarg, "--vocab", 1, 1 << 24, &v, &err), cfg.vocab_size = (int)v;
            break;
        case 'P':
            rc = sl_parse_long(optarg, "--n-positions", 1, 1 << 16, &v, &err), cfg.n_positions = (int)v;
            break;
        case 's':
            rc = sl_parse_long(optarg, "--seed", 0, __LONG_MAX__, &seed, &err);
            break;
        case 'S':
            rc = sl_parse_long(optarg, "--shards", 1, 99, &shards, &err);
            break;
        case 'd':
            rc = sl_parse_float_dtype(optarg, "--dtype", &dtype, &err);
            break;
        case 'u':
            cfg.tie_word_embeddings = false;
            break;
        case 'o':
            out = optarg;
            break;
        case 'f':
            force = true;
            break;
        default:
            return sl_tool_other_option(c, prog, usage);
        }
    }
    if (rc == 0 && !out) rc = sl_fail(&err, "-o DIR is required");
    if (rc == 0 && optind < argc) rc = sl_fail(&err, "unexpected argument '%s'", argv[optind]);
    if (rc == 0 && cfg.n_embd % cfg.n_head) rc = sl_fail(&err, "--n-embd must be a multiple of --n-head");
    cfg.n_inner = inner ? (int)inner : 4 * cfg.n_embd;
    if (cfg.eos_token_id >= cfg.vocab_size) cfg.eos_token_id = cfg.vocab_size - 1;
    char config[PATH_MAX + 16];
    snprintf(config, sizeof config, "%s/config.json", out ? out : ".");
    if (rc == 0 && !force && access(config, F_OK) == 0)
        rc = sl_fail(&err, "%s holds a model already: give --force to replace it, or another -o", out);
    if (rc == 0) rc = sl_check_output(out, true, &err);
    if (rc != 0) return sl_tool_usage_error(prog, err.msg);
    sl_params p;
    rc = sl_params_alloc(&p, &cfg, 0, cfg.n_layer, true, true, &err);
    if (rc == 0) {
        sl_params_init_gpt2(&p, (uint64_t)seed);
        /* Untied: the head starts as a copy of wte, as HF's untied checkpoints are saved. */
        if (!p.head_is_wte) memcpy(p.lm_head, p.wte, (size_t)cfg.vocab_size * cfg.n_embd * sizeof(float));
        rc = sl_params_save_hf(&p, out, dtype, (int)shards, true, &err);
        sl_params_free(&p);
    }
    if (rc == 0 && cfg.vocab_size >= GPT2_BYTES && cfg.vocab_size <= GPT2_VOCAB)
        rc = write_cut_vocab(out, cfg.vocab_size, &err);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("wrote %s: %d layers, %d wide, %d heads, vocab %d, %s\n", out, cfg.n_layer, cfg.n_embd, cfg.n_head,
           cfg.vocab_size, sl_dtype_name(dtype));
    return SL_EXIT_OK;
}
