/* hostdirs.c — one directory per host, each with the split's index, every part's metadata and
 * only its own nodes' part files. */
#include "hostdirs.h"

#include "fileio.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sl_hostdirs_check(const char *split_dir, const sl_topology *t, sl_err *err)
{
    const char *p = t->parts_given;
    bool climbs = false;
    for (const char *c = p; *c; c += strcspn(c, "/"), c += *c == '/')
        climbs |= strncmp(c, "..", 2) == 0 && (c[2] == '/' || c[2] == '\0');
    if (p[0] == '/' || climbs)
        return sl_fail(err,
                       "%s:%d: parts = %s: with --host-dirs the parts path must be relative and stay inside the "
                       "host's directory (e.g. parts = parts/NAME, the nodes running in [host.NAME] dir)",
                       t->path, t->parts_line, p);
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

/* SPLIT/hosts/<host>/: the topology file and the parts. */
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
