/* topology.c — parsing (inih, fed line by line so that errors carry line numbers) and validation
 * of pipeline topology files. */
#include "topology.h"

#include "cli.h"
#include "fileio.h"
#include "split.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum section_kind { SECTION_NONE, SECTION_PIPELINE, SECTION_NODE, SECTION_HOST } section_kind;

typedef struct parse_state {
    sl_topology *t;
    FILE *fp;
    int line;                          /* line the reader returned last */
    int pipeline_line;                 /* 0 when there is no [pipeline] */
    section_kind section;              /* the section being read */
    sl_topo_node *node;                /* its node, for [node.NAME] */
    sl_topo_host *host;                /* its host, for [host.NAME] */
    bool seen[SL_MAX_NODES][4];        /* role, layers, listen, restart given */
    int defence_line[SL_MAX_NODES][2]; /* where clip/noise, grad_clip/grad_noise were set (0: not) */
    int train_set[SL_MAX_NODES];       /* a node's own train = (1 yes, 0 no, -1 the pipeline's) */
    bool checkpoint_set[SL_MAX_NODES]; /* a node's own max_checkpoint_mb given */
    bool pipeline_train;
    int kv_set[SL_MAX_NODES]; /* a node's own kv dtype, or -1: the pipeline's */
    sl_dtype pipeline_kv;
    char keys_section[128]; /* the section whose keys keys_seen holds */
    struct {
        char key[48];
        int line;
    } keys_seen[32]; /* keys of that section so far: a key given twice is an error */
    int n_keys_seen;
    sl_err *err;
    int rc;
} parse_state;

static const char pipeline_keys[] = "name, parts, activations, timeout, idle_timeout, max_sessions, max_message_mb, "
                                    "hwm, verify, max_train_tokens, checkpoint_root, security, certs, clients, "
                                    "trainers, train, restart, kv, max_checkpoint_mb";
static const char node_keys[] = "role, layers, listen, host, threads, pin, kv, cert, train, restart, "
                                "max_checkpoint_mb, clip, noise (bottom), grad_clip, grad_noise (top)";
static const char host_keys[] = "run, dir, bin";

/* Node and host names travel as program arguments to other hosts (ssh takes a leading '-' for an
 * option) and prefix log lines: letters, digits and extra, not starting with '-'. */
static bool plain_name(const char *name, const char *extra)
{
    if (!name[0] || name[0] == '-') return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(extra, *p)) return false;
    return true;
}

static const char node_name_chars[] = "._-", host_name_chars[] = "._-@:";

static void open_pipeline(parse_state *ps)
{
    if (ps->pipeline_line)
        ps->rc = sl_fail(ps->err, "%s:%d: second [pipeline] section (the first is at line %d)", ps->t->path, ps->line,
                         ps->pipeline_line);
    ps->pipeline_line = ps->line;
    ps->section = SECTION_PIPELINE;
}

static void open_node(parse_state *ps, const char *section, const char *name)
{
    sl_topology *t = ps->t;
    for (int i = 0; i < t->n_nodes && ps->rc == 0; i++)
        if (strcmp(t->nodes[i].name, name) == 0)
            ps->rc = sl_fail(ps->err, "%s:%d: [%s] appears twice (first at line %d); give each node its own name",
                             t->path, ps->line, section, t->nodes[i].line);
    if (ps->rc == 0 && t->n_nodes == SL_MAX_NODES)
        ps->rc = sl_fail(ps->err, "%s:%d: more than %d nodes", t->path, ps->line, SL_MAX_NODES);
    if (ps->rc == 0 && strlen(name) >= sizeof t->nodes[0].name)
        ps->rc = sl_fail(ps->err, "%s:%d: node name too long", t->path, ps->line);
    if (ps->rc == 0 && !plain_name(name, node_name_chars))
        ps->rc = sl_fail(ps->err, "%s:%d: [%s]: a node name has letters, digits and %s (no leading '-')", t->path,
                         ps->line, section, node_name_chars);
    if (ps->rc != 0) return;
    ps->node = &t->nodes[t->n_nodes++];
    snprintf(ps->node->name, sizeof ps->node->name, "%.63s", name);
    snprintf(ps->node->host, sizeof ps->node->host, "localhost");
    ps->node->line = ps->line;
    ps->train_set[ps->node - t->nodes] = -1;
    ps->kv_set[ps->node - t->nodes] = -1;
    ps->section = SECTION_NODE;
}

