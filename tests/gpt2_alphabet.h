/* gpt2_alphabet.h — GPT-2's byte alphabet for tests that write vocab files: the character that
 * stands for each byte in vocab.json, merges.txt and tokenizer.json. */
#ifndef SL_TEST_GPT2_ALPHABET_H
#define SL_TEST_GPT2_ALPHABET_H

#include <stdbool.h>

/* The GPT-2 alphabet character of byte b, as UTF-8. */
static inline void alphabet_char(int b, char out[3])
{
    int moved = 0;
    for (int x = 0; x < b; x++)
        moved += !((x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff));
    bool itself = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    int cp = itself ? b : 256 + moved;
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = '\0';
    } else {
        out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = '\0';
    }
}

#endif
