/* wire.c — msgpack encoding and validating decoding of pipeline messages, both driven by one
 * field table (WIRE_FIELDS below; wire.h documents the layout it makes). */
#include "wire.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"forward",  "result", "error", "end",    "ack",
                                         "backward", "save",   "load",  "update", "hello"};
_Static_assert(sizeof kind_names / sizeof *kind_names == SL_MSG_KIND_COUNT, "a name for every message kind");

const char *sl_msg_kind_name(sl_msg_kind kind) { return kind < SL_MSG_KIND_COUNT ? kind_names[kind] : "?"; }

struct sl_wire_decoder {
    msgpack_unpacked unpacked; /* its zone is reused from message to message */
};

sl_wire_decoder *sl_wire_decoder_new(void)
{
    sl_wire_decoder *self = calloc(1, sizeof *self);
    if (self) msgpack_unpacked_init(&self->unpacked);
    return self;
}

void sl_wire_decoder_destroy(sl_wire_decoder **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    msgpack_unpacked_destroy(&(*self)->unpacked);
    free(*self);
    *self = NULL;
}

/* ---- the field table ---- */

/* When a field its kind may leave out is written. */
static bool sends_ids(const sl_msg *m) { return m->ids != NULL; }
static bool sends_x(const sl_msg *m) { return m->ids == NULL; } /* a forward of activations */
static bool sends_logits(const sl_msg *m) { return m->logits != NULL; }
static bool sends_shape(const sl_msg *m) { return m->kind == SL_MSG_RESULT ? m->logits != NULL : m->ids == NULL; }
static bool trains(const sl_msg *m) { return m->train; }
static bool traced(const sl_msg *m) { return m->trace[0] != '\0'; }
static bool sends_at_step(const sl_msg *m) { return m->kind != SL_MSG_FORWARD || m->train; }
static bool sends_dir(const sl_msg *m) { return m->dir[0] != '\0'; } /* an ack: of a dry-run save */
static bool sends_host(const sl_msg *m) { return m->host[0] != '\0'; }
static bool dry_run(const sl_msg *m) { return m->dry_run; }

/* The ranges are the sampler's own; checked even when greedy ignores them. */
/* An all-zero session means "none" in every session table. */
static int check_session(const sl_msg *m, sl_err *err)
{
    return sl_id_none(m->session)
               ? sl_fail(err, "field \"session\": all-zero is reserved (an id is 16 random bytes, not all zero)")
               : 0;
}

static int check_sampling(const sl_msg *m, sl_err *err)
{
    sl_sampling ranges = m->sample;
    ranges.greedy = false;
    return sl_sampling_check(&ranges, err);
}

