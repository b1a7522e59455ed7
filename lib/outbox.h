/* outbox.h — PUSH sockets to the endpoints a node answers (clients' reply_to), connected on
 * first use and kept, the least recently used closed beyond a limit. Sends never block: a
 * client that is gone or not reading loses its message, the node goes on. */
#ifndef SL_OUTBOX_H
#define SL_OUTBOX_H

#include "err.h"
#include "net.h"

#include <stddef.h>

typedef struct sl_outbox sl_outbox;

/* Up to max_sockets connections with net's options (sends never wait). Caller owns it. */
sl_outbox *sl_outbox_new(int max_sockets, const sl_net_opts *net);
void sl_outbox_destroy(sl_outbox **self);

/* Sends one frame to endpoint without blocking. */
int sl_outbox_send(sl_outbox *self, const char *endpoint, const void *data, size_t len, sl_err *err);

#endif
