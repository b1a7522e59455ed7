/* test_security.c — a pipeline with security = curve, its node processes on loopback: it
 * generates and trains exactly as without CURVE; an unknown key, a peer without CURVE and a node
 * with the wrong key get nothing through (refusals logged); one client cannot touch another's
 * session; a client key cannot train; what crosses the wire holds no ids, field names or
 * activations in the clear (a TCP relay records it; the same relay without CURVE sees them);
 * without CURVE a trunk refuses training unless its topology says train = yes; forged answers
 * sent to a running training's trainer, with or without CURVE, change no loss and are refused. */
#include "client.h"
#include "fixtures.h"
#include "procs.h"
#include "security.h"
#include "split.h"
#include "trainer.h"
#include "wire.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>

static char tmp[256], bin[512], parts[PATH_MAX], certs[PATH_MAX], log_path[PATH_MAX];
static int next_port;
static const int32_t prompt[] = {625, 684, 897, 578, 775, 833, 225, 12, 400};
enum { T = 9, NEW = 8, V = 1000 };

static const char *const names[] = {"bottom", "trunk1", "top", "alice", "bob", "carol"};

static int make_split_and_keys(void)
{
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    snprintf(parts, sizeof parts, "%s/parts", tmp);
    snprintf(certs, sizeof certs, "%s/certs", tmp);
    snprintf(log_path, sizeof log_path, "%s/nodes.log", tmp);
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    sl_part_info info[3];
    const int splits[2] = {2, 4};
    sl_split_request req = {
        .model_path = src, .name = "tb", .splits = splits, .n_splits = 2, .format = SL_WF_F32, .out_dir = parts};
    int rc = ck ? sl_split_write(ck, &req, info, &err) : -1;
    sl_hf_model_destroy(&ck);
    if (rc == 0) rc = sl_mkdirs(certs, &err);
    for (int i = 0; rc == 0 && i < 6; i++)
        rc = sl_security_keygen(certs, names[i], &err);
    char stranger[PATH_MAX + 16];
    snprintf(stranger, sizeof stranger, "%s/elsewhere", tmp);
    if (rc == 0) rc = sl_mkdirs(stranger, &err);
    if (rc == 0) rc = sl_security_keygen(stranger, "eve", &err);    /* a key nobody listed */
    if (rc == 0) rc = sl_security_keygen(stranger, "trunk1", &err); /* the right name, another key */
    return CHECK(rc == 0, "split and keys: %s", err.msg) ? 0 : -1;
}

/* A topology of the split at ports base.. with security as given; bottom_at overrides the
 * bottom's endpoint (a relay in front of it). */
static void write_topology(const char *path, bool curve, int base, int bottom_at, const char *certs_dir)
{
    char text[4096];
    int len = snprintf(text, sizeof text,
                       "[pipeline]\nparts = %s\ntimeout = 5\ncheckpoint_root = %s\ntrain = yes\nmax_checkpoint_mb = 1\n"
                       "max_message_mb = 1\n",
                       parts, tmp);
    if (curve)
        len += snprintf(text + len, sizeof text - (size_t)len,
                        "security = curve\ncerts = %s\nclients = alice, bob\ntrainers = carol\n", certs_dir);
    const char *roles[3] = {"bottom", "trunk", "top"}, *layers[3] = {"0-2", "2-4", "4-5"};
    for (int i = 0; i < 3; i++)
        len += snprintf(text + len, sizeof text - (size_t)len,
                        "\n[node.%s]\nrole = %s\nlayers = %s\nlisten = tcp://127.0.0.1:%d\n%s%s\n", names[i], roles[i],
                        layers[i], i == 0 && bottom_at ? bottom_at : base + i, curve ? "cert = " : "",
                        curve ? names[i] : "");
    sl_err err;
    sl_write_text_file(path, text, &err);
}

static pid_t start_node(const char *topo, const char *name)
{
    char prog[600];
    snprintf(prog, sizeof prog, "%s/zmq-splitlearn-node", bin);
    char *argv[] = {prog, (char *)topo, (char *)name, NULL};
    return spawn(argv, log_path);
}

static void stop_nodes(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], SIGTERM), waitpid(pids[i], NULL, 0), pids[i] = 0;
}

/* Starts the named nodes of topo and waits until each has logged that it is ready. */
static bool start_nodes(const char *topo, const int *which, int n, pid_t *pids)
{
    size_t from = log_size(log_path);
    for (int k = 0; k < n; k++)
        pids[k] = start_node(topo, names[which[k]]);
    bool up = true;
    for (int k = 0; k < n; k++) {
        char ready[64];
        snprintf(ready, sizeof ready, "%s: ready", names[which[k]]);
        up = up && wait_for_after(log_path, ready, from, 20);
    }
    return up;
}

typedef struct generation {
    int32_t tokens[NEW];
    int n, rc;
    float logits[T * V];
    char err[1024];
} generation;