#define K(kind) (1u << SL_MSG_##kind)
#define ALL ((1u << SL_MSG_KIND_COUNT) - 1)
#define OPTIMIZER (K(BACKWARD) | K(UPDATE))
#define MEMBER(name) .at = offsetof(sl_msg, name), .size = sizeof(((sl_msg *)0)->name)
#define FLAG(name) .flag = offsetof(sl_msg, name)
#define ANY_NUMBER .lo = -INFINITY, .hi = INFINITY
#define ROW(id, key_, type_, kinds_, need_, ...)                                                                       \
    {.key = key_, .type = SL_WIRE_T_##type_, .kinds = kinds_, .need = need_, __VA_ARGS__},
#define FIELD_ID(id, ...) F_##id,

/* The keys of "sample", as the table below. */
#define SAMPLE_FIELDS(FIELD)                                                                                           \
    FIELD(GREEDY, "greedy", BOOL, K(FORWARD), 0, MEMBER(sample.greedy), .dflt = 1)                                     \
    FIELD(TEMPERATURE, "temperature", FLOAT64, K(FORWARD), 0, MEMBER(sample.temperature), ANY_NUMBER, .dflt = 1)       \
    FIELD(TOP_K, "top_k", UINT, K(FORWARD), 0, MEMBER(sample.top_k), .max = INT32_MAX)                                 \
    FIELD(TOP_P, "top_p", FLOAT64, K(FORWARD), 0, MEMBER(sample.top_p), ANY_NUMBER, .dflt = 1)                         \
    FIELD(SEED, "seed", UINT, K(FORWARD), 0, MEMBER(sample.seed), .max = UINT64_MAX)                                   \
    FIELD(INDEX, "index", UINT, K(FORWARD), 0, MEMBER(sample_index), .max = UINT64_MAX)
static const sl_wire_field sample_fields[] = {SAMPLE_FIELDS(ROW)};

/* Every top-level field, in the order they are written: FIELD(id, key, type, kinds that carry it,
 * kinds that require it, then its member, flag, bounds, condition and check). The decoder's
 * presence bits, the encoder's field count and the required-field check all come from here. */
#define WIRE_FIELDS(FIELD)                                                                                             \
    FIELD(V, "v", VERSION, ALL, ALL, .max = SL_WIRE_VERSION)                                                           \
    FIELD(KIND, "kind", KIND, ALL, ALL, MEMBER(kind))                                                                  \
    FIELD(SESSION, "session", ID, ALL, ALL, MEMBER(session), .check = check_session)                                   \
    FIELD(STEP, "step", UINT, ALL & ~K(END), ALL & ~(K(END) | K(ERROR)), MEMBER(step), .max = UINT64_MAX)              \
    FIELD(POS, "pos", UINT, K(FORWARD) | K(RESULT), K(FORWARD) | K(RESULT), MEMBER(pos), .max = UINT32_MAX)            \
    FIELD(CTX, "ctx", UINT, K(FORWARD), 0, MEMBER(ctx), .max = UINT32_MAX)                                             \
    FIELD(WANT_LOGITS, "want_logits", BOOL, K(FORWARD), 0, MEMBER(want_logits))                                        \
    FIELD(ACK, "ack", BOOL, K(FORWARD), 0, MEMBER(ack))                                                                \
    FIELD(TOKEN, "token", UINT, K(RESULT), K(RESULT), MEMBER(token), .max = INT32_MAX)                                 \
    FIELD(IDS, "ids", IDS, K(FORWARD), 0, MEMBER(ids), .when = sends_ids)                                              \
    FIELD(X, "x", MATRIX, K(FORWARD), 0, MEMBER(x), .when = sends_x)                                                   \
    FIELD(G, "g", MATRIX, K(BACKWARD), K(BACKWARD), MEMBER(x))                                                         \
    FIELD(LOGITS, "logits", LOGITS, K(RESULT), 0, MEMBER(logits), .when = sends_logits)                                \
    FIELD(SHAPE, "shape", SHAPE, K(FORWARD) | K(RESULT) | K(BACKWARD), K(BACKWARD), MEMBER(rows), .when = sends_shape) \
    FIELD(DTYPE, "dtype", DTYPE, K(FORWARD) | K(BACKWARD) | K(HELLO), K(BACKWARD) | K(HELLO), MEMBER(dtype),           \
          .when = sends_x)                                                                                             \
    FIELD(SAMPLE, "sample", MAP, K(FORWARD), 0, FLAG(has_sample), .check = check_sampling, .sub = sample_fields,       \
          .n_sub = sizeof sample_fields / sizeof *sample_fields)                                                       \
    FIELD(TRAIN, "train", BOOL, K(FORWARD), 0, MEMBER(train), .when = trains)                                          \
    FIELD(BATCH, "batch", UINT, K(FORWARD), 0, MEMBER(batch), .max = 1u << 20, .when = trains)                         \
    FIELD(UPDATE, "update", BOOL, K(BACKWARD), 0, MEMBER(update))                                                      \
    FIELD(LR, "lr", FLOAT64, OPTIMIZER, 0, MEMBER(lr), .lo = 0, .hi = 10)                                              \
    FIELD(WD, "wd", FLOAT64, OPTIMIZER, 0, MEMBER(weight_decay), .lo = 0, .hi = 10)                                    \
    FIELD(SCALE, "scale", FLOAT64, OPTIMIZER, 0, MEMBER(grad_scale), .lo = 0, .lo_open = true, .hi = 1, .dflt = 1)     \
    FIELD(GNORM2, "gnorm2", FLOAT64, K(BACKWARD), 0, MEMBER(gnorm2), FLAG(has_gnorm2), .lo = 0, .hi = INFINITY)        \
    FIELD(DIR, "dir", STR, K(SAVE) | K(LOAD) | K(ACK), K(SAVE) | K(LOAD), MEMBER(dir), .when = sends_dir)              \
    FIELD(DRY_RUN, "dry_run", BOOL, K(SAVE), 0, MEMBER(dry_run), .when = dry_run)                                      \
    FIELD(AT_STEP, "at_step", UINT, K(FORWARD) | K(LOAD), 0, MEMBER(at_step), FLAG(has_at_step), .max = 1ull << 53,    \
          .when = sends_at_step)                                                                                       \
    FIELD(LOSS, "loss", FLOAT32, K(SAVE), 0, MEMBER(loss), FLAG(has_loss), .lo = -FLT_MAX, .hi = FLT_MAX)              \
    FIELD(NODE, "node", STR, K(ACK) | K(ERROR) | K(HELLO), K(ACK) | K(HELLO), MEMBER(node))                            \
    FIELD(HOST, "host", STR, K(ACK), 0, MEMBER(host), .when = sends_host)                                              \
    FIELD(MODEL, "model", STR, K(HELLO), K(HELLO), MEMBER(model))                                                      \
    FIELD(FIRST, "first", UINT, K(HELLO), K(HELLO), MEMBER(first), .max = UINT32_MAX)                                  \
    FIELD(LAST, "last", UINT, K(HELLO), K(HELLO), MEMBER(last), .max = UINT32_MAX)                                     \
    FIELD(WIDTH, "width", UINT, K(HELLO), K(HELLO), MEMBER(width), .max = UINT32_MAX)                                  \
    FIELD(CODE, "code", STR, K(ERROR), K(ERROR), MEMBER(code))                                                         \
    FIELD(MESSAGE, "message", STR, K(ERROR), 0, MEMBER(message))                                                       \
    FIELD(TRACE, "trace", STR, K(FORWARD) | K(RESULT), 0, MEMBER(trace), .when = traced)

enum { WIRE_FIELDS(FIELD_ID) F_COUNT };
static const sl_wire_field fields[] = {WIRE_FIELDS(ROW)};

_Static_assert(F_COUNT <= 64, "presence bits fit a uint64_t");
_Static_assert(offsetof(sl_msg, kind) == 0, "no flag at offset 0, which means none");
_Static_assert(offsetof(sl_msg, cols) == offsetof(sl_msg, rows) + sizeof(uint32_t), "shape is rows then cols");
_Static_assert(sizeof(sl_msg_kind) == 4 && sizeof(sl_dtype) == 4 && sizeof(bool) == 1, "member sizes load_uint knows");

const sl_wire_field *sl_wire_fields(size_t *count)
{
    *count = F_COUNT;
    return fields;
}

static uint64_t bit(int field) { return (uint64_t)1 << field; }

/* ---- members, by offset and size ---- */

static uint64_t load_uint(const void *at, size_t size)
{
    uint8_t u8;
    uint32_t u32;
    uint64_t u64;
    switch (size) {
    case 1:
        memcpy(&u8, at, 1);
        return u8;
    case 4:
        memcpy(&u32, at, 4);
        return u32;
    default:
        memcpy(&u64, at, sizeof u64);
        return u64;
    }
}

static void store_uint(void *at, size_t size, uint64_t v)
{
    uint8_t u8 = (uint8_t)v;
    uint32_t u32 = (uint32_t)v;
    if (size == 1)
        memcpy(at, &u8, 1);
    else if (size == 4)
        memcpy(at, &u32, 4);
    else
        memcpy(at, &v, sizeof v);
}

static double load_real(const void *at, size_t size)
{
    float f;
    double d;
    if (size == sizeof f) {
        memcpy(&f, at, sizeof f);
        return f;
    }
    memcpy(&d, at, sizeof d);
    return d;
}

static void store_real(void *at, size_t size, double v)
{
    float f = (float)v;
    if (size == sizeof f)
        memcpy(at, &f, sizeof f);
    else
        memcpy(at, &v, sizeof v);
}

static const void *load_ptr(const void *at)
{
    const void *p;
    memcpy(&p, at, sizeof p);
    return p;
}

static bool in_bounds(const sl_wire_field *f, double v) { return (f->lo_open ? v > f->lo : v >= f->lo) && v <= f->hi; }

/* Each field's default, for those whose default is not 0. */
static void set_defaults(const sl_wire_field *table, size_t n, sl_msg *m)
{
    for (size_t i = 0; i < n; i++) {
        void *at = (char *)m + table[i].at;
        if (table[i].dflt == 0) continue;
        if (table[i].type == SL_WIRE_T_FLOAT64 || table[i].type == SL_WIRE_T_FLOAT32)
            store_real(at, table[i].size, table[i].dflt);
        else
            store_uint(at, table[i].size, (uint64_t)table[i].dflt);
    }
}

/* ---- decoding ---- */

/* Our messages have a few dozen msgpack items; more is refused before msgpack-c sees it. */
#define MAX_ITEMS 4096

static uint64_t read_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Walks the msgpack structure without building it: every claimed length must fit in the bytes
 * left and the item count stays small. msgpack-c allocates a container's claimed size before
 * it checks the bytes exist, so a 5-byte "map of 2^31 entries" would otherwise ask for 128 GB. */
static int prescan(const unsigned char *p, size_t len, sl_err *err)
{
    size_t pos = 0, pending = 1, items = 0;
    while (pending > 0) {
        if (pos >= len) return sl_fail(err, "truncated msgpack (%zu bytes)", len);
        unsigned t = p[pos++];
        pending--;
        uint64_t skip = 0, count = 0;
        int width = 0;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
            skip = 0;
        else if (t >= 0x80 && t <= 0x8f)
            count = 2 * (uint64_t)(t & 0x0f);
        else if (t >= 0x90 && t <= 0x9f)
            count = t & 0x0f;
        else if (t >= 0xa0 && t <= 0xbf)
            skip = t & 0x1f;
        else if (t == 0xcc || t == 0xd0)
            skip = 1;
        else if (t == 0xcd || t == 0xd1)
            skip = 2;
        else if (t == 0xca || t == 0xce || t == 0xd2)
            skip = 4;
        else if (t == 0xcb || t == 0xcf || t == 0xd3)
            skip = 8;
        else if (t >= 0xd4 && t <= 0xd8)
            skip = 1 + (1u << (t - 0xd4));
        else if (t == 0xc4 || t == 0xd9)
            width = 1;
        else if (t == 0xc5 || t == 0xda)
            width = 2;
        else if (t == 0xc6 || t == 0xdb)
            width = 4;
        else if (t == 0xc7 || t == 0xc8 || t == 0xc9)
            width = 1 << (t - 0xc7), skip = 1; /* ext: + type byte */
        else if (t == 0xdc || t == 0xdd || t == 0xde || t == 0xdf)
            width = t & 1 ? 4 : 2;
        else
            return sl_fail(err, "byte 0x%02x at offset %zu is not msgpack", t, pos - 1);
        if (width) {
            if ((size_t)width > len - pos) return sl_fail(err, "truncated msgpack length at offset %zu", pos);
            uint64_t n = read_be(p + pos, width);
            pos += (size_t)width;
            if (t >= 0xdc)
                count = t >= 0xde ? 2 * n : n;
            else
                skip += n;
        }
        if (skip > len - pos)
            return sl_fail(err, "msgpack item at offset %zu claims %llu bytes but %zu remain", pos,
                           (unsigned long long)skip, len - pos);
        if (count > len - pos || items + count > MAX_ITEMS)
            return sl_fail(err,
                           "msgpack container at offset %zu claims %llu entries (%zu bytes remain, at most %d "
                           "items)",
                           pos, (unsigned long long)count, len - pos, MAX_ITEMS);
        pos += (size_t)skip;
        pending += (size_t)count;
        items += (size_t)count;
    }
    if (pos != len) return sl_fail(err, "%zu stray bytes after the msgpack map", len - pos);
    return 0;
}

static bool key_is(const msgpack_object *key, const char *name)
{
    size_t n = strlen(name);
    return key->via.str.size == n && memcmp(key->via.str.ptr, name, n) == 0;
}

static int get_uint(const msgpack_object *o, const char *field, uint64_t max, uint64_t *out, sl_err *err)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return sl_fail(err, "field \"%s\" must be an unsigned integer <= %llu", field, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

static int get_number(const msgpack_object *o, const char *field, double *out, sl_err *err)
{
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        *out = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *out = (double)o->via.u64;
    else
        return sl_fail(err, "field \"%s\" must be a number", field);
    return 0;
}

static int get_str(const msgpack_object *o, const char *field, char *out, size_t size, sl_err *err)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size || memchr(o->via.str.ptr, '\0', o->via.str.size))
        return sl_fail(err, "field \"%s\" must be a string shorter than %zu bytes", field, size);
    memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = '\0';
    return 0;
}

