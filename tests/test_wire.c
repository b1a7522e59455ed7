/* test_wire.c — the message codec: every kind round-trips, every validation rule refuses what it
 * should with a message naming the field, and random or hostile bytes never crash it. */
#include "check.h"
#include "rng.h"
#include "wire.h"

#include <string.h>

static sl_wire_limits limits = {.n_embd = 4, .n_positions = 16, .vocab_size = 10, .max_bytes = 1 << 20};

static int roundtrip(const sl_msg *in, sl_msg *out, msgpack_sbuffer *buf, sl_wire_decoder *dec, sl_err *err)
{
    if (sl_wire_encode(in, buf, err) != 0) return -1;
    return sl_wire_decode(dec, buf->data, buf->size, &limits, out, err);
}

static void test_roundtrips(sl_wire_decoder *dec, msgpack_sbuffer *buf)
{
    sl_err err;
    sl_msg in = {.kind = SL_MSG_FORWARD, .session = 0xfedcba9876543210ull, .step = 7, .pos = 3, .ctx = 12}, out;
    int32_t ids[3] = {1, 9, 0};
    in.ids = ids;
    in.n_ids = 3;
    in.has_sample = true;
    in.sample = (sl_sampling){.temperature = 0.7f, .top_k = 5, .top_p = 0.9f, .seed = 42};
    in.sample_index = 11;
    in.ack = true;
    CHECK(roundtrip(&in, &out, buf, dec, &err) == 0, "forward ids: %s", err.msg);
    int32_t got[3];
    sl_msg_copy_ids(&out, got);
    CHECK(out.kind == SL_MSG_FORWARD && out.session == in.session && out.step == 7 && out.pos == 3 && out.ctx == 12 &&
              out.n_ids == 3 && memcmp(got, ids, sizeof ids) == 0,
          "forward ids fields survive");
    CHECK(out.has_sample && !out.sample.greedy && out.sample.top_k == 5 && out.sample.seed == 42 &&
              fabsf(out.sample.temperature - 0.7f) < 1e-6f && out.sample_index == 11 && out.ack && !out.want_logits,
          "sampling fields survive");

    float x[8] = {1.5f, -2, 3.25f, 0, 1e-3f, 7, -8, 65504};
    sl_msg fx = {.kind = SL_MSG_FORWARD, .session = 1, .step = 1, .pos = 0, .x = x, .rows = 2, .cols = 4};
    for (int dt = SL_F32; dt <= SL_BF16; dt++) {
        fx.dtype = (sl_dtype)dt;
        float back[8];
        CHECK(roundtrip(&fx, &out, buf, dec, &err) == 0, "forward x %s: %s", sl_dtype_name(fx.dtype), err.msg);
        sl_msg_copy_x(&out, back);
        double tol = dt == SL_F32 ? 0 : dt == SL_F16 ? 1e-3 : 1e-2;
        int bad = 0;
        for (int i = 0; i < 8; i++)
            bad += fabs(back[i] - x[i]) > tol * fabs(x[i]) + 1e-6;
        CHECK(out.rows == 2 && out.cols == 4 && out.dtype == fx.dtype && bad == 0, "x as %s round-trips",
              sl_dtype_name(fx.dtype));
    }

    float logits[20];
    for (int i = 0; i < 20; i++)
        logits[i] = (float)i / 3;
    sl_msg res = {
        .kind = SL_MSG_RESULT, .session = 5, .step = 2, .pos = 4, .token = 9, .logits = logits, .rows = 2, .cols = 10};
    CHECK(roundtrip(&res, &out, buf, dec, &err) == 0 && out.token == 9 && out.rows == 2 &&
              memcmp(out.logits, logits, sizeof logits) == 0,
          "result with logits: %s", err.msg);
    sl_msg e = {.kind = SL_MSG_ERROR, .session = 5, .step = 3};
    snprintf(e.node, sizeof e.node, "trunk1");
    snprintf(e.code, sizeof e.code, "unknown_session");
    snprintf(e.message, sizeof e.message, "no such session");
    CHECK(roundtrip(&e, &out, buf, dec, &err) == 0 && strcmp(out.code, "unknown_session") == 0 &&
              strcmp(out.node, "trunk1") == 0 && strcmp(out.message, "no such session") == 0,
          "error: %s", err.msg);
    sl_msg end = {.kind = SL_MSG_END, .session = 77};
    CHECK(roundtrip(&end, &out, buf, dec, &err) == 0 && out.kind == SL_MSG_END && out.session == 77, "end: %s",
          err.msg);
    sl_msg ack = {.kind = SL_MSG_ACK, .session = 77, .step = 4};
    snprintf(ack.node, sizeof ack.node, "bottom");
    CHECK(roundtrip(&ack, &out, buf, dec, &err) == 0 && out.step == 4 && strcmp(out.node, "bottom") == 0, "ack: %s",
          err.msg);

    /* training */
    float g[2 * 4] = {1, -2, 3, -4, 5, -6, 7, -8};
    sl_msg back = {.kind = SL_MSG_BACKWARD,
                   .session = 9,
                   .step = 5,
                   .x = g,
                   .rows = 2,
                   .cols = 4,
                   .update = true,
                   .lr = 0.25f,
                   .weight_decay = 0.5f,
                   .grad_scale = 0.125f,
                   .has_gnorm2 = true,
                   .gnorm2 = 3.5};
    float gback[8];
    int rc = roundtrip(&back, &out, buf, dec, &err);
    if (rc == 0) sl_msg_copy_x(&out, gback);
    CHECK(rc == 0 && out.kind == SL_MSG_BACKWARD && out.update && out.lr == 0.25f && out.weight_decay == 0.5f &&
              out.grad_scale == 0.125f && out.has_gnorm2 && out.gnorm2 == 3.5 && !memcmp(gback, g, sizeof g),
          "backward: %s", err.msg);
    sl_msg update = {.kind = SL_MSG_UPDATE, .session = 9, .step = 6, .lr = 0.5f, .grad_scale = 1};
    CHECK(roundtrip(&update, &out, buf, dec, &err) == 0 && out.kind == SL_MSG_UPDATE && out.lr == 0.5f, "update: %s",
          err.msg);
    sl_msg load = {.kind = SL_MSG_LOAD, .session = 9, .step = 7, .has_at_step = true, .at_step = 1200};
    snprintf(load.dir, sizeof load.dir, "ckpt/run 1");
    CHECK(roundtrip(&load, &out, buf, dec, &err) == 0 && out.kind == SL_MSG_LOAD && out.has_at_step &&
              out.at_step == 1200 && !strcmp(out.dir, "ckpt/run 1"),
          "load with at_step: %s", err.msg);
    load.kind = SL_MSG_SAVE;
    load.has_loss = true;
    load.loss = 3.25f;
    CHECK(roundtrip(&load, &out, buf, dec, &err) == 0 && out.kind == SL_MSG_SAVE && !out.has_at_step && out.has_loss &&
              out.loss == 3.25f && !strcmp(out.dir, "ckpt/run 1"),
          "save with the loss (no at_step): %s", err.msg);
}

