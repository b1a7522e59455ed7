/* bench-pipeline.c — zmq-splitlearn-bench-pipeline: a 3-stage pipeline on loopback against the
 * monolithic model in one run: prefill and decode time, overhead per hop, throughput with
 * concurrent clients, each node's peak RSS against its part's weights and KV cache; then a
 * training step of the whole model, of the split chained in this process, and with the trunk on
 * its node. With --probe or --probe-model it times one client against a running pipeline, or
 * the monolithic model, for tools/bench-hosts.sh (which interleaves them). */
#include "clock.h"
#include "cli.h"
#include "client.h"
#include "cpu.h"
#include "fileio.h"
#include "gpt2.h"
#include "part.h"
#include "backprop.h"
#include "procfs.h"
#include "tool.h"
#include "trainer.h"

#include <czmq.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: zmq-splitlearn-bench-pipeline MODEL_DIR PARTS_DIR [--runs 5] [--prompt 64] [--decode 32]\n"
    "                                     [--threads 2] [--port 5801]\n"
    "\n"
    "PARTS_DIR is a 3-part split of MODEL_DIR (zmq-splitlearn-split --splits A,B). Starts the three\n"
    "nodes with zmq-splitlearn-launch (tcp loopback, --threads each, pinned), times the monolithic\n"
    "model in this process and the pipeline through zmq-splitlearn's client, then training steps\n"
    "(B=4, T=64) of the whole model, of the split in this process and with the trunk on its node,\n"
    "and prints Markdown tables.\n"
    "  --help, --version\n"
    "\n"
    "       zmq-splitlearn-bench-pipeline --probe TOPOLOGY.ini [--cert FILE] [--before CMD] [--after CMD]\n"
    "                                     [--kill PID --kill-after N] [--runs 1] [--prompt 64] [--decode 32]\n"
    "       zmq-splitlearn-bench-pipeline --probe-model MODEL_DIR [--runs 1] [--prompt 64] [--decode 32]\n"
    "                                     [--threads 2]\n"
    "\n"
    "--probe: one client of the running pipeline (--cert: its secret certificate, security = curve)\n"
    "makes one warm-up generation, runs sh -c CMD of --before, --runs timed greedy generations on the\n"
    "same connection, then --after's CMD (a benchmark reads TCP counters while the connection is\n"
    "open); with --kill, process PID is killed with SIGKILL after the N-th token of the first timed\n"
    "generation. --probe-model times the monolithic model in this process (threads pinned).\n"
    "Each prints one line: prefill_ms P decode_ms D [recovery_ms R: from the kill to the next token],\n"
    "medians of --runs; D is each generation's median time between two tokens (robust to the other\n"
    "work of a shared machine).\n"
    "\n"
    "exit status: 0 done, 1 failure, 2 usage error\n";

typedef struct timing {
    double start, first, last;
    int tokens;
    double stamps[512]; /* when each token came */
    pid_t kill_pid;     /* > 0: killed with SIGKILL once kill_after tokens came (--probe --kill) */
    int kill_after;
    double killed, recovered; /* when it was killed; when the next token came */
} timing;

static void on_token(void *ctx, int32_t token)
{
    (void)token;
    timing *t = ctx;
    double now = sl_now();
    if (t->tokens < 512) t->stamps[t->tokens] = now;
    if (t->tokens++ == 0) t->first = now;
    t->last = now;
    if (t->killed > 0 && t->recovered == 0) t->recovered = now;
    if (t->kill_pid > 0 && t->tokens == t->kill_after && t->killed == 0 && kill(t->kill_pid, SIGKILL) == 0)
        t->killed = sl_now();
}

/* The benchmark's prompt: the same ids for every configuration of a model. */
static void prompt_ids(int32_t *ids, int n, int vocab)
{
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % vocab);
}

typedef struct job {
    const sl_topology *topo;
    const char *cert; /* the client's secret certificate (security = curve), or NULL */
    const int32_t *ids;
    int prompt, decode, vocab, generations;
    double prefill, per_token; /* of the last generation */
    int tokens, rc;
    char err[1024];
} job;

