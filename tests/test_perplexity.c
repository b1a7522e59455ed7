/* test_perplexity.c — zmq-splitlearn-perplexity against the fixtures: its perplexity of tiny-b on
 * a prompt equals exp(mean cross-entropy) computed here in double from the reference logits,
 * whether the model is the HF directory or a split of it, on the whole prompt or a shorter window;
 * the text path tokenizes as zmq-splitlearn-tokenize does; every weight format and an F16 cache
 * stay close; the usage errors exit 2. */
#include "check.h"
#include "fixtures.h"
#include "version.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char bin[2048], tmp[256];

/* Runs a shell command line; its first line of output into out (may be NULL). Returns the exit
 * status (-1 if it did not exit). */
static int run(char *out, size_t size, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[1024] = "";
    if (!fgets(line, sizeof line, p)) line[0] = '\0';
    while (fgetc(p) != EOF) {
    }
    int status = pclose(p);
    if (out) snprintf(out, size, "%s", line);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The perplexity and token count of a line "perplexity P (cross-entropy X nats over N tokens; ...". */
static bool parse(const char *line, double *ppl, long *tokens)
{
    double ce;
    return sscanf(line, "perplexity %lf (cross-entropy %lf nats over %ld tokens", ppl, &ce, tokens) == 3;
}

/* exp(mean over t in [1, n) of -log softmax(logits[t-1])[ids[t]]) from the reference logits. */
static double reference_perplexity(const float *logits, int V, const int32_t *ids, int n)
{
    double sum = 0;
    for (int t = 1; t < n; t++) {
        const float *z = logits + (size_t)(t - 1) * V;
        double max = z[0], s = 0;
        for (int v = 1; v < V; v++)
            max = z[v] > max ? z[v] : max;
        for (int v = 0; v < V; v++)
            s += exp(z[v] - max);
        sum += log(s) + max - z[ids[t]];
    }
    return exp(sum / (n - 1));
}

/* Whether the last line of the file at path is `want` (with its newline). */
static bool file_last_line_is(const char *path, const char *want)
{
    char line[1024] = "", last[1024] = "";
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        snprintf(last, sizeof last, "%s", line);
    if (f) fclose(f);
    return strcmp(last, want) == 0;
}

static void write_ids(const char *path, const int32_t *ids, int n, const char *sep)
{
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++)
        fprintf(f, "%s%d", i ? sep : "", ids[i]);
    if (f) fclose(f);
}

/* The longest prompt of tiny-b and its reference logits at every position. */
static const float *longest_prompt(const sl_st_file *refs, fixture_prompt *prompts, int n, int V, int *which)
{
    *which = 0;
    for (int i = 1; i < n; i++)
        if (prompts[i].n_ids > prompts[*which].n_ids) *which = i;
    char name[64];
    snprintf(name, sizeof name, "p%d.logits", *which);
    return fixture_f32(refs, name, (size_t)prompts[*which].n_ids * V);
}

