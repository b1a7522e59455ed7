/* trainer.c — the in-process split-learning chain: stages, schedule, clipping, checkpoints. */
#include "trainer.h"

#include "clock.h"
#include "fileio.h"
#include "wire.h"

#include <czmq.h>
#include <sys/random.h>

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stage {
    sl_part_info info;
    sl_params params;
    sl_train *train;
} stage;

struct sl_trainer {
    sl_trainer_opts opts;
    stage stages[SL_MAX_SPLITS + 1];
    int n;
    long steps;
    char saved_dir[PATH_MAX]; /* the checkpoint this run resumed from or last saved ("": none) */
    long saved_step;          /* its step */
    float *act, *grad;        /* (B*T, C) crossing the boundaries, two of each to ping-pong */
    float *act2, *grad2;
    /* remote trunks */
    sl_topology topo;
    bool remote;
    zsock_t *from_trunks, *grads_in, *to_first, *to_last; /* top's and bottom's PULL; PUSH to the trunks */
    zactor_t *watch[2];     /* monitors of to_first and to_last: a trunk's dropped connection */
    const char *watched[2]; /* their nodes' names */
    sl_wire_decoder *decoder;
    msgpack_sbuffer out;
    uint64_t run_id, message;
};

/* The optimizer state file beside a part: <stem>_optim.safetensors. */
/* Restores the part's optimizer state when it has one; returns the steps it records (0: fresh). */
static long load_optimizer(stage *s, sl_err *err)
{
    char path[PATH_MAX + 32];
    sl_part_sibling(s->info.file, "_optim.safetensors", path, sizeof path);
    int rc = sl_train_load_state(s->train, path, err);
    return rc < 0 ? -1 : sl_train_steps(s->train);
}

/* Loads stage s from part (which it destroys): its weights copied out of the part, whose mapping
 * then goes (its pages would count in the trainer's RSS for nothing), its trainer and its
 * optimizer state when the part has one. Returns the steps that state records (0: fresh), or -1. */
static long load_stage(stage *s, sl_part *part, const sl_trainer_opts *opts, sl_err *err)
{
    if (!part) return -1;
    s->info = *sl_part_info_of(part);
    int rc = sl_part_load_params(part, &s->params, true, err);
    sl_part_destroy(&part);
    if (rc != 0 || !(s->train = sl_train_new(&s->params, opts->batch, opts->seq_len, err))) return -1;
    return load_optimizer(s, err);
}

/* The step a checkpoint resumes these stages at: the earliest of their last complete saves (a
 * save that stopped half-way left some parts one save ahead, and their previous save is the
 * checkpoint). -1 with err when a stage has none. */
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

/* Loads stage s, described by in, from dir: from a checkpoint's save of step (>= 0), else from a
 * split. Fails when the optimizer state says another step. */
static int load_stage_from(stage *s, const sl_part_info *in, const char *dir, long step, bool verify,
                           const sl_trainer_opts *opts, sl_err *err)
{
    sl_part *part = step >= 0 ? sl_part_open_checkpoint(dir, in->role, in->name, step, verify, err)
                              : sl_part_open(dir, in->first, in->last, verify, err);
    long steps = load_stage(s, part, opts, err);
    if (steps < 0) return -1;
    if (s->info.first != in->first || s->info.last != in->last)
        return sl_fail(err, "%s holds layers [%d,%d), not %s's [%d,%d)", s->info.file, s->info.first, s->info.last,
                       in->name, in->first, in->last);
    if (step >= 0 && steps != step)
        return sl_fail(err, "%s: its optimizer state is of step %ld, its metadata says %ld", s->info.file, steps, step);
    return 0;
}