/* One greedy generation of j's prompt, decode tokens long (out holds them), timed in *t. */
static int generate_timed(sl_client *c, const job *j, int decode, timing *t, int32_t *out, sl_err *err)
{
    sl_client_request req = {.ids = j->ids,
                             .n_ids = j->prompt,
                             .max_new_tokens = decode,
                             .sampling = SL_SAMPLING_GREEDY,
                             .eos_token = -1,
                             .vocab_size = j->vocab,
                             .timeout = 60,
                             .on_token = on_token,
                             .ctx = t};
    int n = 0;
    t->start = sl_now();
    return sl_client_generate(c, &req, out, &n, err);
}

static double decode_time(const timing *t) { return t->tokens > 1 ? (t->last - t->first) / (t->tokens - 1) : 0; }

/* The median time between two tokens: what a token takes when the other work of a shared machine
 * leaves it alone. */
static double typical_decode_time(const timing *t)
{
    double steps[511];
    int n = t->tokens < 512 ? t->tokens - 1 : 511;
    for (int i = 0; i < n; i++)
        steps[i] = t->stamps[i + 1] - t->stamps[i];
    return n > 0 ? sl_median(steps, n) : 0;
}

static void *client_job(void *arg)
{
    job *j = arg;
    sl_err err = {{0}};
    sl_client *c = sl_client_new(j->topo, j->cert, &err);
    int32_t *out = malloc((size_t)j->decode * sizeof *out);
    j->rc = c && out ? 0 : -1;
    for (int g = 0; g < j->generations && j->rc == 0; g++) {
        timing t = {0};
        j->rc = generate_timed(c, j, j->decode, &t, out, &err);
        j->tokens += t.tokens;
        j->prefill = t.first - t.start;
        j->per_token = decode_time(&t);
    }
    snprintf(j->err, sizeof j->err, "%s", err.msg);
    free(out);
    sl_client_destroy(&c);
    return NULL;
}

/* Monolithic: prefill (logits of the last position) and greedy decode, as zmq-splitlearn-run.
 * per_token is each run's mean time per token or, typical, its median step (what the tokens take
 * when the other work of a shared machine leaves them alone); both are medians over runs. */
static void monolithic(const char *model, const int32_t *ids, int prompt, int decode, int runs, bool typical,
                       double *prefill, double *per_token)
{
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(model, &err);
    const sl_config *c = sl_hf_model_config(ck);
    sl_params p;
    sl_params_load(&p, ck, 0, c->n_layer, true, true, false, &err);
    sl_runner *s = sl_runner_new(&p, 128, NULL, &err);
    sl_kv *kv = sl_kv_new(&p, prompt + decode, SL_F32, &err);
    float *logits = malloc((size_t)c->vocab_size * sizeof(float));
    double pre[32], dec[32];
    for (int r = -1; r < runs; r++) {
        sl_kv_reset(kv);
        double t0 = sl_now();
        sl_runner_forward(s, kv, prompt, ids, NULL, logits, SL_OUT_LOGITS_LAST, &err);
        double t1 = sl_now(), last = t1, steps[512];
        for (int i = 1; i < decode; i++) {
            int32_t best = 0;
            for (int v = 1; v < c->vocab_size; v++)
                if (logits[v] > logits[best]) best = v;
            sl_runner_forward(s, kv, 1, &best, NULL, logits, SL_OUT_LOGITS_LAST, &err);
            double now = sl_now();
            steps[i - 1] = now - last;
            last = now;
        }
        if (r >= 0) {
            pre[r] = t1 - t0;
            dec[r] = typical ? sl_median(steps, decode - 1) : (last - t1) / (decode - 1);
        }
    }
    *prefill = sl_median(pre, runs);
    *per_token = sl_median(dec, runs);
    free(logits);
    sl_kv_destroy(&kv);
    sl_runner_destroy(&s);
    sl_params_free(&p);
    sl_hf_model_destroy(&ck);
}

/* The CPUs this process had before it pinned its threads. */
typedef struct cpus {
    cpu_set_t set;
    int threads;
} cpus;

/* Pins this process's compute threads again after a fork (see sl_threads_setup). */
static void repin(const cpus *c)
{
    sl_err err;
    if (sched_setaffinity(0, sizeof c->set, &c->set) != 0 || sl_threads_setup(c->threads, true, &err) != 0)
        fprintf(stderr, "warning: cannot pin this process's threads again\n");
}

