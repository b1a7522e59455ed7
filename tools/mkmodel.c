/* mkmodel.c — zmq-splitlearn-mkmodel: writes a randomly initialised GPT-2 of any shape as an HF
 * model directory, so tests and benchmarks run at real shapes without downloads. */
#include "cli.h"
#include "params.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-mkmodel -o DIR [--n-layer 12] [--n-embd 768] [--n-head 12] [--n-inner 4*n_embd]\n"
    "                              [--vocab 50257] [--n-positions 1024] [--seed 0] [--dtype f32|f16|bf16]\n"
    "                              [--shards 1] [--untied]\n"
    "\n"
    "Writes DIR/config.json and DIR/model.safetensors (or N shards with an index) holding a GPT-2\n"
    "with GPT-2's initialisation (weights N(0, 0.02), residual projections scaled by 1/sqrt(2L)),\n"
    "reproducible from --seed. The defaults are GPT-2 124M; 355M is --n-layer 24 --n-embd 1024 --n-head 16.\n"
    "\n"
    "exit status: 0 written, 1 could not write, 2 usage error\n";

int main(int argc, char **argv)
{
    static const struct option options[] = {{"n-layer", 1, 0, 'L'},
                                            {"n-embd", 1, 0, 'C'},
                                            {"n-head", 1, 0, 'H'},
                                            {"n-inner", 1, 0, 'I'},
                                            {"vocab", 1, 0, 'V'},
                                            {"n-positions", 1, 0, 'P'},
                                            {"seed", 1, 0, 's'},
                                            {"dtype", 1, 0, 'd'},
                                            {"shards", 1, 0, 'S'},
                                            {"untied", 0, 0, 'u'},
                                            {"output", 1, 0, 'o'},
                                            {"help", 0, 0, 'h'},
                                            {0, 0, 0, 0}};
    sl_config cfg = {.n_layer = 12,
                     .n_embd = 768,
                     .n_head = 12,
                     .vocab_size = 50257,
                     .n_positions = 1024,
                     .layer_norm_epsilon = 1e-5f,
                     .tie_word_embeddings = true,
                     .eos_token_id = 50256};
    long v, seed = 0, shards = 1, inner = 0;
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
        case 'V':
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
        case 'h':
            fputs(usage, stdout);
            return SL_EXIT_OK;
        default:
            fputs(usage, stderr);
            return SL_EXIT_USAGE;
        }
    }
    if (rc == 0 && !out) rc = sl_fail(&err, "-o DIR is required");
    if (rc == 0 && optind < argc) rc = sl_fail(&err, "unexpected argument '%s'", argv[optind]);
    if (rc == 0 && cfg.n_embd % cfg.n_head) rc = sl_fail(&err, "--n-embd must be a multiple of --n-head");
    cfg.n_inner = inner ? (int)inner : 4 * cfg.n_embd;
    if (cfg.eos_token_id >= cfg.vocab_size) cfg.eos_token_id = cfg.vocab_size - 1;
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-mkmodel: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    sl_params p;
    rc = sl_params_alloc(&p, &cfg, 0, cfg.n_layer, true, true, &err);
    if (rc == 0) {
        sl_params_init_gpt2(&p, (uint64_t)seed);
        /* Untied: the head starts as a copy of wte, as HF's untied checkpoints are saved. */
        if (!p.head_is_wte) memcpy(p.lm_head, p.wte, (size_t)cfg.vocab_size * cfg.n_embd * sizeof(float));
        rc = sl_params_save_hf(&p, out, dtype, (int)shards, true, &err);
        sl_params_free(&p);
    }
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-mkmodel: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("wrote %s: %d layers, %d wide, %d heads, vocab %d, %s\n", out, cfg.n_layer, cfg.n_embd, cfg.n_head,
           cfg.vocab_size, sl_dtype_name(dtype));
    return SL_EXIT_OK;
}
