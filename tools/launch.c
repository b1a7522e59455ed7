/* launch.c — zmq-splitlearn-launch: starts every node of a topology that runs on this host,
 * waits until each reports ready, prefixes their logs with the node name, and stops them all
 * when it is stopped or when one of them dies. */
#include "clock.h"
#include "cli.h"
#include "topology.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: zmq-splitlearn-launch TOPOLOGY.ini [--only NODE]... [--ready-file FILE] [--start-timeout 120]\n"
    "\n"
    "Starts the topology's nodes whose host is this machine (localhost, 127.0.0.1 or its hostname),\n"
    "or only the --only ones, prefixes their logs with [NODE], and prints 'launch: all N nodes\n"
    "ready' (and creates --ready-file) once each has said so. SIGINT or SIGTERM stops them all.\n"
    "\n"
    "exit status: 0 stopped on request; 1 a node failed to start or died (named on stderr);\n"
    "             2 usage or topology error\n";

typedef struct child {
    const sl_topo_node *node;
    pid_t pid;
    int fd; /* its stdout + stderr */
    char buf[8192];
    size_t len;
    bool ready, exited;
    int status;
} child;

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static bool is_local(const char *host)
{
    char name[256] = "";
    gethostname(name, sizeof name - 1);
    return !strcmp(host, "localhost") || !strcmp(host, "127.0.0.1") || !strcmp(host, "::1") || !strcmp(host, name);
}

static int node_program(char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    int len = snprintf(out, size, "%s/zmq-splitlearn-node", n > 0 ? exe : ".");
    return len > 0 && (size_t)len < size ? 0 : -1;
}

static int spawn(child *c, const char *program, const char *topology)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    pid_t parent = getpid();
    c->pid = fork();
    if (c->pid < 0) return -1;
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* no orphans even if the launcher is killed */
        if (getppid() != parent) _exit(1);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        execl(program, program, topology, c->node->name, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", program, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    c->fd = fds[0];
    return 0;
}

/* Relays complete lines with a [name] prefix; notices the ready line. */
static void relay(child *c, bool flush)
{
    char ready_mark[96];
    snprintf(ready_mark, sizeof ready_mark, " %s: ready", c->node->name);
    char *start = c->buf, *nl;
    while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->buf))) || (flush && start < c->buf + c->len)) {
        size_t n = nl ? (size_t)(nl - start) : c->len - (size_t)(start - c->buf);
        printf("[%s] %.*s\n", c->node->name, (int)n, start);
        if (!c->ready && memmem(start, n, ready_mark, strlen(ready_mark))) c->ready = true;
        start += n + (nl ? 1 : 0);
    }
    c->len -= (size_t)(start - c->buf);
    memmove(c->buf, start, c->len);
    if (c->len == sizeof c->buf) relay(c, true); /* an over-long line goes out in pieces */
    fflush(stdout);
}

static void read_output(child *c)
{
    ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (n > 0) {
        c->len += (size_t)n;
        relay(c, false);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        relay(c, true);
        close(c->fd);
        c->fd = -1;
    }
}

static void reap(child *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].pid > 0 && !cs[i].exited && waitpid(cs[i].pid, &cs[i].status, WNOHANG) == cs[i].pid)
            cs[i].exited = true;
}

static void describe_exit(const child *c, char *out, size_t size)
{
    if (WIFSIGNALED(c->status))
        snprintf(out, size, "killed by signal %d", WTERMSIG(c->status));
    else
        snprintf(out, size, "exited with status %d", WEXITSTATUS(c->status));
}

/* SIGTERM to all, up to 10 s to go, then SIGKILL. */
static void stop_all(child *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].pid > 0 && !cs[i].exited) kill(cs[i].pid, SIGTERM);
    for (int waited = 0; waited < 1000; waited++) {
        for (int i = 0; i < n; i++)
            if (cs[i].fd >= 0) {
                struct pollfd p = {.fd = cs[i].fd, .events = POLLIN};
                if (poll(&p, 1, 0) > 0) read_output(&cs[i]);
            }
        reap(cs, n);
        int alive = 0;
        for (int i = 0; i < n; i++)
            alive += cs[i].pid > 0 && !cs[i].exited;
        if (!alive) return;
        usleep(10000);
    }
    for (int i = 0; i < n; i++)
        if (cs[i].pid > 0 && !cs[i].exited) {
            fprintf(stderr, "launch: %s did not stop in 10 s: killing it\n", cs[i].node->name);
            kill(cs[i].pid, SIGKILL);
            waitpid(cs[i].pid, &cs[i].status, 0);
            cs[i].exited = true;
        }
}

