/* test_privacy.c — the defences in training and in the pipeline: the gradient of cross-entropy +
 * NoPeek through a clipped, noised cut against finite differences (into the bottom's blocks, wte
 * and wpe); a defence that changes nothing leaves the trainer's losses exactly as they were;
 * training with noise still converges; NoPeek lowers the distance correlation; a bottom node
 * process sends rows that differ from the clean ones by the expected noise. */
#include "check.h"
#include "clock.h"
#include "fileio.h"
#include "gpt2.h"
#include "leakage.h"
#include "net.h"
#include "privacy.h"
#include "rng.h"
#include "split.h"
#include "trainer.h"
#include "wire.h"

#include <czmq.h>
#include <signal.h>
#include <sys/wait.h>

enum { T = 24, V = 1000, C = 48 };
static char tmp[200], parts[300];
static int32_t ids[T], targets[T];

static sl_trainer_opts trainer_opts(void)
{
    return (sl_trainer_opts){.batch = 1, .seq_len = T, .grad_accum = 1, .adamw = SL_ADAMW_DEFAULT};
}

/* Losses of `steps` steps of the in-process chain with opts. */
static void train_losses(const sl_trainer_opts *o, int steps, float *losses, double *dcor)
{
    sl_err err;
    sl_trainer *tr = sl_trainer_new(parts, o, &err);
    if (!CHECK(tr != NULL, "trainer: %s", err.msg)) return;
    for (int s = 0; s < steps; s++)
        CHECK(sl_trainer_step(tr, ids, targets, &losses[s], &err) == 0, "step %d: %s", s, err.msg);
    if (dcor) *dcor = sl_trainer_dcor(tr);
    sl_trainer_destroy(&tr);
}

/* A clip no row reaches and no noise: the same losses, bit for bit. */
static void test_transparent(void)
{
    float plain[3], guarded[3];
    sl_trainer_opts o = trainer_opts();
    train_losses(&o, 3, plain, NULL);
    o.privacy.activations.clip = 1e30f;
    o.privacy.gradients.clip = 1e30f;
    train_losses(&o, 3, guarded, NULL);
    CHECK(memcmp(plain, guarded, sizeof plain) == 0, "a defence that changes nothing: losses %.7f %.7f %.7f vs %.7f",
          (double)plain[2], (double)guarded[2], (double)plain[0], (double)guarded[0]);
}

/* The bottom [0,2) and top [2,5) of the split, with weights of their own. */
typedef struct chain {
    sl_part *parts[2];
    sl_params bottom, top;
    sl_backprop *tb, *tt;
} chain;

static bool chain_open(chain *c)
{
    sl_err err;
    memset(c, 0, sizeof *c);
    c->parts[0] = sl_part_open(parts, 0, 2, false, &err);
    c->parts[1] = sl_part_open(parts, 2, 5, false, &err);
    return CHECK(c->parts[0] && c->parts[1] && sl_part_load_params(c->parts[0], &c->bottom, true, &err) == 0 &&
                     sl_part_load_params(c->parts[1], &c->top, true, &err) == 0 &&
                     (c->tb = sl_backprop_new(&c->bottom, 1, T, &err)) &&
                     (c->tt = sl_backprop_new(&c->top, 1, T, &err)),
                 "chain: %s", err.msg);
}

static void chain_close(chain *c)
{
    sl_backprop_destroy(&c->tb);
    sl_backprop_destroy(&c->tt);
    sl_params_free(&c->bottom);
    sl_params_free(&c->top);
    sl_part_destroy(&c->parts[0]);
    sl_part_destroy(&c->parts[1]);
}

/* tiny-b's rows after block 1 have norms of 0.30 to 0.37: the clip binds on about half. */
static const sl_privacy_opts defended = {
    .activations = {.clip = 0.33f, .noise = 0.3f}, .nopeek = 4.0f, .seeded = true, .noise_seed = 5};

