/* utf8.c — validating UTF-8 (through PCRE2) and cutting a byte stream on character boundaries. */
#include "utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <string.h>

int sl_utf8_check(const char *text, size_t len, size_t *bad_offset, sl_err *err)
{
    *bad_offset = 0;
    int code;
    PCRE2_SIZE at;
    pcre2_code *empty = pcre2_compile((PCRE2_SPTR) "", 0, PCRE2_UTF, &code, &at, NULL);
    pcre2_match_data *md = empty ? pcre2_match_data_create(1, NULL) : NULL;
    if (!md) {
        pcre2_code_free(empty);
        return sl_fail(err, "out of memory");
    }
    /* Matching checks the whole subject's UTF-8 first, and says where it goes wrong. */
    int rc = pcre2_match(empty, (PCRE2_SPTR)text, len, 0, 0, md, NULL);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) {
        PCRE2_UCHAR why[128];
        pcre2_get_error_message(rc, why, sizeof why);
        *bad_offset = pcre2_get_startchar(md);
        rc = sl_fail(err, "not UTF-8: %s", (const char *)why);
    } else {
        rc = 0;
    }
    pcre2_match_data_free(md);
    pcre2_code_free(empty);
    return rc;
}

/* The length of the UTF-8 sequence that lead starts; 0 if lead cannot start one. */
static size_t utf8_sequence_length(unsigned char lead)
{
    if (lead < 0x80) return 1;
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 0;
}

/* Whether b can follow lead: the narrower ranges rule out overlong forms, surrogates and code
 * points beyond U+10FFFF. */
static bool utf8_second_byte_ok(unsigned char lead, unsigned char b)
{
    unsigned char lo = lead == 0xe0 ? 0xa0 : lead == 0xf0 ? 0x90 : 0x80;
    unsigned char hi = lead == 0xed ? 0x9f : lead == 0xf4 ? 0x8f : 0xbf;
    return b >= lo && b <= hi;
}

/* How many bytes at the end of buf are the start of a character that more bytes could
 * complete (0 to 3). */
static size_t unfinished_tail(const unsigned char *buf, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char lead = buf[n - back];
        if (lead >= 0x80 && lead < 0xc0) continue; /* a continuation byte: look further back */
        if (utf8_sequence_length(lead) <= back) return 0;
        return back == 1 || utf8_second_byte_ok(lead, buf[n - back + 1]) ? back : 0;
    }
    return 0;
}

size_t sl_utf8_stream_feed(sl_utf8_stream *s, const char *bytes, size_t len, char *out)
{
    memcpy(out, s->held, s->n_held);
    if (len) memcpy(out + s->n_held, bytes, len);
    size_t total = s->n_held + len, keep = unfinished_tail((unsigned char *)out, total);
    memcpy(s->held, out + total - keep, keep);
    s->n_held = keep;
    return total - keep;
}

size_t sl_utf8_stream_flush(sl_utf8_stream *s, char *out)
{
    size_t n = s->n_held;
    memcpy(out, s->held, n);
    s->n_held = 0;
    return n;
}
