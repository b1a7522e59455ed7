/* trainer.c — split learning driven stage by stage: every stage is local (a learner in this
 * process) or remote (trunk nodes reached through sockets), and the step, the schedule, clipping
 * and checkpoints go through the same calls for both. */
#include "trainer.h"

#include "clock.h"
#include "fileio.h"
#include "learner.h"
#include "net.h"
#include "privacy.h"
#include "wire.h"

#include <assert.h>
#include <czmq.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stage stage;

/* What the update of a step needs, sent with the last backward when no clipping has to wait. */
typedef struct update_plan {
    float lr, scale;
} update_plan;

/* A stage of the chain. forward: ids (bottom) or in (B*T, C) to out (B*T, C) or, at the top, the
 * loss of targets. backward: dout to din (not at the bottom); with want_norm the stage's squared
 * gradient norm (times scale^2) becomes available to norm2; with upd the stage may apply its
 * update right away. update applies the step's AdamW to gradients times scale. */
typedef struct stage_ops {
    int (*forward)(sl_trainer *t, stage *s, const int32_t *ids, const float *in, const int32_t *targets, float *out,
                   float *loss, sl_err *err);
    int (*backward)(sl_trainer *t, stage *s, const float *dout, float *din, bool want_norm, float scale,
                    const update_plan *upd, sl_err *err);
    double (*norm2)(stage *s, float scale);
    int (*update)(sl_trainer *t, stage *s, const sl_adamw *opt, float scale, sl_err *err);
    int (*save)(sl_trainer *t, stage *s, const char *dir, long base, float loss, sl_part_info *saved, sl_err *err);
} stage_ops;

struct stage {
    const stage_ops *ops;
    sl_learner *learner; /* local */
    int first, last;     /* the parts (= topology nodes) it runs: one when local, trunks when remote */
    double norm2;        /* remote: the trunks' squared gradient norm reported by the last backward */
    bool updated;        /* remote: the trunks applied this step's update with the backward */
};

struct sl_trainer {
    sl_trainer_opts opts;
    sl_part_info parts[SL_MAX_SPLITS + 1]; /* what each part of the split is */
    int n_parts;
    stage stages[SL_MAX_SPLITS + 1];
    int n;
    long steps;
    const char *lost;         /* the node whose connection dropped, when a step failed for it */
    bool timed_out;           /* a step failed because the trunks did not answer in time */
    char saved_dir[PATH_MAX]; /* the checkpoint this run resumed from or last saved ("": none) */
    long saved_step;          /* its step */
    float *act, *grad;        /* (B*T, C) crossing the boundaries, two of each to ping-pong */
    float *act2, *grad2;
    sl_privacy *privacy; /* the defences at the client's cuts (opts.privacy; NULL: none) */
    /* remote trunks */
    sl_topology topo;
    sl_net_opts net;
    zsock_t *to_first;      /* DEALER to the first trunk: activations on, gradients back */
    zsock_t *from_trunks;   /* ROUTER at the top's endpoint: the last trunk's activations come in */
    sl_peer last_trunk;     /* its connection there: gradients go back on it */
    zactor_t *watch[2];     /* monitors of to_first and from_trunks: a trunk's dropped connection */
    const char *watched[2]; /* their nodes' names */
    sl_wire_decoder *decoder;
    msgpack_sbuffer out;
    sl_id run_id;
    uint64_t message;
    long refused[2];         /* messages at the top's endpoint not of this run, and not from the last trunk */
    int trunk_fd;            /* the last trunk's connection there (-1: it has not answered yet) */
    sl_security *as_trainer; /* security = curve: the trainer's key pair, towards the trunks */
    sl_security *as_top;     /* the top's, at its endpoint: admits the last trunk only */
};

/* ---- local stages: a learner in this process ---- */

static int local_forward(sl_trainer *t, stage *s, const int32_t *ids, const float *in, const int32_t *targets,
                         float *out, float *loss, sl_err *err)
{
    (void)t;
    return sl_backprop_forward(sl_learner_train(s->learner), ids, in, targets, out, loss, err);
}

static int local_backward(sl_trainer *t, stage *s, const float *dout, float *din, bool want_norm, float scale,
                          const update_plan *upd, sl_err *err)
{
    (void)t, (void)want_norm, (void)scale, (void)upd; /* its norm and update come when asked */
    return sl_backprop_backward(sl_learner_train(s->learner), dout, din, err);
}

