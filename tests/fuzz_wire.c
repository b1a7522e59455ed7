/* fuzz_wire.c — libFuzzer harness for the message decoder (`make fuzz`, seeded by wire_seeds.c).
 * Any input must be refused or decoded without a crash, leak or unbounded allocation; a decoded
 * message must re-encode to a message that decodes to the values the input carried. */
#include "wire_check.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const sl_wire_limits limits = WIRE_CHECK_LIMITS;
    static sl_wire_decoder *dec, *again; /* kept for the whole run, as a node keeps its own */
    if (!dec) dec = sl_wire_decoder_new(), again = sl_wire_decoder_new();
    sl_msg m;
    sl_err err;
    if (sl_wire_decode(dec, data, size, &limits, &m, &err) != 0) return 0;
    msgpack_unpacked in;
    size_t off = 0;
    msgpack_unpacked_init(&in);
    if (msgpack_unpack_next(&in, (const char *)data, size, &off) != MSGPACK_UNPACK_SUCCESS) abort();
    const char *differs = wire_reencode_check(again, &in.data, &m, &limits);
    if (differs) {
        fprintf(stderr, "a decoded %s re-encodes to another message: %s\n", sl_msg_kind_name(m.kind), differs);
        abort();
    }
    msgpack_unpacked_destroy(&in);
    return 0;
}
