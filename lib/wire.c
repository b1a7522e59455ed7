/* wire.c — msgpack encoding and validating decoding of pipeline messages (see wire.h). */
#include "wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"forward",  "result", "error", "end",   "ack",
                                         "backward", "save",   "load",  "update"};
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
    if (!self || !*self) return;
    msgpack_unpacked_destroy(&(*self)->unpacked);
    free(*self);
    *self = NULL;
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

enum {
    F_V = 1 << 0,
    F_KIND = 1 << 1,
    F_SESSION = 1 << 2,
    F_STEP = 1 << 3,
    F_POS = 1 << 4,
    F_CTX = 1 << 5,
    F_UNUSED = 1 << 6, /* was reply_to: answers travel back the way requests came */
    F_IDS = 1 << 7,
    F_X = 1 << 8,
    F_SHAPE = 1 << 9,
    F_DTYPE = 1 << 10,
    F_TOKEN = 1 << 11,
    F_LOGITS = 1 << 12,
    F_NODE = 1 << 13,
    F_CODE = 1 << 14,
    F_DIR = 1 << 15
};

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

static int get_bool(const msgpack_object *o, const char *field, bool *out, sl_err *err)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return sl_fail(err, "field \"%s\" must be a boolean", field);
    *out = o->via.boolean;
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

static int get_bin(const msgpack_object *o, const char *field, const void **ptr, size_t *len, sl_err *err)
{
    if (o->type != MSGPACK_OBJECT_BIN) return sl_fail(err, "field \"%s\" must be binary", field);
    *ptr = o->via.bin.ptr;
    *len = o->via.bin.size;
    return 0;
}

static int decode_sample(const msgpack_object *o, sl_msg *m, sl_err *err)
{
    if (o->type != MSGPACK_OBJECT_MAP) return sl_fail(err, "field \"sample\" must be a map");
    m->has_sample = true;
    m->sample = SL_SAMPLING_GREEDY;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        double d = 0;
        uint64_t u = 0;
        int rc = 0;
        if (k->type != MSGPACK_OBJECT_STR) return sl_fail(err, "field \"sample\" has a non-string key");
        if (key_is(k, "greedy"))
            rc = get_bool(v, "sample.greedy", &m->sample.greedy, err);
        else if (key_is(k, "temperature"))
            rc = get_number(v, "sample.temperature", &d, err), m->sample.temperature = (float)d;
        else if (key_is(k, "top_p"))
            rc = get_number(v, "sample.top_p", &d, err), m->sample.top_p = (float)d;
        else if (key_is(k, "top_k"))
            rc = get_uint(v, "sample.top_k", INT32_MAX, &u, err), m->sample.top_k = (int)u;
        else if (key_is(k, "seed"))
            rc = get_uint(v, "sample.seed", UINT64_MAX, &m->sample.seed, err);
        else if (key_is(k, "index"))
            rc = get_uint(v, "sample.index", UINT64_MAX, &m->sample_index, err);
        if (rc != 0) return rc;
    }
    sl_sampling ranges = m->sample; /* checked even when greedy ignores them */
    ranges.greedy = false;
    if (sl_sampling_check(&ranges, err) != 0) {
        sl_err_prefix(err, "field \"sample\"");
        return -1;
    }
    return 0;
}

static int decode_shape(const msgpack_object *o, sl_msg *m, sl_err *err)
{
    uint64_t r = 0, c = 0;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        get_uint(&o->via.array.ptr[0], "shape[0]", UINT32_MAX, &r, err) != 0 ||
        get_uint(&o->via.array.ptr[1], "shape[1]", UINT32_MAX, &c, err) != 0)
        return sl_fail(err, "field \"shape\" must be [rows, cols]");
    m->rows = (uint32_t)r;
    m->cols = (uint32_t)c;
    return 0;
}

