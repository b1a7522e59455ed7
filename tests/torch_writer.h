/* torch_writer.h — writes PyTorch checkpoints for the tests, independently of the reader: the
 * pickle Python's pickler (protocol 2) emits for torch.save of an OrderedDict of tensors (HF's
 * _metadata attribute included), in the zip layout (through libzip) or the legacy one.
 *
 * The pickle follows CPython's Pickler: ints as BININT1 / BININT2 / BININT / LONG1 by size,
 * strings as BINUNICODE, tuples of 1-3 items as TUPLE1-3 (more: MARK ... TUPLE), every string,
 * global, tuple and dict memoized (BINPUT) once and fetched again with BINGET, dict items in
 * batches of 1000 (MARK ... SETITEMS, a single item SETITEM), list items likewise (APPENDS). As in
 * torch's own files, a zip pickle's storage key is one string object per storage (fetched again
 * when the storage repeats) and a legacy pickle's a new string every time. */
#ifndef SL_TEST_TORCH_WRITER_H
#define SL_TEST_TORCH_WRITER_H

#include "safetensors.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

typedef struct tw_storage {
    const char *key;  /* "0", "1", ... in the zip format; any digits in the legacy one */
    const char *type; /* "FloatStorage", "HalfStorage", "BFloat16Storage", ... */
    size_t elem_size;
    const void *data; /* numel elements, little-endian */
    size_t numel;
} tw_storage;

typedef struct tw_tensor {
    const char *name;
    int storage; /* index into the storages */
    int64_t offset;
    int ndim;
    int64_t shape[SL_MAX_DIMS], stride[SL_MAX_DIMS];
} tw_tensor;

typedef struct tw_state {
    const tw_tensor *tensors;
    size_t n_tensors;
    const tw_storage *storages;
    bool legacy;   /* persistent ids with a view (None), a new key string each time */
    bool metadata; /* the OrderedDict carries _metadata = {"": {"version": 1}} (a BUILD) */
} tw_state;

/* A growing byte buffer plus the pickler's memo (strings by content, globals by name). */
typedef struct tw_buf {
    unsigned char *p;
    size_t n, cap;
    char *memo_keys[4096];
    int memo_ids[4096];
    int n_memo, next_id;
} tw_buf;

