/* launch.c — zmq-splitlearn-launch: starts the nodes of a topology on every host through each
 * host's run prefix, ships them the topology, waits until each reports ready, prefixes their
 * logs with host/node, restarts the nodes that may be restarted, and stops them all on every
 * host when it is stopped (or dies: each node's standard input is its lifeline). */
#include "clock.h"
#include "cli.h"
#include "fileio.h"
#include "tool.h"
#include "topology.h"
#include "version.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const char usage[] =
    "usage: zmq-splitlearn-launch TOPOLOGY.ini [--host NAME]... [--only NODE]... [--ready-file FILE]\n"
    "                             [--start-timeout 120]\n"
    "\n"
    "Starts every node of the topology on its host: through the host's run prefix ([host.NAME] run;\n"
    "default 'ssh -o BatchMode=yes NAME', none for this machine), in its dir, with the programs of\n"
    "its bin (config/README.md). Each node gets the topology on its command line (the hosts need not\n"
    "have the file) and its standard input from a pipe of this launcher: its lifeline, so that no\n"
    "node outlives the launcher, through ssh too. Their output comes back here, each line prefixed\n"
    "[HOST/NODE]. Prints 'launch: all N nodes ready' (and creates --ready-file) once each has said\n"
    "it is ready. A node that dies is started again, with back-off, when its restart = yes;\n"
    "otherwise it is named and the others keep serving. SIGINT or SIGTERM stops every node.\n"
    "  --host NAME        start only the nodes of host NAME (repeatable)\n"
    "  --only NODE        start only the node NODE (repeatable; with --host, a node must match both)\n"
    "  --ready-file FILE  create FILE once every node is ready (removed when the launcher exits)\n"
    "  --start-timeout S  seconds a node may take to become ready (default 120)\n"
    "  --version, --help\n"
    "\n"
    "exit status: 0 stopped by SIGINT or SIGTERM, every node stopped cleanly\n"
    "             1 a node could not start or was not ready in time (the others were stopped),\n"
    "               no node is left (each died without restart = yes), or a node did not stop\n"
    "               cleanly when asked\n"
    "             2 usage or topology error: nothing was started\n"
    "A node's status, shown when it dies: 0 stopped, 1 could not start, 2 usage error; through a\n"
    "run prefix also 125 (no dir there), 126 or 127 (no zmq-splitlearn-node in bin there), 255 (ssh\n"
    "could not connect).\n";

enum {
    MAX_ARGS = SL_MAX_WORDS + 12, /* the run prefix's words, then env -C DIR NODE options */
    LINE_BUFFER = 8192,
};
static const double stop_grace = 2, kill_after = 10; /* seconds, when stopping */
static const double backoff_first = 0.5, backoff_max = 30, served_long = 60;

typedef enum child_state { STARTING, READY, WAITING, GONE } child_state;

/* One node and the local process that runs it (the node itself, or its run prefix). */
typedef struct child {
    const sl_topo_node *node;
    char label[200];      /* host/node, the prefix of its log lines */
    char ready_mark[96];  /* what its ready line holds */
    char *argv[MAX_ARGS]; /* the command, pointing into words, program, dir and the base64 text */
    char words[SL_MAX_HOST_TEXT];
    char program[PATH_MAX + 32];
    char dir[PATH_MAX];
    bool direct; /* no run prefix: the process is the node, started in dir */
    pid_t pid;   /* 0 when not running */
    int out, lifeline;
    char buf[LINE_BUFFER];
    size_t len;
    child_state state;
    int restarts, streak; /* all restarts; deaths in a row without serving long */
    double since;         /* when it started, became ready, or is due to start again */
    int status;           /* of its last exit */
} child;

typedef struct launcher {
    child *cs;
    int n;
    const char *ready_file;
    double start_timeout;
    bool all_ready; /* every node was ready once */
} launcher;

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* A line of the launcher's own, flushed at once so that it interleaves with the nodes' lines. */
static void say(FILE *to, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(FILE *to, const char *fmt, ...)
{
    fflush(stdout);
    fputs("launch: ", to);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(to, fmt, ap);
    va_end(ap);
    fputc('\n', to);
    fflush(to);
}

/* ---- how each node is started ---- */

/* The directory of this program: the default bin of every host. */
static int own_bin_dir(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0) return -1;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash) *slash = '\0';
    return 0;
}