/* uint, float and bool fields. */
static int decode_number(const sl_wire_field *f, const char *name, const msgpack_object *o, void *at, sl_err *err)
{
    uint64_t u = 0;
    double d = 0;
    switch (f->type) {
    case SL_WIRE_T_VERSION:
        if (get_uint(o, name, UINT32_MAX, &u, err) != 0) return -1;
        if (u != f->max)
            return sl_fail(err, "field \"%s\": version %llu is not supported (this is %llu)", name,
                           (unsigned long long)u, (unsigned long long)f->max);
        return 0;
    case SL_WIRE_T_UINT:
        if (get_uint(o, name, f->max, &u, err) != 0) return -1;
        store_uint(at, f->size, u);
        return 0;
    case SL_WIRE_T_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) return sl_fail(err, "field \"%s\" must be a boolean", name);
        store_uint(at, f->size, o->via.boolean);
        return 0;
    default: /* the floats, bounded as received and as the member holds them (1e-300 is a float 0) */
        if (get_number(o, name, &d, err) != 0) return -1;
        store_real(at, f->size, d);
        if (!in_bounds(f, d) || !in_bounds(f, load_real(at, f->size)))
            return sl_fail(err, "field \"%s\" must be a number in %c%g, %g]", name, f->lo_open ? '(' : '[', f->lo,
                           f->hi);
        return 0;
    }
}