/* Packs a map from alternating key / value writers. */
typedef struct packed {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} packed;

static void start(packed *p, size_t fields)
{
    msgpack_sbuffer_clear(&p->buf);
    msgpack_packer_init(&p->pk, &p->buf, msgpack_sbuffer_write);
    msgpack_pack_map(&p->pk, fields);
}

static void kstr(packed *p, const char *k, const char *v)
{
    msgpack_pack_str_with_body(&p->pk, k, strlen(k));
    msgpack_pack_str_with_body(&p->pk, v, strlen(v));
}

static void kuint(packed *p, const char *k, uint64_t v)
{
    msgpack_pack_str_with_body(&p->pk, k, strlen(k));
    msgpack_pack_uint64(&p->pk, v);
}

static void kbin(packed *p, const char *k, size_t n)
{
    static const unsigned char zeros[256];
    msgpack_pack_str_with_body(&p->pk, k, strlen(k));
    msgpack_pack_bin_with_body(&p->pk, zeros, n);
}

static void kshape(packed *p, uint32_t r, uint32_t c)
{
    msgpack_pack_str_with_body(&p->pk, "shape", 5);
    msgpack_pack_array(&p->pk, 2);
    msgpack_pack_uint32(&p->pk, r);
    msgpack_pack_uint32(&p->pk, c);
}

