/* wire_check.h — what test_wire, fuzz_wire and wire_seeds share: example messages that together
 * carry every field in every kind that carries it, the limits they fit, and the check that a
 * decoded message re-encodes to the values it was decoded from. */
#ifndef SL_WIRE_CHECK_H
#define SL_WIRE_CHECK_H

#include "wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WIRE_CHECK_LIMITS                                                                                              \
    {                                                                                                                  \
        .n_embd = 4, .n_positions = 16, .vocab_size = 10, .max_bytes = 1 << 20                                         \
    }
#define WIRE_EXAMPLES 11

/* One message of each kind (two forwards), with every optional field set and no two fields
 * holding the same number, so that a value decoded into the wrong member shows. Floats are
 * exact in f16 and bf16. Payloads point to static arrays. */
static inline void wire_examples(sl_msg ex[WIRE_EXAMPLES])
{
    static const int32_t ids[3] = {1, 9, 0};
    static const float x[4 * 4] = {1.5f, -2, 3.25f, 0, 0.125f, 7, -8, 96, 0.5f, -0.75f, 2, 3, -1, 4, 5, -6};
    static const float logits[10] = {0.5f, 1, -2, 3, 4, 5, 6, 7, 8, 9.5f};
    memset(ex, 0, WIRE_EXAMPLES * sizeof *ex);
    ex[0] = (sl_msg){
        .kind = SL_MSG_FORWARD,
        .session = {{0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78}},
        .step = 7,
        .pos = 3,
        .ctx = 12,
        .ids = ids,
        .n_ids = 3,
        .want_logits = true,
        .ack = true,
        .has_sample = true,
        .sample = {.temperature = 0.75f, .top_k = 5, .top_p = 0.875f, .seed = 42},
        .sample_index = 11};
    ex[1] = (sl_msg){.kind = SL_MSG_FORWARD,
                     .session = {{21}},
                     .step = 22,
                     .pos = 2,
                     .ctx = 13,
                     .x = x,
                     .rows = 4,
                     .cols = 4,
                     .dtype = SL_F16,
                     .train = true,
                     .batch = 2,
                     .has_at_step = true,
                     .at_step = 1234};
    ex[2] = (sl_msg){.kind = SL_MSG_RESULT,
                     .session = {{31}},
                     .step = 32,
                     .pos = 5,
                     .token = 9,
                     .logits = logits,
                     .rows = 1,
                     .cols = 10};
    ex[3] = (sl_msg){.kind = SL_MSG_ERROR, .session = {{41}}, .step = 42};
    ex[4] = (sl_msg){.kind = SL_MSG_END, .session = {{51}}};
    ex[5] = (sl_msg){.kind = SL_MSG_ACK, .session = {{61}}, .step = 62};
    ex[6] = (sl_msg){.kind = SL_MSG_BACKWARD,
                     .session = {{71}},
                     .step = 72,
                     .x = x,
                     .rows = 2,
                     .cols = 4,
                     .dtype = SL_BF16,
                     .update = true,
                     .lr = 0.25f,
                     .weight_decay = 0.5f,
                     .grad_scale = 0.125f,
                     .has_gnorm2 = true,
                     .gnorm2 = 3.5};
    ex[7] = (sl_msg){.kind = SL_MSG_UPDATE,
                     .session = {{81}},
                     .step = 82,
                     .lr = 1.5f,
                     .weight_decay = 0.0625f,
                     .grad_scale = 0.375f};
    ex[8] =
        (sl_msg){.kind = SL_MSG_SAVE, .session = {{91}}, .step = 92, .has_loss = true, .loss = 3.25f, .dry_run = true};
    ex[9] = (sl_msg){.kind = SL_MSG_LOAD, .session = {{101}}, .step = 102, .has_at_step = true, .at_step = 1200};
    ex[10] = (sl_msg){
        .kind = SL_MSG_HELLO, .session = {{111}}, .step = 112, .first = 2, .last = 4, .width = 4, .dtype = SL_F16};
    strcpy(ex[10].node, "bottom");
    strcpy(ex[0].trace, "-");
    strcpy(ex[2].trace, "bottom@client 1 2 3;trunk1@server 4 5 6;");
    strcpy(ex[10].model, "2d201b9f450c54beebf779558c2cd196a48b6fb78a56b584bc71b83e378d693c");
    strcpy(ex[3].node, "trunk1");
    strcpy(ex[3].code, "unknown_session");
    strcpy(ex[3].message, "no such session");
    strcpy(ex[5].node, "bottom");
    strcpy(ex[5].dir, "/srv/ckpt/run 1");
    strcpy(ex[5].host, "gpu-2");
    strcpy(ex[8].dir, "ckpt/run 1");
    strcpy(ex[9].dir, "ckpt/run 2");
}

