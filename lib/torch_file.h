/* torch_file.h — PyTorch checkpoints (torch.save of a state dict: pytorch_model.bin, *.pt) read
 * without running any of their code: the pickle goes through the restricted unpickler (pickle.h)
 * and the storages are read as bytes.
 *
 * Zip format (PyTorch >= 1.6, the default): a zip archive whose members sit under one top
 * directory <archive> (torch names it after the file):
 *
 *   <archive>/data.pkl      the pickled state dict; its storages are persistent ids
 *                           ('storage', torch.<Type>Storage, key, location, numel)
 *   <archive>/data/<key>    each storage's bytes: numel elements, little-endian, nothing else
 *   <archive>/version       the format's version ("3"); <archive>/byteorder ("little", newer torch)
 *
 * torch stores members uncompressed (64-byte aligned); stored and deflated members are read here,
 * through libzip (CRC checked), never with a hand-written inflate.
 *
 * Legacy format (PyTorch < 1.6, or _use_new_zipfile_serialization=False): pickles back to back,
 * then the storages:
 *
 *   pickle   the magic number 0x1950a86a20f9469cfc6c (a LONG1)
 *   pickle   the protocol version, 1001
 *   pickle   sys_info: {"protocol_version": 1001, "little_endian": True, "type_sizes": {...}}
 *   pickle   the state dict; persistent ids ('storage', type, key, location, numel, view)
 *   pickle   the list of storage keys, in the order their records follow
 *   records  per key: u64 little-endian numel, then numel elements, little-endian
 *
 * Checked: every storage a tensor uses has exactly the bytes its persistent id declares (zip
 * member size, legacy record header), a storage key declared twice has one type and size, every
 * tensor lies inside its storage (pickle.h), the legacy records are listed once each and lie
 * inside the file; a zip must open with libzip's consistency checks, its data.pkl be at most
 * 16 MiB, a deflated member claim no more than deflate can produce (1032 bytes per compressed
 * byte) and inflate to no more than it claims, and the members read not overlap (their compressed
 * sizes add up to at most the file). Anything else is refused with the file and what is wrong.
 *
 * Tensors come out contiguous and row-major (a strided one, e.g. a transposed view, is gathered
 * into its own copy; several may share one storage) as F32, F16, BF16, I64 or I32. HF's attention
 * mask buffers (names ending in .attn.bias or .attn.masked_bias) are not weights and are dropped;
 * any other tensor of a type not computed in (bool, uint8, float64, ...) is refused. */
#ifndef SL_TORCH_FILE_H
#define SL_TORCH_FILE_H

#include "err.h"
#include "safetensors.h"

#include <stddef.h>

typedef struct sl_torch_file sl_torch_file;

/* Reads and validates path (either format). NULL and err on failure. Caller owns the result. */
sl_torch_file *sl_torch_open(const char *path, sl_err *err);

/* Frees the file's tensors; accepts NULL and *self == NULL; sets *self to NULL. */
void sl_torch_close(sl_torch_file **self);

const char *sl_torch_path(const sl_torch_file *self);
size_t sl_torch_count(const sl_torch_file *self);
/* The i-th tensor in name order; owned by the file. */
const sl_tensor *sl_torch_at(const sl_torch_file *self, size_t i);
/* The tensor called name, or NULL; owned by the file. */
const sl_tensor *sl_torch_find(const sl_torch_file *self, const char *name);

#endif
