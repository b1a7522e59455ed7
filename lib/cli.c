/* cli.c — checked conversions of option values. */
#include "cli.h"

#include <ctype.h>
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

/* One word of text at *p into out (at most room bytes with its NUL); advances *p past it.
 * Returns the bytes used, -1 on an unclosed quote or no room. */
static long next_word(const char **p, char *out, size_t room, const char *text, sl_err *err)
{
    const char *s = *p;
    size_t n = 0;
    char quote = 0;
    if (room == 0) return sl_fail(err, "'%s': too long", text);
    for (; *s && (quote || !isblank((unsigned char)*s)); s++) {
        if (!quote && (*s == '\'' || *s == '"')) {
            quote = *s;
            continue;
        }
        if (quote && *s == quote) {
            quote = 0;
            continue;
        }
        if (*s == '\\' && quote != '\'' && s[1]) s++;
        if (n + 1 >= room) return sl_fail(err, "'%s': too long", text);
        out[n++] = *s;
    }
    if (quote) return sl_fail(err, "'%s': a %c quote is not closed", text, quote);
    out[n] = '\0';
    *p = s;
    return (long)n + 1;
}

int sl_split_words(const char *text, char *buf, size_t size, char **words, int max, sl_err *err)
{
    int n = 0;
    size_t used = 0;
    const char *p = text;
    for (;;) {
        while (isblank((unsigned char)*p))
            p++;
        if (!*p) return n;
        if (n == max) return sl_fail(err, "'%s': more than %d words", text, max);
        long len = next_word(&p, buf + used, size - used, text, err);
        if (len < 0) return -1;
        words[n++] = buf + used;
        used += (size_t)len;
    }
}

bool sl_shell_safe(const char *word)
{
    if (!*word) return false;
    for (const char *p = word; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(SL_SHELL_SAFE_PUNCT, *p)) return false;
    return true;
}

int sl_parse_wformat(const char *text, const char *option, sl_wformat *out, sl_err *err)
{
    if (sl_wformat_parse(text, out) != 0) return sl_fail(err, "%s: '%s' is not f32, f16, bf16 or q8_0", option, text);
    return 0;
}

int sl_parse_kv_dtype(const char *text, const char *option, sl_dtype *out, sl_err *err)
{
    if (sl_dtype_parse(text, out) != 0 || (*out != SL_F32 && *out != SL_F16))
        return sl_fail(err, "%s: '%s' is not f32 or f16", option, text);
    return 0;
}

int sl_parse_float_dtype(const char *text, const char *option, sl_dtype *out, sl_err *err)
{
    sl_dtype dtype;
    if (sl_dtype_parse(text, &dtype) != 0 || (dtype != SL_F32 && dtype != SL_F16 && dtype != SL_BF16))
        return sl_fail(err, "%s: '%s' is not f32, f16 or bf16", option, text);
    *out = dtype;
    return 0;
}
