/* tool.h — what every program does alike (the programs include it; lib/ never prints): --version,
 * a usage error as one line naming it plus "see PROG --help" (the whole help only with --help),
 * and the exit codes of lib/cli.h. */
#ifndef SL_TOOL_H
#define SL_TOOL_H

#include "cli.h"
#include "version.h"

#include <stdio.h>

/* The getopt_long entries every program has. */
#define SL_TOOL_OPTIONS                                                                                                \
    {"help", 0, 0, 'h'}, { "version", 0, 0, 'V' }

/* --version: "PROG (zmq-splitlearn) VERSION", the form help2man reads. */
static inline int sl_tool_version(const char *prog)
{
    printf("%s (zmq-splitlearn) %s\n", prog, SL_VERSION);
    return SL_EXIT_OK;
}

/* A usage error: msg (NULL when getopt has already named the bad option), then where the help is.
 * Returns SL_EXIT_USAGE. */
static inline int sl_tool_usage_error(const char *prog, const char *msg)
{
    if (msg) fprintf(stderr, "%s: %s\n", prog, msg);
    fprintf(stderr, "see %s --help\n", prog);
    return SL_EXIT_USAGE;
}

/* getopt_long's answer c that no option of the program's own took: --help (usage on stdout),
 * --version, or a bad option (getopt named it). Returns the exit status. */
static inline int sl_tool_other_option(int c, const char *prog, const char *usage)
{
    if (c == 'h') return fputs(usage, stdout) == EOF ? SL_EXIT_FAILURE : SL_EXIT_OK;
    if (c == 'V') return sl_tool_version(prog);
    return sl_tool_usage_error(prog, NULL);
}

#endif