/* Cross-entropy + lambda dCor through the defended cut; with backward, the bottom's gradients. */
static double chain_loss(chain *c, bool backward)
{
    sl_err err;
    float rows[T * C], grad[T * C], loss;
    sl_privacy *p = sl_privacy_new(&defended, 1, T, C, &err); /* the same noise every time */
    CHECK(p && sl_backprop_forward(c->tb, ids, NULL, NULL, rows, NULL, &err) == 0 &&
              sl_privacy_bottom_forward(p, &c->bottom, ids, rows, true, &err) == 0 &&
              sl_backprop_forward(c->tt, NULL, rows, targets, NULL, &loss, &err) == 0,
          "forward: %s", err.msg);
    double total = loss + defended.nopeek * sl_privacy_dcor(p);
    if (backward) {
        sl_backprop_zero_grad(c->tb);
        sl_backprop_zero_grad(c->tt);
        CHECK(sl_backprop_backward(c->tt, NULL, grad, &err) == 0 &&
                  sl_privacy_bottom_backward(p, sl_backprop_grads(c->tb), ids, grad, &err) == 0 &&
                  sl_backprop_backward(c->tb, grad, NULL, &err) == 0,
              "backward: %s", err.msg);
    }
    sl_privacy_destroy(&p);
    return total;
}

/* d total / d w at a few weights of the bottom against central differences. */
static void test_gradient(void)
{
    chain c;
    if (!chain_open(&c)) return chain_close(&c);
    chain_loss(&c, true);
    const sl_params *g = sl_backprop_grads(c.tb);
    struct {
        const char *what;
        float *w;
        const float *dw;
    } at[] = {
        {"wte of the 4th token", c.bottom.wte + (size_t)ids[3] * C + 7, g->wte + (size_t)ids[3] * C + 7},
        {"wte of the 10th token", c.bottom.wte + (size_t)ids[9] * C + 30, g->wte + (size_t)ids[9] * C + 30},
        {"wpe of position 5", c.bottom.wpe + 5 * C + 2, g->wpe + 5 * C + 2},
        {"wpe of position 0", c.bottom.wpe + 11, g->wpe + 11},
        {"block 0 qkv", c.bottom.blocks[0].qkv_w + 100, g->blocks[0].qkv_w + 100},
        {"block 1 mlp", c.bottom.blocks[1].fc_w + 333, g->blocks[1].fc_w + 333},
        {"block 1 ln2 bias", c.bottom.blocks[1].ln2_b + 4, g->blocks[1].ln2_b + 4},
    };
    const float h = 1e-2f;
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        float keep = *at[i].w;
        *at[i].w = keep + h;
        double up = chain_loss(&c, false);
        *at[i].w = keep - h;
        double down = chain_loss(&c, false);
        *at[i].w = keep;
        double numeric = (up - down) / (2.0 * h), analytic = *at[i].dw;
        CHECK(fabs(numeric - analytic) <= 0.03 * fabs(numeric) + 2e-4, "%s: analytic %.6g, finite differences %.6g",
              at[i].what, analytic, numeric);
    }
    /* every weight of the bottom at once, along a random direction u: d/de total(w + e u) = u . dw */
    sl_rng rng;
    sl_rng_seed(&rng, 77);
    const size_t n = c.bottom.owned_count;
    float *u = malloc(n * sizeof *u), *keep = malloc(n * sizeof *keep);
    double analytic = 0;
    for (size_t i = 0; i < n; i++)
        u[i] = sl_rng_normal(&rng), analytic += (double)u[i] * g->owned[i];
    memcpy(keep, c.bottom.owned, n * sizeof *keep);
    const float e = 3e-4f;
    for (size_t i = 0; i < n; i++)
        c.bottom.owned[i] = keep[i] + e * u[i];
    double up = chain_loss(&c, false);
    for (size_t i = 0; i < n; i++)
        c.bottom.owned[i] = keep[i] - e * u[i];
    double down = chain_loss(&c, false), numeric = (up - down) / (2.0 * e);
    memcpy(c.bottom.owned, keep, n * sizeof *keep);
    printf("all weights along a direction: %.6g vs %.6g\n", analytic, numeric);
    CHECK(fabs(numeric - analytic) <= 0.02 * fabs(numeric), "all %zu weights along a direction: %.6g vs %.6g", n,
          analytic, numeric);
    free(u);
    free(keep);
    chain_close(&c);
}

/* Noise at sigma 0.5 of a clip below the rows' norms (noise 3 times the rows' elements): the loss
 * still falls by half in 40 steps. */
static void test_converges(void)
{
    float losses[40];
    sl_trainer_opts o = trainer_opts();
    o.adamw.lr = 3e-3f;
    o.privacy = (sl_privacy_opts){.activations = {.clip = 0.3f, .noise = 0.5f}, .seeded = true, .noise_seed = 9};
    train_losses(&o, 40, losses, NULL);
    printf("with noise 0.5 x clip 0.3: loss %.3f at step 1, %.3f at step 40\n", (double)losses[0], (double)losses[39]);
    CHECK(losses[39] < 0.5f * losses[0], "training with noise converges: %.3f -> %.3f", (double)losses[0],
          (double)losses[39]);
}