static double local_norm2(stage *s, float scale) { return sl_backprop_grad_norm2(sl_learner_train(s->learner), scale); }

static int local_update(sl_trainer *t, stage *s, const sl_adamw *opt, float scale, sl_err *err)
{
    (void)t, (void)err;
    sl_backprop_step(sl_learner_train(s->learner), opt, scale);
    return 0;
}

static int local_save(sl_trainer *t, stage *s, const char *dir, long base, float loss, sl_part_info *saved, sl_err *err)
{
    (void)t;
    return sl_learner_save(s->learner, dir, base, loss, &saved[s->first], err);
}

static const stage_ops local_ops = {local_forward, local_backward, local_norm2, local_update, local_save};

/* ---- remote stages: trunk nodes, the first fed by this process, the last answering it ---- */

static int send_to(sl_trainer *t, zsock_t *sock, const sl_msg *m, const char *who, sl_err *err)
{
    if (sl_wire_encode(m, &t->out, err) != 0) return -1;
    return sl_net_send(sock, t->out.data, t->out.size, false, who, err);
}

/* A dropped connection reported by watch i, as the trainer's error; 1 when it is not a trunk's (at
 * the top's endpoint, anyone's connection may come and go: only the last trunk's matters). */
static int connection_lost(sl_trainer *t, int i, sl_msg_kind kind, sl_err *err)
{
    char endpoint[SL_MAX_ENDPOINT];
    int fd = sl_net_watch_event(t->watch[i], endpoint, sizeof endpoint);
    if (i == 1 && (fd < 0 || fd != t->trunk_fd)) return 1;
    t->lost = t->watched[i];
    return sl_fail(err,
                   "lost the connection to node %s (%s) while waiting for a %s message in step %ld: the node "
                   "stopped or its host is unreachable",
                   t->watched[i], endpoint, sl_msg_kind_name(kind), t->steps + 1);
}

/* Whether a message at the top's endpoint is taken (ours: it carries this run's id): once the
 * last trunk answered, only its connection's are (with CURVE, its key's). The others are counted
 * by why, and logged the 1st, 10th, 100th... time of each why, with the sender's address. */
static bool admitted(sl_trainer *t, const sl_peer *from, bool ours, zmq_msg_t *frame)
{
    static const char *const why[2] = {"not an answer of this training run",
                                       "from another connection than the last trunk's"};
    bool elsewhere = t->last_trunk.len && !sl_peer_same(from, &t->last_trunk);
    if (ours && !elsewhere) return true;
    if (!sl_err_worth_logging(++t->refused[ours]) || !t->opts.log) return false;
    const char *address = zmq_msg_gets(frame, "Peer-Address");
    char line[512];
    snprintf(line, sizeof line, "refused a message from %s at the top's endpoint: %s (%ld such so far)",
             address ? address : "an unknown address", why[ours], t->refused[ours]);
    t->opts.log(t->opts.log_ctx, line);
    return false;
}

/* Waits for a message of kind and step from the trunks (or from extra, a direct connection to
 * one); copies its payload into out and the message into answer when given (its payload views
 * then point nowhere). A node's error, or a dropped connection to the first or last trunk, ends
 * the wait. */