static void open_host(parse_state *ps, const char *section, const char *name)
{
    sl_topology *t = ps->t;
    for (int i = 0; i < t->n_hosts && ps->rc == 0; i++)
        if (strcmp(t->hosts[i].name, name) == 0)
            ps->rc = sl_fail(ps->err, "%s:%d: [%s] appears twice (first at line %d)", t->path, ps->line, section,
                             t->hosts[i].line);
    if (ps->rc == 0 && t->n_hosts == SL_MAX_NODES)
        ps->rc = sl_fail(ps->err, "%s:%d: more than %d hosts", t->path, ps->line, SL_MAX_NODES);
    if (ps->rc == 0 && (strlen(name) >= sizeof t->hosts[0].name || !plain_name(name, host_name_chars)))
        ps->rc = sl_fail(ps->err, "%s:%d: [%s]: a host name has letters, digits and %s (no leading '-')", t->path,
                         ps->line, section, host_name_chars);
    if (ps->rc != 0) return;
    ps->host = &t->hosts[t->n_hosts++];
    snprintf(ps->host->name, sizeof ps->host->name, "%s", name);
    ps->host->line = ps->line;
    ps->section = SECTION_HOST;
}

/* inih reads through this, so the state always knows the current line; section headers are
 * handled here too, because inih reports a section only once it has a key. */
static char *read_line(char *buf, int size, void *stream)
{
    parse_state *ps = stream;
    if (ps->rc != 0 || !fgets(buf, size, ps->fp)) return NULL;
    ps->line++;
    const char *p = buf + strspn(buf, " \t");
    if (*p != '[') return buf;
    const char *end = strchr(p, ']');
    if (!end) {
        ps->rc = sl_fail(ps->err, "%s:%d: not INI syntax: a section header without ']'", ps->t->path, ps->line);
        return buf;
    }
    char section[128];
    snprintf(section, sizeof section, "%.*s", (int)(end - p - 1), p + 1);
    if (strcmp(section, "pipeline") == 0)
        open_pipeline(ps);
    else if (strncmp(section, "node.", 5) == 0 && section[5])
        open_node(ps, section, section + 5);
    else if (strncmp(section, "host.", 5) == 0 && section[5])
        open_host(ps, section, section + 5);
    else
        ps->rc = sl_fail(ps->err, "%s:%d: unknown section [%s]; sections are [pipeline], [node.NAME] and [host.NAME]",
                         ps->t->path, ps->line, section);
    return buf;
}

static int parse_layers(parse_state *ps, const char *value)
{
    int a, b, n = 0;
    if (sscanf(value, "%d-%d%n", &a, &b, &n) != 2 || value[n] || a < 0 || b <= a)
        return sl_fail(ps->err, "%s:%d: layers = %s: write FIRST-LAST with FIRST < LAST, e.g. 0-2 for blocks [0,2)",
                       ps->t->path, ps->line, value);
    ps->node->first = a;
    ps->node->last = b;
    return 0;
}

static int parse_bool(parse_state *ps, const char *key, const char *value, bool *out)
{
    if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1")) return *out = true, 0;
    if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0")) return *out = false, 0;
    return sl_fail(ps->err, "%s:%d: %s = %s: write yes or no", ps->t->path, ps->line, key, value);
}

static int parse_endpoint(parse_state *ps, const char *value, char *out)
{
    if ((strncmp(value, "tcp://", 6) != 0 && strncmp(value, "ipc://", 6) != 0) || strlen(value) >= SL_MAX_ENDPOINT ||
        strlen(value) < 8)
        return sl_fail(ps->err, "%s:%d: listen = %s: write tcp://HOST:PORT or ipc:///PATH", ps->t->path, ps->line,
                       value);
    const char *colon = strrchr(value + 6, ':');
    long port;
    if (!strncmp(value, "tcp://", 6) && (!colon || sl_parse_long(colon + 1, "port", 1, 65535, &port, NULL) != 0))
        return sl_fail(ps->err, "%s:%d: listen = %s: the port must be a number in 1..65535 (tcp://HOST:PORT)",
                       ps->t->path, ps->line, value);
    snprintf(out, SL_MAX_ENDPOINT, "%s", value);
    return 0;
}

/* A certificate name: letters, digits, '-', '_' and '.' not first (it names files in certs). */
static int parse_name(parse_state *ps, const char *key, const char *value, char *out, size_t size)
{
    size_t len = strlen(value);
    bool ok = len > 0 && len < size && value[0] != '.' &&
              strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == len;
    if (!ok)
        return sl_fail(ps->err, "%s:%d: %s = '%s': a certificate name is 1-%zu letters, digits, '-', '_' or '.'",
                       ps->t->path, ps->line, key, value, size - 1);
    memcpy(out, value, len + 1);
    return 0;
}

