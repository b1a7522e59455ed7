/* err.c — formatting of lib/'s caller-owned error messages. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sl_fail(sl_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void sl_err_prefix(sl_err *err, const char *fmt, ...)
{
    if (!err) return;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    int n = snprintf(err->msg, sizeof err->msg, "%s: ", prefix);
    if (n < 0 || (size_t)n >= sizeof err->msg) return;
    size_t room = sizeof err->msg - (size_t)n - 1, len = strnlen(old, room);
    memcpy(err->msg + n, old, len);
    err->msg[n + len] = '\0';
}

bool sl_err_worth_logging(long count)
{
    while (count > 0 && count % 10 == 0)
        count /= 10;
    return count == 1;
}
