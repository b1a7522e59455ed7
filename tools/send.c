/* send.c — zmq-splitlearn-send: sends a prompt into a running pipeline and streams the answer,
 * with the same options and output as zmq-splitlearn-run. */
#include "cli.h"
#include "client.h"
#include "clock.h"
#include "gen_opts.h"
#include "split.h"
#include "tokenizer.h"
#include "fileio.h"
#include "tool.h"
#include "topology.h"

#include <cJSON.h>
#include <czmq.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char prog[] = "zmq-splitlearn-send";

static const char usage[] =
    "usage: zmq-splitlearn-send TOPOLOGY.ini [\"prompt text\" | --ids 1,2,3] [options]\n"
    "\n"
    "Sends the prompt to the pipeline's bottom node and streams the generated text as the top node\n"
    "answers, token by token. The answer equals zmq-splitlearn-run's on the unsplit model.\n"
    "\n" SL_GEN_USAGE
    "  --json                 print one JSON object {\"ids\", \"text\", \"resends\", \"stopped\"} instead\n"
    "                         of text; stopped: eos, max_new_tokens or context_limit\n"
    "  --timeout SECONDS      how long to wait for each answer (default: the topology's, 30)\n"
    "  --cert FILE            the client's secret certificate (security = curve; zmq-splitlearn-keygen)\n"
    "  --trace                where the prompt's and the last token's time went: each hop's node, host,\n"
    "                         time queued and computing, the wire between nodes of one host, and the\n"
    "                         rest between hosts (each host's own clock; on stderr, or in --json)\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 done; 1 failure (a node's error, I/O); 2 usage error (options, topology, a\n"
    "vocab that does not fit the model, a prompt too long); 3 a stage did not answer in time\n"
    "(the message names it); 130 SIGINT\n";

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct send_ctx {
    sl_gen_opts opts;
    sl_tokenizer *tok;
    sl_gen_text text; /* what is streamed, whole characters */
    bool json;
    bool trace;            /* --trace */
    const char *traces[2]; /* with --trace: the client's traces of the prompt and the last token */
    double first_token;    /* when the first token's answer came (sl_now; 0: none yet), for --timings */
} send_ctx;

static void stream_token(void *ctx, int32_t token)
{
    send_ctx *s = ctx;
    if (!s->first_token) s->first_token = sl_now();
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

/* The model's config from the parts' metadata, when this machine has them (else false). */
static bool model_limits(const sl_topology *topo, sl_config *cfg)
{
    sl_part_info parts[SL_MAX_SPLITS + 1];
    sl_err err;
    if (sl_split_read_index(topo->parts, parts, SL_MAX_SPLITS + 1, &err) <= 0) return false;
    *cfg = parts[0].cfg;
    return true;
}

/* ---- --trace: where a request's time went ---- */

typedef struct hop {
    char node[64], host[128];
    long long arrived, started, left; /* that host's clock, microseconds */
} hop;

/* Parses wire.h's "trace" text ("node@host a s l;" per hop); returns the hops (at most max). */
static int parse_trace(const char *trace, hop *hops, int max)
{
    int n = 0;
    for (const char *p = trace; *p && n < max;) {
        hop *h = &hops[n];
        int used = 0;
        if (sscanf(p, "%63[^@]@%127s %lld %lld %lld;%n", h->node, h->host, &h->arrived, &h->started, &h->left, &used) <
                5 ||
            used == 0)
            break;
        size_t host_len = strlen(h->host);
        if (host_len && h->host[host_len - 1] == ';') h->host[host_len - 1] = '\0';
        n++;
        p += used;
    }
    return n;
}

/* Each hop's compute time and, where the previous hop ran on the same host (one clock), the time
 * on the wire from it; the rest of the client's total went between hosts. */
static cJSON *trace_report(const char *what, const char *trace, bool print)
{
    hop hops[SL_MAX_NODES + 2];
    int n = parse_trace(trace, hops, SL_MAX_NODES + 2);
    if (n < 3) return NULL; /* client, at least one node, client */
    double total = (double)(hops[n - 1].arrived - hops[0].left) / 1000, inside = 0, same_host = 0;
    cJSON *list = cJSON_CreateArray();
    if (print)
        fprintf(stderr, "trace of %s: %.3f ms at the client\n  %-12s %-16s %10s %10s %14s\n", what, total, "node",
                "host", "queued ms", "compute ms", "wire in ms");
    for (int i = 1; i < n - 1; i++) {
        const hop *h = &hops[i], *prev = &hops[i - 1];
        double queued = (double)(h->started - h->arrived) / 1000, compute = (double)(h->left - h->started) / 1000;
        bool known = i > 1 && !strcmp(prev->host, h->host);
        double wire = known ? (double)(h->arrived - prev->left) / 1000 : NAN;
        inside += queued + compute;
        if (known) same_host += wire;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "node", h->node);
        cJSON_AddStringToObject(o, "host", h->host);
        cJSON_AddNumberToObject(o, "queued_ms", queued);
        cJSON_AddNumberToObject(o, "compute_ms", compute);
        if (known) cJSON_AddNumberToObject(o, "wire_in_ms", wire);
        cJSON_AddItemToArray(list, o);
        if (print) {
            char in[32] = "(other host)";
            if (known) snprintf(in, sizeof in, "%.3f", wire);
            fprintf(stderr, "  %-12s %-16s %10.3f %10.3f %14s\n", h->node, h->host, queued, compute, in);
        }
    }
    double between = total - inside - same_host;
    if (print) fprintf(stderr, "  between hosts and to and from the client: %.3f ms\n", between);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "hops", list);
    cJSON_AddNumberToObject(o, "total_ms", total);
    cJSON_AddNumberToObject(o, "between_hosts_ms", between);
    return o;
}