/* Starts the launcher (only `node` when not NULL) and waits until its nodes are ready. */
static pid_t launch(const char *launcher, const char *topo_path, const char *ready, const char *log_path,
                    const char *node, const cpus *c)
{
    unlink(ready);
    fflush(stdout); /* else the child would write this process's buffered lines too */
    pid_t pid = fork();
    if (pid == 0) {
        /* This process pinned itself; the nodes pin themselves from all its CPUs. */
        sched_setaffinity(0, sizeof c->set, &c->set);
        if (!freopen(log_path, "w", stdout)) _exit(1);
        dup2(fileno(stdout), STDERR_FILENO);
        if (node)
            execl(launcher, launcher, topo_path, "--ready-file", ready, "--only", node, (char *)NULL);
        else
            execl(launcher, launcher, topo_path, "--ready-file", ready, (char *)NULL);
        _exit(127);
    }
    /* fork() made OpenBLAS stop its workers (its atfork handler); the ones it starts again would
     * share the main thread's CPU. */
    repin(c);
    for (int i = 0; i < 1200 && access(ready, F_OK) != 0; i++)
        usleep(50000);
    return pid;
}

/* The same B=4 x T=64 batch for every training measurement. */
static void train_batch(int32_t *ids, int32_t *targets, int vocab)
{
    for (int i = 0; i < 4 * 64; i++)
        ids[i] = (i * 7919 + 13) % vocab, targets[i] = (i * 104729 + 7) % vocab;
}

/* Median seconds per training step (forward, loss, backward, AdamW) of the whole model in one
 * sl_backprop: the single-process reference of the pipeline's step. */
static double time_whole_model(const char *model, int runs)
{
    sl_err err;
    sl_params p;
    sl_hf_model *ck = sl_hf_model_open(model, &err);
    if (!ck || sl_params_load(&p, ck, 0, sl_hf_model_config(ck)->n_layer, true, true, true, &err) != 0) {
        fprintf(stderr, "whole model: %s\n", err.msg);
        sl_hf_model_destroy(&ck);
        return NAN;
    }
    sl_backprop *tr = sl_backprop_new(&p, 4, 64, &err);
    int32_t ids[256], targets[256];
    train_batch(ids, targets, p.cfg.vocab_size);
    double t[32];
    for (int r = -1; tr && r < runs; r++) {
        float loss;
        double t0 = sl_now();
        sl_backprop_zero_grad(tr);
        sl_backprop_forward(tr, ids, NULL, targets, NULL, &loss, &err);
        sl_backprop_backward(tr, NULL, NULL, &err);
        sl_backprop_step(tr, &SL_ADAMW_DEFAULT, 1.0f);
        if (r >= 0) t[r] = sl_now() - t0;
    }
    double median = tr ? sl_median(t, runs) : NAN;
    sl_backprop_destroy(&tr);
    sl_params_free(&p);
    sl_hf_model_destroy(&ck);
    return median;
}

/* Median seconds per training step of an in-process trainer. */
static double time_trainer(sl_trainer *tr, int runs)
{
    int32_t ids[256], targets[256];
    train_batch(ids, targets, 50257);
    double t[32];
    sl_err err;
    for (int r = -1; tr && r < runs; r++) {
        float loss;
        double t0 = sl_now();
        if (sl_trainer_step(tr, ids, targets, &loss, &err) != 0) {
            fprintf(stderr, "train: %s\n", err.msg);
            return NAN;
        }
        if (r >= 0) t[r] = sl_now() - t0;
    }
    return tr ? sl_median(t, runs) : NAN;
}

/* A made-up text of about `words` words for the training tool (tokens/s do not depend on it). */
static int write_text(const char *path, int words)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    static const char *const w[] = {"the", "light", "of", "day", "and", "night", "upon", "water", "land", "said"};
    for (int i = 0; i < words; i++)
        fprintf(f, "%s%s", w[(i * 7 + i / 10) % 10], i % 12 == 11 ? ".\n" : " ");
    return fclose(f);
}

/* Runs zmq-splitlearn-train through the topology (its trunk on a node) for runs + 1 steps of
 * B=4 x T=64, pinned like the nodes; returns the median step time in ms from its CSV log (the
 * first step left out) and the tool's peak RSS in *kb: the process that holds bottom and top. */