static int await_on(sl_trainer *t, zsock_t *extra, sl_msg_kind kind, uint64_t step, float *out, double *gnorm2,
                    sl_msg *answer, sl_err *err)
{
    zsock_t *socks[3] = {t->from_trunks, t->to_first, extra};
    zmq_pollitem_t items[5] = {{.socket = zsock_resolve(t->from_trunks), .events = ZMQ_POLLIN},
                               {.socket = zsock_resolve(t->to_first), .events = ZMQ_POLLIN},
                               {.socket = zsock_resolve(t->watch[0]), .events = ZMQ_POLLIN},
                               {.socket = zsock_resolve(t->watch[1]), .events = ZMQ_POLLIN},
                               {.socket = extra ? zsock_resolve(extra) : NULL, .events = ZMQ_POLLIN}};
    const sl_config *c = &t->parts[0].cfg;
    const uint32_t rows = (uint32_t)(t->opts.batch * t->opts.seq_len);
    sl_wire_limits limits = {
        .n_embd = (uint32_t)c->n_embd, .n_positions = (uint32_t)c->n_positions, .max_bytes = t->topo.max_message};
    double deadline = sl_now() + t->topo.timeout;
    for (;;) {
        double left = deadline - sl_now();
        int ready = left > 0 ? zmq_poll(items, extra ? 5 : 4, (long)(left * 1000) + 1) : 0;
        if (ready < 0 && zmq_errno() == EINTR) continue; /* a signal: the caller stops after this step */
        if (ready <= 0 && (t->timed_out = true))
            return sl_fail(err,
                           "no %s message from the trunks within %g s in step %ld (are they running? "
                           "zmq-splitlearn-launch TOPOLOGY --only trunk1 ...)",
                           sl_msg_kind_name(kind), t->topo.timeout, t->steps + 1);
        for (int i = 0; i < 2; i++)
            if ((items[2 + i].revents & ZMQ_POLLIN) && connection_lost(t, i, kind, err) != 1) return -1;
        for (int i = 0; i < 3; i++) {
            if (!socks[i] || !(items[i == 2 ? 4 : i].revents & ZMQ_POLLIN)) continue;
            zmq_msg_t frame;
            sl_peer from;
            sl_err bad;
            zmq_msg_init(&frame);
            int got = sl_net_recv(socks[i], i == 0 ? &from : NULL, &frame, &bad), rc = 1;
            sl_msg m;
            bool decoded = got == 0 && sl_wire_decode(t->decoder, zmq_msg_data(&frame), zmq_msg_size(&frame), &limits,
                                                      &m, &bad) == 0,
                 ours = decoded && sl_id_equal(m.session, t->run_id);
            bool greeting = decoded && m.kind == SL_MSG_HELLO; /* a trunk greets its next stage: not an answer */
            if (i == 0 && got != 1 && !greeting) ours = admitted(t, &from, ours, &frame);
            if (ours) {
                if (m.kind == SL_MSG_ERROR && !strcmp(m.code, "out_of_step")) /* it restarted */
                    t->lost = sl_topology_node(&t->topo, m.node) ? sl_topology_node(&t->topo, m.node)->name : NULL;
                if (m.kind == SL_MSG_ERROR)
                    rc = sl_fail(err, "node %s: %s: %s", m.node, m.code, m.message);
                else if (m.kind == kind && m.step == step && out && m.rows != rows)
                    rc = sl_fail(err, "a %s message of %u rows came back for a batch of %u rows",
                                 sl_msg_kind_name(kind), m.rows, rows);
                else if (m.kind == kind && m.step == step) {
                    if (out) sl_msg_copy_x(&m, out); /* its width is the model's: the decoder checked */
                    if (gnorm2) *gnorm2 = m.gnorm2;
                    if (answer) *answer = m;
                    if (i == 0) /* the backward goes back on this connection */
                        t->last_trunk = from, t->trunk_fd = sl_net_fd(&frame);
                    rc = 0;
                }
            }
            zmq_msg_close(&frame);
            if (rc != 1) return rc;
        }
    }
}

static int await(sl_trainer *t, sl_msg_kind kind, uint64_t step, float *out, double *gnorm2, sl_err *err)
{
    return await_on(t, NULL, kind, step, out, gnorm2, NULL, err);
}

/* A training message of this run to the trunks. */
static sl_msg trunk_msg(sl_trainer *t, sl_msg_kind kind, uint64_t step)
{
    return (sl_msg){.kind = kind, .session = t->run_id, .step = step};
}

static int remote_forward(sl_trainer *t, stage *s, const int32_t *ids, const float *in, const int32_t *targets,
                          float *out, float *loss, sl_err *err)
{
    (void)ids, (void)targets, (void)loss;
    sl_msg fwd = trunk_msg(t, SL_MSG_FORWARD, ++t->message);
    fwd.train = true;
    fwd.batch = (uint32_t)t->opts.batch;
    fwd.has_at_step = true;
    fwd.at_step = (uint64_t)t->steps;
    fwd.x = in;
    fwd.rows = (uint32_t)(t->opts.batch * t->opts.seq_len);
    fwd.cols = (uint32_t)t->parts[0].cfg.n_embd;
    fwd.dtype = t->topo.activations;
    if (send_to(t, t->to_first, &fwd, t->topo.nodes[s->first].name, err) != 0) return -1;
    return await(t, SL_MSG_FORWARD, fwd.step, out, NULL, err);
}

