/* test_options.c — the command-line parsers: lib/cli's numbers and lists (ranges, junk, overflow,
 * the error naming the option), generation options through sl_gen_opts_apply/finish as run and
 * send use them, and the streamed text of generated tokens (sl_gen_text) on GPT-2's vocab. */
#include "check.h"
#include "cli.h"
#include "gen_opts.h"

#include <limits.h>
#include <string.h>

static void test_parse_long(void)
{
    long v = 7;
    sl_err err = {{0}};
    CHECK(sl_parse_long("42", "--n", 0, 100, &v, &err) == 0 && v == 42, "42: %s", err.msg);
    CHECK(sl_parse_long("-5", "--n", -10, 10, &v, &err) == 0 && v == -5, "-5 in -10..10");
    CHECK(sl_parse_long("0", "--n", 0, 0, &v, &err) == 0 && v == 0, "the bounds are inclusive");
    static const char *const bad[] = {"", "abc", "12x", "1.5", " ", "101", "-1", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 7;
        CHECK(sl_parse_long(bad[i], "--n", 0, 100, &v, &err) == -1 && v == 7 && strstr(err.msg, "--n") &&
                  strstr(err.msg, "0..100"),
              "'%s' refused, naming the option and the range, value untouched: %s", bad[i], err.msg);
    }
}

static void test_parse_double(void)
{
    double d = 7;
    sl_err err = {{0}};
    CHECK(sl_parse_double("0.25", "--x", 0, 1, &d, &err) == 0 && d == 0.25, "0.25: %s", err.msg);
    CHECK(sl_parse_double("1e-3", "--x", 0, 1, &d, &err) == 0 && d == 1e-3, "1e-3");
    CHECK(sl_parse_double("1", "--x", 0, 1, &d, &err) == 0 && d == 1, "the bounds are inclusive");
    static const char *const bad[] = {"", "x", "0.5y", "nan", "inf", "-inf", "1.0001", "-0.1", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        d = 7;
        CHECK(sl_parse_double(bad[i], "--x", 0, 1, &d, &err) == -1 && d == 7 && strstr(err.msg, "--x"),
              "'%s' refused: %s", bad[i], err.msg);
    }
}