static void test_tiny_b(void)
{
    const char *model = "tiny-b";
    char dir[1024], path[1024], line[1024], tokens[1024], shorter[1024];
    snprintf(dir, sizeof dir, "%s/%s", check_fixtures(), model);
    fixture_path(path, sizeof path, model, "refs.safetensors");
    fixture_prompt prompts[8];
    int n = fixture_prompts(model, prompts, 8), which, V = 1000;
    sl_err err;
    sl_st_file *refs = sl_st_open(path, &err);
    if (!CHECK(refs && n > 0, "tiny-b's references: %s", refs ? "no prompts" : err.msg)) return;
    const float *logits = longest_prompt(refs, prompts, n, V, &which);
    const fixture_prompt *fp = &prompts[which];
    if (!logits || !CHECK(fp->n_ids > 20, "a prompt of more than 20 tokens (%d)", fp->n_ids)) {
        sl_st_close(&refs);
        return;
    }
    double expected = reference_perplexity(logits, V, fp->ids, fp->n_ids), ppl = 0;
    long scored = 0;
    snprintf(tokens, sizeof tokens, "%s/tokens.txt", tmp);
    write_ids(tokens, fp->ids, fp->n_ids, ", ");
    int rc = run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' '%s' --tokens '%s'", bin, dir, tokens);
    CHECK(rc == 0 && parse(line, &ppl, &scored), "perplexity of tiny-b ran: exit %d, '%s'", rc, line);
    CHECK(fabs(ppl / expected - 1) < 1e-5 && scored == fp->n_ids - 1,
          "tiny-b, prompt %d: perplexity %.6f over %ld tokens = the references' %.6f over %d", which, ppl, scored,
          expected, fp->n_ids - 1);

    /* a window of 20: the first 20 tokens alone score as the references' first 19 predictions */
    snprintf(shorter, sizeof shorter, "%s/first20.txt", tmp);
    write_ids(shorter, fp->ids, 20, "\n");
    double expected20 = reference_perplexity(logits, V, fp->ids, 20), ppl20 = 0;
    rc = run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' '%s' --tokens '%s' --ctx 20", bin, dir, shorter);
    CHECK(rc == 0 && parse(line, &ppl20, &scored) && fabs(ppl20 / expected20 - 1) < 1e-5 && scored == 19,
          "the first 20 tokens: %.6f over %ld = the references' %.6f over 19", ppl20, scored, expected20);
    rc = run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' '%s' --tokens '%s' --ctx 20 --stride 10", bin, dir,
             tokens);
    double slid = 0;
    CHECK(rc == 0 && parse(line, &slid, &scored) && scored == fp->n_ids - 1 && slid != ppl,
          "windows of 20 every 10: every token but the first scored once (%ld), with less context than one window "
          "(%.6f, not %.6f)",
          scored, slid, ppl);

    /* the same model as a split directory: its parts joined give the same perplexity */
    rc = run(NULL, 0, "'%s/zmq-splitlearn-split' '%s' --splits 2,4 -o '%s/parts' >/dev/null 2>&1", bin, dir, tmp);
    double joined = 0;
    if (CHECK(rc == 0, "split tiny-b at 2,4")) {
        rc = run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' '%s/parts' --tokens '%s'", bin, tmp, tokens);
        CHECK(rc == 0 && parse(line, &joined, &scored) && joined == ppl,
              "a split directory: %.6f, as the model it was cut from (%.6f)", joined, ppl);
    }

    /* other weight formats and an F16 cache: close to F32, and named in the line */
    static const char *const formats[][2] = {{"f16", "f32"}, {"bf16", "f32"}, {"q8_0", "f32"}, {"f32", "f16"}};
    for (int i = 0; i < 4; i++) {
        double other = 0;
        char named[64];
        rc = run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' '%s' --tokens '%s' --weights %s --kv %s", bin, dir,
                 tokens, formats[i][0], formats[i][1]);
        snprintf(named, sizeof named, "weights %s, kv %s)", formats[i][0], formats[i][1]);
        CHECK(rc == 0 && parse(line, &other, &scored) && fabs(other / ppl - 1) < 1e-3 && strstr(line, named),
              "--weights %s --kv %s: %.6f within 0.1%% of F32's %.6f ('%s')", formats[i][0], formats[i][1], other, ppl,
              line);
    }
    sl_st_close(&refs);
}

