/* test_session.c — a node's session table: open, find, close, caches reused by the next session
 * that fits, least-recently-used eviction, idle expiry freeing the caches; session ids: 128
 * random bits, distinct, balanced, and drawn from the kernel (a forked process draws others). */
#include "check.h"
#include "session.h"

#include <string.h>
#include <sys/wait.h>

static const sl_config config = {.n_layer = 2,
                                 .n_embd = 16,
                                 .n_head = 2,
                                 .n_inner = 64,
                                 .vocab_size = 32,
                                 .n_positions = 64,
                                 .layer_norm_epsilon = 1e-5};

/* A test's id n: n in its first byte (ids differing in their last byte: ids compare whole). */
static sl_id id(uint8_t n, uint8_t last) { return (sl_id){.bytes = {n, [SL_ID_BYTES - 1] = last}}; }

static void test_open_find_close(const sl_params *p)
{
    sl_err err;
    sl_id evicted = id(99, 0);
    sl_sessions *s = sl_sessions_new(p, 2, 60, SL_F32);
    sl_kv *a = sl_sessions_open(s, id(7, 0), 16, 0, &evicted, &err);
    CHECK(a && sl_id_none(evicted) && sl_sessions_count(s) == 1, "open session 7 (evicted %04x..)",
          SL_ID_SHORT(evicted));
    CHECK(sl_sessions_find(s, id(7, 0), 1) == a && !sl_sessions_find(s, id(8, 0), 1), "find by id");
    CHECK(!sl_sessions_find(s, id(7, 1), 1), "an id that differs in its last byte is another session");
    CHECK(!sl_sessions_open(s, id(0, 0), 16, 0, &evicted, &err) && strstr(err.msg, "reserved"),
          "the all-zero id refused: %s", err.msg);
    sl_runner *stage = sl_runner_new(p, 4, NULL, &err);
    float in[3 * 16] = {0}, out[3 * 16];
    CHECK(sl_runner_forward(stage, a, 3, NULL, in, out, SL_OUT_HIDDEN, &err) == 0 && sl_kv_len(a) == 3,
          "session 7 holds 3 positions");
    sl_runner_destroy(&stage);
    CHECK(sl_sessions_close(s, id(7, 0)) && !sl_sessions_close(s, id(7, 0)), "close once");
    size_t held = sl_sessions_bytes(s);
    CHECK(!sl_sessions_find(s, id(7, 0), 2) && sl_sessions_count(s) == 0, "closed is gone");
    CHECK(held > 0 && held == sl_kv_bytes(a), "its cache is kept for the next session (%zu bytes)", held);
    sl_kv *b = sl_sessions_open(s, id(8, 0), 16, 3, &evicted, &err);
    CHECK(b == a && sl_kv_len(b) == 0, "the next session reuses the closed cache, empty");
    sl_kv *c = sl_sessions_open(s, id(9, 0), 32, 3, &evicted, &err);
    CHECK(c && c != a && sl_kv_capacity(c) >= 32, "a longer context gets a cache that fits");
    sl_sessions_destroy(&s);
    CHECK(s == NULL, "destroy nulls the pointer");
    sl_sessions_destroy(&s);
}

static void test_eviction_and_expiry(const sl_params *p)
{
    sl_err err;
    sl_id evicted, first = {{0}};
    sl_sessions *s = sl_sessions_new(p, 2, 10, SL_F32);
    sl_sessions_open(s, id(1, 0), 8, 0, &evicted, &err);
    sl_sessions_open(s, id(2, 0), 8, 1, &evicted, &err);
    sl_sessions_find(s, id(1, 0), 2); /* 2 is now the least recently used */
    sl_kv *c = sl_sessions_open(s, id(3, 0), 8, 3, &evicted, &err);
    CHECK(c && sl_id_equal(evicted, id(2, 0)) && sl_sessions_find(s, id(1, 0), 4) && !sl_sessions_find(s, id(2, 0), 4),
          "LRU evicts 2 (got %04x..)", SL_ID_SHORT(evicted));
    CHECK(sl_sessions_expire(s, 10, &first) == 0, "nothing idle for more than 10 s yet");
    sl_sessions_close(s, id(1, 0));
    CHECK(sl_sessions_expire(s, 14.5, &first) == 1 && sl_id_equal(first, id(3, 0)) && sl_sessions_count(s) == 0,
          "session 3 expires (first %04x..)", SL_ID_SHORT(first));
    CHECK(sl_sessions_bytes(s) == 0, "expiry frees every idle cache, closed 1's too (%zu left)", sl_sessions_bytes(s));
    sl_kv *d = sl_sessions_open(s, id(4, 0), 8, 20, &evicted, &err);
    CHECK(d && sl_id_none(evicted) && sl_sessions_count(s) == 1, "opens after expiry without eviction");
    sl_sessions_destroy(&s);
}

/* 1000 ids: none all-zero, no two alike, every one of the 128 bits set in about half of them
 * (binomial: 500 +- 16; 400..600 is beyond 6 sigma); and a forked process, which holds a copy of
 * any state a generator in this process has, draws another id: the bits come from the kernel. */
enum { DRAWS = 1000 };
static void test_ids(void)
{
    static sl_id ids[DRAWS];
    sl_err err = {{0}};
    int drawn = 0, alike = 0, none = 0, unbalanced = 0;
    while (drawn < DRAWS && sl_id_new(&ids[drawn], &err) == 0)
        drawn++;
    CHECK(drawn == DRAWS, "%d ids drawn: %s", drawn, err.msg);
    for (int i = 0; i < drawn; i++) {
        none += sl_id_none(ids[i]);
        for (int j = 0; j < i; j++)
            alike += sl_id_equal(ids[i], ids[j]);
    }
    for (int bit = 0; bit < 8 * SL_ID_BYTES; bit++) {
        int set = 0;
        for (int i = 0; i < drawn; i++)
            set += ids[i].bytes[bit / 8] >> (bit % 8) & 1;
        unbalanced += set < 400 || set > 600;
    }
    CHECK(none == 0 && alike == 0, "no id is all-zero (%d) and no two are alike (%d)", none, alike);
    CHECK(unbalanced == 0, "every bit is set in 400..600 of %d ids (%d bits are not)", DRAWS, unbalanced);
    int fds[2];
    sl_id mine, theirs = {{0}};
    if (!CHECK(pipe(fds) == 0, "a pipe")) return;
    pid_t child = fork();
    if (child == 0) {
        sl_id drawn_there;
        _exit(sl_id_new(&drawn_there, NULL) == 0 &&
                      write(fds[1], &drawn_there, sizeof drawn_there) == (ssize_t)sizeof drawn_there
                  ? 0
                  : 1);
    }
    bool read_back = child > 0 && read(fds[0], &theirs, sizeof theirs) == (ssize_t)sizeof theirs;
    if (child > 0) waitpid(child, NULL, 0);
    close(fds[0]);
    close(fds[1]);
    CHECK(read_back && sl_id_new(&mine, &err) == 0 && !sl_id_equal(mine, theirs),
          "a forked process draws another id than its parent (%04x.. and %04x..)", SL_ID_SHORT(mine),
          SL_ID_SHORT(theirs));
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    sl_params p;
    sl_err err;
    if (!CHECK(sl_params_alloc(&p, &config, 0, 2, false, false, &err) == 0, "%s", err.msg)) return check_done();
    if (check_selected("ids")) test_ids();
    if (check_selected("open_find_close")) test_open_find_close(&p);
    if (check_selected("eviction_and_expiry")) test_eviction_and_expiry(&p);
    sl_params_free(&p);
    return check_done();
}
