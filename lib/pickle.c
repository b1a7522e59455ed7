/* pickle.c — the restricted unpickler: a stack machine over plain values, every operand checked. */
#include "pickle.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A state dict needs about fifteen values per tensor and its pickle a few hundred bytes per
 * tensor; beyond these a pickle is not a state dict but an attempt to exhaust memory. The stack
 * and the open MARKs are bounded by MAX_VALUES too. */
#define MAX_PICKLE_BYTES (16u << 20)
#define MAX_VALUES (1u << 22)

typedef enum kind {
    K_NONE,
    K_BOOL,
    K_INT,
    K_FLOAT,
    K_STR,
    K_TUPLE,
    K_LIST,
    K_DICT,
    K_SET,
    K_GLOBAL,
    K_STORAGE,
    K_TENSOR
} kind;

static const char *const kind_names[] = {"None",   "a bool", "an int", "a float",  "a string",  "a tuple",
                                         "a list", "a dict", "a set",  "a global", "a storage", "a tensor"};

/* The callable globals, then one per storage type (index G_STORAGE + i). */
enum { G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_STORAGE };

static const char *const callable_names[G_STORAGE] = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                                                      "torch._utils._rebuild_parameter"};

static const struct storage_type {
    const char *name;
    int dtype;
    size_t elem_size;
} storage_types[] = {
    {"FloatStorage", SL_F32, 4}, {"HalfStorage", SL_F16, 2},     {"BFloat16Storage", SL_BF16, 2},
    {"LongStorage", SL_I64, 8},  {"IntStorage", SL_I32, 4},      {"DoubleStorage", -1, 8},
    {"ShortStorage", -1, 2},     {"CharStorage", -1, 1},         {"ByteStorage", -1, 1},
    {"BoolStorage", -1, 1},      {"ComplexFloatStorage", -1, 8}, {"ComplexDoubleStorage", -1, 16},
};
#define N_STORAGE_TYPES (sizeof storage_types / sizeof *storage_types)

typedef struct value value;

struct value {
    kind kind;
    bool ordered; /* a dict made by OrderedDict() */
    size_t at;    /* byte offset of the opcode that made it */
    union {
        int64_t i; /* int, bool */
        double f;
        struct {
            char *s; /* NUL-terminated copy */
            size_t len;
        } str;
        struct {
            value **items; /* a dict's are key, value, key, value, ... */
            size_t n, cap;
        } seq;
        unsigned global;
        struct {
            int type; /* index into storage_types */
            const value *key;
            uint64_t numel, view_offset, view_numel;
        } storage;
        struct {
            const value *storage, *shape, *stride;
            uint64_t offset;
            size_t numel;
        } tensor;
    } u;
};

struct sl_pickle {
    char *origin;
    value **values; /* every value made, freed with the pickle */
    size_t n_values, cap_values;
    value none, yes, no, empty_tuple; /* immutable, shared */
    const value *result;
    size_t length;
    sl_pickle_tensor *tensors;
    const char **strings;
};

typedef struct machine {
    sl_pickle *p;
    const uint8_t *data;
    size_t size, pos, op_at, base, ops;
    value **stack;
    size_t depth, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    value **memo;
    size_t memo_cap;
    sl_err *err;
} machine;

/* ---- messages ---- */

