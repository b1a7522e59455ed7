/* err.h — how lib/ reports failure: an int status (or NULL) plus a message in the caller's buffer.
 *
 * lib/ never prints and never exits. A function that can fail takes `sl_err *err` (may be NULL)
 * and, on failure, writes one line naming what is wrong and where (file, line, tensor, field). */
#ifndef SL_ERR_H
#define SL_ERR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sl_err {
    char msg[1024];
} sl_err;

/* Writes the formatted message into err (when err is not NULL); always returns -1. */
int sl_fail(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to the message already in err, to add context on the way up. */
void sl_err_prefix(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether the count-th time a failure repeats gets a line of its own: the 1st, 10th, 100th...
 * (a flood is seen, and logs stay short). */
bool sl_err_worth_logging(long count);

#endif
