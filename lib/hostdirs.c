/* hostdirs.c — one directory per host, each with the split's index, every part's metadata and
 * only its own nodes' part files; with CURVE, every public certificate and only its own nodes' key
 * pairs. */
#include "hostdirs.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A path of the topology (key, written at line) that each host's directory holds: relative, and
 * not climbing out of it. */
static int inside_host_dir(const sl_topology *t, const char *key, const char *p, int line, const char *example,
                           sl_err *err)
{
    bool climbs = false;
    for (const char *c = p; *c; c += strcspn(c, "/"), c += *c == '/')
        climbs |= strncmp(c, "..", 2) == 0 && (c[2] == '/' || c[2] == '\0');
    if (p[0] == '/' || climbs)
        return sl_fail(err,
                       "%s:%d: %s = %s: with --host-dirs the %s path must be relative and stay inside the "
                       "host's directory (e.g. %s = %s, the nodes running in [host.NAME] dir)",
                       t->path, line, key, p, key, key, example);
    return 0;
}

/* Calls fn for the name of every certificate the topology names: each node's, the clients', the
 * trainers'; stops at the first failure. */
static int each_party(const sl_topology *t, int (*fn)(const char *name, void *ctx, sl_err *err), void *ctx, sl_err *err)
{
    const sl_party_list *lists[2] = {&t->clients, &t->trainers};
    for (int i = 0; i < t->n_nodes; i++)
        if (fn(t->nodes[i].cert, ctx, err) != 0) return -1;
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < lists[l]->n; i++)
            if (fn(lists[l]->names[i], ctx, err) != 0) return -1;
    return 0;
}

/* certs/NAME.cert, or NAME.cert_secret, into out. */
static int cert_file(char *out, size_t size, const char *dir, const char *name, bool secret, sl_err *err)
{
    int n = snprintf(out, size, "%s/%s.cert%s", dir, name, secret ? "_secret" : "");
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "%s/%s.cert: path too long", dir, name);
}

/* Whether the public certificate name is in the topology's certs here. */
static int has_public_cert(const char *name, void *ctx, sl_err *err)
{
    const sl_topology *t = ctx;
    char path[PATH_MAX];
    if (cert_file(path, sizeof path, t->certs, name, false, err) != 0) return -1;
    if (access(path, R_OK) == 0) return 0;
    return sl_fail(err,
                   "%s:%d: certs = %s: %s: no such certificate; --host-dirs copies every public certificate the "
                   "topology names into each host's directory (make it with zmq-splitlearn-keygen %s -o %s)",
                   t->path, t->certs_line, t->certs_given, path, name, t->certs);
}

int sl_hostdirs_check(const char *split_dir, const sl_topology *t, sl_err *err)
{
    if (inside_host_dir(t, "parts", t->parts_given, t->parts_line, "parts/NAME", err) != 0) return -1;
    if (t->curve && (inside_host_dir(t, "certs", t->certs_given, t->certs_line, "certs", err) != 0 ||
                     each_party(t, has_public_cert, (void *)t, err) != 0))
        return -1;
    char hosts[PATH_MAX];
    if (snprintf(hosts, sizeof hosts, "%s/hosts", split_dir) >= (int)sizeof hosts)
        return sl_fail(err, "%s: path too long", split_dir);
    if (access(hosts, F_OK) == 0)
        return sl_fail(err, "%s exists (an earlier layout?): remove it first, so that no host keeps a part of another",
                       hosts);
    return 0;
}

/* dir + "/" + rel into out. */
static int join(char *out, size_t size, const char *dir, const char *rel, sl_err *err)
{
    int n = snprintf(out, size, "%s/%s", dir, rel);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "%s/%s: path too long", dir, rel);
}

/* Copies (or, for a part file, hard-links when it can) split_dir/rel to dest/rel. */
static int place(const char *split_dir, const char *dest, const char *rel, bool link_it, sl_err *err)
{
    char from[PATH_MAX], to[PATH_MAX], to_dir[PATH_MAX];
    if (join(from, sizeof from, split_dir, rel, err) != 0 || join(to, sizeof to, dest, rel, err) != 0) return -1;
    snprintf(to_dir, sizeof to_dir, "%s", to);
    *strrchr(to_dir, '/') = '\0';
    if (sl_mkdirs(to_dir, err) != 0) return -1;
    if (link_it && link(from, to) == 0) return 0;
    return sl_copy_file(from, to, err);
}

/* A part file's path relative to split_dir (split writes every part below it). */
static const char *relative(const char *split_dir, const char *file, sl_err *err)
{
    size_t len = strlen(split_dir);
    if (strncmp(file, split_dir, len) != 0 || file[len] != '/')
        return sl_fail(err, "%s is not inside %s", file, split_dir), NULL;
    return file + len + 1;
}