static int remote_backward(sl_trainer *t, stage *s, const float *dout, float *din, bool want_norm, float scale,
                           const update_plan *upd, sl_err *err)
{
    sl_msg back = trunk_msg(t, SL_MSG_BACKWARD, t->message); /* the step of the forward it goes back through */
    back.x = dout;
    back.rows = (uint32_t)(t->opts.batch * t->opts.seq_len);
    back.cols = (uint32_t)t->parts[0].cfg.n_embd;
    back.dtype = t->topo.activations;
    back.update = upd != NULL;
    back.lr = upd ? upd->lr : 0;
    back.weight_decay = t->opts.adamw.weight_decay;
    back.grad_scale = scale;
    back.has_gnorm2 = want_norm;
    s->updated = upd != NULL;
    s->norm2 = 0;
    if (sl_wire_encode(&back, &t->out, err) != 0) return -1;
    if (sl_net_send_to(t->from_trunks, &t->last_trunk, t->out.data, t->out.size, err) != 0) {
        t->lost = t->topo.nodes[s->last].name;
        sl_err_prefix(err, "lost the connection to node %s in step %ld", t->lost, t->steps + 1);
        return -1;
    }
    return await(t, SL_MSG_BACKWARD, back.step, din, want_norm ? &s->norm2 : NULL, err);
}

static double remote_norm2(stage *s, float scale)
{
    (void)scale; /* the trunks applied it */
    return s->norm2;
}

/* A clipped step's update travels the trunks along the forward path and comes back. */
static int remote_update(sl_trainer *t, stage *s, const sl_adamw *opt, float scale, sl_err *err)
{
    if (s->updated) return 0;
    sl_msg m = trunk_msg(t, SL_MSG_UPDATE, ++t->message);
    m.lr = opt->lr;
    m.weight_decay = opt->weight_decay;
    m.grad_scale = scale;
    if (send_to(t, t->to_first, &m, t->topo.nodes[s->first].name, err) != 0) return -1;
    return await(t, SL_MSG_UPDATE, m.step, NULL, NULL, err);
}

/* Where a trunk's ack of a dry-run save says it would save. A node that ignored "dry_run" (one
 * older than the flag: an unknown key) saved instead, and its ack says nowhere. */
static int place_of(const sl_msg *ack, const sl_topo_node *node, sl_trainer_place *place, sl_err *err)
{
    if (!ack->dir[0])
        return sl_fail(err,
                       "node %s saved instead of checking where it would (a zmq-splitlearn-node older than this "
                       "trainer): update it",
                       node->name);
    snprintf(place->node, sizeof place->node, "%s", node->name);
    snprintf(place->host, sizeof place->host, "%s", ack->host);
    snprintf(place->dir, sizeof place->dir, "%s", ack->dir);
    return 0;
}

/* Sends kind (save or load) with dir to every trunk of s and waits for each one's ack. With places,
 * a save is a dry run and places[k] gets where the k-th trunk would save. */
static int command_trunks(sl_trainer *t, const stage *s, sl_msg_kind kind, const char *dir, float loss,
                          sl_trainer_place *places, sl_err *err)
{
    uint64_t step = ++t->message;
    for (int i = s->first; i <= s->last; i++) {
        const sl_topo_node *node = &t->topo.nodes[i];
        sl_msg m = trunk_msg(t, kind, step);
        snprintf(m.dir, sizeof m.dir, "%s", dir);
        m.has_at_step = kind == SL_MSG_LOAD;
        m.at_step = (uint64_t)t->steps;
        m.has_loss = kind == SL_MSG_SAVE && isfinite(loss);
        m.loss = loss;
        m.dry_run = places != NULL;
        t->net.peer = node->cert;
        zsock_t *direct = i == 1 ? NULL : sl_net_connect(ZMQ_DEALER, &t->net, node->listen, err);
        if (i != 1 && !direct) return -1;
        int rc = send_to(t, direct ? direct : t->to_first, &m, node->name, err);
        sl_msg ack;
        if (rc == 0) rc = await_on(t, direct, SL_MSG_ACK, step, NULL, NULL, &ack, err);
        zsock_destroy(&direct);
        if (rc != 0) return -1;
        if (places && place_of(&ack, node, &places[i - s->first], err) != 0) return -1;
    }
    return 0;
}

/* Every trunk writes its part and optimizer state under dir, on its own host; saved[] gets the
 * files' places in the checkpoint, for split.json. */
