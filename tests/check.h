/* check.h — assertion counting, test case selection, scratch directories and ports for the
 * test programs.
 *
 * Every CHECK counts as one passed or failed check; a failure prints file:line and why.
 * A program's main calls check_init(argc, argv) and runs each test case only when
 * check_selected("name") says so: with no arguments every case runs, with names only those
 * (`build/tests/test_gpt2 tiny-b`), and `--list` prints the case names. check_done() prints
 * the closing line "N passed, N failed" (a name that matches no case counts as a failure) and
 * returns the exit status. */
#ifndef SL_CHECK_H
#define SL_CHECK_H

#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_passed, check_failed;

enum { CHECK_MAX_CASES = 64 };
static struct {
    int argc;
    char **argv;
    bool list;
    const char *names[CHECK_MAX_CASES]; /* every case name main asked about, in order */
    int n_names;
} check_cases;

static inline int check_report(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int check_report(int ok, const char *file, int line, const char *fmt, ...)
{
    if (ok) {
        check_passed++;
        return 1;
    }
    check_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 0;
}

/* CHECK(cond, "printf-style explanation", ...) */
#define CHECK(cond, ...) check_report(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* Largest |a[i] - b[i]|; NaN anywhere counts as infinitely far. */
static inline double check_max_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        if (d > worst) worst = d;
    }
    return worst;
}

#define CHECK_CLOSE(a, b, n, tol, what)                                                                                \
    do {                                                                                                               \
        double check_d_ = check_max_diff((a), (b), (n));                                                               \
        CHECK(check_d_ <= (tol), "%s: max |diff| %.3g > %.3g", (what), check_d_, (double)(tol));                       \
    } while (0)

/* Fixture root: $SL_FIXTURES or ../shared/fixtures (tests run from the project root). */
static inline const char *check_fixtures(void)
{
    const char *dir = getenv("SL_FIXTURES");
    return dir && *dir ? dir : "../shared/fixtures";
}

/* Makes a fresh directory /tmp/sl-test-NAME-XXXXXX into dir; 0 on success. */
static inline int check_tmpdir(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "/tmp/sl-test-%s-XXXXXX", name);
    return mkdtemp(dir) ? 0 : -1;
}

static inline int check_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "could not remove %s\n", path);
    return 0; /* go on with the rest */
}

/* The programs' directory as an absolute path: $SL_BIN (make sanitize's build-san/bin), else bin. */
static inline void check_bin_dir(char *out, size_t size)
{
    const char *env = getenv("SL_BIN");
    char *abs = realpath(env && *env ? env : "bin", NULL);
    snprintf(out, size, "%s", abs ? abs : "bin");
    free(abs);
}

/* Removes a directory made by check_tmpdir, with everything in it (symbolic links are
 * removed, not followed). */
static inline void check_rmtree(const char *dir) { nftw(dir, check_remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* TCP ports: a program takes CHECK_PORT_SPAN ports from CHECK_PORT_BASE (or $SL_TEST_PORT_BASE)
 * on, offset by its process id so that concurrent runs of the suite do not collide; all of it
 * below the kernel's ephemeral range (32768 and up), where client sockets take their ports.
 * tests/test_cli.sh reads these three numbers from this file. */
#define CHECK_PORT_BASE 21000
#define CHECK_PORT_SLOTS 350
#define CHECK_PORT_SPAN 32

/* The i-th port of this process (0 <= i < CHECK_PORT_SPAN; beyond it is a failed check). */
static inline int check_port(int i)
{
    const char *env = getenv("SL_TEST_PORT_BASE");
    int base = env && *env ? atoi(env) : CHECK_PORT_BASE;
    if (i >= CHECK_PORT_SPAN) {
        check_failed++;
        fprintf(stderr, "FAIL: port %d of a span of %d: raise CHECK_PORT_SPAN\n", i, CHECK_PORT_SPAN);
    }
    return base + (int)(getpid() % CHECK_PORT_SLOTS) * CHECK_PORT_SPAN + i;
}

/* Keeps the command line for check_selected: case names, or --list. */
static inline void check_init(int argc, char **argv)
{
    check_cases.argc = argc;
    check_cases.argv = argv;
    check_cases.list = argc == 2 && strcmp(argv[1], "--list") == 0;
}

static inline bool check_known(const char *name)
{
    for (int i = 0; i < check_cases.n_names; i++)
        if (strcmp(check_cases.names[i], name) == 0) return true;
    return false;
}

/* Whether to run the case `name` (a string literal): no names on the command line, or this one
 * among them. */
static inline bool check_selected(const char *name)
{
    if (!check_known(name) && check_cases.n_names < CHECK_MAX_CASES) check_cases.names[check_cases.n_names++] = name;
    if (check_cases.list) return false;
    if (check_cases.argc < 2) return true;
    for (int i = 1; i < check_cases.argc; i++)
        if (strcmp(check_cases.argv[i], name) == 0) return true;
    return false;
}

/* After the cases: --list's names, or a failure for each name given that is no case's. */
static inline void check_report_names(void)
{
    for (int i = 0; check_cases.list && i < check_cases.n_names; i++)
        printf("%s\n", check_cases.names[i]);
    for (int i = 1; !check_cases.list && i < check_cases.argc; i++) {
        if (check_known(check_cases.argv[i])) continue;
        check_failed++;
        fprintf(stderr, "FAIL: no test case named '%s'; the cases are:", check_cases.argv[i]);
        for (int k = 0; k < check_cases.n_names; k++)
            fprintf(stderr, " %s", check_cases.names[k]);
        fputc('\n', stderr);
    }
}

static inline int check_done(void)
{
    check_report_names();
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
