/* test_trainer.c — split learning in process: three steps through 2, 3 and 4 stages give the
 * single-process trainer's losses and parameters; a checkpoint resumed continues exactly; data
 * batches are reproducible from their number; a trunk that saved instead of a dry run is named. */
#include "data.h"
#include "fileio.h"
#include "fixtures.h"
#include "trainer.h"
#include "wire.h"

#include <czmq.h>
#include <limits.h>

static char tmp[200];
static int32_t ids[24], targets[24];
static const int T = 24, STEPS = 3;

/* The single-process reference: the whole model as one stage. */
static sl_params reference;
static float ref_losses[3];

static void train_reference(void)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tiny-b", check_fixtures());
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(path, &err);
    if (!CHECK(ck && sl_params_load(&reference, ck, 0, 5, true, true, true, &err) == 0, "%s", err.msg)) return;
    sl_backprop *tr = sl_backprop_new(&reference, 1, T, &err);
    for (int s = 0; s < STEPS; s++) {
        sl_backprop_zero_grad(tr);
        sl_backprop_forward(tr, ids, NULL, targets, NULL, &ref_losses[s], &err);
        sl_backprop_backward(tr, NULL, NULL, &err);
        sl_backprop_step(tr, &SL_ADAMW_DEFAULT, 1.0f);
    }
    sl_backprop_destroy(&tr);
    sl_hf_model_destroy(&ck);
}

static int split_tiny_b(const int *splits, int n, const char *out)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    sl_part_info parts[8];
    sl_split_request req = {
        .model_path = src, .name = "tb", .splits = splits, .n_splits = n, .format = SL_WF_F32, .out_dir = out};
    int rc = ck ? sl_split_write(ck, &req, parts, &err) : -1;
    CHECK(rc == 0, "split: %s", err.msg);
    sl_hf_model_destroy(&ck);
    return rc;
}

/* Every tensor of every stage equals the reference's tensor of that name. */
static void compare_params(sl_trainer *tr, const char *label)
{
    fixture_refs want = {.n = 0};
    sl_params_foreach(&reference, fixture_collect, &want);
    int matched = 0;
    double worst = 0;
    for (int i = 0; i < sl_trainer_stages(tr); i++) {
        fixture_refs got = {.n = 0};
        sl_params_foreach(sl_trainer_params(tr, i), fixture_collect, &got);
        for (int g = 0; g < got.n; g++)
            for (int w = 0; w < want.n; w++)
                if (!strcmp(got.refs[g].name, want.refs[w].name)) {
                    double d = check_max_diff(*got.refs[g].slot, *want.refs[w].slot, got.refs[g].numel);
                    worst = d > worst ? d : worst;
                    matched++;
                }
    }
    CHECK(matched == want.n && worst <= 1e-6, "%s: %d of %d tensors, worst |diff| %.3g after %d steps", label, matched,
          want.n, worst, STEPS);
}

static sl_trainer_opts opts(void)
{
    return (sl_trainer_opts){.batch = 1, .seq_len = T, .grad_accum = 1, .adamw = SL_ADAMW_DEFAULT};
}

static void test_chains(void)
{
    const int splits[3][3] = {{2}, {1, 3}, {1, 2, 4}};
    for (int k = 0; k < 3; k++) {
        char dir[PATH_MAX], label[64];
        snprintf(dir, sizeof dir, "%s/chain%d", tmp, k + 2);
        snprintf(label, sizeof label, "%d stages", k + 2);
        if (split_tiny_b(splits[k], k + 1, dir) != 0) continue;
        sl_trainer_opts o = opts();
        sl_err err;
        sl_trainer *tr = sl_trainer_new(dir, &o, &err);
        if (!CHECK(tr != NULL, "%s: %s", label, err.msg)) continue;
        for (int s = 0; s < STEPS; s++) {
            float loss = 0;
            CHECK(sl_trainer_step(tr, ids, targets, &loss, &err) == 0, "%s: %s", label, err.msg);
            CHECK(fabsf(loss - ref_losses[s]) <= 1e-6f, "%s step %d loss %.7f, single process %.7f", label, s, loss,
                  ref_losses[s]);
        }
        compare_params(tr, label);
        sl_trainer_destroy(&tr);
    }
}

