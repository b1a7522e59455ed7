/* fileio.c — reading and atomically writing small files. */
#include "fileio.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

char *sl_read_text_file(const char *path, size_t max_bytes, sl_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        sl_fail(err, "%s is a directory, not a file", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, got = 0;
    int out_of_memory = 0;
    do {
        if (len + 4096 + 1 > cap) {
            char *more = realloc(buf, cap ? 2 * cap : 8192);
            if (!more) {
                out_of_memory = 1;
                break;
            }
            buf = more;
            cap = cap ? 2 * cap : 8192;
        }
        got = fread(buf + len, 1, cap - len - 1, fp);
        len += got;
    } while (got > 0 && len <= max_bytes);
    int failed = ferror(fp) || out_of_memory;
    fclose(fp);
    if (failed || len > max_bytes) {
        sl_fail(err, "%s: %s", path, out_of_memory ? "out of memory" : failed ? "read failed" : "file too large");
        free(buf);
        return NULL;
    }
    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        sl_fail(err, "%s: a NUL byte at offset %zu: not a text file", path, (size_t)(nul - buf));
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

int sl_write_text_file(const char *path, const char *text, sl_err *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return sl_fail(err, "%s: path too long", path);
    FILE *fp = fopen(tmp, "w");
    if (!fp) return sl_fail(err, "%s: cannot create: %s", path, strerror(errno));
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, fp) == len && (len && text[len - 1] == '\n' ? 1 : fputc('\n', fp) != EOF);
    ok = fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int saved = errno;
        unlink(tmp);
        return sl_fail(err, "%s: write failed: %s", path, strerror(saved));
    }
    return 0;
}

int sl_mkdirs(const char *dir, sl_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return sl_fail(err, "%s: path too long", dir);
    for (char *p = path + 1;; p++) {
        char c = *p;
        if (c != '/' && c != '\0') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return sl_fail(err, "%s: cannot create: %s", path, strerror(errno));
        *p = c;
        if (!c) return 0;
    }
}

int sl_copy_file(const char *from, const char *path, sl_err *err)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(path, "wb") : NULL;
    char buf[1 << 16];
    size_t got;
    int rc = in && out ? 0 : sl_fail(err, "cannot copy %s to %s: %s", from, path, strerror(errno));
    while (rc == 0 && (got = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, got, out) != got) rc = sl_fail(err, "%s: write failed: %s", path, strerror(errno));
    if (rc == 0 && ferror(in)) rc = sl_fail(err, "%s: read failed", from);
    if (out && fclose(out) != 0 && rc == 0) rc = sl_fail(err, "%s: write failed: %s", path, strerror(errno));
    if (in) fclose(in);
    return rc;
}

bool sl_same_dir(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(a, ra) && realpath(b, rb)) return strcmp(ra, rb) == 0;
    return strcmp(a, b) == 0;
}

/* Whether dir (an existing directory) takes a new file: tried, since access() says yes to root
 * on a read-only file system. errno tells why not. */
static bool takes_files(const char *dir)
{
    char probe[PATH_MAX];
    if (snprintf(probe, sizeof probe, "%s/.sl-probe-XXXXXX", dir) >= (int)sizeof probe)
        return errno = ENAMETOOLONG, false;
    int fd = mkstemp(probe);
    if (fd < 0) return false;
    close(fd);
    unlink(probe);
    return true;
}

static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* path's directory, in place: "a/b/" -> "a", "/a" -> "/", "a" -> ".". */
static void to_parent(char *path)
{
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
        path[n - 1] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(path, 2, ".");
    else
        slash[slash == path] = '\0';
}

int sl_check_output(const char *path, bool is_dir, sl_err *err)
{
    char dir[PATH_MAX];
    if (!path[0]) return sl_fail(err, "an empty path");
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return sl_fail(err, "%s: path too long", path);
    struct stat st;
    bool exists = stat(path, &st) == 0;
    if (exists && is_dir != S_ISDIR(st.st_mode))
        return sl_fail(err, "%s is %s", path, is_dir ? "a file, not a directory" : "a directory, not a file");
    /* The directory that must take a new entry: path itself (an existing directory), else for a
     * file its directory, for a directory its nearest existing ancestor. */
    if (!(is_dir && exists)) {
        to_parent(dir);
        while (is_dir && access(dir, F_OK) != 0 && strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0)
            to_parent(dir);
        if (!is_directory(dir))
            return sl_fail(err, "%s: %s %s", path, dir,
                           access(dir, F_OK) == 0 ? "is not a directory" : "does not exist");
    }
    if (!takes_files(dir)) return sl_fail(err, "%s: cannot write in %s: %s", path, dir, strerror(errno));
    return 0;
}

int sl_check_space(const char *path, unsigned long long need, sl_err *err)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return sl_fail(err, "%s: path too long", path);
    while (access(dir, F_OK) != 0 && strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0)
        to_parent(dir); /* the file system it will be made on */
    struct statvfs fs;
    if (!takes_files(dir)) return sl_fail(err, "cannot write in %s: %s", dir, strerror(errno));
    if (statvfs(dir, &fs) != 0) return sl_fail(err, "%s: cannot tell the free space: %s", dir, strerror(errno));
    unsigned long long free_bytes = (unsigned long long)fs.f_bavail * fs.f_frsize;
    if (free_bytes < need)
        return sl_fail(err, "%s has %.1f MB free but needs %.1f MB", dir, (double)free_bytes / 1e6, (double)need / 1e6);
    return 0;
}

int sl_path_join(char *out, size_t size, const char *dir, const char *rel)
{
    int n = rel[0] == '/' ? snprintf(out, size, "%s", rel) : snprintf(out, size, "%s/%s", dir, rel);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

const char *sl_path_base(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}
