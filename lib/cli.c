/* cli.c — checked conversions of option values. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *sl_plural(long n, const char *one, const char *many) { return n == 1 ? one : many; }

int sl_parse_long(const char *text, const char *option, long lo, long hi, long *out, sl_err *err)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        return sl_fail(err, "%s: '%s' is not a whole number in %ld..%ld", option, text, lo, hi);
    *out = v;
    return 0;
}

int sl_parse_double(const char *text, const char *option, double lo, double hi, double *out, sl_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < lo || v > hi)
        return sl_fail(err, "%s: '%s' is not a number in %g..%g", option, text, lo, hi);
    *out = v;
    return 0;
}

int sl_parse_int_list(const char *text, const char *option, int32_t *out, int max, sl_err *err)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != ',' && *end != ' ') || v < INT32_MIN || v > INT32_MAX)
            return sl_fail(err, "%s: '%s' is not a list of whole numbers like 1,2,3", option, text);
        if (n == max) return sl_fail(err, "%s: more than %d numbers", option, max);
        out[n++] = (int32_t)v;
        p = end;
    }
    if (n == 0) return sl_fail(err, "%s: empty list", option);
    return n;
}
