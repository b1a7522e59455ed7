/* check.h — assertion counting for the test programs.
 *
 * Every CHECK counts as one passed or failed case; a failure prints file:line and why.
 * check_done() prints the closing line "N passed, N failed" and returns the exit status. */
#ifndef SL_CHECK_H
#define SL_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int check_passed, check_failed;

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
        if (d != d) return INFINITY;
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

/* Removes a directory made by check_tmpdir, with everything in it. */
static inline void check_rmtree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static inline int check_done(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