/* str fields: plain, a kind or a dtype. */
static int decode_text(const sl_wire_field *f, const char *name, const msgpack_object *o, void *at, sl_err *err)
{
    char text[16];
    sl_dtype dtype = SL_F32;
    int i = 0;
    switch (f->type) {
    case SL_WIRE_T_STR:
        return get_str(o, name, at, f->size, err);
    case SL_WIRE_T_KIND:
        if (get_str(o, name, text, sizeof text, err) != 0) return -1;
        while (i < SL_MSG_KIND_COUNT && strcmp(text, kind_names[i]) != 0)
            i++;
        if (i == SL_MSG_KIND_COUNT) return sl_fail(err, "field \"%s\": unknown kind \"%s\"", name, text);
        store_uint(at, f->size, (uint64_t)i);
        return 0;
    default: /* SL_WIRE_T_DTYPE */
        if (get_str(o, name, text, sizeof text, err) != 0) return -1;
        if (sl_dtype_parse(text, &dtype) != 0 || dtype > SL_BF16)
            return sl_fail(err, "field \"%s\": \"%s\" is not f32, f16 or bf16", name, text);
        store_uint(at, f->size, dtype);
        return 0;
    }
}

static int decode_shape(const char *name, const msgpack_object *o, void *at, sl_err *err)
{
    uint32_t rc[2];
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
        return sl_fail(err, "field \"%s\" must be [rows, cols]", name);
    for (int i = 0; i < 2; i++) {
        const msgpack_object *v = &o->via.array.ptr[i];
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > UINT32_MAX)
            return sl_fail(err, "field \"%s\" must be [rows, cols]", name);
        rc[i] = (uint32_t)v->via.u64;
    }
    memcpy(at, rc, sizeof rc);
    return 0;
}