sl_trainer *sl_trainer_new(const char *dir, const sl_trainer_opts *opts, sl_err *err)
{
    sl_trainer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->opts = *opts;
    sl_part_info infos[SL_MAX_SPLITS + 1];
    t->n = sl_split_read_index(dir, infos, SL_MAX_SPLITS + 1, err);
    int rc = t->n > 0 ? 0 : -1, all[SL_MAX_SPLITS + 1];
    for (int i = 0; i < t->n; i++)
        all[i] = i;
    long step = rc == 0 && infos[0].step >= 0 ? checkpoint_step(dir, infos, all, t->n, err) : -1; /* -1: a split */
    if (rc == 0 && infos[0].step >= 0 && step < 0) rc = -1;
    for (int i = 0; rc == 0 && i < t->n; i++)
        rc = load_stage_from(&t->stages[i], &infos[i], dir, step, false, opts, err);
    t->steps = rc == 0 ? sl_train_steps(t->stages[0].train) : 0;
    if (step >= 0) snprintf(t->saved_dir, sizeof t->saved_dir, "%s", dir), t->saved_step = step;
    if (rc == 0) {
        size_t rows = (size_t)opts->batch * opts->seq_len, C = (size_t)infos[0].cfg.n_embd;
        t->act = malloc(rows * C * sizeof(float));
        t->act2 = malloc(rows * C * sizeof(float));
        t->grad = malloc(rows * C * sizeof(float));
        t->grad2 = malloc(rows * C * sizeof(float));
        if (!t->act || !t->act2 || !t->grad || !t->grad2) rc = sl_fail(err, "out of memory");
    }
    if (rc != 0) sl_trainer_destroy(&t);
    return t;
}

void sl_trainer_destroy(sl_trainer **self)
{
    if (!self || !*self) return;
    sl_trainer *t = *self;
    for (int i = 0; i < SL_MAX_SPLITS + 1; i++) {
        sl_train_destroy(&t->stages[i].train);
        sl_params_free(&t->stages[i].params);
    }
    for (int i = 0; i < 2; i++)
        zactor_destroy(&t->watch[i]);
    zsock_destroy(&t->from_trunks);
    zsock_destroy(&t->grads_in);
    zsock_destroy(&t->to_first);
    zsock_destroy(&t->to_last);
    sl_wire_decoder_destroy(&t->decoder);
    msgpack_sbuffer_destroy(&t->out);
    free(t->act);
    free(t->act2);
    free(t->grad);
    free(t->grad2);
    free(t);
    *self = NULL;
}

long sl_trainer_step_count(const sl_trainer *self) { return self->steps; }
int sl_trainer_stages(const sl_trainer *self) { return self->n; }
sl_params *sl_trainer_params(sl_trainer *self, int i) { return &self->stages[i].params; }

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

/* ---- remote trunks ---- */

static int send_to(sl_trainer *t, zsock_t *sock, const sl_msg *m, const char *who, sl_err *err)
{
    if (sl_wire_encode(m, &t->out, err) != 0) return -1;
    while (zmq_send(zsock_resolve(sock), t->out.data, t->out.size, 0) < 0)
        if (zmq_errno() != EINTR) return sl_fail(err, "cannot send to %s: %s", who, zmq_strerror(zmq_errno()));
    return 0;
}

/* A monitor of sock's dropped connections (the peer process stopped or its host went away). */
static zactor_t *watch_socket(zsock_t *sock)
{
    zactor_t *m = zactor_new(zmonitor, sock);
    if (!m) return NULL;
    zstr_sendx(m, "LISTEN", "DISCONNECTED", NULL);
    zstr_sendx(m, "START", NULL);
    zsock_wait(m);
    return m;
}

/* A dropped connection reported by watch i, as the trainer's error. */
static int connection_lost(sl_trainer *t, int i, sl_msg_kind kind, sl_err *err)
{
    zmsg_t *event = zmsg_recv(t->watch[i]);
    char *name = event ? zmsg_popstr(event) : NULL, *value = event ? zmsg_popstr(event) : NULL;
    char *endpoint = event ? zmsg_popstr(event) : NULL;
    sl_fail(err,
            "lost the connection to node %s (%s) while waiting for a %s message in step %ld: the node stopped "
            "or its host is unreachable",
            t->watched[i], endpoint ? endpoint : "?", sl_msg_kind_name(kind), t->steps + 1);
    free(name);
    free(value);
    free(endpoint);
    zmsg_destroy(&event);
    return -1;
}

/* Waits for a message of kind and step on either socket; copies its payload into out when
 * given. A node's error, or a dropped connection to the first or last trunk, ends the wait. */