/* NoPeek at lambda 1 against a lambda too small to matter: a lower distance correlation. */
static void test_nopeek(void)
{
    float losses[30];
    double weak, strong;
    sl_trainer_opts o = trainer_opts();
    o.adamw.lr = 3e-3f;
    o.privacy.nopeek = 1e-6f;
    train_losses(&o, 30, losses, &weak);
    o.privacy.nopeek = 1.0f;
    train_losses(&o, 30, losses, &strong);
    printf("dCor after 30 steps: %.3f without NoPeek, %.3f with lambda 1\n", weak, strong);
    CHECK(strong < weak - 0.1, "NoPeek lowers the distance correlation: %.3f vs %.3f", strong, weak);
}

/* ---- the bottom node applies its defence in its own process ---- */

enum { NT = 16 }; /* tokens of the node's request */
static const int32_t node_ids[NT] = {1870, 1793, 531, 4306, 612, 307, 1657, 25,
                                     290,  612,  373, 1657, 13,  198, 1870, 262};

/* Mean and standard deviation of a - b over n. */
static void diff_moments(const float *a, const float *b, size_t n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d, s2 += d * d;
    }
    *mean = s / n;
    *sd = sqrt(s2 / n - *mean * *mean);
}

/* Sends a generation request for node_ids as a client would, and takes the rows the bottom sends
 * on at the trunk's endpoint (this test listens there) into rows (NT, width). */
static bool capture_from_node(zsock_t *client, zsock_t *trunk, uint64_t session, float *rows, int width)
{
    sl_err err;
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    sl_msg m = {.kind = SL_MSG_FORWARD,
                .session = {{(uint8_t)session}},
                .ctx = NT,
                .ids = node_ids,
                .n_ids = NT,
                .has_sample = true,
                .sample = SL_SAMPLING_GREEDY};
    bool ok = CHECK(sl_wire_encode(&m, &buf, &err) == 0 &&
                        sl_net_send(client, buf.data, buf.size, false, "bottom", &err) == 0,
                    "request: %s", err.msg);
    msgpack_sbuffer_destroy(&buf);
    zmq_pollitem_t item = {.socket = zsock_resolve(trunk), .events = ZMQ_POLLIN};
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    sl_peer from;
    sl_wire_decoder *dec = sl_wire_decoder_new();
    sl_wire_limits limits = {.n_embd = (uint32_t)width, .n_positions = 256};
    bool got = false; /* the bottom's hello to its next stage may come first: skipped */
    for (double end = sl_now() + 20; ok && !got && sl_now() < end;) {
        if (zmq_poll(&item, 1, 200) != 1) continue;
        ok = CHECK(sl_net_recv(trunk, &from, &frame, &err) == 0 &&
                       sl_wire_decode(dec, zmq_msg_data(&frame), zmq_msg_size(&frame), &limits, &m, &err) == 0,
                   "the trunk's message: %s", err.msg);
        got = ok && m.kind == SL_MSG_FORWARD;
    }
    ok = ok && CHECK(got, "the bottom sent no forward to the trunk's endpoint in 20 s");
    ok = ok && CHECK(m.x && m.rows == NT && (int)m.cols == width && !m.ids,
                     "a forward of %d rows of activations, no ids (%u x %u)", NT, m.rows, m.cols);
    if (ok) sl_msg_copy_x(&m, rows);
    zmq_msg_close(&frame);
    sl_wire_decoder_destroy(&dec);
    return ok;
}

