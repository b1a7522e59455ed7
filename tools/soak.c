/* soak.c — zmq-splitlearn-soak: minutes of mixed load on a running pipeline, to see it stay
 * correct and bounded: clients whose every answer is compared with zmq-splitlearn-run's tokens,
 * sessions abandoned mid-generation, malformed messages to every node, and one node killed with
 * SIGKILL half-way (its launcher, restart = yes, starts it again). Prints requests, correct,
 * errors and each node's RSS at start and end against the bound its KV caches allow. */
#include "clock.h"
#include "cli.h"
#include "client.h"
#include "gen_opts.h"
#include "net.h"
#include "procfs.h"
#include "rng.h"
#include "split.h"
#include "tool.h"
#include "wire.h"

#include <ctype.h>
#include <czmq.h>
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static const char usage[] =
    "usage: zmq-splitlearn-soak TOPOLOGY.ini MODEL_DIR --launcher PID [--seconds 90] [--clients 8]\n"
    "                           [--kill NODE] [--seed 1]\n"
    "\n"
    "The pipeline of TOPOLOGY.ini runs under zmq-splitlearn-launch, process PID, on this machine\n"
    "(no run prefix: its nodes are its children) with restart = yes; MODEL_DIR is the unsplit model.\n"
    "For --seconds, --clients threads generate (each answer compared with zmq-splitlearn-run's ids\n"
    "for the same prompt and options), one thread opens sessions and leaves them mid-generation,\n"
    "one sends malformed messages to every node (random bytes, mutated valid messages, several\n"
    "frames, over-long routing ids); half-way NODE (default: the first trunk) is killed with\n"
    "SIGKILL. An error must name NODE and come while it restarts. A node's RSS at the end may\n"
    "exceed its RSS at the start by max_sessions x its KV bytes per session (n_positions positions)\n"
    "plus its part's bytes (paged in from the mapping) plus 8 MB (allocator, ZeroMQ buffers).\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 every answer right and every node within its bound; 1 a wrong answer, an\n"
    "             error that does not name the killed node or comes outside its restart, a node\n"
    "             over its bound or not back; 2 usage error\n";

enum { N_CASES = 16, MAX_NEW = 40, MAX_PROMPT = 20, MAX_ERRORS = 256, BURST = 16 };
static const double allowance_mb = 8;

/* A generation and the ids zmq-splitlearn-run gives for it. */
typedef struct gen_case {
    sl_gen_opts opts;
    char args[256]; /* the options as run takes them */
    int32_t expected[MAX_NEW];
    int n_expected;
} gen_case;

typedef struct error_seen {
    double at;
    sl_err err;
} error_seen;

/* One node of the pipeline as this machine sees it. */
typedef struct node_proc {
    const sl_topo_node *node;
    const sl_part_info *part;
    pid_t pid;
    long rss_start_kb, rss_end_kb;
} node_proc;

typedef struct soak {
    sl_topology topo;
    sl_part_info parts[SL_MAX_SPLITS + 1];
    node_proc procs[SL_MAX_NODES];
    pid_t launcher;
    const char *victim;
    gen_case cases[N_CASES];
    double start, deadline, kill_at, back_at; /* back_at: the first correct answer after the kill */
    pthread_mutex_t lock;
    long requests, correct, wrong, abandoned, malformed, fuzz_answers;
    error_seen errors[MAX_ERRORS];
    long n_errors;
} soak;

/* ---- the reference answers ---- */

/* Applies one generation option to c and appends it to c->args. */
static int add_option(gen_case *c, int code, const char *flag, const char *value, sl_err *err)
{
    size_t len = strlen(c->args);
    snprintf(c->args + len, sizeof c->args - len, "%s%s%s%s", len ? " " : "", flag, value ? " " : "",
             value ? value : "");
    return sl_gen_opts_apply(&c->opts, code, value, err);
}