static int await(sl_trainer *t, sl_msg_kind kind, uint64_t step, float *out, double *gnorm2, sl_err *err)
{
    zmq_pollitem_t items[4] = {{.socket = zsock_resolve(t->from_trunks), .events = ZMQ_POLLIN},
                               {.socket = zsock_resolve(t->grads_in), .events = ZMQ_POLLIN},
                               {.socket = zsock_resolve(t->watch[0]), .events = ZMQ_POLLIN},
                               {.socket = zsock_resolve(t->watch[1]), .events = ZMQ_POLLIN}};
    const sl_config *c = &t->stages[0].params.cfg;
    const uint32_t rows = (uint32_t)(t->opts.batch * t->opts.seq_len);
    sl_wire_limits limits = {
        .n_embd = (uint32_t)c->n_embd, .n_positions = (uint32_t)c->n_positions, .max_bytes = t->topo.max_message};
    double deadline = sl_now() + t->topo.timeout;
    for (;;) {
        double left = deadline - sl_now();
        int ready = left > 0 ? zmq_poll(items, 4, (long)(left * 1000) + 1) : 0;
        if (ready < 0 && zmq_errno() == EINTR) continue; /* a signal: the caller stops after this step */
        if (ready <= 0)
            return sl_fail(err,
                           "no %s message from the trunks within %g s in step %ld (are they running? "
                           "zmq-splitlearn-launch TOPOLOGY --only trunk1 ...)",
                           sl_msg_kind_name(kind), t->topo.timeout, t->steps + 1);
        for (int i = 0; i < 2; i++)
            if (items[2 + i].revents & ZMQ_POLLIN) return connection_lost(t, i, kind, err);
        for (int i = 0; i < 2; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            zmq_msg_t frame;
            zmq_msg_init(&frame);
            if (zmq_msg_recv(&frame, items[i].socket, 0) < 0) continue;
            sl_msg m;
            sl_err bad;
            int rc = 1;
            if (sl_wire_decode(t->decoder, zmq_msg_data(&frame), zmq_msg_size(&frame), &limits, &m, &bad) == 0 &&
                m.session == t->run_id) {
                if (m.kind == SL_MSG_ERROR)
                    rc = sl_fail(err, "node %s: %s: %s", m.node, m.code, m.message);
                else if (m.kind == kind && m.step == step && out && m.rows != rows)
                    rc = sl_fail(err, "a %s message of %u rows came back for a batch of %u rows",
                                 sl_msg_kind_name(kind), m.rows, rows);
                else if (m.kind == kind && m.step == step) {
                    if (out) sl_msg_copy_x(&m, out); /* its width is the model's: the decoder checked */
                    if (gnorm2) *gnorm2 = m.gnorm2;
                    rc = 0;
                }
            }
            zmq_msg_close(&frame);
            if (rc != 1) return rc;
        }
    }
}

/* Bottom here, trunks there, top here; then the gradient the same way back. */
/* trunks_norm2, when not NULL, asks the trunks for their gradient norms (see wire.h "gnorm2"). */
static int run_remote(sl_trainer *t, const int32_t *ids, const int32_t *targets, bool backward, bool update, float lr,
                      float grad_scale, double *trunks_norm2, float *loss, sl_err *err)
{
    stage *bottom = &t->stages[0], *top = &t->stages[t->n - 1];
    const int rows = t->opts.batch * t->opts.seq_len, C = bottom->params.cfg.n_embd;
    uint64_t step = ++t->message;
    sl_msg fwd = {.kind = SL_MSG_FORWARD,
                  .session = t->run_id,
                  .step = step,
                  .train = true,
                  .batch = (uint32_t)t->opts.batch,
                  .has_at_step = true,
                  .at_step = (uint64_t)t->steps,
                  .x = t->act,
                  .rows = (uint32_t)rows,
                  .cols = (uint32_t)C,
                  .dtype = t->topo.activations};
    snprintf(fwd.reply_to, sizeof fwd.reply_to, "%s", t->topo.nodes[0].listen);
    if (sl_train_forward(bottom->train, ids, NULL, NULL, t->act, NULL, err) != 0 ||
        send_to(t, t->to_first, &fwd, t->topo.nodes[1].name, err) != 0 ||
        await(t, SL_MSG_FORWARD, step, t->act2, NULL, err) != 0 ||
        sl_train_forward(top->train, NULL, t->act2, targets, NULL, loss, err) != 0)
        return -1;
    if (!backward) return 0;
    sl_msg back = {.kind = SL_MSG_BACKWARD,
                   .session = t->run_id,
                   .step = step,
                   .x = t->grad,
                   .rows = (uint32_t)rows,
                   .cols = (uint32_t)C,
                   .dtype = t->topo.activations,
                   .update = update,
                   .lr = lr,
                   .weight_decay = t->opts.adamw.weight_decay,
                   .grad_scale = grad_scale,
                   .has_gnorm2 = trunks_norm2 != NULL};
    snprintf(back.reply_to, sizeof back.reply_to, "%s", t->topo.nodes[0].listen);
    if (sl_train_backward(top->train, NULL, t->grad, err) != 0 ||
        send_to(t, t->to_last, &back, t->topo.nodes[t->topo.n_nodes - 2].name, err) != 0 ||
        await(t, SL_MSG_BACKWARD, step, t->grad2, trunks_norm2, err) != 0)
        return -1;
    return sl_train_backward(bottom->train, t->grad2, NULL, err);
}