static void test_resume(void)
{
    char dir[PATH_MAX], ckpt[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/chain3", tmp);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", tmp);
    sl_trainer_opts o = opts();
    o.warmup = 2;
    o.cosine = true;
    o.total_steps = 4;
    o.grad_clip = 0.5f;
    sl_err err;
    float straight[4], resumed[4], loss;
    sl_trainer *tr = sl_trainer_new(dir, &o, &err);
    for (int s = 0; tr && s < 4; s++)
        sl_trainer_step(tr, ids, targets, &straight[s], &err);
    sl_trainer_destroy(&tr);
    tr = sl_trainer_new(dir, &o, &err);
    for (int s = 0; tr && s < 2; s++)
        sl_trainer_step(tr, ids, targets, &resumed[s], &err);
    CHECK(tr && sl_trainer_save(tr, ckpt, resumed[1], &err) == 0, "save: %s", err.msg);
    sl_trainer_destroy(&tr);
    tr = sl_trainer_new(ckpt, &o, &err);
    CHECK(tr && sl_trainer_step_count(tr) == 2, "resumed at step %ld: %s", tr ? sl_trainer_step_count(tr) : -1,
          err.msg);
    for (int s = 2; tr && s < 4; s++)
        sl_trainer_step(tr, ids, targets, &resumed[s], &err);
    bool same = true;
    for (int s = 0; s < 4; s++)
        same &= resumed[s] == straight[s];
    CHECK(same, "resumed losses %.7f %.7f equal the uninterrupted %.7f %.7f (warmup, cosine, clipping)", resumed[2],
          resumed[3], straight[2], straight[3]);
    sl_part_info parts[4];
    CHECK(sl_split_read_index(ckpt, parts, 4, &err) == 3 && parts[0].step == 2 &&
              fabs(parts[2].loss - resumed[1]) < 1e-6,
          "checkpoint metadata has step and loss: %s", err.msg);
    CHECK(sl_trainer_eval(tr, ids, targets, &loss, &err) == 0 && loss < straight[0], "eval loss %.4f after training",
          loss);
    sl_trainer_destroy(&tr);
}

static void test_data(void)
{
    char path[PATH_MAX], vocab[PATH_MAX];
    snprintf(path, sizeof path, "%s/text.txt", tmp);
    snprintf(vocab, sizeof vocab, "%s/../gpt2-vocab", check_fixtures());
    sl_err err;
    char text[8192] = "";
    for (int i = 0; i < 100; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "Verse %d: the word. ", i);
    sl_write_text_file(path, text, &err);
    sl_tokenizer *tok = sl_tokenizer_new(vocab, &err);
    const char *files[2] = {path, path};
    sl_data *d = tok ? sl_data_new(tok, files, 2, 16, 50256, &err) : NULL;
    if (!CHECK(d != NULL, "data: %s", err.msg)) return;
    long n = sl_data_tokens(d);
    CHECK(n > 1000 && sl_data_sequences(d) == (int)((n - 1) / 16), "%ld tokens, %d sequences", n, sl_data_sequences(d));
    int32_t a[64], ta[64], b[64], tb[64];
    sl_data_batch(d, 5, 4, 7, a, ta);
    sl_data_batch(d, 0, 4, 7, b, tb);
    sl_data_batch(d, 5, 4, 7, b, tb);
    CHECK(!memcmp(a, b, sizeof a) && !memcmp(ta, tb, sizeof ta), "batch 5 is the same whenever it is asked for");
    CHECK(ta[0] == a[1] && ta[14] == a[15], "targets are the next tokens");
    sl_data_batch(d, 5, 4, 8, b, tb);
    CHECK(memcmp(a, b, sizeof a) != 0, "another seed, another order");
    long before = sl_data_tokens(d);
    sl_data *held = sl_data_hold_out(d, 0.05, &err);
    CHECK(held && sl_data_tokens(held) + sl_data_tokens(d) == before && sl_data_tokens(held) >= before / 20 &&
              sl_data_sequences(held) >= 1,
          "5%% held out: %ld + %ld of %ld tokens", held ? sl_data_tokens(held) : -1, sl_data_tokens(d), before);
    sl_data_destroy(&held);
    const char *none[1] = {"/nonexistent.txt"};
    CHECK(!sl_data_new(tok, none, 1, 16, 50256, &err) && strstr(err.msg, "/nonexistent.txt"), "missing file: %s",
          err.msg);
    sl_data_destroy(&d);
    sl_tokenizer_destroy(&tok);
}