static void print_json(const send_ctx *s, const int32_t *ids, int n, int resends, const char *stopped)
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
    cJSON_AddStringToObject(root, "stopped", stopped);
    if (s->traces[0]) {
        cJSON *trace = cJSON_CreateObject(), *prompt = trace_report("the prompt", s->traces[0], false),
              *token = trace_report("the last token", s->traces[1], false);
        if (prompt) cJSON_AddItemToObject(trace, "prompt", prompt);
        if (token) cJSON_AddItemToObject(trace, "last_token", token);
        cJSON_AddItemToObject(root, "trace", trace);
    }
    char *out = cJSON_PrintUnformatted(root);
    if (out) puts(out);
    free(out);
    cJSON_Delete(root);
}

/* --timings of a generation from sent to end: prefill up to the first token's answer (all of it
 * when none came), decode the rest: the answers after the first, one decode step each. */
static void timings_of(const send_ctx *s, double sent, double end, int n_prompt, int n_out, sl_gen_timings *t)
{
    double first = s->first_token ? s->first_token : end;
    *t = (sl_gen_timings){.prompt_tokens = n_prompt,
                          .prefill_ms = (first - sent) * 1e3,
                          .decoded = n_out > 1 ? n_out - 1 : 0,
                          .decode_ms = (end - first) * 1e3};
}

/* Parses the command line into s; returns -1 to go on, else the exit status (help, version, a
 * usage error). */
static int parse(send_ctx *s, int argc, char **argv, double *timeout, const char **cert, const char **target)
{
    static const struct option options[] = {SL_GEN_OPTIONS,      {"json", 0, 0, 'j'},  {"timeout", 1, 0, 't'},
                                            {"cert", 1, 0, 'C'}, {"trace", 0, 0, 'T'}, SL_TOOL_OPTIONS,
                                            {0, 0, 0, 0}};
    sl_gen_opts_init(&s->opts);
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c >= 1000)
            rc = sl_gen_opts_apply(&s->opts, c, optarg, &err);
        else if (c == 'j')
            s->json = true;
        else if (c == 't')
            rc = sl_parse_double(optarg, "--timeout", 0.001, 1e6, timeout, &err);
        else if (c == 'C')
            *cert = optarg;
        else if (c == 'T')
            s->trace = true;
        else
            return sl_tool_other_option(c, prog, usage);
    }
    if (rc == 0) rc = sl_gen_opts_finish(&s->opts, argc, argv, optind, "TOPOLOGY.ini", target, &err);
    if (rc == 0 && s->opts.logits_path) rc = sl_check_output(s->opts.logits_path, false, &err);
    return rc == 0 ? -1 : sl_tool_usage_error(prog, err.msg);
}

