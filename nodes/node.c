/* node.c — zmq-splitlearn-node: one stage of a pipeline. It loads its part (mmap), binds its
 * PULL socket, and for every message runs its layers and pushes the result on: activations to
 * the next stage, or, at the top, the sampled token to the client that asked. */
#include "ckptstore.h"
#include "clock.h"
#include "cli.h"
#include "cpu.h"
#include "fileio.h"
#include "gpt2.h"
#include "outbox.h"
#include "sampler.h"
#include "session.h"
#include "topology.h"
#include "train.h"
#include "wire.h"

#include <czmq.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>

static const char usage[] = "usage: zmq-splitlearn-node TOPOLOGY.ini NODE_NAME [--verify]\n"
                            "\n"
                            "Runs the stage [node.NODE_NAME] of the topology: role, layers, part, sockets and threads "
                            "come\n"
                            "from its section (config/README.md). Logs one line per event to stderr; prints\n"
                            "'NODE_NAME: ready' once it takes messages. Stops cleanly on SIGINT or SIGTERM.\n"
                            "  --verify   recompute the part's SHA-256 before loading it (also: verify = yes in "
                            "[pipeline])\n"
                            "\n"
                            "exit status: 0 stopped by a signal, 1 could not start (topology, part, socket), 2 usage "
                            "error\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

typedef struct node {
    const char *name;
    sl_topology topo;
    const sl_topo_node *self;
    const sl_topo_node *next; /* NULL at the top */
    const sl_topo_node *prev; /* NULL at the bottom */
    sl_part *part;            /* while the weights are used in place from its mapping (not after a training copy) */
    sl_part_info info;        /* the part's: name, role, layers, file */
    sl_params params;
    int train_B, train_T;
    sl_stage *stage;
    sl_sessions *sessions;
    sl_sampler *sampler;
    sl_wire_decoder *decoder;
    sl_wire_limits limits;
    sl_outbox *replies;
    zsock_t *pull, *push, *push_prev; /* push_prev: gradients back, opened on first use */
    sl_train *train;                  /* training state, made by the first training forward */
    uint64_t train_run;               /* the trainer's session the training state belongs to */
    uint64_t forward_step;            /* the training forward whose activations backward may use */
    bool forward_ready, grads_pending;
    bool writable;                     /* params copied out of the mapping, for training */
    FILE *trace;                       /* $SL_NODE_TRACE: one line per message received (tests) */
    char root[PATH_MAX];               /* checkpoint_root, resolved: saves and loads stay below it */
    char save_dir[PATH_MAX];           /* this run's checkpoint (its last save or load): a stop saves beside it */
    long saved_step;                   /* the step of that checkpoint */
    char pending_state[PATH_MAX + 32]; /* optimizer state to restore when the trainer is made */
    msgpack_sbuffer out;
    int32_t *ids;       /* (n_positions) */
    float *in, *hidden; /* (io_rows, C): n_positions rows, more for a training batch */
    size_t io_rows;
    float *logits; /* (V), or (n_positions, V) while a request wants every position */
    size_t logits_rows;
    long handled, refused;
} node;

