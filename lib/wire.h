/* wire.h — the messages nodes and clients exchange, and their msgpack encoding (version 2).
 *
 * Every message is one ZeroMQ frame holding one msgpack map with string keys. The codec is
 * driven by one table, WIRE_FIELDS in wire.c (read it with sl_wire_fields): this comment is its
 * readable copy, and test_wire fails when the two disagree on a key, its type or its kinds.
 * Kinds: those that carry the field; "?" marks a kind that may leave it out (the others are
 * refused without it); "all but" names the kinds that never carry it. Keys are written in the
 * order of the table; a float field also accepts a non-negative integer.
 *
 *   key            type          kinds                      meaning
 *   "v"            uint          all                        protocol version: 2 (1 had 64-bit sessions)
 *   "kind"         str           all                        "forward" "result" "error" "end" "ack" "backward"
 *                                                           "save" "load" "update" "hello"
 *   "session"      bin           all                        the sequence's id (a training run's for training
 *                                                           messages): 16 bytes the client or trainer drew
 *                                                           from a cryptographic generator (id.h), opaque and
 *                                                           compared whole; all-zero or another length is
 *                                                           refused; logs show its first 2 bytes only
 *   "step"         uint          all but end, error?        request number within the session
 *   "pos"          uint          forward result             position of the request's first token
 *   "ctx"          uint          forward?                   positions the session will need (KV size)
 *   "want_logits"  bool          forward?                   the result carries every position's logits
 *   "ack"          bool          forward?                   every node acks receipt (back along the chain)
 *   "token"        uint          result                     the sampled token
 *   "ids"          bin           forward?                   token ids, int32 little-endian (to the bottom)
 *   "x"            bin           forward?                   activations [rows, cols] in "dtype" (after the
 *                                                           bottom); a forward carries one of "ids" and "x"
 *   "g"            bin           backward                   gradient [rows, cols] in "dtype" of the receiver's
 *                                                           output, sent back stage by stage
 *   "logits"       bin           result?                    f32 [rows, cols], when want_logits
 *   "shape"        [uint, uint]  backward forward? result?  rows, cols of "x", "g" or "logits"
 *   "dtype"        str           backward hello forward?    "f32" "f16" "bf16": the element type of "x", "g"
 *                                                           (hello: of the activations the sender sends)
 *   "sample"       map           forward?                   {"greedy": bool, "temperature": float64,
 *                                                            "top_k": uint, "top_p": float64, "seed": uint,
 *                                                            "index": uint}: sampling, and the index of the token
 *   "train"        bool          forward?                   a training step: keep what backward needs
 *   "batch"        uint          forward?                   with "train": B sequences, rows = B x T
 *   "update"       bool          backward?                  apply AdamW after this backward
 *   "lr" "wd"      float64       backward? update?          learning rate and weight decay of that update
 *   "scale"        float64       backward? update?          gradients are multiplied by it before the update
 *                                                           (1/K over K micro-batches, times the clip factor)
 *   "gnorm2"       float64       backward?                  when present, each trunk adds the squared norm of
 *                                                           its (scaled) gradients: for global clipping; the
 *                                                           update then comes as an "update" message that
 *                                                           travels the forward path back to the client
 *   "dir"          str           save load ack?             where the node writes (save) or reads (load, to
 *                                                           resume) its part + optimizer state; the ack of a
 *                                                           dry run: that directory as an absolute path
 *   "dry_run"      bool          save?                      only check that the save could be written there
 *                                                           (allowed, writable, room for the part and its
 *                                                           optimizer state); nothing is written, the ack
 *                                                           carries "dir" and "host"
 *   "at_step"      uint          forward? load?             the step the trainer has reached (a training
 *                                                           forward: a trunk whose own count differs, as it
 *                                                           restarted or another run used it, refuses) or
 *                                                           resumes at (load: a trunk opens its save of it)
 *   "loss"         float32       save?                      the loss of the step saved, for the metadata
 *   "node"         str           ack hello error?           the node that sends it
 *   "host"         str           ack?                       the ack of a dry-run save: the host name of the
 *                                                           node's machine
 *   "model"        str           hello                      the sender's model: SHA-256 of its source files
 *   "first"        uint          hello                      the sender's layers [first, last)
 *   "last"         uint          hello
 *   "width"        uint          hello                      the sender's n_embd
 *                                                           (a hello goes to the next stage when a node
 *                                                           starts: it checks that the chain agrees)
 *   "code"         str           error                      "bad_message" "unknown_session" "context_full"
 *                                                           "busy" "forbidden" "chain_mismatch" "out_of_step"
 *                                                           "internal"
 *   "message"      str           error?                     what went wrong, for people
 *   "trace"        str           forward? result?           per-hop timing, asked by a forward carrying it
 *                                                           (empty at first): "node@host a s l;" per hop
 *
 * Unknown keys are ignored (later minor versions may add some); a wrong version or kind, a
 * missing or mistyped field, a value out of the field's bounds, a payload whose byte length is
 * not rows x cols x element size, a width that is not the model's, positions beyond
 * n_positions, or a message over the size cap are each refused with an error naming the field.
 * Decoding never allocates per message: the payloads are views into the received frame. */
