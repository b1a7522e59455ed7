/* safetensors.c — validated mmap reader and streaming writer for the safetensors format. */
#include "safetensors.h"

#include "json.h"
#include "sha256.h"

#include <assert.h>
#include <stdbool.h>
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is refused rather than parsed: real ones are well under 1 MiB. */
#define MAX_HEADER_BYTES (100u << 20)

typedef struct meta_entry {
    char *key, *value;
} meta_entry;

struct sl_st_file {
    char *path;
    unsigned char *map;
    size_t size;
    sl_tensor *tensors; /* sorted by name */
    size_t count;
    meta_entry *meta;
    size_t meta_count;
};

/* ---- reading ---- */

static int by_name(const void *a, const void *b)
{
    return strcmp(((const sl_tensor *)a)->name, ((const sl_tensor *)b)->name);
}

static int by_data(const void *a, const void *b)
{
    const sl_tensor *x = *(const sl_tensor *const *)a, *y = *(const sl_tensor *const *)b;
    const unsigned char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

/* A dimension or an offset: a whole number a double holds exactly. */
static int json_uint(const cJSON *item, const char *name, const char *where, uint64_t *out, sl_err *err)
{
    static const sl_json_num whole = {.min = 0, .max = SL_JSON_MAX_EXACT, .integer = true};
    double v;
    if (sl_json_number(item, name, whole, &v, where, err) != 0) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_shape(const cJSON *shape, sl_tensor *t, const char *where, sl_err *err)
{
    if (!cJSON_IsArray(shape)) return sl_fail(err, "%s: \"shape\" is not an array", where);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > SL_MAX_DIMS) return sl_fail(err, "%s: %d dimensions (at most %d)", where, ndim, SL_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        uint64_t dim;
        char name[32];
        snprintf(name, sizeof name, "shape[%d]", d);
        if (json_uint(cJSON_GetArrayItem(shape, d), name, where, &dim, err) != 0) return -1;
        if (dim && numel > SIZE_MAX / dim) return sl_fail(err, "%s: shape overflows", where);
        numel *= (size_t)dim;
        t->shape[d] = (int64_t)dim;
    }
    t->ndim = ndim;
    t->numel = numel;
    return 0;
}

static int parse_tensor(sl_st_file *f, const cJSON *entry, sl_tensor *t, size_t data_start, sl_err *err)
{
    char where[512];
    snprintf(where, sizeof where, "%s: tensor '%s'", f->path, entry->string);
    if (!cJSON_IsObject(entry)) return sl_fail(err, "%s: entry is not an object", where);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype)) return sl_fail(err, "%s: missing \"dtype\"", where);
    if (sl_dtype_parse(dtype->valuestring, &t->dtype) != 0)
        return sl_fail(err, "%s: unsupported dtype \"%s\" (F32, F16, BF16, I64, I32)", where, dtype->valuestring);
    if (parse_shape(cJSON_GetObjectItemCaseSensitive(entry, "shape"), t, where, err) != 0) return -1;
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return sl_fail(err, "%s: \"data_offsets\" is not [begin, end]", where);
    if (json_uint(cJSON_GetArrayItem(offsets, 0), "data_offsets[0]", where, &begin, err) != 0 ||
        json_uint(cJSON_GetArrayItem(offsets, 1), "data_offsets[1]", where, &end, err) != 0)
        return -1;
    if (begin > end)
        return sl_fail(err, "%s: \"data_offsets\" [%llu, %llu] ends before it begins", where, (unsigned long long)begin,
                       (unsigned long long)end);
    size_t data_size = f->size - data_start;
    if (end > data_size)
        return sl_fail(err, "%s: data ends at byte %llu but the file has only %zu data bytes (truncated?)", where,
                       (unsigned long long)end, data_size);
    size_t elem = sl_dtype_size(t->dtype);
    if (t->numel > SIZE_MAX / elem || t->numel * elem != end - begin)
        return sl_fail(err, "%s: shape needs %zu bytes but data_offsets span %llu", where,
                       t->numel > SIZE_MAX / elem ? SIZE_MAX : t->numel * elem, (unsigned long long)(end - begin));
    t->name = strdup(entry->string);
    if (!t->name) return sl_fail(err, "%s: out of memory", where);
    t->data = f->map + data_start + begin;
    t->nbytes = end - begin;
    return 0;
}