static inline void tw_bytes(tw_buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static inline void tw_byte(tw_buf *b, int c)
{
    unsigned char x = (unsigned char)c;
    tw_bytes(b, &x, 1);
}

static inline void tw_le(tw_buf *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        tw_byte(b, (int)(v >> (8 * i) & 0xff));
}

static inline void tw_free(tw_buf *b)
{
    for (int i = 0; i < b->n_memo; i++)
        free(b->memo_keys[i]);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* BINPUT / LONG_BINPUT of the next memo index; returns it. */
static inline int tw_put(tw_buf *b)
{
    int id = b->next_id++;
    if (id < 256) {
        tw_byte(b, 'q');
        tw_byte(b, id);
    } else {
        tw_byte(b, 'r');
        tw_le(b, (uint64_t)id, 4);
    }
    return id;
}

static inline void tw_get(tw_buf *b, int id)
{
    if (id < 256) {
        tw_byte(b, 'h');
        tw_byte(b, id);
    } else {
        tw_byte(b, 'j');
        tw_le(b, (uint64_t)id, 4);
    }
}

/* A memoized object named by key ("s:text", "g:module name"): BINGET when seen, else false. */
static inline bool tw_seen(tw_buf *b, const char *key)
{
    for (int i = 0; i < b->n_memo; i++)
        if (strcmp(b->memo_keys[i], key) == 0) {
            tw_get(b, b->memo_ids[i]);
            return true;
        }
    return false;
}

static inline void tw_remember(tw_buf *b, const char *key, int id)
{
    b->memo_keys[b->n_memo] = strdup(key);
    b->memo_ids[b->n_memo++] = id;
}

static inline void tw_int(tw_buf *b, int64_t v)
{
    if (v >= 0 && v <= 0xff) {
        tw_byte(b, 'K');
        tw_byte(b, (int)v);
    } else if (v >= 0 && v <= 0xffff) {
        tw_byte(b, 'M');
        tw_le(b, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        tw_byte(b, 'J');
        tw_le(b, (uint64_t)v, 4);
    } else { /* LONG1: the fewest two's complement bytes that keep the sign */
        int n = 1;
        while (n < 8 && !(v >> (8 * n - 1) == 0 || v >> (8 * n - 1) == -1))
            n++;
        tw_byte(b, 0x8a);
        tw_byte(b, n);
        tw_le(b, (uint64_t)v, n);
    }
}

/* A string; memoized by content unless fresh (a new object each time, as legacy storage keys). */
static inline void tw_str(tw_buf *b, const char *s, bool fresh)
{
    char key[512];
    snprintf(key, sizeof key, "s:%s", s);
    if (!fresh && tw_seen(b, key)) return;
    tw_byte(b, 'X');
    tw_le(b, strlen(s), 4);
    tw_bytes(b, s, strlen(s));
    int id = tw_put(b);
    if (!fresh) tw_remember(b, key, id);
}

static inline void tw_global(tw_buf *b, const char *module, const char *name)
{
    char key[256];
    snprintf(key, sizeof key, "g:%s %s", module, name);
    if (tw_seen(b, key)) return;
    tw_byte(b, 'c');
    tw_bytes(b, module, strlen(module));
    tw_byte(b, '\n');
    tw_bytes(b, name, strlen(name));
    tw_byte(b, '\n');
    tw_remember(b, key, tw_put(b));
}

/* A tuple of ints (a size or a stride). */
static inline void tw_int_tuple(tw_buf *b, const int64_t *v, int n)
{
    if (n == 0) {
        tw_byte(b, ')');
        return;
    }
    if (n > 3) tw_byte(b, '(');
    for (int i = 0; i < n; i++)
        tw_int(b, v[i]);
    tw_byte(b, n > 3 ? 't' : 0x84 + n);
    tw_put(b);
}

/* OrderedDict() — the backward hooks, or the state dict itself before its items. */
static inline void tw_ordered_dict(tw_buf *b)
{
    tw_global(b, "collections", "OrderedDict");
    tw_byte(b, ')');
    tw_byte(b, 'R');
    tw_put(b);
}

static inline void tw_tensor_value(tw_buf *b, const tw_state *s, const tw_tensor *t)
{
    const tw_storage *st = &s->storages[t->storage];
    tw_global(b, "torch._utils", "_rebuild_tensor_v2");
    tw_byte(b, '(');
    tw_byte(b, '('); /* the persistent id */
    tw_str(b, "storage", false);
    tw_global(b, "torch", st->type);
    tw_str(b, st->key, s->legacy);
    tw_str(b, "cpu", false);
    tw_int(b, (int64_t)st->numel);
    if (s->legacy) tw_byte(b, 'N');
    tw_byte(b, 't');
    tw_put(b);
    tw_byte(b, 'Q');
    tw_int(b, t->offset);
    tw_int_tuple(b, t->shape, t->ndim);
    tw_int_tuple(b, t->stride, t->ndim);
    tw_byte(b, 0x89); /* requires_grad False */
    tw_ordered_dict(b);
    tw_byte(b, 't');
    tw_put(b);
    tw_byte(b, 'R');
    tw_put(b);
}

/* HF's state dicts carry _metadata (per module, its version): restored with BUILD. */
static inline void tw_metadata(tw_buf *b)
{
    tw_byte(b, '}');
    tw_put(b);
    tw_str(b, "_metadata", false);
    tw_ordered_dict(b);
    tw_str(b, "", false);
    tw_byte(b, '}');
    tw_put(b);
    tw_str(b, "version", false);
    tw_int(b, 1);
    tw_byte(b, 's');
    tw_byte(b, 's');
    tw_byte(b, 's');
    tw_byte(b, 'b');
}

/* The pickle of the state dict (its memo starts afresh). */
static inline void tw_pickle_state(tw_buf *b, const tw_state *s)
{
    tw_byte(b, 0x80);
    tw_byte(b, 2);
    tw_ordered_dict(b);
    for (size_t first = 0; first < s->n_tensors; first += 1000) {
        size_t n = s->n_tensors - first < 1000 ? s->n_tensors - first : 1000;
        if (n > 1) tw_byte(b, '(');
        for (size_t i = first; i < first + n; i++) {
            tw_str(b, s->tensors[i].name, false);
            tw_tensor_value(b, s, &s->tensors[i]);
        }
        tw_byte(b, n > 1 ? 'u' : 's');
    }
    if (s->metadata) tw_metadata(b);
    tw_byte(b, '.');
}

/* Writes a zip checkpoint: <archive>/data.pkl, <archive>/data/<key> per storage, <archive>/version,
 * every member with compression method (ZIP_CM_STORE as torch, or ZIP_CM_DEFLATE). */
static inline int tw_write_zip(const char *path, const char *archive, const tw_buf *pickle, const tw_storage *storages,
                               size_t n_storages, zip_int32_t method)
{
    int code;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &code);
    if (!za) return -1;
    char name[512];
    int rc = 0;
    for (size_t i = 0; i <= n_storages + 1 && rc == 0; i++) {
        const void *data = i == 0 ? pickle->p : i <= n_storages ? storages[i - 1].data : "3\n";
        size_t size = i == 0 ? pickle->n : i <= n_storages ? storages[i - 1].numel * storages[i - 1].elem_size : 2;
        if (i == 0)
            snprintf(name, sizeof name, "%s/data.pkl", archive);
        else if (i <= n_storages)
            snprintf(name, sizeof name, "%s/data/%s", archive, storages[i - 1].key);
        else
            snprintf(name, sizeof name, "%s/version", archive);
        zip_source_t *src = zip_source_buffer(za, data, size, 0);
        zip_int64_t index = src ? zip_file_add(za, name, src, ZIP_FL_ENC_UTF_8) : -1;
        if (index < 0) {
            zip_source_free(src);
            rc = -1;
        } else {
            rc = zip_set_file_compression(za, (zip_uint64_t)index, method, 0);
        }
    }
    if (rc != 0) {
        zip_discard(za);
        return -1;
    }
    return zip_close(za);
}

/* The legacy layout's list of storage keys (a list pickle of its own). */
static inline void tw_pickle_keys(tw_buf *b, const tw_storage *storages, size_t n)
{
    tw_byte(b, 0x80);
    tw_byte(b, 2);
    tw_byte(b, ']');
    tw_put(b);
    if (n > 1) tw_byte(b, '(');
    for (size_t i = 0; i < n; i++)
        tw_str(b, storages[i].key, true);
    if (n) tw_byte(b, n > 1 ? 'e' : 'a');
    tw_byte(b, '.');
}

/* The legacy header: magic number, protocol version 1001, sys_info, each its own pickle. */
static inline void tw_legacy_header(tw_buf *b)
{
    static const unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                          0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    tw_bytes(b, magic, sizeof magic);
    tw_bytes(b, "\x80\x02M\xe9\x03.", 6);
    tw_buf info = {0};
    tw_byte(&info, 0x80);
    tw_byte(&info, 2);
    tw_byte(&info, '}');
    tw_put(&info);
    tw_byte(&info, '(');
    tw_str(&info, "protocol_version", false);
    tw_int(&info, 1001);
    tw_str(&info, "little_endian", false);
    tw_byte(&info, 0x88);
    tw_str(&info, "type_sizes", false);
    tw_byte(&info, '}');
    tw_put(&info);
    tw_byte(&info, '(');
    const char *types[] = {"short", "int", "long"};
    const int sizes[] = {2, 4, 4};
    for (int i = 0; i < 3; i++) {
        tw_str(&info, types[i], false);
        tw_int(&info, sizes[i]);
    }
    tw_byte(&info, 'u');
    tw_byte(&info, 'u');
    tw_byte(&info, '.');
    tw_bytes(b, info.p, info.n);
    tw_free(&info);
}

/* Writes a legacy checkpoint: the header, the state dict's pickle, the key list, the records. */
static inline int tw_write_legacy(const char *path, const tw_buf *pickle, const tw_storage *storages, size_t n)
{
    tw_buf out = {0}, keys = {0};
    tw_legacy_header(&out);
    tw_bytes(&out, pickle->p, pickle->n);
    tw_pickle_keys(&keys, storages, n);
    tw_bytes(&out, keys.p, keys.n);
    for (size_t i = 0; i < n; i++) {
        tw_le(&out, storages[i].numel, 8);
        tw_bytes(&out, storages[i].data, storages[i].numel * storages[i].elem_size);
    }
    FILE *fp = fopen(path, "wb");
    int rc = fp && fwrite(out.p, 1, out.n, fp) == out.n ? 0 : -1;
    if (fp && fclose(fp) != 0) rc = -1;
    tw_free(&out);
    tw_free(&keys);
    return rc;
}

#endif
