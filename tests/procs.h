/* procs.h — node processes for the tests: starting them with their output to a log, and waiting
 * for what they log. */
#ifndef SL_TEST_PROCS_H
#define SL_TEST_PROCS_H

#include "clock.h"
#include "fileio.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts argv with stdout and stderr to log. */
static inline pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *fp = freopen(log, "a", stdout);
        if (fp) dup2(fileno(stdout), STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static inline bool file_has(const char *path, const char *needle)
{
    sl_err err;
    char *text = sl_read_text_file(path, 1 << 24, &err);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

static inline bool wait_for(const char *path, const char *needle, double seconds)
{
    for (double end = sl_now() + seconds; sl_now() < end; usleep(20000))
        if (needle ? file_has(path, needle) : access(path, F_OK) == 0) return true;
    return false;
}

/* The bytes a log holds now (0 when it does not exist yet). */
static inline size_t log_size(const char *path)
{
    FILE *fp = fopen(path, "r");
    long size = fp && fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : 0;
    if (fp) fclose(fp);
    return size > 0 ? (size_t)size : 0;
}

/* Waits until needle appears in path after its first `from` bytes (a line logged since then). */
static inline bool wait_for_after(const char *path, const char *needle, size_t from, double seconds)
{
    sl_err err;
    for (double end = sl_now() + seconds; sl_now() < end; usleep(20000)) {
        char *text = sl_read_text_file(path, 1 << 24, &err);
        bool found = text && strlen(text) > from && strstr(text + from, needle);
        free(text);
        if (found) return true;
    }
    return false;
}

#endif