static int remote_save(sl_trainer *t, stage *s, const char *dir, long base, float loss, sl_part_info *saved,
                       sl_err *err)
{
    (void)base; /* each trunk knows its own */
    if (command_trunks(t, s, SL_MSG_SAVE, dir, loss, NULL, err) != 0) return -1;
    for (int i = s->first; i <= s->last; i++) {
        saved[i] = t->parts[i];
        if (sl_part_checkpoint_file(dir, saved[i].role, saved[i].name, saved[i].file, sizeof saved[i].file, err) != 0)
            return -1;
    }
    return 0;
}

static const stage_ops remote_ops = {remote_forward, remote_backward, remote_norm2, remote_update, remote_save};

/* ---- making a trainer ---- */

/* The step a checkpoint resumes these parts at: the earliest of their last complete saves (a
 * save that stopped half-way left some parts one save ahead, and their previous save is the
 * checkpoint). -1 with err when a part has none. */
static long checkpoint_step(const char *dir, const sl_part_info *infos, const int *which, int count, sl_err *err)
{
    long step = LONG_MAX;
    for (int k = 0; k < count; k++) {
        const sl_part_info *in = &infos[which[k]];
        sl_part *part = sl_part_open_checkpoint(dir, in->role, in->name, -1, false, err);
        if (!part) return -1;
        if (sl_part_info_of(part)->step < step) step = sl_part_info_of(part)->step;
        sl_part_destroy(&part);
    }
    return step;
}

/* Makes part i a local stage, from dir: from a checkpoint's save of step (>= 0), else from a
 * split, with the optimizer state saved beside it. Fails when that state says another step. */
static int add_local(sl_trainer *t, int i, const char *dir, long step, bool verify, sl_err *err)
{
    const sl_part_info *in = &t->parts[i];
    stage *s = &t->stages[t->n++];
    *s = (stage){.ops = &local_ops, .first = i, .last = i};
    sl_part *part = step >= 0 ? sl_part_open_checkpoint(dir, in->role, in->name, step, verify, err)
                              : sl_part_open(dir, in->first, in->last, verify, err);
    if (!part || !(s->learner = sl_learner_new(part, true, err))) return -1;
    const sl_part_info *got = sl_learner_info(s->learner);
    if (got->first != in->first || got->last != in->last)
        return sl_fail(err, "%s holds layers [%d,%d), not %s's [%d,%d)", got->file, got->first, got->last, in->name,
                       in->first, in->last);
    if (sl_learner_prepare(s->learner, t->opts.batch, t->opts.seq_len, err) != 0) return -1;
    long steps = sl_learner_steps(s->learner);
    if (step >= 0 && steps != step)
        return sl_fail(err, "%s: its optimizer state is of step %ld, its metadata says %ld", got->file, steps, step);
    return 0;
}

/* The buffers crossing stage boundaries. */
static int alloc_buffers(sl_trainer *t, sl_err *err)
{
    size_t rows = (size_t)t->opts.batch * t->opts.seq_len, C = (size_t)t->parts[0].cfg.n_embd;
    t->act = malloc(rows * C * sizeof(float));
    t->act2 = malloc(rows * C * sizeof(float));
    t->grad = malloc(rows * C * sizeof(float));
    t->grad2 = malloc(rows * C * sizeof(float));
    if (!t->act || !t->act2 || !t->grad || !t->grad2) return sl_fail(err, "out of memory");
    if (sl_privacy_active(&t->opts.privacy) &&
        !(t->privacy = sl_privacy_new(&t->opts.privacy, t->opts.batch, t->opts.seq_len, (int)C, err)))
        return -1;
    return 0;
}

static sl_trainer *trainer_alloc(const sl_trainer_opts *opts, sl_err *err)
{
    sl_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    t->opts = *opts;
    t->trunk_fd = -1;
    msgpack_sbuffer_init(&t->out);
    return t;
}

sl_trainer *sl_trainer_new(const char *dir, const sl_trainer_opts *opts, sl_err *err)
{
    sl_trainer *t = trainer_alloc(opts, err);
    if (!t) return NULL;
    t->n_parts = sl_split_read_index(dir, t->parts, SL_MAX_SPLITS + 1, err);
    int rc = t->n_parts > 0 ? 0 : -1, all[SL_MAX_SPLITS + 1];
    for (int i = 0; i < t->n_parts; i++)
        all[i] = i;
    bool checkpoint = rc == 0 && t->parts[0].step >= 0;
    long step = checkpoint ? checkpoint_step(dir, t->parts, all, t->n_parts, err) : -1; /* -1: a split */
    if (checkpoint && step < 0) rc = -1;
    for (int i = 0; rc == 0 && i < t->n_parts; i++)
        rc = add_local(t, i, dir, step, false, err);
    if (rc == 0) rc = alloc_buffers(t, err);
    if (rc == 0) t->steps = sl_learner_steps(t->stages[0].learner);
    if (rc == 0 && step >= 0) snprintf(t->saved_dir, sizeof t->saved_dir, "%s", dir), t->saved_step = step;
    if (rc != 0) sl_trainer_destroy(&t);
    return t;
}