/* The index, every part's metadata and the host's own part files into dest. */
static int write_parts(const char *split_dir, const char *dest, const sl_topology *t, const char *host,
                       const sl_part_info *parts, int n, const int *part_of, sl_err *err)
{
    if (place(split_dir, dest, "split.json", false, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        char meta[PATH_MAX];
        sl_part_sibling(parts[i].file, "_metadata.json", meta, sizeof meta);
        const char *rel_file = relative(split_dir, parts[i].file, err), *rel_meta = relative(split_dir, meta, err);
        if (!rel_file || !rel_meta || place(split_dir, dest, rel_meta, false, err) != 0) return -1;
        bool own = false;
        for (int j = 0; j < t->n_nodes; j++)
            own |= part_of[j] == i && strcmp(t->nodes[j].host, host) == 0;
        if (own && place(split_dir, dest, rel_file, true, err) != 0) return -1;
    }
    return 0;
}

/* Copies a certificate file from one certs directory to another, once; a key pair is made mode
 * 0600 before it is written. A key pair that is not in from is left out: made on its host, it
 * stays there. */
static int copy_cert(const char *from_dir, const char *to_dir, const char *name, bool secret, sl_err *err)
{
    char from[PATH_MAX], to[PATH_MAX];
    if (cert_file(from, sizeof from, from_dir, name, secret, err) != 0 ||
        cert_file(to, sizeof to, to_dir, name, secret, err) != 0)
        return -1;
    if (access(to, F_OK) == 0 || (secret && access(from, F_OK) != 0)) return 0;
    int fd = secret ? open(to, O_WRONLY | O_CREAT | O_EXCL, 0600) : 0;
    if (fd < 0) return sl_fail(err, "%s: %s", to, strerror(errno));
    if (secret) close(fd);
    return sl_copy_file(from, to, err);
}

typedef struct certs_copy {
    const char *from, *to;
} certs_copy;

static int copy_public_cert(const char *name, void *ctx, sl_err *err)
{
    const certs_copy *c = ctx;
    return copy_cert(c->from, c->to, name, false, err);
}

/* With CURVE, SPLIT/hosts/<host>/<certs>: every public certificate the topology names, and the key
 * pairs of the host's own nodes, never another host's. */
static int write_certs(const sl_topology *t, const char *root, const char *host, sl_err *err)
{
    char dest[PATH_MAX];
    if (join(dest, sizeof dest, root, t->certs_given, err) != 0 || sl_mkdirs(dest, err) != 0) return -1;
    certs_copy c = {.from = t->certs, .to = dest};
    if (each_party(t, copy_public_cert, &c, err) != 0) return -1;
    for (int i = 0; i < t->n_nodes; i++)
        if (!strcmp(t->nodes[i].host, host) && copy_cert(t->certs, dest, t->nodes[i].cert, true, err) != 0) return -1;
    return 0;
}

/* SPLIT/hosts/<host>/: the topology file, the parts and, with CURVE, the certificates. */
static int write_host(const char *split_dir, const char *topology_path, const sl_topology *t, const char *host,
                      const sl_part_info *parts, int n, const int *part_of, sl_err *err)
{
    char root[PATH_MAX], dest[PATH_MAX], topology_copy[PATH_MAX];
    const char *slash = strrchr(topology_path, '/'), *base = slash ? slash + 1 : topology_path;
    if (snprintf(root, sizeof root, "%s/hosts/%s", split_dir, host) >= (int)sizeof root ||
        join(dest, sizeof dest, root, t->parts_given, err) != 0 ||
        join(topology_copy, sizeof topology_copy, root, base, err) != 0)
        return sl_fail(err, "%s/hosts/%s: path too long", split_dir, host);
    if (sl_mkdirs(dest, err) != 0 || sl_copy_file(topology_path, topology_copy, err) != 0) return -1;
    if (t->curve && write_certs(t, root, host, err) != 0) return -1;
    return write_parts(split_dir, dest, t, host, parts, n, part_of, err);
}

int sl_hostdirs_write(const char *split_dir, const char *topology_path, const sl_topology *t, const sl_part_info *parts,
                      int n, sl_err *err)
{
    int part_of[SL_MAX_NODES];
    if (sl_topology_match_parts(t, parts, n, split_dir, part_of, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        bool run = false;
        for (int j = 0; j < t->n_nodes; j++)
            run |= part_of[j] == i;
        if (!run)
            return sl_fail(err, "%s: no node runs the part %s (layers %d-%d): the layout would leave it nowhere",
                           t->path, parts[i].name, parts[i].first, parts[i].last);
    }
    for (int j = 0; j < t->n_nodes; j++) {
        bool first_of_host = true;
        for (int k = 0; k < j; k++)
            first_of_host &= strcmp(t->nodes[k].host, t->nodes[j].host) != 0;
        if (first_of_host && write_host(split_dir, topology_path, t, t->nodes[j].host, parts, n, part_of, err) != 0)
            return -1;
    }
    return 0;
}