/* One key of the top-level map; *seen collects which fields were present. */
static int decode_field(const msgpack_object *k, const msgpack_object *v, sl_msg *m, unsigned *seen, size_t *x_len,
                        size_t *ids_len, size_t *logits_len, sl_err *err)
{
    uint64_t u = 0;
    char text[16];
    if (k->type != MSGPACK_OBJECT_STR) return sl_fail(err, "a key of the message map is not a string");
    if (key_is(k, "v")) {
        *seen |= F_V;
        if (get_uint(v, "v", UINT32_MAX, &u, err) != 0) return -1;
        if (u != SL_WIRE_VERSION)
            return sl_fail(err, "field \"v\": version %llu is not supported (this is %d)", (unsigned long long)u,
                           SL_WIRE_VERSION);
    } else if (key_is(k, "kind")) {
        *seen |= F_KIND;
        if (get_str(v, "kind", text, sizeof text, err) != 0) return -1;
        int i = 0;
        while (i < SL_MSG_KIND_COUNT && strcmp(text, kind_names[i]) != 0)
            i++;
        if (i == SL_MSG_KIND_COUNT) return sl_fail(err, "field \"kind\": unknown kind \"%s\"", text);
        m->kind = (sl_msg_kind)i;
    } else if (key_is(k, "session")) {
        *seen |= F_SESSION;
        return get_uint(v, "session", UINT64_MAX, &m->session, err);
    } else if (key_is(k, "step")) {
        *seen |= F_STEP;
        return get_uint(v, "step", UINT64_MAX, &m->step, err);
    } else if (key_is(k, "pos")) {
        *seen |= F_POS;
        if (get_uint(v, "pos", UINT32_MAX, &u, err) != 0) return -1;
        m->pos = (uint32_t)u;
    } else if (key_is(k, "ctx")) {
        *seen |= F_CTX;
        if (get_uint(v, "ctx", UINT32_MAX, &u, err) != 0) return -1;
        m->ctx = (uint32_t)u;
    } else if (key_is(k, "ids")) {
        *seen |= F_IDS;
        return get_bin(v, "ids", &m->ids, ids_len, err);
    } else if (key_is(k, "x")) {
        *seen |= F_X;
        return get_bin(v, "x", &m->x, x_len, err);
    } else if (key_is(k, "g")) {
        *seen |= F_X; /* a backward's payload: same shape and dtype rules as x */
        return get_bin(v, "g", &m->x, x_len, err);
    } else if (key_is(k, "train")) {
        return get_bool(v, "train", &m->train, err);
    } else if (key_is(k, "update")) {
        return get_bool(v, "update", &m->update, err);
    } else if (key_is(k, "batch")) {
        if (get_uint(v, "batch", 1u << 20, &u, err) != 0) return -1;
        m->batch = (uint32_t)u;
    } else if (key_is(k, "lr")) {
        double d = 0;
        if (get_number(v, "lr", &d, err) != 0) return -1;
        if (!(d >= 0 && d <= 10)) return sl_fail(err, "field \"lr\" must be in 0..10");
        m->lr = (float)d;
    } else if (key_is(k, "wd")) {
        double d = 0;
        if (get_number(v, "wd", &d, err) != 0) return -1;
        if (!(d >= 0 && d <= 10)) return sl_fail(err, "field \"wd\" must be in 0..10");
        m->weight_decay = (float)d;
    } else if (key_is(k, "gnorm2")) {
        if (get_number(v, "gnorm2", &m->gnorm2, err) != 0) return -1;
        if (!(m->gnorm2 >= 0)) return sl_fail(err, "field \"gnorm2\" must be >= 0");
        m->has_gnorm2 = true;
    } else if (key_is(k, "scale")) {
        double d = 0;
        if (get_number(v, "scale", &d, err) != 0) return -1;
        if (!(d > 0 && d <= 1)) return sl_fail(err, "field \"scale\" must be in (0, 1]");
        m->grad_scale = (float)d;
    } else if (key_is(k, "loss")) {
        double d = 0;
        if (get_number(v, "loss", &d, err) != 0) return -1;
        if (!isfinite(d)) return sl_fail(err, "field \"loss\" must be a finite number");
        m->loss = (float)d, m->has_loss = true;
    } else if (key_is(k, "at_step")) {
        if (get_uint(v, "at_step", (uint64_t)1 << 53, &m->at_step, err) != 0) return -1;
        m->has_at_step = true;
    } else if (key_is(k, "dir")) {
        *seen |= F_DIR;
        return get_str(v, "dir", m->dir, sizeof m->dir, err);
    } else if (key_is(k, "logits")) {
        *seen |= F_LOGITS;
        return get_bin(v, "logits", &m->logits, logits_len, err);
    } else if (key_is(k, "shape")) {
        *seen |= F_SHAPE;
        return decode_shape(v, m, err);
    } else if (key_is(k, "dtype")) {
        *seen |= F_DTYPE;
        if (get_str(v, "dtype", text, sizeof text, err) != 0) return -1;
        if (sl_dtype_parse(text, &m->dtype) != 0 || m->dtype > SL_BF16)
            return sl_fail(err, "field \"dtype\": \"%s\" is not f32, f16 or bf16", text);
    } else if (key_is(k, "sample")) {
        return decode_sample(v, m, err);
    } else if (key_is(k, "want_logits")) {
        return get_bool(v, "want_logits", &m->want_logits, err);
    } else if (key_is(k, "ack")) {
        return get_bool(v, "ack", &m->ack, err);
    } else if (key_is(k, "token")) {
        *seen |= F_TOKEN;
        if (get_uint(v, "token", INT32_MAX, &u, err) != 0) return -1;
        m->token = (int32_t)u;
    } else if (key_is(k, "node")) {
        *seen |= F_NODE;
        return get_str(v, "node", m->node, sizeof m->node, err);
    } else if (key_is(k, "code")) {
        *seen |= F_CODE;
        return get_str(v, "code", m->code, sizeof m->code, err);
    } else if (key_is(k, "message")) {
        return get_str(v, "message", m->message, sizeof m->message, err);
    }
    return 0;
}

