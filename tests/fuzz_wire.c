/* fuzz_wire.c — libFuzzer harness for the message decoder (`make fuzz`). Any input must be
 * refused or decoded without a crash, leak or unbounded allocation; a decoded message must
 * re-encode and decode to the same fields. */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sl_wire_decoder *dec;
    if (!dec) dec = sl_wire_decoder_new();
    sl_wire_limits limits = {.n_embd = 8, .n_positions = 64, .vocab_size = 100, .max_bytes = 1 << 20};
    sl_msg m;
    sl_err err;
    if (sl_wire_decode(dec, data, size, &limits, &m, &err) != 0) return 0;
    if (m.kind == SL_MSG_FORWARD && m.x) return 0; /* x re-encodes from floats, not bytes */
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    sl_msg again;
    sl_wire_decoder *dec2 = sl_wire_decoder_new();
    if (sl_wire_encode(&m, &buf, &err) != 0 || sl_wire_decode(dec2, buf.data, buf.size, &limits, &again, &err) != 0 ||
        again.kind != m.kind || again.session != m.session)
        abort();
    sl_wire_decoder_destroy(&dec2);
    msgpack_sbuffer_destroy(&buf);
    return 0;
}