/* "a, b, c": certificate names. */
static int parse_names(parse_state *ps, const char *key, const char *value, sl_party_list *list)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", value);
    list->n = 0;
    for (char *save = NULL, *name = strtok_r(copy, ", \t", &save); name; name = strtok_r(NULL, ", \t", &save)) {
        if (list->n == SL_MAX_PARTIES)
            return sl_fail(ps->err, "%s:%d: %s: more than %d names", ps->t->path, ps->line, key, SL_MAX_PARTIES);
        if (parse_name(ps, key, name, list->names[list->n], sizeof list->names[0]) != 0) return -1;
        list->n++;
    }
    return 0;
}

/* Prefixes an error of cli.h (a number, the words of a command) with file:line. */
static int at_line(parse_state *ps, int rc)
{
    if (rc != 0) sl_err_prefix(ps->err, "%s:%d", ps->t->path, ps->line);
    return rc;
}

/* A size in megabytes (MiB, fractions allowed) into bytes: at least 1, at most 2^30 (a petabyte). */
static int parse_megabytes(parse_state *ps, const char *key, const char *value, unsigned long long *bytes)
{
    double mb;
    if (at_line(ps, sl_parse_double(value, key, 1, 1 << 30, &mb, ps->err)) != 0) return -1;
    *bytes = (unsigned long long)(mb * 1048576.0);
    return 0;
}

/* kv = f32 | f16: what a node's KV cache holds. */
static int parse_kv(parse_state *ps, const char *value, sl_dtype *out)
{
    return at_line(ps, sl_parse_kv_dtype(value, "kv", out, ps->err));
}

static int pipeline_key(parse_state *ps, const char *key, const char *value)
{
    sl_topology *t = ps->t;
    long v;
    double d;
    if (!strcmp(key, "name")) return snprintf(t->name, sizeof t->name, "%s", value), 0;
    if (!strcmp(key, "parts")) {
        t->parts_line = ps->line;
        if (snprintf(t->parts_given, sizeof t->parts_given, "%s", value) >= (int)sizeof t->parts_given)
            return sl_fail(ps->err, "%s:%d: parts: path too long", t->path, ps->line);
        return 0;
    }
    if (!strcmp(key, "activations")) {
        if (sl_dtype_parse(value, &t->activations) != 0 || t->activations > SL_BF16)
            return sl_fail(ps->err, "%s:%d: activations = %s: write f32, f16 or bf16", t->path, ps->line, value);
        return 0;
    }
    if (!strcmp(key, "timeout"))
        return at_line(ps, sl_parse_double(value, "timeout", 0.001, 1e6, &t->timeout, ps->err));
    if (!strcmp(key, "idle_timeout"))
        return at_line(ps, sl_parse_double(value, "idle_timeout", 0.001, 1e9, &t->idle_timeout, ps->err));
    if (!strcmp(key, "max_sessions")) {
        int rc = at_line(ps, sl_parse_long(value, "max_sessions", 1, 1 << 20, &v, ps->err));
        t->max_sessions = (int)v;
        return rc;
    }
    if (!strcmp(key, "max_message_mb")) {
        int rc = at_line(ps, sl_parse_double(value, "max_message_mb", 0.001, 4096, &d, ps->err));
        t->max_message = (size_t)(d * 1048576.0);
        return rc;
    }
    if (!strcmp(key, "hwm")) {
        int rc = at_line(ps, sl_parse_long(value, "hwm", 1, 1 << 24, &v, ps->err));
        t->hwm = (int)v;
        return rc;
    }
    if (!strcmp(key, "verify")) return parse_bool(ps, key, value, &t->verify);
    if (!strcmp(key, "restart")) return parse_bool(ps, key, value, &t->restart);
    if (!strcmp(key, "checkpoint_root")) {
        if (snprintf(t->checkpoint_root, sizeof t->checkpoint_root, "%s", value) >= (int)sizeof t->checkpoint_root)
            return sl_fail(ps->err, "%s:%d: checkpoint_root: path too long", t->path, ps->line);
        return 0;
    }
    if (!strcmp(key, "security")) {
        if (strcmp(value, "none") && strcmp(value, "curve"))
            return sl_fail(ps->err, "%s:%d: security = %s: write none or curve", t->path, ps->line, value);
        t->curve = !strcmp(value, "curve");
        return 0;
    }
    if (!strcmp(key, "certs")) {
        t->certs_line = ps->line;
        return snprintf(t->certs_given, sizeof t->certs_given, "%s", value), 0;
    }
    if (!strcmp(key, "clients")) return parse_names(ps, key, value, &t->clients);
    if (!strcmp(key, "trainers")) return parse_names(ps, key, value, &t->trainers);
    if (!strcmp(key, "train")) return parse_bool(ps, key, value, &ps->pipeline_train);
    if (!strcmp(key, "kv")) return parse_kv(ps, value, &ps->pipeline_kv);
    if (!strcmp(key, "max_train_tokens")) {
        int rc = at_line(ps, sl_parse_long(value, "max_train_tokens", 2, 1 << 24, &v, ps->err));
        t->max_train_tokens = (int)v;
        return rc;
    }
    if (!strcmp(key, "max_checkpoint_mb")) return parse_megabytes(ps, key, value, &t->max_checkpoint);
    return sl_fail(ps->err, "%s:%d: unknown key '%s' in [pipeline] (keys: %s)", t->path, ps->line, key, pipeline_keys);
}