/* With security = curve: the trainer's own key pair (--cert) for its connections to the trunks,
 * and the top's (certs/TOP.cert_secret: the trainer is the top, on the top's host) for the endpoint
 * the last trunk connects to, which admits that trunk's key only. */
static int open_security(sl_trainer *t, sl_err *err)
{
    const sl_topology *topo = &t->topo;
    if (!t->opts.cert)
        return sl_fail(err, "%s says security = curve: give the trainer's certificate (--cert FILE.cert_secret)",
                       topo->path);
    char top_secret[PATH_MAX + 96];
    snprintf(top_secret, sizeof top_secret, "%s/%s.cert_secret", topo->certs, topo->nodes[topo->n_nodes - 1].cert);
    const char *last_trunk = topo->nodes[topo->n_nodes - 2].cert;
    if (!(t->as_trainer = sl_security_new(topo->certs, t->opts.cert, NULL, 0, NULL, NULL, err)) ||
        !(t->as_top = sl_security_new(topo->certs, top_secret, &last_trunk, 1, t->opts.log, t->opts.log_ctx, err)))
        return -1;
    return 0;
}

/* The sockets to and from the trunks, and the monitors of the connections to the first and last. */
static int open_remote(sl_trainer *t, sl_err *err)
{
    const sl_topology *topo = &t->topo;
    const int n = topo->n_nodes;
    t->net = sl_net_opts_of(topo);
    if (!(t->decoder = sl_wire_decoder_new())) return sl_fail(err, "out of memory");
    if (topo->curve && open_security(t, err) != 0) return -1;
    sl_net_opts as_top = t->net;
    as_top.security = t->as_top;
    t->net.security = t->as_trainer;
    t->net.peer = topo->nodes[1].cert;
    if (!(t->from_trunks = sl_net_bind(ZMQ_ROUTER, &as_top, topo->nodes[n - 1].listen, err)) ||
        !(t->to_first = sl_net_connect(ZMQ_DEALER, &t->net, topo->nodes[1].listen, err)))
        return -1;
    t->watched[0] = topo->nodes[1].name;
    t->watched[1] = topo->nodes[n - 2].name;
    if (!(t->watch[0] = sl_net_watch(t->to_first)) || !(t->watch[1] = sl_net_watch(t->from_trunks)))
        return sl_fail(err, "cannot monitor the connections to the trunks");
    return 0;
}

sl_trainer *sl_trainer_new_remote(const sl_topology *topo, const char *resume, const sl_trainer_opts *opts, sl_err *err)
{
    if (topo->n_nodes < 3) {
        sl_fail(err, "%s has no trunk: train it in this process", topo->path);
        return NULL;
    }
    for (int i = 1; i < topo->n_nodes - 1; i++)
        if (!topo->nodes[i].train) {
            sl_fail(err,
                    "%s:%d: [node.%s] does not train (train = no, the default): set train = yes there or in [pipeline]",
                    topo->path, topo->nodes[i].line, topo->nodes[i].name);
            return NULL;
        }
    sl_trainer *t = trainer_alloc(opts, err);
    if (!t) return NULL;
    t->topo = *topo;
    if (sl_id_new(&t->run_id, err) != 0) {
        sl_trainer_destroy(&t);
        return NULL;
    }
    /* The split says what each stage is; a checkpoint's bottom and top are read from its files
     * here, the trunks' from theirs on their hosts (a checkpoint needs no shared directory). */
    int n = t->n_parts = sl_split_read_index(topo->parts, t->parts, SL_MAX_SPLITS + 1, err);
    int rc = n == topo->n_nodes
                 ? 0
                 : (n < 0 ? -1 : sl_fail(err, "%s: %d parts for %d nodes", topo->parts, n, topo->n_nodes));
    const int local[2] = {0, n - 1};
    long step = rc == 0 && resume ? checkpoint_step(resume, t->parts, local, 2, err) : -1; /* -1: the split */
    if (rc == 0 && resume && step < 0) rc = -1;
    const char *dir = resume ? resume : topo->parts;
    if (rc == 0) rc = add_local(t, 0, dir, step, topo->verify, err);
    if (rc == 0) t->stages[t->n++] = (stage){.ops = &remote_ops, .first = 1, .last = n - 2};
    if (rc == 0) rc = add_local(t, n - 1, dir, step, topo->verify, err);
    if (rc == 0) t->steps = sl_learner_steps(t->stages[0].learner);
    if (rc == 0 && resume) snprintf(t->saved_dir, sizeof t->saved_dir, "%s", resume), t->saved_step = step;
    if (rc == 0) rc = alloc_buffers(t, err);
    if (rc == 0) rc = open_remote(t, err);
    if (rc == 0 && resume) rc = command_trunks(t, &t->stages[1], SL_MSG_LOAD, resume, NAN, NULL, err);
    if (rc != 0) sl_trainer_destroy(&t);
    return t;
}