typedef struct decoded {
    uint64_t seen;         /* bit i: fields[i] was present */
    size_t bytes[F_COUNT]; /* the length of each bin field */
} decoded;

static int decode_map(const sl_wire_field *table, size_t n, const msgpack_object *map, const char *parent, sl_msg *m,
                      decoded *got, sl_err *err);

/* One value into its member; *bytes gets a bin's length. */
static int decode_value(const sl_wire_field *f, const char *name, const msgpack_object *o, sl_msg *m, size_t *bytes,
                        sl_err *err)
{
    void *at = (char *)m + f->at;
    switch (f->type) {
    case SL_WIRE_T_STR:
    case SL_WIRE_T_KIND:
    case SL_WIRE_T_DTYPE:
        return decode_text(f, name, o, at, err);
    case SL_WIRE_T_IDS:
    case SL_WIRE_T_MATRIX:
    case SL_WIRE_T_LOGITS:
        if (o->type != MSGPACK_OBJECT_BIN) return sl_fail(err, "field \"%s\" must be binary", name);
        memcpy(at, &o->via.bin.ptr, sizeof o->via.bin.ptr);
        *bytes = o->via.bin.size;
        return 0;
    case SL_WIRE_T_SHAPE:
        return decode_shape(name, o, at, err);
    case SL_WIRE_T_ID:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != SL_ID_BYTES)
            return sl_fail(err, "field \"%s\" must be binary of %d bytes", name, SL_ID_BYTES);
        memcpy(at, o->via.bin.ptr, SL_ID_BYTES);
        return 0;
    case SL_WIRE_T_MAP:
        if (o->type != MSGPACK_OBJECT_MAP) return sl_fail(err, "field \"%s\" must be a map", name);
        set_defaults(f->sub, f->n_sub, m);
        return decode_map(f->sub, f->n_sub, o, name, m, NULL, err);
    default:
        return decode_number(f, name, o, at, err);
    }
}

