/* client.c — request/answer loop of zmq-splitlearn-send over one connection to the bottom node:
 * requests go out on it and every answer (acks, errors, the top's results) comes back on it. */
#include "clock.h"
#include "client.h"

#include "net.h"
#include "wire.h"

#include <assert.h>
#include <czmq.h>
#include <string.h>
#include <time.h>

struct sl_client {
    const sl_topology *topo;
    zsock_t *link;         /* DEALER to the bottom node */
    zactor_t *watch;       /* its dropped connection: the pipeline stopped */
    sl_security *security; /* with security = curve: the client's key pair */
    sl_wire_decoder *decoder;
    msgpack_sbuffer out;
    int32_t *context; /* prompt + generated so far, for re-sends */
    int context_cap;
    int resends;
    char traces[2][SL_WIRE_TRACE_MAX]; /* the prompt's request, the last token's */
};

sl_client *sl_client_new(const sl_topology *topo, const char *cert, sl_err *err)
{
    sl_client *self = calloc(1, sizeof *self);
    if (!self) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    self->topo = topo;
    msgpack_sbuffer_init(&self->out);
    self->decoder = sl_wire_decoder_new();
    sl_net_opts net = sl_net_opts_of(topo);
    net.immediate = true; /* nothing listening: the first send fails, not a long wait */
    net.send_timeout_ms = 1000;
    if (!self->decoder) sl_fail(err, "out of memory");
    if (self->decoder && topo->curve && !cert)
        sl_fail(err, "%s says security = curve: give the client's certificate (--cert FILE.cert_secret)", topo->path);
    if (self->decoder && topo->curve && cert &&
        (self->security = sl_security_new(topo->certs, cert, NULL, 0, NULL, NULL, err)) != NULL) {
        net.security = self->security;
        net.peer = topo->nodes[0].cert;
    }
    if (!self->decoder || (topo->curve && !self->security) ||
        !(self->link = sl_net_connect(ZMQ_DEALER, &net, topo->nodes[0].listen, err))) {
        sl_client_destroy(&self);
        return NULL;
    }
    if (!(self->watch = sl_net_watch(self->link))) {
        sl_fail(err, "cannot watch the connection to the bottom node");
        sl_client_destroy(&self);
    }
    return self;
}

void sl_client_destroy(sl_client **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    zactor_destroy(&(*self)->watch);
    zsock_destroy(&(*self)->link);
    sl_security_destroy(&(*self)->security);
    sl_wire_decoder_destroy(&(*self)->decoder);
    msgpack_sbuffer_destroy(&(*self)->out);
    free((*self)->context);
    free(*self);
    *self = NULL;
}

int sl_client_resends(const sl_client *self) { return self->resends; }
const char *sl_client_trace(const sl_client *self, int which) { return self->traces[which ? 1 : 0]; }

/* Keeps a traced result's hops, closed by the client's receive time. */
static void keep_trace(sl_client *self, const sl_msg *m, bool prompt)
{
    if (!m->trace[0]) return;
    char *to = self->traces[prompt ? 0 : 1];
    int len = snprintf(to, SL_WIRE_TRACE_MAX, "%s", m->trace);
    long long now = sl_wall_us();
    if (len > 0 && len + 64 < SL_WIRE_TRACE_MAX)
        snprintf(to + len, (size_t)(SL_WIRE_TRACE_MAX - len), "client@- %lld %lld %lld;", now, now, now);
}

static int send_msg(sl_client *self, const sl_msg *m, sl_err *err)
{
    if (sl_wire_encode(m, &self->out, err) != 0) return -1;
    const sl_topo_node *bottom = &self->topo->nodes[0];
    if (sl_net_send(self->link, self->out.data, self->out.size, false, bottom->name, err) == 0) return 0;
    sl_fail(
        err,
        "nothing listens at %s, the endpoint of the bottom node %s: start the pipeline with zmq-splitlearn-launch %s",
        bottom->listen, bottom->name, self->topo->path);
    return SL_CLIENT_TIMEOUT;
}

/* Names the first stage in chain order that has not acknowledged the current step. */
static int timeout_error(sl_client *self, const bool *acked, double timeout, sl_err *err)
{
    const sl_topology *t = self->topo;
    for (int i = 0; i < t->n_nodes; i++)
        if (!acked[i])
            return sl_fail(err, "no answer within %g s: stage %d of %d, node %s (%s), did not answer%s%s", timeout,
                           i + 1, t->n_nodes, t->nodes[i].name, t->nodes[i].listen, i ? "; the last that did was " : "",
                           i ? t->nodes[i - 1].name : ""),
                   SL_CLIENT_TIMEOUT;
    sl_fail(err, "no answer within %g s: every stage acknowledged but the top node %s sent no result", timeout,
            t->nodes[t->n_nodes - 1].name);
    return SL_CLIENT_TIMEOUT;
}

/* The bottom node's connection dropped while a request was under way. */
static int pipeline_gone(sl_client *self, sl_err *err)
{
    char endpoint[SL_MAX_ENDPOINT];
    sl_net_watch_event(self->watch, endpoint, sizeof endpoint);
    return sl_fail(err, "the pipeline stopped: the connection to the bottom node %s (%s) dropped",
                   self->topo->nodes[0].name, endpoint);
}

typedef enum { GOT_RESULT, GOT_LOST_SESSION } outcome;