/* clip, noise (the bottom's), grad_clip, grad_noise (the top's): checked against the role once
 * the section is read (check_defences). */
static int defence_key(parse_state *ps, const char *key, const char *value)
{
    sl_topo_node *n = ps->node;
    const bool grad = !strncmp(key, "grad_", 5), is_clip = !strcmp(key + (grad ? 5 : 0), "clip");
    float *slot = grad ? (is_clip ? &n->grad_clip : &n->grad_noise) : (is_clip ? &n->clip : &n->noise);
    double d;
    /* clip is an L2 norm (> 0); noise a multiple of it: sigma, the noise's standard deviation over clip */
    if (at_line(ps, sl_parse_double(value, key, is_clip ? 1e-9 : 0, 1e9, &d, ps->err)) != 0) return -1;
    *slot = (float)d;
    ps->defence_line[n - ps->t->nodes][grad] = ps->line;
    return 0;
}

static int node_key(parse_state *ps, const char *key, const char *value)
{
    sl_topo_node *n = ps->node;
    bool *seen = ps->seen[n - ps->t->nodes];
    long v;
    if (!strcmp(key, "role")) {
        seen[0] = true;
        if (sl_role_parse(value, &n->role) != 0)
            return sl_fail(ps->err, "%s:%d: role = %s: write bottom, trunk or top", ps->t->path, ps->line, value);
        return 0;
    }
    if (!strcmp(key, "layers")) return seen[1] = true, parse_layers(ps, value);
    if (!strcmp(key, "listen")) return seen[2] = true, parse_endpoint(ps, value, n->listen);
    if (!strcmp(key, "host")) {
        if (strlen(value) >= sizeof n->host || !plain_name(value, host_name_chars))
            return sl_fail(ps->err, "%s:%d: host = %s: a host name has letters, digits and %s (no leading '-')",
                           ps->t->path, ps->line, value, host_name_chars);
        return snprintf(n->host, sizeof n->host, "%s", value), 0;
    }
    if (!strcmp(key, "restart")) return seen[3] = true, parse_bool(ps, key, value, &n->restart);
    if (!strcmp(key, "threads")) {
        int rc = at_line(ps, sl_parse_long(value, "threads", 0, 1024, &v, ps->err));
        n->threads = (int)v;
        return rc;
    }
    if (!strcmp(key, "pin")) return parse_bool(ps, key, value, &n->pin);
    if (!strcmp(key, "kv")) {
        int rc = parse_kv(ps, value, &n->kv);
        ps->kv_set[n - ps->t->nodes] = (int)n->kv;
        return rc;
    }
    if (!strcmp(key, "cert")) return parse_name(ps, key, value, n->cert, sizeof n->cert);
    if (!strcmp(key, "train")) {
        int rc = parse_bool(ps, key, value, &n->train);
        ps->train_set[n - ps->t->nodes] = n->train;
        return rc;
    }
    if (!strcmp(key, "max_checkpoint_mb")) {
        ps->checkpoint_set[n - ps->t->nodes] = true;
        return parse_megabytes(ps, key, value, &n->max_checkpoint);
    }
    if (!strcmp(key, "clip") || !strcmp(key, "noise") || !strcmp(key, "grad_clip") || !strcmp(key, "grad_noise"))
        return defence_key(ps, key, value);
    return sl_fail(ps->err, "%s:%d: unknown key '%s' in [node.%s] (keys: %s)", ps->t->path, ps->line, key, n->name,
                   node_keys);
}