/* The prompt's ids: --ids, or the text encoded (*encoded, caller frees). Returns an exit status. */
static int prompt_ids(send_ctx *s, const sl_topology *topo, const sl_config *cfg, bool known, int32_t **encoded,
                      size_t *n, sl_err *err)
{
    *n = (size_t)s->opts.n_ids;
    if (s->opts.prompt || !s->opts.quiet || s->json) {
        bool bundled;
        char vocab[PATH_MAX];
        s->tok = sl_gen_tokenizer(s->opts.vocab_dir, topo->parts, known ? cfg->vocab_size : 0, &bundled, vocab,
                                  sizeof vocab, err);
        s->text.tok = s->tok;
        if (!s->tok && s->opts.prompt) return SL_EXIT_USAGE;
        if (!s->tok) fprintf(stderr, "%s: %s: the text is not shown\n", prog, err->msg);
        if (s->tok && bundled)
            fprintf(stderr, "%s: %s has no vocab: using the bundled GPT-2 vocab (%s)\n", prog, topo->parts, vocab);
    }
    size_t cap = 0;
    if (s->opts.prompt &&
        sl_tokenizer_encode(s->tok, s->opts.prompt, strlen(s->opts.prompt), encoded, n, &cap, err) != 0)
        return SL_EXIT_FAILURE;
    return sl_gen_check_prompt(*n, known ? cfg->n_positions : INT_MAX, err) != 0 ? SL_EXIT_USAGE : SL_EXIT_OK;
}

int main(int argc, char **argv)
{
    send_ctx s = {0};
    double timeout = 0;
    const char *target = NULL, *cert = NULL;
    int status = parse(&s, argc, argv, &timeout, &cert, &target);
    if (status >= 0) return status;
    if (s.opts.seed_drawn)
        fprintf(stderr, "%s: sampling with --seed %llu\n", prog, (unsigned long long)s.opts.sampling.seed);
    sl_err err;
    sl_topology topo;
    if (sl_topology_load(target, &topo, false, &err) != 0) return sl_tool_usage_error(prog, err.msg);
    sl_config cfg = {.vocab_size = 50257, .n_positions = 1024, .eos_token_id = 50256};
    bool known = model_limits(&topo, &cfg);
    int32_t *encoded = NULL;
    size_t n_prompt;
    status = prompt_ids(&s, &topo, &cfg, known, &encoded, &n_prompt, &err);
    int32_t *prompt = encoded ? encoded : s.opts.ids;
    float *logits = s.opts.logits_path ? malloc(n_prompt * (size_t)cfg.vocab_size * sizeof(float)) : NULL;
    int32_t *out = malloc(((size_t)s.opts.max_new_tokens + 1) * sizeof *out);
    int n_out = 0, rc = status == SL_EXIT_OK ? 0 : -1;
    sl_gen_timings timings = {0};
    zsys_handler_set(NULL); /* SIGINT interrupts the wait for an answer (EINTR), then exits 130 */
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sl_client *client = rc == 0 ? sl_client_new(&topo, cert, &err) : NULL;
    if (rc == 0 && !client) rc = -1;
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
                                 .ctx = &s,
                                 .trace = s.trace};
        double sent = sl_now();
        rc = sl_client_generate(client, &req, out, &n_out, &err);
        timings_of(&s, sent, sl_now(), (int)n_prompt, n_out, &timings);
        if (s.trace) s.traces[0] = sl_client_trace(client, 0), s.traces[1] = sl_client_trace(client, 1);
    }
    if (rc == 0 && logits) rc = sl_write_logits(s.opts.logits_path, logits, (int)n_prompt, cfg.vocab_size, &err);
    const char *stopped = sl_gen_stop_reason((int)n_prompt, n_out, s.opts.max_new_tokens, cfg.n_positions);
    if (rc == 0 && s.json) print_json(&s, out, n_out, sl_client_resends(client), stopped);
    end_text(&s);
    if (rc == 0 && s.trace && !s.json) {
        cJSON_Delete(trace_report("the prompt", s.traces[0], true));
        cJSON_Delete(trace_report("the last token", s.traces[1], true));
    }
    if (rc == 0 && !strcmp(stopped, "context_limit") && !s.json)
        fprintf(stderr, "%s: stopped at the model's context limit (%d positions)\n", prog, cfg.n_positions);
    if (rc == 0 && s.opts.print_ids && !s.json) {
        for (int i = 0; i < n_out; i++)
            printf("%s%d", i ? " " : "", out[i]);
        putchar('\n');
    }
    char text[160];
    if (rc == 0 && s.opts.timings) fputs(sl_gen_timings_text(&timings, text, sizeof text), stderr);
    if (rc != 0 && !interrupted) fprintf(stderr, "%s: %s\n", prog, err.msg);
    if (status == SL_EXIT_OK && rc != 0) status = rc == SL_CLIENT_TIMEOUT ? SL_EXIT_TIMEOUT : SL_EXIT_FAILURE;
    if (interrupted) status = SL_EXIT_INTERRUPTED;
    sl_client_destroy(&client);
    sl_tokenizer_destroy(&s.tok);
    free(encoded);
    free(logits);
    free(out);
    return status;
}