static void generate(const char *topo_path, const char *cert, double timeout, generation *g)
{
    sl_topology topo;
    sl_err err = {{0}};
    g->rc = sl_topology_load(topo_path, &topo, true, &err);
    sl_client *c = g->rc == 0 ? sl_client_new(&topo, cert, &err) : NULL;
    sl_client_request req = {.ids = prompt,
                             .n_ids = T,
                             .max_new_tokens = NEW,
                             .sampling = SL_SAMPLING_GREEDY,
                             .eos_token = -1,
                             .logits = g->logits,
                             .vocab_size = V,
                             .n_positions = 64,
                             .timeout = timeout};
    g->rc = c ? sl_client_generate(c, &req, g->tokens, &g->n, &err) : -1;
    snprintf(g->err, sizeof g->err, "%s", err.msg);
    sl_client_destroy(&c);
}

static void cert_path(char *out, size_t size, const char *dir, const char *name, bool secret)
{
    if (snprintf(out, size, "%s/%s.cert%s", dir, name, secret ? "_secret" : "") >= (int)size) out[0] = 0;
}

/* ---- a TCP relay that records every byte: what a wiretap sees ---- */

typedef struct relay {
    int listen_fd, port, target;
    unsigned char *seen;
    size_t n_seen, cap;
    pthread_mutex_t lock; /* seen may be read while the relay runs */
    pthread_t thread;
} relay;

static void record(relay *r, const unsigned char *data, size_t n)
{
    pthread_mutex_lock(&r->lock);
    if (r->n_seen + n > r->cap) {
        r->cap = (r->n_seen + n) * 2;
        r->seen = realloc(r->seen, r->cap);
    }
    memcpy(r->seen + r->n_seen, data, n);
    r->n_seen += n;
    pthread_mutex_unlock(&r->lock);
}

static void *pump(void *arg)
{
    relay *r = arg;
    int a = accept(r->listen_fd, NULL, NULL);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->target)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (a < 0 || connect(b, (struct sockaddr *)&to, sizeof to) != 0) goto done;
    struct pollfd fds[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    unsigned char buf[65536];
    for (bool open = true; open;) {
        if (poll(fds, 2, 10000) <= 0) break;
        for (int i = 0; i < 2 && open; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got <= 0 || write(fds[1 - i].fd, buf, (size_t)got) != got) open = false;
            if (got > 0) record(r, buf, (size_t)got);
        }
    }
done:
    if (a >= 0) close(a);
    close(b);
    return NULL;
}

static int start_relay(relay *r, int port, int target)
{
    *r = (relay){.port = port, .target = target};
    pthread_mutex_init(&r->lock, NULL);
    r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(r->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &at.sin_addr);
    if (bind(r->listen_fd, (struct sockaddr *)&at, sizeof at) != 0 || listen(r->listen_fd, 1) != 0) return -1;
    return pthread_create(&r->thread, NULL, pump, r);
}

static bool seen(const relay *r, const void *needle, size_t n)
{
    return r->n_seen >= n && memmem(r->seen, r->n_seen, needle, n) != NULL;
}

/* One generation through a relay in front of the bottom: whether the wire showed the prompt's
 * ids, a msgpack field name and the bytes of the returned logits. */
static void wiretap(bool curve, int base, const generation *want)
{
    char topo[PATH_MAX], client_topo[PATH_MAX], alice[PATH_MAX];
    snprintf(topo, sizeof topo, "%s/tap-%d.ini", tmp, curve);
    snprintf(client_topo, sizeof client_topo, "%s/tap-client-%d.ini", tmp, curve);
    write_topology(topo, curve, base, 0, certs);
    write_topology(client_topo, curve, base, base + 3, certs); /* the client reaches the bottom through the relay */
    cert_path(alice, sizeof alice, certs, "alice", true);
    pid_t pids[3];
    const int all[3] = {0, 1, 2};
    relay r;
    bool up = start_nodes(topo, all, 3, pids) && start_relay(&r, base + 3, base) == 0;
    generation g;
    if (up) generate(client_topo, curve ? alice : NULL, 5, &g);
    if (up) pthread_join(r.thread, NULL);
    stop_nodes(pids, 3);
    const char *mode = curve ? "with CURVE" : "without CURVE";
    if (!CHECK(up && g.rc == 0 && g.n == want->n, "%s: a generation through the relay: %s", mode, up ? g.err : "")) {
        close(r.listen_fd);
        free(r.seen);
        return;
    }
    bool ids = seen(&r, prompt, sizeof prompt), field = seen(&r, "\xa4kind", 5),
         logits = seen(&r, want->logits, 64 * sizeof(float));
    if (curve)
        CHECK(!ids && !field && !logits,
              "with CURVE the wire holds no prompt ids (%d), field names (%d) or logits (%d)", ids, field, logits);
    else
        CHECK(ids && field && logits, "without CURVE the same relay sees the ids, field names and logits (so the "
                                      "check above can fail)");
    close(r.listen_fd);
    free(r.seen);
}

/* ---- the attacks ---- */

/* A raw DEALER to endpoint with the given key pair (NULL: no CURVE) that expects the server cert. */
static zsock_t *raw_client(const char *endpoint, const char *secret, const char *server)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (secret) {
        zcert_t *mine = zcert_load(secret), *theirs = zcert_load(server);
        zcert_apply(mine, s);
        zsock_set_curve_serverkey(s, zcert_public_txt(theirs));
        zcert_destroy(&mine);
        zcert_destroy(&theirs);
    }
    zsock_set_rcvtimeo(s, 3000);
    zsock_set_linger(s, 0);
    zsock_connect(s, "%s", endpoint);
    return s;
}