static const char *const opcode_names[256] = {
    ['('] = "MARK",
    ['.'] = "STOP",
    ['0'] = "POP",
    ['1'] = "POP_MARK",
    ['2'] = "DUP",
    ['F'] = "FLOAT",
    ['I'] = "INT",
    ['J'] = "BININT",
    ['K'] = "BININT1",
    ['L'] = "LONG",
    ['M'] = "BININT2",
    ['N'] = "NONE",
    ['P'] = "PERSID",
    ['Q'] = "BINPERSID",
    ['R'] = "REDUCE",
    ['S'] = "STRING",
    ['T'] = "BINSTRING",
    ['U'] = "SHORT_BINSTRING",
    ['V'] = "UNICODE",
    ['X'] = "BINUNICODE",
    ['a'] = "APPEND",
    ['b'] = "BUILD",
    ['c'] = "GLOBAL",
    ['d'] = "DICT",
    ['}'] = "EMPTY_DICT",
    ['e'] = "APPENDS",
    ['g'] = "GET",
    ['h'] = "BINGET",
    ['i'] = "INST",
    ['j'] = "LONG_BINGET",
    ['l'] = "LIST",
    [']'] = "EMPTY_LIST",
    ['o'] = "OBJ",
    ['p'] = "PUT",
    ['q'] = "BINPUT",
    ['r'] = "LONG_BINPUT",
    ['s'] = "SETITEM",
    ['t'] = "TUPLE",
    [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS",
    ['G'] = "BINFLOAT",
    ['B'] = "BINBYTES",
    ['C'] = "SHORT_BINBYTES",
    [0x80] = "PROTO",
    [0x81] = "NEWOBJ",
    [0x82] = "EXT1",
    [0x83] = "EXT2",
    [0x84] = "EXT4",
    [0x85] = "TUPLE1",
    [0x86] = "TUPLE2",
    [0x87] = "TUPLE3",
    [0x88] = "NEWTRUE",
    [0x89] = "NEWFALSE",
    [0x8a] = "LONG1",
    [0x8b] = "LONG4",
    [0x8c] = "SHORT_BINUNICODE",
    [0x8d] = "BINUNICODE8",
    [0x8e] = "BINBYTES8",
    [0x8f] = "EMPTY_SET",
    [0x90] = "ADDITEMS",
    [0x91] = "FROZENSET",
    [0x92] = "NEWOBJ_EX",
    [0x93] = "STACK_GLOBAL",
    [0x94] = "MEMOIZE",
    [0x95] = "FRAME",
    [0x96] = "BYTEARRAY8",
    [0x97] = "NEXT_BUFFER",
    [0x98] = "READONLY_BUFFER",
};

/* Untrusted bytes made safe to print: printable ASCII kept, the rest as \xNN, long text cut. */
static void quote(char *out, size_t size, const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 60) {
            n += (size_t)snprintf(out + n, size - n, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, size - n, "\\x%02x", c);
    }
    out[n] = '\0';
}

/* Fails naming the pickle and the byte offset (in its file) of the current opcode. */
static int fail(machine *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(machine *m, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    sl_fail(m->err, "%s: byte %zu: %s", m->p->origin, m->base + m->op_at, what);
    return -1;
}

static const char *kind_name(const value *v) { return kind_names[v->kind]; }

/* ---- values ---- */

static value *new_value(machine *m, kind k)
{
    sl_pickle *p = m->p;
    if (p->n_values == MAX_VALUES) {
        fail(m, "more than %u values: not a state dict", MAX_VALUES);
        return NULL;
    }
    if (p->n_values == p->cap_values) {
        size_t cap = p->cap_values ? 2 * p->cap_values : 256;
        value **more = realloc(p->values, cap * sizeof *more);
        if (!more) {
            fail(m, "out of memory");
            return NULL;
        }
        p->values = more;
        p->cap_values = cap;
    }
    value *v = calloc(1, sizeof *v);
    if (!v) {
        fail(m, "out of memory");
        return NULL;
    }
    v->kind = k;
    v->at = m->base + m->op_at;
    p->values[p->n_values++] = v;
    return v;
}

static int seq_add(machine *m, value *seq, value *item)
{
    if (seq->u.seq.n == seq->u.seq.cap) {
        size_t cap = seq->u.seq.cap ? 2 * seq->u.seq.cap : 8;
        value **more = realloc(seq->u.seq.items, cap * sizeof *more);
        if (!more) return fail(m, "out of memory");
        seq->u.seq.items = more;
        seq->u.seq.cap = cap;
    }
    seq->u.seq.items[seq->u.seq.n++] = item;
    return 0;
}

static bool is_str(const value *v, const char *s)
{
    return v->kind == K_STR && v->u.str.len == strlen(s) && memcmp(v->u.str.s, s, v->u.str.len) == 0;
}

static bool is_int(const value *v, int64_t min) { return v->kind == K_INT && v->u.i >= min; }

/* ---- the stack, marks and memo ---- */

static int push(machine *m, value *v)
{
    if (!v) return -1;
    if (m->depth == MAX_VALUES) return fail(m, "a stack of more than %u values: not a state dict", MAX_VALUES);
    if (m->depth == m->stack_cap) {
        size_t cap = m->stack_cap ? 2 * m->stack_cap : 64;
        value **more = realloc(m->stack, cap * sizeof *more);
        if (!more) return fail(m, "out of memory");
        m->stack = more;
        m->stack_cap = cap;
    }
    m->stack[m->depth++] = v;
    return 0;
}

/* Checks that the current group (since the last MARK, or the whole stack) has n values. */
static int need(machine *m, size_t n)
{
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->depth - floor < n)
        return fail(m, "%s needs %zu value%s on the stack, has %zu", opcode_names[m->data[m->op_at]], n,
                    n == 1 ? "" : "s", m->depth - floor);
    return 0;
}

static value *top(machine *m, size_t from_top) { return m->stack[m->depth - 1 - from_top]; }