static double time_train_tool(const char *bin_dir, const char *topo_path, int runs, const cpus *c, long *kb)
{
    char data[96], csv[96], tool[4200], steps[16], threads[16];
    snprintf(data, sizeof data, "%s.txt", topo_path);
    snprintf(csv, sizeof csv, "%s.csv", topo_path);
    snprintf(tool, sizeof tool, "%s/zmq-splitlearn-train", bin_dir);
    snprintf(steps, sizeof steps, "%d", runs + 1);
    snprintf(threads, sizeof threads, "%d", c->threads);
    *kb = -1;
    if (write_text(data, 256 * (runs + 2)) != 0) return NAN;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        sched_setaffinity(0, sizeof c->set, &c->set);
        if (!freopen("/dev/null", "w", stdout)) _exit(127);
        execl(tool, tool, topo_path, "--data", data, "--batch", "4", "--seq-len", "64", "--steps", steps, "--threads",
              threads, "--pin", "--log", csv, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "zmq-splitlearn-train failed (status %d)\n", status);
        return NAN;
    }
    *kb = ru.ru_maxrss;
    double ms[64];
    int n = 0;
    char line[256];
    FILE *f = fopen(csv, "r");
    while (f && fgets(line, sizeof line, f) && n < 64) {
        long step;
        double loss, lr, tps;
        /* step,loss,eval_loss,lr,tokens_per_s,seconds; eval_loss is empty here */
        if (sscanf(line, "%ld,%lf,,%lf,%lf", &step, &loss, &lr, &tps) == 4 && step > 1 && tps > 0)
            ms[n++] = 256e3 / tps;
    }
    if (f) fclose(f);
    unlink(data);
    unlink(csv);
    return n ? sl_median(ms, n) : NAN;
}

static void train_bench(const char *model, const char *bin_dir, const char *topo_path, const char *ready,
                        const char *log_path, int runs, const cpus *c)
{
    static sl_topology topo;
    sl_err err;
    if (sl_topology_load(topo_path, &topo, true, &err) != 0) return;
    double whole_ms = time_whole_model(model, runs) * 1e3;
    sl_trainer_opts o = {.batch = 4, .seq_len = 64, .grad_accum = 1, .adamw = SL_ADAMW_DEFAULT};
    sl_trainer *local = sl_trainer_new(topo.parts, &o, &err);
    double local_ms = time_trainer(local, runs) * 1e3;
    sl_trainer_destroy(&local);
    char launcher[4200];
    snprintf(launcher, sizeof launcher, "%s/zmq-splitlearn-launch", bin_dir);
    pid_t pid = launch(launcher, topo_path, ready, log_path, topo.nodes[1].name, c);
    long tool_kb = -1, trunk_kb = -1;
    double remote_ms = time_train_tool(bin_dir, topo_path, runs, c, &tool_kb);
    char cmd[64], line[256];
    snprintf(cmd, sizeof cmd, "pgrep -P %d", (int)pid);
    FILE *fp = popen(cmd, "r");
    if (fp && fgets(line, sizeof line, fp)) trunk_kb = sl_status_kb((pid_t)atoi(line), "VmHWM");
    if (fp) pclose(fp);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    printf("\n| training B=4 T=64 (forward, loss, backward, AdamW; %d threads per process, pinned; median of %d), "
           "124M | ms per step | tokens/s | ratio to the whole model |\n|---|---|---|---|\n",
           c->threads, runs);
    printf("| whole model, one process | %.0f | %.0f | 1.000 |\n", whole_ms, 256e3 / whole_ms);
    printf("| 3-stage split, chained in one process | %.0f | %.0f | %.3f |\n", local_ms, 256e3 / local_ms,
           local_ms / whole_ms);
    printf("| 3-stage pipeline: zmq-splitlearn-train (bottom, top) and the trunk's node, tcp loopback | %.0f | %.0f | "
           "%.3f |\n",
           remote_ms, 256e3 / remote_ms, remote_ms / whole_ms);
    printf("| peak RSS of zmq-splitlearn-train (bottom [0,2) and top [10,12)), MB | %.0f | | |\n", tool_kb / 1024.0);
    printf("| peak RSS of the training trunk node [2,10), MB | %.0f | | |\n", trunk_kb / 1024.0);
}

