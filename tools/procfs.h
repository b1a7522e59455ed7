/* procfs.h — what the tools (benchmarks, soak) read about other processes in Linux's /proc: a
 * field of their status. Header-only: the tools share no library of their own. */
#ifndef SL_TOOLS_PROCFS_H
#define SL_TOOLS_PROCFS_H

#include <stdio.h>
#include <string.h>
#include <sys/types.h>

/* The kB of field ("VmRSS": resident now, "VmHWM": its peak) in /proc/PID/status, or -1. */
static inline long sl_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    long kb = -1;
    size_t n = strlen(field);
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, field, n) && line[n] == ':' && sscanf(line + n + 1, "%ld", &kb) == 1) break;
    if (fp) fclose(fp);
    return kb;
}

#endif