static zsock_t *socket_at(int type, const char *endpoint, bool bind, const sl_topology *topo, sl_err *err)
{
    zsock_t *s = zsock_new(type);
    if (!s) {
        sl_fail(err, "cannot create a socket");
        return NULL;
    }
    zsock_set_maxmsgsize(s, (int64_t)topo->max_message);
    zsock_set_sndhwm(s, topo->hwm);
    zsock_set_rcvhwm(s, topo->hwm);
    zsock_set_linger(s, 1000);
    zsock_set_sndtimeo(s, (int)(topo->timeout * 1000));
    int rc = bind ? zsock_bind(s, "%s", endpoint) : zsock_connect(s, "%s", endpoint);
    if (rc < 0) {
        sl_fail(err, "cannot %s %s: %s", bind ? "listen on" : "connect to", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&s);
    }
    return s;
}

/* Sends kind (save or load) with dir to every trunk and waits for each one's ack. */
static int command_trunks(sl_trainer *t, sl_msg_kind kind, const char *dir, float loss, sl_err *err)
{
    uint64_t step = ++t->message;
    for (int i = 1; i < t->n - 1; i++) {
        const sl_topo_node *node = &t->topo.nodes[i];
        sl_msg m = {.kind = kind, .session = t->run_id, .step = step};
        snprintf(m.reply_to, sizeof m.reply_to, "%s", t->topo.nodes[0].listen);
        snprintf(m.dir, sizeof m.dir, "%s", dir);
        m.has_at_step = kind == SL_MSG_LOAD;
        m.at_step = (uint64_t)t->steps;
        m.has_loss = kind == SL_MSG_SAVE && isfinite(loss);
        m.loss = loss;
        zsock_t *push = socket_at(ZMQ_PUSH, node->listen, false, &t->topo, err);
        int rc = push ? send_to(t, push, &m, node->name, err) : -1;
        zsock_destroy(&push);
        if (rc != 0 || await(t, SL_MSG_ACK, step, NULL, NULL, err) != 0) return -1;
    }
    return 0;
}