/* Sends m on s and returns the answer's kind and message (error text), or -1 for none. */
static int exchange(zsock_t *s, const sl_msg *m, char *message, size_t size)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    sl_err err;
    sl_wire_encode(m, &buf, &err);
    zmq_send(zsock_resolve(s), buf.data, buf.size, 0);
    msgpack_sbuffer_destroy(&buf);
    zmsg_t *reply = zmsg_recv(s);
    zframe_t *f = reply ? zmsg_first(reply) : NULL;
    sl_wire_decoder *dec = sl_wire_decoder_new();
    sl_msg r;
    int kind = f && sl_wire_decode(dec, zframe_data(f), zframe_size(f), NULL, &r, &err) == 0 ? (int)r.kind : -1;
    if (message) snprintf(message, size, "%s", kind == SL_MSG_ERROR ? r.message : "");
    sl_wire_decoder_destroy(&dec);
    zmsg_destroy(&reply);
    return kind;
}

/* The nodes' log names the session by its first 16 bits (so the check below can fail) and never
 * holds more of it: neither its first 6 bytes nor its last 14 in hex. */
static void check_id_in_log(sl_id id, const char *whose)
{
    char prefix[32], head[2 * 6 + 1], tail[2 * (SL_ID_BYTES - 2) + 1];
    snprintf(prefix, sizeof prefix, "session %04x..", SL_ID_SHORT(id));
    for (int i = 0; i < SL_ID_BYTES; i++) {
        if (i < 6) snprintf(head + 2 * i, 3, "%02x", id.bytes[i]);
        if (i >= 2) snprintf(tail + 2 * (i - 2), 3, "%02x", id.bytes[i]);
    }
    CHECK(wait_for(log_path, prefix, 5) && !file_has(log_path, head) && !file_has(log_path, tail),
          "the log shows %s as '%s' and never more of it", whose, prefix);
}

