/* node.c — zmq-splitlearn-node: one stage of a pipeline. It loads its part (mmap), listens on a
 * ROUTER socket and reaches its next stage through a DEALER; for every request it runs its layers
 * and sends the activations on, or, at the top, sends the sampled token back the way the request
 * came (answers travel back along the chain to the client's own connection to the bottom). */
#include "clock.h"
#include "cli.h"
#include "cutguard.h"
#include "cpu.h"
#include "fileio.h"
#include "gpt2.h"
#include "net.h"
#include "sampler.h"
#include "session.h"
#include "topology.h"
#include "trunk.h"
#include "../tools/tool.h"
#include "version.h"
#include "wire.h"

#include <czmq.h>
#include <openssl/evp.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>

static const char usage[] =
    "usage: zmq-splitlearn-node TOPOLOGY.ini NODE_NAME [--verify] [--lifeline]\n"
    "       zmq-splitlearn-node --topology-data BASE64 NODE_NAME [--verify] [--lifeline]\n"
    "\n"
    "Runs the stage [node.NODE_NAME] of the topology: role, layers, part, sockets and threads come\n"
    "from its section (config/README.md). Logs one line per event to stderr; prints\n"
    "'NODE_NAME: ready' once it takes messages. Stops cleanly on SIGINT or SIGTERM.\n"
    "  TOPOLOGY.ini          the topology file ('-': read it from standard input)\n"
    "  --topology-data B64   the topology's text in base64 (how zmq-splitlearn-launch ships it to\n"
    "                        another host); relative paths in it are the working directory's\n"
    "  --lifeline            stop, as on SIGTERM, when standard input closes (the launcher's end of\n"
    "                        a pipe, carried by ssh, srun or ip netns exec: no node outlives it)\n"
    "  --verify              recompute the part's SHA-256 before loading it (also: verify = yes)\n"
    "\n"
    "exit status: 0 stopped by a signal or the lifeline, 1 could not start (topology, part,\n"
    "socket), 2 usage error\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Fairness at the bottom: no client (a key, or a connection without CURVE) may hold more than a
 * quarter of the session table or open sessions faster than NEW_SESSIONS_PER_S (a burst of as
 * many), so one client's flood cannot evict or starve another's generation. */
#define MAX_CLIENTS 64
#define NEW_SESSIONS_PER_S 50.0

typedef struct client_budget {
    sl_peer who;
    double tokens, last; /* a token bucket: new sessions it may open now, refilled since last */
} client_budget;

typedef struct node {
    const char *name;
    sl_topology topo;
    const sl_topo_node *self;
    const sl_topo_node *next; /* NULL at the top */
    bool bottom;              /* answers clients: a session belongs to the connection that opened it */
    sl_trunk *trunk;          /* the part's weights and, on a trunk, its training state */
    unsigned generation;      /* of the weights the runner and sessions were made for */
    sl_kern *kern;            /* the linear layers' kernels and threads, shared by every runner of the node */
    sl_runner *stage;
    sl_sessions *sessions;
    sl_sampler *sampler;
    sl_wire_decoder *decoder;
    sl_wire_limits limits;
    sl_net_opts net;
    zsock_t *listen;          /* ROUTER: requests from the previous stage (at the bottom: clients) */
    zsock_t *next_link;       /* DEALER to the next stage: requests on, answers and gradients back */
    zactor_t *next_watch;     /* its dropped connections: the requests in flight there are lost */
    sl_security *security;    /* with security = curve: its key pair and whom it accepts */
    sl_cutguard *guard;       /* the bottom's clip and noise on every row it sends (NULL: none) */
    const sl_topo_node *prev; /* NULL at the bottom */
    const sl_peer *from;      /* the sender of the request being handled (NULL: it came from the next) */
    sl_peer train_from;       /* where a training forward came from: its gradient goes back there */
    FILE *trace;              /* $SL_NODE_TRACE: one line per message received (tests) */
    msgpack_sbuffer out;
    int32_t *ids;       /* (n_positions) */
    float *in, *hidden; /* (n_positions, C) */
    float *logits;      /* (V), or (n_positions, V) while a request wants every position */
    size_t logits_rows;
    long handled, refused, dropped;
    long long arrived_us, started_us; /* the request being handled: received, computing (wall clock) */
    double refusal_second;            /* the second refusals are being counted in */
    long refusals_this_second, refusals_unlogged;
    sl_id hello_session;                /* the hello this node sent its next stage (its answer comes back with it) */
    char chain_error[512];              /* when a neighbour's part does not fit: refused requests say why */
    client_budget budgets[MAX_CLIENTS]; /* at the bottom: how fast each client opened sessions */
} node;