static int push_mark(machine *m)
{
    if (m->n_marks == MAX_VALUES) return fail(m, "more than %u open MARKs: not a state dict", MAX_VALUES);
    if (m->n_marks == m->marks_cap) {
        size_t cap = m->marks_cap ? 2 * m->marks_cap : 16;
        size_t *more = realloc(m->marks, cap * sizeof *more);
        if (!more) return fail(m, "out of memory");
        m->marks = more;
        m->marks_cap = cap;
    }
    m->marks[m->n_marks++] = m->depth;
    return 0;
}

/* Closes the group: *first is where its values start on the stack. */
static int pop_mark(machine *m, size_t *first)
{
    if (!m->n_marks) return fail(m, "%s without a MARK", opcode_names[m->data[m->op_at]]);
    *first = m->marks[--m->n_marks];
    return 0;
}

static int memo_put(machine *m, uint64_t index)
{
    if (need(m, 1) != 0) return -1;
    /* Python's pickler numbers memo entries 0, 1, 2, ...: an index beyond the instructions run
     * so far is no pickler's and would only make the memo huge. */
    if (index > m->ops) return fail(m, "memo index %llu is out of range", (unsigned long long)index);
    if (index >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= index)
            cap *= 2;
        value **more = realloc(m->memo, cap * sizeof *more);
        if (!more) return fail(m, "out of memory");
        memset(more + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *more);
        m->memo = more;
        m->memo_cap = cap;
    }
    m->memo[index] = top(m, 0);
    return 0;
}

static int memo_get(machine *m, uint64_t index)
{
    if (index >= m->memo_cap || !m->memo[index])
        return fail(m, "memo entry %llu was never stored", (unsigned long long)index);
    return push(m, m->memo[index]);
}

/* ---- operands ---- */

static int take(machine *m, size_t n, const uint8_t **out)
{
    if (m->size - m->pos < n)
        return fail(m, "%s needs %zu bytes, %zu are left (truncated?)", opcode_names[m->data[m->op_at]], n,
                    m->size - m->pos);
    *out = m->data + m->pos;
    m->pos += n;
    return 0;
}

static int take_uint(machine *m, size_t n, uint64_t *out)
{
    const uint8_t *b = NULL;
    if (take(m, n, &b) != 0) return -1;
    *out = 0;
    for (size_t i = n; i-- > 0;)
        *out = *out << 8 | b[i];
    return 0;
}

/* A GLOBAL operand: text up to a newline. */
static int take_line(machine *m, const char **text, size_t *len)
{
    const uint8_t *start = m->data + m->pos, *nl = memchr(start, '\n', m->size - m->pos);
    if (!nl) return fail(m, "GLOBAL without its newline (truncated?)");
    *text = (const char *)start;
    *len = (size_t)(nl - start);
    m->pos += *len + 1;
    return 0;
}

static int push_int(machine *m, int64_t i)
{
    value *v = new_value(m, K_INT);
    if (v) v->u.i = i;
    return push(m, v);
}

static int push_string(machine *m, size_t len_bytes)
{
    uint64_t len = 0;
    const uint8_t *bytes = NULL;
    if (take_uint(m, len_bytes, &len) != 0 || take(m, len, &bytes) != 0) return -1;
    value *v = new_value(m, K_STR);
    if (!v) return -1;
    if (!(v->u.str.s = malloc(len + 1))) return fail(m, "out of memory");
    memcpy(v->u.str.s, bytes, len);
    v->u.str.s[len] = '\0';
    v->u.str.len = len;
    return push(m, v);
}

/* LONG1: n bytes of a little-endian two's complement integer. */
static int push_long1(machine *m)
{
    uint64_t n, bits;
    if (take_uint(m, 1, &n) != 0) return -1;
    if (n > 8) return fail(m, "LONG1 of %llu bytes does not fit in 64 bits", (unsigned long long)n);
    if (take_uint(m, n, &bits) != 0) return -1;
    if (n > 0 && n < 8 && (bits >> (8 * n - 1)) & 1) bits |= ~0ull << (8 * n); /* sign-extend */
    return push_int(m, (int64_t)bits);
}

static int push_float(machine *m)
{
    const uint8_t *b = NULL;
    if (take(m, 8, &b) != 0) return -1;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits = bits << 8 | b[i];
    value *v = new_value(m, K_FLOAT);
    if (v) memcpy(&v->u.f, &bits, sizeof v->u.f);
    return push(m, v);
}

/* ---- globals ---- */