/* Relays logs until stopped or a node dies; returns the exit status. */
static int supervise(child *cs, int n, const char *ready_file, double start_timeout)
{
    bool all_ready = false;
    double started = sl_now();
    while (!stop_requested) {
        struct pollfd fds[SL_MAX_NODES];
        for (int i = 0; i < n; i++)
            fds[i] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
        poll(fds, (nfds_t)n, 100);
        for (int i = 0; i < n; i++)
            if (cs[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP))) read_output(&cs[i]);
        reap(cs, n);
        for (int i = 0; i < n; i++)
            if (cs[i].exited) {
                char how[64];
                describe_exit(&cs[i], how, sizeof how);
                fprintf(stderr, "launch: node %s %s%s; stopping the others\n", cs[i].node->name, how,
                        cs[i].ready ? "" : " before it was ready");
                stop_all(cs, n);
                return SL_EXIT_FAILURE;
            }
        int ready = 0;
        for (int i = 0; i < n; i++)
            ready += cs[i].ready;
        if (!all_ready && ready == n) {
            all_ready = true;
            printf("launch: all %d nodes ready\n", n);
            fflush(stdout);
            FILE *fp = ready_file ? fopen(ready_file, "w") : NULL;
            if (fp) fclose(fp);
        }
        if (!all_ready && sl_now() - started > start_timeout) {
            for (int i = 0; i < n; i++)
                if (!cs[i].ready)
                    fprintf(stderr, "launch: node %s not ready after %g s\n", cs[i].node->name, start_timeout);
            stop_all(cs, n);
            return SL_EXIT_FAILURE;
        }
    }
    printf("launch: stopping %d nodes\n", n);
    stop_all(cs, n);
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (!WIFEXITED(cs[i].status) || WEXITSTATUS(cs[i].status) != 0) {
            char how[64];
            describe_exit(&cs[i], how, sizeof how);
            fprintf(stderr, "launch: node %s %s\n", cs[i].node->name, how);
            failed = 1;
        }
    if (ready_file) unlink(ready_file);
    return failed ? SL_EXIT_FAILURE : SL_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"only", 1, 0, 'o'},
                                            {"ready-file", 1, 0, 'r'},
                                            {"start-timeout", 1, 0, 's'},
                                            {"help", 0, 0, 'h'},
                                            {0, 0, 0, 0}};
    const char *only[SL_MAX_NODES], *ready_file = NULL;
    int n_only = 0, c, rc = 0;
    double start_timeout = 120;
    sl_err err;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        if (c == 'o' && n_only < SL_MAX_NODES)
            only[n_only++] = optarg;
        else if (c == 'r')
            ready_file = optarg;
        else if (c == 's')
            rc = sl_parse_double(optarg, "--start-timeout", 0.1, 1e6, &start_timeout, &err);
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    if (rc == 0 && argc - optind != 1) rc = sl_fail(&err, "give one TOPOLOGY.ini");
    static sl_topology topo;
    if (rc == 0 && sl_topology_load(argv[optind], &topo, true, &err) != 0) rc = -1;
    for (int i = 0; rc == 0 && i < n_only; i++)
        if (!sl_topology_node(&topo, only[i]))
            rc = sl_fail(&err, "--only %s: %s has no [node.%s]", only[i], argv[optind], only[i]);
    if (rc != 0) {
        fprintf(stderr, "zmq-splitlearn-launch: %s\n", err.msg);
        return SL_EXIT_USAGE;
    }
    child cs[SL_MAX_NODES];
    int n = 0;
    for (int i = 0; i < topo.n_nodes; i++) {
        bool chosen = n_only ? false : is_local(topo.nodes[i].host);
        for (int k = 0; k < n_only; k++)
            chosen |= strcmp(only[k], topo.nodes[i].name) == 0;
        if (chosen) cs[n++] = (child){.node = &topo.nodes[i], .fd = -1};
    }
    if (n == 0) {
        fprintf(stderr, "zmq-splitlearn-launch: no node of %s runs on this host\n", argv[optind]);
        return SL_EXIT_USAGE;
    }
    struct sigaction stop = {.sa_handler = on_signal}, ignore = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGPIPE, &ignore, NULL);
    char program[PATH_MAX];
    if (node_program(program, sizeof program) != 0) return SL_EXIT_FAILURE;
    for (int i = 0; i < n; i++)
        if (spawn(&cs[i], program, argv[optind]) != 0) {
            fprintf(stderr, "zmq-splitlearn-launch: cannot start %s: %s\n", cs[i].node->name, strerror(errno));
            stop_all(cs, i);
            return SL_EXIT_FAILURE;
        }
    return supervise(cs, n, ready_file, start_timeout);
}