/* Waits for the result of (session, step), collecting acks; -1/-2 on error or timeout. */
static int await_result(sl_client *self, sl_id session, uint64_t step, const sl_client_request *req, int32_t *token,
                        outcome *what, sl_err *err)
{
    bool acked[SL_MAX_NODES] = {false};
    double deadline = sl_now() + req->timeout;
    void *sock = zsock_resolve(self->link);
    for (;;) {
        double left = deadline - sl_now();
        zmq_pollitem_t items[2] = {{.socket = sock, .events = ZMQ_POLLIN},
                                   {.socket = zsock_resolve(self->watch), .events = ZMQ_POLLIN}};
        int rc = left > 0 ? zmq_poll(items, 2, (long)(left * 1000) + 1) : 0;
        if (rc < 0 && zmq_errno() == EINTR) return sl_fail(err, "interrupted");
        if (rc <= 0) return timeout_error(self, acked, req->timeout, err);
        if (items[1].revents & ZMQ_POLLIN) return pipeline_gone(self, err);
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, sock, 0) < 0) {
            zmq_msg_close(&frame);
            continue;
        }
        sl_msg m;
        sl_wire_limits limits = {.vocab_size = (uint32_t)req->vocab_size};
        sl_err bad;
        int ok = sl_wire_decode(self->decoder, zmq_msg_data(&frame), zmq_msg_size(&frame), &limits, &m, &bad) == 0 &&
                 sl_id_equal(m.session, session) && m.step == step;
        int result = 1; /* keep waiting */
        if (ok && m.kind == SL_MSG_ACK) {
            for (int i = 0; i < self->topo->n_nodes; i++)
                if (strcmp(self->topo->nodes[i].name, m.node) == 0) acked[i] = true;
        } else if (ok && m.kind == SL_MSG_ERROR) {
            if (strcmp(m.code, "unknown_session") == 0) {
                *what = GOT_LOST_SESSION;
                sl_fail(err, "node %s: %s", m.node, m.message); /* said if it happens twice */
                result = 0;
            } else {
                result = sl_fail(err, "node %s: %s: %s", m.node, m.code, m.message);
            }
        } else if (ok && m.kind == SL_MSG_RESULT) {
            *token = m.token;
            keep_trace(self, &m, m.pos == 0);
            *what = GOT_RESULT;
            if (req->logits && m.logits && m.rows == (uint32_t)req->n_ids && m.cols == (uint32_t)req->vocab_size)
                memcpy(req->logits, m.logits, (size_t)m.rows * m.cols * sizeof(float));
            result = 0;
        }
        zmq_msg_close(&frame);
        if (result != 1) return result;
    }
}

static int ensure_context(sl_client *self, int n, sl_err *err)
{
    if (n <= self->context_cap) return 0;
    int32_t *more = realloc(self->context, (size_t)n * sizeof *more);
    if (!more) return sl_fail(err, "out of memory");
    self->context = more;
    self->context_cap = n;
    return 0;
}

int sl_client_generate(sl_client *self, const sl_client_request *req, int32_t *out, int *n_out, sl_err *err)
{
    *n_out = 0;
    int total = req->n_ids + req->max_new_tokens;
    if (req->n_positions && total > req->n_positions) total = req->n_positions;
    if (req->n_ids < 1) return sl_fail(err, "empty prompt");
    if (ensure_context(self, req->n_ids + req->max_new_tokens + 1, err) != 0) return -1;
    memcpy(self->context, req->ids, (size_t)req->n_ids * sizeof *req->ids);
    self->traces[0][0] = self->traces[1][0] = '\0';
    int len = req->n_ids;
    sl_id session;
    if (sl_id_new(&session, err) != 0) return -1;
    sl_msg m = {.kind = SL_MSG_FORWARD,
                .session = session,
                .ctx = (uint32_t)total,
                .ack = true,
                .has_sample = true,
                .sample = req->sampling};
    int from = 0, rc = 0;
    bool resent = false;
    for (uint64_t step = 0; rc == 0 && *n_out < req->max_new_tokens; step++) {
        m.step = step;
        m.pos = (uint32_t)from;
        m.ids = self->context + from;
        m.n_ids = (uint32_t)(len - from);
        m.sample_index = (uint64_t)*n_out;
        m.want_logits = req->logits && from == 0 && step == 0;
        m.trace[0] = '\0';
        if (req->trace) {
            long long now = sl_wall_us();
            snprintf(m.trace, sizeof m.trace, "client@- %lld %lld %lld;", now, now, now);
        }
        int32_t token = 0;
        outcome what = GOT_RESULT;
        if ((rc = send_msg(self, &m, err)) != 0 ||
            (rc = await_result(self, session, step, req, &token, &what, err)) != 0)
            break;
        if (what == GOT_LOST_SESSION) {
            if (resent) {
                sl_err_prefix(err, "the session was lost again right after the context was re-sent");
                rc = -1;
                break;
            }
            resent = true;
            self->resends++;
            from = 0; /* the whole context again, transparently */
            continue;
        }
        resent = false;
        if (token == req->eos_token) break;
        out[(*n_out)++] = token;
        self->context[len++] = token;
        if (req->on_token) req->on_token(req->ctx, token);
        if (len > total) break; /* the last token needs no forward: the cache may be full */
        from = len - 1;
    }
    sl_msg end = {.kind = SL_MSG_END, .session = session};
    sl_err ignored;
    if (rc != SL_CLIENT_TIMEOUT) send_msg(self, &end, &ignored); /* nobody to tell otherwise */
    return rc;
}