/* dir and bin: absolute, and words that no shell on the way (ssh's) splits or expands. */
static int host_path(parse_state *ps, const char *key, const char *value, char *out)
{
    if (value[0] != '/' || !sl_shell_safe(value) || strlen(value) >= SL_MAX_HOST_TEXT)
        return sl_fail(ps->err,
                       "%s:%d: %s = %s: write an absolute path of letters, digits and %s (under %d bytes: it "
                       "passes through the host's shell)",
                       ps->t->path, ps->line, key, value, SL_SHELL_SAFE_PUNCT, SL_MAX_HOST_TEXT);
    snprintf(out, SL_MAX_HOST_TEXT, "%s", value);
    return 0;
}

static int host_key(parse_state *ps, const char *key, const char *value)
{
    sl_topo_host *h = ps->host;
    if (!strcmp(key, "run")) {
        char words_text[SL_MAX_HOST_TEXT];
        char *words[SL_MAX_WORDS];
        if (strlen(value) >= SL_MAX_HOST_TEXT)
            return sl_fail(ps->err, "%s:%d: run: longer than %d bytes", ps->t->path, ps->line, SL_MAX_HOST_TEXT - 1);
        if (at_line(ps, sl_split_words(value, words_text, sizeof words_text, words, SL_MAX_WORDS, ps->err)) < 0)
            return -1;
        h->has_run = true;
        return snprintf(h->run, sizeof h->run, "%s", value), 0;
    }
    if (!strcmp(key, "dir")) return host_path(ps, key, value, h->dir);
    if (!strcmp(key, "bin")) return host_path(ps, key, value, h->bin);
    return sl_fail(ps->err, "%s:%d: unknown key '%s' in [host.%s] (keys: %s)", ps->t->path, ps->line, key, h->name,
                   host_keys);
}

/* A key given twice in one section is an error (inih would keep the last silently). */
static int check_repeated_key(parse_state *ps, const char *section, const char *key)
{
    if (strcmp(section, ps->keys_section) != 0) {
        snprintf(ps->keys_section, sizeof ps->keys_section, "%s", section);
        ps->n_keys_seen = 0;
    }
    for (int i = 0; i < ps->n_keys_seen; i++)
        if (strcmp(ps->keys_seen[i].key, key) == 0)
            return sl_fail(ps->err, "%s:%d: '%s' is given twice in [%s] (first at line %d); keep one", ps->t->path,
                           ps->line, key, section, ps->keys_seen[i].line);
    if (ps->n_keys_seen < (int)(sizeof ps->keys_seen / sizeof ps->keys_seen[0])) {
        snprintf(ps->keys_seen[ps->n_keys_seen].key, sizeof ps->keys_seen[0].key, "%s", key);
        ps->keys_seen[ps->n_keys_seen++].line = ps->line;
    }
    return 0;
}