/* ---- --probe and --probe-model: one measurement, for a script that interleaves them ---- */

typedef struct probe_opts {
    const char *topology, *model; /* --probe, --probe-model */
    const char *cert, *before, *after;
    long kill_pid, kill_after;
} probe_opts;

/* Runs a --before or --after command (sh -c). */
static void hook(const char *cmd)
{
    fflush(stdout);
    if (cmd && system(cmd) != 0) fprintf(stderr, "warning: '%s' failed\n", cmd);
}

/* --probe: a warm-up generation, then `runs` timed ones on the same connection. */
static int probe_pipeline(const probe_opts *o, int prompt, int decode, int runs)
{
    static sl_topology topo;
    sl_err err;
    if (sl_topology_load(o->topology, &topo, false, &err) != 0)
        return fprintf(stderr, "zmq-splitlearn-bench-pipeline: %s\n", err.msg), SL_EXIT_FAILURE;
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int vocab = sl_split_read_index(topo.parts, parts, SL_MAX_SPLITS + 1, &err) > 0 ? parts[0].cfg.vocab_size : 50257;
    int32_t ids[512], out[512];
    prompt_ids(ids, prompt, vocab);
    job j = {.topo = &topo, .ids = ids, .prompt = prompt, .decode = decode, .vocab = vocab};
    sl_client *c = sl_client_new(&topo, o->cert, &err);
    timing warm = {0}, first = {0};
    int rc = c ? generate_timed(c, &j, decode < 4 ? decode : 4, &warm, out, &err) : -1;
    if (rc == 0) hook(o->before);
    double pre[32], tok[32];
    for (int r = 0; r < runs && rc == 0; r++) {
        timing t = {.kill_pid = r == 0 ? (pid_t)o->kill_pid : 0, .kill_after = (int)o->kill_after};
        rc = generate_timed(c, &j, decode, &t, out, &err);
        pre[r] = t.first - t.start, tok[r] = typical_decode_time(&t);
        if (r == 0) first = t;
    }
    if (rc == 0) hook(o->after);
    sl_client_destroy(&c);
    if (rc != 0) return fprintf(stderr, "zmq-splitlearn-bench-pipeline: %s\n", err.msg), SL_EXIT_FAILURE;
    printf("prefill_ms %.3f decode_ms %.4f", sl_median(pre, runs) * 1e3, sl_median(tok, runs) * 1e3);
    if (o->kill_pid) printf(" recovery_ms %.1f", first.recovered > 0 ? (first.recovered - first.killed) * 1e3 : NAN);
    printf("\n");
    return SL_EXIT_OK;
}