static int lookup_global(const char *module, size_t module_len, const char *name, size_t name_len)
{
    char full[160];
    if (module_len + name_len + 2 > sizeof full) return -1;
    snprintf(full, sizeof full, "%.*s.%.*s", (int)module_len, module, (int)name_len, name);
    for (int g = 0; g < G_STORAGE; g++)
        if (strcmp(full, callable_names[g]) == 0) return g;
    for (size_t t = 0; t < N_STORAGE_TYPES; t++)
        if (module_len == 5 && memcmp(module, "torch", 5) == 0 && strlen(storage_types[t].name) == name_len &&
            memcmp(name, storage_types[t].name, name_len) == 0)
            return G_STORAGE + (int)t;
    return -1;
}

static int op_global(machine *m)
{
    const char *module = NULL, *name = NULL;
    size_t module_len = 0, name_len = 0;
    if (take_line(m, &module, &module_len) != 0 || take_line(m, &name, &name_len) != 0) return -1;
    int g = lookup_global(module, module_len, name, name_len);
    if (g < 0) {
        char qm[256], qn[256];
        quote(qm, sizeof qm, module, module_len);
        quote(qn, sizeof qn, name, name_len);
        return fail(m,
                    "GLOBAL %s.%s is not allowed: a state dict needs only collections.OrderedDict, "
                    "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.*Storage",
                    qm, qn);
    }
    value *v = new_value(m, K_GLOBAL);
    if (v) v->u.global = (unsigned)g;
    return push(m, v);
}

static const char *global_name(unsigned g)
{
    return g < G_STORAGE ? callable_names[g] : storage_types[g - G_STORAGE].name;
}

/* ---- persistent ids: storages ---- */

/* A storage key names a zip member or a legacy record: digits and letters only. */
static bool valid_key(const value *v)
{
    if (v->kind != K_STR || v->u.str.len == 0 || v->u.str.len > 64) return false;
    for (size_t i = 0; i < v->u.str.len; i++) {
        char c = v->u.str.s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')) return false;
    }
    return true;
}

/* A legacy view (view_key, offset, numel) of the storage, or None: the whole storage. */
static int apply_view(machine *m, value *st, const value *view)
{
    if (view->kind == K_NONE) return 0;
    if (view->kind != K_TUPLE || view->u.seq.n != 3 || !valid_key(view->u.seq.items[0]) ||
        !is_int(view->u.seq.items[1], 0) || !is_int(view->u.seq.items[2], 0))
        return fail(m, "a storage view must be None or (key, offset, numel)");
    uint64_t offset = (uint64_t)view->u.seq.items[1]->u.i, numel = (uint64_t)view->u.seq.items[2]->u.i;
    if (offset > st->u.storage.numel || numel > st->u.storage.numel - offset)
        return fail(m, "storage view [%llu, +%llu) lies outside its storage of %llu elements",
                    (unsigned long long)offset, (unsigned long long)numel, (unsigned long long)st->u.storage.numel);
    st->u.storage.view_offset = offset;
    st->u.storage.view_numel = numel;
    return 0;
}

static int op_persid(machine *m)
{
    if (need(m, 1) != 0) return -1;
    const value *pid = top(m, 0);
    if (pid->kind != K_TUPLE || (pid->u.seq.n != 5 && pid->u.seq.n != 6) || !is_str(pid->u.seq.items[0], "storage"))
        return fail(m, "BINPERSID of %s: only ('storage', type, key, location, numel[, view]) is allowed",
                    kind_name(pid));
    value *const *it = pid->u.seq.items;
    if (it[1]->kind != K_GLOBAL || it[1]->u.global < G_STORAGE)
        return fail(m, "persistent id: the storage type is %s, not a torch.*Storage",
                    it[1]->kind == K_GLOBAL ? global_name(it[1]->u.global) : kind_name(it[1]));
    if (!valid_key(it[2])) return fail(m, "persistent id: the storage key is not a short name of letters and digits");
    if (it[3]->kind != K_STR) return fail(m, "persistent id: the location is %s, not a string", kind_name(it[3]));
    if (!is_int(it[4], 0)) return fail(m, "persistent id: the element count is not a non-negative int");
    int type = it[1]->u.global - G_STORAGE;
    if ((uint64_t)it[4]->u.i > SIZE_MAX / storage_types[type].elem_size)
        return fail(m, "persistent id: storage '%s' of %lld elements is too large", it[2]->u.str.s,
                    (long long)it[4]->u.i);
    value *st = new_value(m, K_STORAGE);
    if (!st) return -1;
    st->u.storage.type = type;
    st->u.storage.key = it[2];
    st->u.storage.numel = st->u.storage.view_numel = (uint64_t)it[4]->u.i;
    if (pid->u.seq.n == 6 && apply_view(m, st, it[5]) != 0) return -1;
    m->stack[m->depth - 1] = st;
    return 0;
}

/* ---- REDUCE of the allowed callables ---- */

