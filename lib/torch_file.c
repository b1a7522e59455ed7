/* torch_file.c — PyTorch zip and legacy checkpoints: storages read with every size checked, tensors
 * made contiguous. */
#include "torch_file.h"

#include "pickle.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

/* The most bytes deflate produces from one compressed byte: a member claiming more is a zip bomb. */
#define DEFLATE_MAX_RATIO 1032
#define MAX_PICKLE_MEMBER (16u << 20)
#define LEGACY_MAGIC "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
#define LEGACY_MAGIC_LEN 15
#define LEGACY_PROTOCOL_VERSION 1001

struct sl_torch_file {
    char *path;
    sl_tensor *tensors; /* sorted by name */
    size_t count;
    void **buffers; /* storages and gathered tensors, owned */
    size_t n_buffers;
};

/* One storage the state dict refers to. */
typedef struct slot {
    const char *key, *type;
    size_t elem_size;
    uint64_t numel;
    bool needed; /* a kept tensor uses it */
    bool listed; /* legacy: its record was found */
    unsigned char *data;
} slot;

typedef struct loader {
    sl_torch_file *f;
    sl_pickle *pickle;
    const sl_pickle_tensor *descs;
    size_t n_descs;
    slot *slots; /* sorted by key */
    size_t n_slots;
    sl_err *err;
} loader;

/* ---- the tensors kept ---- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* HF's causal-mask buffers ("h.0.attn.bias", "h.0.attn.masked_bias") are not weights. */
static bool dropped(const sl_pickle_tensor *t)
{
    return ends_with(t->name, ".attn.bias") || ends_with(t->name, ".attn.masked_bias");
}

static int by_key(const void *a, const void *b) { return strcmp(((const slot *)a)->key, ((const slot *)b)->key); }

static slot *find_slot(const loader *L, const char *key)
{
    slot probe = {.key = key};
    return bsearch(&probe, L->slots, L->n_slots, sizeof probe, by_key);
}

/* One slot per storage key; a key declared twice must name the same storage. */
static int collect_storages(loader *L)
{
    if (!(L->slots = calloc(L->n_descs, sizeof *L->slots))) return sl_fail(L->err, "%s: out of memory", L->f->path);
    for (size_t i = 0; i < L->n_descs; i++) {
        const sl_pickle_tensor *t = &L->descs[i];
        L->slots[i] = (slot){.key = t->storage_key,
                             .type = t->storage_type,
                             .elem_size = t->elem_size,
                             .numel = t->storage_numel,
                             .needed = !dropped(t)};
    }
    qsort(L->slots, L->n_descs, sizeof *L->slots, by_key);
    size_t n = 0;
    for (size_t i = 0; i < L->n_descs; i++) {
        slot *s = &L->slots[i], *prev = n ? &L->slots[n - 1] : NULL;
        if (!prev || strcmp(prev->key, s->key) != 0) {
            L->slots[n++] = *s;
            continue;
        }
        if (strcmp(prev->type, s->type) != 0 || prev->numel != s->numel)
            return sl_fail(L->err, "%s: storage '%s' is declared as %s of %llu elements and as %s of %llu", L->f->path,
                           s->key, prev->type, (unsigned long long)prev->numel, s->type, (unsigned long long)s->numel);
        prev->needed |= s->needed;
    }
    L->n_slots = n;
    return 0;
}

static int keep_buffer(sl_torch_file *f, void *buffer)
{
    void **more = realloc(f->buffers, (f->n_buffers + 1) * sizeof *more);
    if (!more) return -1;
    f->buffers = more;
    f->buffers[f->n_buffers++] = buffer;
    return 0;
}

/* Gives a slot its bytes (a copy the file keeps). */
static int fill_slot(loader *L, slot *s, const void *bytes, size_t n)
{
    if (!(s->data = malloc(n ? n : 1)) || keep_buffer(L->f, s->data) != 0) {
        free(s->data);
        s->data = NULL;
        return sl_fail(L->err, "%s: out of memory for storage '%s' (%zu bytes)", L->f->path, s->key, n);
    }
    memcpy(s->data, bytes, n);
    return 0;
}

static bool is_contiguous(const sl_pickle_tensor *t)
{
    int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expected) return false;
        expected *= t->shape[d];
    }
    return true;
}