void sl_trainer_destroy(sl_trainer **self)
{
    assert(self); /* the address of the pointer: a programmer error when NULL */
    if (!*self) return;
    sl_trainer *t = *self;
    for (int i = 0; i < t->n; i++)
        sl_learner_destroy(&t->stages[i].learner);
    for (int i = 0; i < 2; i++)
        zactor_destroy(&t->watch[i]);
    zsock_destroy(&t->from_trunks);
    zsock_destroy(&t->to_first);
    sl_wire_decoder_destroy(&t->decoder);
    msgpack_sbuffer_destroy(&t->out);
    sl_security_destroy(&t->as_trainer);
    sl_security_destroy(&t->as_top);
    free(t->act);
    free(t->act2);
    free(t->grad);
    free(t->grad2);
    sl_privacy_destroy(&t->privacy);
    free(t);
    *self = NULL;
}

long sl_trainer_step_count(const sl_trainer *self) { return self->steps; }
const char *sl_trainer_lost(const sl_trainer *self) { return self->lost; }
bool sl_trainer_timed_out(const sl_trainer *self) { return self->timed_out; }
double sl_trainer_dcor(const sl_trainer *self) { return self->privacy ? sl_privacy_dcor(self->privacy) : NAN; }
int sl_trainer_stages(const sl_trainer *self) { return self->n_parts; }

sl_params *sl_trainer_params(sl_trainer *self, int i)
{
    for (int k = 0; k < self->n; k++)
        if (self->stages[k].learner && self->stages[k].first == i) return sl_learner_params(self->stages[k].learner);
    return NULL; /* a remote trunk's */
}

float sl_trainer_lr(const sl_trainer *self)
{
    const sl_trainer_opts *o = &self->opts;
    long s = self->steps;
    if (o->warmup > 0 && s < o->warmup) return o->adamw.lr * (float)(s + 1) / (float)o->warmup;
    if (!o->cosine || o->total_steps <= o->warmup) return o->adamw.lr;
    double progress = (double)(s - o->warmup) / (double)(o->total_steps - o->warmup);
    if (progress > 1) progress = 1;
    return o->adamw.lr * (float)(0.1 + 0.9 * 0.5 * (1.0 + cos(M_PI * progress)));
}

/* ---- a step ---- */

/* Forward through every stage; with backward, the gradient back through every stage (want_norm
 * and upd as in stage_ops, for the step's last micro-batch). */
static int run_chain(sl_trainer *t, const int32_t *ids, const int32_t *targets, bool backward, bool want_norm,
                     float scale, const update_plan *upd, float *loss, sl_err *err)
{
    const float *in = NULL;
    float *out = t->act;
    for (int i = 0; i < t->n; i++) {
        stage *s = &t->stages[i];
        bool top = i == t->n - 1;
        if (s->ops->forward(t, s, i == 0 ? ids : NULL, in, top ? targets : NULL, top ? NULL : out, loss, err) != 0)
            return -1;
        /* privacy: what the bottom sends goes through its defence (and NoPeek's term in training) */
        if (i == 0 && t->privacy &&
            sl_privacy_bottom_forward(t->privacy, sl_learner_params(s->learner), ids, out, backward, err) != 0)
            return -1;
        in = out;
        out = out == t->act ? t->act2 : t->act;
    }
    if (!backward) return 0;
    float *dout = NULL, *din = t->grad;
    for (int i = t->n - 1; i >= 0; i--) {
        stage *s = &t->stages[i];
        /* privacy: the gradient at the rows sent becomes the bottom's, through its defence, plus NoPeek's */
        if (i == 0 && t->privacy &&
            sl_privacy_bottom_backward(t->privacy, sl_backprop_grads(sl_learner_train(s->learner)), ids, dout, err) !=
                0)
            return -1;
        if (s->ops->backward(t, s, dout, i == 0 ? NULL : din, want_norm, scale, upd, err) != 0) return -1;
        /* privacy: the top's gradient to the stage before it goes through the top's defence */
        if (i == t->n - 1 && t->privacy && sl_privacy_top_gradient(t->privacy, din, err) != 0) return -1;
        dout = din;
        din = din == t->grad ? t->grad2 : t->grad;
    }
    return 0;
}

