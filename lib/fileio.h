/* fileio.h — whole-file reads and atomic writes of small text files (configs, metadata, JSON),
 * directories and the path arithmetic that goes with them. */
#ifndef SL_FILEIO_H
#define SL_FILEIO_H

#include "err.h"

#include <stdbool.h>
#include <stddef.h>

/* Reads a whole file into a NUL-terminated buffer; caller frees. NULL and err on failure, when
 * the file is larger than max_bytes, or when it holds a NUL byte (not text). */
char *sl_read_text_file(const char *path, size_t max_bytes, sl_err *err);

/* Writes text (plus a final newline) to path.tmp, then renames it onto path. */
int sl_write_text_file(const char *path, const char *text, sl_err *err);

/* Creates dir and its missing parents. */
int sl_mkdirs(const char *dir, sl_err *err);

/* Copies the file from to path (any size, any bytes). */
int sl_copy_file(const char *from, const char *path, sl_err *err);

/* Checks, before any work, that an output can be written where the user asked: for a file,
 * that path is not a directory and its directory exists and takes a new file; for a directory
 * (is_dir), that path is a directory or can be made one (its nearest existing ancestor is a
 * directory that takes new entries). Errors name path as given. Creates nothing. */
int sl_check_output(const char *path, bool is_dir, sl_err *err);

/* Checks that the directory path (or, when it does not exist yet, its nearest existing ancestor)
 * takes a new file and that its file system has need bytes free; the error says what is missing
 * (and how much). */
int sl_check_space(const char *path, unsigned long long need, sl_err *err);

/* Whether a and b name the same existing directory (by their real paths; the same string when
 * either does not exist yet). */
bool sl_same_dir(const char *a, const char *b);

/* dir/rel into out, or rel alone when it is absolute; -1 when it does not fit in size bytes. */
int sl_path_join(char *out, size_t size, const char *dir, const char *rel);

/* The last component of path: what follows its last '/'. Points into path. */
const char *sl_path_base(const char *path);

#endif