/* A field: its value, its flag and its check. */
static int decode_field(const sl_wire_field *f, const char *parent, const msgpack_object *o, sl_msg *m, size_t *bytes,
                        sl_err *err)
{
    char name[64];
    if (parent)
        snprintf(name, sizeof name, "%s.%s", parent, f->key);
    else
        snprintf(name, sizeof name, "%s", f->key);
    if (decode_value(f, name, o, m, bytes, err) != 0) return -1;
    if (f->flag) *(bool *)((char *)m + f->flag) = true;
    if (f->check && f->check(m, err) != 0) {
        sl_err_prefix(err, "field \"%s\"", name);
        return -1;
    }
    return 0;
}

/* The keys of map that table knows (others are ignored); got (when not NULL) records them. */
static int decode_map(const sl_wire_field *table, size_t n, const msgpack_object *map, const char *parent, sl_msg *m,
                      decoded *got, sl_err *err)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return parent ? sl_fail(err, "field \"%s\" has a non-string key", parent)
                          : sl_fail(err, "a key of the message map is not a string");
        size_t f = 0, bytes = 0;
        while (f < n && !key_is(k, table[f].key))
            f++;
        if (f == n) continue;
        if (decode_field(&table[f], parent, &map->via.map.ptr[i].val, m, &bytes, err) != 0) return -1;
        if (got) got->seen |= bit((int)f), got->bytes[f] = bytes;
    }
    return 0;
}

/* The fields the message's kind requires (v, kind and session when the kind is unknown). */
static int check_required(const sl_msg *m, uint64_t seen, sl_err *err)
{
    bool has_kind = seen & bit(F_KIND);
    unsigned kinds = has_kind ? 1u << m->kind : ALL;
    for (int i = 0; i < F_COUNT; i++)
        if ((fields[i].need & kinds) == kinds && !(seen & bit(i)))
            return sl_fail(err, "field \"%s\" is missing%s%s", fields[i].key, has_kind ? " from a " : "",
                           has_kind ? kind_names[m->kind] : "");
    return 0;
}

/* A matrix payload (x or g) against its shape and dtype, and its width against the model. */
static int check_matrix(const sl_msg *m, int field, size_t bytes, const sl_wire_limits *lim, sl_err *err)
{
    uint64_t want = (uint64_t)m->rows * m->cols * sl_dtype_size(m->dtype);
    if (m->rows == 0 || want != bytes)
        return sl_fail(err, "field \"%s\": %zu bytes but shape [%u, %u] of %s needs %llu", fields[field].key, bytes,
                       m->rows, m->cols, sl_dtype_name(m->dtype), (unsigned long long)want);
    if (lim->n_embd && m->cols != lim->n_embd)
        return sl_fail(err, "field \"shape\": width %u but the model's n_embd is %u", m->cols, lim->n_embd);
    return 0;
}

/* A forward's payload (ids or x), its batch and its positions. */
static int check_forward(sl_msg *m, const decoded *got, const sl_wire_limits *lim, sl_err *err)
{
    bool has_x = got->seen & bit(F_X);
    if (!!(got->seen & bit(F_IDS)) == has_x) return sl_fail(err, "a forward carries exactly one of \"ids\" and \"x\"");
    size_t ids_bytes = got->bytes[F_IDS];
    if (m->train && (m->batch == 0 || (has_x ? m->rows : (uint32_t)(ids_bytes / 4)) % m->batch))
        return sl_fail(err, "field \"batch\": a training forward needs a batch that divides its rows");
    uint64_t tokens;
    if (!has_x) {
        if (ids_bytes % 4 || ids_bytes == 0)
            return sl_fail(err, "field \"ids\": %zu bytes is not a whole number of int32", ids_bytes);
        tokens = ids_bytes / 4;
        m->n_ids = (uint32_t)tokens;
    } else {
        if (!(got->seen & bit(F_SHAPE)) || !(got->seen & bit(F_DTYPE)))
            return sl_fail(err, "field \"x\" needs \"shape\" and \"dtype\"");
        if (check_matrix(m, F_X, got->bytes[F_X], lim, err) != 0) return -1;
        tokens = m->train && m->batch ? m->rows / m->batch : m->rows; /* a batch of sequences */
    }
    if (lim->n_positions && ((uint64_t)m->pos + tokens > lim->n_positions || m->ctx > lim->n_positions))
        return sl_fail(err, "field \"pos\": positions %u..%llu (ctx %u) go beyond n_positions %u", m->pos,
                       (unsigned long long)(m->pos + tokens - 1), m->ctx, lim->n_positions);
    return 0;
}