/* The global squared gradient norm of the mean over micro-batches, combined in one order whatever
 * runs where: the middle stages from last to first (as a backward message collects them), then
 * the top, then the bottom. */
static double global_norm2(sl_trainer *t, float scale)
{
    double middle = 0;
    for (int i = t->n - 2; i >= 1; i--)
        middle += t->stages[i].ops->norm2(&t->stages[i], scale);
    double top = t->stages[t->n - 1].ops->norm2(&t->stages[t->n - 1], scale);
    return middle + top + t->stages[0].ops->norm2(&t->stages[0], scale);
}

int sl_trainer_step(sl_trainer *t, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err)
{
    const sl_trainer_opts *o = &t->opts;
    const size_t micro = (size_t)o->batch * o->seq_len;
    const int K = o->grad_accum > 0 ? o->grad_accum : 1;
    for (int i = 0; i < t->n; i++)
        if (t->stages[i].learner) sl_backprop_zero_grad(sl_learner_train(t->stages[i].learner));
    double total = 0;
    const bool clip = o->grad_clip > 0;
    const update_plan plan = {.lr = sl_trainer_lr(t), .scale = 1.0f / (float)K}; /* the mean over micro-batches */
    float scale = plan.scale;
    for (int k = 0; k < K; k++) {
        float l;
        bool last = k == K - 1;
        if (run_chain(t, ids + k * micro, targets + k * micro, true, last && clip, scale, last && !clip ? &plan : NULL,
                      &l, err) != 0)
            return -1;
        total += l;
    }
    if (clip) {
        double norm = sqrt(global_norm2(t, scale));
        if (norm > o->grad_clip) scale *= (float)(o->grad_clip / norm);
    }
    sl_adamw opt = o->adamw;
    opt.lr = plan.lr;
    for (int i = 0; i < t->n; i++)
        if (t->stages[i].ops->update(t, &t->stages[i], &opt, scale, err) != 0) return -1;
    t->steps++;
    *loss = (float)(total / K);
    return 0;
}

int sl_trainer_eval(sl_trainer *t, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err)
{
    /* Remote trunks keep this forward's activations; the next training forward replaces them. */
    return run_chain(t, ids, targets, false, false, 1, NULL, loss, err);
}

int sl_trainer_check_save(sl_trainer *self, const char *dir, sl_trainer_place *places, sl_err *err)
{
    for (int i = 0; i < self->n; i++) {
        const stage *s = &self->stages[i];
        if (s->ops == &remote_ops)
            return command_trunks(self, s, SL_MSG_SAVE, dir, NAN, places, err) == 0 ? s->last - s->first + 1 : -1;
    }
    return 0; /* every stage runs here */
}

int sl_trainer_save(sl_trainer *t, const char *dir, float loss, sl_err *err)
{
    sl_part_info saved[SL_MAX_SPLITS + 1];
    bool same_dir = t->saved_dir[0] && sl_same_dir(dir, t->saved_dir);
    if (same_dir && t->saved_step == t->steps) return 0; /* this run's save of this step is there */
    const long base = same_dir ? t->saved_step : -1;
    if (sl_mkdirs(dir, err) != 0) return -1;
    for (int pass = 0; pass < 2; pass++) /* the remote stages first: they may fail on their hosts */
        for (int i = 0; i < t->n; i++)
            if ((t->stages[i].ops == &remote_ops) == (pass == 0) &&
                t->stages[i].ops->save(t, &t->stages[i], dir, base, loss, saved, err) != 0)
                return -1;
    if (sl_split_write_index(dir, "checkpoint", saved, t->n_parts, NULL, err) != 0) return -1;
    snprintf(t->saved_dir, sizeof t->saved_dir, "%s", dir);
    t->saved_step = t->steps;
    return 0;
}