typedef struct plan_inputs {
    const sl_topology *topo;
    const char *cwd, *bin;  /* the defaults of dir and bin */
    const char *text_here;  /* base64 topology for hosts in this launcher's layout */
    const char *text_there; /* base64 topology for hosts with their own dir */
} plan_inputs;

/* The run prefix's words into c->argv; returns their count (0: run directly), -1 on error. */
static int prefix_words(child *c, const sl_topo_host *host, sl_err *err)
{
    const char *name = c->node->host;
    char run[SL_MAX_HOST_TEXT];
    if (host && host->has_run)
        snprintf(run, sizeof run, "%s", host->run);
    else if (sl_topology_host_is_local(name))
        run[0] = '\0';
    else
        snprintf(run, sizeof run, "ssh -o BatchMode=yes %s", name);
    return sl_split_words(run, c->words, sizeof c->words, c->argv, SL_MAX_WORDS, err);
}

/* Fills c's command: [PREFIX... env -C DIR] BIN/zmq-splitlearn-node --lifeline --topology-data
 * B64 NODE. Through a prefix every word must pass a remote shell unchanged (ssh joins them). */
static int plan(child *c, const plan_inputs *in, sl_err *err)
{
    const sl_topo_host *host = sl_topology_host(in->topo, c->node->host);
    int n = prefix_words(c, host, err);
    if (n < 0) return -1;
    c->direct = n == 0;
    snprintf(c->dir, sizeof c->dir, "%s", host && host->dir[0] ? host->dir : in->cwd);
    snprintf(c->program, sizeof c->program, "%s/zmq-splitlearn-node", host && host->bin[0] ? host->bin : in->bin);
    if (!c->direct && (!sl_shell_safe(c->dir) || !sl_shell_safe(c->program)))
        return sl_fail(err,
                       "host %s: '%s' or '%s' has characters a remote shell would change; set dir and bin in "
                       "[host.%s] (letters, digits and %s)",
                       c->node->host, c->dir, c->program, c->node->host, SL_SHELL_SAFE_PUNCT);
    if (!c->direct) {
        c->argv[n++] = "env";
        c->argv[n++] = "-C";
        c->argv[n++] = c->dir;
    }
    c->argv[n++] = c->program;
    c->argv[n++] = "--lifeline";
    c->argv[n++] = "--topology-data";
    c->argv[n++] = (char *)(host && host->dir[0] ? in->text_there : in->text_here);
    c->argv[n++] = (char *)c->node->name;
    c->argv[n] = NULL;
    snprintf(c->label, sizeof c->label, "%s/%s", c->node->host, c->node->name);
    snprintf(c->ready_mark, sizeof c->ready_mark, " %s: ready on", c->node->name);
    return 0;
}

/* A path of the topology made absolute, as this launcher resolved it. */
static int absolute_line(char *out, size_t size, const char *key, const char *path, const char *cwd)
{
    return snprintf(out, size, "%s = %s%s%s\n", key, path[0] == '/' ? "" : cwd, path[0] == '/' ? "" : "/", path);
}

/* The topology's text with its parts (and certs) lines replaced by the directories this
 * launcher resolved, made absolute: a node in this launcher's layout runs in another directory
 * than the file's. */