static void test_curve(void)
{
    int base = check_port(next_port);
    next_port += 4;
    char topo[PATH_MAX], plain[PATH_MAX], alice[PATH_MAX], bob[PATH_MAX], eve[PATH_MAX], carol[PATH_MAX];
    char bottom_pub[PATH_MAX], trunk_pub[PATH_MAX], endpoint[64], trunk_at[64];
    snprintf(topo, sizeof topo, "%s/curve.ini", tmp);
    snprintf(plain, sizeof plain, "%s/plain.ini", tmp);
    write_topology(topo, true, base, 0, certs);
    write_topology(plain, false, base, 0, certs);
    cert_path(alice, sizeof alice, certs, "alice", true);
    cert_path(bob, sizeof bob, certs, "bob", true);
    cert_path(carol, sizeof carol, certs, "carol", true);
    cert_path(bottom_pub, sizeof bottom_pub, certs, "bottom", false);
    cert_path(trunk_pub, sizeof trunk_pub, certs, "trunk1", false);
    snprintf(eve, sizeof eve, "%s/elsewhere/eve.cert_secret", tmp);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", base);
    snprintf(trunk_at, sizeof trunk_at, "tcp://127.0.0.1:%d", base + 1);
    sl_err err = {{0}};

    /* Without CURVE first: the numbers to equal. */
    pid_t pids[3];
    const int all[3] = {0, 1, 2};
    generation want, got;
    if (!CHECK(start_nodes(plain, all, 3, pids), "the plain pipeline starts")) return;
    generate(plain, NULL, 5, &want);
    stop_nodes(pids, 3);
    CHECK(want.rc == 0 && want.n == NEW, "a plain generation: %s", want.err);

    if (!CHECK(start_nodes(topo, all, 3, pids), "the CURVE pipeline starts")) return;
    generate(topo, alice, 5, &got);
    CHECK(got.rc == 0 && got.n == want.n && !memcmp(got.tokens, want.tokens, sizeof got.tokens) &&
              !memcmp(got.logits, want.logits, sizeof got.logits),
          "with CURVE, tokens and prompt logits equal those without, bit for bit: %s", got.err);
    generate(topo, NULL, 5, &got);
    CHECK(got.rc != 0 && strstr(got.err, "--cert"), "a client without a certificate is told to give one: %s", got.err);
    generate(topo, eve, 2, &got);
    CHECK(got.rc != 0, "a key nobody listed gets nothing through: %s", got.err);
    CHECK(wait_for(log_path, "refused a peer at", 5), "... and the bottom logs it with its address and key");
    zsock_t *naked = raw_client(endpoint, NULL, NULL);
    sl_msg fwd = {.kind = SL_MSG_FORWARD, .step = 0, .pos = 0, .ctx = 16};
    if (!CHECK(sl_id_new(&fwd.session, &err) == 0, "a session id: %s", err.msg)) return;
    fwd.ids = prompt, fwd.n_ids = T;
    CHECK(exchange(naked, &fwd, NULL, 0) == -1, "a peer without CURVE gets nothing through");
    CHECK(wait_for(log_path, "no CURVE", 5), "... and is logged");
    zsock_destroy(&naked);

    /* Bob cannot extend, rewind or read Alice's session. */
    zsock_t *a = raw_client(endpoint, alice, bottom_pub), *b = raw_client(endpoint, bob, bottom_pub);
    char message[512];
    int first = exchange(a, &fwd, NULL, 0);
    fwd.step = 1, fwd.pos = 1, fwd.ids = prompt + 1, fwd.n_ids = 1;
    int stolen = exchange(b, &fwd, message, sizeof message);
    CHECK(first == SL_MSG_ACK || first == SL_MSG_RESULT, "alice's session opens (answer %d)", first);
    CHECK(stolen == SL_MSG_ERROR && strstr(message, "another client"), "bob cannot use alice's session: %s", message);
    check_id_in_log(fwd.session, "alice's session");
    /* A client key cannot train. */
    sl_msg train = {.kind = SL_MSG_SAVE, .session = {{99}}, .step = 1};
    snprintf(train.dir, sizeof train.dir, "ck");
    CHECK(exchange(a, &train, message, sizeof message) == SL_MSG_ERROR && strstr(message, "does not take"),
          "a client's training message to the bottom is refused: %s", message);
    zsock_destroy(&a);
    zsock_destroy(&b);
    zsock_t *to_trunk = raw_client(trunk_at, alice, trunk_pub);
    CHECK(exchange(to_trunk, &train, NULL, 0) == -1, "a client key gets nothing through to a trunk");
    zsock_destroy(&to_trunk);
    stop_nodes(pids, 3);

    /* A node with the wrong key: the bottom does not talk to it. */
    char impostor[PATH_MAX];
    snprintf(impostor, sizeof impostor, "%s/impostor.ini", tmp);
    char forged[PATH_MAX + 16];
    snprintf(forged, sizeof forged, "%s/forged", tmp);
    sl_mkdirs(forged, &err);
    for (int i = 0; i < 6; i++) { /* the same certs, but trunk1's key pair is another one */
        char from[PATH_MAX + 64], to[PATH_MAX + 64];
        for (int secret = 0; secret < 2; secret++) {
            bool swap = i == 1;
            snprintf(from, sizeof from, "%s/%s.cert%s", swap ? "" : certs, names[i], secret ? "_secret" : "");
            if (swap) snprintf(from, sizeof from, "%s/elsewhere/trunk1.cert%s", tmp, secret ? "_secret" : "");
            snprintf(to, sizeof to, "%s/%s.cert%s", forged, names[i], secret ? "_secret" : "");
            sl_copy_file(from, to, &err);
        }
    }
    write_topology(impostor, true, base, 0, forged);
    pid_t real[2], fake;
    const int ends[2] = {0, 2}, middle[1] = {1};
    bool up = start_nodes(topo, ends, 2, real) && start_nodes(impostor, middle, 1, &fake);
    generate(topo, alice, 2, &got);
    CHECK(up && got.rc != 0 && strstr(got.err, "trunk1"), "a trunk with the wrong key gets no activations: %s",
          got.err);
    stop_nodes(&fake, 1);
    stop_nodes(real, 2);

    /* Training through the CURVE pipeline equals the in-process chain. */
    const int trunk_only[1] = {1};
    if (!CHECK(start_nodes(topo, trunk_only, 1, pids), "the trunk starts for training")) return;
    sl_topology t;
    sl_topology_load(topo, &t, true, &err);
    int32_t ids[24], targets[24];
    for (int i = 0; i < 24; i++)
        ids[i] = (i * 37 + 11) % V, targets[i] = i + 1 < 24 ? (i * 37 + 48) % V : -1;
    sl_trainer_opts o = {.batch = 1, .seq_len = 24, .grad_accum = 1, .adamw = SL_ADAMW_DEFAULT, .cert = carol};
    sl_trainer *remote = sl_trainer_new_remote(&t, NULL, &o, &err), *local = sl_trainer_new(parts, &o, &err);
    bool same = remote && local;
    for (int s = 0; same && s < 3; s++) {
        float lr = 0, ll = 0;
        same = sl_trainer_step(remote, ids, targets, &lr, &err) == 0 &&
               sl_trainer_step(local, ids, targets, &ll, &err) == 0 && lr == ll;
    }
    CHECK(same, "three training steps through CURVE equal the in-process chain: %s", same ? "" : err.msg);
    /* A dry-run save is a save: the trainer's key may ask, the previous stage's may not. */
    sl_trainer_place places[SL_MAX_SPLITS + 1];
    char dry[PATH_MAX + 8], bottom_secret[PATH_MAX];
    snprintf(dry, sizeof dry, "%s/dry", tmp);
    CHECK(remote && sl_trainer_check_save(remote, "dry", places, &err) == 1 && !strcmp(places[0].dir, dry) &&
              access(dry, F_OK) != 0,
          "the trainer's key asks the trunk where it would save, and nothing is written: %s",
          remote ? err.msg : "no trainer");
    cert_path(bottom_secret, sizeof bottom_secret, certs, "bottom", true);
    zsock_t *as_prev = raw_client(trunk_at, bottom_secret, trunk_pub);
    sl_msg ask = {.kind = SL_MSG_SAVE, .session = {{99}}, .step = 1, .dry_run = true};
    snprintf(ask.dir, sizeof ask.dir, "dry");
    CHECK(exchange(as_prev, &ask, message, sizeof message) == SL_MSG_ERROR && strstr(message, "does not take 'save'"),
          "a dry-run save from the previous stage's key is forbidden: %s", message);
    zsock_destroy(&as_prev);
    /* One save of the trunk's part fits in max_checkpoint_mb = 1, two do not. */
    char kept[PATH_MAX + 16], over[PATH_MAX + 16];
    snprintf(kept, sizeof kept, "%s/run-save-1", tmp);
    snprintf(over, sizeof over, "%s/run-save-2", tmp);
    float loss;
    bool saved = same && sl_trainer_save(remote, kept, NAN, &err) == 0;
    CHECK(saved && sl_trainer_step(remote, ids, targets, &loss, &err) == 0 &&
              sl_trainer_save(remote, over, NAN, &err) != 0 && strstr(err.msg, "max_checkpoint_mb = 1.0") &&
              strstr(err.msg, "MB with this save"),
          "a run's second checkpoint is refused by the trunk, naming the limit and the size: %s", err.msg);
    sl_trainer_destroy(&remote);
    o.cert = alice;
    remote = sl_trainer_new_remote(&t, NULL, &o, &err);
    CHECK(!remote || sl_trainer_step(remote, ids, targets, &loss, &err) != 0,
          "a client's key cannot train through the trunk: %s", err.msg);
    sl_trainer_destroy(&remote);
    sl_trainer_destroy(&local);
    stop_nodes(pids, 1);

    wiretap(true, check_port(next_port), &want);
    next_port += 4;
    wiretap(false, check_port(next_port), &want);
    next_port += 4;
}