/* A result's logits against its shape and the vocabulary, and its token. */
static int check_result(const sl_msg *m, const decoded *got, const sl_wire_limits *lim, sl_err *err)
{
    if (got->seen & bit(F_LOGITS)) {
        uint64_t want = (uint64_t)m->rows * m->cols * 4;
        if (!(got->seen & bit(F_SHAPE)) || want != got->bytes[F_LOGITS])
            return sl_fail(err, "field \"logits\": %zu bytes do not match shape [%u, %u] of f32", got->bytes[F_LOGITS],
                           m->rows, m->cols);
        if (lim->vocab_size && m->cols != lim->vocab_size)
            return sl_fail(err, "field \"logits\": width %u but the vocabulary has %u", m->cols, lim->vocab_size);
    }
    if (lim->vocab_size && (uint32_t)m->token >= lim->vocab_size)
        return sl_fail(err, "field \"token\": %d is outside the vocabulary", m->token);
    return 0;
}

/* What no single field says: payload sizes against shape, dtype and the model. */
static int check_payload(sl_msg *m, const decoded *got, const sl_wire_limits *lim, sl_err *err)
{
    switch (m->kind) {
    case SL_MSG_BACKWARD:
        return check_matrix(m, F_G, got->bytes[F_G], lim, err);
    case SL_MSG_FORWARD:
        return check_forward(m, got, lim, err);
    case SL_MSG_RESULT:
        return check_result(m, got, lim, err);
    default:
        return 0;
    }
}

int sl_wire_decode(sl_wire_decoder *self, const void *data, size_t len, const sl_wire_limits *limits, sl_msg *m,
                   sl_err *err)
{
    static const sl_wire_limits none = {0};
    if (!limits) limits = &none;
    memset(m, 0, sizeof *m);
    set_defaults(fields, F_COUNT, m);
    if (limits->max_bytes && len > limits->max_bytes)
        return sl_fail(err, "message of %zu bytes is over the %zu-byte cap", len, limits->max_bytes);
    if (prescan(data, len, err) != 0) return -1;
    size_t off = 0;
    msgpack_unpack_return ret = msgpack_unpack_next(&self->unpacked, data, len, &off);
    if (ret != MSGPACK_UNPACK_SUCCESS) return sl_fail(err, "not a msgpack message (%d)", (int)ret);
    if (off != len) return sl_fail(err, "%zu stray bytes after the msgpack map", len - off);
    const msgpack_object *root = &self->unpacked.data;
    if (root->type != MSGPACK_OBJECT_MAP) return sl_fail(err, "the message is not a msgpack map");
    decoded got = {0};
    if (decode_map(fields, F_COUNT, root, NULL, m, &got, err) != 0 || check_required(m, got.seen, err) != 0) return -1;
    return check_payload(m, &got, limits, err);
}

void sl_msg_copy_ids(const sl_msg *m, int32_t *out)
{
    const unsigned char *p = m->ids;
    for (uint32_t i = 0; i < m->n_ids; i++)
        out[i] = (int32_t)((uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                           (uint32_t)p[4 * i + 3] << 24);
}

void sl_msg_copy_x(const sl_msg *m, float *out) { sl_dtype_to_f32(out, m->x, m->dtype, (size_t)m->rows * m->cols); }

/* ---- encoding ---- */

static void pack_text(msgpack_packer *pk, const char *text)
{
    size_t n = strlen(text);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, text, n);
}