static char *anchored_text(const char *text, const sl_topology *t, const char *cwd)
{
    size_t cap = strlen(text) + 4 * PATH_MAX + 64, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    int line = 1;
    for (const char *p = text; *p; line++) {
        size_t n = strcspn(p, "\n");
        if (line == t->parts_line)
            len += (size_t)absolute_line(out + len, cap - len, "parts", t->parts, cwd);
        else if (line == t->certs_line)
            len += (size_t)absolute_line(out + len, cap - len, "certs", t->certs, cwd);
        else
            len += (size_t)snprintf(out + len, cap - len, "%.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
    return out;
}

/* Base64 of text, checked to fit in one argument of a command line. Caller frees. */
static char *base64(const char *text, sl_err *err)
{
    size_t len = strlen(text), out_len = 4 * ((len + 2) / 3) + 1;
    if (out_len > 100000) return sl_fail(err, "the topology is too large to ship (%zu bytes)", len), NULL;
    unsigned char *out = malloc(out_len);
    if (!out) return sl_fail(err, "out of memory"), NULL;
    EVP_EncodeBlock(out, (const unsigned char *)text, (int)len);
    return (char *)out;
}

/* ---- running them ---- */

static int spawn(child *c)
{
    int out[2], life[2];
    if (pipe2(out, O_CLOEXEC) != 0) return -1;
    if (pipe2(life, O_CLOEXEC) != 0) return close(out[0]), close(out[1]), -1;
    pid_t parent = getpid();
    c->pid = fork();
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* no orphan even if the launcher is killed */
        if (getppid() != parent) _exit(1);
        setpgid(0, 0); /* a terminal's Ctrl-C reaches the launcher, which stops the nodes in order */
        signal(SIGPIPE, SIG_DFL);
        dup2(life[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(out[1], STDERR_FILENO);
        if (c->direct && chdir(c->dir) != 0) {
            fprintf(stderr, "cannot enter %s: %s\n", c->dir, strerror(errno));
            _exit(125);
        }
        execvp(c->argv[0], c->argv);
        fprintf(stderr, "cannot run %s: %s\n", c->argv[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(life[0]);
    if (c->pid < 0) return close(out[0]), close(life[1]), c->pid = 0, -1;
    setpgid(c->pid, c->pid); /* also here: the group must exist before the first kill(-pid) */
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    c->out = out[0];
    c->lifeline = life[1];
    c->len = 0;
    c->state = STARTING;
    c->since = sl_now();
    return 0;
}

static void on_ready(child *c)
{
    c->state = READY;
    c->since = sl_now();
    if (c->restarts) say(stdout, "%s ready again (restart %d)", c->label, c->restarts);
}

/* Relays complete lines with a [host/node] prefix; notices the ready line. */
static void relay(child *c, bool flush)
{
    char *start = c->buf, *nl;
    while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->buf))) || (flush && start < c->buf + c->len)) {
        size_t n = nl ? (size_t)(nl - start) : c->len - (size_t)(start - c->buf);
        printf("[%s] %.*s\n", c->label, (int)n, start);
        if (c->state == STARTING && memmem(start, n, c->ready_mark, strlen(c->ready_mark))) on_ready(c);
        start += n + (nl ? 1 : 0);
    }
    c->len -= (size_t)(start - c->buf);
    memmove(c->buf, start, c->len);
    if (c->len == sizeof c->buf) relay(c, true); /* an over-long line goes out in pieces */
    fflush(stdout);
}

/* Reads what c's output holds now; at its end relays the rest and closes it. */
static void read_output(child *c)
{
    for (;;) {
        ssize_t n = read(c->out, c->buf + c->len, sizeof c->buf - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            relay(c, false);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        relay(c, true);
        close(c->out);
        c->out = -1;
        return;
    }
}

static void close_lifeline(child *c)
{
    if (c->lifeline >= 0) close(c->lifeline);
    c->lifeline = -1;
}

/* Whether c's process has exited (then its status is kept, its pipes closed). */
static bool reaped(child *c, int flags)
{
    if (c->pid <= 0 || waitpid(c->pid, &c->status, flags) != c->pid) return false;
    c->pid = 0;
    close_lifeline(c); /* a node a prefix left behind stops too */
    if (c->out >= 0) read_output(c);
    if (c->out >= 0) close(c->out); /* held open by something the prefix left behind */
    c->out = -1;
    return true;
}

static void describe_exit(const child *c, char *out, size_t size)
{
    static const struct {
        int status;
        const char *hint;
    } hints[] = {{125, " (no dir there?)"},
                 {126, " (no zmq-splitlearn-node in bin there?)"},
                 {127, " (no zmq-splitlearn-node in bin there?)"},
                 {255, " (could the run prefix reach the host?)"}};
    if (WIFSIGNALED(c->status)) {
        snprintf(out, size, "was killed by signal %d", WTERMSIG(c->status));
        return;
    }
    const char *hint = "";
    for (size_t i = 0; i < sizeof hints / sizeof hints[0] && !c->direct; i++)
        if (WEXITSTATUS(c->status) == hints[i].status) hint = hints[i].hint;
    snprintf(out, size, "exited with status %d%s", WEXITSTATUS(c->status), hint);
}

static int count_in(const launcher *l, child_state state)
{
    int n = 0;
    for (int i = 0; i < l->n; i++)
        n += l->cs[i].state == state;
    return n;
}

/* Waits up to timeout_ms for output of any node and relays it. */
static void relay_outputs(launcher *l, int timeout_ms)
{
    struct pollfd fds[SL_MAX_NODES];
    for (int i = 0; i < l->n; i++)
        fds[i] = (struct pollfd){.fd = l->cs[i].out, .events = POLLIN};
    if (poll(fds, (nfds_t)l->n, timeout_ms) <= 0) return;
    for (int i = 0; i < l->n; i++)
        if (l->cs[i].out >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) read_output(&l->cs[i]);
}

/* Closes every lifeline and SIGTERMs the nodes run here; after stop_grace also what runs a
 * prefix; after kill_after SIGKILLs what is left, with its process group. */
static void stop_all(launcher *l)
{
    for (int i = 0; i < l->n; i++) {
        child *c = &l->cs[i];
        close_lifeline(c);
        if (c->pid > 0 && c->direct) kill(c->pid, SIGTERM);
    }
    double start = sl_now();
    bool termed = false;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < l->n; i++)
            alive += l->cs[i].pid > 0 && !reaped(&l->cs[i], WNOHANG);
        if (!alive) return;
        double waited = sl_now() - start;
        if (waited > kill_after) break;
        if (waited > stop_grace && !termed) {
            termed = true;
            for (int i = 0; i < l->n; i++)
                if (l->cs[i].pid > 0) kill(-l->cs[i].pid, SIGTERM);
        }
        relay_outputs(l, 10);
    }
    for (int i = 0; i < l->n; i++)
        if (l->cs[i].pid > 0) {
            say(stderr, "%s did not stop in %g s: killing it", l->cs[i].label, kill_after);
            kill(-l->cs[i].pid, SIGKILL);
            reaped(&l->cs[i], 0);
        }
}

/* A node died after the start: restart it, with back-off, or leave it gone. Returns -1 when no
 * node is left. */
static int on_death(launcher *l, child *c)
{
    char how[96];
    describe_exit(c, how, sizeof how);
    bool clean = WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0;
    if (c->node->restart && !clean) {
        bool served = c->state == READY && sl_now() - c->since >= served_long;
        c->streak = served ? 1 : c->streak + 1;
        double delay = backoff_first * (double)(1 << (c->streak < 8 ? c->streak - 1 : 7));
        delay = delay < backoff_max ? delay : backoff_max;
        c->restarts++;
        say(stderr, "%s %s; restarting it in %g s (restart %d)", c->label, how, delay, c->restarts);
        c->state = WAITING;
        c->since = sl_now() + delay;
        return 0;
    }
    c->state = GONE;
    int left = l->n - count_in(l, GONE);
    say(stderr, "%s %s; not restarted (restart = %s); %d of %d nodes left", c->label, how,
        c->node->restart ? "yes, but it stopped cleanly" : "no", left, l->n);
    return left > 0 ? 0 : -1;
}

/* Reaps the nodes that exited; returns -1 when the launcher must stop (a node failed to start,
 * or none is left). */
static int reap_deaths(launcher *l)
{
    for (int i = 0; i < l->n; i++) {
        child *c = &l->cs[i];
        if (!reaped(c, WNOHANG)) continue;
        if (l->all_ready && on_death(l, c) == 0) continue;
        if (!l->all_ready) {
            char how[96];
            describe_exit(c, how, sizeof how);
            say(stderr, "%s %s before it was ready; stopping the others", c->label, how);
        }
        return -1;
    }
    return 0;
}

/* Starts the nodes due again; kills a restarted node that is not ready in time (it is then
 * restarted again, later). */
static void restart_due(launcher *l)
{
    double now = sl_now();
    for (int i = 0; i < l->n; i++) {
        child *c = &l->cs[i];
        if (c->state == WAITING && now >= c->since && spawn(c) != 0) {
            say(stderr, "cannot start %s again: %s; trying in %g s", c->label, strerror(errno), backoff_max);
            c->since = now + backoff_max;
        }
        if (c->state == STARTING && c->pid > 0 && now - c->since > l->start_timeout) {
            say(stderr, "%s not ready %g s after restart %d: killing it", c->label, l->start_timeout, c->restarts);
            kill(-c->pid, SIGKILL);
            c->since = now; /* one kill */
        }
    }
}

/* Announces when every node is ready the first time; -1 when the start takes too long. */
static int check_start(launcher *l, double started)
{
    if (l->all_ready) return 0;
    if (count_in(l, READY) == l->n) {
        l->all_ready = true;
        say(stdout, "all %d node%s ready", l->n, l->n == 1 ? "" : "s");
        FILE *fp = l->ready_file ? fopen(l->ready_file, "w") : NULL;
        if (fp) fclose(fp);
        if (l->ready_file && !fp) say(stderr, "cannot create %s: %s", l->ready_file, strerror(errno));
        return 0;
    }
    if (sl_now() - started <= l->start_timeout) return 0;
    for (int i = 0; i < l->n; i++)
        if (l->cs[i].state != READY) say(stderr, "%s not ready after %g s", l->cs[i].label, l->start_timeout);
    return -1;
}

/* After a requested stop: 0 when every node that was running stopped cleanly. */
static int stopped_status(launcher *l, const bool *running)
{
    int rc = SL_EXIT_OK;
    for (int i = 0; i < l->n; i++) {
        const child *c = &l->cs[i];
        if (!running[i] || (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0)) continue;
        char how[96];
        describe_exit(c, how, sizeof how);
        say(stderr, "%s %s", c->label, how);
        rc = SL_EXIT_FAILURE;
    }
    return rc;
}

/* Relays logs and keeps the nodes running until stopped; returns the exit status. */
static int supervise(launcher *l)
{
    double started = sl_now();
    while (!stop_requested) {
        relay_outputs(l, 100);
        if (reap_deaths(l) != 0 || check_start(l, started) != 0) {
            stop_all(l);
            return SL_EXIT_FAILURE;
        }
        restart_due(l);
    }
    int running = 0;
    bool was_running[SL_MAX_NODES];
    for (int i = 0; i < l->n; i++)
        running += was_running[i] = l->cs[i].pid > 0;
    say(stdout, "stopping %d node%s", running, running == 1 ? "" : "s");
    stop_all(l);
    return stopped_status(l, was_running);
}

/* ---- the command line ---- */

typedef struct options {
    const char *topology, *ready_file;
    const char *hosts[SL_MAX_NODES], *only[SL_MAX_NODES];
    int n_hosts, n_only;
    double start_timeout;
} options;

/* Returns -1 with err on a bad command line (-2 when getopt said why); 1 when --help or
 * --version answered. */
static int parse_options(int argc, char **argv, options *o, sl_err *err)
{
    static const struct option long_options[] = {{"host", 1, 0, 'H'},       {"only", 1, 0, 'o'},
                                                 {"ready-file", 1, 0, 'r'}, {"start-timeout", 1, 0, 's'},
                                                 SL_TOOL_OPTIONS,           {0, 0, 0, 0}};
    *o = (options){.start_timeout = 120};
    int c;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        if ((c == 'H' && o->n_hosts == SL_MAX_NODES) || (c == 'o' && o->n_only == SL_MAX_NODES))
            return sl_fail(err, "more than %d --host or --only", SL_MAX_NODES);
        if (c == 'H')
            o->hosts[o->n_hosts++] = optarg;
        else if (c == 'o')
            o->only[o->n_only++] = optarg;
        else if (c == 'r')
            o->ready_file = optarg;
        else if (c == 's' && sl_parse_double(optarg, "--start-timeout", 0.1, 1e6, &o->start_timeout, err) != 0)
            return -1;
        else if (c == 'h' || c == 'V')
            return sl_tool_other_option(c, "zmq-splitlearn-launch", usage), 1; /* --help, --version */
        else if (c == '?')
            return -2;
    }
    if (argc - optind != 1) return sl_fail(err, "give one TOPOLOGY.ini");
    o->topology = argv[optind];
    return 0;
}