/* A tuple of n non-negative ints (a size or a stride). */
static bool is_dims(const value *v, size_t n)
{
    if (v->kind != K_TUPLE || v->u.seq.n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_int(v->u.seq.items[i], 0)) return false;
    return true;
}

/* Checks that every element the tensor addresses lies inside its storage (or view). */
static int check_extent(machine *m, value *t)
{
    const value *st = t->u.tensor.storage, *shape = t->u.tensor.shape, *stride = t->u.tensor.stride;
    const size_t elem = storage_types[st->u.storage.type].elem_size;
    uint64_t numel = 1, last = t->u.tensor.offset;
    for (size_t d = 0; d < shape->u.seq.n; d++)
        if (__builtin_mul_overflow(numel, (uint64_t)shape->u.seq.items[d]->u.i, &numel) || numel > SIZE_MAX / elem)
            return fail(m, "tensor size overflows");
    t->u.tensor.numel = (size_t)numel;
    const uint64_t avail = st->u.storage.view_numel;
    if (numel == 0) return t->u.tensor.offset <= avail ? 0 : fail(m, "storage offset is outside the storage");
    for (size_t d = 0; d < shape->u.seq.n; d++) {
        uint64_t span;
        if (__builtin_mul_overflow((uint64_t)shape->u.seq.items[d]->u.i - 1, (uint64_t)stride->u.seq.items[d]->u.i,
                                   &span) ||
            __builtin_add_overflow(last, span, &last))
            return fail(m, "tensor extent overflows");
    }
    if (last >= avail)
        return fail(m, "tensor reaches element %llu of storage '%s', which holds %llu", (unsigned long long)last,
                    st->u.storage.key->u.str.s, (unsigned long long)avail);
    return 0;
}

