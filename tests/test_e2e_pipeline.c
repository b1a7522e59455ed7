/* test_e2e_pipeline.c — real node processes over tcp:// and ipc://: the pipeline's answers
 * (tokens and prompt logits) equal the monolithic model's for every split of tiny-b (3 and 5
 * stages) and for tiny-a's references; two clients at once; garbage sent to a node; a node
 * killed and restarted mid-session; a missing stage named on timeout; the launcher's stop.
 * Split learning with trunks on their nodes: exactly the in-process chain's losses and weights
 * (3 and 4 stages, accumulation, clipping, save, resume, SIGTERM), what trunks receive, training
 * messages that do not fit a trunk's state, and a trunk that answers with too many rows. */
#include "clock.h"
#include "client.h"
#include "fileio.h"
#include "fixtures.h"
#include "gpt2.h"
#include "part.h"
#include "trainer.h"
#include "procs.h"
#include "wire.h"

#include <czmq.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmp[256], bin[512];
static int next_port; /* the next of this process's ports (check_port) */

/* ---- a split of a fixture and its topology ---- */

typedef struct pipeline {
    char topo[PATH_MAX], parts[PATH_MAX], ready[PATH_MAX], log[PATH_MAX];
    int n_stages;
    pid_t launcher;
} pipeline;

static int make_pipeline(pipeline *p, const char *model, const int *splits, int n_splits, bool ipc, const char *label)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", check_fixtures(), model);
    snprintf(p->parts, sizeof p->parts, "%s/parts-%s", tmp, label);
    snprintf(p->topo, sizeof p->topo, "%s/%s.ini", tmp, label);
    snprintf(p->ready, sizeof p->ready, "%s/%s.ready", tmp, label);
    snprintf(p->log, sizeof p->log, "%s/%s.log", tmp, label);
    p->n_stages = n_splits + 1;
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    sl_part_info parts[SL_MAX_SPLITS + 1];
    sl_split_request req = {.model_path = src,
                            .name = model,
                            .splits = splits,
                            .n_splits = n_splits,
                            .format = SL_WF_F32,
                            .out_dir = p->parts};
    int rc = ck ? sl_split_write(ck, &req, parts, &err) : -1;
    sl_hf_model_destroy(&ck);
    if (!CHECK(rc == 0, "%s: split: %s", label, err.msg)) return -1;
    char text[8192];
    int len = snprintf(text, sizeof text, "[pipeline]\nparts = %s\ntimeout = 20\ncheckpoint_root = %s\ntrain = yes\n",
                       p->parts, tmp);
    for (int i = 0; i <= n_splits; i++) {
        char endpoint[300];
        if (ipc)
            snprintf(endpoint, sizeof endpoint, "ipc://%s/%s-%d.sock", tmp, label, i);
        else
            snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", check_port(next_port++));
        len += snprintf(text + len, sizeof text - (size_t)len, "\n[node.%s]\nrole = %s\nlayers = %d-%d\nlisten = %s\n",
                        parts[i].name, sl_role_name(parts[i].role), parts[i].first, parts[i].last, endpoint);
    }
    return sl_write_text_file(p->topo, text, &err);
}

static int launch(pipeline *p)
{
    char prog[600];
    snprintf(prog, sizeof prog, "%s/zmq-splitlearn-launch", bin);
    char *argv[] = {prog, p->topo, "--ready-file", p->ready, NULL};
    unlink(p->ready);
    p->launcher = spawn(argv, p->log);
    if (CHECK(wait_for(p->ready, NULL, 30), "pipeline %s not ready in 30 s", p->topo)) return 0;
    sl_err err;
    char *log = sl_read_text_file(p->log, 1 << 20, &err);
    fprintf(stderr, "launcher log:\n%s\n", log ? log : err.msg);
    free(log);
    return -1;
}

static void stop(pipeline *p)
{
    if (p->launcher <= 0) return;
    kill(p->launcher, SIGTERM);
    int status = 0;
    waitpid(p->launcher, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "launcher of %s stops cleanly (status %d)", p->topo, status);
    p->launcher = 0;
}

/* ---- the monolithic reference ---- */

typedef struct answer {
    int32_t tokens[64];
    int n;
    float *logits; /* [T, V] */
} answer;

static void reference(const char *model, const int32_t *ids, int T, int max_new, answer *a)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", check_fixtures(), model);
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    const sl_config *c = sl_hf_model_config(ck);
    sl_params p;
    sl_params_load(&p, ck, 0, c->n_layer, true, true, false, &err);
    sl_runner *s = sl_runner_new(&p, 128, NULL, &err);
    sl_kv *kv = sl_kv_new(&p, T + max_new, SL_F32, &err);
    a->logits = malloc((size_t)T * c->vocab_size * sizeof(float));
    float *last = malloc((size_t)c->vocab_size * sizeof(float));
    sl_runner_forward(s, kv, T, ids, NULL, a->logits, SL_OUT_LOGITS_ALL, &err);
    memcpy(last, a->logits + (size_t)(T - 1) * c->vocab_size, (size_t)c->vocab_size * sizeof(float));
    a->n = 0;
    for (int i = 0; i < max_new; i++) {
        int32_t best = 0;
        for (int v = 1; v < c->vocab_size; v++)
            if (last[v] > last[best]) best = v;
        if (best == c->eos_token_id) break;
        a->tokens[a->n++] = best;
        if (i + 1 < max_new) sl_runner_forward(s, kv, 1, &best, NULL, last, SL_OUT_LOGITS_LAST, &err);
    }
    free(last);
    sl_kv_destroy(&kv);
    sl_runner_destroy(&s);
    sl_params_free(&p);
    sl_hf_model_destroy(&ck);
}