static void log_line(const node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One line on stderr; what it quotes from the network cannot break it into several (control
 * characters are written as '?'). Also called from the ZAP handler's thread: one write a line. */
static void log_line(const node *n, const char *fmt, ...)
{
    char stamp[32], line[2048];
    time_t t = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%H:%M:%S", localtime_r(&t, &tm));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    fprintf(stderr, "%s %s: %s\n", stamp, n->name, line);
}

/* An answer that could not go back: counted, and logged at the 1st, 10th, 100th... */
static void dropped(node *n, const sl_err *err)
{
    if (sl_err_worth_logging(++n->dropped)) log_line(n, "dropped an answer (%ld so far): %s", n->dropped, err->msg);
}

/* Sends msg back towards whoever asked (to: the previous stage's connection or a client's); a
 * failure is logged, never fatal. */
static void answer(node *n, const sl_peer *to, const sl_msg *msg)
{
    sl_err err;
    if (!to || !to->len) return;
    if (sl_wire_encode(msg, &n->out, &err) != 0 || sl_net_send_to(n->listen, to, n->out.data, n->out.size, &err) != 0)
        dropped(n, &err);
}

/* Where answers about session go back to: the connection its requests came from. */
static const sl_peer *peer_of(node *n, sl_id session)
{
    const sl_peer *p = sl_sessions_peer(n->sessions, session);
    return p && p->len ? p : sl_id_equal(session, sl_trunk_run(n->trunk)) && n->train_from.len ? &n->train_from : NULL;
}

/* The request's sender, or the session's when the request came back from the next stage. */
static const sl_peer *asker(node *n, const sl_msg *req) { return n->from ? n->from : peer_of(n, req->session); }

/* Whether this refusal gets a log line: at most REFUSALS_LOGGED a second, so that a flood of bad
 * messages cannot fill the disk; the count of those left out is logged with the next one. */
#define REFUSALS_LOGGED 20
static bool refusal_logged(node *n)
{
    double now = sl_now();
    if (now - n->refusal_second >= 1.0) {
        if (n->refusals_unlogged)
            log_line(n, "%ld more refusals in the last second(s) not logged", n->refusals_unlogged);
        n->refusal_second = now, n->refusals_this_second = 0, n->refusals_unlogged = 0;
    }
    if (n->refusals_this_second++ < REFUSALS_LOGGED) return true;
    n->refusals_unlogged++;
    return false;
}

/* This node's error about (session, step): code, and a message formatted from fmt. */
static sl_msg error_vmsg(const node *n, sl_id session, uint64_t step, const char *code, const char *fmt, va_list ap)
{
    sl_msg e = {.kind = SL_MSG_ERROR, .session = session, .step = step};
    snprintf(e.node, sizeof e.node, "%s", n->name);
    snprintf(e.code, sizeof e.code, "%s", code);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    return e;
}

static sl_msg error_msg(const node *n, sl_id session, uint64_t step, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static sl_msg error_msg(const node *n, sl_id session, uint64_t step, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_msg e = error_vmsg(n, session, step, code, fmt, ap);
    va_end(ap);
    return e;
}

static void reply_error(node *n, const sl_msg *req, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(node *n, const sl_msg *req, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_msg e = error_vmsg(n, req->session, req->step, code, fmt, ap);
    va_end(ap);
    n->refused++;
    if (refusal_logged(n))
        log_line(n, "session %04x.. step %llu: %s: %s", SL_ID_SHORT(req->session), (unsigned long long)req->step, code,
                 e.message);
    answer(n, asker(n, req), &e);
}

/* Encodes msg and pushes it to stage peer; blocks at most the send timeout (backpressure). */
static int send_to(node *n, zsock_t *sock, const sl_topo_node *peer, const sl_msg *msg, sl_err *err)
{
    char who[SL_MAX_ENDPOINT + 160];
    snprintf(who, sizeof who, "stage %s (%s)", peer->name, peer->listen);
    if (sl_wire_encode(msg, &n->out, err) != 0) return -1;
    return sl_net_send(sock, n->out.data, n->out.size, false, who, err);
}

/* Pushes msg (re-encoded) to the next stage. */
static int pass_on(node *n, const sl_msg *msg, sl_err *err) { return send_to(n, n->next_link, n->next, msg, err); }

/* Whether the asking client may open one more session now (answered "busy" when not). */
static bool within_budget(node *n, const sl_msg *req)
{
    int held = sl_sessions_count_peer(n->sessions, n->from),
        cap = n->topo.max_sessions / 4 > 0 ? n->topo.max_sessions / 4 : 1;
    if (held >= cap) {
        reply_error(n, req, "busy", "this client holds %d sessions, the most one client may (end one first)", held);
        return false;
    }
    double now = sl_now();
    client_budget *b = &n->budgets[0];
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (sl_peer_same(&n->budgets[i].who, n->from) && n->budgets[i].who.len) {
            b = &n->budgets[i];
            break;
        }
        if (n->budgets[i].last < b->last) b = &n->budgets[i]; /* else the longest quiet slot is reused */
    }
    if (!sl_peer_same(&b->who, n->from) || !b->who.len)
        *b = (client_budget){.who = *n->from, .tokens = NEW_SESSIONS_PER_S, .last = now};
    b->tokens += (now - b->last) * NEW_SESSIONS_PER_S;
    if (b->tokens > NEW_SESSIONS_PER_S) b->tokens = NEW_SESSIONS_PER_S;
    b->last = now;
    if (b->tokens < 1) {
        reply_error(n, req, "busy", "this client opens sessions faster than %.0f a second", NEW_SESSIONS_PER_S);
        return false;
    }
    b->tokens -= 1;
    return true;
}

/* The session's cache, positioned at req->pos: opened at position 0, rewound when the client
 * re-sends earlier positions, NULL (answered) when this node lost the session. */
static sl_kv *session_for(node *n, const sl_msg *req, int tokens)
{
    double t = sl_now();
    sl_kv *kv = sl_sessions_find(n->sessions, req->session, t);
    sl_peer *owner = sl_sessions_peer(n->sessions, req->session);
    if (kv && n->bottom && owner->len && !sl_peer_same(owner, n->from)) {
        reply_error(n, req, "bad_message", "this session belongs to another client");
        return NULL;
    }
    if (kv && (int)req->pos <= sl_kv_len(kv) && (int)req->pos + tokens <= sl_kv_capacity(kv)) {
        sl_kv_truncate(kv, (int)req->pos);
        *owner = *n->from; /* a restarted previous stage reconnects under another id */
        return kv;
    }
    if (req->pos != 0) {
        reply_error(n, req, "unknown_session",
                    "%s does not hold positions 0..%u of this session (restarted or "
                    "evicted); re-send the whole context",
                    n->name, req->pos - 1);
        return NULL;
    }
    if (n->bottom && !within_budget(n, req)) return NULL;
    int ctx = req->ctx > (uint32_t)tokens ? (int)req->ctx : tokens;
    sl_id evicted;
    sl_err err;
    if (!(kv = sl_sessions_open(n->sessions, req->session, ctx, t, &evicted, &err))) {
        reply_error(n, req, "internal", "cannot open a session: %s", err.msg);
        return NULL;
    }
    *sl_sessions_peer(n->sessions, req->session) = *n->from;
    if (!sl_id_none(evicted)) log_line(n, "session %04x.. evicted (least recently used)", SL_ID_SHORT(evicted));
    log_line(n, "session %04x.. opened (%d positions, %d sessions)", SL_ID_SHORT(req->session), ctx,
             sl_sessions_count(n->sessions));
    return kv;
}

/* Appends this node's hop to a traced request's trace (see wire.h "trace"); a full trace stays as
 * it is. */
static void add_hop(const node *n, const sl_msg *req, char *trace, size_t size)
{
    if (!req->trace[0]) return;
    char hop[256];
    int len = snprintf(hop, sizeof hop, "%s@%s %lld %lld %lld;", n->name, n->self->host, n->arrived_us, n->started_us,
                       sl_wall_us());
    size_t used = strlen(req->trace);
    if (trace != req->trace) snprintf(trace, size, "%s", req->trace);
    if (len > 0 && used + (size_t)len < size) memcpy(trace + used, hop, (size_t)len + 1);
}

static void run_top(node *n, sl_msg *req, sl_kv *kv, int T)
{
    const int V = sl_trunk_params(n->trunk)->cfg.vocab_size;
    sl_err err;
    sl_output which = req->want_logits ? SL_OUT_LOGITS_ALL : SL_OUT_LOGITS_LAST;
    if (req->want_logits && (size_t)T > n->logits_rows) {
        float *more = realloc(n->logits, (size_t)T * V * sizeof(float));
        if (!more) {
            reply_error(n, req, "internal", "out of memory for %d rows of logits", T);
            return;
        }
        n->logits = more;
        n->logits_rows = (size_t)T;
    }
    if (sl_runner_forward(n->stage, kv, T, NULL, n->in, n->logits, which, &err) != 0) {
        reply_error(n, req, "context_full", "%s", err.msg);
        return;
    }
    const float *last = n->logits + (req->want_logits ? (size_t)(T - 1) * V : 0);
    sl_sampler_configure(n->sampler, req->has_sample ? &req->sample : &SL_SAMPLING_GREEDY);
    sl_msg res = {.kind = SL_MSG_RESULT,
                  .session = req->session,
                  .step = req->step,
                  .pos = req->pos,
                  .token = sl_sampler_next(n->sampler, last, req->sample_index)};
    if (req->want_logits) {
        res.logits = n->logits;
        res.rows = (uint32_t)T;
        res.cols = (uint32_t)V;
    }
    add_hop(n, req, res.trace, sizeof res.trace);
    answer(n, n->from, &res);
}

static void handle_forward(node *n, sl_msg *req)
{
    if (n->chain_error[0]) {
        reply_error(n, req, "chain_mismatch", "%s", n->chain_error);
        return;
    }
    n->started_us = sl_wall_us();
    const sl_config *cfg = &sl_trunk_params(n->trunk)->cfg;
    bool bottom = sl_trunk_params(n->trunk)->embed;
    if (bottom != (req->ids != NULL)) {
        reply_error(n, req, "bad_message", "%s takes %s", n->name,
                    bottom ? "token ids (\"ids\")" : "activations (\"x\")");
        return;
    }
    int T = bottom ? (int)req->n_ids : (int)req->rows;
    if (req->ack) {
        sl_msg ack = {.kind = SL_MSG_ACK, .session = req->session, .step = req->step};
        snprintf(ack.node, sizeof ack.node, "%s", n->name);
        answer(n, n->from, &ack);
    }
    sl_kv *kv = session_for(n, req, T);
    if (!kv) return;
    sl_err err;
    if (bottom) {
        sl_msg_copy_ids(req, n->ids);
        if (sl_runner_forward(n->stage, kv, T, n->ids, NULL, n->hidden, SL_OUT_HIDDEN, &err) != 0) {
            reply_error(n, req, "bad_message", "%s", err.msg);
            return;
        }
        if (n->guard && sl_cutguard_forward(n->guard, n->hidden, T, false, &err) != 0) { /* privacy: leaves defended */
            reply_error(n, req, "internal", "%s", err.msg);
            return;
        }
    } else {
        sl_msg_copy_x(req, n->in);
        if (!n->next) {
            run_top(n, req, kv, T);
            return;
        }
        if (sl_runner_forward(n->stage, kv, T, NULL, n->in, n->hidden, SL_OUT_HIDDEN, &err) != 0) {
            reply_error(n, req, "context_full", "%s", err.msg);
            return;
        }
    }
    sl_msg fwd = *req;
    add_hop(n, req, fwd.trace, sizeof fwd.trace);
    fwd.ids = NULL;
    fwd.n_ids = 0;
    fwd.x = n->hidden;
    fwd.rows = (uint32_t)T;
    fwd.cols = (uint32_t)cfg->n_embd;
    fwd.dtype = n->topo.activations;
    if (pass_on(n, &fwd, &err) != 0) {
        reply_error(n, req, "internal", "%s", err.msg);
        return;
    }
    sl_sessions_set_pending(n->sessions, req->session, true, req->step);
}

/* ---- training: trunks train here (lib/trunk.c); the bottom and the top stay with the trainer ---- */

/* A fresh runner and session table when the trunk's weights moved: cached keys and values belong
 * to the weights they were computed with. */
static int follow_weights(node *n, sl_err *err)
{
    unsigned generation = sl_trunk_generation(n->trunk);
    if (n->stage && generation == n->generation) return 0;
    sl_runner_destroy(&n->stage);
    sl_sessions_destroy(&n->sessions);
    const sl_params *p = sl_trunk_params(n->trunk);
    n->stage = sl_runner_new(p, 128, n->kern, err);
    n->sessions = sl_sessions_new(p, n->topo.max_sessions, n->topo.idle_timeout, n->self->kv);
    n->generation = generation;
    return n->stage && n->sessions ? 0 : sl_fail(err, "out of memory");
}

/* Lines lib/ hands over: the trunk's events, and the ZAP handler's refusals (from its thread: one
 * write a line). */
static void log_event(void *ctx, const char *line) { log_line(ctx, "%s", line); }

/* Sends a trunk's reply where the protocol says: on to the next stage, back to the stage the
 * training forward came from, or to whoever asked (an ack of save or load). */
static int send_trunk_reply(node *n, const sl_msg *req, const sl_msg *reply, sl_trunk_to to, sl_err *err)
{
    if (req->kind == SL_MSG_FORWARD) n->train_from = *n->from;
    if (to == SL_TRUNK_NEXT) return pass_on(n, reply, err);
    answer(n, to == SL_TRUNK_PREV ? &n->train_from : n->from, reply);
    return 0;
}

static void handle_training(node *n, const sl_msg *req)
{
    sl_msg reply;
    sl_trunk_to to;
    sl_err err;
    int rc = sl_trunk_handle(n->trunk, req, &reply, &to, &err);
    if (rc == 0 && follow_weights(n, &err) != 0) rc = SL_TRUNK_INTERNAL;
    if (rc == 0 && send_trunk_reply(n, req, &reply, to, &err) != 0) rc = SL_TRUNK_INTERNAL;
    if (rc == 0 && sl_trunk_finish(n->trunk, &err) != 0) rc = SL_TRUNK_INTERNAL; /* after sending: overlap */
    if (rc != 0)
        reply_error(n, req,
                    rc == SL_TRUNK_BAD           ? "bad_message"
                    : rc == SL_TRUNK_OUT_OF_STEP ? "out_of_step"
                                                 : "internal",
                    "%s", err.msg);
}

/* Whether the sender may send msg here, answered when not: training only where the topology says
 * train = yes; with CURVE, training from a trainers key (or relayed by the previous stage),
 * save and load from a trainers key only, generation from the previous stage (at the bottom: the
 * clients, whom the ZAP handler alone lets in). */
static bool allowed(node *n, const sl_msg *msg)
{
    bool training = sl_trunk_takes(msg);
    if (training && !n->self->train) {
        reply_error(n, msg, "forbidden",
                    "%s does not train: its topology says train = no (set train = yes to allow it)", n->name);
        return false;
    }
    if (!n->security) return true;
    const char *name = sl_security_name_of(n->security, n->from->key);
    bool from_prev = name && n->prev && !strcmp(name, n->prev->cert);
    bool from_trainer = name && sl_party_listed(&n->topo.trainers, name);
    bool ok = n->bottom  ? !training
              : training ? from_trainer || (from_prev && msg->kind != SL_MSG_SAVE && msg->kind != SL_MSG_LOAD)
                         : from_prev;
    if (!ok)
        reply_error(n, msg, "forbidden", "%s does not take '%s' messages from %s", n->name, sl_msg_kind_name(msg->kind),
                    name ? name : "this key");
    return ok;
}

/* Tells the next stage what this node is, so that it can check that the chain agrees (its answer
 * comes back to handle_from_next). Sent at start and whenever the next stage comes back. */
static void say_hello(node *n)
{
    const sl_part_info *info = sl_trunk_info(n->trunk);
    sl_msg hello = {.kind = SL_MSG_HELLO,
                    .session = n->hello_session,
                    .first = (uint32_t)info->first,
                    .last = (uint32_t)info->last,
                    .width = (uint32_t)info->cfg.n_embd,
                    .dtype = n->topo.activations};
    snprintf(hello.node, sizeof hello.node, "%s", n->name);
    snprintf(hello.model, sizeof hello.model, "%s", info->model);
    sl_err err;
    if (pass_on(n, &hello, &err) != 0) log_line(n, "cannot greet the next stage: %s", err.msg);
}

/* A previous stage's hello: its part must end where this one starts, be of the same model and
 * width, and send the activations this node's topology expects. */
static void check_hello(node *n, const sl_msg *hello)
{
    const sl_part_info *mine = sl_trunk_info(n->trunk);
    char why[400] = "";
    if ((int)hello->last != mine->first)
        snprintf(why, sizeof why, "its part ends at layer %u but this node's starts at layer %d", hello->last,
                 mine->first);
    else if (hello->model[0] && mine->model[0] && strcmp(hello->model, mine->model))
        snprintf(why, sizeof why, "its part was cut from another model (%.12s.. here %.12s..)", hello->model,
                 mine->model);
    else if ((int)hello->width != mine->cfg.n_embd)
        snprintf(why, sizeof why, "its width is %u, this node's %d", hello->width, mine->cfg.n_embd);
    else if (hello->dtype != n->topo.activations)
        snprintf(why, sizeof why, "it sends %s activations, this node's topology says %s", sl_dtype_lower(hello->dtype),
                 sl_dtype_lower(n->topo.activations));
    if (!why[0]) {
        log_line(n, "the chain agrees with the previous stage %s (layers %u-%u)", hello->node, hello->first,
                 hello->last);
        sl_msg ok = {.kind = SL_MSG_ACK, .session = hello->session, .step = hello->step};
        snprintf(ok.node, sizeof ok.node, "%s", n->name);
        answer(n, n->from, &ok);
        return;
    }
    snprintf(n->chain_error, sizeof n->chain_error, "the chain does not agree: [node.%s] -> [node.%s]: %s", hello->node,
             n->name, why);
    log_line(n, "%s", n->chain_error);
    sl_msg e = error_msg(n, hello->session, hello->step, "chain_mismatch", "%s", n->chain_error);
    answer(n, n->from, &e);
}

/* The next stage's answer to this node's hello. */
static void hello_answered(node *n, const sl_msg *msg)
{
    if (msg->kind == SL_MSG_ACK) {
        log_line(n, "the chain agrees with the next stage %s", msg->node);
        return;
    }
    snprintf(n->chain_error, sizeof n->chain_error, "%s", msg->message);
    log_line(n, "%s", n->chain_error);
}

/* What comes back from the next stage: a backward's gradient (trained here), or an answer for a
 * session or training run that this node passes back the way its requests came (as received). */
static void handle_from_next(node *n, const sl_msg *msg, const void *data, size_t len)
{
    sl_err err;
    if (sl_id_equal(msg->session, n->hello_session) && (msg->kind == SL_MSG_ACK || msg->kind == SL_MSG_ERROR)) {
        hello_answered(n, msg);
    } else if (msg->kind == SL_MSG_BACKWARD) {
        handle_training(n, msg);
    } else if (msg->kind == SL_MSG_RESULT || msg->kind == SL_MSG_ACK || msg->kind == SL_MSG_ERROR) {
        const sl_peer *to = peer_of(n, msg->session);
        if (msg->kind != SL_MSG_ACK) sl_sessions_set_pending(n->sessions, msg->session, false, 0);
        if (to && sl_net_send_to(n->listen, to, data, len, &err) != 0) dropped(n, &err);
    } else {
        log_line(n, "the next stage sent a '%s' message: dropped", sl_msg_kind_name(msg->kind));
    }
}

/* One message: from the previous stage or a client (from), or back from the next stage (NULL). */
static void handle(node *n, const sl_peer *from, const void *data, size_t len)
{
    sl_msg msg;
    sl_err err;
    n->from = from;
    if (sl_wire_decode(n->decoder, data, len, &n->limits, &msg, &err) != 0) {
        /* msg holds what was read before the bad field: answer when we know where to. */
        msg.kind = SL_MSG_ERROR;
        reply_error(n, &msg, "bad_message", "%s", err.msg);
        return;
    }
    n->handled++;
    if (n->trace) {
        fprintf(n->trace, "%s ids=%d x=%d train=%d\n", sl_msg_kind_name(msg.kind), msg.ids != NULL, msg.x != NULL,
                msg.train);
        fflush(n->trace);
    }
    if (!from) {
        handle_from_next(n, &msg, data, len);
    } else if (msg.kind == SL_MSG_BACKWARD) {
        reply_error(n, &msg, "bad_message", "a backward comes from the next stage, not to %s's listen socket", n->name);
    } else if (msg.kind == SL_MSG_HELLO) {
        check_hello(n, &msg);
    } else if (!allowed(n, &msg)) {
        return;
    } else if (sl_trunk_takes(&msg)) {
        handle_training(n, &msg);
    } else if (msg.kind == SL_MSG_FORWARD) {
        handle_forward(n, &msg);
    } else if (msg.kind == SL_MSG_END) {
        if (sl_sessions_close(n->sessions, msg.session))
            log_line(n, "session %04x.. closed (%d open)", SL_ID_SHORT(msg.session), sl_sessions_count(n->sessions));
        if (n->next && pass_on(n, &msg, &err) != 0) log_line(n, "%s", err.msg);
    } else {
        reply_error(n, &msg, "bad_message", "%s does not take '%s' messages", n->name, sl_msg_kind_name(msg.kind));
    }
}

/* The node's key pair (certs/CERT.cert_secret, on this host only) and whom it lets connect: the
 * clients at the bottom, elsewhere the previous stage and, where training is allowed, trainers. */
static int open_security(node *n, sl_err *err)
{
    const char *accept[SL_MAX_PARTIES + 1];
    int count = 0;
    const sl_party_list *extra = n->bottom ? &n->topo.clients : n->self->train ? &n->topo.trainers : NULL;
    if (n->prev) accept[count++] = n->prev->cert;
    for (int i = 0; extra && i < extra->n; i++)
        accept[count++] = extra->names[i];
    char secret[PATH_MAX + 96];
    snprintf(secret, sizeof secret, "%s/%s.cert_secret", n->topo.certs, n->self->cert);
    if (!(n->security = sl_security_new(n->topo.certs, secret, accept, count, log_event, n, err))) return -1;
    n->net.security = n->security;
    return 0;
}

static int open_sockets(node *n, sl_err *err)
{
    n->net = sl_net_opts_of(&n->topo);
    if (n->topo.curve && open_security(n, err) != 0) return -1;
    if (!n->topo.curve && !sl_endpoint_is_local(n->self->listen))
        log_line(n,
                 "warning: %s is not a loopback address and security = none: anyone who reaches it can read and "
                 "send everything (set security = curve, see README: Security)",
                 n->self->listen);
    sl_net_opts listen = n->net;
    if (n->bottom) listen.answers = SL_NET_CLIENT_ANSWERS; /* its peers are clients */
    if (!(n->listen = sl_net_bind(ZMQ_ROUTER, &listen, n->self->listen, err))) return -1;
    if (!n->next) return 0;
    n->net.peer = n->next->cert;
    if (!(n->next_link = sl_net_connect(ZMQ_DEALER, &n->net, n->next->listen, err))) return -1;
    if (!(n->next_watch = sl_net_watch(n->next_link))) return sl_fail(err, "cannot watch the next stage's connection");
    if (sl_id_new(&n->hello_session, err) != 0) return -1;
    say_hello(n);
    return 0;
}

/* The topology from a file, or from the launcher's base64 text (data). */
static int load_topology(node *n, const char *path, const char *data, sl_err *err)
{
    if (!data) return sl_topology_load(path, &n->topo, true, err);
    size_t len = strlen(data);
    unsigned char *text = malloc(len / 4 * 3 + 4);
    if (!text) return sl_fail(err, "out of memory");
    int n_bytes = len % 4 == 0 ? EVP_DecodeBlock(text, (const unsigned char *)data, (int)len) : -1;
    int rc = n_bytes < 0 ? sl_fail(err, "--topology-data is not base64") : 0;
    if (rc == 0) {
        text[n_bytes] = '\0'; /* padding decodes to NULs: the text ends at the first */
        rc = sl_topology_parse((const char *)text, "(topology from the launcher)", &n->topo, true, err);
    }
    free(text);
    return rc;
}

static int start(node *n, const char *topology, const char *topology_data, bool verify, sl_err *err)
{
    if (load_topology(n, topology, topology_data, err) != 0) return -1;
    if (!(n->self = sl_topology_node(&n->topo, n->name))) return sl_fail(err, "%s has no [node.%s]", topology, n->name);
    int index = sl_topology_index(&n->topo, n->self);
    n->next = index + 1 < n->topo.n_nodes ? &n->topo.nodes[index + 1] : NULL;
    n->bottom = index == 0;
    n->prev = index > 0 ? &n->topo.nodes[index - 1] : NULL;
    const char *root = n->topo.checkpoint_root[0] ? n->topo.checkpoint_root : ".";
    if (sl_mkdirs(root, err) != 0) return -1;
    char root_dir[PATH_MAX];
    if (!realpath(root, root_dir)) return sl_fail(err, "checkpoint_root %s: %s", root, strerror(errno));
    const char *trace = getenv("SL_NODE_TRACE");
    if (trace && *trace) n->trace = fopen(trace, "a");
    const int threads = n->self->threads ? n->self->threads : sl_cpu_count(); /* counted before pinning */
    if (sl_threads_setup(n->self->threads, n->self->pin, err) != 0) return -1;
    if (!(n->kern = sl_kern_new(threads, n->self->pin, SL_KERN_AUTO, err))) return -1;
    sl_trunk_opts to = {.name = n->name,
                        .parts = n->topo.parts,
                        .first = n->self->first,
                        .last = n->self->last,
                        .verify = verify || n->topo.verify,
                        .max_train_tokens = n->topo.max_train_tokens,
                        .max_checkpoint = n->self->max_checkpoint,
                        .root = root_dir,
                        .activations = n->topo.activations,
                        .log = log_event,
                        .log_ctx = n};
    if (!(n->trunk = sl_trunk_new(&to, err)) || follow_weights(n, err) != 0) return -1;
    const sl_config *cfg = &sl_trunk_params(n->trunk)->cfg;
    n->sampler = sl_sampler_new(&SL_SAMPLING_GREEDY, cfg->vocab_size);
    n->decoder = sl_wire_decoder_new();
    n->ids = malloc((size_t)cfg->n_positions * sizeof *n->ids);
    n->in = malloc((size_t)cfg->n_positions * cfg->n_embd * sizeof(float));
    n->hidden = malloc((size_t)cfg->n_positions * cfg->n_embd * sizeof(float));
    n->logits = malloc((size_t)cfg->vocab_size * sizeof(float));
    n->logits_rows = 1;
    sl_cut_defence defence = sl_topology_bottom_defence(&n->topo); /* privacy: fresh noise from getrandom */
    if (n->bottom && sl_cut_defence_active(defence) && !(n->guard = sl_cutguard_new(defence, cfg->n_embd, NULL, err)))
        return -1;
    if (!n->stage || !n->sessions || !n->sampler || !n->decoder || !n->ids || !n->in || !n->hidden || !n->logits)
        return sl_fail(err, "out of memory");
    n->limits = (sl_wire_limits){.n_embd = (uint32_t)cfg->n_embd,
                                 .n_positions = (uint32_t)cfg->n_positions,
                                 .vocab_size = (uint32_t)cfg->vocab_size,
                                 .max_bytes = n->topo.max_message};
    msgpack_sbuffer_init(&n->out);
    return open_sockets(n, err);
}

/* Whether standard input reached its end (what it carries is read and dropped). */
static bool lifeline_closed(void)
{
    char drain[256];
    ssize_t got = read(STDIN_FILENO, drain, sizeof drain);
    return got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN);
}

/* Tells the client of a request that was in flight beyond this node that it was lost, as a lost
 * session: the client re-sends the whole context, which waits here until the next stage is back. */
static void lost_request(void *ctx, sl_id session, uint64_t step)
{
    node *n = ctx;
    sl_msg e = error_msg(n, session, step, "unknown_session",
                         "the next stage %s dropped its connection with this request; re-send the whole context",
                         n->next->name);
    answer(n, peer_of(n, session), &e);
}

/* The connection to the next stage dropped (it stopped or restarted): its requests are lost. */
static void next_stage_lost(node *n)
{
    char endpoint[SL_MAX_ENDPOINT];
    sl_net_watch_event(n->next_watch, endpoint, sizeof endpoint);
    int lost = sl_sessions_take_pending(n->sessions, lost_request, n);
    log_line(n, "lost the connection to the next stage %s (%s): %d request%s in flight re-sent by their clients",
             n->next->name, endpoint, lost, lost == 1 ? "" : "s");
    say_hello(n); /* to whoever comes back there */
}

/* A message over max_message_mb: dropped unread, logged with its sender's address (rate-limited). */
static void too_big(node *n, zmq_msg_t *msg)
{
    const char *from = zmq_msg_gets(msg, "Peer-Address");
    n->refused++;
    if (refusal_logged(n))
        log_line(n, "refused a message of %zu bytes from %s: over max_message_mb = %g", zmq_msg_size(msg),
                 from ? from : "an unknown address", (double)n->topo.max_message / 1048576.0);
}

/* Handles every message waiting on sock (the listen socket when routed, else the next stage's). */
static void drain_socket(node *n, zsock_t *sock, bool routed)
{
    while (!stop_requested) {
        zmq_msg_t msg;
        sl_peer from;
        sl_err err;
        zmq_msg_init(&msg);
        int rc = sl_net_recv(sock, routed ? &from : NULL, &msg, &err);
        n->arrived_us = sl_wall_us();
        if (rc == 0 && zmq_msg_size(&msg) > n->topo.max_message)
            too_big(n, &msg);
        else if (rc == 0)
            handle(n, routed ? &from : NULL, zmq_msg_data(&msg), zmq_msg_size(&msg));
        if (rc < 0) log_line(n, "dropped %s", err.msg);
        zmq_msg_close(&msg);
        if (rc == 1) break;
    }
}

/* Serves until a signal or, with lifeline, until standard input closes. */
static void serve(node *n, bool lifeline)
{
    zmq_pollitem_t items[4] = {{.socket = zsock_resolve(n->listen), .events = ZMQ_POLLIN},
                               {.fd = STDIN_FILENO, .events = ZMQ_POLLIN},
                               {.socket = n->next_link ? zsock_resolve(n->next_link) : NULL, .events = ZMQ_POLLIN},
                               {.socket = n->next_watch ? zsock_resolve(n->next_watch) : NULL, .events = ZMQ_POLLIN}};
    double last_expiry = sl_now();
    while (!stop_requested) {
        if (!lifeline) items[1].fd = -1; /* poll ignores a negative fd */
        int rc = zmq_poll(items, n->next_link ? 4 : 2, 200);
        if (rc < 0 && zmq_errno() != EINTR) break;
        if (lifeline && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) && lifeline_closed()) {
            log_line(n, "standard input closed (the launcher is gone): stopping");
            break;
        }
        if (rc > 0 && (items[2].revents & ZMQ_POLLIN)) drain_socket(n, n->next_link, false);
        if (rc > 0 && (items[3].revents & ZMQ_POLLIN)) next_stage_lost(n);
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) drain_socket(n, n->listen, true);
        double t = sl_now();
        if (t - last_expiry > 1.0) {
            sl_id first = {{0}};
            int gone = sl_sessions_expire(n->sessions, t, &first);
            if (gone) log_line(n, "%d idle session(s) expired (first %04x..)", gone, SL_ID_SHORT(first));
            sl_err err;
            if (sl_trunk_expire(n->trunk, t, n->topo.idle_timeout, &err) < 0 || follow_weights(n, &err) != 0)
                log_line(n, "cannot free an idle run's training state: %s", err.msg);
            last_expiry = t;
        }
    }
}