/* Copies a strided tensor's elements into dst in row-major order. */
static void gather(unsigned char *dst, const unsigned char *base, const sl_pickle_tensor *t)
{
    int64_t index[SL_MAX_DIMS] = {0};
    for (size_t i = 0; i < t->numel; i++) {
        uint64_t at = 0;
        for (int d = 0; d < t->ndim; d++)
            at += (uint64_t)index[d] * (uint64_t)t->stride[d];
        memcpy(dst + i * t->elem_size, base + at * t->elem_size, t->elem_size);
        for (int d = t->ndim - 1; d >= 0 && ++index[d] == t->shape[d]; d--)
            index[d] = 0;
    }
}

static int make_tensor(loader *L, const sl_pickle_tensor *t, sl_tensor *out)
{
    const char *path = L->f->path;
    if (t->dtype < 0)
        return sl_fail(L->err,
                       "%s: tensor '%s' is stored as %s; only float32, float16, bfloat16, int64 and int32 "
                       "tensors are read",
                       path, t->name, t->storage_type);
    const slot *s = find_slot(L, t->storage_key);
    const unsigned char *base = s->data + t->offset * t->elem_size;
    *out =
        (sl_tensor){.dtype = (sl_dtype)t->dtype, .ndim = t->ndim, .numel = t->numel, .nbytes = t->numel * t->elem_size};
    memcpy(out->shape, t->shape, sizeof out->shape);
    if (!(out->name = strdup(t->name))) return sl_fail(L->err, "%s: out of memory", path);
    if (is_contiguous(t)) {
        out->data = base;
        return 0;
    }
    unsigned char *copy = malloc(out->nbytes ? out->nbytes : 1);
    if (!copy || keep_buffer(L->f, copy) != 0) {
        free(copy);
        return sl_fail(L->err, "%s: out of memory for tensor '%s'", path, t->name);
    }
    gather(copy, base, t);
    out->data = copy;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const sl_tensor *)a)->name, ((const sl_tensor *)b)->name);
}

static int make_tensors(loader *L)
{
    sl_torch_file *f = L->f;
    if (!(f->tensors = calloc(L->n_descs + 1, sizeof *f->tensors)))
        return sl_fail(L->err, "%s: out of memory", f->path);
    for (size_t i = 0; i < L->n_descs; i++) {
        if (dropped(&L->descs[i])) continue;
        if (make_tensor(L, &L->descs[i], &f->tensors[f->count]) != 0) return -1;
        f->count++;
    }
    qsort(f->tensors, f->count, sizeof *f->tensors, by_name);
    return 0;
}

/* Reads the state dict from the pickle at data (base: its offset in its file, origin: its name). */
static int load_state_dict(loader *L, const void *data, size_t size, const char *origin, size_t base)
{
    if (!(L->pickle = sl_pickle_load(data, size, origin, base, L->err))) return -1;
    if (sl_pickle_tensors(L->pickle, &L->descs, &L->n_descs, L->err) != 0) return -1;
    return collect_storages(L);
}

/* ---- zip format ---- */

typedef struct zip_reader {
    loader *L;
    zip_t *za;
    char prefix[256];
    uint64_t file_size, compressed_read;
} zip_reader;

static int zip_failure(zip_reader *z, const char *member, zip_file_t *zf)
{
    return sl_fail(z->L->err, "%s: %s: read failed: %s", z->L->f->path, member,
                   zf ? zip_file_strerror(zf) : zip_strerror(z->za));
}

/* The sizes of a member, checked before a byte of it is read. */
static int check_member(zip_reader *z, const char *member, const zip_stat_t *st)
{
    const char *path = z->L->f->path;
    const zip_uint64_t want = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
    if ((st->valid & want) != want) return sl_fail(z->L->err, "%s: %s: sizes unknown", path, member);
    if ((st->valid & ZIP_STAT_ENCRYPTION_METHOD) && st->encryption_method != ZIP_EM_NONE)
        return sl_fail(z->L->err, "%s: %s is encrypted", path, member);
    if (st->comp_method != ZIP_CM_STORE && st->comp_method != ZIP_CM_DEFLATE)
        return sl_fail(z->L->err, "%s: %s is compressed with method %d; only stored and deflated members are read",
                       path, member, (int)st->comp_method);
    if (st->comp_method == ZIP_CM_STORE && st->size != st->comp_size)
        return sl_fail(z->L->err, "%s: %s is stored but its sizes differ (%llu, %llu)", path, member,
                       (unsigned long long)st->size, (unsigned long long)st->comp_size);
    if (st->comp_method == ZIP_CM_DEFLATE && st->size / DEFLATE_MAX_RATIO > st->comp_size)
        return sl_fail(z->L->err,
                       "%s: %s claims %llu bytes from %llu compressed, more than deflate can produce (a zip bomb?)",
                       path, member, (unsigned long long)st->size, (unsigned long long)st->comp_size);
    z->compressed_read += st->comp_size;
    if (z->compressed_read > z->file_size)
        return sl_fail(z->L->err, "%s: %s: the members read add up to more than the file: they overlap (a zip bomb?)",
                       path, member);
    return 0;
}