static int rebuild_tensor_v2(machine *m, value *const *a, size_t n, value **out)
{
    if (n != 6 && n != 7) return fail(m, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %zu", n);
    if (a[0]->kind != K_STORAGE) return fail(m, "_rebuild_tensor_v2: the storage is %s", kind_name(a[0]));
    if (!is_int(a[1], 0)) return fail(m, "_rebuild_tensor_v2: the storage offset is not a non-negative int");
    if (a[2]->kind != K_TUPLE || a[2]->u.seq.n > SL_MAX_DIMS || !is_dims(a[2], a[2]->u.seq.n))
        return fail(m, "_rebuild_tensor_v2: the size is not a tuple of at most %d non-negative ints", SL_MAX_DIMS);
    if (!is_dims(a[3], a[2]->u.seq.n))
        return fail(m, "_rebuild_tensor_v2: the stride is not %zu non-negative ints", a[2]->u.seq.n);
    if (a[4]->kind != K_BOOL) return fail(m, "_rebuild_tensor_v2: requires_grad is %s", kind_name(a[4]));
    if (a[5]->kind != K_DICT || a[5]->u.seq.n != 0)
        return fail(m, "_rebuild_tensor_v2: backward hooks must be an empty dict");
    if (n == 7 && a[6]->kind != K_NONE && a[6]->kind != K_DICT)
        return fail(m, "_rebuild_tensor_v2: the metadata is %s", kind_name(a[6]));
    value *t = new_value(m, K_TENSOR);
    if (!t) return -1;
    t->u.tensor.storage = a[0];
    t->u.tensor.offset = (uint64_t)a[1]->u.i;
    t->u.tensor.shape = a[2];
    t->u.tensor.stride = a[3];
    *out = t;
    return check_extent(m, t);
}

static int call(machine *m, unsigned g, const value *args, value **out)
{
    value *const *a = args->u.seq.items;
    const size_t n = args->u.seq.n;
    switch (g) {
    case G_ORDERED_DICT:
        if (n != 0) return fail(m, "collections.OrderedDict called with arguments");
        if (!(*out = new_value(m, K_DICT))) return -1;
        (*out)->ordered = true;
        return 0;
    case G_REBUILD_TENSOR_V2:
        return rebuild_tensor_v2(m, a, n, out);
    case G_REBUILD_PARAMETER:
        if (n != 3 || a[0]->kind != K_TENSOR || a[1]->kind != K_BOOL || a[2]->kind != K_DICT || a[2]->u.seq.n)
            return fail(m, "_rebuild_parameter takes (tensor, requires_grad, empty backward hooks)");
        *out = a[0];
        return 0;
    default:
        return fail(m, "REDUCE of torch.%s is not allowed (a storage type is only valid in a persistent id)",
                    global_name(g));
    }
}

static int op_reduce(machine *m)
{
    if (need(m, 2) != 0) return -1;
    const value *args = top(m, 0), *callable = top(m, 1);
    if (callable->kind != K_GLOBAL)
        return fail(m,
                    "REDUCE of %s: only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
                    "torch._utils._rebuild_parameter may be called",
                    kind_name(callable));
    if (args->kind != K_TUPLE) return fail(m, "REDUCE: the arguments are %s, not a tuple", kind_name(args));
    value *result = NULL;
    if (call(m, callable->u.global, args, &result) != 0) return -1;
    m->depth--;
    m->stack[m->depth - 1] = result;
    return 0;
}

/* BUILD on an OrderedDict sets attributes (HF's _metadata): nothing a tensor needs. */
static int op_build(machine *m)
{
    if (need(m, 2) != 0) return -1;
    const value *state = top(m, 0), *inst = top(m, 1);
    if (inst->kind != K_DICT || !inst->ordered)
        return fail(m, "BUILD on %s: only an OrderedDict's attributes may be set", kind_name(inst));
    if (state->kind != K_DICT && state->kind != K_NONE)
        return fail(m, "BUILD with %s: the attributes must be a dict", kind_name(state));
    m->depth--;
    return 0;
}

/* ---- containers ---- */

static int op_tuple(machine *m, size_t first)
{
    size_t n = m->depth - first;
    if (n == 0) return push(m, &m->p->empty_tuple);
    value *t = new_value(m, K_TUPLE);
    if (!t) return -1;
    if (!(t->u.seq.items = malloc(n * sizeof *t->u.seq.items))) return fail(m, "out of memory");
    memcpy(t->u.seq.items, m->stack + first, n * sizeof *t->u.seq.items);
    t->u.seq.n = t->u.seq.cap = n;
    m->depth = first;
    return push(m, t);
}

static int op_tuple_n(machine *m, size_t n)
{
    if (need(m, n) != 0) return -1;
    return op_tuple(m, m->depth - n);
}

/* APPENDS / SETITEMS: the values since the MARK go into the container below it. */
static int op_extend(machine *m, kind target_kind)
{
    size_t first = 0;
    if (pop_mark(m, &first) != 0) return -1;
    if (first == 0 || (m->n_marks && m->marks[m->n_marks - 1] == first))
        return fail(m, "%s without a container below its MARK", opcode_names[m->data[m->op_at]]);
    value *target = m->stack[first - 1];
    if (target->kind != target_kind)
        return fail(m, "%s into %s, not %s", opcode_names[m->data[m->op_at]], kind_name(target),
                    kind_names[target_kind]);
    if (target_kind == K_DICT && (m->depth - first) % 2)
        return fail(m, "SETITEMS with an odd number of values (a key without its value)");
    for (size_t i = first; i < m->depth; i++)
        if (seq_add(m, target, m->stack[i]) != 0) return -1;
    m->depth = first;
    return 0;
}

/* APPEND / SETITEM: the top n values go into the container below them. */
static int op_add(machine *m, kind target_kind, size_t n)
{
    if (need(m, n + 1) != 0) return -1;
    value *target = top(m, n);
    if (target->kind != target_kind)
        return fail(m, "%s into %s, not %s", opcode_names[m->data[m->op_at]], kind_name(target),
                    kind_names[target_kind]);
    for (size_t i = n; i-- > 0;)
        if (seq_add(m, target, top(m, i)) != 0) return -1;
    m->depth -= n;
    return 0;
}

static int push_new(machine *m, kind k) { return push(m, new_value(m, k)); }

/* ---- the machine ---- */

static int op_proto(machine *m)
{
    uint64_t version;
    if (take_uint(m, 1, &version) != 0) return -1;
    return version <= 5 ? 0 : fail(m, "unknown pickle protocol %llu", (unsigned long long)version);
}

static int op_stop(machine *m)
{
    if (m->n_marks) return fail(m, "STOP with a MARK still open");
    if (m->depth != 1) return fail(m, "STOP with %zu values on the stack, not 1", m->depth);
    m->p->result = m->stack[0];
    m->p->length = m->pos;
    return 0;
}

static int step(machine *m, uint8_t op)
{
    uint64_t u = 0;
    size_t first = 0;
    switch (op) {
    case 0x80:
        return op_proto(m);
    case '.':
        return op_stop(m);
    case '(':
        return push_mark(m);
    case '}':
        return push_new(m, K_DICT);
    case ']':
        return push_new(m, K_LIST);
    case 0x8f:
        return push_new(m, K_SET);
    case ')':
        return push(m, &m->p->empty_tuple);
    case 't':
        return pop_mark(m, &first) != 0 ? -1 : op_tuple(m, first);
    case 0x85:
        return op_tuple_n(m, 1);
    case 0x86:
        return op_tuple_n(m, 2);
    case 0x87:
        return op_tuple_n(m, 3);
    case 'N':
        return push(m, &m->p->none);
    case 0x88:
        return push(m, &m->p->yes);
    case 0x89:
        return push(m, &m->p->no);
    case 'J':
        return take_uint(m, 4, &u) != 0 ? -1 : push_int(m, (int32_t)(uint32_t)u);
    case 'K':
        return take_uint(m, 1, &u) != 0 ? -1 : push_int(m, (int64_t)u);
    case 'M':
        return take_uint(m, 2, &u) != 0 ? -1 : push_int(m, (int64_t)u);
    case 0x8a:
        return push_long1(m);
    case 'G':
        return push_float(m);
    case 'X':
        return push_string(m, 4);
    case 'U':
        return push_string(m, 1);
    case 'q':
        return take_uint(m, 1, &u) != 0 ? -1 : memo_put(m, u);
    case 'r':
        return take_uint(m, 4, &u) != 0 ? -1 : memo_put(m, u);
    case 'h':
        return take_uint(m, 1, &u) != 0 ? -1 : memo_get(m, u);
    case 'j':
        return take_uint(m, 4, &u) != 0 ? -1 : memo_get(m, u);
    case 'a':
        return op_add(m, K_LIST, 1);
    case 'e':
        return op_extend(m, K_LIST);
    case 's':
        return op_add(m, K_DICT, 2);
    case 'u':
        return op_extend(m, K_DICT);
    case 'c':
        return op_global(m);
    case 'R':
        return op_reduce(m);
    case 'b':
        return op_build(m);
    case 'Q':
        return op_persid(m);
    default:
        if (opcode_names[op])
            return fail(m, "opcode %s (0x%02x) is not allowed: a state dict needs only plain data and tensors",
                        opcode_names[op], op);
        return fail(m, "0x%02x is not a pickle opcode", op);
    }
}

static int run(machine *m)
{
    while (!m->p->result) {
        m->op_at = m->pos;
        if (m->pos == m->size)
            return fail(m, "the pickle ends without STOP (truncated%s?)",
                        m->size == MAX_PICKLE_BYTES ? ", or longer than 16 MiB" : "");
        uint8_t op = m->data[m->pos++];
        m->ops++;
        if (step(m, op) != 0) return -1;
    }
    return 0;
}

sl_pickle *sl_pickle_load(const void *data, size_t size, const char *origin, size_t base, sl_err *err)
{
    sl_pickle *p = calloc(1, sizeof *p);
    if (!p || !(p->origin = strdup(origin))) {
        free(p);
        sl_fail(err, "%s: out of memory", origin);
        return NULL;
    }
    p->none.kind = K_NONE;
    p->yes = (value){.kind = K_BOOL, .u.i = 1};
    p->no = (value){.kind = K_BOOL, .u.i = 0};
    p->empty_tuple.kind = K_TUPLE;
    machine m = {
        .p = p, .data = data, .size = size < MAX_PICKLE_BYTES ? size : MAX_PICKLE_BYTES, .base = base, .err = err};
    int rc = run(&m);
    free(m.stack);
    free(m.marks);
    free(m.memo);
    if (rc != 0) sl_pickle_destroy(&p);
    return p;
}

void sl_pickle_destroy(sl_pickle **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    sl_pickle *p = *self;
    for (size_t i = 0; i < p->n_values; i++) {
        value *v = p->values[i];
        if (v->kind == K_STR) free(v->u.str.s);
        if (v->kind == K_TUPLE || v->kind == K_LIST || v->kind == K_DICT) free(v->u.seq.items);
        free(v);
    }
    free(p->values);
    free(p->tensors);
    free(p->strings);
    free(p->origin);
    free(p);
    *self = NULL;
}

size_t sl_pickle_length(const sl_pickle *self) { return self->length; }

/* ---- reading the result ---- */

static const value *dict_get(const value *dict, const char *key)
{
    for (size_t i = 0; i + 1 < dict->u.seq.n; i += 2)
        if (is_str(dict->u.seq.items[i], key)) return dict->u.seq.items[i + 1];
    return NULL;
}

static size_t count_tensors(const value *dict)
{
    size_t n = 0;
    for (size_t i = 1; i < dict->u.seq.n; i += 2)
        n += dict->u.seq.items[i]->kind == K_TENSOR;
    return n;
}

/* The dict holding the tensors: the top level, or what a training checkpoint nests them in. */
static const value *state_dict_of(const value *top)
{
    if (top->kind != K_DICT || count_tensors(top)) return top;
    static const char *const wrappers[] = {"state_dict", "model_state_dict"};
    for (size_t i = 0; i < sizeof wrappers / sizeof *wrappers; i++) {
        const value *inner = dict_get(top, wrappers[i]);
        if (inner && inner->kind == K_DICT && count_tensors(inner)) return inner;
    }
    return top;
}

static void describe(sl_pickle_tensor *out, const char *name, const value *t)
{
    const value *st = t->u.tensor.storage;
    const struct storage_type *type = &storage_types[st->u.storage.type];
    *out = (sl_pickle_tensor){.name = name,
                              .storage_type = type->name,
                              .dtype = type->dtype,
                              .elem_size = type->elem_size,
                              .storage_key = st->u.storage.key->u.str.s,
                              .storage_numel = st->u.storage.numel,
                              .offset = st->u.storage.view_offset + t->u.tensor.offset,
                              .ndim = (int)t->u.tensor.shape->u.seq.n,
                              .numel = t->u.tensor.numel,
                              .at = t->at};
    for (int d = 0; d < out->ndim; d++) {
        out->shape[d] = t->u.tensor.shape->u.seq.items[d]->u.i;
        out->stride[d] = t->u.tensor.stride->u.seq.items[d]->u.i;
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const sl_pickle_tensor *const *)a)->name, (*(const sl_pickle_tensor *const *)b)->name);
}