static int parse_metadata(sl_st_file *f, const cJSON *meta, sl_err *err)
{
    if (!cJSON_IsObject(meta)) return sl_fail(err, "%s: \"__metadata__\" is not an object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) return sl_fail(err, "%s: out of memory", f->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta)
    {
        if (!cJSON_IsString(item)) return sl_fail(err, "%s: metadata '%s' is not a string", f->path, item->string);
        meta_entry *e = &f->meta[f->meta_count++];
        e->key = strdup(item->string);
        e->value = strdup(item->valuestring);
        if (!e->key || !e->value) return sl_fail(err, "%s: out of memory", f->path);
    }
    return 0;
}

static int check_overlaps(sl_st_file *f, sl_err *err)
{
    if (f->count < 2) return 0;
    const sl_tensor **order = malloc(f->count * sizeof *order);
    if (!order) return sl_fail(err, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->count; i++)
        order[i] = &f->tensors[i];
    qsort(order, f->count, sizeof *order, by_data);
    int rc = 0;
    for (size_t i = 1; i < f->count && rc == 0; i++) {
        const unsigned char *prev_end = (const unsigned char *)order[i - 1]->data + order[i - 1]->nbytes;
        if ((const unsigned char *)order[i]->data < prev_end)
            rc = sl_fail(err, "%s: tensors '%s' and '%s' overlap", f->path, order[i - 1]->name, order[i]->name);
    }
    free(order);
    return rc;
}

static int parse_header(sl_st_file *f, sl_err *err)
{
    if (f->size < 8) return sl_fail(err, "%s: %zu bytes is too short for a safetensors file", f->path, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->map[i];
    if (n > f->size - 8 || n > MAX_HEADER_BYTES)
        return sl_fail(err, "%s: header length %llu does not fit in the file (%zu bytes; truncated?)", f->path,
                       (unsigned long long)n, f->size);
    cJSON *root = cJSON_ParseWithLength((const char *)f->map + 8, (size_t)n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sl_fail(err, "%s: header is not a JSON object (malformed JSON)", f->path);
    }
    f->tensors = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *f->tensors);
    int rc = f->tensors ? 0 : sl_fail(err, "%s: out of memory", f->path);
    const cJSON *entry;
    cJSON_ArrayForEach(entry, root)
    {
        if (rc != 0) break;
        if (strcmp(entry->string, "__metadata__") == 0)
            rc = parse_metadata(f, entry, err);
        else if ((rc = parse_tensor(f, entry, &f->tensors[f->count], 8 + (size_t)n, err)) == 0)
            f->count++;
    }
    cJSON_Delete(root);
    if (rc != 0) return rc;
    qsort(f->tensors, f->count, sizeof *f->tensors, by_name);
    for (size_t i = 1; i < f->count; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return sl_fail(err, "%s: tensor '%s' appears twice", f->path, f->tensors[i].name);
    return check_overlaps(f, err);
}

sl_st_file *sl_st_open(const char *path, sl_err *err)
{
    sl_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        sl_fail(err, "%s: out of memory", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        sl_st_close(&f);
        return NULL;
    }
    f->size = (size_t)st.st_size;
    if (f->size) {
        void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        f->map = map == MAP_FAILED ? NULL : map;
    }
    close(fd);
    if (f->size && !f->map) {
        sl_fail(err, "%s: cannot map: %s", path, strerror(errno));
        f->size = 0;
        sl_st_close(&f);
        return NULL;
    }
    if (parse_header(f, err) != 0) sl_st_close(&f);
    return f;
}

void sl_st_close(sl_st_file **self)
{
    assert(self);
    if (!*self) return;
    sl_st_file *f = *self;
    for (size_t i = 0; i < f->count; i++)
        free((char *)f->tensors[i].name);
    /* A tensor that failed after its name was copied is one past count. */
    if (f->tensors) free((char *)f->tensors[f->count].name);
    free(f->tensors);
    for (size_t i = 0; i < f->meta_count; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    free(f);
    *self = NULL;
}

const char *sl_st_path(const sl_st_file *self) { return self->path; }
size_t sl_st_count(const sl_st_file *self) { return self->count; }
const sl_tensor *sl_st_at(const sl_st_file *self, size_t i) { return i < self->count ? &self->tensors[i] : NULL; }

const sl_tensor *sl_st_find(const sl_st_file *self, const char *name)
{
    sl_tensor key = {.name = name};
    return bsearch(&key, self->tensors, self->count, sizeof key, by_name);
}

const char *sl_st_metadata(const sl_st_file *self, const char *key)
{
    for (size_t i = 0; i < self->meta_count; i++)
        if (strcmp(self->meta[i].key, key) == 0) return self->meta[i].value;
    return NULL;
}

/* ---- writing ---- */

typedef struct pending {
    char *name;
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    size_t numel;
    const void *data; /* floats stored as dtype, or with raw dtype's own bytes */
    bool raw;
} pending;

struct sl_st_writer {
    pending *items;
    size_t count, cap;
    cJSON *meta;
};

sl_st_writer *sl_st_writer_new(void) { return calloc(1, sizeof(sl_st_writer)); }

void sl_st_writer_destroy(sl_st_writer **self)
{
    assert(self);
    if (!*self) return;
    for (size_t i = 0; i < (*self)->count; i++)
        free((*self)->items[i].name);
    free((*self)->items);
    cJSON_Delete((*self)->meta);
    free(*self);
    *self = NULL;
}

/* Queues a tensor: data is floats stored as dtype (raw false) or dtype's own bytes (raw true). */
static int add_pending(sl_st_writer *w, const char *name, sl_dtype dtype, const void *data, bool raw, int ndim,
                       const int64_t *shape, sl_err *err)
{
    if (ndim < 0 || ndim > SL_MAX_DIMS) return sl_fail(err, "tensor '%s': %d dimensions", name, ndim);
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        pending *items = realloc(w->items, cap * sizeof *items);
        if (!items) return sl_fail(err, "tensor '%s': out of memory", name);
        w->items = items;
        w->cap = cap;
    }
    pending *p = &w->items[w->count];
    *p = (pending){.dtype = dtype, .ndim = ndim, .numel = 1, .data = data, .raw = raw};
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return sl_fail(err, "tensor '%s': negative dimension", name);
        p->shape[d] = shape[d];
        p->numel *= (size_t)shape[d];
    }
    if (!(p->name = strdup(name))) return sl_fail(err, "tensor '%s': out of memory", name);
    w->count++;
    return 0;
}

int sl_st_writer_add_f32(sl_st_writer *w, const char *name, sl_dtype dtype, const float *data, int ndim,
                         const int64_t *shape, sl_err *err)
{
    if (dtype != SL_F32 && dtype != SL_F16 && dtype != SL_BF16)
        return sl_fail(err, "tensor '%s': cannot store floats as %s", name, sl_dtype_name(dtype));
    return add_pending(w, name, dtype, data, false, ndim, shape, err);
}

int sl_st_writer_add_raw(sl_st_writer *w, const char *name, sl_dtype dtype, const void *data, int ndim,
                         const int64_t *shape, sl_err *err)
{
    return add_pending(w, name, dtype, data, true, ndim, shape, err);
}

int sl_st_writer_set_metadata(sl_st_writer *self, const char *key, const char *value, sl_err *err)
{
    if (!self->meta && !(self->meta = cJSON_CreateObject())) return sl_fail(err, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(self->meta, key);
    if (!cJSON_AddStringToObject(self->meta, key, value)) return sl_fail(err, "out of memory");
    return 0;
}

/* The JSON header, padded with spaces so that 8 + its length is a multiple of 8. */
static char *build_header(sl_st_writer *w, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (w->meta) cJSON_AddItemReferenceToObject(root, "__metadata__", w->meta);
    size_t offset = 0;
    for (size_t i = 0; i < w->count; i++) {
        pending *p = &w->items[i];
        cJSON *t = cJSON_AddObjectToObject(root, p->name);
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < p->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)p->shape[d]));
        size_t nbytes = p->numel * sl_dtype_size(p->dtype);
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + nbytes)));
        cJSON_AddStringToObject(t, "dtype", sl_dtype_name(p->dtype));
        offset += nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return NULL;
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    char *out = realloc(json, padded + 1);
    if (!out) {
        free(json);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    *len = padded;
    return out;
}

