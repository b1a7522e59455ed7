/* cli.h — parsing of command-line values shared by the tools, with errors naming the option. */
#ifndef SL_CLI_H
#define SL_CLI_H

#include "dtype.h"
#include "wmat.h"
#include "err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of every program, the same class for the same code (README, "Exit codes"):
 *   0    done
 *   1    a runtime failure: I/O, a malformed file, a node's error, a lost connection
 *   2    a usage or configuration error the user must fix: a bad option or value, a bad
 *        topology, a file named on the command line missing or of the wrong kind, an output
 *        that exists (without --force), options the model cannot take
 *   3    a stage of the pipeline did not answer in time (the message names it)
 *   130  stopped by SIGINT (after what the program does on a stop, e.g. train's checkpoint) */
enum { SL_EXIT_OK = 0, SL_EXIT_FAILURE = 1, SL_EXIT_USAGE = 2, SL_EXIT_TIMEOUT = 3, SL_EXIT_INTERRUPTED = 130 };

/* one when n is 1, else many: "%d %s", n, sl_plural(n, "session", "sessions"). */
const char *sl_plural(long n, const char *one, const char *many);

/* "1,2,3" (or "1 2 3") into out; returns the count, -1 with err naming option on a bad entry,
 * an empty list or more than max entries. */
int sl_parse_int_list(const char *text, const char *option, int32_t *out, int max, sl_err *err);

/* A whole number in [lo, hi]. */
int sl_parse_long(const char *text, const char *option, long lo, long hi, long *out, sl_err *err);

/* A finite number in [lo, hi]. */
int sl_parse_double(const char *text, const char *option, double lo, double hi, double *out, sl_err *err);

/* Splits a command line into at most max words, the way a shell would without expanding
 * anything: blanks separate words, '...' and "..." group, a backslash takes the next character
 * as it is (outside '...'). The words point into buf (size bytes). Returns the count, -1 with
 * err on an unclosed quote, too many words or too long a text. */
#define SL_MAX_WORDS 64
int sl_split_words(const char *text, char *buf, size_t size, char **words, int max, sl_err *err);

/* Whether word reaches a program unchanged through a shell (as ssh's remote command does):
 * nonempty, only letters, digits and SL_SHELL_SAFE_PUNCT. */
#define SL_SHELL_SAFE_PUNCT "_@%+=:,./-"
bool sl_shell_safe(const char *word);

/* A stored float type: f32, f16 or bf16 (any case). */
int sl_parse_float_dtype(const char *text, const char *option, sl_dtype *out, sl_err *err);

/* What a KV cache holds: f32 or f16; the error names the option. */
int sl_parse_kv_dtype(const char *text, const char *option, sl_dtype *out, sl_err *err);

/* A weight format: f32, f16, bf16 or q8_0 (any case); the error names the option. */
int sl_parse_wformat(const char *text, const char *option, sl_wformat *out, sl_err *err);

#endif