/* A trunk older than "dry_run" (an unknown key to it): it acks every save as a save. */
static void old_trunk(zsock_t *pipe, void *endpoint)
{
    zsock_t *router = zsock_new_router(endpoint);
    zpoller_t *poller = zpoller_new(pipe, router, NULL);
    sl_wire_decoder *dec = sl_wire_decoder_new();
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    zsock_signal(pipe, 0);
    while (router && zpoller_wait(poller, -1) == router) {
        zmsg_t *msg = zmsg_recv(router);
        zframe_t *from = zmsg_pop(msg), *body = zmsg_pop(msg);
        sl_msg m, ack;
        sl_err err;
        if (body && sl_wire_decode(dec, zframe_data(body), zframe_size(body), NULL, &m, &err) == 0 &&
            m.kind == SL_MSG_SAVE) {
            ack = (sl_msg){.kind = SL_MSG_ACK, .session = m.session, .step = m.step};
            snprintf(ack.node, sizeof ack.node, "trunk1");
            sl_wire_encode(&ack, &buf, &err);
            zframe_send(&from, router, ZFRAME_MORE);
            zmq_send(zsock_resolve(router), buf.data, buf.size, 0);
        }
        zframe_destroy(&from);
        zframe_destroy(&body);
        zmsg_destroy(&msg);
    }
    msgpack_sbuffer_destroy(&buf);
    sl_wire_decoder_destroy(&dec);
    zpoller_destroy(&poller);
    zsock_destroy(&router);
}

/* The dry run before step 1 against a trunk that saved instead: the trainer says so. */
static void test_old_trunk(void)
{
    sl_topology topo;
    char dir[PATH_MAX], ini[PATH_MAX], bind[sizeof topo.nodes[1].listen + 1];
    snprintf(dir, sizeof dir, "%s/old", tmp);
    snprintf(ini, sizeof ini, "%s/old.ini", tmp);
    const int splits[2] = {1, 3}, port = check_port(0);
    sl_part_info parts[3];
    sl_err err;
    if (split_tiny_b(splits, 2, dir) != 0 || sl_split_read_index(dir, parts, 3, &err) != 3 ||
        sl_topology_write_local(ini, parts, 3, "old", dir, port, "test_trainer", &err) != 0 ||
        !CHECK(sl_topology_load(ini, &topo, true, &err) == 0, "the topology: %s", err.msg))
        return;
    topo.nodes[1].train = true;
    topo.timeout = 5;
    snprintf(bind, sizeof bind, "@%s", topo.nodes[1].listen);
    zactor_t *trunk = zactor_new(old_trunk, bind);
    sl_trainer_opts o = opts();
    sl_trainer *tr = sl_trainer_new_remote(&topo, NULL, &o, &err);
    sl_trainer_place places[3];
    CHECK(tr && sl_trainer_check_save(tr, "ck", places, &err) == -1 && strstr(err.msg, "node trunk1 saved instead"),
          "a trunk that ignores dry_run is named, as older than the trainer: %s", err.msg);
    sl_trainer_destroy(&tr);
    zactor_destroy(&trunk);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "trainer") != 0) return 1;
    char path[PATH_MAX];
    fixture_path(path, sizeof path, "tiny-b", "grads.json");
    sl_err err;
    char *text = sl_read_text_file(path, 1 << 20, &err);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(root, "ids")) if (n < 24) ids[n++] = v->valueint;
    cJSON_Delete(root);
    free(text);
    for (int t = 0; t < T; t++)
        targets[t] = t + 1 < T ? ids[t + 1] : -1;
    if (CHECK(n == 24, "grads.json ids")) {
        train_reference();
        if (check_selected("chains")) test_chains();
        if (check_selected("resume")) test_resume();
        if (check_selected("data")) test_data();
        if (check_selected("old_trunk")) test_old_trunk();
    }
    sl_params_free(&reference);
    check_rmtree(tmp);
    return check_done();
}
