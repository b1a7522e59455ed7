/* ckptstore.c — the checkpoint store's slots (current, prev/, next/): writing a part's save,
 * committing it, and finding the save of a step again. */
#include "ckptstore.h"

#include "fileio.h"
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where a part's checkpoint files are: the current ones, the previous save's, or the next one's
 * while it is written. */
typedef enum { SLOT_CURRENT, SLOT_PREV, SLOT_NEXT } slot;

/* A part's checkpoint files, in the order a reader needs them last: the metadata is written last
 * and removed first, so that metadata present means the files it names are there. */
static const char *const checkpoint_suffixes[3] = {".safetensors", "_optim.safetensors", "_metadata.json"};

/* DIR/<role>[/prev|/next]: where a slot's files are. */
static int slot_dir(const char *dir, sl_role role, slot where, char *out, size_t size, sl_err *err)
{
    static const char *const sub[] = {"", "/prev", "/next"};
    int n = snprintf(out, size, "%s/%s%s", dir, sl_role_name(role), sub[where]);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "%s: checkpoint path too long", dir);
}

/* The stem of a part's checkpoint files: checkpoint_<name>. */
static int checkpoint_stem(const char *name, char *out, size_t size, sl_err *err)
{
    int n = snprintf(out, size, "checkpoint_%s", name);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "part name %s: too long", name);
}

/* SLOT_DIR/checkpoint_<name><suffix>. */
static int checkpoint_path(const char *dir, sl_role role, const char *name, slot where, const char *suffix, char *out,
                           size_t size, sl_err *err)
{
    char sub[PATH_MAX], stem[300];
    if (slot_dir(dir, role, where, sub, sizeof sub, err) != 0 || checkpoint_stem(name, stem, sizeof stem, err) != 0)
        return -1;
    int n = snprintf(out, size, "%s/%s%s", sub, stem, suffix);
    return n >= 0 && (size_t)n < size ? 0 : sl_fail(err, "%s: checkpoint path too long", dir);
}

int sl_part_checkpoint_file(const char *dir, sl_role role, const char *name, char *out, size_t size, sl_err *err)
{
    return checkpoint_path(dir, role, name, SLOT_CURRENT, ".safetensors", out, size, err);
}

unsigned long long sl_checkpoint_room(size_t parameters, bool resumed_there)
{
    const unsigned long long one_save = 12ull * parameters + (64u << 10);
    return (resumed_there ? 1 : 3) * one_save;
}

int sl_part_checkpoint_bytes(const char *dir, sl_role role, const char *name, unsigned long long *bytes, sl_err *err)
{
    *bytes = 0;
    for (slot where = SLOT_CURRENT; where <= SLOT_NEXT; where++)
        for (int i = 0; i < 3; i++) {
            char path[PATH_MAX];
            struct stat st;
            if (checkpoint_path(dir, role, name, where, checkpoint_suffixes[i], path, sizeof path, err) != 0) return -1;
            if (stat(path, &st) == 0) *bytes += (unsigned long long)st.st_size;
        }
    return 0;
}

/* The checkpoint of (role, name) in a slot, if complete: its metadata, a part file of the size
 * it says and, once trained, its optimizer state. */
static int read_checkpoint(const char *dir, sl_role role, const char *name, slot where, sl_part_info *info, sl_err *err)
{
    char meta[PATH_MAX], optim[PATH_MAX];
    struct stat st;
    if (checkpoint_path(dir, role, name, where, "_metadata.json", meta, sizeof meta, err) != 0 ||
        checkpoint_path(dir, role, name, where, "_optim.safetensors", optim, sizeof optim, err) != 0)
        return -1;
    if (access(meta, F_OK) != 0)
        return sl_fail(err, "%s: no such file: no %s part '%s' saved here", meta, sl_role_name(role), name);
    if (sl_part_read_metadata(meta, info, err) != 0) return -1;
    if (stat(info->file, &st) != 0 || (size_t)st.st_size != info->bytes)
        return sl_fail(err, "%s: missing or not the size its metadata says (an unfinished save?)", info->file);
    if (info->step > 0 && access(optim, F_OK) != 0) return sl_fail(err, "%s: missing (an unfinished save?)", optim);
    return 0;
}

sl_part *sl_part_open_checkpoint(const char *dir, sl_role role, const char *name, long step, bool verify, sl_err *err)
{
    sl_part_info now, before;
    sl_err why_now, why_before;
    int rc = read_checkpoint(dir, role, name, SLOT_CURRENT, &now, &why_now);
    if (rc == 0 && (step < 0 || now.step == step)) return sl_part_open_info(&now, verify, err);
    /* A save after it did not finish, here or on another host: the one before. */
    int rc_before = read_checkpoint(dir, role, name, SLOT_PREV, &before, &why_before);
    if (rc_before == 0 && (step < 0 || before.step == step)) return sl_part_open_info(&before, verify, err);
    if (rc == 0)
        sl_fail(err, "%s/%s: its part '%s' was saved at step %ld, not at step %ld (nor is the save before it)", dir,
                sl_role_name(role), name, now.step, step);
    else if (rc_before == 0)
        sl_fail(err, "%s/%s: the last save of part '%s' is unfinished (%s) and the one before is of step %ld, not %ld",
                dir, sl_role_name(role), name, why_now.msg, before.step, step);
    else
        *err = why_now;
    return NULL;
}