static int on_key(void *user, const char *section, const char *key, const char *value)
{
    parse_state *ps = user;
    if (ps->rc == 0) ps->rc = check_repeated_key(ps, section, key);
    if (ps->rc != 0) return 0;
    switch (ps->section) {
    case SECTION_PIPELINE:
        ps->rc = pipeline_key(ps, key, value);
        break;
    case SECTION_NODE:
        ps->rc = node_key(ps, key, value);
        break;
    case SECTION_HOST:
        ps->rc = host_key(ps, key, value);
        break;
    default:
        ps->rc = sl_fail(ps->err, "%s:%d: '%s' is outside any section; put it under [pipeline] or [node.NAME]",
                         ps->t->path, ps->line, key);
    }
    return ps->rc == 0;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A directory named in the file (key): relative to the file's directory, or else to the current
 * directory. */
static int resolve_dir(parse_state *ps, const char *key, const char *raw, char *out, size_t size)
{
    sl_topology *t = ps->t;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", t->path);
    char *slash = strrchr(dir, '/');
    char beside[PATH_MAX * 2];
    if (slash) *slash = '\0';
    snprintf(beside, sizeof beside, "%s/%s", slash ? dir : ".", raw);
    const char *chosen = raw[0] == '/' || !slash || (!is_dir(beside) && is_dir(raw)) ? raw : beside;
    if (snprintf(out, size, "%s", chosen) >= (int)size)
        return sl_fail(ps->err, "%s:%d: %s: path too long", t->path, ps->pipeline_line, key);
    return 0;
}

/* security = curve needs certs and every node's cert; each node's train, kv and max_checkpoint_mb
 * fall back to the pipeline's. */
static int check_security(parse_state *ps)
{
    sl_topology *t = ps->t;
    for (int i = 0; i < t->n_nodes; i++) {
        if (ps->train_set[i] < 0) t->nodes[i].train = ps->pipeline_train;
        if (ps->kv_set[i] < 0) t->nodes[i].kv = ps->pipeline_kv;
        if (!ps->checkpoint_set[i]) t->nodes[i].max_checkpoint = t->max_checkpoint;
    }
    if (!t->curve) return 0;
    if (!t->certs_given[0])
        return sl_fail(ps->err,
                       "%s:%d: security = curve needs certs = DIR (the certificates, see zmq-splitlearn-keygen)",
                       t->path, ps->pipeline_line);
    for (int i = 0; i < t->n_nodes; i++)
        if (!t->nodes[i].cert[0])
            return sl_fail(ps->err,
                           "%s:%d: [node.%s] has no cert; with security = curve add cert = NAME (DIR/NAME.cert)",
                           t->path, t->nodes[i].line, t->nodes[i].name);
    return 0;
}

static int check_nodes(parse_state *ps)
{
    sl_topology *t = ps->t;
    if (!ps->pipeline_line) return sl_fail(ps->err, "%s: no [pipeline] section; add one with parts = DIR", t->path);
    if (!t->parts_given[0])
        return sl_fail(ps->err, "%s:%d: [pipeline] has no 'parts'; add parts = DIR (a zmq-splitlearn-split output)",
                       t->path, ps->pipeline_line);
    if (t->n_nodes < 2) return sl_fail(ps->err, "%s: a pipeline needs at least a bottom and a top node", t->path);
    static const char *const names[] = {"role", "layers", "listen"}, *const hints[] = {"role = bottom|trunk|top",
                                                                                       "layers = FIRST-LAST",
                                                                                       "listen = tcp://HOST:PORT"};
    for (int i = 0; i < t->n_nodes; i++) {
        sl_topo_node *n = &t->nodes[i];
        for (int k = 0; k < 3; k++)
            if (!ps->seen[i][k])
                return sl_fail(ps->err, "%s:%d: [node.%s] has no '%s'; add %s", t->path, n->line, n->name, names[k],
                               hints[k]);
        if (!ps->seen[i][3]) n->restart = t->restart;
        sl_role want = i == 0 ? SL_ROLE_BOTTOM : i == t->n_nodes - 1 ? SL_ROLE_TOP : SL_ROLE_TRUNK;
        if (n->role != want)
            return sl_fail(ps->err,
                           "%s:%d: [node.%s] is a %s but stage %d of %d must be a %s (stages chain in file "
                           "order: bottom first, trunks, top last)",
                           t->path, n->line, n->name, sl_role_name(n->role), i + 1, t->n_nodes, sl_role_name(want));
        if (i == 0 && n->first != 0)
            return sl_fail(ps->err, "%s:%d: [node.%s] must start at layer 0 (layers = 0-%d)", t->path, n->line, n->name,
                           n->last);
        if (i > 0 && n->first != t->nodes[i - 1].last)
            return sl_fail(ps->err,
                           "%s:%d: [node.%s] starts at layer %d but [node.%s] ends at %d: %s; make it "
                           "layers = %d-%d",
                           t->path, n->line, n->name, n->first, t->nodes[i - 1].name, t->nodes[i - 1].last,
                           n->first > t->nodes[i - 1].last ? "a gap" : "an overlap", t->nodes[i - 1].last, n->last);
        for (int j = 0; j < i; j++)
            if (strcmp(t->nodes[j].listen, n->listen) == 0)
                return sl_fail(ps->err,
                               "%s:%d: [node.%s] listens on %s like [node.%s]; give each node its own endpoint",
                               t->path, n->line, n->name, n->listen, t->nodes[j].name);
    }
    return 0;
}

/* The bottom alone takes clip and noise, the top alone grad_clip and grad_noise; noise is sigma
 * times the clip, so it needs one. */
static int check_defences(parse_state *ps)
{
    sl_topology *t = ps->t;
    static const char *const keys[2] = {"clip/noise", "grad_clip/grad_noise"};
    static const sl_role owner[2] = {SL_ROLE_BOTTOM, SL_ROLE_TOP};
    for (int i = 0; i < t->n_nodes; i++) {
        const sl_topo_node *n = &t->nodes[i];
        for (int g = 0; g < 2; g++) {
            int line = ps->defence_line[i][g];
            if (!line) continue;
            if (n->role != owner[g])
                return sl_fail(ps->err,
                               "%s:%d: %s in [node.%s], a %s: only the %s's section takes it (the %s it sends)",
                               t->path, line, keys[g], n->name, sl_role_name(n->role), sl_role_name(owner[g]),
                               g ? "gradient" : "activations");
            float clip = g ? n->grad_clip : n->clip, noise = g ? n->grad_noise : n->noise;
            if (noise > 0 && clip <= 0)
                return sl_fail(ps->err,
                               "%s:%d: [node.%s] has %s = %g but no %s: the noise's standard deviation is %s "
                               "times the clip; add %s = C (an L2 norm per row)",
                               t->path, line, n->name, g ? "grad_noise" : "noise", (double)noise,
                               g ? "grad_clip" : "clip", g ? "grad_noise" : "noise", g ? "grad_clip" : "clip");
        }
    }
    return 0;
}

/* A [host.NAME] no node runs on is a typo of a node's host (or of the section's name). */
static int check_hosts(parse_state *ps)
{
    sl_topology *t = ps->t;
    for (int i = 0; i < t->n_hosts; i++) {
        bool used = false;
        for (int j = 0; j < t->n_nodes; j++)
            used |= strcmp(t->nodes[j].host, t->hosts[i].name) == 0;
        if (!used)
            return sl_fail(ps->err, "%s:%d: [host.%s]: no node has host = %s; fix the name or remove the section",
                           t->path, t->hosts[i].line, t->hosts[i].name, t->hosts[i].name);
    }
    return 0;
}

static int check_parts(parse_state *ps)
{
    sl_topology *t = ps->t;
    sl_part_info parts[SL_MAX_SPLITS + 1];
    int part_of[SL_MAX_NODES];
    sl_err inner;
    int n = sl_split_read_index(t->parts, parts, SL_MAX_SPLITS + 1, &inner);
    if (n < 0)
        return sl_fail(ps->err, "%s:%d: parts = %s is not a split directory (%s); make one with zmq-splitlearn-split",
                       t->path, ps->pipeline_line, t->parts_given, inner.msg);
    return sl_topology_match_parts(t, parts, n, t->parts, part_of, ps->err);
}

int sl_topology_match_parts(const sl_topology *t, const sl_part_info *parts, int n, const char *where, int *part_of,
                            sl_err *err)
{
    for (int i = 0; i < t->n_nodes; i++) {
        const sl_topo_node *node = &t->nodes[i];
        int found = -1;
        for (int j = 0; j < n; j++)
            if (parts[j].first == node->first && parts[j].last == node->last) found = j;
        if (found < 0) {
            char have[512] = "";
            for (int j = 0; j < n; j++)
                snprintf(have + strlen(have), sizeof have - strlen(have), " %d-%d", parts[j].first, parts[j].last);
            return sl_fail(err, "%s:%d: [node.%s] layers = %d-%d match no part in %s (it has:%s)", t->path, node->line,
                           node->name, node->first, node->last, where, have);
        }
        if (parts[found].role != node->role)
            return sl_fail(err, "%s:%d: [node.%s] is a %s but the part for layers %d-%d is a %s", t->path, node->line,
                           node->name, sl_role_name(node->role), node->first, node->last,
                           sl_role_name(parts[found].role));
        part_of[i] = found;
    }
    const sl_topo_node *top = &t->nodes[t->n_nodes - 1];
    int n_layer = parts[0].cfg.n_layer;
    if (top->last != n_layer)
        return sl_fail(err, "%s:%d: [node.%s] ends at layer %d but the model has %d; make it layers = %d-%d", t->path,
                       top->line, top->name, top->last, n_layer, top->first, n_layer);
    return 0;
}

/* Parses fp; origin names it in errors and, when it is a path, anchors the relative paths. */
static int load_stream(FILE *fp, const char *origin, sl_topology *t, bool check_parts_dir, sl_err *err)
{
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", origin);
    t->activations = SL_F32;
    t->timeout = 30;
    t->idle_timeout = 600;
    t->max_sessions = 64;
    t->max_message = 256u << 20;
    t->hwm = 1000;
    t->max_train_tokens = 16384;
    t->max_checkpoint = 64ull << 30;
    parse_state ps = {.t = t, .err = err, .fp = fp};
    int bad_line = ini_parse_stream(read_line, &ps, on_key, &ps);
    if (ps.rc != 0) return -1;
    if (bad_line != 0)
        return sl_fail(err, "%s:%d: not INI syntax (expected [section], key = value or a ; comment)", origin, bad_line);
    if (check_nodes(&ps) != 0 || check_hosts(&ps) != 0 || check_defences(&ps) != 0) return -1;
    if (resolve_dir(&ps, "parts", t->parts_given, t->parts, sizeof t->parts) != 0 || check_security(&ps) != 0 ||
        (t->certs_given[0] && resolve_dir(&ps, "certs", t->certs_given, t->certs, sizeof t->certs) != 0))
        return -1;
    if (!t->name[0]) {
        const char *base = strrchr(t->parts, '/');
        snprintf(t->name, sizeof t->name, "%.127s", base && base[1] ? base + 1 : t->parts);
    }
    return check_parts_dir ? check_parts(&ps) : 0;
}

int sl_topology_load(const char *path, sl_topology *t, bool check_parts_dir, sl_err *err)
{
    if (!strcmp(path, "-")) return load_stream(stdin, "(stdin)", t, check_parts_dir, err);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        memset(t, 0, sizeof *t);
        return sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    }
    int rc = load_stream(fp, path, t, check_parts_dir, err);
    fclose(fp);
    return rc;
}