/* ---- without CURVE: the recipes of issue 13 leave the pipeline serving exact answers ---- */

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    long kb = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (fp) fclose(fp);
    return kb;
}

static void send_msg_on(zsock_t *s, const sl_msg *m)
{
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    sl_err err;
    if (sl_wire_encode(m, &buf, &err) == 0) zmq_send(zsock_resolve(s), buf.data, buf.size, 0);
    msgpack_sbuffer_destroy(&buf);
}

/* Floods the bottom with new sessions for about a second, from one connection. */
static void *session_flood(void *arg)
{
    zsock_t *s = raw_client(arg, NULL, NULL);
    sl_msg m = {.kind = SL_MSG_FORWARD, .step = 0, .pos = 0, .ctx = 16, .ids = prompt, .n_ids = T};
    for (double end = sl_now() + 1.0; sl_now() < end;) {
        sl_id_new(&m.session, NULL);
        send_msg_on(s, &m);
        zmsg_t *drop;
        while ((drop = zmsg_recv_nowait(s)) != NULL)
            zmsg_destroy(&drop);
    }
    zsock_destroy(&s);
    return NULL;
}

static void test_attacks(void)
{
    int base = check_port(next_port);
    next_port += 4;
    char plain[PATH_MAX], endpoint[64], trunk_at[64];
    snprintf(plain, sizeof plain, "%s/attacked.ini", tmp);
    write_topology(plain, false, base, 0, certs);
    sl_err err;
    char *text = sl_read_text_file(plain, 1 << 16, &err);
    char *train = text ? strstr(text, "train = yes") : NULL;
    if (train) memcpy(train, "train = no ", 11); /* a serving pipeline: nobody may train it */
    if (text) sl_write_text_file(plain, text, &err);
    free(text);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", base);
    snprintf(trunk_at, sizeof trunk_at, "tcp://127.0.0.1:%d", base + 1);
    pid_t pids[3];
    const int all[3] = {0, 1, 2};
    generation want, got;
    if (!CHECK(start_nodes(plain, all, 3, pids), "the attacked pipeline starts")) return;
    generate(plain, NULL, 5, &want);
    CHECK(want.rc == 0 && want.n == NEW, "a first generation: %s", want.err);

    /* 1100 messages, each on a connection of its own (they once each made a node dial out). */
    sl_msg fwd = {.kind = SL_MSG_FORWARD, .step = 0, .pos = 0, .ctx = 16, .ids = prompt, .n_ids = T};
    for (int i = 0; i < 1100; i++) {
        zsock_t *s = raw_client(endpoint, NULL, NULL);
        sl_id_new(&fwd.session, NULL);
        send_msg_on(s, &fwd);
        zsock_destroy(&s);
    }
    /* Training messages to a trunk that does not train: no weight changes, no checkpoint written. */
    zsock_t *t = raw_client(trunk_at, NULL, NULL);
    float x[2 * 48], g[2 * 48];
    for (int i = 0; i < 2 * 48; i++)
        x[i] = 0.1f * (float)i, g[i] = 100;
    sl_msg tf = {
        .kind = SL_MSG_FORWARD, .session = {{7}}, .step = 1, .train = true, .batch = 1, .x = x, .rows = 2, .cols = 48};
    sl_msg tb = {.kind = SL_MSG_BACKWARD,
                 .session = {{7}},
                 .step = 1,
                 .x = g,
                 .rows = 2,
                 .cols = 48,
                 .update = true,
                 .lr = 10,
                 .grad_scale = 1};
    sl_msg save = {.kind = SL_MSG_SAVE, .session = {{7}}, .step = 2};
    snprintf(save.dir, sizeof save.dir, "overwritten");
    char message[512];
    CHECK(exchange(t, &tf, message, sizeof message) == SL_MSG_ERROR && strstr(message, "train = no"),
          "a training forward to a serving trunk is refused: %s", message);
    CHECK(exchange(t, &tb, message, sizeof message) == SL_MSG_ERROR && strstr(message, "next stage"),
          "a backward sent to a trunk's listen socket is refused: %s", message);
    CHECK(exchange(t, &save, message, sizeof message) == SL_MSG_ERROR && strstr(message, "train = no"),
          "a save to a serving trunk is refused: %s", message);
    char written[PATH_MAX + 16];
    snprintf(written, sizeof written, "%s/overwritten", tmp);
    CHECK(access(written, F_OK) != 0, "... and wrote nothing");
    zsock_destroy(&t);

    /* Messages over max_message_mb = 1: one the node reads whole and refuses, naming the sender's
     * address and the limit; one over ZeroMQ's cap (twice that), dropped with its connection. */
    for (int over = 0; over < 2; over++) {
        size_t size = over ? (5u << 20) / 2 : (3u << 20) / 2;
        unsigned char *huge = calloc(size, 1);
        zsock_t *s = raw_client(endpoint, NULL, NULL);
        if (huge) zmq_send(zsock_resolve(s), huge, size, 0);
        char line[128];
        snprintf(line, sizeof line, "refused a message of %zu bytes from 127.0.0.1: over max_message_mb = 1", size);
        if (!over) CHECK(huge && wait_for(log_path, line, 5), "an oversize message is logged: '%s'", line);
        usleep(over ? 300000 : 0);
        zsock_destroy(&s);
        free(huge);
    }

    /* 100 requests for every position's logits whose answers nobody reads. */
    long before = rss_kb(pids[0]) + rss_kb(pids[2]);
    zsock_t *deaf = raw_client(endpoint, NULL, NULL);
    zsock_set_rcvhwm(deaf, 1);
    int32_t many[60];
    for (int i = 0; i < 60; i++)
        many[i] = prompt[i % T];
    sl_msg greedy = {
        .kind = SL_MSG_FORWARD, .step = 0, .pos = 0, .ctx = 60, .ids = many, .n_ids = 60, .want_logits = true};
    for (int i = 0; i < 100; i++) {
        sl_id_new(&greedy.session, NULL);
        send_msg_on(deaf, &greedy);
        usleep(2000);
    }
    usleep(300000);
    long grown = rss_kb(pids[0]) + rss_kb(pids[2]) - before;
    CHECK(grown < 40 * 1024, "100 unread logits answers (24 MB) grow the bottom and top by %ld kB (< 40 MB)", grown);
    zsock_destroy(&deaf);

    /* A flood of new sessions beside a client whose 4 generations must all complete. */
    pthread_t flood;
    pthread_create(&flood, NULL, session_flood, endpoint);
    int exact = 0;
    for (int i = 0; i < 4; i++) {
        generate(plain, NULL, 5, &got);
        exact += got.rc == 0 && got.n == want.n && !memcmp(got.tokens, want.tokens, sizeof got.tokens);
    }
    pthread_join(flood, NULL);
    CHECK(exact == 4, "beside a flood of new sessions, 4 of 4 generations complete exactly (%d): %s", exact, got.err);
    generate(plain, NULL, 5, &got);
    CHECK(got.rc == 0 && !memcmp(got.tokens, want.tokens, sizeof got.tokens) &&
              !memcmp(got.logits, want.logits, sizeof got.logits),
          "after every attack the pipeline answers exactly as before: %s", got.err);
    stop_nodes(pids, 3);
}