/* The fields each kind must carry. */
static int check_required(const sl_msg *m, unsigned seen, sl_err *err)
{
    static const unsigned need[SL_MSG_KIND_COUNT] = {
        [SL_MSG_FORWARD] = F_SESSION | F_STEP | F_POS, [SL_MSG_RESULT] = F_SESSION | F_STEP | F_POS | F_TOKEN,
        [SL_MSG_ERROR] = F_SESSION | F_CODE,           [SL_MSG_END] = F_SESSION,
        [SL_MSG_ACK] = F_SESSION | F_STEP | F_NODE,    [SL_MSG_BACKWARD] = F_SESSION | F_STEP | F_X | F_SHAPE | F_DTYPE,
        [SL_MSG_SAVE] = F_SESSION | F_STEP | F_DIR,    [SL_MSG_LOAD] = F_SESSION | F_STEP | F_DIR,
        [SL_MSG_UPDATE] = F_SESSION | F_STEP,
    };
    static const char *const names[] = {"v",        "kind",  "session", "step",  "pos",    "ctx",  "-",    "ids",
                                        "x (or g)", "shape", "dtype",   "token", "logits", "node", "code", "dir"};
    unsigned want = F_V | F_KIND | ((seen & F_KIND) ? need[m->kind] : 0);
    for (int i = 0; i < 16; i++)
        if ((want & (1u << i)) && !(seen & (1u << i)))
            return sl_fail(err, "field \"%s\" is missing%s%s", names[i], (seen & F_KIND) ? " from a " : "",
                           (seen & F_KIND) ? kind_names[m->kind] : "");
    return 0;
}

