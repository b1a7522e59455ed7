/* client.h — the client side of a pipeline: sends a prompt into the bottom node, receives each
 * sampled token (passed back along the chain from the top), feeds it back, and streams it. Handles a node
 * that lost the session (re-sends the whole context once) and says which stage did not answer
 * when one does not. */
#ifndef SL_CLIENT_H
#define SL_CLIENT_H

#include "sampler.h"
#include "topology.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sl_client sl_client;

/* Connects to the topology's bottom node: the client's only connection, outbound (answers come
 * back on it, so a client behind NAT or a firewall gets them). With security = curve, cert is the
 * client's secret certificate (its name must be in the topology's clients). Caller owns the result. */
sl_client *sl_client_new(const sl_topology *topo, const char *cert, sl_err *err);
void sl_client_destroy(sl_client **self);

typedef struct sl_client_request {
    const int32_t *ids; /* the prompt */
    int n_ids;
    int max_new_tokens;
    sl_sampling sampling;
    int eos_token;                              /* generation stops there; -1: never */
    float *logits;                              /* when not NULL: receives [n_ids, vocab] logits of the prompt */
    int vocab_size;                             /* needed with logits */
    int n_positions;                            /* the model's limit: generation stops there */
    double timeout;                             /* seconds to wait for each answer */
    void (*on_token)(void *ctx, int32_t token); /* called as each token arrives; may be NULL */
    void *ctx;
    bool trace; /* every node records its hop of the prompt's request and of the last token's */
} sl_client_request;

enum { SL_CLIENT_TIMEOUT = -2 };

/* Generates; out (max_new_tokens entries) receives the tokens, *n_out their count. Returns 0,
 * -1 with err (a node's error, or a transport failure) or SL_CLIENT_TIMEOUT with err naming
 * the stage that did not answer. */
int sl_client_generate(sl_client *self, const sl_client_request *req, int32_t *out, int *n_out, sl_err *err);

/* With trace: the hops of the prompt's request (which 0) or of the last token's (1), as wire.h's
 * "trace" field has them, framed by the client's own send and receive times ("client@-"). "" when
 * not traced. Owned by the client until its next generation. */
const char *sl_client_trace(const sl_client *self, int which);

/* Times the client re-sent a whole context because a node had lost the session. */
int sl_client_resends(const sl_client *self);

#endif
