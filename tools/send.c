/* send.c — zmq-splitlearn-send: sends a prompt into a running pipeline and streams the answer,
 * with the same options and output as zmq-splitlearn-run. */
#include "cli.h"
#include "client.h"
#include "generate.h"
#include "split.h"
#include "tokenizer.h"
#include "topology.h"

#include <cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-send TOPOLOGY.ini [\"prompt text\" | --ids 1,2,3] [options]\n"
    "\n"
    "Sends the prompt to the pipeline's bottom node and streams the generated text as the top node\n"
    "answers, token by token. The answer equals zmq-splitlearn-run's on the unsplit model.\n"
    "\n" SL_GEN_USAGE
    "  --json                 print one JSON object {\"ids\", \"text\", \"resends\"} instead of text\n"
    "  --timeout SECONDS      how long to wait for each answer (default: the topology's, 30)\n"
    "  --cert FILE            the client's secret certificate (security = curve; zmq-splitlearn-keygen)\n"
    "\n"
    "exit status: 0 done; 1 failure (a node's error, vocab, I/O); 2 usage error;\n"
    "             3 a stage did not answer in time (the message names it)\n";

typedef struct send_ctx {
    sl_gen_opts opts;
    sl_tokenizer *tok;
    sl_gen_text text; /* what is streamed, whole characters */
    bool json;
} send_ctx;

static void stream_token(void *ctx, int32_t token)
{
    send_ctx *s = ctx;
    if (s->json || s->opts.quiet || !s->tok) return;
    size_t len = 0;
    const char *bytes = sl_gen_text_token(&s->text, token, &len);
    if (bytes) fwrite(bytes, 1, len, stdout);
    fflush(stdout);
}

/* The rest of the streamed text (an unfinished character is printed as it is) and its newline. */
static void end_text(send_ctx *s)
{
    if (s->json || s->opts.quiet || !s->tok) return;
    size_t len;
    const char *bytes = sl_gen_text_end(&s->text, &len);
    fwrite(bytes, 1, len, stdout);
    putchar('\n');
}

/* The model's config from the parts' metadata, when this machine has them. */
static void model_limits(const sl_topology *topo, sl_config *cfg)
{
    sl_part_info parts[SL_MAX_SPLITS + 1];
    sl_err err;
    if (sl_split_read_index(topo->parts, parts, SL_MAX_SPLITS + 1, &err) > 0) *cfg = parts[0].cfg;
}

static void print_json(const send_ctx *s, const int32_t *ids, int n, int resends)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "ids", cJSON_CreateIntArray(ids, n));
    if (s->tok) {
        sl_err err;
        size_t len;
        char *text = sl_tokenizer_decode(s->tok, ids, (size_t)n, &len, &err);
        if (text) cJSON_AddStringToObject(root, "text", text);
        free(text);
    }
    cJSON_AddNumberToObject(root, "resends", resends);
    char *out = cJSON_PrintUnformatted(root);
    if (out) puts(out);
    free(out);
    cJSON_Delete(root);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {SL_GEN_OPTIONS,      {"json", 0, 0, 'j'}, {"timeout", 1, 0, 't'},
                                            {"cert", 1, 0, 'C'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    send_ctx s = {0};
    sl_gen_opts_init(&s.opts);
    double timeout = 0;
    const char *cert = NULL;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c >= 1000)
            rc = sl_gen_opts_apply(&s.opts, c, optarg, &err);
        else if (c == 'j')
            s.json = true;
        else if (c == 't')
            rc = sl_parse_double(optarg, "--timeout", 0.001, 1e6, &timeout, &err);
        else if (c == 'C')
            cert = optarg;
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    const char *target = NULL;
    if (rc == 0) rc = sl_gen_opts_finish(&s.opts, argc, argv, optind, "TOPOLOGY.ini", &target, &err);
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-send: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    sl_topology topo;
    if (sl_topology_load(target, &topo, false, &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-send: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    sl_config cfg = {.vocab_size = 50257, .n_positions = 1024, .eos_token_id = 50256};
    model_limits(&topo, &cfg);
    char fallback[PATH_MAX];
    sl_default_vocab_dir(fallback, sizeof fallback);
    if (s.opts.prompt || !s.opts.quiet || s.json) {
        s.tok = s.opts.vocab_dir ? sl_tokenizer_new(s.opts.vocab_dir, &err)
                                 : sl_tokenizer_for_model(topo.parts, fallback, &err);
        s.text.tok = s.tok;
        if (!s.tok && s.opts.prompt) {
            fprintf(stderr, "zmq-splitlearn-send: %s\n", err.msg);
            return SL_EXIT_FAILURE;
        }
    }
    int32_t *prompt = s.opts.ids;
    size_t n_prompt = (size_t)s.opts.n_ids, cap = 0;
    int32_t *encoded = NULL;
    if (s.opts.prompt &&
        sl_tokenizer_encode(s.tok, s.opts.prompt, strlen(s.opts.prompt), &encoded, &n_prompt, &cap, &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-send: %s\n", err.msg);
        sl_tokenizer_destroy(&s.tok);
        return SL_EXIT_FAILURE;
    }
    if (encoded) prompt = encoded;
    float *logits = s.opts.logits_path ? malloc(n_prompt * (size_t)cfg.vocab_size * sizeof(float)) : NULL;
    int32_t *out = malloc(((size_t)s.opts.max_new_tokens + 1) * sizeof *out);
    int n_out = 0;
    sl_client *client = sl_client_new(&topo, cert, &err);
    rc = client ? 0 : -1;
    if (rc == 0) {
        sl_client_request req = {.ids = prompt,
                                 .n_ids = (int)n_prompt,
                                 .max_new_tokens = s.opts.max_new_tokens,
                                 .sampling = s.opts.sampling,
                                 .eos_token = s.opts.ignore_eos ? -1 : cfg.eos_token_id,
                                 .logits = logits,
                                 .vocab_size = cfg.vocab_size,
                                 .n_positions = cfg.n_positions,
                                 .timeout = timeout > 0 ? timeout : topo.timeout,
                                 .on_token = stream_token,
                                 .ctx = &s};
        rc = sl_client_generate(client, &req, out, &n_out, &err);
    }
    if (rc == 0 && logits) rc = sl_write_logits(s.opts.logits_path, logits, (int)n_prompt, cfg.vocab_size, &err);
    if (rc == 0 && s.json) print_json(&s, out, n_out, sl_client_resends(client));
    end_text(&s);
    if (rc == 0 && s.opts.print_ids && !s.json) {
        for (int i = 0; i < n_out; i++)
            printf("%s%d", i ? " " : "", out[i]);
        putchar('\n');
    }
    if (rc != 0) fprintf(stderr, "zmq-splitlearn-send: %s\n", err.msg);
    sl_client_destroy(&client);
    sl_tokenizer_destroy(&s.tok);
    free(encoded);
    free(logits);
    free(out);
    return rc == 0 ? SL_EXIT_OK : rc == SL_CLIENT_TIMEOUT ? SL_EXIT_TIMEOUT : SL_EXIT_FAILURE;
}
