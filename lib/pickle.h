/* pickle.h — a restricted unpickler for PyTorch state dicts: it interprets only the opcodes a
 * pickled dict of tensors uses and builds plain data, never importing or calling anything.
 *
 * Format: Python's pickle (torch.save writes protocol 2), a program for a stack machine. Each
 * instruction is one opcode byte and its operands (integers little-endian); a MARK opens a group
 * that TUPLE, APPENDS and SETITEMS close; the memo keeps values for later BINGETs. The opcodes
 * interpreted here are those of PyTorch's weights-only unpickler (torch/_weights_only_unpickler.py)
 * that plain data and tensors need:
 *
 *   0x80 PROTO u8           '.' STOP                '(' MARK
 *   '}' EMPTY_DICT          ']' EMPTY_LIST          ')' EMPTY_TUPLE        0x8f EMPTY_SET
 *   't' TUPLE (since MARK)  0x85/0x86/0x87 TUPLE1/2/3 (of the top 1, 2, 3 values)
 *   'N' NONE                0x88 NEWTRUE            0x89 NEWFALSE
 *   'J' BININT i32          'K' BININT1 u8          'M' BININT2 u16        'G' BINFLOAT f64 big-endian
 *   0x8a LONG1 u8 n, n bytes two's complement (at most 8 here)
 *   'X' BINUNICODE u32 n, n bytes UTF-8             'U' SHORT_BINSTRING u8 n, n bytes
 *   'q' BINPUT u8 / 'r' LONG_BINPUT u32: memo[i] = top     'h' BINGET u8 / 'j' LONG_BINGET u32: push memo[i]
 *   'a' APPEND / 'e' APPENDS (since MARK) onto a list      's' SETITEM / 'u' SETITEMS (pairs since MARK) into a dict
 *   'c' GLOBAL "module\nname\n"    'R' REDUCE: callable(*args)    'b' BUILD: state onto an object
 *   'Q' BINPERSID: the top value is a persistent id, resolved by the loader (torch: a storage)
 *
 * The only globals are collections.OrderedDict (REDUCE with (): an empty dict; BUILD on it sets
 * attributes such as HF's _metadata, ignored here), torch._utils._rebuild_tensor_v2(storage,
 * storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) (a tensor),
 * torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks) (the tensor) and the
 * torch.<Type>Storage classes (only inside a persistent id). Any other opcode or global, a call of
 * anything else, is refused with its name and byte offset. Persistent ids are
 *
 *   ('storage', torch.<Type>Storage, key, location, numel)                   zip format
 *   ('storage', torch.<Type>Storage, key, location, numel, view)             legacy format
 *
 * where numel counts the storage's elements, location ("cpu", "cuda:0") is ignored, and a legacy
 * view is None or (view_key, offset, numel): a slice of the storage in elements.
 *
 * The state dict is the pickle's top-level dict or, when that holds no tensor, the dict under its
 * "state_dict" or "model_state_dict" key; its other values are ignored. Keys must be unique
 * strings. Every tensor is checked against its storage as declared: shape and strides
 * non-negative with at most SL_MAX_DIMS dimensions, and every element it addresses (offset + sum
 * of (shape[d] - 1) * stride[d], no overflow) inside the storage or view. Whether the storage
 * really holds that many elements is the loader's check (torch_file.h). */
#ifndef SL_PICKLE_H
#define SL_PICKLE_H

#include "err.h"
#include "safetensors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One tensor of a state dict, as the pickle describes it (all counts in elements). */
typedef struct sl_pickle_tensor {
    const char *name;         /* its key in the state dict */
    const char *storage_type; /* "FloatStorage", "HalfStorage", ... */
    int dtype;                /* an sl_dtype, or -1 for a type not computed in (Bool, Byte, Double, ...) */
    size_t elem_size;         /* bytes per element of the storage type */
    const char *storage_key;  /* names the storage's bytes in the file */
    uint64_t storage_numel;   /* the storage's size as its persistent id declares */
    uint64_t offset;          /* the tensor's first element from the storage's start (a view's offset added) */
    int ndim;
    int64_t shape[SL_MAX_DIMS], stride[SL_MAX_DIMS];
    size_t numel;
    size_t at; /* byte offset of its REDUCE, for messages */
} sl_pickle_tensor;

typedef struct sl_pickle sl_pickle;

/* Runs the pickle at data[0, size) up to its STOP (bytes after it are left alone). origin names
 * it in errors (a file, a zip member) and base is added to byte offsets in them (where the pickle
 * starts in that file). Returns NULL and fills err on anything refused. Caller owns the result. */
sl_pickle *sl_pickle_load(const void *data, size_t size, const char *origin, size_t base, sl_err *err);

/* Frees the pickle and everything it describes; accepts NULL and *self == NULL. */
void sl_pickle_destroy(sl_pickle **self);

/* The pickle's length in bytes, STOP included. */
size_t sl_pickle_length(const sl_pickle *self);

/* The tensors of the state dict (above), in the dict's order; owned by the pickle. */
int sl_pickle_tensors(sl_pickle *self, const sl_pickle_tensor **tensors, size_t *count, sl_err *err);

/* The pickled value when it is an integer. */
int sl_pickle_int(const sl_pickle *self, int64_t *out, sl_err *err);

/* The boolean under key when the pickled value is a dict that has one. */
int sl_pickle_dict_bool(const sl_pickle *self, const char *key, bool *out, sl_err *err);

/* The strings of the pickled value when it is a list of strings; owned by the pickle. */
int sl_pickle_strings(sl_pickle *self, const char *const **items, size_t *count, sl_err *err);

#endif