/* Case i: a random prompt, length and sampling (greedy for every fourth). */
static int make_case(gen_case *c, int i, const sl_config *cfg, sl_rng *rng, sl_err *err)
{
    sl_gen_opts_init(&c->opts);
    char ids[MAX_PROMPT * 8] = "", value[32];
    int n = 2 + (int)sl_rng_below(rng, MAX_PROMPT - 1);
    for (int k = 0; k < n; k++)
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", k ? "," : "",
                 (int)sl_rng_below(rng, (uint64_t)cfg->vocab_size));
    int room = cfg->n_positions - n - 1 < MAX_NEW ? cfg->n_positions - n - 1 : MAX_NEW;
    snprintf(value, sizeof value, "%d", 1 + (int)sl_rng_below(rng, (uint64_t)room));
    int rc = add_option(c, 1000, "--ids", ids, err) | add_option(c, 1001, "--max-new-tokens", value, err);
    if (i % 4 == 0) return rc | add_option(c, 1002, "--greedy", NULL, err);
    snprintf(value, sizeof value, "%.2f", 0.6 + 0.8 * sl_rng_uniform(rng));
    rc |= add_option(c, 1003, "--temperature", value, err);
    snprintf(value, sizeof value, "%d", i % 3 ? 0 : 50);
    rc |= add_option(c, 1004, "--top-k", value, err);
    snprintf(value, sizeof value, "%.2f", i % 2 ? 1.0 : 0.9);
    rc |= add_option(c, 1005, "--top-p", value, err);
    snprintf(value, sizeof value, "%d", (int)sl_rng_below(rng, 1000000));
    return rc | add_option(c, 1006, "--seed", value, err);
}

/* Runs zmq-splitlearn-run for c and reads the ids it prints. */
static int run_reference(const char *bin, const char *model, gen_case *c, sl_err *err)
{
    char program[PATH_MAX + 32], words_buf[sizeof c->args], *argv[SL_MAX_WORDS + 8];
    snprintf(program, sizeof program, "%s/zmq-splitlearn-run", bin);
    int n = 0;
    argv[n++] = program;
    argv[n++] = (char *)model;
    int w = sl_split_words(c->args, words_buf, sizeof words_buf, argv + n, SL_MAX_WORDS, err);
    if (w < 0) return -1;
    n += w;
    argv[n++] = "--print-ids", argv[n++] = "--quiet", argv[n++] = "--ignore-eos", argv[n] = NULL;
    int out[2];
    if (pipe(out) != 0) return sl_fail(err, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        execv(program, argv);
        _exit(127);
    }
    close(out[1]);
    FILE *fp = fdopen(out[0], "r");
    int status = 0;
    c->n_expected = 0;
    while (fp && c->n_expected < MAX_NEW && fscanf(fp, "%d", &c->expected[c->n_expected]) == 1)
        c->n_expected++;
    if (fp) fclose(fp);
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return sl_fail(err, "%s %s %s failed (status %d)", program, model, c->args, status);
    return c->n_expected == c->opts.max_new_tokens ? 0
                                                   : sl_fail(err, "zmq-splitlearn-run %s printed %d ids, not %d",
                                                             c->args, c->n_expected, c->opts.max_new_tokens);
}

/* ---- the nodes' processes ---- */

/* The parent and the last argument (a node's name) of process pid. */
static int process_of(pid_t pid, pid_t *parent, char *last, size_t size)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    size_t got = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
    if (fp) fclose(fp);
    buf[got] = '\0';
    char *after = strrchr(buf, ')');
    int ppid = 0;
    if (!after || sscanf(after, ") %*c %d", &ppid) != 1) return -1;
    *parent = (pid_t)ppid;
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    fp = fopen(path, "r");
    got = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
    if (fp) fclose(fp);
    if (got == 0) return -1;
    buf[got] = '\0';
    size_t start = got - 1; /* the last argument ends with the last NUL */
    while (start > 0 && buf[start - 1] != '\0')
        start--;
    size_t len = strnlen(buf + start, size - 1);
    memcpy(last, buf + start, len);
    last[len] = '\0';
    return 0;
}

/* The process of node `name` among the launcher's children (0 when none runs now). */
static pid_t find_node(pid_t launcher, const char *name)
{
    DIR *d = opendir("/proc");
    pid_t found = 0;
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid_t pid = (pid_t)atoi(e->d_name), parent;
        char last[96];
        if (process_of(pid, &parent, last, sizeof last) == 0 && parent == launcher && !strcmp(last, name)) found = pid;
    }
    if (d) closedir(d);
    return found;
}