/* m as sl_wire_encode reads it: a decoded x (or g) is in its dtype, the encoder reads float32.
 * *floats (caller frees) holds the converted payload; NULL when there is none. An x in a kind
 * that does not carry it was not checked against the shape, and is not read. */
static inline void wire_as_source(const sl_msg *m, sl_msg *out, float **floats)
{
    size_t n;
    const sl_wire_field *fields = sl_wire_fields(&n);
    bool sends_x = false;
    for (size_t i = 0; i < n; i++)
        sends_x = sends_x || (fields[i].type == SL_WIRE_T_MATRIX && sl_wire_sends(&fields[i], m));
    *out = *m;
    *floats = NULL;
    if (!sends_x) return;
    *floats = malloc(((size_t)m->rows * m->cols + 1) * sizeof **floats);
    if (!*floats) abort();
    sl_msg_copy_x(m, *floats);
    out->x = *floats;
}

/* n floats at a and b (maybe unaligned) are equal, NaN equal to NaN. */
static inline bool wire_floats_same(const void *a, const void *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x, y;
        memcpy(&x, (const char *)a + 4 * i, 4);
        memcpy(&y, (const char *)b + 4 * i, 4);
        if (x != y && !(isnan(x) && isnan(y))) return false;
    }
    return true;
}

/* Whether a and b (as wire_as_source makes them) hold the same value of field f. */
static inline bool wire_field_same(const sl_wire_field *f, const sl_msg *a, const sl_msg *b)
{
    const char *pa = (const char *)a + f->at, *pb = (const char *)b + f->at;
    size_t n = (size_t)a->rows * a->cols;
    bool same_shape = a->rows == b->rows && a->cols == b->cols;
    switch (f->type) {
    case SL_WIRE_T_VERSION:
        return true;
    case SL_WIRE_T_STR:
        return strcmp(pa, pb) == 0;
    case SL_WIRE_T_IDS:
        return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, (size_t)a->n_ids * 4) == 0;
    case SL_WIRE_T_MATRIX:
        return same_shape && wire_floats_same(a->x, b->x, n);
    case SL_WIRE_T_LOGITS:
        return same_shape && wire_floats_same(a->logits, b->logits, n);
    case SL_WIRE_T_SHAPE:
        return same_shape;
    case SL_WIRE_T_MAP:
        for (size_t i = 0; i < f->n_sub; i++)
            if (!wire_field_same(&f->sub[i], a, b)) return false;
        return true;
    default: /* numbers, bools, kind, dtype: the member's bytes */
        return memcmp(pa, pb, f->size) == 0;
    }
}

static inline bool wire_key_is(const msgpack_object *k, const char *key)
{
    size_t n = strlen(key);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0;
}

/* The value of the last key named key in a msgpack map (the decoder keeps the last); NULL if none. */
static inline const msgpack_object *wire_lookup(const msgpack_object *map, const char *key)
{
    const msgpack_object *found = NULL;
    for (uint32_t i = 0; map->type == MSGPACK_OBJECT_MAP && i < map->via.map.size; i++)
        if (wire_key_is(&map->via.map.ptr[i].key, key)) found = &map->via.map.ptr[i].val;
    return found;
}

static inline double wire_number(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)o->via.u64 : o->via.f64;
}