/* The metadata members a save adds: {"step", "loss"}, the loss only when finite and to 9
 * significant digits (a float's precision), as every save has written it. NULL when out of memory. */
static cJSON *training_members(long step, double loss)
{
    cJSON *extra = cJSON_CreateObject();
    bool ok = extra && cJSON_AddNumberToObject(extra, "step", (double)step);
    if (ok && isfinite(loss)) {
        char digits[32];
        snprintf(digits, sizeof digits, "%.9g", loss);
        ok = cJSON_AddNumberToObject(extra, "loss", strtod(digits, NULL)) != NULL;
    }
    if (!ok) cJSON_Delete(extra);
    return ok ? extra : NULL;
}

int sl_part_write_checkpoint(sl_params *p, const char *name, sl_role role, const char *dir, long step, double loss,
                             sl_part_info *info, sl_err *err)
{
    char next[PATH_MAX], stem[300];
    if (slot_dir(dir, role, SLOT_NEXT, next, sizeof next, err) != 0 ||
        checkpoint_stem(name, stem, sizeof stem, err) != 0)
        return -1;
    cJSON *extra = training_members(step, loss);
    int rc = extra ? sl_part_write(p, name, role, p->format, next, stem, NULL, extra, info, err)
                   : sl_fail(err, "out of memory");
    cJSON_Delete(extra);
    return rc;
}
/* Puts a slot's files into another, by rename (move) or as hard links (the source stays whole).
 * Metadata present means the files beside it are of its save, so the destination's metadata goes
 * first and the source's comes last; a file the source lacks is removed from the destination. */
static int put_slot(const char *dir, sl_role role, const char *name, slot from, slot to, bool move, sl_err *err)
{
    char src[3][PATH_MAX], dst[3][PATH_MAX];
    for (int i = 0; i < 3; i++)
        if (checkpoint_path(dir, role, name, from, checkpoint_suffixes[i], src[i], sizeof src[i], err) != 0 ||
            checkpoint_path(dir, role, name, to, checkpoint_suffixes[i], dst[i], sizeof dst[i], err) != 0)
            return -1;
    const int metadata = 2;
    if (unlink(dst[metadata]) != 0 && errno != ENOENT)
        return sl_fail(err, "%s: cannot remove: %s", dst[metadata], strerror(errno));
    for (int i = 0; i <= metadata; i++) {
        if (!move && unlink(dst[i]) != 0 && errno != ENOENT) /* link() does not replace */
            return sl_fail(err, "%s: cannot remove: %s", dst[i], strerror(errno));
        bool present = access(src[i], F_OK) == 0;
        if (present && (move ? rename(src[i], dst[i]) : link(src[i], dst[i])) != 0)
            return sl_fail(err, "%s: cannot %s it to %s: %s", src[i], move ? "move" : "link", dst[i], strerror(errno));
        if (!present && move && unlink(dst[i]) != 0 && errno != ENOENT)
            return sl_fail(err, "%s: cannot remove: %s", dst[i], strerror(errno));
    }
    return 0;
}

int sl_part_commit_checkpoint(const char *dir, long base, long step, sl_part_info *info, sl_err *err)
{
    const sl_role role = info->role;
    const char *name = info->name;
    sl_part_info now;
    sl_err ignored;
    char prev_dir[PATH_MAX], next_dir[PATH_MAX];
    if (slot_dir(dir, role, SLOT_PREV, prev_dir, sizeof prev_dir, err) != 0 ||
        slot_dir(dir, role, SLOT_NEXT, next_dir, sizeof next_dir, err) != 0)
        return -1;
    /* The current save becomes the previous one when it is this run's last, complete and older.
     * Linked first, then replaced: at every moment one of the two is a whole save. */
    bool keep = base >= 0 && base < step && read_checkpoint(dir, role, name, SLOT_CURRENT, &now, &ignored) == 0 &&
                now.step == base;
    if (keep && (sl_mkdirs(prev_dir, err) != 0 || put_slot(dir, role, name, SLOT_CURRENT, SLOT_PREV, false, err) != 0))
        return -1;
    if (put_slot(dir, role, name, SLOT_NEXT, SLOT_CURRENT, true, err) != 0) return -1;
    rmdir(next_dir);
    return sl_part_checkpoint_file(dir, role, name, info->file, sizeof info->file, err);
}
