/* tokenize.c — zmq-splitlearn-tokenize: text to GPT-2 token ids, or ids back to text. */
#include "cli.h"
#include "fileio.h"
#include "generate.h"
#include "tokenizer.h"

#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-tokenize [--vocab DIR] \"text\"      print the ids on one line\n"
    "       zmq-splitlearn-tokenize [--vocab DIR] -              the text from standard input\n"
    "       zmq-splitlearn-tokenize [--vocab DIR] --decode 15496 995   print the text\n"
    "\n"
    "DIR holds vocab.json and merges.txt (default: models/gpt2-vocab of this project).\n"
    "\n"
    "exit status: 0 done, 1 bad vocab or id, 2 usage error\n";

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    *len = 0;
    size_t got;
    while (buf && (got = fread(buf + *len, 1, cap - *len, stdin)) > 0) {
        *len += got;
        if (*len == cap) {
            char *more = realloc(buf, cap *= 2);
            if (!more) free(buf);
            buf = more;
        }
    }
    return buf;
}

static int encode(sl_tokenizer *tok, const char *arg, sl_err *err)
{
    size_t len = strlen(arg);
    char *input = strcmp(arg, "-") == 0 ? read_stdin(&len) : NULL;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = sl_tokenizer_encode(tok, input ? input : arg, len, &ids, &n, &cap, err);
    for (size_t i = 0; rc == 0 && i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
    if (rc == 0) putchar('\n');
    free(ids);
    free(input);
    return rc;
}

static int decode(sl_tokenizer *tok, char **args, int count, sl_err *err)
{
    int32_t *ids = malloc(((size_t)count + 1) * sizeof *ids);
    int n = 0, rc = ids ? 0 : sl_fail(err, "out of memory");
    for (int i = 0; rc == 0 && i < count; i++) {
        int got = sl_parse_int_list(args[i], "--decode", ids + n, count - n + 1, err);
        if (got < 0) rc = -1;
        else n += got;
    }
    size_t len;
    char *text = rc == 0 ? sl_tokenizer_decode(tok, ids, (size_t)n, &len, err) : NULL;
    if (text) {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    free(text);
    free(ids);
    return text ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"vocab", 1, 0, 'v'}, {"decode", 0, 0, 'd'}, {"help", 0, 0, 'h'},
                                            {0, 0, 0, 0}};
    const char *vocab = NULL;
    bool decoding = false;
    int c;
    while ((c = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
        if (c == 'v') vocab = optarg;
        else if (c == 'd') decoding = true;
        else if (c == 'h') return fputs(usage, stdout), SL_EXIT_OK;
        else return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    if (decoding ? optind >= argc : argc - optind != 1) {
        fprintf(stderr, "zmq-splitlearn-tokenize: %s\n%s", decoding ? "give ids to decode" : "give one text (or -)", usage);
        return SL_EXIT_USAGE;
    }
    char fallback[PATH_MAX];
    sl_default_vocab_dir(fallback, sizeof fallback);
    sl_err err;
    sl_tokenizer *tok = sl_tokenizer_new(vocab ? vocab : fallback, &err);
    int rc = !tok ? -1 : decoding ? decode(tok, argv + optind, argc - optind, &err) : encode(tok, argv[optind], &err);
    if (rc != 0) fprintf(stderr, "zmq-splitlearn-tokenize: %s\n", err.msg);
    sl_tokenizer_destroy(&tok);
    return rc == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
}