/* Reads a whole member of exactly `expected` bytes (or, when expected is SIZE_MAX, of at most
 * max bytes) into a new buffer. */
static unsigned char *read_member(zip_reader *z, const char *member, size_t expected, size_t max, size_t *size)
{
    const char *path = z->L->f->path;
    zip_int64_t index = zip_name_locate(z->za, member, ZIP_FL_ENC_RAW);
    zip_stat_t st;
    if (index < 0) {
        sl_fail(z->L->err, "%s: no member %s in the archive", path, member);
        return NULL;
    }
    if (zip_stat_index(z->za, (zip_uint64_t)index, 0, &st) != 0) {
        zip_failure(z, member, NULL);
        return NULL;
    }
    if (check_member(z, member, &st) != 0) return NULL;
    if (expected != SIZE_MAX && st.size != expected) {
        sl_fail(z->L->err, "%s: %s holds %llu bytes; its storage declares %zu", path, member,
                (unsigned long long)st.size, expected);
        return NULL;
    }
    if (expected == SIZE_MAX && st.size > max) {
        sl_fail(z->L->err, "%s: %s is %llu bytes, more than %zu", path, member, (unsigned long long)st.size, max);
        return NULL;
    }
    unsigned char *buf = malloc(st.size ? st.size : 1);
    unsigned char extra;
    zip_file_t *zf = buf ? zip_fopen_index(z->za, (zip_uint64_t)index, 0) : NULL;
    int rc = !buf  ? sl_fail(z->L->err, "%s: out of memory for %s", path, member)
             : !zf ? zip_failure(z, member, NULL)
                   : 0;
    if (rc == 0 && zip_fread(zf, buf, st.size) != (zip_int64_t)st.size) rc = zip_failure(z, member, zf);
    /* Reading on to the end makes libzip check the CRC, and shows a member longer than it says. */
    zip_int64_t more = rc == 0 ? zip_fread(zf, &extra, 1) : 0;
    if (rc == 0 && more < 0) rc = zip_failure(z, member, zf);
    if (rc == 0 && more > 0)
        rc = sl_fail(z->L->err, "%s: %s inflates past the %llu bytes it claims (a zip bomb?)", path, member,
                     (unsigned long long)st.size);
    if (zf) zip_fclose(zf);
    if (rc != 0) {
        free(buf);
        return NULL;
    }
    *size = st.size;
    return buf;
}

/* <archive>: the top directory of the first member, as torch's reader takes it. */
static int find_prefix(zip_reader *z)
{
    const char *first = zip_get_num_entries(z->za, 0) > 0 ? zip_get_name(z->za, 0, ZIP_FL_ENC_RAW) : NULL;
    const char *slash = first ? strchr(first, '/') : NULL;
    if (!slash || slash == first || (size_t)(slash - first) >= sizeof z->prefix)
        return sl_fail(z->L->err, "%s: a zip archive, but not PyTorch's (no <archive>/data.pkl)", z->L->f->path);
    memcpy(z->prefix, first, (size_t)(slash - first));
    z->prefix[slash - first] = '\0';
    return 0;
}

static int check_byteorder(zip_reader *z)
{
    char member[300];
    snprintf(member, sizeof member, "%s/byteorder", z->prefix);
    if (zip_name_locate(z->za, member, ZIP_FL_ENC_RAW) < 0) return 0; /* older torch: little-endian */
    size_t n;
    unsigned char *text = read_member(z, member, SIZE_MAX, 16, &n);
    if (!text) return -1;
    int rc = n == 6 && memcmp(text, "little", 6) == 0
                 ? 0
                 : sl_fail(z->L->err, "%s: saved big-endian; only little-endian checkpoints are read", z->L->f->path);
    free(text);
    return rc;
}