/* ---- forged answers to a training: the trainer takes its trunk's answers only ---- */

static pthread_mutex_t trainer_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char trainer_log[8192];

/* The trainer's log lines (from its thread and its ZAP handler's). */
static void keep_trainer_line(void *ctx, const char *line)
{
    (void)ctx;
    pthread_mutex_lock(&trainer_log_lock);
    size_t used = strlen(trainer_log);
    snprintf(trainer_log + used, sizeof trainer_log - used, "%s\n", line);
    pthread_mutex_unlock(&trainer_log_lock);
}

static bool trainer_logged(const char *needle)
{
    pthread_mutex_lock(&trainer_log_lock);
    bool found = strstr(trainer_log, needle) != NULL;
    pthread_mutex_unlock(&trainer_log_lock);
    return found;
}

/* Someone sending forged answers (activations for the top) to the trainer's endpoint, from a
 * connection of its own, for every step: with a run id read off the wire through tap when it
 * shows one, else with guessed ids. */
typedef struct forger {
    const char *endpoint, *secret, *server; /* secret, server: its key pair and the server's cert (CURVE) */
    relay *tap;
    atomic_bool stop, sniffed;
    long sent; /* answers offered to ZeroMQ */
} forger;

/* The run id in a training message the tap saw (the bytes after the key "session"). */
static bool sniff_run_id(relay *tap, sl_id *id)
{
    static const char key[] = "\xa7session\xc4\x10";
    pthread_mutex_lock(&tap->lock);
    const unsigned char *at = memmem(tap->seen, tap->n_seen, key, sizeof key - 1);
    bool found = at && at + sizeof key - 1 + SL_ID_BYTES <= tap->seen + tap->n_seen;
    if (found) memcpy(id->bytes, at + sizeof key - 1, SL_ID_BYTES);
    pthread_mutex_unlock(&tap->lock);
    return found;
}