static int check_unique(const sl_pickle *p, size_t n, sl_err *err)
{
    const sl_pickle_tensor **order = malloc((n + 1) * sizeof *order);
    if (!order) return sl_fail(err, "%s: out of memory", p->origin);
    for (size_t i = 0; i < n; i++)
        order[i] = &p->tensors[i];
    qsort(order, n, sizeof *order, by_name);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            char q[256];
            quote(q, sizeof q, order[i]->name, strlen(order[i]->name));
            rc = sl_fail(err, "%s: tensor '%s' appears twice in the state dict", p->origin, q);
        }
    free(order);
    return rc;
}

int sl_pickle_tensors(sl_pickle *self, const sl_pickle_tensor **tensors, size_t *count, sl_err *err)
{
    const value *dict = state_dict_of(self->result);
    if (dict->kind != K_DICT)
        return sl_fail(err, "%s: the pickle holds %s, not a state dict (a dict of tensors)", self->origin,
                       kind_name(dict));
    size_t n = count_tensors(dict);
    if (n == 0) return sl_fail(err, "%s: the state dict holds no tensor", self->origin);
    free(self->tensors);
    if (!(self->tensors = calloc(n, sizeof *self->tensors))) return sl_fail(err, "%s: out of memory", self->origin);
    size_t k = 0;
    for (size_t i = 0; i + 1 < dict->u.seq.n; i += 2) {
        const value *key = dict->u.seq.items[i], *t = dict->u.seq.items[i + 1];
        if (t->kind != K_TENSOR) continue;
        if (key->kind != K_STR || strlen(key->u.str.s) != key->u.str.len)
            return sl_fail(err, "%s: byte %zu: a tensor's key is %s, not a name", self->origin, t->at,
                           key->kind == K_STR ? "a string with a NUL byte" : kind_name(key));
        describe(&self->tensors[k++], key->u.str.s, t);
    }
    if (check_unique(self, n, err) != 0) return -1;
    *tensors = self->tensors;
    *count = n;
    return 0;
}