static int read_zip_storages(zip_reader *z)
{
    loader *L = z->L;
    for (size_t i = 0; i < L->n_slots; i++) {
        slot *s = &L->slots[i];
        if (!s->needed) continue;
        char member[400];
        snprintf(member, sizeof member, "%s/data/%s", z->prefix, s->key);
        size_t n;
        unsigned char *bytes = read_member(z, member, (size_t)s->numel * s->elem_size, 0, &n);
        if (!bytes || keep_buffer(L->f, bytes) != 0) {
            if (bytes) sl_fail(L->err, "%s: out of memory", L->f->path);
            free(bytes);
            return -1;
        }
        s->data = bytes;
    }
    return 0;
}

static int open_zip(loader *L, uint64_t file_size)
{
    int code = 0;
    zip_reader z = {.L = L, .file_size = file_size, .za = zip_open(L->f->path, ZIP_RDONLY | ZIP_CHECKCONS, &code)};
    if (!z.za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        sl_fail(L->err, "%s: not a readable zip archive (truncated or damaged?): %s", L->f->path,
                zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    char member[300], origin[PATH_MAX + 300];
    size_t n = 0;
    unsigned char *pickle = NULL;
    int rc = find_prefix(&z);
    if (rc == 0) rc = check_byteorder(&z);
    if (rc == 0) {
        snprintf(member, sizeof member, "%s/data.pkl", z.prefix);
        snprintf(origin, sizeof origin, "%s: %s", L->f->path, member);
        pickle = read_member(&z, member, SIZE_MAX, MAX_PICKLE_MEMBER, &n);
        rc = pickle ? load_state_dict(L, pickle, n, origin, 0) : -1;
    }
    if (rc == 0) rc = read_zip_storages(&z);
    free(pickle);
    zip_discard(z.za);
    return rc;
}

/* ---- legacy format ---- */

typedef struct legacy_reader {
    loader *L;
    const unsigned char *map;
    size_t size, pos;
} legacy_reader;

/* Runs the next pickle of the file. */
static sl_pickle *next_pickle(legacy_reader *r)
{
    sl_pickle *p = sl_pickle_load(r->map + r->pos, r->size - r->pos, r->L->f->path, r->pos, r->L->err);
    if (p) r->pos += sl_pickle_length(p);
    return p;
}

static int check_legacy_header(legacy_reader *r)
{
    loader *L = r->L;
    r->pos = LEGACY_MAGIC_LEN;
    int64_t version = 0;
    bool little = false;
    sl_pickle *p = next_pickle(r);
    int rc = p ? sl_pickle_int(p, &version, L->err) : -1;
    if (rc == 0 && version != LEGACY_PROTOCOL_VERSION)
        rc = sl_fail(L->err, "%s: legacy protocol version %lld; only %d is read", L->f->path, (long long)version,
                     LEGACY_PROTOCOL_VERSION);
    sl_pickle_destroy(&p);
    if (rc == 0 && !(p = next_pickle(r))) rc = -1;
    if (rc == 0) rc = sl_pickle_dict_bool(p, "little_endian", &little, L->err);
    if (rc == 0 && !little)
        rc = sl_fail(L->err, "%s: saved big-endian; only little-endian checkpoints are read", L->f->path);
    sl_pickle_destroy(&p);
    return rc;
}

/* One storage record: u64 numel, then its bytes; copied when a kept tensor uses it. */
static int read_record(legacy_reader *r, const char *key)
{
    loader *L = r->L;
    slot *s = find_slot(L, key);
    if (!s)
        return sl_fail(L->err, "%s: byte %zu: storage '%s' is listed but no tensor uses it", L->f->path, r->pos, key);
    if (s->listed) return sl_fail(L->err, "%s: storage '%s' is listed twice", L->f->path, key);
    s->listed = true;
    if (r->size - r->pos < 8)
        return sl_fail(L->err, "%s: byte %zu: the record of storage '%s' is cut off (truncated?)", L->f->path, r->pos,
                       key);
    uint64_t numel = 0;
    for (int i = 7; i >= 0; i--)
        numel = numel << 8 | r->map[r->pos + (size_t)i];
    if (numel != s->numel)
        return sl_fail(L->err, "%s: byte %zu: storage '%s' holds %llu elements; the pickle declares %llu", L->f->path,
                       r->pos, key, (unsigned long long)numel, (unsigned long long)s->numel);
    r->pos += 8;
    size_t bytes = (size_t)numel * s->elem_size; /* the pickle bounded numel by SIZE_MAX / elem_size */
    if (bytes > r->size - r->pos)
        return sl_fail(L->err, "%s: byte %zu: storage '%s' needs %zu bytes, %zu are left (truncated?)", L->f->path,
                       r->pos, key, bytes, r->size - r->pos);
    if (s->needed && fill_slot(L, s, r->map + r->pos, bytes) != 0) return -1;
    r->pos += bytes;
    return 0;
}

static int read_legacy_records(legacy_reader *r)
{
    loader *L = r->L;
    const char *const *keys;
    size_t n_keys;
    sl_pickle *list = next_pickle(r);
    int rc = list ? sl_pickle_strings(list, &keys, &n_keys, L->err) : -1;
    for (size_t i = 0; rc == 0 && i < n_keys; i++)
        rc = read_record(r, keys[i]);
    for (size_t i = 0; rc == 0 && i < L->n_slots; i++)
        if (!L->slots[i].listed) rc = sl_fail(L->err, "%s: storage '%s' has no record", L->f->path, L->slots[i].key);
    sl_pickle_destroy(&list);
    return rc;
}

static int open_legacy(loader *L, const unsigned char *map, size_t size)
{
    legacy_reader r = {.L = L, .map = map, .size = size};
    if (check_legacy_header(&r) != 0) return -1;
    size_t at = r.pos;
    if (load_state_dict(L, map + at, size - at, L->f->path, at) != 0) return -1;
    r.pos += sl_pickle_length(L->pickle);
    return read_legacy_records(&r);
}

/* ---- opening ---- */

static int open_by_format(loader *L, int fd, size_t size)
{
    const char *path = L->f->path;
    unsigned char head[512] = {0};
    ssize_t got = pread(fd, head, sizeof head, 0);
    if (got < 0) return sl_fail(L->err, "%s: cannot read: %s", path, strerror(errno));
    if (got >= 4 && (memcmp(head, "PK\3\4", 4) == 0 || memcmp(head, "PK\5\6", 4) == 0)) return open_zip(L, size);
    if (got >= 262 && memcmp(head + 257, "ustar", 5) == 0)
        return sl_fail(L->err,
                       "%s: a tar archive (the format of PyTorch < 0.4) is not read: load and save it again "
                       "with a newer torch",
                       path);
    if (got < LEGACY_MAGIC_LEN || memcmp(head, LEGACY_MAGIC, LEGACY_MAGIC_LEN) != 0)
        return sl_fail(L->err, "%s: not a PyTorch checkpoint (neither a zip archive nor the legacy format)", path);
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return sl_fail(L->err, "%s: cannot map: %s", path, strerror(errno));
    int rc = open_legacy(L, map, size);
    munmap(map, size);
    return rc;
}

sl_torch_file *sl_torch_open(const char *path, sl_err *err)
{
    sl_torch_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        sl_fail(err, "%s: out of memory", path);
        return NULL;
    }
    loader L = {.f = f, .err = err};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int rc = fd >= 0 && fstat(fd, &st) == 0 ? 0 : sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    if (rc == 0) rc = open_by_format(&L, fd, (size_t)st.st_size);
    if (fd >= 0) close(fd);
    if (rc == 0) rc = make_tensors(&L);
    sl_pickle_destroy(&L.pickle);
    free(L.slots);
    if (rc != 0) sl_torch_close(&f);
    return f;
}

void sl_torch_close(sl_torch_file **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    sl_torch_file *f = *self;
    for (size_t i = 0; i < f->count; i++)
        free((char *)f->tensors[i].name);
    /* A tensor that failed after its name was copied is one past count. */
    if (f->tensors) free((char *)f->tensors[f->count].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_buffers; i++)
        free(f->buffers[i]);
    free(f->buffers);
    free(f->path);
    free(f);
    *self = NULL;
}

const char *sl_torch_path(const sl_torch_file *self) { return self->path; }
size_t sl_torch_count(const sl_torch_file *self) { return self->count; }
const sl_tensor *sl_torch_at(const sl_torch_file *self, size_t i) { return i < self->count ? &self->tensors[i] : NULL; }

const sl_tensor *sl_torch_find(const sl_torch_file *self, const char *name)
{
    sl_tensor key = {.name = name};
    return bsearch(&key, self->tensors, self->count, sizeof key, by_name);
}