static void *forge(void *arg)
{
    forger *f = arg;
    zsock_t *s = raw_client(f->endpoint, f->secret, f->server);
    float x[24 * 48];
    for (int i = 0; i < 24 * 48; i++)
        x[i] = 5.0f * (float)(i % 7); /* not what the trunk computes */
    sl_msg m = {.kind = SL_MSG_FORWARD, .train = true, .batch = 1, .x = x, .rows = 24, .cols = 48, .dtype = SL_F32};
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    while (!atomic_load(&f->stop)) {
        bool known = f->tap && sniff_run_id(f->tap, &m.session);
        if (known) atomic_store(&f->sniffed, true);
        for (uint64_t step = 1; step <= 16; step++) {
            sl_err err;
            if (!known) sl_id_new(&m.session, NULL);
            m.step = step;
            if (sl_wire_encode(&m, &buf, &err) != 0) continue;
            zmq_send(zsock_resolve(s), buf.data, buf.size, ZMQ_DONTWAIT); /* with CURVE, refused at the handshake */
            f->sent++;
        }
        usleep(2000);
    }
    msgpack_sbuffer_destroy(&buf);
    zsock_destroy(&s);
    return NULL;
}

/* A training through the pipeline's trunk (reached through a relay: the wire a stranger reads)
 * while two forgers send answers to the trainer's endpoint, one with the run id the wire shows,
 * one guessing: every loss equals the in-process chain's, and the forgeries are refused and
 * logged (without CURVE, by the trainer: not of the run, or not from its trunk's connection;
 * with CURVE, by its ZAP handler: the forgers' keys, a listed client's among them, never reach it). */
static void forged_answers(bool curve)
{
    const char *mode = curve ? "with CURVE" : "without CURVE";
    int base = check_port(next_port);
    next_port += 4;
    char topo[PATH_MAX], via_relay[PATH_MAX], endpoint[64], listen[64], moved[64], alice[PATH_MAX], eve[PATH_MAX],
        carol[PATH_MAX], top_pub[PATH_MAX];
    snprintf(topo, sizeof topo, "%s/forged-%d.ini", tmp, curve);
    snprintf(via_relay, sizeof via_relay, "%s/forged-relay-%d.ini", tmp, curve);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", base + 2);
    cert_path(alice, sizeof alice, certs, "alice", true);
    cert_path(carol, sizeof carol, certs, "carol", true);
    cert_path(top_pub, sizeof top_pub, certs, "top", false);
    snprintf(eve, sizeof eve, "%s/elsewhere/eve.cert_secret", tmp);
    write_topology(topo, curve, base, 0, certs);
    sl_err err = {{0}};
    char *text = sl_read_text_file(topo, 1 << 16, &err), *at;
    snprintf(listen, sizeof listen, "listen = tcp://127.0.0.1:%d", base + 1);
    snprintf(moved, sizeof moved, "listen = tcp://127.0.0.1:%d", base + 3);
    if (text && (at = strstr(text, listen)) && strlen(moved) == strlen(listen)) memcpy(at, moved, strlen(moved));
    if (text) sl_write_text_file(via_relay, text, &err);
    free(text);
    pid_t trunk;
    const int middle[1] = {1};
    relay r;
    if (!CHECK(start_nodes(topo, middle, 1, &trunk) && start_relay(&r, base + 3, base + 1) == 0,
               "%s: the trunk and a relay in front of it start", mode))
        return stop_nodes(&trunk, 1);
    sl_topology t;
    sl_topology_load(via_relay, &t, true, &err);
    int32_t ids[24], targets[24];
    for (int i = 0; i < 24; i++)
        ids[i] = (i * 31 + 5) % V, targets[i] = i + 1 < 24 ? (i * 31 + 36) % V : -1;
    trainer_log[0] = '\0';
    sl_trainer_opts o = {.batch = 1,
                         .seq_len = 24,
                         .grad_accum = 1,
                         .adamw = SL_ADAMW_DEFAULT,
                         .cert = curve ? carol : NULL,
                         .log = keep_trainer_line};
    sl_trainer *remote = sl_trainer_new_remote(&t, NULL, &o, &err), *local = sl_trainer_new(parts, &o, &err);
    float lr = 0, ll = 0;
    bool same = remote && local && sl_trainer_step(remote, ids, targets, &lr, &err) == 0 &&
                sl_trainer_step(local, ids, targets, &ll, &err) == 0 && lr == ll; /* the trainer knows its trunk */
    forger f[2] = {{.endpoint = endpoint, .secret = curve ? alice : NULL, .server = top_pub, .tap = &r},
                   {.endpoint = endpoint, .secret = curve ? eve : NULL, .server = top_pub}};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, forge, &f[i]);
    usleep(100000);
    for (int step = 2; same && step <= 6; step++)
        same = sl_trainer_step(remote, ids, targets, &lr, &err) == 0 &&
               sl_trainer_step(local, ids, targets, &ll, &err) == 0 && lr == ll;
    for (int i = 0; i < 2; i++) {
        atomic_store(&f[i].stop, true);
        pthread_join(threads[i], NULL);
    }
    sl_trainer_destroy(&remote);
    sl_trainer_destroy(&local);
    stop_nodes(&trunk, 1);
    pthread_join(r.thread, NULL);
    close(r.listen_fd);
    free(r.seen);
    CHECK(same && f[0].sent > 0 && f[1].sent > 0,
          "%s, six training steps while forgers sent %ld + %ld answers equal the in-process chain's: %s", mode,
          f[0].sent, f[1].sent, same ? "" : err.msg);
    if (curve)
        CHECK(!atomic_load(&f[0].sniffed) && trainer_logged("security: refused a peer at 127.0.0.1") &&
                  !trainer_logged("refused a message"),
              "%s the wire shows no run id, the trainer's ZAP handler refuses the forgers' keys and nothing reaches "
              "the trainer:\n%s",
              mode, trainer_log);
    else
        CHECK(atomic_load(&f[0].sniffed) && trainer_logged("from another connection than the last trunk's") &&
                  trainer_logged("not an answer of this training run"),
              "%s the run id read off the wire does not help: the trainer refuses and logs both forgers:\n%s", mode,
              trainer_log);
}