static void test_parse_int_list(void)
{
    int32_t out[4];
    sl_err err = {{0}};
    int n = sl_parse_int_list("1,2,3", "--ids", out, 4, &err);
    CHECK(n == 3 && out[0] == 1 && out[1] == 2 && out[2] == 3, "1,2,3: %d: %s", n, err.msg);
    n = sl_parse_int_list(" 7 8,,9, ", "--ids", out, 4, &err);
    CHECK(n == 3 && out[0] == 7 && out[1] == 8 && out[2] == 9, "spaces and repeated commas separate too (%d)", n);
    n = sl_parse_int_list("-2147483648,2147483647", "--ids", out, 4, &err);
    CHECK(n == 2 && out[0] == INT32_MIN && out[1] == INT32_MAX, "the int32 range's ends (%d)", n);
    CHECK(sl_parse_int_list("1,2,3,4,5", "--ids", out, 4, &err) == -1 && strstr(err.msg, "more than 4"),
          "more than max: %s", err.msg);
    static const char *const bad[] = {"", ",, ,", "1,x", "1;2", "2147483648", "1.5", "3-4"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(sl_parse_int_list(bad[i], "--ids", out, 4, &err) == -1 && strstr(err.msg, "--ids"), "'%s' refused: %s",
              bad[i], err.msg);
}

/* The code of a long option in SL_GEN_OPTIONS. */
static int code_of(const char *name)
{
    static const struct option options[] = {SL_GEN_OPTIONS, {0, 0, 0, 0}};
    for (const struct option *o = options; o->name; o++)
        if (strcmp(o->name, name) == 0) return o->val;
    CHECK(0, "no option --%s", name);
    return -1;
}

static int apply(sl_gen_opts *o, const char *name, const char *arg, sl_err *err)
{
    return sl_gen_opts_apply(o, code_of(name), arg, err);
}

static void test_gen_opts(void)
{
    sl_gen_opts o;
    sl_gen_opts_init(&o);
    CHECK(o.max_new_tokens == 32 && o.sampling.greedy && !o.print_ids && !o.quiet, "defaults: 32 greedy tokens");
    sl_err err = {{0}};
    int rc = apply(&o, "temperature", "0.8", &err) | apply(&o, "top-k", "40", &err) | apply(&o, "top-p", "0.9", &err) |
             apply(&o, "seed", "9223372036854775807", &err) | apply(&o, "max-new-tokens", "5", &err) |
             apply(&o, "ids", "1,2,3", &err) | apply(&o, "print-ids", NULL, &err) | apply(&o, "quiet", NULL, &err) |
             apply(&o, "ignore-eos", NULL, &err) | apply(&o, "logits", "l.st", &err) | apply(&o, "vocab", "v", &err) |
             apply(&o, "timings", NULL, &err);
    CHECK(rc == 0 && !o.sampling.greedy && o.sampling.temperature == 0.8f && o.sampling.top_k == 40 &&
              o.sampling.top_p == 0.9f && o.sampling.seed == 9223372036854775807ull && o.max_new_tokens == 5 &&
              o.n_ids == 3 && o.ids[2] == 3 && o.print_ids && o.quiet && o.ignore_eos && o.timings &&
              strcmp(o.logits_path, "l.st") == 0 && strcmp(o.vocab_dir, "v") == 0,
          "every option lands in its field: %s", err.msg);
    CHECK(apply(&o, "greedy", NULL, &err) == 0 && o.sampling.greedy, "--greedy after sampling options wins");
    sl_gen_opts_init(&o);
    CHECK(apply(&o, "top-k", "3", &err) == 0 && !o.sampling.greedy, "--top-k alone samples");
    sl_gen_opts_init(&o);
    CHECK(apply(&o, "seed", "4", &err) == 0 && o.sampling.greedy, "--seed alone stays greedy");
    static const struct {
        const char *name, *arg;
    } bad[] = {{"temperature", "1e-9"}, {"temperature", "-1"}, {"top-k", "-1"},         {"top-p", "0"},
               {"top-p", "1.5"},        {"seed", "-1"},        {"max-new-tokens", "x"}, {"ids", "1,,x"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sl_gen_opts_init(&o);
        CHECK(apply(&o, bad[i].name, bad[i].arg, &err) == -1 && strstr(err.msg, bad[i].name),
              "--%s %s refused, naming it: %s", bad[i].name, bad[i].arg, err.msg);
    }
    CHECK(sl_gen_opts_apply(&o, 999, "x", &err) == -1, "an unknown code is refused");
    sl_gen_opts_init(&o);
    CHECK(apply(&o, "temperature", "0", &err) == 0 && apply(&o, "top-k", "5", &err) == 0 &&
              apply(&o, "top-p", "0.5", &err) == 0 && o.sampling.greedy,
          "--temperature 0 is greedy, whatever --top-k and --top-p say");
    CHECK(apply(&o, "temperature", "0.5", &err) == 0 && !o.sampling.greedy, "... until a temperature above 0");
}

/* Sampling without --seed draws a fresh seed, which --seed takes back; greedy needs none. */
static void test_gen_seed(void)
{
    char *argv[] = {"prog", "MODEL"};
    const char *target;
    sl_err err = {{0}};
    sl_gen_opts a, b, c;
    sl_gen_opts_init(&a), sl_gen_opts_init(&b), sl_gen_opts_init(&c);
    apply(&a, "ids", "1", &err), apply(&a, "temperature", "1", &err);
    apply(&b, "ids", "1", &err), apply(&b, "temperature", "1", &err);
    apply(&c, "ids", "1", &err), apply(&c, "temperature", "1", &err), apply(&c, "seed", "7", &err);
    CHECK(sl_gen_opts_finish(&a, 2, argv, 1, "MODEL_DIR", &target, &err) == 0 &&
              sl_gen_opts_finish(&b, 2, argv, 1, "MODEL_DIR", &target, &err) == 0 && a.seed_drawn && b.seed_drawn &&
              a.sampling.seed != b.sampling.seed && a.sampling.seed <= (uint64_t)__LONG_MAX__,
          "two runs without --seed draw two seeds that --seed takes: %llu %llu", (unsigned long long)a.sampling.seed,
          (unsigned long long)b.sampling.seed);
    CHECK(sl_gen_opts_finish(&c, 2, argv, 1, "MODEL_DIR", &target, &err) == 0 && !c.seed_drawn && c.sampling.seed == 7,
          "--seed is kept, nothing drawn");
    sl_gen_opts_init(&c);
    apply(&c, "ids", "1", &err);
    CHECK(sl_gen_opts_finish(&c, 2, argv, 1, "MODEL_DIR", &target, &err) == 0 && !c.seed_drawn, "greedy draws no seed");
}

/* --timings' lines: llama.cpp's, ms/token the decode time over the tokens decoded. */
static void test_gen_timings(void)
{
    char text[160];
    sl_gen_timings t = {.prompt_tokens = 7, .prefill_ms = 1.234, .decoded = 4, .decode_ms = 10.0};
    CHECK(!strcmp(sl_gen_timings_text(&t, text, sizeof text),
                  "prefill: 7 tokens in 1.23 ms\ndecode: 4 tokens in 10.00 ms (2.50 ms/token)\n"),
          "the two lines: %s", text);
    t.decoded = 0;
    CHECK(!strcmp(sl_gen_timings_text(&t, text, sizeof text),
                  "prefill: 7 tokens in 1.23 ms\ndecode: 0 tokens in 10.00 ms\n"),
          "no token generated: no ms/token: %s", text);
    CHECK(!strcmp(sl_gen_timings_text(&t, text, 12), "prefill: 7 "), "cut to the buffer: %s", text);
}

/* The prompt against n_positions, and why a generation stopped. */
static void test_gen_limits(void)
{
    sl_err err = {{0}};
    CHECK(sl_gen_check_prompt(1024, 1024, &err) == 0, "a prompt of n_positions tokens fits");
    CHECK(sl_gen_check_prompt(1100, 1024, &err) == -1 &&
              !strcmp(err.msg, "the prompt has 1100 tokens; this model takes at most 1024"),
          "one too long names both: %s", err.msg);
    CHECK(sl_gen_check_prompt(0, 1024, &err) == -1 && strstr(err.msg, "empty"), "an empty prompt: %s", err.msg);
    CHECK(!strcmp(sl_gen_stop_reason(10, 5, 5, 1024), "max_new_tokens") &&
              !strcmp(sl_gen_stop_reason(1020, 5, 50, 1024), "context_limit") &&
              !strcmp(sl_gen_stop_reason(10, 3, 50, 1024), "eos") &&
              !strcmp(sl_gen_stop_reason(1020, 5, 5, 1024), "max_new_tokens"),
          "stop reasons");
}

static void test_gen_finish(void)
{
    char *argv[] = {"prog", "MODEL", "a prompt", "extra"};
    const char *target = NULL;
    sl_err err = {{0}};
    sl_gen_opts o;
    sl_gen_opts_init(&o);
    CHECK(sl_gen_opts_finish(&o, 3, argv, 1, "MODEL_DIR", &target, &err) == 0 && strcmp(target, "MODEL") == 0 &&
              strcmp(o.prompt, "a prompt") == 0,
          "target and prompt: %s", err.msg);
    sl_gen_opts_init(&o);
    CHECK(sl_gen_opts_finish(&o, 4, argv, 1, "MODEL_DIR", &target, &err) == -1 && strstr(err.msg, "MODEL_DIR"),
          "two prompts: refused naming the target: %s", err.msg);
    sl_gen_opts_init(&o);
    CHECK(sl_gen_opts_finish(&o, 1, argv, 1, "MODEL_DIR", &target, &err) == -1 && strstr(err.msg, "MODEL_DIR"),
          "no target: %s", err.msg);
    sl_gen_opts_init(&o);
    CHECK(sl_gen_opts_finish(&o, 2, argv, 1, "MODEL_DIR", &target, &err) == -1 && strstr(err.msg, "--ids"),
          "neither prompt nor --ids: %s", err.msg);
    sl_gen_opts_init(&o);
    apply(&o, "ids", "5", &err);
    CHECK(sl_gen_opts_finish(&o, 3, argv, 1, "MODEL_DIR", &target, &err) == -1 && strstr(err.msg, "one of them"),
          "both prompt and --ids: %s", err.msg);
    sl_gen_opts_init(&o);
    apply(&o, "ids", "5", &err);
    CHECK(sl_gen_opts_finish(&o, 2, argv, 1, "MODEL_DIR", &target, &err) == 0 && !o.prompt, "--ids alone: %s", err.msg);
}

/* GPT-2 ids of single bytes: 0xc3 and 0xa9 ("é" cut in two), 0xe2, 0x82, 0xac ("€" in three). */
enum { BYTE_C3 = 127, BYTE_A9 = 102, BYTE_E2 = 158, BYTE_82 = 224, BYTE_AC = 105, HELLO = 15496 };

static void test_gen_text(void)
{
    sl_err err = {{0}};
    sl_tokenizer *tok = sl_tokenizer_new("models/gpt2-vocab", &err);
    if (!CHECK(tok != NULL, "%s", err.msg)) return;
    sl_gen_text text = {.tok = tok};
    size_t len = 99;
    const char *out = sl_gen_text_token(&text, HELLO, &len);
    CHECK(out && len == 5 && memcmp(out, "Hello", 5) == 0, "a whole token comes out at once");
    out = sl_gen_text_token(&text, BYTE_C3, &len);
    CHECK(out && len == 0, "the first byte of 'é' is held (%zu bytes out)", len);
    out = sl_gen_text_token(&text, BYTE_A9, &len);
    CHECK(out && len == 2 && memcmp(out, "\xc3\xa9", 2) == 0, "'é' comes out whole with its second byte");
    int32_t euro[3] = {BYTE_E2, BYTE_82, BYTE_AC};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        out = sl_gen_text_token(&text, euro[i], &len);
        total += len;
    }
    CHECK(total == 3 && memcmp(out, "\xe2\x82\xac", 3) == 0, "'€' in three tokens comes out whole with the third");
    CHECK(sl_gen_text_token(&text, BYTE_E2, &len) && len == 0, "an unfinished last character is held");
    out = sl_gen_text_end(&text, &len);
    CHECK(len == 1 && (unsigned char)out[0] == 0xe2, "... and printed as it is at the end");
    CHECK(sl_gen_text_token(&text, 50257, &len) == NULL, "an id outside the vocabulary gives NULL");
    sl_tokenizer_destroy(&tok);
}

/* A repeated failure is logged the 1st, 10th, 100th... time only. */
static void test_worth_logging(void)
{
    int logged = 0;
    for (long i = 1; i <= 1000; i++)
        logged += sl_err_worth_logging(i);
    CHECK(logged == 4 && sl_err_worth_logging(1) && sl_err_worth_logging(100) && !sl_err_worth_logging(20) &&
              !sl_err_worth_logging(0),
          "1, 10, 100 and 1000 of the first 1000 (%d logged)", logged);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_selected("parse_long")) test_parse_long();
    if (check_selected("worth_logging")) test_worth_logging();
    if (check_selected("parse_double")) test_parse_double();
    if (check_selected("parse_int_list")) test_parse_int_list();
    if (check_selected("gen_opts")) test_gen_opts();
    if (check_selected("gen_finish")) test_gen_finish();
    if (check_selected("gen_seed")) test_gen_seed();
    if (check_selected("gen_limits")) test_gen_limits();
    if (check_selected("gen_timings")) test_gen_timings();
    if (check_selected("gen_text")) test_gen_text();
    return check_done();
}