static bool listed(const char *name, const char *const *list, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], name)) return true;
    return false;
}

/* Every --host and --only names something of the topology. */
static int check_selection(const options *o, const sl_topology *t, sl_err *err)
{
    for (int i = 0; i < o->n_only; i++)
        if (!sl_topology_node(t, o->only[i]))
            return sl_fail(err, "--only %s: %s has no [node.%s]", o->only[i], o->topology, o->only[i]);
    for (int i = 0; i < o->n_hosts; i++) {
        bool found = false;
        for (int j = 0; j < t->n_nodes; j++)
            found |= !strcmp(t->nodes[j].host, o->hosts[i]);
        if (!found)
            return sl_fail(err, "--host %s: no node of %s has host = %s", o->hosts[i], o->topology, o->hosts[i]);
    }
    return 0;
}

/* The selected nodes into cs (each says so when it is not started); returns their count. */
static int select_nodes(const options *o, const sl_topology *t, child *cs)
{
    int n = 0;
    for (int i = 0; i < t->n_nodes; i++) {
        const sl_topo_node *node = &t->nodes[i];
        bool by_host = !o->n_hosts || listed(node->host, o->hosts, o->n_hosts);
        bool by_name = !o->n_only || listed(node->name, o->only, o->n_only);
        if (by_host && by_name)
            cs[n++] = (child){.node = node, .out = -1, .lifeline = -1};
        else
            say(stdout, "%s/%s not started here (%s)", node->host, node->name, by_host ? "--only" : "--host");
    }
    return n;
}

