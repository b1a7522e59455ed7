/* keygen.c — zmq-splitlearn-keygen: makes a CurveZMQ key pair for a node, a client or a trainer,
 * in czmq's certificate format, for [pipeline] security = curve. */
#include "cli.h"
#include "tool.h"
#include "fileio.h"
#include "security.h"
#include "version.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-keygen NAME [-o DIR]\n"
    "\n"
    "Writes DIR/NAME.cert (the public key: copy it to every host that must accept NAME) and\n"
    "DIR/NAME.cert_secret (the key pair, mode 0600: it stays on NAME's own host). Existing files are\n"
    "never replaced. NAME is what the topology calls it: a node's cert = NAME, or a name in\n"
    "clients = ... or trainers = ... DIR defaults to the current directory.\n"
    "\n"
    "exit status: 0 written, 1 failure (the files exist, cannot write), 2 usage error\n";

int main(int argc, char **argv)
{
    static const struct option options[] = {{"output", 1, 0, 'o'}, SL_TOOL_OPTIONS, {0, 0, 0, 0}};
    const char *dir = ".";
    int c;
    while ((c = getopt_long(argc, argv, "o:h", options, NULL)) != -1) {
        if (c == 'o')
            dir = optarg;
        else
            return sl_tool_other_option(c, "zmq-splitlearn-keygen", usage);
    }
    if (argc - optind != 1)
        return fputs("zmq-splitlearn-keygen: give NAME\nsee zmq-splitlearn-keygen --help\n", stderr), SL_EXIT_USAGE;
    const char *name = argv[optind];
    if (!name[0] || name[0] == '.' ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != strlen(name)) {
        fprintf(stderr, "zmq-splitlearn-keygen: NAME '%s': use letters, digits, '-', '_' and '.' (not first)\n", name);
        return SL_EXIT_USAGE;
    }
    sl_err err;
    if (sl_mkdirs(dir, &err) != 0 || sl_security_keygen(dir, name, &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-keygen: %s\n", err.msg);
        return SL_EXIT_FAILURE;
    }
    printf("wrote %s/%s.cert and %s/%s.cert_secret\n", dir, name, dir, name);
    return SL_EXIT_OK;
}