/* Bytes a node's RSS may grow by: every session's KV cache at n_positions, its part, allowance. */
static double bound_mb(const soak *s, const node_proc *p)
{
    const sl_config *cfg = &p->part->cfg;
    double kv = 2.0 * (p->part->last - p->part->first) * cfg->n_positions * cfg->n_embd * sizeof(float);
    return (s->topo.max_sessions * kv + (double)p->part->bytes) / 1048576.0 + allowance_mb;
}

/* ---- load ---- */

static void record(soak *s, const gen_case *c, int rc, const int32_t *out, int n, const sl_err *err)
{
    double now = sl_now();
    pthread_mutex_lock(&s->lock);
    s->requests++;
    bool same = rc == 0 && n == c->n_expected && !memcmp(out, c->expected, (size_t)n * sizeof *out);
    if (same) {
        s->correct++;
        if (s->kill_at > 0 && s->back_at == 0) s->back_at = now;
    } else if (rc == 0) {
        if (s->wrong++ < 5) {
            fprintf(stderr, "soak: WRONG answer to %s:", c->args);
            for (int i = 0; i < n; i++)
                fprintf(stderr, " %d", out[i]);
            fprintf(stderr, " (run: %d ids)\n", c->n_expected);
        }
    } else if (s->n_errors < MAX_ERRORS) {
        error_seen *e = &s->errors[s->n_errors++];
        e->at = now;
        e->err = *err;
    } else {
        s->n_errors++;
    }
    pthread_mutex_unlock(&s->lock);
}

typedef struct scratch scratch;

typedef struct worker {
    soak *s;
    uint64_t seed;
    pthread_t thread;
    void (*step)(soak *s, sl_rng *rng, scratch *sc); /* what a loop_thread repeats, pause us apart */
    useconds_t pause;
} worker;

/* A valid client: generates the cases in random order, each answer checked, paced below the
 * bottom's 50 new sessions a second per client. */
static void *client_thread(void *arg)
{
    worker *w = arg;
    soak *s = w->s;
    sl_rng rng;
    sl_rng_seed(&rng, w->seed);
    sl_err err;
    sl_client *c = sl_client_new(&s->topo, NULL, &err);
    const sl_config *cfg = &s->parts[0].cfg;
    while (c && sl_now() < s->deadline) {
        const gen_case *gc = &s->cases[sl_rng_below(&rng, N_CASES)];
        sl_client_request req = {.ids = gc->opts.ids,
                                 .n_ids = gc->opts.n_ids,
                                 .max_new_tokens = gc->opts.max_new_tokens,
                                 .sampling = gc->opts.sampling,
                                 .eos_token = -1,
                                 .vocab_size = cfg->vocab_size,
                                 .n_positions = cfg->n_positions,
                                 .timeout = s->topo.timeout};
        int32_t out[MAX_NEW];
        int n = 0;
        int rc = sl_client_generate(c, &req, out, &n, &err);
        record(s, gc, rc, out, n, &err);
        usleep(25000 + (useconds_t)sl_rng_below(&rng, 25000));
    }
    if (!c) record(s, &s->cases[0], -1, NULL, 0, &err);
    sl_client_destroy(&c);
    return NULL;
}

/* A valid forward for node i: token ids for the bottom, activations for the others. */
static sl_msg valid_forward(const soak *s, int i, sl_rng *rng, int32_t *ids, float *x)
{
    const sl_config *cfg = &s->parts[0].cfg;
    int T = 1 + (int)sl_rng_below(rng, 8);
    sl_msg m = {.kind = SL_MSG_FORWARD,
                .ctx = (uint32_t)(T + 8),
                .has_sample = true,
                .sample = SL_SAMPLING_GREEDY,
                .dtype = s->topo.activations};
    sl_id_new(&m.session, NULL); /* a fresh session, as a client draws it */
    for (int k = 0; k < T; k++)
        ids[k] = (int32_t)sl_rng_below(rng, (uint64_t)cfg->vocab_size);
    for (int k = 0; k < T * cfg->n_embd; k++)
        x[k] = sl_rng_normal(rng);
    if (i == 0)
        m.ids = ids, m.n_ids = (uint32_t)T;
    else
        m.x = x, m.rows = (uint32_t)T, m.cols = (uint32_t)cfg->n_embd;
    return m;
}

