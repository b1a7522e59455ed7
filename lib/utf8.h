/* utf8.h — UTF-8 checks for text input and whole characters for streamed output.
 *
 * sl_utf8_check validates a buffer (PCRE2's checker: it names what is wrong and where).
 * sl_utf8_stream cuts a byte stream on character boundaries: tokens arrive one at a time and a
 * character may span two of them, so the stream holds back an unfinished UTF-8 sequence at the
 * end of what it was fed until the next bytes complete it, and printed text never splits a
 * character. Bytes that cannot become valid UTF-8 pass through unchanged: the concatenated
 * output always equals the concatenated input. */
#ifndef SL_UTF8_H
#define SL_UTF8_H

#include "err.h"

#include <stddef.h>

/* Whether text[0..len) is valid UTF-8: 0, or -1 with *bad_offset at the first byte of the first
 * invalid sequence and err saying what is wrong with it. */
int sl_utf8_check(const char *text, size_t len, size_t *bad_offset, sl_err *err);

/* The bytes held back between two feeds. Zero-initialise (sl_utf8_stream s = {0}); it owns no
 * memory. */
typedef struct sl_utf8_stream {
    unsigned char held[3];
    size_t n_held;
} sl_utf8_stream;

/* Writes to out (room for len + 3 bytes) the held bytes and those of bytes[0..len) that end on
 * a character boundary; keeps an unfinished trailing sequence. Returns the count written. */
size_t sl_utf8_stream_feed(sl_utf8_stream *s, const char *bytes, size_t len, char *out);

/* At the end of the text: writes the bytes still held (at most 3) to out; returns the count. */
size_t sl_utf8_stream_flush(sl_utf8_stream *s, char *out);

#endif