#ifndef SL_WIRE_H
#define SL_WIRE_H

#include "dtype.h"
#include "err.h"
#include "id.h"
#include "sampler.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_WIRE_VERSION 2

#define SL_WIRE_TRACE_MAX 2048

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
    SL_MSG_HELLO,
    SL_MSG_KIND_COUNT
} sl_msg_kind;

typedef struct sl_msg {
    sl_msg_kind kind;
    sl_id session;
    uint64_t step;
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
    bool dry_run; /* save: only check that it could be written (the ack says where) */
    bool has_at_step, has_loss;
    uint64_t at_step;
    float loss;
    /* ack, error */
    char node[64];
    char host[256]; /* the ack of a dry-run save: the trunk's host name (its dir, the absolute directory) */
    char code[32];
    /* hello: what the sender is, for its next stage to check that the chain agrees */
    char model[65];       /* the model's identity (SHA-256 of its source files); "" when unknown */
    uint32_t first, last; /* the sender's layers [first, last) */
    uint32_t width;       /* its n_embd */
    char message[512];
    /* forward, result: with --trace, each node the request passed appends "node@host a s l;"
     * (its clock, microseconds: when it received the request, began computing, sent it on) */
    char trace[SL_WIRE_TRACE_MAX];
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

/* ---- the field table the codec is driven by (see the top of this file) ---- */

/* How a field is written on the wire, and what its sl_msg member holds. */
typedef enum sl_wire_type {
    SL_WIRE_T_VERSION, /* uint equal to max (SL_WIRE_VERSION); no member */
    SL_WIRE_T_KIND,    /* str, a kind name; member sl_msg_kind */
    SL_WIRE_T_DTYPE,   /* str "f32" "f16" "bf16"; member sl_dtype */
    SL_WIRE_T_UINT,    /* uint <= max; member an integer of 4 or 8 bytes */
    SL_WIRE_T_ID,      /* bin of SL_ID_BYTES bytes; member sl_id */
    SL_WIRE_T_FLOAT64, /* float64 in the bounds; member float or double */
    SL_WIRE_T_FLOAT32, /* float32 in the bounds; member float */
    SL_WIRE_T_BOOL,    /* bool; member bool */
    SL_WIRE_T_STR,     /* str without NUL, shorter than the member char array */
    SL_WIRE_T_IDS,     /* bin of n_ids int32 LE; member const void * (a view when decoded) */
    SL_WIRE_T_MATRIX,  /* bin of rows x cols in dtype; member const void * (float32 to encode) */
    SL_WIRE_T_LOGITS,  /* bin of rows x cols float32; member const void * */
    SL_WIRE_T_SHAPE,   /* [uint, uint] <= UINT32_MAX; member rows (cols follows it) */
    SL_WIRE_T_MAP      /* map of the sub-fields; no member */
} sl_wire_type;

/* One key of a message. A field is written for a kind that carries it when the kind requires it,
 * else when its flag (if any) is set and its condition (if any) holds. */
typedef struct sl_wire_field {
    const char *key;
    sl_wire_type type;
    unsigned kinds;  /* bit k set: a message of kind k carries the field */
    unsigned need;   /* bit k set: a message of kind k without it is refused */
    size_t at, size; /* the sl_msg member: offsetof and sizeof (0, 0: none) */
    size_t flag;     /* offsetof the sl_msg bool set when it was decoded, tested to encode; 0: none */
    uint64_t max;    /* SL_WIRE_T_UINT: the largest value */
    double lo, hi;   /* SL_WIRE_T_FLOAT*: lo <= value <= hi (lo < value when lo_open) */
    bool lo_open;
    double dflt;                     /* the value when absent; also sent for a member left 0 when 0 is out of bounds */
    bool (*when)(const sl_msg *msg); /* NULL: no condition */
    int (*check)(const sl_msg *msg, sl_err *err); /* what the value must also satisfy; NULL: nothing */
    const struct sl_wire_field *sub;              /* SL_WIRE_T_MAP: its fields (n_sub) */
    size_t n_sub;
} sl_wire_field;

/* The top-level fields, in the order they are written; *count gets their number. */
const sl_wire_field *sl_wire_fields(size_t *count);

/* Whether sl_wire_encode writes field for msg. */
bool sl_wire_sends(const sl_wire_field *field, const sl_msg *msg);

#endif
