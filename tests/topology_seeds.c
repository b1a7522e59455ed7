/* topology_seeds.c — writes topology files, one each into a directory: the seed corpus `make
 * fuzz` gives fuzz_topology. The local topologies our split tool writes (2, 3 and 5 stages) and
 * the examples shipped in config/ (hosts, security, defences, every key they set). Run from the
 * project root. Usage: topology_seeds DIR */
#include "fileio.h"
#include "part.h"
#include "topology.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A local topology of n stages over 12 layers, as zmq-splitlearn-split --topology writes it. */
static int write_local(const char *dir, int n, sl_err *err)
{
    sl_part_info parts[5];
    memset(parts, 0, sizeof parts);
    for (int i = 0; i < n; i++) {
        parts[i].role = i == 0 ? SL_ROLE_BOTTOM : i == n - 1 ? SL_ROLE_TOP : SL_ROLE_TRUNK;
        parts[i].first = 12 * i / n;
        parts[i].last = 12 * (i + 1) / n;
        if (i == 0 || i == n - 1)
            snprintf(parts[i].name, sizeof parts[i].name, "%s", sl_role_name(parts[i].role));
        else
            snprintf(parts[i].name, sizeof parts[i].name, "trunk%d", i);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-local-%d.ini", dir, n);
    return sl_topology_write_local(path, parts, n, "gpt2", "models/gpt2-split", 5701, "topology_seeds", err);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    sl_err err = {{0}};
    int rc = 0;
    for (int n = 2; n <= 5 && rc == 0; n += n == 3 ? 2 : 1)
        rc = write_local(argv[1], n, &err);
    glob_t shipped = {0};
    if (rc == 0 && glob("config/*.ini", 0, NULL, &shipped) != 0)
        rc = sl_fail(&err, "no config/*.ini here: run it from the project root");
    for (size_t i = 0; rc == 0 && i < shipped.gl_pathc; i++) {
        char to[4096];
        snprintf(to, sizeof to, "%s/seed-%s", argv[1], strrchr(shipped.gl_pathv[i], '/') + 1);
        char *text = sl_read_text_file(shipped.gl_pathv[i], 1 << 20, &err);
        rc = text ? sl_write_text_file(to, text, &err) : -1;
        free(text);
    }
    globfree(&shipped);
    if (rc != 0) fprintf(stderr, "topology_seeds: %s\n", err.msg);
    return rc == 0 ? 0 : 1;
}