typedef struct ask {
    const sl_topology *topo;
    const int32_t *ids;
    int T, max_new, vocab, n_positions;
    answer got;
    int rc, resends;
    char err[1024];
    void (*on_token)(void *, int32_t);
    void *user; /* for on_token */
} ask;

static void *ask_pipeline(void *arg)
{
    ask *q = arg;
    sl_err err = {{0}};
    sl_client *c = sl_client_new(q->topo, NULL, &err);
    q->got.logits = malloc((size_t)q->T * q->vocab * sizeof(float));
    sl_client_request req = {.ids = q->ids,
                             .n_ids = q->T,
                             .max_new_tokens = q->max_new,
                             .sampling = SL_SAMPLING_GREEDY,
                             .eos_token = q->vocab == 50257 ? 50256 : q->vocab - 1,
                             .logits = q->got.logits,
                             .vocab_size = q->vocab,
                             .n_positions = q->n_positions,
                             .timeout = 20,
                             .on_token = q->on_token,
                             .ctx = q};
    q->rc = c ? sl_client_generate(c, &req, q->got.tokens, &q->got.n, &err) : -1;
    q->resends = c ? sl_client_resends(c) : 0;
    snprintf(q->err, sizeof q->err, "%s", err.msg);
    sl_client_destroy(&c);
    return NULL;
}

static void compare(const char *label, const ask *q, const answer *want, int vocab)
{
    CHECK(q->rc == 0, "%s: client failed: %s", label, q->err);
    bool same = q->got.n == want->n && memcmp(q->got.tokens, want->tokens, (size_t)want->n * sizeof(int32_t)) == 0;
    CHECK(same, "%s: %d tokens from the pipeline differ from the monolithic %d", label, q->got.n, want->n);
    char what[128];
    snprintf(what, sizeof what, "%s: prompt logits", label);
    CHECK_CLOSE(q->got.logits, want->logits, (size_t)q->T * vocab, 1e-6, what);
}

static const int32_t prompt_b[] = {625, 684, 897, 578, 775, 833, 225, 12, 400};

static void test_every_split(void)
{
    answer want;
    reference("tiny-b", prompt_b, 9, 12, &want);
    int combos = 0;
    for (int a = 1; a < 5; a++)
        for (int b = a + 1; b < 5; b++) {
            char label[32];
            snprintf(label, sizeof label, "b-%d-%d", a, b);
            int splits[2] = {a, b};
            pipeline p = {0};
            if (make_pipeline(&p, "tiny-b", splits, 2, combos % 2 == 1, label) != 0 || launch(&p) != 0) {
                stop(&p);
                continue;
            }
            sl_topology topo;
            sl_err err;
            sl_topology_load(p.topo, &topo, true, &err);
            ask q = {.topo = &topo, .ids = prompt_b, .T = 9, .max_new = 12, .vocab = 1000, .n_positions = 64};
            ask_pipeline(&q);
            compare(label, &q, &want, 1000);
            free(q.got.logits);
            stop(&p);
            combos++;
        }
    CHECK(combos == 6, "all 6 three-stage splits of tiny-b ran (%d)", combos);
    free(want.logits);
}

static void test_five_stages_and_two_clients(void)
{
    int splits[4] = {1, 2, 3, 4};
    pipeline p = {0};
    if (make_pipeline(&p, "tiny-b", splits, 4, false, "b-5") != 0 || launch(&p) != 0) {
        stop(&p);
        return;
    }
    sl_topology topo;
    sl_err err;
    CHECK(sl_topology_load(p.topo, &topo, true, &err) == 0, "%s", err.msg);
    static const int32_t other[] = {944, 3, 17, 99};
    answer want_a, want_b;
    reference("tiny-b", prompt_b, 9, 16, &want_a);
    reference("tiny-b", other, 4, 16, &want_b);
    ask qa = {.topo = &topo, .ids = prompt_b, .T = 9, .max_new = 16, .vocab = 1000, .n_positions = 64};
    ask qb = {.topo = &topo, .ids = other, .T = 4, .max_new = 16, .vocab = 1000, .n_positions = 64};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, ask_pipeline, &qa);
    pthread_create(&tb, NULL, ask_pipeline, &qb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    compare("5 stages, client A", &qa, &want_a, 1000);
    compare("5 stages, client B (concurrent)", &qb, &want_b, 1000);
    free(qa.got.logits);
    free(qb.got.logits);
    free(want_a.logits);
    free(want_b.logits);
    stop(&p);
}

static void test_tiny_a_references(void)
{
    fixture_prompt prompts[4];
    if (fixture_prompts("tiny-a", prompts, 4) < 4) return;
    int splits[2] = {2, 4};
    pipeline p = {0};
    if (make_pipeline(&p, "tiny-a", splits, 2, true, "a-3") != 0 || launch(&p) != 0) {
        stop(&p);
        return;
    }
    sl_topology topo;
    sl_err err;
    sl_topology_load(p.topo, &topo, true, &err);
    char refs_path[PATH_MAX];
    fixture_path(refs_path, sizeof refs_path, "tiny-a", "refs.safetensors");
    sl_st_file *refs = sl_st_open(refs_path, &err);
    for (int i = 0; i < 4 && refs; i++) {
        fixture_prompt *fp = &prompts[i];
        int steps = 0;
        while (steps < fp->n_greedy && fp->margins[steps] >= 1e-3)
            steps++;
        ask q = {.topo = &topo, .ids = fp->ids, .T = fp->n_ids, .max_new = steps, .vocab = 50257, .n_positions = 128};
        ask_pipeline(&q);
        CHECK(q.rc == 0 && q.got.n == steps && memcmp(q.got.tokens, fp->greedy, (size_t)steps * 4) == 0,
              "tiny-a p%d: pipeline greedy equals the reference (%d steps): %s", i, steps, q.err);
        char name[32], what[64];
        snprintf(name, sizeof name, "p%d.logits_last", i);
        snprintf(what, sizeof what, "tiny-a p%d pipeline logits", i);
        const float *ref = fixture_f32(refs, name, 50257);
        if (ref && q.rc == 0) CHECK_CLOSE(q.got.logits + (size_t)(fp->n_ids - 1) * 50257, ref, 50257, 1e-5, what);
        free(q.got.logits);
    }
    sl_st_close(&refs);
    stop(&p);
}

