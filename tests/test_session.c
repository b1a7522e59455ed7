/* test_session.c — a node's session table: open, find, close, caches reused by the next session
 * that fits, least-recently-used eviction, idle expiry freeing the caches. */
#include "check.h"
#include "session.h"

#include <string.h>

static const sl_config config = {.n_layer = 2,
                                 .n_embd = 16,
                                 .n_head = 2,
                                 .n_inner = 64,
                                 .vocab_size = 32,
                                 .n_positions = 64,
                                 .layer_norm_epsilon = 1e-5};

static void test_open_find_close(const sl_params *p)
{
    sl_err err;
    uint64_t evicted = 99;
    sl_sessions *s = sl_sessions_new(p, 2, 60, SL_F32);
    sl_kv *a = sl_sessions_open(s, 7, 16, 0, &evicted, &err);
    CHECK(a && evicted == 0 && sl_sessions_count(s) == 1, "open session 7 (evicted %llu)", (unsigned long long)evicted);
    CHECK(sl_sessions_find(s, 7, 1) == a && !sl_sessions_find(s, 8, 1), "find by id");
    CHECK(!sl_sessions_open(s, 0, 16, 0, &evicted, &err) && strstr(err.msg, "reserved"), "id 0 refused: %s", err.msg);
    sl_runner *stage = sl_runner_new(p, 4, NULL, &err);
    float in[3 * 16] = {0}, out[3 * 16];
    CHECK(sl_runner_forward(stage, a, 3, NULL, in, out, SL_OUT_HIDDEN, &err) == 0 && sl_kv_len(a) == 3,
          "session 7 holds 3 positions");
    sl_runner_destroy(&stage);
    CHECK(sl_sessions_close(s, 7) && !sl_sessions_close(s, 7), "close once");
    size_t held = sl_sessions_bytes(s);
    CHECK(!sl_sessions_find(s, 7, 2) && sl_sessions_count(s) == 0, "closed is gone");
    CHECK(held > 0 && held == sl_kv_bytes(a), "its cache is kept for the next session (%zu bytes)", held);
    sl_kv *b = sl_sessions_open(s, 8, 16, 3, &evicted, &err);
    CHECK(b == a && sl_kv_len(b) == 0, "the next session reuses the closed cache, empty");
    sl_kv *c = sl_sessions_open(s, 9, 32, 3, &evicted, &err);
    CHECK(c && c != a && sl_kv_capacity(c) >= 32, "a longer context gets a cache that fits");
    sl_sessions_destroy(&s);
    CHECK(s == NULL, "destroy nulls the pointer");
    sl_sessions_destroy(&s);
}

static void test_eviction_and_expiry(const sl_params *p)
{
    sl_err err;
    uint64_t evicted = 0, first = 0;
    sl_sessions *s = sl_sessions_new(p, 2, 10, SL_F32);
    sl_sessions_open(s, 1, 8, 0, &evicted, &err);
    sl_sessions_open(s, 2, 8, 1, &evicted, &err);
    sl_sessions_find(s, 1, 2); /* 2 is now the least recently used */
    sl_kv *c = sl_sessions_open(s, 3, 8, 3, &evicted, &err);
    CHECK(c && evicted == 2 && sl_sessions_find(s, 1, 4) && !sl_sessions_find(s, 2, 4), "LRU evicts 2 (got %llu)",
          (unsigned long long)evicted);
    CHECK(sl_sessions_expire(s, 10, &first) == 0, "nothing idle for more than 10 s yet");
    sl_sessions_close(s, 1);
    CHECK(sl_sessions_expire(s, 14.5, &first) == 1 && first == 3 && sl_sessions_count(s) == 0,
          "session 3 expires (first %llu)", (unsigned long long)first);
    CHECK(sl_sessions_bytes(s) == 0, "expiry frees every idle cache, closed 1's too (%zu left)", sl_sessions_bytes(s));
    sl_kv *d = sl_sessions_open(s, 4, 8, 20, &evicted, &err);
    CHECK(d && evicted == 0 && sl_sessions_count(s) == 1, "opens after expiry without eviction");
    sl_sessions_destroy(&s);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    sl_params p;
    sl_err err;
    if (!CHECK(sl_params_alloc(&p, &config, 0, 2, false, false, &err) == 0, "%s", err.msg)) return check_done();
    if (check_selected("open_find_close")) test_open_find_close(&p);
    if (check_selected("eviction_and_expiry")) test_eviction_and_expiry(&p);
    sl_params_free(&p);
    return check_done();
}
