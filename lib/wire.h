/* wire.h — the messages nodes and clients exchange, and their msgpack encoding (version 1).
 *
 * Every message is one ZeroMQ frame holding one msgpack map with string keys:
 *
 *   key        type         in kinds                 meaning
 *   "v"        uint         all                      protocol version: 1
 *   "kind"     str          all                      "forward" "result" "error" "end" "ack"
 *                                                    "backward" "save" "load" "update"
 *   "session"  uint         all                      64-bit id the client chose for the sequence
 *   "step"     uint         forward result error ack request number within the session
 *   "pos"      uint         forward result           position of the request's first token
 *   "ctx"      uint         forward                  positions the session will need (KV size)
 *   "ids"      bin          forward (to the bottom)  token ids, int32 little-endian
 *   "x"        bin          forward (after bottom)   activations [rows, cols], little-endian
 *   "shape"    [uint, uint] forward result           rows, cols of "x" or of "logits"
 *   "dtype"    str          forward                  "f32" "f16" "bf16": the element type of "x"
 *   "sample"   map          forward                  {"greedy": bool, "temperature": float,
 *                                                     "top_k": uint, "top_p": float,
 *                                                     "seed": uint, "index": uint}
 *   "want_logits" bool      forward                  the result carries every position's logits
 *   "ack"      bool         forward                  every node acks receipt (back along the chain)
 *   "token"    uint         result                   the sampled token
 *   "logits"   bin          result                   f32 [rows, cols] when want_logits
 *   "train"    bool         forward                  a training step: keep what backward needs
 *   "batch"    uint         forward (train)          B sequences: rows = B x T
 *   "g"        bin          backward                 gradient [rows, cols] of the receiver's output
 *                                                    (in "dtype"), sent back stage by stage
 *   "update"   bool         backward                 apply AdamW after this backward
 *   "lr" "wd"  float        backward                 learning rate and weight decay of that update
 *   "scale"    float        backward update          gradients are multiplied by it before the update
 *                                                    (1/K over K micro-batches, times the clip factor)
 *   "gnorm2"   float        backward                 when present, each trunk adds the squared norm of
 *                                                    its (scaled) gradients: for global clipping; the
 *                                                    update then comes as an "update" message that
 *                                                    travels the forward path back to the client
 *   "dir"      str          save load                where the node writes (save) or reads (load,
 *                                                    to resume) its part + optimizer state
 *   "at_step"  uint         load, forward (train)    the step the trainer resumes at (load: a trunk
 *                                                    opens its save of that step) or has reached
 *                                                    (forward: a trunk whose own count differs, as
 *                                                    it restarted or another run used it, refuses)
 *   "loss"     float        save                     the loss of the step saved, for the metadata
 *   "node"     str          ack error                the node that sends it
 *   "code"     str          error                    "bad_message" "unknown_session"
 *                                                    "context_full" "internal"
 *   "message"  str          error                    what went wrong, for people
 *
 * Unknown keys are ignored (later minor versions may add some); a wrong version or kind, a
 * missing or mistyped field, a payload whose byte length is not rows x cols x element size, a
 * width that is not the model's, positions beyond n_positions, or a message over the size cap
 * are each refused with an error naming the field. Decoding never allocates per message: the
 * payloads are views into the received frame. */
#ifndef SL_WIRE_H
#define SL_WIRE_H

#include "dtype.h"
#include "err.h"
#include "sampler.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_WIRE_VERSION 1

typedef enum sl_msg_kind {
    SL_MSG_FORWARD,
    SL_MSG_RESULT,
    SL_MSG_ERROR,
    SL_MSG_END,
    SL_MSG_ACK,
    SL_MSG_BACKWARD,
    SL_MSG_SAVE,
    SL_MSG_LOAD,
    SL_MSG_UPDATE,
    SL_MSG_KIND_COUNT
} sl_msg_kind;

typedef struct sl_msg {
    sl_msg_kind kind;
    uint64_t session, step;
    uint32_t pos, ctx;
    /* forward: either ids or x */
    const void *ids; /* n_ids int32 LE; decode: view into the frame (maybe unaligned) */
    uint32_t n_ids;
    const void *x; /* decode: rows x cols of dtype, a view; encode: rows x cols float32 */
    uint32_t rows, cols;
    sl_dtype dtype; /* element type of x on the wire */
    bool has_sample;
    sl_sampling sample;
    uint64_t sample_index; /* index of the token being sampled (seeds its draw) */
    bool want_logits, ack;
    /* result */
    int32_t token;
    const void *logits; /* rows x cols f32 (view when decoded; source when encoding); NULL if none */
    /* training */
    bool train, update;
    uint32_t batch;
    float lr, weight_decay, grad_scale;
    bool has_gnorm2;
    double gnorm2;
    char dir[512];
    bool has_at_step, has_loss;
    uint64_t at_step;
    float loss;
    /* ack, error */
    char node[64];
    char code[32];
    char message[512];
} sl_msg;

/* What the receiver's model allows: widths and positions are checked against it. A zero field
 * is not checked. */
typedef struct sl_wire_limits {
    uint32_t n_embd, n_positions, vocab_size;
    size_t max_bytes;
} sl_wire_limits;

const char *sl_msg_kind_name(sl_msg_kind kind);

/* A decoder keeps msgpack's memory between messages. Caller owns the result; NULL when out of
 * memory. */
typedef struct sl_wire_decoder sl_wire_decoder;
sl_wire_decoder *sl_wire_decoder_new(void);
void sl_wire_decoder_destroy(sl_wire_decoder **self);

/* Decodes one message from data (len bytes) into msg; msg's payload pointers point into data,
 * which must outlive their use. Returns 0, or -1 with err naming the field. */
int sl_wire_decode(sl_wire_decoder *self, const void *data, size_t len, const sl_wire_limits *limits, sl_msg *msg,
                   sl_err *err);

/* Encodes msg into buf (cleared first). x is read as float32 and stored as msg->dtype. */
int sl_wire_encode(const sl_msg *msg, msgpack_sbuffer *buf, sl_err *err);

/* Copies the ids of a decoded forward into out (n_ids entries). */
void sl_msg_copy_ids(const sl_msg *msg, int32_t *out);

/* Converts the decoded x (or a backward's g) into float32 out (rows x cols). */
void sl_msg_copy_x(const sl_msg *msg, float *out);

#endif