sl_trainer *sl_trainer_new_remote(const sl_topology *topo, const char *resume, const sl_trainer_opts *opts, sl_err *err)
{
    if (topo->n_nodes < 3) {
        sl_fail(err, "%s has no trunk: train it in this process", topo->path);
        return NULL;
    }
    sl_trainer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->opts = *opts;
    t->topo = *topo;
    t->remote = true;
    msgpack_sbuffer_init(&t->out);
    while (!t->run_id && getrandom(&t->run_id, sizeof t->run_id, 0) != sizeof t->run_id) {
    }
    /* The split says what each stage is; a checkpoint's bottom and top are read from its files
     * here, the trunks' from theirs on their hosts (a checkpoint needs no shared directory). */
    sl_part_info infos[SL_MAX_SPLITS + 1];
    int n = sl_split_read_index(topo->parts, infos, SL_MAX_SPLITS + 1, err);
    int rc = n == topo->n_nodes
                 ? 0
                 : (n < 0 ? -1 : sl_fail(err, "%s: %d parts for %d nodes", topo->parts, n, topo->n_nodes));
    const int local[2] = {0, n - 1};
    t->n = n;
    long step = rc == 0 && resume ? checkpoint_step(resume, infos, local, 2, err) : -1; /* -1: the split */
    if (rc == 0 && resume && step < 0) rc = -1;
    for (int k = 0; rc == 0 && k < 2; k++)
        rc = load_stage_from(&t->stages[local[k]], &infos[local[k]], resume ? resume : topo->parts, step, topo->verify,
                             opts, err);
    t->steps = rc == 0 ? sl_train_steps(t->stages[0].train) : 0;
    if (rc == 0 && resume) snprintf(t->saved_dir, sizeof t->saved_dir, "%s", resume), t->saved_step = step;
    for (int i = 1; rc == 0 && i < n - 1; i++)
        t->stages[i].info = infos[i];
    size_t rows = (size_t)opts->batch * opts->seq_len, C = rc == 0 ? (size_t)infos[0].cfg.n_embd : 0;
    if (rc == 0) {
        t->act = malloc(rows * C * sizeof(float));
        t->act2 = malloc(rows * C * sizeof(float));
        t->grad = malloc(rows * C * sizeof(float));
        t->grad2 = malloc(rows * C * sizeof(float));
        t->decoder = sl_wire_decoder_new();
        if (!t->act || !t->act2 || !t->grad || !t->grad2 || !t->decoder) rc = sl_fail(err, "out of memory");
    }
    if (rc == 0 && (!(t->grads_in = socket_at(ZMQ_PULL, topo->nodes[0].listen, true, topo, err)) ||
                    !(t->from_trunks = socket_at(ZMQ_PULL, topo->nodes[n - 1].listen, true, topo, err)) ||
                    !(t->to_first = socket_at(ZMQ_PUSH, topo->nodes[1].listen, false, topo, err)) ||
                    !(t->to_last = socket_at(ZMQ_PUSH, topo->nodes[n - 2].listen, false, topo, err))))
        rc = -1;
    if (rc == 0) {
        t->watched[0] = t->topo.nodes[1].name;
        t->watched[1] = t->topo.nodes[n - 2].name;
        if (!(t->watch[0] = watch_socket(t->to_first)) || !(t->watch[1] = watch_socket(t->to_last)))
            rc = sl_fail(err, "cannot monitor the connections to the trunks");
    }
    if (rc == 0 && resume) rc = command_trunks(t, SL_MSG_LOAD, resume, NAN, err);
    if (rc != 0) sl_trainer_destroy(&t);
    return t;
}

/* Forward through every stage; with backward, the gradient back through every stage. */
static int run_chain(sl_trainer *t, const int32_t *ids, const int32_t *targets, bool backward, float *loss, sl_err *err)
{
    float *in = NULL, *out = t->act;
    for (int i = 0; i < t->n; i++) {
        bool top = i == t->n - 1;
        if (sl_train_forward(t->stages[i].train, i == 0 ? ids : NULL, in, top ? targets : NULL, top ? NULL : out, loss,
                             err) != 0)
            return -1;
        in = out;
        out = out == t->act ? t->act2 : t->act;
    }
    if (!backward) return 0;
    const float *dout = NULL;
    float *din = t->grad;
    for (int i = t->n - 1; i >= 0; i--) {
        if (sl_train_backward(t->stages[i].train, dout, i == 0 ? NULL : din, err) != 0) return -1;
        dout = din;
        din = din == t->grad ? t->grad2 : t->grad;
    }
    return 0;
}

/* The global squared gradient norm of the mean over micro-batches, combined in one order for
 * both modes: the trunks from last to first (as a backward message collects them), then the top,
 * then the bottom. trunks_norm2 < 0: the trunks are here. */
static double global_norm2(sl_trainer *t, float scale, double trunks_norm2)
{
    if (trunks_norm2 < 0) {
        trunks_norm2 = 0;
        for (int i = t->n - 2; i >= 1; i--)
            trunks_norm2 += sl_train_grad_norm2(t->stages[i].train, scale);
    }
    double top = sl_train_grad_norm2(t->stages[t->n - 1].train, scale);
    return trunks_norm2 + top + sl_train_grad_norm2(t->stages[0].train, scale);
}

/* Sends a clipped step's update along the trunks and waits for it to come back through them. */
static int update_remote_trunks(sl_trainer *t, float lr, float scale, sl_err *err)
{
    sl_msg m = {.kind = SL_MSG_UPDATE,
                .session = t->run_id,
                .step = ++t->message,
                .lr = lr,
                .weight_decay = t->opts.adamw.weight_decay,
                .grad_scale = scale};
    snprintf(m.reply_to, sizeof m.reply_to, "%s", t->topo.nodes[0].listen);
    if (send_to(t, t->to_first, &m, t->topo.nodes[1].name, err) != 0) return -1;
    return await(t, SL_MSG_UPDATE, m.step, NULL, NULL, err);
}