/* Sizes of the payloads against shape, dtype and the model. */
static int check_payload(sl_msg *m, unsigned seen, size_t x_len, size_t ids_len, size_t logits_len,
                         const sl_wire_limits *lim, sl_err *err)
{
    if (m->kind == SL_MSG_BACKWARD) {
        uint64_t want = (uint64_t)m->rows * m->cols * sl_dtype_size(m->dtype);
        if (m->rows == 0 || want != x_len)
            return sl_fail(err, "field \"g\": %zu bytes but shape [%u, %u] of %s needs %llu", x_len, m->rows, m->cols,
                           sl_dtype_name(m->dtype), (unsigned long long)want);
        if (lim->n_embd && m->cols != lim->n_embd)
            return sl_fail(err, "field \"shape\": width %u but the model's n_embd is %u", m->cols, lim->n_embd);
    }
    if (m->kind == SL_MSG_FORWARD && m->train &&
        (m->batch == 0 || ((seen & F_X) ? m->rows : (uint32_t)(ids_len / 4)) % m->batch))
        return sl_fail(err, "field \"batch\": a training forward needs a batch that divides its rows");
    if (m->kind == SL_MSG_FORWARD) {
        if (!!(seen & F_IDS) == !!(seen & F_X))
            return sl_fail(err, "a forward carries exactly one of \"ids\" and \"x\"");
        uint64_t tokens;
        if (seen & F_IDS) {
            if (ids_len % 4 || ids_len == 0)
                return sl_fail(err, "field \"ids\": %zu bytes is not a whole number of int32", ids_len);
            tokens = ids_len / 4;
            m->n_ids = (uint32_t)tokens;
        } else {
            if (!(seen & F_SHAPE) || !(seen & F_DTYPE))
                return sl_fail(err, "field \"x\" needs \"shape\" and \"dtype\"");
            uint64_t want = (uint64_t)m->rows * m->cols * sl_dtype_size(m->dtype);
            if (m->rows == 0 || want != x_len)
                return sl_fail(err, "field \"x\": %zu bytes but shape [%u, %u] of %s needs %llu", x_len, m->rows,
                               m->cols, sl_dtype_name(m->dtype), (unsigned long long)want);
            if (lim->n_embd && m->cols != lim->n_embd)
                return sl_fail(err, "field \"shape\": width %u but the model's n_embd is %u", m->cols, lim->n_embd);
            tokens = m->train && m->batch ? m->rows / m->batch : m->rows; /* a batch of sequences */
        }
        if (lim->n_positions && ((uint64_t)m->pos + tokens > lim->n_positions || m->ctx > lim->n_positions))
            return sl_fail(err, "field \"pos\": positions %u..%llu (ctx %u) go beyond n_positions %u", m->pos,
                           (unsigned long long)(m->pos + tokens - 1), m->ctx, lim->n_positions);
    }
    if (m->kind == SL_MSG_RESULT && (seen & F_LOGITS)) {
        uint64_t want = (uint64_t)m->rows * m->cols * 4;
        if (!(seen & F_SHAPE) || want != logits_len)
            return sl_fail(err, "field \"logits\": %zu bytes do not match shape [%u, %u] of f32", logits_len, m->rows,
                           m->cols);
        if (lim->vocab_size && m->cols != lim->vocab_size)
            return sl_fail(err, "field \"logits\": width %u but the vocabulary has %u", m->cols, lim->vocab_size);
    }
    if (lim->vocab_size && m->kind == SL_MSG_RESULT && (uint32_t)m->token >= lim->vocab_size)
        return sl_fail(err, "field \"token\": %d is outside the vocabulary", m->token);
    return 0;
}