/* Whether a message waits on sock within ms milliseconds. */
static bool readable(zsock_t *sock, int ms)
{
    zmq_pollitem_t item = {.socket = zsock_resolve(sock), .events = ZMQ_POLLIN};
    return zmq_poll(&item, 1, ms) > 0;
}

static void count(soak *s, long *counter, long n)
{
    pthread_mutex_lock(&s->lock);
    *counter += n;
    pthread_mutex_unlock(&s->lock);
}

/* The token of the result waiting on sock, or -1. */
static int32_t read_token(zsock_t *sock, sl_wire_decoder *dec)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    sl_msg res;
    sl_wire_limits limits = {0};
    sl_err err;
    bool got = zmq_msg_recv(&frame, zsock_resolve(sock), 0) >= 0 &&
               sl_wire_decode(dec, zmq_msg_data(&frame), zmq_msg_size(&frame), &limits, &res, &err) == 0 &&
               res.kind == SL_MSG_RESULT;
    zmq_msg_close(&frame);
    return got ? res.token : -1;
}

struct scratch {
    int32_t ids[8];
    float *x; /* 8 rows of n_embd */
    msgpack_sbuffer buf;
    sl_wire_decoder *dec;
};

static int scratch_init(scratch *sc, const soak *s)
{
    sc->x = malloc((size_t)8 * s->parts[0].cfg.n_embd * sizeof *sc->x);
    sc->dec = sl_wire_decoder_new();
    msgpack_sbuffer_init(&sc->buf);
    return sc->x && sc->dec ? 0 : -1;
}

static void scratch_free(scratch *sc)
{
    free(sc->x);
    sl_wire_decoder_destroy(&sc->dec);
    msgpack_sbuffer_destroy(&sc->buf);
}

/* A session opened and left without an end: half right after the prompt, half after sending
 * the next token, whose answer nobody reads. */
static void abandon_one(soak *s, sl_rng *rng, scratch *sc)
{
    sl_err err;
    sl_net_opts o = sl_net_opts_of(&s->topo);
    zsock_t *sock = sl_net_connect(ZMQ_DEALER, &o, s->topo.nodes[0].listen, &err);
    if (!sock) return;
    sl_msg m = valid_forward(s, 0, rng, sc->ids, sc->x);
    bool sent = sl_wire_encode(&m, &sc->buf, &err) == 0 &&
                sl_net_send(sock, sc->buf.data, sc->buf.size, false, "bottom", &err) == 0;
    int32_t token = sent && sl_rng_below(rng, 2) && readable(sock, 2000) ? read_token(sock, sc->dec) : -1;
    if (token >= 0) {
        sc->ids[0] = token;
        m.step = 1, m.pos = m.n_ids, m.n_ids = 1;
        if (sl_wire_encode(&m, &sc->buf, &err) == 0)
            sl_net_send(sock, sc->buf.data, sc->buf.size, false, "bottom", &err);
    }
    zsock_destroy(&sock);
    count(s, &s->abandoned, 1);
}

/* ---- malformed messages ---- */

static void random_bytes(sl_rng *rng, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)sl_rng_next(rng);
}

/* A malformed message for node i into out (cap bytes): random bytes, or a valid forward, end or
 * result for that node with bytes flipped, cut off, garbage appended or a run overwritten with
 * 0x00 or 0xff (msgpack's smallest int and its largest marker). Returns its length. */
static size_t malformed(const soak *s, int i, sl_rng *rng, scratch *sc, unsigned char *out, size_t cap)
{
    int how = (int)sl_rng_below(rng, 5);
    if (how == 0) {
        size_t len = (size_t)sl_rng_below(rng, cap / 2);
        random_bytes(rng, out, len);
        return len;
    }
    sl_msg m = valid_forward(s, i, rng, sc->ids, sc->x);
    int kind = (int)sl_rng_below(rng, 6);
    if (kind == 0) m.kind = SL_MSG_END;
    if (kind == 1) m.kind = SL_MSG_RESULT, m.token = 7;
    sl_err err;
    if (sl_wire_encode(&m, &sc->buf, &err) != 0) return 0;
    size_t len = sc->buf.size < cap - 64 ? sc->buf.size : cap - 64;
    memcpy(out, sc->buf.data, len);
    size_t at = (size_t)sl_rng_below(rng, len), run = 1 + (size_t)sl_rng_below(rng, 8);
    if (how == 1)
        for (int k = 0; k < 1 + (int)sl_rng_below(rng, 4); k++)
            out[sl_rng_below(rng, len)] ^= (unsigned char)(1u << sl_rng_below(rng, 8));
    if (how == 2) len = at;
    if (how == 3) {
        size_t more = (size_t)sl_rng_below(rng, 64);
        random_bytes(rng, out + len, more);
        len += more;
    }
    if (how == 4) memset(out + at, sl_rng_below(rng, 2) ? 0xff : 0x00, at + run <= len ? run : len - at);
    return len;
}