int sl_trainer_step(sl_trainer *t, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err)
{
    const sl_trainer_opts *o = &t->opts;
    const size_t micro = (size_t)o->batch * o->seq_len;
    const int K = o->grad_accum > 0 ? o->grad_accum : 1;
    for (int i = 0; i < t->n; i++)
        if (t->stages[i].train) sl_train_zero_grad(t->stages[i].train);
    double total = 0;
    const float lr = sl_trainer_lr(t);
    const bool clip = o->grad_clip > 0;
    float scale = 1.0f / (float)K; /* the mean over micro-batches */
    double trunks_norm2 = -1;
    for (int k = 0; k < K; k++) {
        float l;
        bool last = k == K - 1;
        int rc = t->remote ? run_remote(t, ids + k * micro, targets + k * micro, true, last && !clip, lr, scale,
                                        last && clip ? &trunks_norm2 : NULL, &l, err)
                           : run_chain(t, ids + k * micro, targets + k * micro, true, &l, err);
        if (rc != 0) return -1;
        total += l;
    }
    if (clip) {
        double norm = sqrt(global_norm2(t, scale, trunks_norm2));
        if (norm > o->grad_clip) scale *= (float)(o->grad_clip / norm);
        if (t->remote && update_remote_trunks(t, lr, scale, err) != 0) return -1;
    }
    sl_adamw opt = o->adamw;
    opt.lr = lr;
    for (int i = 0; i < t->n; i++) {
        if (!t->stages[i].train) continue; /* a remote trunk updates itself */
        sl_params *g = sl_train_grads(t->stages[i].train);
        if (scale != 1.0f)
            for (size_t k = 0; k < g->owned_count; k++)
                g->owned[k] *= scale;
        sl_train_step(t->stages[i].train, &opt);
    }
    t->steps++;
    *loss = (float)(total / K);
    return 0;
}

int sl_trainer_eval(sl_trainer *t, const int32_t *ids, const int32_t *targets, float *loss, sl_err *err)
{
    if (!t->remote) return run_chain(t, ids, targets, false, loss, err);
    /* The trunks keep this forward's activations; the next training forward replaces them. */
    return run_remote(t, ids, targets, false, false, 0, 1, NULL, loss, err);
}

/* Every remote trunk writes its part and optimizer state under dir (on its own host). */
static int save_remote_trunks(sl_trainer *t, const char *dir, float loss, sl_part_info *saved, sl_err *err)
{
    if (command_trunks(t, SL_MSG_SAVE, dir, loss, err) != 0) return -1;
    for (int i = 1; i < t->n - 1; i++) {
        saved[i] = t->stages[i].info; /* for split.json: the trunk wrote its files on its host */
        if (sl_part_checkpoint_file(dir, saved[i].role, saved[i].name, saved[i].file, sizeof saved[i].file, err) != 0)
            return -1;
    }
    return 0;
}

int sl_trainer_save(sl_trainer *t, const char *dir, float loss, sl_err *err)
{
    sl_part_info saved[SL_MAX_SPLITS + 1];
    bool same_dir = t->saved_dir[0] && sl_same_dir(dir, t->saved_dir);
    if (same_dir && t->saved_step == t->steps) return 0; /* this run's save of this step is there */
    const long base = same_dir ? t->saved_step : -1;
    if (sl_mkdirs(dir, err) != 0) return -1;
    if (t->remote && save_remote_trunks(t, dir, loss, saved, err) != 0) return -1;
    for (int i = 0; i < t->n; i++) {
        stage *s = &t->stages[i];
        if (!s->train) continue; /* saved by its node */
        if (sl_part_write_checkpoint(&s->params, s->info.name, s->info.role, dir, t->steps, loss, &saved[i], err) != 0)
            return -1;
        char state[PATH_MAX + 32];
        sl_part_sibling(saved[i].file, "_optim.safetensors", state, sizeof state);
        if (sl_train_save_state(s->train, state, err) != 0 ||
            sl_part_commit_checkpoint(dir, base, t->steps, &saved[i], err) != 0)
            return -1;
    }
    if (sl_split_write_index(dir, "checkpoint", saved, t->n, NULL, err) != 0) return -1;
    snprintf(t->saved_dir, sizeof t->saved_dir, "%s", dir);
    t->saved_step = t->steps;
    return 0;
}
