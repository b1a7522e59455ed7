/* tokenize.c — zmq-splitlearn-tokenize: text to GPT-2 token ids, or ids back to text. */
#include "cli.h"
#include "gen_opts.h"
#include "tokenizer.h"
#include "tool.h"

#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char prog[] = "zmq-splitlearn-tokenize";

static const char usage[] =
    "usage: zmq-splitlearn-tokenize [--vocab DIR] TEXT            print TEXT's ids on one line\n"
    "       zmq-splitlearn-tokenize [--vocab DIR] -               the same for standard input\n"
    "       zmq-splitlearn-tokenize [--vocab DIR] --decode ID...  print the ids' text\n"
    "       zmq-splitlearn-tokenize [--vocab DIR] --decode -      ids from standard input\n"
    "\n"
    "Encodes with GPT-2's byte-level BPE: any bytes, including invalid UTF-8, encode and decode\n"
    "back unchanged. --decode writes the raw bytes, then a newline. IDs may be separate\n"
    "arguments or lists like \"15496 995\" or 15496,995. Put -- before a TEXT that starts with -.\n"
    "\n"
    "  --vocab DIR   vocab.json + merges.txt, or an HF tokenizer.json (default: the bundled GPT-2\n"
    "                vocab: models/gpt2-vocab in the current directory, else beside this\n"
    "                program's bin/, else PREFIX/share/zmq-splitlearn/gpt2-vocab when installed)\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 done, 1 runtime error (vocab missing or malformed, id outside the vocab,\n"
    "             input or output failed), 2 usage error\n";

/* All of standard input; NULL with err on a read error or when memory runs out. */
static char *read_stdin(size_t *len, sl_err *err)
{
    size_t cap = 1 << 16, got;
    char *buf = malloc(cap + 1);
    *len = 0;
    while (buf && (got = fread(buf + *len, 1, cap - *len, stdin)) > 0) {
        *len += got;
        if (*len < cap) continue;
        char *more = realloc(buf, 2 * cap + 1);
        if (!more) free(buf);
        buf = more;
        cap *= 2;
    }
    if (buf && !ferror(stdin)) {
        buf[*len] = '\0';
        return buf;
    }
    free(buf);
    sl_fail(err, "standard input: %s", buf ? "read failed" : "out of memory");
    return NULL;
}

static int encode(sl_tokenizer *tok, const char *arg, sl_err *err)
{
    bool from_stdin = strcmp(arg, "-") == 0;
    size_t len = strlen(arg);
    char *input = from_stdin ? read_stdin(&len, err) : NULL;
    if (from_stdin && !input) return -1;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = sl_tokenizer_encode(tok, from_stdin ? input : arg, len, &ids, &n, &cap, err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    if (rc == 0) putchar('\n');
    free(ids);
    free(input);
    return rc;
}

/* Appends the ids in text (separated by spaces, commas or newlines) to ids[*n..max). */
static int parse_ids(char *text, int32_t *ids, int *n, int max, sl_err *err)
{
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\t' || *p == '\r') *p = ' ';
    if (strspn(text, " ,") == strlen(text)) return 0; /* nothing but separators */
    int got = sl_parse_int_list(text, "--decode", ids + *n, max - *n, err);
    if (got < 0) return -1;
    *n += got;
    return 0;
}

/* The ids of the arguments, or of standard input for "-"; caller frees. On failure *status
 * says whose fault: the command line's (usage) or the input's. */
static int32_t *collect_ids(char **args, int count, int *n, int *status, sl_err *err)
{
    char *input = NULL;
    *status = SL_EXIT_FAILURE;
    if (count == 1 && strcmp(args[0], "-") == 0) {
        if (!(input = read_stdin(&(size_t){0}, err))) return NULL;
        args = &input;
    }
    size_t max = 1;
    for (int i = 0; i < count; i++)
        max += strlen(args[i]) / 2 + 1; /* "1 2 3": one id per 2 */
    int32_t *ids = max <= INT_MAX ? malloc(max * sizeof *ids) : NULL;
    int rc = ids ? 0 : sl_fail(err, "out of memory");
    *n = 0;
    for (int i = 0; rc == 0 && i < count; i++) {
        rc = parse_ids(args[i], ids, n, (int)max, err);
        if (rc != 0 && !input) *status = SL_EXIT_USAGE;
    }
    free(input);
    if (rc == 0) return ids;
    free(ids);
    return NULL;
}

static int decode(sl_tokenizer *tok, char **args, int count, sl_err *err)
{
    int n, status;
    int32_t *ids = collect_ids(args, count, &n, &status, err);
    if (!ids) return status;
    size_t len = 0;
    char *text = sl_tokenizer_decode(tok, ids, (size_t)n, &len, err);
    if (text) {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    free(text);
    free(ids);
    return text ? SL_EXIT_OK : SL_EXIT_FAILURE;
}

/* Loads the vocab and encodes or decodes; returns the exit status, err filled on failure. */
static int run(const char *vocab, bool decoding, char **args, int count, sl_err *err)
{
    char default_dir[PATH_MAX];
    sl_default_vocab_dir(default_dir, sizeof default_dir);
    sl_tokenizer *tok = sl_tokenizer_new(vocab ? vocab : default_dir, err);
    if (!tok) return SL_EXIT_FAILURE;
    int status = SL_EXIT_OK;
    if (decoding)
        status = decode(tok, args, count, err);
    else if (encode(tok, args[0], err) != 0)
        status = SL_EXIT_FAILURE;
    sl_tokenizer_destroy(&tok);
    if (status == SL_EXIT_OK && (fflush(stdout) != 0 || ferror(stdout))) {
        sl_fail(err, "standard output: write failed");
        status = SL_EXIT_FAILURE;
    }
    return status;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"vocab", 1, 0, 'v'}, {"decode", 0, 0, 'd'}, SL_TOOL_OPTIONS, {0, 0, 0, 0}};
    const char *vocab = NULL;
    bool decoding = false;
    int c;
    /* "+": options end at the first operand, so that a later "-1" is an id, not an option. */
    while ((c = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
        if (c == 'v')
            vocab = optarg;
        else if (c == 'd')
            decoding = true;
        else
            return sl_tool_other_option(c, prog, usage);
    }
    if (decoding ? optind >= argc : argc - optind != 1)
        return sl_tool_usage_error(prog, decoding ? "give the ids to decode (or -)" : "give one TEXT (or -)");
    sl_err err;
    int status = run(vocab, decoding, argv + optind, argc - optind, &err);
    if (status != SL_EXIT_OK) fprintf(stderr, "%s: %s\n", prog, err.msg);
    return status;
}
