/* test_wire.c — the message codec: every kind round-trips, every field of the codec's table
 * round-trips and is refused with its name when mistyped, out of bounds or missing, the table
 * agrees with wire.h's comment, every validation rule refuses what it should with a message
 * naming the field, and random or hostile bytes are refused or decode to what they carry. */
#include "check.h"
#include "rng.h"
#include "wire_check.h"

#include <string.h>

static const sl_wire_limits limits = WIRE_CHECK_LIMITS;

static int roundtrip(const sl_msg *in, sl_msg *out, msgpack_sbuffer *buf, sl_wire_decoder *dec, sl_err *err)
{
    if (sl_wire_encode(in, buf, err) != 0) return -1;
    return sl_wire_decode(dec, buf->data, buf->size, &limits, out, err);
}

static void test_roundtrips(sl_wire_decoder *dec, msgpack_sbuffer *buf)
{
    sl_err err;
    sl_msg in = {.kind = SL_MSG_FORWARD,
                 .session = {{0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 1, 2, 3, 4, 5, 6, 7, 8}},
                 .step = 7,
                 .pos = 3,
                 .ctx = 12},
           out;
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
    CHECK(out.kind == SL_MSG_FORWARD && sl_id_equal(out.session, in.session) && out.step == 7 && out.pos == 3 &&
              out.ctx == 12 && out.n_ids == 3 && memcmp(got, ids, sizeof ids) == 0,
          "forward ids fields survive");
    CHECK(out.has_sample && !out.sample.greedy && out.sample.top_k == 5 && out.sample.seed == 42 &&
              fabsf(out.sample.temperature - 0.7f) < 1e-6f && out.sample_index == 11 && out.ack && !out.want_logits,
          "sampling fields survive");

    float x[8] = {1.5f, -2, 3.25f, 0, 1e-3f, 7, -8, 65504};
    sl_msg fx = {.kind = SL_MSG_FORWARD, .session = {{1}}, .step = 1, .pos = 0, .x = x, .rows = 2, .cols = 4};
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
    sl_msg res = {.kind = SL_MSG_RESULT,
                  .session = {{5}},
                  .step = 2,
                  .pos = 4,
                  .token = 9,
                  .logits = logits,
                  .rows = 2,
                  .cols = 10};
    CHECK(roundtrip(&res, &out, buf, dec, &err) == 0 && out.token == 9 && out.rows == 2 &&
              memcmp(out.logits, logits, sizeof logits) == 0,
          "result with logits: %s", err.msg);
    sl_msg e = {.kind = SL_MSG_ERROR, .session = {{5}}, .step = 3};
    snprintf(e.node, sizeof e.node, "trunk1");
    snprintf(e.code, sizeof e.code, "unknown_session");
    snprintf(e.message, sizeof e.message, "no such session");
    CHECK(roundtrip(&e, &out, buf, dec, &err) == 0 && strcmp(out.code, "unknown_session") == 0 &&
              strcmp(out.node, "trunk1") == 0 && strcmp(out.message, "no such session") == 0,
          "error: %s", err.msg);
    sl_msg end = {.kind = SL_MSG_END, .session = {{77}}};
    CHECK(roundtrip(&end, &out, buf, dec, &err) == 0 && out.kind == SL_MSG_END && out.session.bytes[0] == 77, "end: %s",
          err.msg);
    /* The bytes of an end, as wire.h lays them out: the session is a bin 8 of its 16 bytes in order. */
    static const unsigned char end_bytes[] = {0x83, 0xa1, 'v', 2,   0xa4, 'k', 'i', 'n', 'd',  0xa3, 'e',  'n', 'd',
                                              0xa7, 's',  'e', 's', 's',  'i', 'o', 'n', 0xc4, 0x10, 0x4d, 0,   0,
                                              0,    0,    0,   0,   0,    0,   0,   0,   0,    0,    0,    0,   0xee};
    end.session.bytes[SL_ID_BYTES - 1] = 0xee;
    CHECK(sl_wire_encode(&end, buf, &err) == 0 && buf->size == sizeof end_bytes &&
              !memcmp(buf->data, end_bytes, sizeof end_bytes),
          "an end encodes to its documented bytes (%zu of them)", buf->size);
    sl_msg ack = {.kind = SL_MSG_ACK, .session = {{77}}, .step = 4};
    snprintf(ack.node, sizeof ack.node, "bottom");
    CHECK(roundtrip(&ack, &out, buf, dec, &err) == 0 && out.step == 4 && strcmp(out.node, "bottom") == 0, "ack: %s",
          err.msg);

    /* training */
    float g[2 * 4] = {1, -2, 3, -4, 5, -6, 7, -8};
    sl_msg back = {.kind = SL_MSG_BACKWARD,
                   .session = {{9}},
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
    sl_msg update = {.kind = SL_MSG_UPDATE, .session = {{9}}, .step = 6, .lr = 0.5f, .grad_scale = 1};
    CHECK(roundtrip(&update, &out, buf, dec, &err) == 0 && out.kind == SL_MSG_UPDATE && out.lr == 0.5f, "update: %s",
          err.msg);
    sl_msg load = {.kind = SL_MSG_LOAD, .session = {{9}}, .step = 7, .has_at_step = true, .at_step = 1200};
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

/* A "session" of n bytes, the first of them first (0: all zero). */
static void ksession(packed *p, size_t n, unsigned char first)
{
    unsigned char bytes[32] = {first};
    msgpack_pack_str_with_body(&p->pk, "session", 7);
    msgpack_pack_bin_with_body(&p->pk, bytes, n);
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
    ksession(p, 16, 1);
    kuint(p, "step", 0);
    kuint(p, "pos", pos);
    kstr(p, "reply_to", "tcp://127.0.0.1:1");
}

static void test_validation(sl_wire_decoder *dec)
{
    packed p;
    msgpack_sbuffer_init(&p.buf);
    forward_head(&p, 1, 3, "forward", 0);
    kbin(&p, "ids", 8);
    expect_refused(dec, &p, "\"v\": version 3", "unknown version");
    forward_head(&p, 1, 1, "forward", 0);
    kbin(&p, "ids", 8);
    expect_refused(dec, &p, "\"v\": version 1 is not supported (this is 2)", "protocol 1 (64-bit sessions)");
    forward_head(&p, 1, SL_WIRE_VERSION, "teleport", 0);
    kbin(&p, "ids", 8);
    expect_refused(dec, &p, "unknown kind \"teleport\"", "unknown kind");
    forward_head(&p, 0, SL_WIRE_VERSION, "forward", 0);
    expect_refused(dec, &p, "exactly one of \"ids\" and \"x\"", "no payload");
    start(&p, 3);
    kuint(&p, "v", SL_WIRE_VERSION);
    kstr(&p, "kind", "forward");
    ksession(&p, 16, 1);
    expect_refused(dec, &p, "\"step\" is missing from a forward", "missing step");
    start(&p, 3);
    kuint(&p, "v", SL_WIRE_VERSION);
    kstr(&p, "kind", "end");
    kstr(&p, "session", "one");
    expect_refused(dec, &p, "\"session\" must be binary of 16 bytes", "mistyped session");
    start(&p, 3);
    kuint(&p, "v", SL_WIRE_VERSION);
    kstr(&p, "kind", "end");
    kuint(&p, "session", 0xfedcba9876543210ull);
    expect_refused(dec, &p, "\"session\" must be binary of 16 bytes",
                   "a 64-bit session id (protocol 1 before ids grew)");
    const size_t lengths[3] = {8, 15, 17};
    for (int i = 0; i < 3; i++) {
        start(&p, 3);
        kuint(&p, "v", SL_WIRE_VERSION);
        kstr(&p, "kind", "end");
        ksession(&p, lengths[i], 1);
        char label[64];
        snprintf(label, sizeof label, "a session of %zu bytes", lengths[i]);
        expect_refused(dec, &p, "\"session\" must be binary of 16 bytes", label);
    }
    start(&p, 3);
    kuint(&p, "v", SL_WIRE_VERSION);
    kstr(&p, "kind", "end");
    ksession(&p, 16, 0);
    expect_refused(dec, &p, "all-zero is reserved", "the all-zero session");
    forward_head(&p, 1, SL_WIRE_VERSION, "forward", 0);
    kbin(&p, "ids", 7);
    expect_refused(dec, &p, "not a whole number of int32", "ids of 7 bytes");
    forward_head(&p, 3, SL_WIRE_VERSION, "forward", 0);
    kbin(&p, "x", 16);
    kshape(&p, 2, 4);
    kstr(&p, "dtype", "f32");
    expect_refused(dec, &p, "16 bytes but shape [2, 4] of F32 needs 32", "x shorter than its shape");
    forward_head(&p, 3, SL_WIRE_VERSION, "forward", 0);
    kbin(&p, "x", 40);
    kshape(&p, 2, 5);
    kstr(&p, "dtype", "f32");
    expect_refused(dec, &p, "width 5 but the model's n_embd is 4", "wrong hidden size");
    forward_head(&p, 3, SL_WIRE_VERSION, "forward", 0);
    kbin(&p, "x", 16);
    kshape(&p, 2, 4);
    kstr(&p, "dtype", "f64");
    expect_refused(dec, &p, "\"dtype\": \"f64\"", "unknown dtype");
    forward_head(&p, 1, SL_WIRE_VERSION, "forward", 14);
    kbin(&p, "ids", 12);
    expect_refused(dec, &p, "beyond n_positions 16", "positions beyond the model");
    start(&p, 5);
    kuint(&p, "v", SL_WIRE_VERSION);
    kstr(&p, "kind", "forward");
    ksession(&p, 16, 1);
    kuint(&p, "step", 1);
    kstr(&p, "reply_to", "tcp://127.0.0.1:1"); /* no longer a field: ignored, as any unknown key */
    expect_refused(dec, &p, "\"pos\" is missing", "no pos");
    forward_head(&p, 1, SL_WIRE_VERSION, "forward", 0);
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

/* ---- the field table ---- */

#define ALL_KINDS ((1u << SL_MSG_KIND_COUNT) - 1)

static bool member_fits(const sl_wire_field *f)
{
    switch (f->type) {
    case SL_WIRE_T_VERSION:
    case SL_WIRE_T_MAP:
        return f->size == 0;
    case SL_WIRE_T_UINT:
        return f->size == 8 || (f->size == 4 && f->max <= UINT32_MAX);
    case SL_WIRE_T_FLOAT64:
        return f->size == sizeof(float) || f->size == sizeof(double);
    case SL_WIRE_T_FLOAT32:
        return f->size == sizeof(float);
    case SL_WIRE_T_BOOL:
        return f->size == sizeof(bool);
    case SL_WIRE_T_ID:
        return f->size == SL_ID_BYTES;
    case SL_WIRE_T_STR:
        return f->size >= 2;
    case SL_WIRE_T_KIND:
    case SL_WIRE_T_DTYPE:
    case SL_WIRE_T_SHAPE:
        return f->size == 4;
    default: /* the payloads */
        return f->size == sizeof(void *);
    }
}

/* Every row: a key no other row has, required only where carried, a member its type can hold,
 * bounds that hold its default. */
static void check_rows(const sl_wire_field *table, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const sl_wire_field *f = &table[i];
        bool unique = true, is_float = f->type == SL_WIRE_T_FLOAT64 || f->type == SL_WIRE_T_FLOAT32;
        for (size_t j = 0; j < i; j++)
            unique = unique && strcmp(table[j].key, f->key) != 0;
        CHECK(unique && f->kinds && (f->need & ~f->kinds) == 0 && member_fits(f) &&
                  (!is_float || (f->lo <= f->hi && (f->dflt == 0 || (f->dflt > f->lo && f->dflt <= f->hi)))) &&
                  (f->type == SL_WIRE_T_MAP) == (f->sub != NULL),
              "table row \"%s\" is coherent", f->key);
        if (f->sub) check_rows(f->sub, f->n_sub);
    }
}

static const char *doc_type(sl_wire_type type)
{
    switch (type) {
    case SL_WIRE_T_VERSION:
    case SL_WIRE_T_UINT:
        return "uint";
    case SL_WIRE_T_FLOAT64:
        return "float64";
    case SL_WIRE_T_FLOAT32:
        return "float32";
    case SL_WIRE_T_BOOL:
        return "bool";
    case SL_WIRE_T_ID:
    case SL_WIRE_T_IDS:
    case SL_WIRE_T_MATRIX:
    case SL_WIRE_T_LOGITS:
        return "bin";
    case SL_WIRE_T_SHAPE:
        return "[uint, uint]";
    case SL_WIRE_T_MAP:
        return "map";
    default: /* kind, dtype, str */
        return "str";
    }
}

/* The kinds column of wire.h's table: "all", "but K..." (up to a comma) for kinds that never
 * carry it, "K" for a kind that requires it, "K?" for one that may leave it out. */
static int parse_kinds(char *text, unsigned *carry, unsigned *need)
{
    bool removing = false;
    *carry = *need = 0;
    for (char *save = NULL, *w = strtok_r(text, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        size_t len = strlen(w);
        bool comma = w[len - 1] == ',';
        if (comma) w[--len] = '\0';
        bool optional = len > 0 && w[len - 1] == '?';
        if (optional) w[--len] = '\0';
        int k = 0;
        while (k < SL_MSG_KIND_COUNT && strcmp(w, sl_msg_kind_name((sl_msg_kind)k)) != 0)
            k++;
        if (strcmp(w, "all") == 0)
            *carry = *need = ALL_KINDS;
        else if (strcmp(w, "but") == 0)
            removing = true;
        else if (k == SL_MSG_KIND_COUNT)
            return -1;
        else if (removing)
            *carry &= ~(1u << k), *need &= ~(1u << k);
        else
            *carry |= 1u << k, *need = optional ? *need & ~(1u << k) : *need | 1u << k;
        removing = removing && !comma;
    }
    return 0;
}

/* Splits a row at runs of two or more spaces into at most max columns; returns their number. */
static int split_columns(char *row, char **cols, int max)
{
    int n = 0;
    row[strcspn(row, "\n")] = '\0';
    while (*row && n < max) {
        while (*row == ' ')
            row++;
        cols[n++] = row;
        char *gap = strstr(row, "  ");
        if (!gap) break;
        *gap = '\0';
        row = gap + 2;
    }
    return n;
}

/* One row of wire.h's table against the code's: each key it names, its type, its kinds. */
static void check_doc_row(char *row, const sl_wire_field *fields, size_t n, bool *documented)
{
    char *cols[3];
    unsigned carry, need;
    if (split_columns(row, cols, 3) != 3 || parse_kinds(cols[2], &carry, &need) != 0) {
        CHECK(0, "wire.h: cannot read the row of %s", cols[0]);
        return;
    }
    for (char *key = strchr(cols[0], '"'); key; key = strchr(strchr(key + 1, '"') + 1, '"')) {
        size_t len = strcspn(key + 1, "\""), i = 0;
        while (i < n && !(strlen(fields[i].key) == len && strncmp(fields[i].key, key + 1, len) == 0))
            i++;
        CHECK(i < n && strcmp(cols[1], doc_type(fields[i].type)) == 0 && carry == fields[i].kinds &&
                  need == fields[i].need,
              "wire.h documents %.*s as the table has it (%s, kinds %#x of which required %#x)", (int)len + 2, key,
              i < n ? doc_type(fields[i].type) : "not in the table", i < n ? fields[i].kinds : 0,
              i < n ? fields[i].need : 0);
        if (i < n) documented[i] = true;
    }
}

/* wire.h's comment table says what the code's table does, and names every field. */
static void test_doc_table(void)
{
    size_t n;
    const sl_wire_field *fields = sl_wire_fields(&n);
    static char text[1 << 16];
    FILE *f = fopen("lib/wire.h", "r");
    size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[len] = '\0';
    CHECK(len > 0, "lib/wire.h is readable from the project root");
    bool documented[64] = {false};
    char row[256];
    for (const char *line = text; (line = strstr(line, "\n *   \"")) != NULL; line++) {
        snprintf(row, sizeof row, "%.*s", (int)strcspn(line + 6, "\n"), line + 6);
        check_doc_row(row, fields, n, documented);
    }
    for (size_t i = 0; i < n; i++) {
        CHECK(documented[i], "wire.h's table has a row for \"%s\"", fields[i].key);
        for (size_t j = 0; j < fields[i].n_sub; j++) {
            char entry[64];
            snprintf(entry, sizeof entry, "\"%s\": %s", fields[i].sub[j].key, doc_type(fields[i].sub[j].type));
            CHECK(strstr(text, entry), "wire.h describes %s.%s as %s", fields[i].key, fields[i].sub[j].key, entry);
        }
    }
}

/* Each example round-trips field by field; together they carry every field in every kind that
 * carries it; a field's flag is set exactly when it was sent. */
static void test_fields_roundtrip(sl_wire_decoder *dec, msgpack_sbuffer *buf)
{
    size_t n;
    const sl_wire_field *fields = sl_wire_fields(&n);
    sl_msg ex[WIRE_EXAMPLES];
    unsigned covered[64] = {0};
    wire_examples(ex);
    for (int e = 0; e < WIRE_EXAMPLES; e++) {
        sl_msg out, src;
        float *floats;
        sl_err err;
        const char *kind = sl_msg_kind_name(ex[e].kind);
        if (!CHECK(roundtrip(&ex[e], &out, buf, dec, &err) == 0, "example %d (%s): %s", e, kind, err.msg)) continue;
        wire_as_source(&out, &src, &floats);
        for (size_t i = 0; i < n; i++) {
            const sl_wire_field *f = &fields[i];
            bool sent = sl_wire_sends(f, &ex[e]);
            if (f->flag)
                CHECK(*(const bool *)((const char *)&out + f->flag) == sent, "%s's flag in a %s", f->key, kind);
            if (!sent) continue;
            CHECK(wire_field_same(f, &ex[e], &src), "field \"%s\" of a %s round-trips", f->key, kind);
            covered[i] |= 1u << ex[e].kind;
        }
        free(floats);
    }
    for (size_t i = 0; i < n; i++)
        CHECK(covered[i] == fields[i].kinds, "the examples carry \"%s\" in every kind that does (%#x of %#x)",
              fields[i].key, covered[i], fields[i].kinds);
}

/* A change to one key of a valid message: its value replaced, or the key dropped (value NULL). */
typedef struct edit {
    const char *parent, *key; /* key in the map of the field parent; parent NULL: at the top */
    const msgpack_object *value;
} edit;

static void repack(msgpack_packer *pk, const msgpack_object *map, const char *name, const edit *e)
{
    bool here = name ? e->parent && strcmp(name, e->parent) == 0 : !e->parent;
    uint32_t count = 0;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        count += !(here && !e->value && wire_key_is(&map->via.map.ptr[i].key, e->key));
    msgpack_pack_map(pk, count);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (here && wire_key_is(k, e->key) && !e->value) continue;
        msgpack_pack_object(pk, *k);
        if (here && wire_key_is(k, e->key))
            msgpack_pack_object(pk, *e->value);
        else if (!name && e->parent && wire_key_is(k, e->parent) && v->type == MSGPACK_OBJECT_MAP)
            repack(pk, v, e->parent, e);
        else
            msgpack_pack_object(pk, *v);
    }
}

static void expect_edit_refused(sl_wire_decoder *dec, packed *p, const msgpack_object *valid, const edit *e,
                                const char *needle, const char *label, const char *kind)
{
    msgpack_sbuffer_clear(&p->buf);
    msgpack_packer_init(&p->pk, &p->buf, msgpack_sbuffer_write);
    repack(&p->pk, valid, NULL, e);
    char what[160];
    snprintf(what, sizeof what, "%s in a %s", label, kind);
    expect_refused(dec, p, needle, what);
}

static msgpack_object str_object(const char *s)
{
    return (msgpack_object){.type = MSGPACK_OBJECT_STR, .via.str = {.size = (uint32_t)strlen(s), .ptr = s}};
}

static msgpack_object uint_object(uint64_t u)
{
    return (msgpack_object){.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = u};
}

static msgpack_object bin_object(const char *bytes, uint32_t size)
{
    return (msgpack_object){.type = MSGPACK_OBJECT_BIN, .via.bin = {.size = size, .ptr = bytes}};
}

static msgpack_object float_object(double d) { return (msgpack_object){.type = MSGPACK_OBJECT_FLOAT64, .via.f64 = d}; }

/* Values out of f's bounds, by its type; returns their number. */
static int out_of_bounds(const sl_wire_field *f, msgpack_object *bad, msgpack_object *shape_item)
{
    static const char one[2 * SL_ID_BYTES] = {1}; /* a 1, then zeros */
    static char long_text[2 * SL_WIRE_TRACE_MAX];
    memset(long_text, 'a', f->size < sizeof long_text ? f->size : sizeof long_text - 1);
    int n = 0;
    switch (f->type) {
    case SL_WIRE_T_VERSION:
    case SL_WIRE_T_UINT:
        if (f->max < UINT64_MAX) bad[n++] = uint_object(f->max + 1);
        break;
    case SL_WIRE_T_FLOAT64:
    case SL_WIRE_T_FLOAT32:
        if (isfinite(f->lo)) bad[n++] = float_object(f->lo_open ? f->lo : f->lo - fabs(f->lo) - 1);
        if (isfinite(f->hi)) bad[n++] = float_object(f->hi + fabs(f->hi) + 1);
        break;
    case SL_WIRE_T_STR:
        bad[n++] = str_object(long_text);
        break;
    case SL_WIRE_T_KIND:
        bad[n++] = str_object("teleport");
        break;
    case SL_WIRE_T_DTYPE:
        bad[n++] = str_object("f64");
        break;
    case SL_WIRE_T_ID: /* shorter, longer, all-zero */
        bad[n++] = bin_object(one, SL_ID_BYTES - 1);
        bad[n++] = bin_object(one, SL_ID_BYTES + 1);
        bad[n++] = bin_object(one + 1, SL_ID_BYTES);
        break;
    case SL_WIRE_T_SHAPE:
        shape_item[0] = uint_object((uint64_t)UINT32_MAX + 1), shape_item[1] = uint_object(4);
        bad[n++] = (msgpack_object){.type = MSGPACK_OBJECT_ARRAY, .via.array = {.size = 1, .ptr = shape_item + 1}};
        bad[n++] = (msgpack_object){.type = MSGPACK_OBJECT_ARRAY, .via.array = {.size = 2, .ptr = shape_item}};
        break;
    default: /* bool, payloads, maps: any value of the type is in bounds */
        break;
    }
    return n;
}

/* f (in parent's map) of a valid message, mistyped and out of bounds: refused, naming it. */
static void refuse_values(sl_wire_decoder *dec, packed *p, const msgpack_object *valid, const char *parent,
                          const sl_wire_field *f, const char *kind)
{
    char name[64], needle[80];
    snprintf(name, sizeof name, "%s%s%s", parent ? parent : "", parent ? "." : "", f->key);
    snprintf(needle, sizeof needle, "field \"%s\"", name);
    bool textual = f->type == SL_WIRE_T_STR || f->type == SL_WIRE_T_KIND || f->type == SL_WIRE_T_DTYPE;
    msgpack_object wrong = textual ? uint_object(7) : str_object("wrong"), bad[3], shape_item[2];
    char label[96];
    snprintf(label, sizeof label, "%s of the wrong type", name);
    expect_edit_refused(dec, p, valid, &(edit){parent, f->key, &wrong}, needle, label, kind);
    int n_bad = out_of_bounds(f, bad, shape_item);
    for (int i = 0; i < n_bad; i++) {
        snprintf(label, sizeof label, "%s out of bounds (%d)", name, i);
        expect_edit_refused(dec, p, valid, &(edit){parent, f->key, &bad[i]}, needle, label, kind);
    }
}

/* Every field each example sends: mistyped, out of bounds, or (where required) missing. */
static void test_fields_refused(sl_wire_decoder *dec, msgpack_sbuffer *buf)
{
    size_t n;
    const sl_wire_field *fields = sl_wire_fields(&n);
    sl_msg ex[WIRE_EXAMPLES];
    packed p;
    msgpack_unpacked valid;
    msgpack_sbuffer_init(&p.buf);
    msgpack_unpacked_init(&valid);
    wire_examples(ex);
    for (int e = 0; e < WIRE_EXAMPLES; e++) {
        size_t off = 0;
        sl_err err;
        const char *kind = sl_msg_kind_name(ex[e].kind);
        if (sl_wire_encode(&ex[e], buf, &err) != 0 ||
            msgpack_unpack_next(&valid, buf->data, buf->size, &off) != MSGPACK_UNPACK_SUCCESS)
            continue; /* test_fields_roundtrip counts it */
        for (size_t i = 0; i < n; i++) {
            const sl_wire_field *f = &fields[i];
            if (!sl_wire_sends(f, &ex[e])) continue;
            refuse_values(dec, &p, &valid.data, NULL, f, kind);
            for (size_t j = 0; j < f->n_sub; j++)
                refuse_values(dec, &p, &valid.data, f->key, &f->sub[j], kind);
            if (!(f->need & 1u << ex[e].kind)) continue;
            char needle[80], label[80];
            snprintf(needle, sizeof needle, "field \"%s\" is missing", f->key);
            snprintf(label, sizeof label, "required %s left out", f->key);
            expect_edit_refused(dec, &p, &valid.data, &(edit){NULL, f->key, NULL}, needle, label, kind);
        }
    }
    msgpack_unpacked_destroy(&valid);
    msgpack_sbuffer_destroy(&p.buf);
}

/* Noise and mutations of the examples. Noise is refused; every refusal says why; mutations reach
 * past msgpack into the fields, and each one accepted re-encodes to the values it carried. */
static void test_random_bytes(sl_wire_decoder *dec, sl_wire_decoder *again)
{
    sl_msg ex[WIRE_EXAMPLES];
    msgpack_sbuffer valid[WIRE_EXAMPLES];
    wire_examples(ex);
    for (int e = 0; e < WIRE_EXAMPLES; e++) {
        sl_err err;
        msgpack_sbuffer_init(&valid[e]);
        sl_wire_encode(&ex[e], &valid[e], &err);
    }
    sl_rng rng;
    sl_rng_seed(&rng, 1);
    unsigned char buf[512];
    int noise_accepted = 0, silent = 0, by_field = 0, by_msgpack = 0, accepted = 0, changed = 0;
    const char *first_change = "";
    for (int i = 0; i < 20000; i++) {
        const msgpack_sbuffer *v = &valid[(i / 2) % WIRE_EXAMPLES];
        bool mutated = i % 2 && v->size <= sizeof buf;
        size_t n = sl_rng_below(&rng, sizeof buf) + 1;
        if (mutated) {
            n = v->size;
            memcpy(buf, v->data, n);
            for (int k = 0; k < 3; k++)
                buf[sl_rng_below(&rng, n)] = (unsigned char)sl_rng_next(&rng);
            n = sl_rng_below(&rng, 4) ? n : sl_rng_below(&rng, n) + 1;
        } else {
            for (size_t k = 0; k < n; k++)
                buf[k] = (unsigned char)sl_rng_next(&rng);
        }
        sl_msg m;
        sl_err err = {{0}};
        if (sl_wire_decode(dec, buf, n, &limits, &m, &err) != 0) {
            silent += err.msg[0] == '\0';
            by_field += strstr(err.msg, "field \"") != NULL;
            by_msgpack += strstr(err.msg, "msgpack") != NULL;
            continue;
        }
        if (!mutated) {
            noise_accepted++;
            continue;
        }
        accepted++;
        msgpack_unpacked in;
        size_t off = 0;
        msgpack_unpacked_init(&in);
        msgpack_unpack_next(&in, (const char *)buf, n, &off);
        const char *differs = wire_reencode_check(again, &in.data, &m, &limits);
        if (differs && !changed++) first_change = differs;
        msgpack_unpacked_destroy(&in);
    }
    CHECK(noise_accepted == 0, "random bytes: %d of 10000 noise inputs decoded as messages", noise_accepted);
    CHECK(silent == 0, "random bytes: %d refusals without a reason", silent);
    CHECK(accepted > 100 && by_field > 100 && by_msgpack > 100,
          "mutations reach every layer: %d accepted, %d refused naming a field, %d refused as msgpack", accepted,
          by_field, by_msgpack);
    CHECK(changed == 0, "every accepted mutation re-encodes to the values it carried: %d of %d did not (first: %s)",
          changed, accepted, first_change);
    for (int e = 0; e < WIRE_EXAMPLES; e++)
        msgpack_sbuffer_destroy(&valid[e]);
}

int main(void)
{
    sl_wire_decoder *dec = sl_wire_decoder_new(), *again = sl_wire_decoder_new();
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    size_t n;
    const sl_wire_field *fields = sl_wire_fields(&n);
    check_rows(fields, n);
    test_doc_table();
    test_roundtrips(dec, &buf);
    test_fields_roundtrip(dec, &buf);
    test_validation(dec);
    test_fields_refused(dec, &buf);
    test_random_bytes(dec, again);
    msgpack_sbuffer_destroy(&buf);
    sl_wire_decoder_destroy(&again);
    sl_wire_decoder_destroy(&dec);
    return check_done();
}