/* The base64 texts of the topology for the nodes: as written, and anchored to this launcher. */
static int ship_texts(const char *path, const sl_topology *t, const char *cwd, char **here, char **there, sl_err *err)
{
    char *text = sl_read_text_file(path, 1 << 20, err);
    char *anchored = text ? anchored_text(text, t, cwd) : NULL;
    if (text && !anchored) sl_fail(err, "out of memory");
    *here = anchored ? base64(anchored, err) : NULL;
    *there = *here ? base64(text, err) : NULL;
    free(text);
    free(anchored);
    return *there ? 0 : -1;
}

/* Loads the topology and plans each selected node's command; the parts are checked here when
 * every selected node runs here in this launcher's layout. Returns the count, -1 on error. */
static int prepare(const options *o, sl_topology *t, child *cs, char **here, char **there, sl_err *err)
{
    char cwd[PATH_MAX], bin[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || own_bin_dir(bin, sizeof bin) != 0)
        return sl_fail(err, "cannot find the working directory or this program's: %s", strerror(errno));
    if (sl_topology_load(o->topology, t, false, err) != 0 || check_selection(o, t, err) != 0) return -1;
    int n = select_nodes(o, t, cs);
    if (n == 0) return sl_fail(err, "no node selected");
    if (ship_texts(o->topology, t, cwd, here, there, err) != 0) return -1;
    plan_inputs in = {.topo = t, .cwd = cwd, .bin = bin, .text_here = *here, .text_there = *there};
    bool parts_here = true;
    for (int i = 0; i < n; i++) {
        if (plan(&cs[i], &in, err) != 0) return -1;
        const sl_topo_host *host = sl_topology_host(t, cs[i].node->host);
        parts_here &= cs[i].direct && !(host && host->dir[0]);
    }
    static sl_topology checked;
    if (parts_here && sl_topology_load(o->topology, &checked, true, err) != 0) return -1;
    return n;
}