/* Two bins of dtype elements, compared as floats. */
static inline bool wire_bins_same(const msgpack_object *a, const msgpack_object *b, sl_dtype dtype)
{
    size_t size = sl_dtype_size(dtype);
    if (a->type != MSGPACK_OBJECT_BIN || b->type != MSGPACK_OBJECT_BIN || a->via.bin.size != b->via.bin.size)
        return false;
    for (size_t i = 0; i + size <= a->via.bin.size; i += size) {
        float x, y;
        sl_dtype_to_f32(&x, a->via.bin.ptr + i, dtype, 1);
        sl_dtype_to_f32(&y, b->via.bin.ptr + i, dtype, 1);
        if (!wire_floats_same(&x, &y, 1)) return false;
    }
    return true;
}

/* The dtype a str names, as the decoder reads it; false if none. */
static inline bool wire_dtype_of(const msgpack_object *o, sl_dtype *dtype)
{
    char text[16];
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof text) return false;
    memcpy(text, o->via.str.ptr, o->via.str.size);
    text[o->via.str.size] = '\0';
    return sl_dtype_parse(text, dtype) == 0;
}

/* Whether field f's value a (as received) and b (as re-encoded) are the same once decoded. */
static inline bool wire_value_same(const sl_wire_field *f, const msgpack_object *a, const msgpack_object *b,
                                   sl_dtype dtype)
{
    sl_dtype da, db;
    switch (f->type) {
    case SL_WIRE_T_FLOAT64:
    case SL_WIRE_T_FLOAT32: /* rounded as the member stores it */
        return f->size == sizeof(float) ? (float)wire_number(a) == (float)wire_number(b)
                                        : wire_number(a) == wire_number(b);
    case SL_WIRE_T_DTYPE: /* "F32" and "f32" are one dtype */
        return wire_dtype_of(a, &da) && wire_dtype_of(b, &db) && da == db;
    case SL_WIRE_T_MATRIX:
        return wire_bins_same(a, b, dtype);
    case SL_WIRE_T_MAP:
        for (size_t i = 0; i < f->n_sub; i++) {
            const msgpack_object *sa = wire_lookup(a, f->sub[i].key), *sb = wire_lookup(b, f->sub[i].key);
            if (sa && (!sb || !wire_value_same(&f->sub[i], sa, sb, dtype))) return false;
        }
        return true;
    default:
        return msgpack_object_equal(*a, *b);
    }
}

/* NULL when m, decoded from the msgpack map in, re-encodes to a message that decodes to the same
 * fields and whose every field carries the value in had (fields in left out keep their default);
 * else the key that differs, or what failed. */
static inline const char *wire_reencode_check(sl_wire_decoder *dec, const msgpack_object *in, const sl_msg *m,
                                              const sl_wire_limits *limits)
{
    sl_msg src, again, again_src;
    float *floats, *again_floats = NULL;
    sl_err err;
    msgpack_sbuffer buf;
    msgpack_unpacked out;
    const char *differs = NULL;
    size_t n, off = 0;
    const sl_wire_field *fields = sl_wire_fields(&n);
    msgpack_sbuffer_init(&buf);
    msgpack_unpacked_init(&out);
    wire_as_source(m, &src, &floats);
    if (sl_wire_encode(&src, &buf, &err) != 0 || sl_wire_decode(dec, buf.data, buf.size, limits, &again, &err) != 0 ||
        msgpack_unpack_next(&out, buf.data, buf.size, &off) != MSGPACK_UNPACK_SUCCESS)
        differs = "the re-encoded message is refused";
    if (!differs) wire_as_source(&again, &again_src, &again_floats);
    for (size_t i = 0; !differs && i < n; i++) {
        const msgpack_object *a = wire_lookup(in, fields[i].key), *b = wire_lookup(&out.data, fields[i].key);
        if (sl_wire_sends(&fields[i], &src) != sl_wire_sends(&fields[i], &again_src) ||
            (sl_wire_sends(&fields[i], &src) && !wire_field_same(&fields[i], &src, &again_src)) ||
            (sl_wire_sends(&fields[i], &src) && a && (!b || !wire_value_same(&fields[i], a, b, m->dtype))))
            differs = fields[i].key;
    }
    free(floats);
    free(again_floats);
    msgpack_unpacked_destroy(&out);
    msgpack_sbuffer_destroy(&buf);
    return differs;
}

#endif