static void shutdown_node(node *n)
{
    zactor_destroy(&n->next_watch);
    zsock_destroy(&n->listen);
    zsock_destroy(&n->next_link);
    sl_security_destroy(&n->security);
    sl_cutguard_destroy(&n->guard);
    if (n->trace) fclose(n->trace);
    msgpack_sbuffer_destroy(&n->out);
    free(n->ids);
    free(n->in);
    free(n->hidden);
    free(n->logits);
    sl_wire_decoder_destroy(&n->decoder);
    sl_sampler_destroy(&n->sampler);
    sl_sessions_destroy(&n->sessions);
    sl_runner_destroy(&n->stage);
    sl_kern_destroy(&n->kern);
    sl_trunk_destroy(&n->trunk);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"verify", 0, 0, 'v'},        {"lifeline", 0, 0, 'l'},
                                            {"topology-data", 1, 0, 't'}, {"help", 0, 0, 'h'},
                                            {"version", 0, 0, 'V'},       {0, 0, 0, 0}};
    bool verify = false, lifeline = false;
    const char *topology_data = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'v')
            verify = true;
        else if (c == 'l')
            lifeline = true;
        else if (c == 't')
            topology_data = optarg;
        else
            return sl_tool_other_option(c, "zmq-splitlearn-node", usage);
    }
    int want_args = topology_data ? 1 : 2;
    if (argc - optind != want_args) {
        fprintf(stderr, "zmq-splitlearn-node: give %s\nsee zmq-splitlearn-node --help\n",
                topology_data ? "NODE_NAME" : "TOPOLOGY.ini and NODE_NAME");
        return SL_EXIT_USAGE;
    }
    const char *topology = topology_data ? NULL : argv[optind];
    zsys_handler_set(NULL); /* our own handlers: czmq's would swallow SIGTERM */
    struct sigaction stop = {.sa_handler = on_signal}, ignore = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGPIPE, &ignore, NULL);
    node n = {.name = argv[argc - 1]};
    sl_err err;
    log_line(&n, "starting (%s)", topology ? topology : "topology from the launcher");
    if (start(&n, topology, topology_data, verify, &err) != 0) {
        log_line(&n, "cannot start: %s", err.msg);
        shutdown_node(&n);
        return SL_EXIT_FAILURE;
    }
    const sl_part_info *info = sl_trunk_info(n.trunk);
    sl_cut_defence d = n.guard ? sl_cutguard_defence(n.guard) : (sl_cut_defence){0};
    if (n.guard)
        log_line(&n, "rows leave clipped to an L2 norm of %g with Gaussian noise of std %g (cryptographic)",
                 (double)d.clip, (double)d.noise * d.clip);
    const char *computed = sl_wformat_name(sl_trunk_params(n.trunk)->format); /* an HF-layout f16 file: f32 */
    char held[64];
    snprintf(held, sizeof held, strcmp(computed, info->dtype) ? "%s, widened from its %s file" : "%s", computed,
             info->dtype);
    log_line(&n, "ready on %s: %s, layers %d-%d, %.1fM parameters in %s (%s kernels, kv %s), %s", n.self->listen,
             sl_role_name(info->role), info->first, info->last, (double)info->parameters / 1e6, held,
             sl_kern_isa_name(sl_kern_isa_used(n.kern)), sl_dtype_lower(n.self->kv),
             n.next ? n.next->listen : "answers clients");
    serve(&n, lifeline);
    char stopped[PATH_MAX];
    int saved = sl_trunk_save_on_stop(n.trunk, stopped, sizeof stopped, &err);
    if (saved < 0) log_line(&n, "cannot save on stop: %s", err.msg);
    log_line(&n, "stopping: %ld messages handled, %ld refused, %d sessions open", n.handled, n.refused,
             sl_sessions_count(n.sessions));
    shutdown_node(&n);
    return SL_EXIT_OK;
}