/* --probe-model: the monolithic model in this process, its threads pinned. */
static int probe_model(const char *model, int prompt, int decode, int runs, int threads)
{
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(model, &err);
    if (!ck) return fprintf(stderr, "zmq-splitlearn-bench-pipeline: %s\n", err.msg), SL_EXIT_FAILURE;
    int32_t ids[512];
    prompt_ids(ids, prompt, sl_hf_model_config(ck)->vocab_size);
    sl_hf_model_destroy(&ck);
    sl_threads_setup(threads, true, &err);
    double pre, tok;
    monolithic(model, ids, prompt, decode, runs, true, &pre, &tok);
    printf("prefill_ms %.3f decode_ms %.4f\n", pre * 1e3, tok * 1e3);
    return SL_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"runs", 1, 0, 'r'},   {"prompt", 1, 0, 'p'}, {"decode", 1, 0, 'd'},      {"threads", 1, 0, 't'},
        {"port", 1, 0, 'P'},   {"probe", 1, 0, 'b'},  {"probe-model", 1, 0, 'm'}, {"cert", 1, 0, 'C'},
        {"before", 1, 0, 'B'}, {"after", 1, 0, 'A'},  {"kill", 1, 0, 'k'},        {"kill-after", 1, 0, 'K'},
        SL_TOOL_OPTIONS,       {0, 0, 0, 0}};
    long runs = 5, prompt = 64, decode = 32, threads = 2, port = 5801;
    probe_opts probe = {.kill_after = 8};
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c == 'r')
            rc = sl_parse_long(optarg, "--runs", 1, 31, &runs, &err);
        else if (c == 'p')
            rc = sl_parse_long(optarg, "--prompt", 1, 512, &prompt, &err);
        else if (c == 'd')
            rc = sl_parse_long(optarg, "--decode", 2, 512, &decode, &err);
        else if (c == 't')
            rc = sl_parse_long(optarg, "--threads", 1, 64, &threads, &err);
        else if (c == 'P')
            rc = sl_parse_long(optarg, "--port", 1024, 65000, &port, &err);
        else if (c == 'b')
            probe.topology = optarg;
        else if (c == 'm')
            probe.model = optarg;
        else if (c == 'C')
            probe.cert = optarg;
        else if (c == 'B')
            probe.before = optarg;
        else if (c == 'A')
            probe.after = optarg;
        else if (c == 'k')
            rc = sl_parse_long(optarg, "--kill", 1, INT_MAX, &probe.kill_pid, &err);
        else if (c == 'K')
            rc = sl_parse_long(optarg, "--kill-after", 1, 511, &probe.kill_after, &err);
        else
            return sl_tool_other_option(c, "zmq-splitlearn-bench-pipeline", usage);
    }
    bool probing = probe.topology || probe.model;
    if (rc == 0 && probing && (argc != optind || (probe.kill_pid && probe.kill_after >= decode)))
        rc = sl_fail(&err, "--probe and --probe-model take no other arguments; --kill-after must be below --decode");
    if (rc == 0 && probing)
        return probe.topology ? probe_pipeline(&probe, (int)prompt, (int)decode, (int)runs)
                              : probe_model(probe.model, (int)prompt, (int)decode, (int)runs, (int)threads);
    if (rc == 0 && argc - optind != 2) rc = sl_fail(&err, "give MODEL_DIR and PARTS_DIR");
    if (rc != 0) return sl_tool_usage_error("zmq-splitlearn-bench-pipeline", err.msg);
    const char *model = argv[optind], *parts_dir = argv[optind + 1];
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int n_parts = sl_split_read_index(parts_dir, parts, SL_MAX_SPLITS + 1, &err);
    if (n_parts != 3) return fprintf(stderr, "%s: need a 3-part split (%s)\n", parts_dir, err.msg), SL_EXIT_FAILURE;
    char *abs_parts = realpath(parts_dir, NULL);
    char topo_path[] = "/tmp/sl-bench-pipeline-XXXXXX.ini", ready[64], log_path[64], text[4096];
    int fd = mkstemps(topo_path, 4);
    close(fd);
    snprintf(ready, sizeof ready, "%s.ready", topo_path);
    snprintf(log_path, sizeof log_path, "%s.log", topo_path);
    int len = snprintf(text, sizeof text, "[pipeline]\nparts = %s\ntimeout = 60\n", abs_parts);
    for (int i = 0; i < 3; i++)
        len +=
            snprintf(text + len, sizeof text - (size_t)len,
                     "[node.%s]\nrole = %s\nlayers = %d-%d\nlisten = tcp://127.0.0.1:%ld\nthreads = %ld\npin = yes\n",
                     parts[i].name, sl_role_name(parts[i].role), parts[i].first, parts[i].last, port + i, threads);
    free(abs_parts);
    sl_write_text_file(topo_path, text, &err);

    const sl_config *cfg = &parts[0].cfg;
    int32_t *ids = malloc((size_t)prompt * sizeof *ids);
    prompt_ids(ids, (int)prompt, cfg->vocab_size);
    cpus cpus_before = {.threads = (int)threads};
    sched_getaffinity(0, sizeof cpus_before.set, &cpus_before.set);
    sl_threads_setup((int)threads, true, &err);
    double mono_prefill, mono_token;
    monolithic(model, ids, (int)prompt, (int)decode, (int)runs, false, &mono_prefill, &mono_token);

    char exe[4096], launcher[4200];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(launcher, sizeof launcher, "%s/zmq-splitlearn-launch", exe);
    pid_t pid = launch(launcher, topo_path, ready, log_path, NULL, &cpus_before);
    static sl_topology topo;
    if (access(ready, F_OK) != 0 || sl_topology_load(topo_path, &topo, true, &err) != 0) {
        sl_err ignored;
        char *log = sl_read_text_file(log_path, 1 << 20, &ignored);
        fprintf(stderr, "pipeline did not start:\n%s", log ? log : "(no log)\n");
        free(log);
        kill(pid, SIGTERM);
        return SL_EXIT_FAILURE;
    }
    zsys_handler_set(NULL);
    double pre[32], tok[32];
    job one = {.topo = &topo,
               .ids = ids,
               .prompt = (int)prompt,
               .decode = (int)decode,
               .vocab = cfg->vocab_size,
               .generations = 1};
    for (int r = -1; r < runs; r++) {
        client_job(&one);
        if (one.rc != 0) fprintf(stderr, "client: %s\n", one.err);
        if (r >= 0) pre[r] = one.prefill, tok[r] = one.per_token;
    }
    double pipe_prefill = sl_median(pre, (int)runs), pipe_token = sl_median(tok, (int)runs);
    printf("| 3-stage pipeline vs monolithic (%d layers, %d wide; %ld threads per process, pinned; median of %ld) | "
           "monolithic | pipeline | ratio |\n|---|---|---|---|\n",
           cfg->n_layer, cfg->n_embd, threads, runs);
    printf("| prefill %ld tokens to first token, ms | %.1f | %.1f | %.3f |\n", prompt, mono_prefill * 1e3,
           pipe_prefill * 1e3, pipe_prefill / mono_prefill);
    printf("| decode, ms per token | %.2f | %.2f | %.3f |\n", mono_token * 1e3, pipe_token * 1e3,
           pipe_token / mono_token);
    printf("| decode overhead per hop (4 hops: client, bottom, trunk, top, client), ms | | %.3f | |\n",
           (pipe_token - mono_token) * 1e3 / 4);
    for (int clients = 1; clients <= 8; clients *= 2) {
        job jobs[8];
        pthread_t th[8];
        double t0 = sl_now();
        for (int i = 0; i < clients; i++) {
            jobs[i] = one;
            jobs[i].tokens = 0;
            jobs[i].generations = 2;
            pthread_create(&th[i], NULL, client_job, &jobs[i]);
        }
        int total = 0;
        for (int i = 0; i < clients; i++)
            pthread_join(th[i], NULL), total += jobs[i].tokens;
        printf("| throughput, %d concurrent client%s (each 2 x %ld tokens after %ld), tokens/s | | %.1f | |\n", clients,
               clients > 1 ? "s" : "", decode, prompt, total / (sl_now() - t0));
    }
    char cmd[64], line[64];
    snprintf(cmd, sizeof cmd, "pgrep -P %d", (int)pid);
    FILE *fp = popen(cmd, "r");
    for (int i = 0; fp && fgets(line, sizeof line, fp); i++) {
        pid_t node = (pid_t)atoi(line);
        char comm[256] = "", path[64];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)node);
        FILE *cf = fopen(path, "r");
        size_t got = cf ? fread(comm, 1, sizeof comm - 1, cf) : 0;
        if (cf) fclose(cf);
        const char *name = comm;
        for (size_t k = 0, seen = 0; k < got; k++)
            if (!comm[k] && ++seen == 2) name = comm + k + 1; /* argv[2] */
        for (int k = 0; k < 3; k++)
            if (!strcmp(name, parts[k].name)) {
                double kv_mb =
                    8.0 * (parts[k].last - parts[k].first) * (double)(prompt + decode) * cfg->n_embd * 8 / 1048576.0;
                printf(
                    "| peak RSS of node %s, MB (part %.0f MB + KV of 8 sessions %.1f MB + 20 MB = %.0f) | | %.0f | |\n",
                    name, parts[k].bytes / 1048576.0, kv_mb, parts[k].bytes / 1048576.0 + kv_mb + 20,
                    sl_status_kb(node, "VmHWM") / 1024.0);
            }
    }
    if (fp) pclose(fp);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    train_bench(model, exe, topo_path, ready, log_path, (int)runs, &cpus_before);
    unlink(topo_path);
    unlink(log_path);
    free(ids);
    return SL_EXIT_OK;
}