int sl_topology_parse(const char *text, const char *origin, sl_topology *t, bool check_parts_dir, sl_err *err)
{
    FILE *fp = fmemopen((void *)text, strlen(text), "r");
    if (!fp) return sl_fail(err, "out of memory");
    int rc = load_stream(fp, origin, t, check_parts_dir, err);
    fclose(fp);
    return rc;
}

const sl_topo_node *sl_topology_node(const sl_topology *t, const char *name)
{
    for (int i = 0; i < t->n_nodes; i++)
        if (strcmp(t->nodes[i].name, name) == 0) return &t->nodes[i];
    return NULL;
}

int sl_topology_index(const sl_topology *t, const sl_topo_node *node) { return (int)(node - t->nodes); }

const sl_topo_host *sl_topology_host(const sl_topology *t, const char *name)
{
    for (int i = 0; i < t->n_hosts; i++)
        if (strcmp(t->hosts[i].name, name) == 0) return &t->hosts[i];
    return NULL;
}

bool sl_party_listed(const sl_party_list *list, const char *name)
{
    for (int i = 0; i < list->n; i++)
        if (!strcmp(list->names[i], name)) return true;
    return false;
}

bool sl_endpoint_is_local(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6) != 0) return true;
    const char *host = endpoint + 6;
    return !strncmp(host, "127.", 4) || !strncmp(host, "localhost:", 10) || !strncmp(host, "[::1]:", 6);
}