/* --text: the text tokenized with the model's vocab, as zmq-splitlearn-tokenize gives it. */
static void test_text(void)
{
    char dir[1024], text[1024], ids[1024], line[1024], from_text[1024], from_ids[1024];
    snprintf(dir, sizeof dir, "%s/tiny-a", check_fixtures());
    snprintf(text, sizeof text, "%s/text.txt", tmp);
    snprintf(ids, sizeof ids, "%s/ids.txt", tmp);
    FILE *f = fopen(text, "w");
    if (f) fputs("In the beginning God created the heaven and the earth. And the earth was without form.", f);
    if (f) fclose(f);
    int rc = run(NULL, 0, "'%s/zmq-splitlearn-tokenize' \"$(cat '%s')\" > '%s'", bin, text, ids);
    CHECK(rc == 0, "tokenize the text");
    rc =
        run(from_text, sizeof from_text, "'%s/zmq-splitlearn-perplexity' '%s' --text '%s' 2>/dev/null", bin, dir, text);
    int rc2 = run(from_ids, sizeof from_ids, "'%s/zmq-splitlearn-perplexity' '%s' --tokens '%s'", bin, dir, ids);
    double a = 0, b = 0;
    long na = 0, nb = 0;
    CHECK(rc == 0 && rc2 == 0 && parse(from_text, &a, &na) && parse(from_ids, &b, &nb) && a == b && na == nb && na > 10,
          "--text equals --tokens of its ids: '%s' / '%s'", from_text, from_ids);
    (void)line;
}

static void test_usage(void)
{
    char dir[1024], one[1024], bad[1024], two[1024], line[1024];
    snprintf(dir, sizeof dir, "%s/tiny-b", check_fixtures());
    snprintf(one, sizeof one, "%s/one.txt", tmp);
    snprintf(bad, sizeof bad, "%s/bad.txt", tmp);
    snprintf(two, sizeof two, "%s/two.txt", tmp);
    int32_t single = 5, outside[2] = {5, 1000}, good[2] = {5, 6};
    write_ids(one, &single, 1, " ");
    write_ids(bad, outside, 2, " ");
    write_ids(two, good, 2, " ");
    static const struct {
        const char *args, *what;
    } cases[] = {
        {"'%1$s'", "neither --text nor --tokens"},
        {"'%1$s' --tokens /nonexistent/ids.txt", "a missing token file"},
        {"/nonexistent/model --tokens '%2$s'", "a missing model"},
        {"'%1$s' --tokens '%2$s'", "a text of one token"},
        {"'%1$s' --tokens '%3$s'", "a token outside the vocab"},
        {"'%1$s' --tokens '%4$s' --ctx 65", "--ctx beyond n_positions (64)"},
        {"'%1$s' --tokens '%4$s' --ctx 8 --stride 9", "--stride beyond --ctx"},
        {"'%1$s' --tokens '%4$s' --weights q4", "an unknown weight format"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[4096];
        snprintf(args, sizeof args, cases[i].args, dir, one, bad, two);
        int rc = run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' %s 2>&1", bin, args);
        CHECK(rc == 2 && strstr(line, "zmq-splitlearn-perplexity: "), "%s: exit 2 with a message (%d, '%s')",
              cases[i].what, rc, line);
    }
    CHECK(run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' '%s' --tokens '%s' 2>&1", bin, dir, two) == 0 &&
              strstr(line, "perplexity "),
          "two tokens are enough: '%s'", line);
    CHECK(run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' --help", bin) == 0 && strstr(line, "usage:"),
          "--help: usage, exit 0");
    CHECK(run(line, sizeof line, "'%s/zmq-splitlearn-perplexity' --version", bin) == 0 &&
              strstr(line, "zmq-splitlearn-perplexity (zmq-splitlearn) " SL_VERSION),
          "--version: '%s'", line);
    char errors[1024];
    snprintf(errors, sizeof errors, "%s/errors.txt", tmp);
    int rc = run(NULL, 0, "'%s/zmq-splitlearn-perplexity' --bogus 2>'%s'", bin, errors);
    CHECK(rc == 2 && file_last_line_is(errors, "see zmq-splitlearn-perplexity --help\n"),
          "a bad option: exit 2 (%d), then where the help is", rc);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "perplexity") != 0) return 1;
    check_bin_dir(bin, sizeof bin);
    if (check_selected("tiny_b")) test_tiny_b();
    if (check_selected("text")) test_text();
    if (check_selected("usage")) test_usage();
    check_rmtree(tmp);
    return check_done();
}
