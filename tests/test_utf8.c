/* test_utf8.c — lib/utf8: the check's verdict and the offset it names for each kind of bad
 * sequence, and the stream's output cut on character boundaries (fed byte by byte, at every
 * split point, with bytes that can never become a character). */
#include "check.h"
#include "utf8.h"

#include <string.h>

static void test_check_accepts(void)
{
    static const char *const good[] = {
        "", "plain ASCII", "h\xc3\xa9llo", "\xe2\x82\xac 5", "\xf0\x9f\x99\x82", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        size_t bad = 99;
        sl_err err = {{0}};
        CHECK(sl_utf8_check(good[i], strlen(good[i]), &bad, &err) == 0 && bad == 0, "valid text #%zu accepted: %s", i,
              err.msg);
    }
}

static void test_check_refuses(void)
{
    static const struct {
        const char *text;
        size_t at;
        const char *what;
    } bad[] = {
        {"ab\x80", 2, "a lone continuation byte"},
        {"x\xc0\x80", 1, "an overlong NUL"},
        {"\xe0\x80\xaf", 0, "an overlong three-byte form"},
        {"ok \xed\xa0\x80", 3, "a surrogate"},
        {"\xf4\x90\x80\x80", 0, "a code point past U+10FFFF"},
        {"\xf5\x80\x80\x80", 0, "a byte that starts nothing"},
        {"abc\xe2\x82", 3, "a character cut at the end"},
        {"\xc3\xa9\xc3(", 2, "a lead byte followed by ASCII"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t at = 99;
        sl_err err = {{0}};
        int rc = sl_utf8_check(bad[i].text, strlen(bad[i].text), &at, &err);
        CHECK(rc == -1 && at == bad[i].at && strstr(err.msg, "not UTF-8"), "%s: refused at byte %zu (want %zu): %s",
              bad[i].what, at, bad[i].at, err.msg);
    }
    size_t at = 99;
    CHECK(sl_utf8_check("a\0\xff", 3, &at, NULL) == -1 && at == 2, "the length, not a NUL, ends the text (at %zu)", at);
}

/* Feeds text in pieces cut at the given points; true when the output is the text and every
 * piece written is valid UTF-8 on its own. */
static bool streams_whole(const char *text, size_t len, const size_t *cuts, int n_cuts)
{
    sl_utf8_stream s = {0};
    char all[64], out[64 + 3];
    size_t at = 0, from = 0;
    bool whole = true;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        size_t got = sl_utf8_stream_feed(&s, text + from, to - from, out);
        size_t bad;
        whole = whole && sl_utf8_check(out, got, &bad, NULL) == 0;
        memcpy(all + at, out, got);
        at += got;
        from = to;
    }
    at += sl_utf8_stream_flush(&s, all + at);
    return whole && at == len && memcmp(all, text, len) == 0 && s.n_held == 0;
}

static void test_stream_cuts(void)
{
    /* one character of each length, twice */
    const char text[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82z\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82";
    const size_t len = sizeof text - 1;
    int failed = 0;
    for (size_t a = 0; a <= len; a++)
        for (size_t b = a; b <= len; b++) {
            size_t cuts[2] = {a, b};
            failed += !streams_whole(text, len, cuts, 2);
        }
    CHECK(failed == 0, "%d of the ways to cut the text in three did not stream whole characters", failed);
    size_t every[sizeof text];
    for (size_t i = 0; i < len; i++)
        every[i] = i + 1;
    CHECK(streams_whole(text, len, every, (int)len - 1), "fed byte by byte, every character comes out whole");
}

static void test_stream_held(void)
{
    sl_utf8_stream s = {0};
    char out[8];
    CHECK(sl_utf8_stream_feed(&s, "\xf0\x9f", 2, out) == 0 && s.n_held == 2, "an unfinished emoji is held");
    CHECK(sl_utf8_stream_feed(&s, "\x99", 1, out) == 0 && s.n_held == 3, "still unfinished");
    CHECK(sl_utf8_stream_feed(&s, "\x82!", 2, out) == 5 && memcmp(out, "\xf0\x9f\x99\x82!", 5) == 0,
          "the emoji comes out whole with the next byte");
    CHECK(sl_utf8_stream_feed(&s, "\xed\xa0", 2, out) == 2 && s.n_held == 0,
          "a surrogate's start cannot complete: it passes through");
    CHECK(sl_utf8_stream_feed(&s, "\xff\xc0", 2, out) == 2 && s.n_held == 0, "bytes that start nothing pass through");
    CHECK(sl_utf8_stream_feed(&s, "\x80\x80", 2, out) == 2 && s.n_held == 0, "so do stray continuation bytes");
    CHECK(sl_utf8_stream_feed(&s, "\xe2\x82", 2, out) == 0 && s.n_held == 2, "a cut euro sign is held");
    CHECK(sl_utf8_stream_feed(&s, "A", 1, out) == 3 && memcmp(out,
                                                              "\xe2\x82"
                                                              "A",
                                                              3) == 0,
          "... and let go, unchanged, when ASCII follows instead of its last byte");
    CHECK(sl_utf8_stream_feed(&s, "\xc3", 1, out) == 0 && sl_utf8_stream_flush(&s, out) == 1 &&
              (unsigned char)out[0] == 0xc3 && s.n_held == 0,
          "at the end, an unfinished character is flushed as it is");
    CHECK(sl_utf8_stream_flush(&s, out) == 0, "a second flush writes nothing");
    CHECK(sl_utf8_stream_feed(&s, "", 0, out) == 0, "an empty feed writes nothing");
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_selected("check_accepts")) test_check_accepts();
    if (check_selected("check_refuses")) test_check_refuses();
    if (check_selected("stream_cuts")) test_stream_cuts();
    if (check_selected("stream_held")) test_stream_held();
    return check_done();
}