static int write_all(FILE *fp, sl_sha256 *hash, const void *data, size_t len)
{
    if (hash) sl_sha256_update(hash, data, len);
    return fwrite(data, 1, len, fp) == len ? 0 : -1;
}

/* Streams one tensor, converting floats in chunks so no full-size copy is made. */
static int write_tensor(FILE *fp, sl_sha256 *hash, const pending *p)
{
    size_t elem = sl_dtype_size(p->dtype);
    if (p->raw || p->dtype == SL_F32) return write_all(fp, hash, p->data, p->numel * elem);
    enum { CHUNK = 16384 };
    unsigned char buf[CHUNK * 4];
    for (size_t i = 0; i < p->numel; i += CHUNK) {
        size_t n = p->numel - i < CHUNK ? p->numel - i : CHUNK;
        sl_dtype_from_f32(buf, p->dtype, (const float *)p->data + i, n);
        if (write_all(fp, hash, buf, n * elem) != 0) return -1;
    }
    return 0;
}

int sl_st_writer_write(sl_st_writer *self, const char *path, uint8_t sha256[32], sl_err *err)
{
    size_t header_len;
    char *header = build_header(self, &header_len);
    if (!header) return sl_fail(err, "%s: out of memory building the header", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        free(header);
        return sl_fail(err, "%s: cannot create: %s", path, strerror(errno));
    }
    sl_sha256 *hash = sha256 ? sl_sha256_new() : NULL;
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    int rc = (sha256 && !hash) ? -1 : 0;
    if (rc == 0) rc = write_all(fp, hash, len_bytes, 8);
    if (rc == 0) rc = write_all(fp, hash, header, header_len);
    for (size_t i = 0; i < self->count && rc == 0; i++)
        rc = write_tensor(fp, hash, &self->items[i]);
    free(header);
    if (fclose(fp) != 0) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc != 0) {
        sl_fail(err, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
    } else if (hash) {
        sl_sha256_final(hash, sha256);
    }
    sl_sha256_destroy(&hash);
    return rc;
}