static void expect_refused(sl_wire_decoder *dec, packed *p, const char *needle, const char *label)
{
    sl_msg m;
    sl_err err = {{0}};
    int rc = sl_wire_decode(dec, p->buf.data, p->buf.size, &limits, &m, &err);
    CHECK(rc != 0 && strstr(err.msg, needle), "%s: expected an error with '%s', got rc %d '%s'", label, needle, rc,
          err.msg);
}

/* A valid forward header (v, kind, session, step, pos, and a "reply_to" that older clients sent
 * and decoders ignore) plus `extra` more fields. */
static void forward_head(packed *p, size_t extra, uint64_t version, const char *kind, uint64_t pos)
{
    start(p, 6 + extra);
    kuint(p, "v", version);
    kstr(p, "kind", kind);
    kuint(p, "session", 1);
    kuint(p, "step", 0);
    kuint(p, "pos", pos);
    kstr(p, "reply_to", "tcp://127.0.0.1:1");
}

static void test_validation(sl_wire_decoder *dec)
{
    packed p;
    msgpack_sbuffer_init(&p.buf);
    forward_head(&p, 1, 2, "forward", 0);
    kbin(&p, "ids", 8);
    expect_refused(dec, &p, "\"v\": version 2", "unknown version");
    forward_head(&p, 1, 1, "teleport", 0);
    kbin(&p, "ids", 8);
    expect_refused(dec, &p, "unknown kind \"teleport\"", "unknown kind");
    forward_head(&p, 0, 1, "forward", 0);
    expect_refused(dec, &p, "exactly one of \"ids\" and \"x\"", "no payload");
    start(&p, 3);
    kuint(&p, "v", 1);
    kstr(&p, "kind", "forward");
    kuint(&p, "session", 1);
    expect_refused(dec, &p, "\"step\" is missing from a forward", "missing step");
    start(&p, 3);
    kuint(&p, "v", 1);
    kstr(&p, "kind", "end");
    kstr(&p, "session", "one");
    expect_refused(dec, &p, "\"session\" must be an unsigned integer", "mistyped session");
    forward_head(&p, 1, 1, "forward", 0);
    kbin(&p, "ids", 7);
    expect_refused(dec, &p, "not a whole number of int32", "ids of 7 bytes");
    forward_head(&p, 3, 1, "forward", 0);
    kbin(&p, "x", 16);
    kshape(&p, 2, 4);
    kstr(&p, "dtype", "f32");
    expect_refused(dec, &p, "16 bytes but shape [2, 4] of F32 needs 32", "x shorter than its shape");
    forward_head(&p, 3, 1, "forward", 0);
    kbin(&p, "x", 40);
    kshape(&p, 2, 5);
    kstr(&p, "dtype", "f32");
    expect_refused(dec, &p, "width 5 but the model's n_embd is 4", "wrong hidden size");
    forward_head(&p, 3, 1, "forward", 0);
    kbin(&p, "x", 16);
    kshape(&p, 2, 4);
    kstr(&p, "dtype", "f64");
    expect_refused(dec, &p, "\"dtype\": \"f64\"", "unknown dtype");
    forward_head(&p, 1, 1, "forward", 14);
    kbin(&p, "ids", 12);
    expect_refused(dec, &p, "beyond n_positions 16", "positions beyond the model");
    start(&p, 5);
    kuint(&p, "v", 1);
    kstr(&p, "kind", "forward");
    kuint(&p, "session", 1);
    kuint(&p, "step", 1);
    kstr(&p, "reply_to", "tcp://127.0.0.1:1"); /* no longer a field: ignored, as any unknown key */
    expect_refused(dec, &p, "\"pos\" is missing", "no pos");
    forward_head(&p, 1, 1, "forward", 0);
    msgpack_pack_str_with_body(&p.pk, "sample", 6);
    msgpack_pack_map(&p.pk, 1);
    msgpack_pack_str_with_body(&p.pk, "top_p", 5);
    msgpack_pack_double(&p.pk, 1.5);
    expect_refused(dec, &p, "--top-p", "top_p out of range");
    msgpack_sbuffer_clear(&p.buf);
    msgpack_packer_init(&p.pk, &p.buf, msgpack_sbuffer_write);
    msgpack_pack_array(&p.pk, 1);
    msgpack_pack_uint8(&p.pk, 1);
    expect_refused(dec, &p, "not a msgpack map", "array instead of map");

    /* Claimed sizes far beyond the bytes present. */
    const unsigned char bin32[] = {0x81, 0xa1, 'x', 0xc6, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
    const unsigned char map32[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'v'};
    const unsigned char arr32[] = {0x81, 0xa5, 's', 'h', 'a', 'p', 'e', 0xdd, 0x10, 0x00, 0x00, 0x00};
    sl_msg m;
    sl_err err;
    CHECK(sl_wire_decode(dec, bin32, sizeof bin32, &limits, &m, &err) != 0, "bin32 claiming 2 GB refused");
    CHECK(sl_wire_decode(dec, map32, sizeof map32, &limits, &m, &err) != 0, "map32 claiming 2G entries refused");
    CHECK(sl_wire_decode(dec, arr32, sizeof arr32, &limits, &m, &err) != 0, "array32 claiming 268M entries refused");
    sl_wire_limits tiny = limits;
    tiny.max_bytes = 4;
    CHECK(sl_wire_decode(dec, bin32, sizeof bin32, &tiny, &m, &err) != 0 && strstr(err.msg, "cap"), "size cap: %s",
          err.msg);
    msgpack_sbuffer_destroy(&p.buf);
}

static void test_random_bytes(sl_wire_decoder *dec, msgpack_sbuffer *valid)
{
    sl_rng rng;
    sl_rng_seed(&rng, 1);
    unsigned char buf[512];
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = sl_rng_below(&rng, sizeof buf) + 1;
        if (i % 2 && valid->size <= sizeof buf) {
            /* Mutations of a valid message reach deeper than pure noise. */
            n = valid->size;
            memcpy(buf, valid->data, n);
            for (int k = 0; k < 3; k++)
                buf[sl_rng_below(&rng, n)] = (unsigned char)sl_rng_next(&rng);
            n = sl_rng_below(&rng, 4) ? n : sl_rng_below(&rng, n) + 1;
        } else {
            for (size_t k = 0; k < n; k++)
                buf[k] = (unsigned char)sl_rng_next(&rng);
        }
        sl_msg m;
        sl_err err;
        accepted += sl_wire_decode(dec, buf, n, &limits, &m, &err) == 0;
    }
    CHECK(accepted < 20000, "random bytes: %d of 20000 decoded as messages, the rest refused without a crash",
          accepted);
}

int main(void)
{
    sl_wire_decoder *dec = sl_wire_decoder_new();
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    test_roundtrips(dec, &buf);
    test_validation(dec);
    sl_msg fx = {.kind = SL_MSG_FORWARD, .session = 1, .step = 1, .pos = 0, .rows = 1, .cols = 4, .dtype = SL_F32};
    float x[4] = {1, 2, 3, 4};
    fx.x = x;
    sl_err err;
    sl_wire_encode(&fx, &buf, &err);
    test_random_bytes(dec, &buf);
    msgpack_sbuffer_destroy(&buf);
    sl_wire_decoder_destroy(&dec);
    return check_done();
}