/* What the bottom node sends = clip(clean rows) + N(0, (sigma C)^2), fresh per request. */
static void test_node(void)
{
    const float clip = 20, sigma = 0.05f; /* the default model's rows after block 1 have norms near 45 */
    char model[PATH_MAX], topo[PATH_MAX + 16], log[PATH_MAX + 16], text[PATH_MAX + 1024], bin[PATH_MAX];
    if (!CHECK(realpath("models/default/parts", model) != NULL, "models/default/parts")) return;
    const char *env = getenv("SL_BIN");
    snprintf(bin, sizeof bin, "%s/zmq-splitlearn-node", env && *env ? env : "bin");
    snprintf(topo, sizeof topo, "%s/node.ini", tmp);
    snprintf(log, sizeof log, "%s/node.log", tmp);
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-1\nlisten = tcp://127.0.0.1:%d\n"
             "clip = %g\nnoise = %g\n[node.trunk1]\nrole = trunk\nlayers = 1-3\nlisten = tcp://127.0.0.1:%d\n"
             "[node.top]\nrole = top\nlayers = 3-4\nlisten = tcp://127.0.0.1:%d\n",
             model, check_port(0), (double)clip, (double)sigma, check_port(1), check_port(2));
    sl_err err;
    sl_topology t;
    if (!CHECK(sl_write_text_file(topo, text, &err) == 0 && sl_topology_load(topo, &t, true, &err) == 0, "%s", err.msg))
        return;
    sl_net_opts net = sl_net_opts_of(&t);
    zsock_t *trunk = sl_net_bind(ZMQ_ROUTER, &net, t.nodes[1].listen, &err);
    zsock_t *client = sl_net_connect(ZMQ_DEALER, &net, t.nodes[0].listen, &err);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *fp = freopen(log, "a", stderr);
        (void)fp;
        execl(bin, bin, topo, "bottom", (char *)NULL);
        _exit(127);
    }
    float got[NT * 768], again[NT * 768], clean[NT * 768], norm[NT];
    const int C = 128;
    bool ok = CHECK(trunk && client, "sockets: %s", err.msg) && capture_from_node(client, trunk, 11, got, C) &&
              capture_from_node(client, trunk, 12, again, C);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    zsock_destroy(&client);
    zsock_destroy(&trunk);
    sl_part *part = sl_part_open(model, 0, 1, false, &err);
    sl_params bottom = {0};
    ok = ok && CHECK(part && sl_part_load_params(part, &bottom, false, &err) == 0 &&
                         sl_leak_run(&bottom, 256, node_ids, NULL, NT, clean, &err) == 0,
                     "clean rows: %s", err.msg);
    if (ok) {
        double mean, sd, raw_mean, raw_sd, twice_mean, twice_sd;
        diff_moments(got, clean, NT * C, &raw_mean, &raw_sd);
        sl_clip_forward(clean, norm, clean, NT, C, clip);
        diff_moments(got, clean, NT * C, &mean, &sd);
        diff_moments(got, again, NT * C, &twice_mean, &twice_sd);
        const double want = sigma * clip, n = NT * C;
        printf("node: received - clip(clean): mean %.4f, sd %.4f (want 0, %.4f); received - clean: sd %.3f; two "
               "requests: sd %.4f\n",
               mean, sd, want, raw_sd, twice_sd);
        CHECK(norm[0] > clip && norm[NT - 1] > clip, "the clip binds (row norms %.1f, %.1f)", (double)norm[0],
              (double)norm[NT - 1]);
        /* bounds of 5 standard errors (the sample sd has a relative standard error of 1/sqrt(2n): 1.6%) */
        CHECK(fabs(mean) < 5 * want / sqrt(n), "the noise has mean 0: %.4f", mean);
        CHECK(fabs(sd / want - 1) < 0.08, "the noise has the topology's std: %.4f vs %.4f", sd, want);
        CHECK(raw_sd > 3 * want, "the rows were clipped before they left (sd %.3f from the clean rows)", raw_sd);
        CHECK(fabs(twice_sd / (sqrt(2) * want) - 1) < 0.08, "fresh noise per request: sd %.4f of the difference",
              twice_sd);
    }
    sl_params_free(&bottom);
    sl_part_destroy(&part);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "privacy") != 0) return 1;
    snprintf(parts, sizeof parts, "%s/parts", tmp);
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    const int splits[] = {2};
    sl_part_info info[2];
    sl_split_request req = {
        .model_path = src, .name = "tb", .splits = splits, .n_splits = 1, .format = SL_WF_F32, .out_dir = parts};
    CHECK(ck && sl_split_write(ck, &req, info, &err) == 0, "split: %s", err.msg);
    sl_hf_model_destroy(&ck);
    sl_rng rng;
    sl_rng_seed(&rng, 2024);
    for (int i = 0; i < T; i++)
        ids[i] = (int32_t)sl_rng_below(&rng, V);
    for (int i = 0; i < T; i++)
        targets[i] = i + 1 < T ? ids[i + 1] : -1;
    if (check_selected("transparent")) test_transparent();
    if (check_selected("gradient")) test_gradient();
    if (check_selected("converges")) test_converges();
    if (check_selected("nopeek")) test_nopeek();
    if (check_selected("node")) test_node();
    check_rmtree(tmp);
    return check_done();
}