/* One connection to node i that sends BURST malformed messages, reads what comes back for a
 * moment and closes. One in eight has a 100-byte routing id (nodes take at most SL_PEER_MAX),
 * one in eight sends each message as two frames. The socket is made here, not by lib/net.c: it
 * must do what the project's sockets never do. */
static void burst(soak *s, int i, sl_rng *rng, scratch *sc)
{
    int shape = (int)sl_rng_below(rng, 8);
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    if (!sock) return;
    zsock_set_linger(sock, 200);
    if (shape == 0) {
        unsigned char id[100];
        random_bytes(rng, id, sizeof id);
        id[0] |= 1; /* ids starting with a zero byte are ZeroMQ's own */
        zmq_setsockopt(zsock_resolve(sock), ZMQ_ROUTING_ID, id, sizeof id);
    }
    long sent = 0, answers = 0;
    unsigned char msg[4096];
    if (zsock_connect(sock, "%s", s->topo.nodes[i].listen) == 0) {
        for (int k = 0; k < BURST; k++) {
            size_t len = malformed(s, i, rng, sc, msg, sizeof msg);
            if (shape == 1) zmq_send(zsock_resolve(sock), msg, len / 2, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            sent += zmq_send(zsock_resolve(sock), msg + (shape == 1 ? len / 2 : 0), len - (shape == 1 ? len / 2 : 0),
                             ZMQ_DONTWAIT) >= 0;
        }
        for (; readable(sock, 50); answers++) {
            zmq_msg_t frame;
            zmq_msg_init(&frame);
            zmq_msg_recv(&frame, zsock_resolve(sock), 0);
            zmq_msg_close(&frame);
        }
    }
    zsock_destroy(&sock);
    count(s, &s->malformed, sent);
    count(s, &s->fuzz_answers, answers);
}

/* A burst of malformed messages to every node. */
static void fuzz_round(soak *s, sl_rng *rng, scratch *sc)
{
    for (int i = 0; i < s->topo.n_nodes; i++)
        burst(s, i, rng, sc);
}

/* Repeats w->step until the deadline. */
static void *loop_thread(void *arg)
{
    worker *w = arg;
    sl_rng rng;
    sl_rng_seed(&rng, w->seed);
    scratch sc;
    for (int ok = scratch_init(&sc, w->s) == 0; ok && sl_now() < w->s->deadline; usleep(w->pause))
        w->step(w->s, &rng, &sc);
    scratch_free(&sc);
    return NULL;
}

/* ---- the run ---- */

static void sleep_until(double t)
{
    for (double left = t - sl_now(); left > 0; left = t - sl_now())
        usleep(left > 0.5 ? 500000 : (useconds_t)(left * 1e6));
}

/* Kills the victim half-way; returns its old pid. */
static pid_t kill_victim(soak *s)
{
    sleep_until(s->start + (s->deadline - s->start) / 2);
    pid_t pid = find_node(s->launcher, s->victim);
    if (pid <= 0 || kill(pid, SIGKILL) != 0) return 0;
    pthread_mutex_lock(&s->lock);
    s->kill_at = sl_now();
    pthread_mutex_unlock(&s->lock);
    return pid;
}

/* The victim's new process, once the launcher started it again (0 after 30 s without). */
static pid_t wait_back(const soak *s, pid_t old)
{
    for (double end = sl_now() + 30; sl_now() < end; usleep(100000)) {
        pid_t pid = find_node(s->launcher, s->victim);
        if (pid > 0 && pid != old) return pid;
    }
    return 0;
}

/* Errors that do not name the killed node or come outside its restart (from the kill to a
 * timeout after the first correct answer that followed it); the first few are printed. */
static long unexplained(const soak *s)
{
    double until = (s->back_at > 0 ? s->back_at : s->deadline) + s->topo.timeout + 1;
    long n = s->n_errors > MAX_ERRORS ? s->n_errors - MAX_ERRORS : 0;
    for (long i = 0; i < s->n_errors && i < MAX_ERRORS; i++) {
        const error_seen *e = &s->errors[i];
        if (s->kill_at > 0 && e->at >= s->kill_at && e->at <= until && strstr(e->err.msg, s->victim)) continue;
        if (n++ < 5) fprintf(stderr, "soak: error at %.1f s: %s\n", e->at - s->start, e->err.msg);
    }
    return n;
}

/* Prints each node's RSS at start and end against its bound; returns how many are over. */
static int report_rss(const soak *s, pid_t restarted)
{
    int over = 0;
    printf("| node | RSS at start, MB | RSS at end, MB | growth, MB | bound on the growth, MB: %d sessions x KV at "
           "n_positions + part + %.0f | |\n"
           "|---|---|---|---|---|---|\n",
           s->topo.max_sessions, allowance_mb);
    for (int i = 0; i < s->topo.n_nodes; i++) {
        const node_proc *p = &s->procs[i];
        double start = p->rss_start_kb / 1024.0, end = p->rss_end_kb / 1024.0, bound = bound_mb(s, p);
        bool ok = p->rss_start_kb > 0 && p->rss_end_kb > 0 && end - start <= bound;
        over += !ok;
        printf("| %s%s | %.1f | %.1f | %+.1f | %.1f | %s |\n", p->node->name,
               restarted && !strcmp(p->node->name, s->victim) ? " (restarted)" : "", start, end, end - start, bound,
               ok ? "ok" : "OVER");
    }
    return over;
}

static int start_threads(soak *s, worker *w, int clients)
{
    for (int i = 0; i < clients + 2; i++) {
        w[i] = (worker){.s = s,
                        .seed = 1000 + (uint64_t)i,
                        .step = i == clients ? abandon_one : fuzz_round,
                        .pause = i == clients ? 50000 : 20000};
        void *(*fn)(void *) = i < clients ? client_thread : loop_thread;
        if (pthread_create(&w[i].thread, NULL, fn, &w[i]) != 0) return -1;
    }
    return 0;
}

/* The topology, each node's part and process, and the victim. */
static int prepare(soak *s, const char *topology, const char *victim, sl_err *err)
{
    if (sl_topology_load(topology, &s->topo, true, err) != 0) return -1;
    int n = sl_split_read_index(s->topo.parts, s->parts, SL_MAX_SPLITS + 1, err), part_of[SL_MAX_NODES];
    if (n < 0 || sl_topology_match_parts(&s->topo, s->parts, n, s->topo.parts, part_of, err) != 0) return -1;
    for (int i = 0; i < s->topo.n_nodes; i++) {
        const sl_topo_node *node = &s->topo.nodes[i];
        s->procs[i] =
            (node_proc){.node = node, .part = &s->parts[part_of[i]], .pid = find_node(s->launcher, node->name)};
        if (!s->procs[i].pid)
            return sl_fail(err, "no node %s among the children of process %d", node->name, s->launcher);
        if (!victim && node->role == SL_ROLE_TRUNK) victim = node->name;
    }
    if (!victim || !sl_topology_node(&s->topo, victim))
        return sl_fail(err, "--kill %s: no such node (and no trunk to kill by default)", victim ? victim : "");
    s->victim = victim;
    return 0;
}

static int make_cases(soak *s, const char *model, uint64_t seed, sl_err *err)
{
    char bin[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", bin, sizeof bin - 1);
    bin[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(bin, '/');
    if (slash) *slash = '\0';
    sl_rng rng;
    sl_rng_seed(&rng, seed);
    for (int i = 0; i < N_CASES; i++)
        if (make_case(&s->cases[i], i, &s->parts[0].cfg, &rng, err) != 0 ||
            run_reference(bin, model, &s->cases[i], err) != 0)
            return -1;
    return 0;
}

/* The load, the kill half-way, the RSS at start and end; returns the exit status. */
static int soak_run(soak *s, double seconds, int clients)
{
    for (int i = 0; i < s->topo.n_nodes; i++)
        s->procs[i].rss_start_kb = sl_status_kb(s->procs[i].pid, "VmRSS");
    worker w[34];
    s->start = sl_now();
    s->deadline = s->start + seconds;
    if (start_threads(s, w, clients) != 0) return fprintf(stderr, "soak: cannot start threads\n"), SL_EXIT_FAILURE;
    pid_t old = kill_victim(s);
    for (int i = 0; i < clients + 2; i++)
        pthread_join(w[i].thread, NULL);
    pid_t back = old ? wait_back(s, old) : 0;
    for (int i = 0; i < s->topo.n_nodes; i++)
        s->procs[i].rss_end_kb = sl_status_kb(find_node(s->launcher, s->procs[i].node->name), "VmRSS");
    if (old)
        printf("killed %s (pid %d) with SIGKILL at %.1f s; back as pid %d; the first correct answer after the kill "
               "came %.2f s after it\n",
               s->victim, (int)old, s->kill_at - s->start, (int)back, s->back_at > 0 ? s->back_at - s->kill_at : NAN);
    long other = unexplained(s);
    printf("requests %ld\ncorrect  %ld\nwrong    %ld\nerrors   %ld (%ld naming %s while it restarted, %ld other)\n",
           s->requests, s->correct, s->wrong, s->n_errors, s->n_errors - other, s->victim, other);
    printf("abandoned sessions %ld; malformed messages %ld to %d nodes (%ld answers came back)\n", s->abandoned,
           s->malformed, s->topo.n_nodes, s->fuzz_answers);
    int over = report_rss(s, back);
    bool pass = s->wrong == 0 && other == 0 && over == 0 && old && back && s->correct > 0;
    printf("soak: %s\n", pass ? "passed" : "FAILED");
    return pass ? SL_EXIT_OK : SL_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"launcher", 1, 0, 'l'},
                                            {"seconds", 1, 0, 's'},
                                            {"clients", 1, 0, 'c'},
                                            {"kill", 1, 0, 'k'},
                                            {"seed", 1, 0, 'S'},
                                            SL_TOOL_OPTIONS,
                                            {0, 0, 0, 0}};
    long launcher = 0, clients = 8, seed = 1;
    double seconds = 90;
    const char *victim = NULL;
    sl_err err;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c == 'l')
            rc = sl_parse_long(optarg, "--launcher", 1, INT_MAX, &launcher, &err);
        else if (c == 's')
            rc = sl_parse_double(optarg, "--seconds", 4, 3600, &seconds, &err);
        else if (c == 'c')
            rc = sl_parse_long(optarg, "--clients", 1, 32, &clients, &err);
        else if (c == 'k')
            victim = optarg;
        else if (c == 'S')
            rc = sl_parse_long(optarg, "--seed", 0, LONG_MAX, &seed, &err);
        else
            return sl_tool_other_option(c, "zmq-splitlearn-soak", usage);
    }
    if (rc == 0 && (argc - optind != 2 || !launcher)) rc = sl_fail(&err, "give TOPOLOGY.ini, MODEL_DIR and --launcher");
    if (rc != 0) return sl_tool_usage_error("zmq-splitlearn-soak", err.msg);
    static soak s;
    s.launcher = (pid_t)launcher;
    pthread_mutex_init(&s.lock, NULL);
    zsys_handler_set(NULL);
    if (prepare(&s, argv[optind], victim, &err) != 0 || make_cases(&s, argv[optind + 1], (uint64_t)seed, &err) != 0)
        return fprintf(stderr, "zmq-splitlearn-soak: %s\n", err.msg), SL_EXIT_FAILURE;
    printf("soak: %d nodes of %s for %.0f s: %ld clients (answers checked against zmq-splitlearn-run on %d cases), "
           "abandoned sessions, malformed messages, %s killed half-way\n",
           s.topo.n_nodes, s.topo.path, seconds, clients, N_CASES, s.victim);
    fflush(stdout);
    return soak_run(&s, seconds, (int)clients);
}
