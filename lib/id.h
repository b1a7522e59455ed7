/* id.h — session and run ids: 128 bits from the kernel's cryptographic generator (getrandom,
 * never the seeded sl_rng), so that nobody can guess the id of a session or training run they do
 * not own. An id is compared whole; logs and errors show only its first 16 bits.
 *
 * On the wire an id is a msgpack bin of SL_ID_BYTES bytes, sent in the order of `bytes` (see
 * wire.h); all-zero means "none" and is refused. */
#ifndef SL_ID_H
#define SL_ID_H

#include "err.h"

#include <stdbool.h>
#include <stdint.h>

#define SL_ID_BYTES 16

typedef struct sl_id {
    uint8_t bytes[SL_ID_BYTES];
} sl_id;

/* Draws a fresh id (never all-zero). -1 with err when the kernel gives no randomness. */
int sl_id_new(sl_id *id, sl_err *err);

bool sl_id_equal(sl_id a, sl_id b);

/* Whether id is all-zero: no id. */
bool sl_id_none(sl_id id);

/* Ids are secrets of their owners: logs and errors show only their first 16 bits ("%04x..",
 * SL_ID_SHORT(id)), enough for people to tell them apart. */
#define SL_ID_SHORT(id) ((unsigned)((id).bytes[0] << 8 | (id).bytes[1]))

#endif