int sl_pickle_int(const sl_pickle *self, int64_t *out, sl_err *err)
{
    if (self->result->kind != K_INT)
        return sl_fail(err, "%s: the pickle holds %s, not an int", self->origin, kind_name(self->result));
    *out = self->result->u.i;
    return 0;
}

int sl_pickle_dict_bool(const sl_pickle *self, const char *key, bool *out, sl_err *err)
{
    const value *v = self->result->kind == K_DICT ? dict_get(self->result, key) : NULL;
    if (!v || v->kind != K_BOOL) return sl_fail(err, "%s: no boolean \"%s\" in the pickled dict", self->origin, key);
    *out = v->u.i != 0;
    return 0;
}

int sl_pickle_strings(sl_pickle *self, const char *const **items, size_t *count, sl_err *err)
{
    const value *list = self->result;
    if (list->kind != K_LIST)
        return sl_fail(err, "%s: the pickle holds %s, not a list of strings", self->origin, kind_name(list));
    free(self->strings);
    if (!(self->strings = calloc(list->u.seq.n + 1, sizeof *self->strings)))
        return sl_fail(err, "%s: out of memory", self->origin);
    for (size_t i = 0; i < list->u.seq.n; i++) {
        if (list->u.seq.items[i]->kind != K_STR)
            return sl_fail(err, "%s: item %zu of the list is %s, not a string", self->origin, i,
                           kind_name(list->u.seq.items[i]));
        self->strings[i] = list->u.seq.items[i]->u.str.s;
    }
    *items = self->strings;
    *count = list->u.seq.n;
    return 0;
}