/* Floats converted to dtype in chunks, straight into the buffer. */
static void pack_floats(msgpack_packer *pk, const float *x, size_t n, sl_dtype dtype)
{
    size_t elem = sl_dtype_size(dtype);
    msgpack_pack_bin(pk, n * elem);
    if (dtype == SL_F32) {
        msgpack_pack_bin_body(pk, x, n * 4);
        return;
    }
    unsigned char chunk[8192];
    for (size_t i = 0; i < n; i += sizeof chunk / elem) {
        size_t k = n - i < sizeof chunk / elem ? n - i : sizeof chunk / elem;
        sl_dtype_from_f32(chunk, dtype, x + i, k);
        msgpack_pack_bin_body(pk, chunk, k * elem);
    }
}

/* A float member as sent: one left 0 where 0 is out of bounds was not set, and gets the default. */
static double real_to_send(const sl_wire_field *f, const void *at)
{
    double v = load_real(at, f->size);
    return v == 0 && !in_bounds(f, 0) ? f->dflt : v;
}

bool sl_wire_sends(const sl_wire_field *f, const sl_msg *m)
{
    if (m->kind >= SL_MSG_KIND_COUNT || !(f->kinds & 1u << m->kind)) return false;
    if (f->need & 1u << m->kind) return true;
    if (f->flag && !*(const bool *)((const char *)m + f->flag)) return false;
    return !f->when || f->when(m);
}

static void encode_map(msgpack_packer *pk, const sl_wire_field *table, size_t n, const sl_msg *m);

/* One value from its member. */
static void encode_value(msgpack_packer *pk, const sl_wire_field *f, const sl_msg *m)
{
    const void *at = (const char *)m + f->at;
    size_t elems = (size_t)m->rows * m->cols;
    switch (f->type) {
    case SL_WIRE_T_VERSION:
        msgpack_pack_uint64(pk, f->max);
        break;
    case SL_WIRE_T_KIND:
        pack_text(pk, kind_names[load_uint(at, f->size)]);
        break;
    case SL_WIRE_T_DTYPE:
        pack_text(pk, sl_dtype_lower((sl_dtype)load_uint(at, f->size)));
        break;
    case SL_WIRE_T_UINT:
        msgpack_pack_uint64(pk, load_uint(at, f->size));
        break;
    case SL_WIRE_T_ID:
        msgpack_pack_bin(pk, SL_ID_BYTES);
        msgpack_pack_bin_body(pk, at, SL_ID_BYTES);
        break;
    case SL_WIRE_T_FLOAT64:
        msgpack_pack_double(pk, real_to_send(f, at));
        break;
    case SL_WIRE_T_FLOAT32:
        msgpack_pack_float(pk, (float)real_to_send(f, at));
        break;
    case SL_WIRE_T_BOOL:
        (void)(load_uint(at, f->size) ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
        break;
    case SL_WIRE_T_STR:
        pack_text(pk, at);
        break;
    case SL_WIRE_T_IDS:
        msgpack_pack_bin(pk, (size_t)m->n_ids * 4);
        msgpack_pack_bin_body(pk, load_ptr(at), (size_t)m->n_ids * 4); /* x86-64 is little-endian */
        break;
    case SL_WIRE_T_MATRIX:
        pack_floats(pk, load_ptr(at), elems, m->dtype);
        break;
    case SL_WIRE_T_LOGITS:
        pack_floats(pk, load_ptr(at), elems, SL_F32);
        break;
    case SL_WIRE_T_SHAPE:
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint32(pk, (uint32_t)load_uint(at, 4));
        msgpack_pack_uint32(pk, (uint32_t)load_uint((const char *)at + 4, 4));
        break;
    case SL_WIRE_T_MAP:
        encode_map(pk, f->sub, f->n_sub, m);
        break;
    }
}

static void encode_map(msgpack_packer *pk, const sl_wire_field *table, size_t n, const sl_msg *m)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += sl_wire_sends(&table[i], m);
    msgpack_pack_map(pk, count);
    for (size_t i = 0; i < n; i++)
        if (sl_wire_sends(&table[i], m)) {
            pack_text(pk, table[i].key);
            encode_value(pk, &table[i], m);
        }
}

int sl_wire_encode(const sl_msg *m, msgpack_sbuffer *buf, sl_err *err)
{
    if (m->kind >= SL_MSG_KIND_COUNT) return sl_fail(err, "unknown message kind %d", (int)m->kind);
    if (m->kind == SL_MSG_FORWARD && !m->ids && !m->x) return sl_fail(err, "a forward needs ids or x");
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    encode_map(&pk, fields, F_COUNT, m);
    return 0;
}
