/* test_sha256.c — lib/sha256 against FIPS 180-2's and NIST's vectors (the empty string, "abc",
 * the 448- and 896-bit messages, a million 'a'), fed at once and in uneven pieces; files through
 * sl_sha256_file (empty, the vectors, missing); the hex spelling. */
#include "check.h"
#include "sha256.h"

#include <limits.h>
#include <string.h>

static char tmp[256];

typedef struct vector {
    const char *what, *hex;
    const char *text; /* or, when NULL, `repeat` times the character 'a' */
    size_t repeat;
} vector;

static const vector vectors[] = {
    {"empty", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "", 0},
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc", 0},
    {"448 bits", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
     "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 0},
    {"896 bits", "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
     "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
     0},
    {"a million 'a'", "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", NULL, 1000000},
};
enum { N_VECTORS = sizeof vectors / sizeof *vectors };

/* The message of v (malloc'ed, caller frees), its length in *len. */
static char *message(const vector *v, size_t *len)
{
    *len = v->text ? strlen(v->text) : v->repeat;
    char *m = malloc(*len + 1);
    if (!m) return NULL;
    if (v->text)
        memcpy(m, v->text, *len + 1);
    else
        memset(m, 'a', *len), m[*len] = '\0';
    return m;
}

/* The hex digest of len bytes fed in pieces of the sizes in `pieces` (cycled; {0}: all at once). */
static void digest_hex(const char *m, size_t len, const size_t *pieces, int n_pieces, char hex[65])
{
    uint8_t digest[32];
    sl_sha256 *h = sl_sha256_new();
    if (!CHECK(h != NULL, "sl_sha256_new")) return;
    for (size_t at = 0, k = 0; at < len; k++) {
        size_t step = pieces[k % (size_t)n_pieces] ? pieces[k % (size_t)n_pieces] : len;
        if (step > len - at) step = len - at;
        sl_sha256_update(h, m + at, step);
        at += step;
    }
    sl_sha256_final(h, digest);
    sl_sha256_destroy(&h);
    sl_sha256_hex(digest, hex);
}

static void test_vectors(void)
{
    static const size_t at_once[] = {0}, uneven[] = {1, 63, 64, 65, 7, 128, 3};
    for (int i = 0; i < N_VECTORS; i++) {
        size_t len;
        char *m = message(&vectors[i], &len), hex[65] = "", pieces_hex[65] = "";
        if (!m) continue;
        digest_hex(m, len, at_once, 1, hex);
        CHECK(strcmp(hex, vectors[i].hex) == 0, "%s: %s, want %s", vectors[i].what, hex, vectors[i].hex);
        digest_hex(m, len, uneven, 7, pieces_hex);
        CHECK(strcmp(pieces_hex, vectors[i].hex) == 0, "%s in pieces of 1, 63, 64, 65, 7, 128, 3 bytes: %s",
              vectors[i].what, pieces_hex);
        free(m);
    }
    char hex[65];
    digest_hex("abc", 0, (const size_t[]){0}, 1, hex);
    CHECK(strcmp(hex, vectors[0].hex) == 0, "nothing fed is the empty message's digest");
}

static void test_files(void)
{
    for (int i = 0; i < N_VECTORS; i++) {
        size_t len;
        char *m = message(&vectors[i], &len), path[PATH_MAX], hex[65] = "";
        if (!m) continue;
        snprintf(path, sizeof path, "%s/v%d", tmp, i);
        FILE *fp = fopen(path, "wb");
        bool written = fp && fwrite(m, 1, len, fp) == len;
        if (fp) written = fclose(fp) == 0 && written;
        uint8_t digest[32];
        sl_err err = {{0}};
        if (CHECK(written && sl_sha256_file(path, digest, &err) == 0, "%s: hash the file: %s", vectors[i].what,
                  err.msg)) {
            sl_sha256_hex(digest, hex);
            CHECK(strcmp(hex, vectors[i].hex) == 0, "%s as a file: %s", vectors[i].what, hex);
        }
        free(m);
    }
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/none", tmp);
    uint8_t digest[32];
    sl_err err = {{0}};
    CHECK(sl_sha256_file(missing, digest, &err) == -1 && strstr(err.msg, missing), "a missing file is named: %s",
          err.msg);
}

static void test_hex(void)
{
    uint8_t digest[32];
    for (int i = 0; i < 32; i++)
        digest[i] = (uint8_t)(i * 37 + 5);
    char hex[65];
    memset(hex, 'x', sizeof hex);
    sl_sha256_hex(digest, hex);
    bool same = strlen(hex) == 64;
    for (int i = 0; same && i < 32; i++) {
        char two[3];
        snprintf(two, sizeof two, "%02x", digest[i]);
        same = memcmp(hex + 2 * i, two, 2) == 0;
    }
    CHECK(same, "hex: 64 lower-case digits, high nibble first: %s", hex);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "sha256") != 0) return 1;
    if (check_selected("vectors")) test_vectors();
    if (check_selected("files")) test_files();
    if (check_selected("hex")) test_hex();
    check_rmtree(tmp);
    return check_done();
}