static void log_line(const node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(const node *n, const char *fmt, ...)
{
    char stamp[32];
    time_t t = time(NULL);
    strftime(stamp, sizeof stamp, "%H:%M:%S", localtime(&t));
    fprintf(stderr, "%s %s: ", stamp, n->name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Sends msg to the client's reply_to; a failure is logged, never fatal. */
static void reply(node *n, const char *endpoint, const sl_msg *msg)
{
    sl_err err;
    if (!endpoint[0]) return;
    if (sl_wire_encode(msg, &n->out, &err) != 0 ||
        sl_outbox_send(n->replies, endpoint, n->out.data, n->out.size, &err) != 0)
        log_line(n, "could not answer %s: %s", endpoint, err.msg);
}

static void reply_error(node *n, const sl_msg *req, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(node *n, const sl_msg *req, const char *code, const char *fmt, ...)
{
    sl_msg e = {.kind = SL_MSG_ERROR, .session = req->session, .step = req->step};
    snprintf(e.node, sizeof e.node, "%s", n->name);
    snprintf(e.code, sizeof e.code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    n->refused++;
    log_line(n, "session %016llx step %llu: %s: %s", (unsigned long long)req->session, (unsigned long long)req->step,
             code, e.message);
    reply(n, req->reply_to, &e);
}

/* Pushes msg (re-encoded) to the next stage; blocks at most the send timeout (backpressure). */
static int pass_on(node *n, const sl_msg *msg, sl_err *err)
{
    if (sl_wire_encode(msg, &n->out, err) != 0) return -1;
    if (zmq_send(zsock_resolve(n->push), n->out.data, n->out.size, 0) < 0)
        return sl_fail(err, "next stage %s (%s) does not take messages: %s", n->next->name, n->next->listen,
                       zmq_strerror(zmq_errno()));
    return 0;
}

/* The session's cache, positioned at req->pos: opened at position 0, rewound when the client
 * re-sends earlier positions, NULL (answered) when this node lost the session. */
static sl_kv *session_for(node *n, const sl_msg *req, int tokens)
{
    double t = sl_now();
    sl_kv *kv = sl_sessions_find(n->sessions, req->session, t);
    if (kv && (int)req->pos <= sl_kv_len(kv) && (int)req->pos + tokens <= sl_kv_capacity(kv)) {
        sl_kv_truncate(kv, (int)req->pos);
        return kv;
    }
    if (req->pos != 0) {
        reply_error(n, req, "unknown_session",
                    "%s does not hold positions 0..%u of this session (restarted or "
                    "evicted); re-send the whole context",
                    n->name, req->pos - 1);
        return NULL;
    }
    int ctx = req->ctx > (uint32_t)tokens ? (int)req->ctx : tokens;
    uint64_t evicted;
    sl_err err;
    if (!(kv = sl_sessions_open(n->sessions, req->session, ctx, t, &evicted, &err))) {
        reply_error(n, req, "internal", "cannot open a session: %s", err.msg);
        return NULL;
    }
    if (evicted) log_line(n, "session %016llx evicted (least recently used)", (unsigned long long)evicted);
    log_line(n, "session %016llx opened (%d positions, %d sessions)", (unsigned long long)req->session, ctx,
             sl_sessions_count(n->sessions));
    return kv;
}

static void run_top(node *n, sl_msg *req, sl_kv *kv, int T)
{
    const int V = n->params.cfg.vocab_size;
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
    if (sl_stage_forward(n->stage, kv, T, NULL, n->in, n->logits, which, &err) != 0) {
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
    reply(n, req->reply_to, &res);
}

static void handle_forward(node *n, sl_msg *req)
{
    const sl_config *cfg = &n->params.cfg;
    bool bottom = n->params.embed;
    if (bottom != (req->ids != NULL)) {
        reply_error(n, req, "bad_message", "%s takes %s", n->name,
                    bottom ? "token ids (\"ids\")" : "activations (\"x\")");
        return;
    }
    int T = bottom ? (int)req->n_ids : (int)req->rows;
    if (req->ack) {
        sl_msg ack = {.kind = SL_MSG_ACK, .session = req->session, .step = req->step};
        snprintf(ack.node, sizeof ack.node, "%s", n->name);
        reply(n, req->reply_to, &ack);
    }
    sl_kv *kv = session_for(n, req, T);
    if (!kv) return;
    sl_err err;
    if (bottom) {
        sl_msg_copy_ids(req, n->ids);
        if (sl_stage_forward(n->stage, kv, T, n->ids, NULL, n->hidden, SL_OUT_HIDDEN, &err) != 0) {
            reply_error(n, req, "bad_message", "%s", err.msg);
            return;
        }
    } else {
        sl_msg_copy_x(req, n->in);
        if (!n->next) {
            run_top(n, req, kv, T);
            return;
        }
        if (sl_stage_forward(n->stage, kv, T, NULL, n->in, n->hidden, SL_OUT_HIDDEN, &err) != 0) {
            reply_error(n, req, "context_full", "%s", err.msg);
            return;
        }
    }
    sl_msg fwd = *req;
    fwd.ids = NULL;
    fwd.n_ids = 0;
    fwd.x = n->hidden;
    fwd.rows = (uint32_t)T;
    fwd.cols = (uint32_t)cfg->n_embd;
    fwd.dtype = n->topo.activations;
    if (pass_on(n, &fwd, &err) != 0) reply_error(n, req, "internal", "%s", err.msg);
}

/* ---- training: trunks train here; the bottom and the top stay with zmq-splitlearn-train ---- */

/* Makes params the node's weights (it takes them over), with a fresh stage and session table:
 * cached keys and values belong to the weights they were computed with. */
static int install_params(node *n, sl_params *params, bool writable, sl_err *err)
{
    sl_stage_destroy(&n->stage);
    sl_sessions_destroy(&n->sessions);
    sl_params_free(&n->params);
    n->params = *params;
    n->writable = writable;
    n->stage = sl_stage_new(&n->params, 128, err);
    n->sessions = sl_sessions_new(&n->params, n->topo.max_sessions, n->topo.idle_timeout);
    return n->stage && n->sessions ? 0 : sl_fail(err, "out of memory");
}

/* The part's own weights again, mapped as at start, with no training state. */
static int reload_part(node *n, sl_err *err)
{
    sl_part *part = sl_part_open(n->topo.parts, n->self->first, n->self->last, false, err);
    sl_params mapped;
    if (!part || sl_part_load_params(part, &mapped, false, err) != 0) {
        sl_part_destroy(&part);
        return -1;
    }
    sl_train_destroy(&n->train);
    sl_part_destroy(&n->part);
    n->part = part;
    n->info = *sl_part_info_of(part);
    n->pending_state[0] = '\0';
    return install_params(n, &mapped, false, err);
}

/* Gives the training state to run: a run this node has not seen starts from the part's own
 * weights and a fresh optimizer (another run's progress must not leak into it). */
static int begin_run(node *n, uint64_t run, sl_err *err)
{
    if (n->train_run == run) return 0;
    if (n->writable) {
        if (reload_part(n, err) != 0) return -1;
        log_line(n, "training run %016llx: starting from the part's weights", (unsigned long long)run);
    }
    n->train_run = run;
    n->forward_ready = n->grads_pending = false;
    n->save_dir[0] = '\0'; /* a stop saves only where this run saved */
    return 0;
}

/* Copies the weights out of the read-only mapping and makes the trainer for B x T tokens (one
 * shape for a whole run: the trainer's buffers and optimizer state go together). */
static int prepare_training(node *n, int B, int T, sl_err *err)
{
    if (n->params.embed || n->params.head)
        return sl_fail(err, "%s is a %s: in training the bottom and the top run inside zmq-splitlearn-train", n->name,
                       n->params.embed ? "bottom" : "top");
    if ((long)B * T > n->topo.max_train_tokens)
        return sl_fail(err, "a training batch of %d x %d tokens is over this pipeline's max_train_tokens (%d)", B, T,
                       n->topo.max_train_tokens);
    if (n->train) {
        if (n->train_B == B && n->train_T == T) return 0;
        return sl_fail(err, "this run trains batches of %d x %d here, not %d x %d", n->train_B, n->train_T, B, T);
    }
    if (!n->writable) {
        sl_params copy;
        if (sl_part_load_params(n->part, &copy, true, err) != 0 || install_params(n, &copy, true, err) != 0) return -1;
        sl_part_destroy(&n->part); /* its mapped pages would stay in the node's RSS for nothing */
        log_line(n, "training: weights copied out of the part (%.1f MB)",
                 (double)sl_params_count(&n->params) * 4 / 1e6);
    }
    if (!(n->train = sl_train_new(&n->params, B, T, err))) return -1;
    size_t rows = (size_t)B * T, C = (size_t)n->params.cfg.n_embd;
    if (rows > n->io_rows) {
        float *in = realloc(n->in, rows * C * sizeof(float));
        if (in) n->in = in;
        float *hidden = in ? realloc(n->hidden, rows * C * sizeof(float)) : NULL;
        if (hidden) n->hidden = hidden;
        if (!in || !hidden) {
            sl_train_destroy(&n->train);
            return sl_fail(err, "out of memory for a batch of %d x %d", B, T);
        }
        n->io_rows = rows;
    }
    n->train_B = B;
    n->train_T = T;
    if (n->pending_state[0]) {
        if (sl_train_load_state(n->train, n->pending_state, err) < 0) {
            sl_train_destroy(&n->train); /* no training on without the optimizer state it resumes */
            return -1;
        }
        log_line(n, "optimizer state restored at step %ld", sl_train_steps(n->train));
        n->pending_state[0] = '\0';
    }
    return 0;
}

static void handle_train_forward(node *n, sl_msg *req)
{
    sl_err err;
    if (!req->x) {
        reply_error(n, req, "bad_message", "a training forward to %s carries activations", n->name);
        return;
    }
    const int B = (int)req->batch, T = (int)req->rows / B; /* the decoder checked that B divides rows */
    if (begin_run(n, req->session, &err) != 0 || prepare_training(n, B, T, &err) != 0) {
        reply_error(n, req, "bad_message", "%s", err.msg);
        return;
    }
    if (req->has_at_step && sl_train_steps(n->train) != (long)req->at_step) {
        reply_error(n, req, "bad_message",
                    "%s has taken %ld optimizer steps in this run, the trainer %llu: the node restarted or another "
                    "trainer used it meanwhile; continue with --resume from the last checkpoint",
                    n->name, sl_train_steps(n->train), (unsigned long long)req->at_step);
        return;
    }
    sl_msg_copy_x(req, n->in);
    if (sl_train_forward(n->train, NULL, n->in, NULL, n->hidden, NULL, &err) != 0) {
        reply_error(n, req, "internal", "%s", err.msg);
        return;
    }
    n->forward_step = req->step;
    n->forward_ready = true;
    sl_msg fwd = *req;
    fwd.x = n->hidden;
    fwd.dtype = n->topo.activations;
    if (pass_on(n, &fwd, &err) != 0) reply_error(n, req, "internal", "%s", err.msg);
}

static int push_back(node *n, const sl_msg *msg, sl_err *err)
{
    if (!n->push_prev) {
        n->push_prev = zsock_new(ZMQ_PUSH);
        if (!n->push_prev) return sl_fail(err, "cannot create a socket");
        zsock_set_sndhwm(n->push_prev, n->topo.hwm);
        zsock_set_sndtimeo(n->push_prev, (int)(n->topo.timeout * 1000));
        zsock_set_linger(n->push_prev, 1000);
        if (zsock_connect(n->push_prev, "%s", n->prev->listen) != 0)
            return sl_fail(err, "cannot connect to %s: %s", n->prev->listen, zmq_strerror(zmq_errno()));
    }
    if (sl_wire_encode(msg, &n->out, err) != 0) return -1;
    if (zmq_send(zsock_resolve(n->push_prev), n->out.data, n->out.size, 0) < 0)
        return sl_fail(err, "previous stage %s (%s) does not take messages: %s", n->prev->name, n->prev->listen,
                       zmq_strerror(zmq_errno()));
    return 0;
}

/* AdamW on the accumulated gradients, multiplied first by the request's scale (1/K, clipping).
 * Non-finite gradients are dropped, not applied: one NaN would poison every later answer. */
static int apply_update(node *n, const sl_msg *req, sl_err *err)
{
    sl_params *g = sl_train_grads(n->train);
    n->grads_pending = false;
    if (!isfinite(sl_train_grad_norm2(n->train, req->grad_scale))) {
        sl_train_zero_grad(n->train);
        return sl_fail(err, "non-finite gradients in step %llu: update refused, weights unchanged",
                       (unsigned long long)req->step);
    }
    sl_adamw opt = SL_ADAMW_DEFAULT;
    opt.lr = req->lr;
    opt.weight_decay = req->weight_decay;
    if (req->grad_scale != 1.0f)
        for (size_t i = 0; i < g->owned_count; i++)
            g->owned[i] *= req->grad_scale;
    sl_train_step(n->train, &opt);
    sl_train_zero_grad(n->train);
    return 0;
}

/* Whether req belongs to the run this node trains for; answers when it does not. */
static bool in_run(node *n, const sl_msg *req)
{
    if (n->train && req->session == n->train_run) return true;
    reply_error(n, req, "bad_message", "%s has no training state of run %016llx (a trainer that is gone?)", n->name,
                (unsigned long long)req->session);
    return false;
}

/* A clipped step's update: applied here, then passed along the forward path (so it always comes
 * before the next forward), back to the trainer at the end. */
static void handle_update(node *n, sl_msg *req)
{
    sl_err err;
    if (!in_run(n, req)) return;
    if (!n->grads_pending) {
        reply_error(n, req, "bad_message", "%s has no gradients to apply in step %llu", n->name,
                    (unsigned long long)req->step);
        return;
    }
    if (apply_update(n, req, &err) != 0 || pass_on(n, req, &err) != 0) reply_error(n, req, "internal", "%s", err.msg);
}

static void handle_backward(node *n, sl_msg *req)
{
    sl_err err;
    if (!in_run(n, req)) return;
    if (!n->forward_ready || req->step != n->forward_step || (int)req->rows != n->train_B * n->train_T) {
        reply_error(n, req, "bad_message", "%s holds no training forward of step %llu with %u rows to go back through",
                    n->name, (unsigned long long)req->step, req->rows);
        return;
    }
    n->forward_ready = false;  /* its saved activations go into this backward, once */
    sl_msg_copy_x(req, n->in); /* the gradient of this stage's output */
    if (sl_train_backward(n->train, n->in, n->hidden, &err) != 0) {
        reply_error(n, req, "internal", "%s", err.msg);
        return;
    }
    n->grads_pending = true;
    sl_msg back = *req;
    if (req->has_gnorm2) back.gnorm2 = req->gnorm2 + sl_train_grad_norm2(n->train, req->grad_scale);
    back.x = n->hidden;
    back.dtype = n->topo.activations;
    if (push_back(n, &back, &err) != 0) {
        reply_error(n, req, "internal", "%s", err.msg);
        return;
    }
    /* after sending: the previous stage works meanwhile */
    if (req->update && apply_update(n, req, &err) != 0) reply_error(n, req, "internal", "%s", err.msg);
}

/* The optimizer steps of the node's state: its trainer's, or those of a loaded checkpoint whose
 * state waits for the first training forward. */
static long steps_taken(const node *n)
{
    return n->train ? sl_train_steps(n->train) : n->pending_state[0] ? n->saved_step : 0;
}

/* Writes this node's part and optimizer state as dir's checkpoint of the current step (nothing
 * when dir already holds this run's save of it). */
static int save_to(node *n, const char *dir, double loss, sl_err *err)
{
    char state[PATH_MAX + 32];
    long step = steps_taken(n), base = n->save_dir[0] && sl_same_dir(dir, n->save_dir) ? n->saved_step : -1;
    if (base == step && base >= 0) return 0;
    sl_part_info saved;
    if (sl_part_write_checkpoint(&n->params, n->info.name, n->info.role, dir, step, loss, &saved, err) != 0) return -1;
    sl_part_sibling(saved.file, "_optim.safetensors", state, sizeof state);
    int rc = n->train              ? sl_train_save_state(n->train, state, err)
             : n->pending_state[0] ? sl_copy_file(n->pending_state, state, err)
                                   : 0;
    if (rc != 0 || sl_part_commit_checkpoint(dir, base, step, &saved, err) != 0) return -1;
    log_line(n, "saved %s (step %ld)", saved.file, step);
    return 0;
}

/* Stopped mid-training: what it learned since the run's checkpoint DIR goes to DIR/stopped-step<K>,
 * a checkpoint of this trunk alone; DIR itself stays as it was, consistent for --resume. */
static void save_on_stop(node *n)
{
    long step = steps_taken(n);
    if (!n->train || !n->save_dir[0] || step == n->saved_step) return;
    char dir[PATH_MAX + 32];
    sl_err err;
    snprintf(dir, sizeof dir, "%s/stopped-step%ld", n->save_dir, step);
    if (save_to(n, dir, NAN, &err) != 0) log_line(n, "cannot save on stop: %s", err.msg); /* loss: the top's */
}

static void ack(node *n, const sl_msg *req)
{
    sl_msg a = {.kind = SL_MSG_ACK, .session = req->session, .step = req->step};
    snprintf(a.node, sizeof a.node, "%s", n->name);
    reply(n, req->reply_to, &a);
}

/* Where a trainer's save or load directory lies on this host: below checkpoint_root (a relative
 * one is taken there), with no ".." anywhere, so a trainer cannot make a node write or read
 * elsewhere. */
static int checkpoint_dir(const node *n, const char *asked, char *out, size_t size, sl_err *err)
{
    if (!asked[0]) return sl_fail(err, "no checkpoint directory given");
    for (const char *p = asked; p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL)
        if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == '\0'))
            return sl_fail(err, "checkpoint directory %s: '..' is not allowed", asked);
    size_t len = strlen(n->root);
    bool under = !strncmp(asked, n->root, len) && (asked[len] == '/' || asked[len] == '\0' || len == 1);
    if (asked[0] == '/' && !under)
        return sl_fail(err, "checkpoint directory %s is outside %s, where %s keeps checkpoints (checkpoint_root)",
                       asked, n->root, n->name);
    int written = asked[0] == '/' ? snprintf(out, size, "%s", asked) : snprintf(out, size, "%s/%s", n->root, asked);
    return written < (int)size ? 0 : sl_fail(err, "checkpoint directory %s: path too long", asked);
}

static void handle_save(node *n, sl_msg *req)
{
    sl_err err;
    char dir[sizeof n->save_dir];
    if (checkpoint_dir(n, req->dir, dir, sizeof dir, &err) != 0 || begin_run(n, req->session, &err) != 0 ||
        save_to(n, dir, req->has_loss ? req->loss : NAN, &err) != 0) {
        reply_error(n, req, "internal", "cannot save: %s", err.msg);
        return;
    }
    n->saved_step = steps_taken(n);
    snprintf(n->save_dir, sizeof n->save_dir, "%s", dir);
    ack(n, req);
}

/* Whether a checkpoint's part can replace this node's: same layers, same model. (The step is
 * sl_part_open_checkpoint's to match.) */
static int check_checkpoint(const node *n, const sl_part_info *info, sl_err *err)
{
    const sl_config *a = &info->cfg, *b = &n->params.cfg;
    if (info->first != n->self->first || info->last != n->self->last)
        return sl_fail(err, "%s holds layers [%d,%d), this node runs [%d,%d)", info->file, info->first, info->last,
                       n->self->first, n->self->last);
    if (a->n_layer != b->n_layer || a->n_embd != b->n_embd || a->n_head != b->n_head || a->n_inner != b->n_inner ||
        a->vocab_size != b->vocab_size || a->n_positions != b->n_positions)
        return sl_fail(err, "%s is a part of another model (its config differs from %s's)", info->file, n->topo.parts);
    return 0;
}

/* Resuming: this node's part and optimizer state from a checkpoint directory on this host. */
static void handle_load(node *n, sl_msg *req)
{
    sl_err err;
    char state[PATH_MAX + 32], dir[sizeof n->save_dir];
    sl_part *part = checkpoint_dir(n, req->dir, dir, sizeof dir, &err) == 0
                        ? sl_part_open_checkpoint(dir, n->info.role, n->info.name,
                                                  req->has_at_step ? (long)req->at_step : -1, n->topo.verify, &err)
                        : NULL;
    sl_params params;
    if (!part || check_checkpoint(n, sl_part_info_of(part), &err) != 0 ||
        sl_part_load_params(part, &params, true, &err) != 0) {
        sl_part_destroy(&part);
        reply_error(n, req, "internal", "cannot load the checkpoint: %s", err.msg);
        return;
    }
    sl_train_destroy(&n->train);
    sl_part_destroy(&n->part);
    n->info = *sl_part_info_of(part);
    sl_part_destroy(&part);
    if (install_params(n, &params, true, &err) != 0) {
        reply_error(n, req, "internal", "cannot load the checkpoint: %s", err.msg);
        return;
    }
    sl_part_sibling(n->info.file, "_optim.safetensors", state, sizeof state);
    snprintf(n->pending_state, sizeof n->pending_state, "%s", access(state, F_OK) == 0 ? state : "");
    n->train_run = req->session;
    n->forward_ready = n->grads_pending = false;
    snprintf(n->save_dir, sizeof n->save_dir, "%s", dir);
    n->saved_step = n->info.step;
    log_line(n, "loaded %s (step %ld)", n->info.file, n->info.step);
    ack(n, req);
}

static void handle(node *n, const void *data, size_t len)
{
    sl_msg msg;
    sl_err err;
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
    if (msg.kind == SL_MSG_FORWARD && msg.train) {
        handle_train_forward(n, &msg);
    } else if (msg.kind == SL_MSG_BACKWARD) {
        handle_backward(n, &msg);
    } else if (msg.kind == SL_MSG_SAVE) {
        handle_save(n, &msg);
    } else if (msg.kind == SL_MSG_LOAD) {
        handle_load(n, &msg);
    } else if (msg.kind == SL_MSG_UPDATE) {
        handle_update(n, &msg);
    } else if (msg.kind == SL_MSG_FORWARD) {
        handle_forward(n, &msg);
    } else if (msg.kind == SL_MSG_END) {
        if (sl_sessions_close(n->sessions, msg.session))
            log_line(n, "session %016llx closed (%d open)", (unsigned long long)msg.session,
                     sl_sessions_count(n->sessions));
        if (n->next && pass_on(n, &msg, &err) != 0) log_line(n, "%s", err.msg);
    } else {
        reply_error(n, &msg, "bad_message", "%s does not take '%s' messages", n->name, sl_msg_kind_name(msg.kind));
    }
}

static int open_sockets(node *n, sl_err *err)
{
    n->pull = zsock_new(ZMQ_PULL);
    if (!n->pull) return sl_fail(err, "cannot create a socket");
    zsock_set_maxmsgsize(n->pull, (int64_t)n->topo.max_message);
    zsock_set_rcvhwm(n->pull, n->topo.hwm);
    if (zsock_bind(n->pull, "%s", n->self->listen) < 0)
        return sl_fail(err, "cannot listen on %s: %s", n->self->listen, zmq_strerror(zmq_errno()));
    if (n->next) {
        n->push = zsock_new(ZMQ_PUSH);
        if (!n->push) return sl_fail(err, "cannot create a socket");
        zsock_set_sndhwm(n->push, n->topo.hwm);
        zsock_set_sndtimeo(n->push, (int)(n->topo.timeout * 1000));
        zsock_set_linger(n->push, 1000);
        if (zsock_connect(n->push, "%s", n->next->listen) != 0)
            return sl_fail(err, "cannot connect to %s: %s", n->next->listen, zmq_strerror(zmq_errno()));
    }
    n->replies = sl_outbox_new(64, n->topo.hwm);
    return n->replies ? 0 : sl_fail(err, "out of memory");
}

static int start(node *n, const char *topology, bool verify, sl_err *err)
{
    if (sl_topology_load(topology, &n->topo, true, err) != 0) return -1;
    if (!(n->self = sl_topology_node(&n->topo, n->name))) return sl_fail(err, "%s has no [node.%s]", topology, n->name);
    int index = sl_topology_index(&n->topo, n->self);
    n->next = index + 1 < n->topo.n_nodes ? &n->topo.nodes[index + 1] : NULL;
    n->prev = index > 0 ? &n->topo.nodes[index - 1] : NULL;
    const char *root = n->topo.checkpoint_root[0] ? n->topo.checkpoint_root : ".";
    if (sl_mkdirs(root, err) != 0) return -1;
    if (!realpath(root, n->root)) return sl_fail(err, "checkpoint_root %s: %s", root, strerror(errno));
    const char *trace = getenv("SL_NODE_TRACE");
    if (trace && *trace) n->trace = fopen(trace, "a");
    if (sl_threads_setup(n->self->threads, n->self->pin, err) != 0) return -1;
    if (!(n->part = sl_part_open(n->topo.parts, n->self->first, n->self->last, verify || n->topo.verify, err)))
        return -1;
    n->info = *sl_part_info_of(n->part);
    sl_params mapped;
    if (sl_part_load_params(n->part, &mapped, false, err) != 0 || install_params(n, &mapped, false, err) != 0)
        return -1;
    const sl_config *cfg = &n->params.cfg;
    n->sampler = sl_sampler_new(&SL_SAMPLING_GREEDY, cfg->vocab_size);
    n->decoder = sl_wire_decoder_new();
    n->ids = malloc((size_t)cfg->n_positions * sizeof *n->ids);
    n->in = malloc((size_t)cfg->n_positions * cfg->n_embd * sizeof(float));
    n->hidden = malloc((size_t)cfg->n_positions * cfg->n_embd * sizeof(float));
    n->io_rows = (size_t)cfg->n_positions;
    n->logits = malloc((size_t)cfg->vocab_size * sizeof(float));
    n->logits_rows = 1;
    if (!n->stage || !n->sessions || !n->sampler || !n->decoder || !n->ids || !n->in || !n->hidden || !n->logits)
        return sl_fail(err, "out of memory");
    n->limits = (sl_wire_limits){.n_embd = (uint32_t)cfg->n_embd,
                                 .n_positions = (uint32_t)cfg->n_positions,
                                 .vocab_size = (uint32_t)cfg->vocab_size,
                                 .max_bytes = n->topo.max_message};
    msgpack_sbuffer_init(&n->out);
    return open_sockets(n, err);
}

static void serve(node *n)
{
    void *sock = zsock_resolve(n->pull);
    zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
    double last_expiry = sl_now();
    while (!stop_requested) {
        int rc = zmq_poll(&item, 1, 200);
        if (rc < 0 && zmq_errno() != EINTR) break;
        while (!stop_requested && rc > 0) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            handle(n, zmq_msg_data(&msg), zmq_msg_size(&msg));
            zmq_msg_close(&msg);
        }
        double t = sl_now();
        if (t - last_expiry > 1.0) {
            uint64_t first = 0;
            int gone = sl_sessions_expire(n->sessions, t, &first);
            if (gone) log_line(n, "%d idle session(s) expired (first %016llx)", gone, (unsigned long long)first);
            last_expiry = t;
        }
    }
}

static void shutdown_node(node *n)
{
    zsock_destroy(&n->pull);
    zsock_destroy(&n->push);
    zsock_destroy(&n->push_prev);
    sl_train_destroy(&n->train);
    if (n->trace) fclose(n->trace);
    sl_outbox_destroy(&n->replies);
    msgpack_sbuffer_destroy(&n->out);
    free(n->ids);
    free(n->in);
    free(n->hidden);
    free(n->logits);
    sl_wire_decoder_destroy(&n->decoder);
    sl_sampler_destroy(&n->sampler);
    sl_sessions_destroy(&n->sessions);
    sl_stage_destroy(&n->stage);
    sl_params_free(&n->params);
    sl_part_destroy(&n->part);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"verify", 0, 0, 'v'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    bool verify = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'v')
            verify = true;
        else if (c == 'h')
            return fputs(usage, stdout), SL_EXIT_OK;
        else
            return fputs(usage, stderr), SL_EXIT_USAGE;
    }
    if (argc - optind != 2) {
        fprintf(stderr, "zmq-splitlearn-node: give TOPOLOGY.ini and NODE_NAME\n%s", usage);
        return SL_EXIT_USAGE;
    }
    zsys_handler_set(NULL); /* our own handlers: czmq's would swallow SIGTERM */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    node n = {.name = argv[optind + 1]};
    sl_err err;
    log_line(&n, "starting (%s)", argv[optind]);
    if (start(&n, argv[optind], verify, &err) != 0) {
        log_line(&n, "cannot start: %s", err.msg);
        shutdown_node(&n);
        return SL_EXIT_FAILURE;
    }
    const sl_part_info *info = &n.info;
    log_line(&n, "ready on %s: %s, layers %d-%d, %.1fM parameters, %s", n.self->listen, sl_role_name(info->role),
             info->first, info->last, (double)info->parameters / 1e6, n.next ? n.next->listen : "answers clients");
    serve(&n);
    save_on_stop(&n);
    log_line(&n, "stopping: %ld messages handled, %ld refused, %d sessions open", n.handled, n.refused,
             sl_sessions_count(n.sessions));
    shutdown_node(&n);
    return SL_EXIT_OK;
}