int main(int argc, char **argv)
{
    options o;
    sl_err err;
    int rc = parse_options(argc, argv, &o, &err);
    if (rc != 0) {
        if (rc == -1) fprintf(stderr, "zmq-splitlearn-launch: %s\n", err.msg);
        if (rc < 0) fputs("see zmq-splitlearn-launch --help\n", stderr);
        return rc < 0 ? SL_EXIT_USAGE : SL_EXIT_OK;
    }
    static sl_topology topo;
    static child cs[SL_MAX_NODES];
    char *text_here = NULL, *text_there = NULL;
    int n = prepare(&o, &topo, cs, &text_here, &text_there, &err);
    if (n < 0) {
        fprintf(stderr, "zmq-splitlearn-launch: %s\n", err.msg);
        free(text_here);
        free(text_there);
        return SL_EXIT_USAGE;
    }
    struct sigaction stop = {.sa_handler = on_signal}, ignore = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGPIPE, &ignore, NULL);
    if (o.ready_file) unlink(o.ready_file);
    launcher l = {.cs = cs, .n = n, .ready_file = o.ready_file, .start_timeout = o.start_timeout};
    for (int i = 0; i < n && rc == 0; i++)
        if (spawn(&cs[i]) != 0) {
            say(stderr, "cannot start %s: %s", cs[i].label, strerror(errno));
            rc = -1;
        }
    rc = rc == 0 ? supervise(&l) : (stop_all(&l), SL_EXIT_FAILURE);
    if (o.ready_file) unlink(o.ready_file);
    free(text_here);
    free(text_there);
    return rc;
}