/* ---- nodes check at start that the chain agrees ---- */

/* A trunk whose host holds a part of another model (same shape, other weights), or whose
 * topology expects other activations: generation fails naming both nodes, never wrong numbers. */
static void test_chain(void)
{
    char other[PATH_MAX + 32], other_parts[PATH_MAX + 32], cmd[4 * PATH_MAX + 512];
    snprintf(other, sizeof other, "%s/other-model", tmp);
    snprintf(other_parts, sizeof other_parts, "%s/other-parts", tmp);
    snprintf(cmd, sizeof cmd,
             "'%s/zmq-splitlearn-mkmodel' -o '%s' --n-layer 5 --n-embd 48 --n-head 3 --n-inner 144 --vocab 1000 "
             "--n-positions 64 --seed 7 >/dev/null && '%s/zmq-splitlearn-split' '%s' --splits 2,4 -o '%s' >/dev/null",
             bin, other, bin, other, other_parts);
    if (!CHECK(system(cmd) == 0, "another model of the same shape, split the same way")) return;
    int base = check_port(next_port);
    next_port += 4;
    char good[PATH_MAX], wrong[PATH_MAX], f16[PATH_MAX];
    snprintf(good, sizeof good, "%s/chain.ini", tmp);
    snprintf(wrong, sizeof wrong, "%s/chain-other.ini", tmp);
    snprintf(f16, sizeof f16, "%s/chain-f16.ini", tmp);
    write_topology(good, false, base, 0, certs);
    write_topology(wrong, false, base, 0, certs);
    write_topology(f16, false, base, 0, certs);
    sl_err err;
    char *text = sl_read_text_file(wrong, 1 << 16, &err), *at = text ? strstr(text, parts) : NULL;
    char moved[24576];
    if (at) snprintf(moved, sizeof moved, "%.*s%s%s", (int)(at - text), text, other_parts, at + strlen(parts));
    if (at) sl_write_text_file(wrong, moved, &err);
    free(text);
    text = sl_read_text_file(f16, 1 << 16, &err);
    if (text) snprintf(moved, sizeof moved, "[pipeline]\nactivations = f16\n%.16000s", strstr(text, "[pipeline]") + 11);
    if (text) sl_write_text_file(f16, moved, &err);
    free(text);
    const char *trunk_topologies[2] = {wrong, f16}, *why[2] = {"another model", "f16 activations"};
    for (int k = 0; k < 2; k++) {
        pid_t ends[2], trunk;
        const int outer[2] = {0, 2}, middle[1] = {1};
        bool up = start_nodes(good, outer, 2, ends) && start_nodes(trunk_topologies[k], middle, 1, &trunk);
        generation got;
        if (up) generate(good, NULL, 5, &got);
        CHECK(up && got.rc != 0 && strstr(got.err, "chain does not agree") &&
                  strstr(got.err, "[node.bottom] -> [node.trunk1]"),
              "a trunk with %s: the client is told, naming both nodes: %s", why[k], up ? got.err : "(not started)");
        stop_nodes(&trunk, 1);
        stop_nodes(ends, 2);
    }
    pid_t all3[3];
    const int all[3] = {0, 1, 2};
    generation got;
    bool up = start_nodes(good, all, 3, all3);
    if (up) generate(good, NULL, 5, &got);
    CHECK(up && got.rc == 0 && wait_for(log_path, "the chain agrees with the next stage", 1),
          "the right parts: the chain agrees and generates: %s", up ? got.err : "");
    stop_nodes(all3, 3);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    zsys_set_max_sockets(0); /* as many as the system allows: the attacks open a thousand connections */
    const char *b = getenv("SL_BIN");
    snprintf(bin, sizeof bin, "%s", b && *b ? b : "bin");
    if (check_tmpdir(tmp, sizeof tmp, "security") != 0) return 1;
    if (make_split_and_keys() == 0) {
        if (check_selected("curve")) test_curve();
        if (check_selected("attacks")) test_attacks();
        if (check_selected("chain")) test_chain();
        if (check_selected("forged")) forged_answers(false), forged_answers(true);
    }
    check_rmtree(tmp);
    return check_done();
}