int sl_topology_write_local(const char *path, const sl_part_info *parts, int n, const char *name, const char *parts_dir,
                            int port, const char *tool, sl_err *err)
{
    size_t cap = 1024 + strlen(name) + PATH_MAX + (size_t)n * 256;
    char *text = malloc(cap), *abs_dir = realpath(parts_dir, NULL);
    if (!text) {
        free(abs_dir);
        return sl_fail(err, "%s: out of memory", path);
    }
    size_t len = (size_t)snprintf(text, cap,
                                  "; Local pipeline written by %s: every stage on this host.\n"
                                  "; Start it with: zmq-splitlearn-launch THIS_FILE\n\n"
                                  "[pipeline]\nname  = %s\nparts = %s\n",
                                  tool, name, abs_dir ? abs_dir : parts_dir);
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(text + len, cap - len,
                                "\n[node.%s]\nrole   = %s\nlayers = %d-%d\nlisten = tcp://127.0.0.1:%d\n",
                                parts[i].name, sl_role_name(parts[i].role), parts[i].first, parts[i].last, port + i);
    int rc = sl_write_text_file(path, text, err);
    free(text);
    free(abs_dir);
    return rc;
}

bool sl_topology_host_is_local(const char *host)
{
    char name[256] = "";
    gethostname(name, sizeof name - 1);
    size_t short_len = strcspn(name, ".");
    return !strcmp(host, "localhost") || !strcmp(host, "127.0.0.1") || !strcmp(host, "::1") || !strcmp(host, name) ||
           (strlen(host) == short_len && !strncmp(host, name, short_len));
}

sl_cut_defence sl_topology_bottom_defence(const sl_topology *t)
{
    return (sl_cut_defence){.clip = t->nodes[0].clip, .noise = t->nodes[0].noise};
}

sl_cut_defence sl_topology_top_defence(const sl_topology *t)
{
    const sl_topo_node *top = &t->nodes[t->n_nodes - 1];
    return (sl_cut_defence){.clip = top->grad_clip, .noise = top->grad_noise};
}