/* A connection to a node's listen socket, as a client or a previous stage has: answers to what
 * is sent on it come back on it. */
static zsock_t *probe(const char *endpoint)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    zsock_set_linger(s, 2000);
    zsock_set_rcvtimeo(s, 1000);
    zsock_connect(s, "%s", endpoint);
    return s;
}

/* Sends frames straight to a node's listen socket on a connection of their own. */
static void send_raw(const char *endpoint, const void *data, size_t len)
{
    zsock_t *s = probe(endpoint);
    zmq_send(zsock_resolve(s), data, len, 0);
    zsock_destroy(&s);
}

/* tiny-b split at 2,3 on tcp, every node running, and its topology. */
static int start_tiny_b(pipeline *p, const char *label, sl_topology *topo)
{
    int splits[2] = {2, 3};
    sl_err err;
    if (make_pipeline(p, "tiny-b", splits, 2, false, label) != 0 || launch(p) != 0 ||
        !CHECK(sl_topology_load(p->topo, topo, true, &err) == 0, "%s: %s", label, err.msg)) {
        stop(p);
        return -1;
    }
    return 0;
}

/* The pipeline still answers prompt_b exactly as the monolithic model does. */
static void still_exact(const sl_topology *topo, const char *label)
{
    answer want;
    reference("tiny-b", prompt_b, 9, 8, &want);
    ask q = {.topo = topo, .ids = prompt_b, .T = 9, .max_new = 8, .vocab = 1000, .n_positions = 64};
    ask_pipeline(&q);
    compare(label, &q, &want, 1000);
    free(q.got.logits);
    free(want.logits);
}

static void test_garbage(void)
{
    pipeline p = {0};
    sl_topology topo;
    sl_err err;
    if (start_tiny_b(&p, "b-garbage", &topo) != 0) return;
    unsigned char noise[4096];
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (unsigned char)(i * 131 + 7);
    const unsigned char huge_bin[] = {0x81, 0xa1, 'x', 0xc6, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
    const unsigned char huge_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff};
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "hello", 5);
    msgpack_pack_str_with_body(&pk, "world", 5);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    /* A forward whose x claims more rows than it carries. */
    sl_msg lie = {
        .kind = SL_MSG_FORWARD, .session = {{9}}, .step = 0, .pos = 0, .rows = 3, .cols = 48, .dtype = SL_F32};
    float x[3 * 48] = {0};
    lie.x = x;
    msgpack_sbuffer lie_buf;
    msgpack_sbuffer_init(&lie_buf);
    sl_wire_encode(&lie, &lie_buf, &err);
    for (int stage = 0; stage < 3; stage++) {
        const char *ep = topo.nodes[stage].listen;
        for (int k = 1; k <= 64; k++)
            send_raw(ep, noise, (size_t)k * 61 % sizeof noise + 1);
        send_raw(ep, huge_bin, sizeof huge_bin);
        send_raw(ep, huge_map, sizeof huge_map);
        send_raw(ep, buf.data, buf.size);
        /* shape [3, 48] but only 2 rows of bytes: cut the payload short inside the frame */
        send_raw(ep, lie_buf.data, lie_buf.size - 4 * 48);
    }
    /* The bottom answers a well-formed message of the wrong kind with an error, on its connection. */
    zsock_t *client = probe(topo.nodes[0].listen);
    zsock_set_rcvtimeo(client, 5000);
    zmq_send(zsock_resolve(client), lie_buf.data, lie_buf.size, 0);
    zmsg_t *reply = zmsg_recv(client);
    zframe_t *frame = reply ? zmsg_first(reply) : NULL;
    sl_msg m;
    sl_wire_decoder *dec = sl_wire_decoder_new();
    int rc = frame ? sl_wire_decode(dec, zframe_data(frame), zframe_size(frame), NULL, &m, &err) : -1;
    CHECK(rc == 0 && m.kind == SL_MSG_ERROR && strcmp(m.code, "bad_message") == 0 && strstr(m.message, "token ids") &&
              strcmp(m.node, "bottom") == 0,
          "bottom answers activations with an error naming itself: %s", rc == 0 ? m.message : "(nothing)");
    sl_wire_decoder_destroy(&dec);
    zmsg_destroy(&reply);
    zsock_destroy(&client);
    msgpack_sbuffer_destroy(&buf);
    msgpack_sbuffer_destroy(&lie_buf);
    still_exact(&topo, "after garbage");
    CHECK(file_has(p.log, "bad_message"), "nodes log the bad messages");
    stop(&p);
}

/* ---- training messages that do not fit the trunk's state ---- */

/* Sends m on link (a probe of a node), then waits up to 5 s for an answer of kind on it (an
 * error: one whose message contains want). */