int sl_wire_decode(sl_wire_decoder *self, const void *data, size_t len, const sl_wire_limits *limits, sl_msg *m,
                   sl_err *err)
{
    static const sl_wire_limits none = {0};
    if (!limits) limits = &none;
    memset(m, 0, sizeof *m);
    m->dtype = SL_F32;
    m->grad_scale = 1; /* a backward without "scale" updates with the gradients as they are */
    if (limits->max_bytes && len > limits->max_bytes)
        return sl_fail(err, "message of %zu bytes is over the %zu-byte cap", len, limits->max_bytes);
    if (prescan(data, len, err) != 0) return -1;
    size_t off = 0;
    msgpack_unpack_return ret = msgpack_unpack_next(&self->unpacked, data, len, &off);
    if (ret != MSGPACK_UNPACK_SUCCESS) return sl_fail(err, "not a msgpack message (%d)", (int)ret);
    if (off != len) return sl_fail(err, "%zu stray bytes after the msgpack map", len - off);
    const msgpack_object *root = &self->unpacked.data;
    if (root->type != MSGPACK_OBJECT_MAP) return sl_fail(err, "the message is not a msgpack map");
    unsigned seen = 0;
    size_t x_len = 0, ids_len = 0, logits_len = 0;
    for (uint32_t i = 0; i < root->via.map.size; i++)
        if (decode_field(&root->via.map.ptr[i].key, &root->via.map.ptr[i].val, m, &seen, &x_len, &ids_len, &logits_len,
                         err) != 0)
            return -1;
    if (check_required(m, seen, err) != 0) return -1;
    return check_payload(m, seen, x_len, ids_len, logits_len, limits, err);
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

static void pack_key(msgpack_packer *pk, const char *key)
{
    size_t n = strlen(key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, key, n);
}

static void pack_str(msgpack_packer *pk, const char *key, const char *value)
{
    pack_key(pk, key);
    pack_key(pk, value);
}

static void pack_uint(msgpack_packer *pk, const char *key, uint64_t value)
{
    pack_key(pk, key);
    msgpack_pack_uint64(pk, value);
}

static void pack_bool(msgpack_packer *pk, const char *key, bool value)
{
    pack_key(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* Floats converted to dtype in chunks, straight into the buffer. */
static void pack_floats(msgpack_packer *pk, const char *key, const float *x, size_t n, sl_dtype dtype)
{
    pack_key(pk, key);
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

static void pack_shape(msgpack_packer *pk, uint32_t rows, uint32_t cols)
{
    pack_key(pk, "shape");
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint32(pk, rows);
    msgpack_pack_uint32(pk, cols);
}

static void pack_sample(msgpack_packer *pk, const sl_msg *m)
{
    pack_key(pk, "sample");
    msgpack_pack_map(pk, 6);
    pack_bool(pk, "greedy", m->sample.greedy);
    pack_key(pk, "temperature");
    msgpack_pack_double(pk, m->sample.temperature);
    pack_uint(pk, "top_k", (uint64_t)m->sample.top_k);
    pack_key(pk, "top_p");
    msgpack_pack_double(pk, m->sample.top_p);
    pack_uint(pk, "seed", m->sample.seed);
    pack_uint(pk, "index", m->sample_index);
}

/* lr, wd and scale: the optimizer step a backward or an update message asks for. */
static void pack_update(msgpack_packer *pk, const sl_msg *m)
{
    pack_key(pk, "lr");
    msgpack_pack_double(pk, m->lr);
    pack_key(pk, "wd");
    msgpack_pack_double(pk, m->weight_decay);
    pack_key(pk, "scale");
    msgpack_pack_double(pk, m->grad_scale > 0 ? m->grad_scale : 1.0);
}

static size_t count_fields(const sl_msg *m)
{
    size_t n = 3; /* v, kind, session */
    switch (m->kind) {
    case SL_MSG_FORWARD:
        /* step pos ctx want_logits ack, then ids or x shape dtype, then sample */
        return n + 5 + (m->ids ? 1 : 3) + (m->has_sample ? 1 : 0) + (m->train ? 2 + (m->has_at_step ? 1 : 0) : 0);
    case SL_MSG_RESULT:
        return n + 3 + (m->logits ? 2 : 0);
    case SL_MSG_ERROR:
        return n + 4;
    case SL_MSG_END:
        return n;
    case SL_MSG_ACK:
        return n + 2;
    case SL_MSG_BACKWARD:
        return n + 8 + (m->has_gnorm2 ? 1 : 0); /* step g shape dtype update lr wd scale [gnorm2] */
    case SL_MSG_UPDATE:
        return n + 4; /* step lr wd scale */
    case SL_MSG_SAVE:
        return n + 2 + (m->has_loss ? 1 : 0); /* step dir [loss] */
    case SL_MSG_LOAD:
        return n + 2 + (m->has_at_step ? 1 : 0); /* step dir [at_step] */
    default:
        return n;
    }
}

int sl_wire_encode(const sl_msg *m, msgpack_sbuffer *buf, sl_err *err)
{
    if (m->kind >= SL_MSG_KIND_COUNT) return sl_fail(err, "unknown message kind %d", (int)m->kind);
    if (m->kind == SL_MSG_FORWARD && !m->ids && !m->x) return sl_fail(err, "a forward needs ids or x");
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, count_fields(m));
    pack_uint(&pk, "v", SL_WIRE_VERSION);
    pack_str(&pk, "kind", kind_names[m->kind]);
    pack_uint(&pk, "session", m->session);
    switch (m->kind) {
    case SL_MSG_FORWARD:
        pack_uint(&pk, "step", m->step);
        pack_uint(&pk, "pos", m->pos);
        pack_uint(&pk, "ctx", m->ctx);
        pack_bool(&pk, "want_logits", m->want_logits);
        pack_bool(&pk, "ack", m->ack);
        if (m->ids) {
            pack_key(&pk, "ids");
            msgpack_pack_bin(&pk, (size_t)m->n_ids * 4);
            msgpack_pack_bin_body(&pk, m->ids, (size_t)m->n_ids * 4); /* x86-64 is little-endian */
        } else {
            pack_floats(&pk, "x", m->x, (size_t)m->rows * m->cols, m->dtype);
            pack_shape(&pk, m->rows, m->cols);
            pack_str(&pk, "dtype", sl_dtype_lower(m->dtype));
        }
        if (m->has_sample) pack_sample(&pk, m);
        if (m->train) {
            pack_bool(&pk, "train", true);
            pack_uint(&pk, "batch", m->batch);
            if (m->has_at_step) pack_uint(&pk, "at_step", m->at_step);
        }
        break;
    case SL_MSG_BACKWARD:
        pack_uint(&pk, "step", m->step);
        pack_floats(&pk, "g", m->x, (size_t)m->rows * m->cols, m->dtype);
        pack_shape(&pk, m->rows, m->cols);
        pack_str(&pk, "dtype", sl_dtype_lower(m->dtype));
        pack_bool(&pk, "update", m->update);
        pack_update(&pk, m);
        if (m->has_gnorm2) {
            pack_key(&pk, "gnorm2");
            msgpack_pack_double(&pk, m->gnorm2);
        }
        break;
    case SL_MSG_UPDATE:
        pack_uint(&pk, "step", m->step);
        pack_update(&pk, m);
        break;
    case SL_MSG_SAVE:
    case SL_MSG_LOAD:
        pack_uint(&pk, "step", m->step);
        pack_str(&pk, "dir", m->dir);
        if (m->kind == SL_MSG_LOAD && m->has_at_step) pack_uint(&pk, "at_step", m->at_step);
        if (m->kind == SL_MSG_SAVE && m->has_loss) {
            pack_key(&pk, "loss");
            msgpack_pack_float(&pk, m->loss);
        }
        break;
    case SL_MSG_RESULT:
        pack_uint(&pk, "step", m->step);
        pack_uint(&pk, "pos", m->pos);
        pack_uint(&pk, "token", (uint64_t)m->token);
        if (m->logits) {
            pack_floats(&pk, "logits", m->logits, (size_t)m->rows * m->cols, SL_F32);
            pack_shape(&pk, m->rows, m->cols);
        }
        break;
    case SL_MSG_ERROR:
        pack_uint(&pk, "step", m->step);
        pack_str(&pk, "node", m->node);
        pack_str(&pk, "code", m->code);
        pack_str(&pk, "message", m->message);
        break;
    case SL_MSG_END:
        break;
    case SL_MSG_ACK:
        pack_uint(&pk, "step", m->step);
        pack_str(&pk, "node", m->node);
        break;
    default:
        break;
    }
    return 0;
}