static bool answered(zsock_t *link, sl_msg *m, sl_msg_kind kind, const char *want)
{
    sl_err err;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    if (sl_wire_encode(m, &buf, &err) == 0) zmq_send(zsock_resolve(link), buf.data, buf.size, 0);
    msgpack_sbuffer_destroy(&buf);
    sl_wire_decoder *dec = sl_wire_decoder_new();
    bool found = false;
    for (double end = sl_now() + 5; !found && sl_now() < end;) {
        zmsg_t *reply = zmsg_recv(link);
        zframe_t *frame = reply ? zmsg_first(reply) : NULL;
        sl_msg r;
        found = frame && sl_wire_decode(dec, zframe_data(frame), zframe_size(frame), NULL, &r, &err) == 0 &&
                r.kind == kind && (kind != SL_MSG_ERROR || strstr(r.message, want));
        zmsg_destroy(&reply);
    }
    sl_wire_decoder_destroy(&dec);
    return found;
}

static bool refused_with(zsock_t *link, sl_msg *m, const char *want) { return answered(link, m, SL_MSG_ERROR, want); }

/* A step-0 checkpoint of layers [2,3) of a fixture model, as the trunk part `name`, in dir. */
static bool write_trunk_checkpoint(const char *model, const char *name, const char *dir, sl_err *err)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", check_fixtures(), model);
    sl_hf_model *ck = sl_hf_model_open(src, err);
    sl_params p;
    sl_part_info info;
    bool loaded = ck && sl_params_load(&p, ck, 2, 3, false, false, true, err) == 0;
    bool written = loaded && sl_part_write_checkpoint(&p, name, SL_ROLE_TRUNK, dir, 0, NAN, &info, err) == 0 &&
                   sl_part_commit_checkpoint(dir, -1, 0, &info, err) == 0;
    if (loaded) sl_params_free(&p);
    sl_hf_model_destroy(&ck);
    return written;
}

static void test_training_garbage(void)
{
    pipeline p = {0};
    sl_topology topo;
    sl_err err;
    if (start_tiny_b(&p, "b-train-garbage", &topo) != 0) return;
    zsock_t *trunk = probe(topo.nodes[1].listen);
    float x[4 * 48] = {0};
    sl_msg back = {
        .kind = SL_MSG_BACKWARD, .session = {{77}}, .step = 1, .x = x, .rows = 2, .cols = 48, .grad_scale = 1};
    CHECK(refused_with(trunk, &back, "a backward comes from the next stage"),
          "a backward sent to a trunk's listen socket: refused (the state machine's refusals: test_trunk)");
    sl_msg fwd = {
        .kind = SL_MSG_FORWARD, .session = {{77}}, .step = 1, .train = true, .batch = 1, .x = x, .rows = 2, .cols = 48};
    CHECK(refused_with(trunk, &fwd, "in training the bottom and the top run inside"),
          "a training forward goes through the trunk (the top refuses it, the error comes back)");
    sl_msg update = {.kind = SL_MSG_UPDATE, .session = {{77}}, .step = 3, .lr = 1e-3f, .grad_scale = 1};
    CHECK(refused_with(trunk, &update, "has no gradients to apply"), "an update without a backward: refused");
    fwd.rows = 4;
    CHECK(refused_with(trunk, &fwd, "trains batches of 1 x 2 here, not 1 x 4"),
          "another batch shape within a run: refused");
    /* A checkpoint of another model (tiny-a, 32 wide) where this trunk's would be. */
    char other[400];
    snprintf(other, sizeof other, "%s/other-model", tmp);
    bool written = write_trunk_checkpoint("tiny-a", topo.nodes[1].name, other, &err);
    sl_msg load = {.kind = SL_MSG_LOAD, .session = {{78}}, .step = 1};
    snprintf(load.dir, sizeof load.dir, "%s", other);
    CHECK(written && refused_with(trunk, &load, "is a part of another model"),
          "a checkpoint of another model: refused (%s)", written ? "" : err.msg);
    /* The trunk's own model at step 0 (no optimizer state yet): loads, and trains on. */
    snprintf(other, sizeof other, "%s/step-0", tmp);
    written = write_trunk_checkpoint("tiny-b", topo.nodes[1].name, other, &err);
    snprintf(load.dir, sizeof load.dir, "%s", other);
    load.has_at_step = true;
    load.at_step = 0;
    fwd.session = (sl_id){{78}}, fwd.step = 2, fwd.rows = 2, fwd.has_at_step = true, fwd.at_step = 0;
    x[5] = 0;
    CHECK(written && answered(trunk, &load, SL_MSG_ACK, NULL), "a step-0 checkpoint loads");
    CHECK(refused_with(trunk, &fwd, "in training the bottom and the top run inside"),
          "... and its run trains on (the forward reaches the top)");
    fwd.step = 3, fwd.at_step = 7;
    CHECK(refused_with(trunk, &fwd, "has taken 0 optimizer steps in this run, the trainer 7"),
          "a trainer further on than the trunk (it restarted, or another run used it): refused");
    snprintf(load.dir, sizeof load.dir, "%s/../etc", tmp);
    CHECK(refused_with(trunk, &load, "'..' is not allowed"), "a checkpoint path with '..': refused");
    sl_msg save = {.kind = SL_MSG_SAVE, .session = {{78}}, .step = 2};
    snprintf(save.dir, sizeof save.dir, "/var/tmp/elsewhere");
    CHECK(refused_with(trunk, &save, "is outside"), "a save outside checkpoint_root: refused");
    zsock_destroy(&trunk);
    still_exact(&topo, "inference after refused training messages");
    stop(&p);
}

/* ---- a node killed and restarted mid-session ---- */

typedef struct restart {
    char prog[600], topo[PATH_MAX], log[PATH_MAX];
    pid_t pid;
    int kill_after, seen;
} restart;

static pid_t start_node(restart *r, const char *name)
{
    char *argv[] = {r->prog, r->topo, (char *)name, NULL};
    return spawn(argv, r->log);
}

static void kill_trunk_midway(void *ctx, int32_t token)
{
    (void)token;
    restart *r = ((ask *)ctx)->user;
    if (++r->seen != r->kill_after) return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    size_t before = 0;
    sl_err err;
    char *text = sl_read_text_file(r->log, 1 << 24, &err);
    if (text) before = strlen(text);
    free(text);
    r->pid = start_node(r, "trunk1");
    for (double end = sl_now() + 20; sl_now() < end; usleep(20000)) {
        text = sl_read_text_file(r->log, 1 << 24, &err);
        bool ready = text && strlen(text) > before && strstr(text + before, "trunk1: ready");
        free(text);
        if (ready) break;
    }
}

static void test_restart_and_timeout(void)
{
    int splits[2] = {2, 4};
    pipeline p = {0};
    if (make_pipeline(&p, "tiny-b", splits, 2, false, "b-restart") != 0) return;
    sl_topology topo;
    sl_err err;
    sl_topology_load(p.topo, &topo, true, &err);
    restart r = {.kill_after = 4};
    snprintf(r.prog, sizeof r.prog, "%s/zmq-splitlearn-node", bin);
    snprintf(r.topo, sizeof r.topo, "%s", p.topo);
    snprintf(r.log, sizeof r.log, "%s", p.log);
    const char *names[3] = {"bottom", "trunk1", "top"};
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = start_node(&r, names[i]);
    r.pid = pids[1];
    CHECK(wait_for(p.log, "bottom: ready", 20) && wait_for(p.log, "trunk1: ready", 20) &&
              wait_for(p.log, "top: ready", 20),
          "three nodes started by hand");
    answer want;
    reference("tiny-b", prompt_b, 9, 10, &want);
    ask q = {.topo = &topo,
             .ids = prompt_b,
             .T = 9,
             .max_new = 10,
             .vocab = 1000,
             .n_positions = 64,
             .on_token = kill_trunk_midway,
             .user = &r};
    ask_pipeline(&q);
    compare("trunk killed and restarted after 4 tokens", &q, &want, 1000);
    CHECK(q.resends >= 1, "the client re-sent the context (%d times)", q.resends);
    CHECK(file_has(p.log, "unknown_session"), "the restarted trunk reported the unknown session");
    free(q.got.logits);
    free(want.logits);

    /* Without the trunk, the client names it. */
    kill(r.pid, SIGTERM);
    waitpid(r.pid, NULL, 0);
    sl_client *c = sl_client_new(&topo, NULL, &err);
    int32_t out[4];
    int n;
    sl_client_request req = {.ids = prompt_b,
                             .n_ids = 9,
                             .max_new_tokens = 2,
                             .sampling = SL_SAMPLING_GREEDY,
                             .eos_token = -1,
                             .vocab_size = 1000,
                             .timeout = 1.0};
    int rc = sl_client_generate(c, &req, out, &n, &err);
    CHECK(rc == SL_CLIENT_TIMEOUT && strstr(err.msg, "trunk1") && strstr(err.msg, "stage 2 of 3") &&
              strstr(err.msg, "bottom"),
          "timeout names the silent stage: %s", err.msg);
    sl_client_destroy(&c);
    for (int i = 0; i < 3; i += 2) {
        kill(pids[i], SIGTERM);
        int status;
        waitpid(pids[i], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s exits 0 on SIGTERM", names[i]);
    }
}

/* ---- a trunk killed in the middle of a request, 20 times ---- */

typedef struct killer {
    restart r[2];     /* trunk1, trunk2 */
    int victim;       /* which of them */
    int fire_at;      /* the token after which the kill comes */
    useconds_t delay; /* and how long after it: inside the next request's flight */
    pthread_t thread;
    bool started;
} killer;

static void *kill_and_restart(void *arg)
{
    killer *k = arg;
    restart *r = &k->r[k->victim];
    usleep(k->delay);
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = start_node(r, k->victim ? "trunk2" : "trunk1");
    return NULL;
}

static void kill_at_token(void *ctx, int32_t token)
{
    (void)token;
    killer *k = ((ask *)ctx)->user;
    if (++k->r[0].seen == k->fire_at) k->started = pthread_create(&k->thread, NULL, kill_and_restart, k) == 0;
}

static void test_kill_mid_request(void)
{
    const int splits[3] = {1, 2, 4};
    pipeline p = {0};
    if (make_pipeline(&p, "tiny-b", splits, 3, false, "b-kill") != 0) return;
    sl_topology topo;
    sl_err err;
    sl_topology_load(p.topo, &topo, true, &err);
    killer k = {0};
    pid_t ends[2];
    const char *names[4] = {"bottom", "trunk1", "trunk2", "top"};
    for (int i = 0; i < 2; i++) {
        restart *r = &k.r[i];
        snprintf(r->prog, sizeof r->prog, "%s/zmq-splitlearn-node", bin);
        snprintf(r->topo, sizeof r->topo, "%s", p.topo);
        snprintf(r->log, sizeof r->log, "%s", p.log);
        r->pid = start_node(r, names[1 + i]);
        ends[i] = start_node(r, names[3 * i]);
    }
    bool up = true;
    for (int i = 0; i < 4; i++) {
        char ready[64];
        snprintf(ready, sizeof ready, "%s: ready", names[i]);
        up = up && wait_for(p.log, ready, 20);
    }
    CHECK(up, "four nodes started by hand");
    answer want;
    reference("tiny-b", prompt_b, 9, 16, &want);
    uint64_t seed = 20261204;
    int recovered = 0, resent = 0;
    for (int round = 0; up && round < 20; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull; /* a fixed sequence of kill times */
        k.victim = (int)(seed >> 33) % 2;
        k.fire_at = 1 + (int)(seed >> 40) % 10;
        k.delay = (useconds_t)((seed >> 20) % 3000);
        k.r[0].seen = 0;
        k.started = false;
        ask q = {.topo = &topo,
                 .ids = prompt_b,
                 .T = 9,
                 .max_new = 16,
                 .vocab = 1000,
                 .n_positions = 64,
                 .on_token = kill_at_token,
                 .user = &k};
        ask_pipeline(&q);
        if (k.started) pthread_join(k.thread, NULL);
        bool same = q.rc == 0 && q.got.n == want.n && !memcmp(q.got.tokens, want.tokens, (size_t)want.n * 4);
        if (!same)
            fprintf(stderr, "round %d: trunk%d killed %u us after token %d: %s\n", round, k.victim + 1, k.delay,
                    k.fire_at, q.rc ? q.err : "other tokens");
        recovered += same;
        resent += q.resends;
        free(q.got.logits);
    }
    CHECK(recovered == 20, "a trunk killed mid-request and restarted, 20 times: %d generations exact", recovered);
    CHECK(resent > 0, "the clients re-sent their context (%d times in all)", resent);
    free(want.logits);
    for (int i = 0; i < 2; i++) {
        kill(k.r[i].pid, SIGTERM);
        kill(ends[i], SIGTERM);
        waitpid(k.r[i].pid, NULL, 0);
        waitpid(ends[i], NULL, 0);
    }
}

static void test_launcher_stop(void)
{
    int splits[1] = {3};
    pipeline p = {0};
    if (make_pipeline(&p, "tiny-b", splits, 1, true, "b-launch") != 0 || launch(&p) != 0) {
        stop(&p);
        return;
    }
    /* The node processes are the launcher's children: find them through /proc. */
    char cmd[512], line[64];
    snprintf(cmd, sizeof cmd, "pgrep -P %d", (int)p.launcher);
    FILE *fp = popen(cmd, "r");
    pid_t kids[8];
    int n = 0;
    while (fp && n < 8 && fgets(line, sizeof line, fp))
        kids[n++] = (pid_t)atoi(line);
    if (fp) pclose(fp);
    CHECK(n == 2, "launcher started 2 nodes (%d)", n);
    /* A node that dies (restart = no) is named and the other keeps serving; the launcher exits 1
     * once no node is left. */
    kill(kids[0], SIGKILL);
    CHECK(wait_for(p.log, "killed by signal 9; not restarted", 15), "launcher names the dead node");
    CHECK(kill(kids[1], 0) == 0 && waitpid(p.launcher, NULL, WNOHANG) == 0, "the other node and the launcher go on");
    kill(kids[1], SIGKILL);
    int status = 0;
    double end = sl_now() + 15;
    while (sl_now() < end && waitpid(p.launcher, &status, WNOHANG) == 0)
        usleep(20000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "launcher exits 1 when no node is left (status %d)", status);
    p.launcher = 0;
    if (launch(&p) == 0) {
        snprintf(cmd, sizeof cmd, "pgrep -P %d", (int)p.launcher);
        fp = popen(cmd, "r");
        n = 0;
        while (fp && n < 8 && fgets(line, sizeof line, fp))
            kids[n++] = (pid_t)atoi(line);
        if (fp) pclose(fp);
        stop(&p);
        usleep(100000);
        int left = 0;
        for (int i = 0; i < n; i++)
            left += kill(kids[i], 0) == 0;
        CHECK(n == 2 && left == 0, "after SIGTERM to the launcher no node is left (%d of %d)", left, n);
    }
}

/* ---- split learning with the trunks on their nodes ---- */

static const int32_t train_ids[] = {215, 845, 160, 857, 612, 114, 43,  444, 35,  141, 514, 970,
                                    466, 808, 917, 823, 629, 441, 514, 266, 496, 379, 247, 993};

static bool same_params(sl_params *a, sl_params *b)
{
    fixture_refs ra = {.n = 0}, rb = {.n = 0};
    sl_params_foreach(a, fixture_collect, &ra);
    sl_params_foreach(b, fixture_collect, &rb);
    bool same = ra.n == rb.n && ra.n > 0;
    for (int i = 0; same && i < ra.n; i++)
        same = !memcmp(*ra.refs[i].slot, *rb.refs[i].slot, ra.refs[i].numel * sizeof(float));
    return same;
}

static void test_remote_training(const int *splits, int n_splits, const char *label)
{
    pipeline p = {0};
    if (make_pipeline(&p, "tiny-b", splits, n_splits, true, label) != 0) return;
    char trace[PATH_MAX], prog[600], ckpt[PATH_MAX];
    snprintf(trace, sizeof trace, "%s/%s.trace", tmp, label);
    snprintf(ckpt, sizeof ckpt, "%s/%s-ckpt", tmp, label);
    snprintf(prog, sizeof prog, "%s/zmq-splitlearn-launch", bin);
    setenv("SL_NODE_TRACE", trace, 1);
    char *argv[12] = {prog, p.topo, "--ready-file", p.ready};
    int argc = 4;
    static char names[4][16];
    for (int i = 1; i < n_splits; i++) {
        snprintf(names[i], sizeof names[i], "trunk%d", i);
        argv[argc++] = "--only";
        argv[argc++] = names[i];
    }
    argv[argc] = NULL;
    p.launcher = spawn(argv, p.log);
    unsetenv("SL_NODE_TRACE");
    if (!CHECK(wait_for(p.ready, NULL, 30), "%s: trunks ready", label)) {
        stop(&p);
        return;
    }
    sl_topology topo;
    sl_err err;
    sl_topology_load(p.topo, &topo, true, &err);
    sl_trainer_opts o = {.batch = 1, .seq_len = 24, .grad_accum = 1, .adamw = SL_ADAMW_DEFAULT};
    sl_trainer *remote = sl_trainer_new_remote(&topo, NULL, &o, &err), *local = sl_trainer_new(p.parts, &o, &err);
    int32_t targets[24];
    for (int t = 0; t < 24; t++)
        targets[t] = t + 1 < 24 ? train_ids[t + 1] : -1;
    bool same_losses = remote && local;
    float last_loss = NAN;
    for (int s = 0; same_losses && s < 3; s++) {
        float ll;
        same_losses = sl_trainer_step(remote, train_ids, targets, &last_loss, &err) == 0 &&
                      sl_trainer_step(local, train_ids, targets, &ll, &err) == 0 && last_loss == ll;
    }
    CHECK(same_losses, "%s: 3 steps with remote trunks give the in-process losses exactly: %s", label, err.msg);
    CHECK(remote && local && same_params(sl_trainer_params(remote, 0), sl_trainer_params(local, 0)) &&
              same_params(sl_trainer_params(remote, n_splits), sl_trainer_params(local, n_splits)),
          "%s: bottom and top parameters equal", label);
    CHECK(remote && sl_trainer_save(remote, ckpt, last_loss, &err) == 0, "%s: save with remote trunks: %s", label,
          err.msg);
    sl_part_info written[SL_MAX_SPLITS + 1];
    int n_saved = sl_split_read_index(ckpt, written, SL_MAX_SPLITS + 1, &err);
    CHECK(n_saved == n_splits + 1 && written[1].step == 3 && (float)written[1].loss == last_loss,
          "%s: a trunk's checkpoint metadata holds the step and its loss (%g)", label,
          n_saved > 1 ? written[1].loss : -1);
    sl_trainer *back = sl_trainer_new(ckpt, &o, &err);
    bool trunks_same = back != NULL;
    for (int i = 1; trunks_same && i < n_splits; i++)
        trunks_same = same_params(sl_trainer_params(back, i), sl_trainer_params(local, i));
    CHECK(trunks_same, "%s: the trunks' saved parameters equal the in-process chain's: %s", label, err.msg);
    CHECK(back && sl_trainer_step_count(back) == 3, "%s: the checkpoint resumes at step 3", label);
    sl_trainer_destroy(&back);
    sl_trainer_destroy(&remote);
    /* Resuming with the trunks on their nodes continues exactly where the in-process chain goes on. */
    remote = sl_trainer_new_remote(&topo, ckpt, &o, &err);
    bool resumed = remote && sl_trainer_step_count(remote) == 3;
    for (int s = 0; resumed && s < 2; s++) {
        float lr_, ll;
        resumed = sl_trainer_step(remote, train_ids, targets, &lr_, &err) == 0 &&
                  sl_trainer_step(local, train_ids, targets, &ll, &err) == 0 && lr_ == ll;
    }
    CHECK(resumed, "%s: remote resume gives the uninterrupted losses: %s", label, err.msg);
    sl_trainer_destroy(&remote);
    /* Two accumulated micro-batches per step: the trunks average like the local stages. */
    sl_trainer_opts o2 = o;
    o2.grad_accum = 2;
    o2.grad_clip = 0.05f; /* small enough to clip every step: the global norm must be the same */
    int32_t ids2[48], targets2[48];
    for (int k = 0; k < 48; k++)
        ids2[k] = train_ids[k < 24 ? k : 47 - k], targets2[k] = targets[k % 24];
    for (int k = 24; k < 48; k++)
        targets2[k] = k + 1 < 48 ? ids2[k + 1] : -1;
    sl_trainer *r2 = sl_trainer_new_remote(&topo, ckpt, &o2, &err), *l2 = sl_trainer_new(ckpt, &o2, &err);
    bool accumulated = r2 && l2;
    for (int s = 0; accumulated && s < 2; s++) {
        float lr_, ll;
        accumulated = sl_trainer_step(r2, ids2, targets2, &lr_, &err) == 0 &&
                      sl_trainer_step(l2, ids2, targets2, &ll, &err) == 0 && lr_ == ll;
    }
    CHECK(accumulated && same_params(sl_trainer_params(r2, 0), sl_trainer_params(l2, 0)),
          "%s: --grad-accum 2 --grad-clip 0.05 with remote trunks equals the in-process chain: %s", label, err.msg);
    sl_trainer_destroy(&r2);
    /* Stopping a trunk mid-training saves what it learned since the run's checkpoint beside it,
     * and leaves the checkpoint as it was. */
    stop(&p);
    sl_params *want = l2 ? sl_trainer_params(l2, 1) : sl_trainer_params(local, 1), got; /* the last run */
    char stopped[PATH_MAX + 32];
    snprintf(stopped, sizeof stopped, "%s/stopped-step5", ckpt);
    sl_part *part = sl_part_open_checkpoint(stopped, SL_ROLE_TRUNK, topo.nodes[1].name, -1, true, &err);
    bool saved = part && sl_part_load_params(part, &got, true, &err) == 0;
    CHECK(saved && sl_part_info_of(part)->step == 5 && same_params(&got, want),
          "%s: a trunk stopped by SIGTERM saved its step-5 weights beside the checkpoint: %s", label,
          saved ? "" : err.msg);
    if (saved) sl_params_free(&got);
    sl_part_destroy(&part);
    part = sl_part_open(ckpt, want->first, want->last, false, &err);
    CHECK(part && sl_part_info_of(part)->step == 3, "%s: ... the step-3 checkpoint stays as it was: %s", label,
          part ? "" : err.msg);
    sl_part_destroy(&part);
    sl_trainer_destroy(&l2);
    sl_trainer_destroy(&local);
    /* What the trunks received: activations forward, gradients back, a save, a neighbour's hello;
     * never ids or labels. */
    char *seen = sl_read_text_file(trace, 1 << 20, &err);
    int lines = 0, clean = 0;
    for (char *line = seen; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        lines++;
        clean += !strncmp(line, "forward ids=0 x=1 train=1", 25) || !strncmp(line, "backward ids=0 x=1", 18) ||
                 !strncmp(line, "save ids=0 x=0", 14);
    }
    for (char *line = seen; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        clean += !strncmp(line, "load ids=0 x=0", 14) + !strncmp(line, "update ids=0 x=0", 16) +
                 !strncmp(line, "hello ids=0 x=0", 15) + !strncmp(line, "ack ids=0 x=0", 13); /* checking the chain */
    CHECK(lines > 0 && clean == lines, "%s: trunks received only activations and gradients (%d of %d messages)", label,
          clean, lines);
    free(seen);
}

/* ---- a trunk that answers with more rows than the batch ---- */

typedef struct liar {
    zsock_t *in, *out;
} liar;

/* Answers the first training forward it gets with twice its rows. */
static void *answer_with_more_rows(void *arg)
{
    liar *l = arg;
    static float x[48 * 48];
    zsock_set_rcvtimeo(l->in, 10000);
    zmsg_t *m = zmsg_recv(l->in); /* [the trainer's routing id, the message] */
    zframe_t *f = m ? zmsg_last(m) : NULL;
    sl_wire_decoder *dec = sl_wire_decoder_new();
    sl_msg msg;
    sl_err err;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    if (f && sl_wire_decode(dec, zframe_data(f), zframe_size(f), NULL, &msg, &err) == 0) {
        msg.x = x, msg.rows = 2 * msg.rows, msg.dtype = SL_F32;
        if (msg.rows <= 48 && sl_wire_encode(&msg, &buf, &err) == 0)
            zmq_send(zsock_resolve(l->out), buf.data, buf.size, 0);
    }
    msgpack_sbuffer_destroy(&buf);
    sl_wire_decoder_destroy(&dec);
    zmsg_destroy(&m);
    return NULL;
}

static void test_lying_trunk(void)
{
    const int splits[2] = {1, 3};
    pipeline p = {0};
    sl_topology topo;
    sl_err err;
    if (make_pipeline(&p, "tiny-b", splits, 2, false, "train-liar") != 0 ||
        !CHECK(sl_topology_load(p.topo, &topo, true, &err) == 0, "liar topology: %s", err.msg))
        return;
    liar l = {zsock_new(ZMQ_ROUTER), zsock_new(ZMQ_DEALER)};
    zsock_bind(l.in, "%s", topo.nodes[1].listen);
    sl_trainer_opts o = {.batch = 1, .seq_len = 24, .grad_accum = 1, .adamw = SL_ADAMW_DEFAULT};
    sl_trainer *t = sl_trainer_new_remote(&topo, NULL, &o, &err);
    zsock_connect(l.out, "%s", topo.nodes[2].listen);
    pthread_t thread;
    pthread_create(&thread, NULL, answer_with_more_rows, &l);
    int32_t targets[24];
    for (int i = 0; i < 24; i++)
        targets[i] = i + 1 < 24 ? train_ids[i + 1] : -1;
    float loss;
    int rc = t ? sl_trainer_step(t, train_ids, targets, &loss, &err) : 0;
    pthread_join(thread, NULL);
    CHECK(t && rc != 0 && strstr(err.msg, "a forward message of 48 rows came back for a batch of 24 rows"),
          "a trunk's answer with more rows than the batch is refused: %s", err.msg);
    sl_trainer_destroy(&t);
    zsock_destroy(&l.in);
    zsock_destroy(&l.out);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "e2e") != 0) return 1;
    check_bin_dir(bin, sizeof bin);
    struct sigaction ignore = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ignore, NULL);
    zsys_handler_set(NULL);
    if (check_selected("every_split")) test_every_split();
    if (check_selected("five_stages_and_two_clients")) test_five_stages_and_two_clients();
    if (check_selected("tiny_a_references")) test_tiny_a_references();
    if (check_selected("garbage")) test_garbage();
    if (check_selected("training_garbage")) test_training_garbage();
    if (check_selected("restart_and_timeout")) test_restart_and_timeout();
    if (check_selected("kill_mid_request")) test_kill_mid_request();
    if (check_selected("launcher_stop")) test_launcher_stop();
    const int three[2] = {1, 3}, four[3] = {1, 2, 4};
    if (check_selected("train-3")) test_remote_training(three, 2, "train-3");
    if (check_selected("train-4")) test_remote_training(four, 3, "train-4");
    if (check_selected("lying_trunk")) test_lying_trunk();
    check_rmtree(tmp);
    return check_done();
}
