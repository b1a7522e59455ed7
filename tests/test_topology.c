/* test_topology.c — topology files: a valid one (the split tool's output and the shipped
 * examples' syntax) loads; every validation rule gives its file:line message. */
#include "check.h"
#include "cli.h"
#include "fileio.h"
#include "split.h"
#include "topology.h"

#include <limits.h>
#include <string.h>

static char tmp[200], parts[256];

static const char nodes3[] = "[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://127.0.0.1:5701\n\n"
                             "[node.trunk1]\nrole = trunk\nlayers = 2-4\nlisten = tcp://127.0.0.1:5702\n"
                             "host = localhost   ; inline comment\nthreads = 2\npin = yes\n\n"
                             "[node.top]\nrole = top\nlayers = 4-5\nlisten = ipc:///tmp/sl-top.sock\n";

static int load_text(const char *text, sl_topology *t, bool check_parts, sl_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/t.ini", tmp);
    sl_write_text_file(path, text, err);
    return sl_topology_load(path, t, check_parts, err);
}

static void expect(const char *label, const char *text, bool check_parts, const char *needle)
{
    static sl_topology t;
    sl_err err = {{0}};
    int rc = load_text(text, &t, check_parts, &err);
    CHECK(rc != 0 && strstr(err.msg, needle), "%s: want '%s', got rc %d '%s'", label, needle, rc, err.msg);
}

static void test_valid(void)
{
    static sl_topology t;
    char text[4096];
    snprintf(text, sizeof text,
             "; a comment\n[pipeline]\nname = tb\nparts = %s\nactivations = bf16\ntimeout = 5\n"
             "max_sessions = 3\nidle_timeout = 60\nmax_message_mb = 8\nhwm = 10\nverify = no\n"
             "max_train_tokens = 4096\ncheckpoint_root = /srv/ckpt\n%s",
             parts, nodes3);
    sl_err err;
    CHECK(load_text(text, &t, true, &err) == 0, "valid topology: %s", err.msg);
    CHECK(t.n_nodes == 3 && strcmp(t.nodes[1].name, "trunk1") == 0 && t.nodes[1].role == SL_ROLE_TRUNK &&
              t.nodes[1].first == 2 && t.nodes[1].last == 4 && t.nodes[1].threads == 2 && t.nodes[1].pin &&
              strcmp(t.nodes[1].host, "localhost") == 0 && t.activations == SL_BF16 && t.max_sessions == 3 &&
              t.timeout == 5 && t.hwm == 10 && t.max_message == 8u << 20 && strcmp(t.name, "tb") == 0 &&
              t.max_train_tokens == 4096 && strcmp(t.checkpoint_root, "/srv/ckpt") == 0,
          "fields as written");
    CHECK(t.nodes[0].line == 14 && t.nodes[2].line == 27, "section lines %d %d", t.nodes[0].line, t.nodes[2].line);
    char edge[4096];
    snprintf(edge, sizeof edge,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\n"
             "listen = tcp://127.0.0.1:65535\n[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://[::1]:1\n",
             parts);
    CHECK(load_text(edge, &t, false, &err) == 0, "ports 65535 and 1 (an IPv6 host) are valid: %s", err.msg);
    CHECK(t.nodes[0].max_checkpoint == 64ull << 30 && t.nodes[1].max_checkpoint == 64ull << 30,
          "max_checkpoint_mb is 64 GiB by default (%llu)", t.nodes[0].max_checkpoint);
}

/* max_checkpoint_mb: [pipeline]'s for every node, a node's own for it; at least 1 MB. */
static void test_checkpoint_limit(void)
{
    static sl_topology t;
    char text[4096];
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\nmax_checkpoint_mb = 2.5\n%s\nmax_checkpoint_mb = 100\n", parts,
             nodes3);
    sl_err err;
    CHECK(load_text(text, &t, false, &err) == 0, "max_checkpoint_mb in [pipeline] and [node.top]: %s", err.msg);
    CHECK(t.nodes[0].max_checkpoint == 5ull << 19 && t.nodes[1].max_checkpoint == 5ull << 19 &&
              t.nodes[2].max_checkpoint == 100ull << 20,
          "the pipeline's 2.5 MB for bottom and trunk1 (%llu %llu), the top's own 100 MB (%llu)",
          t.nodes[0].max_checkpoint, t.nodes[1].max_checkpoint, t.nodes[2].max_checkpoint);
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\nmax_checkpoint_mb = 0.5\n%s", parts, nodes3);
    expect("max_checkpoint_mb under 1", text, false, "t.ini:3: max_checkpoint_mb");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s\nmax_checkpoint_mb = lots\n", parts, nodes3);
    expect("max_checkpoint_mb not a number", text, false, "t.ini:21: max_checkpoint_mb");
}

static void test_errors(void)
{
    char text[4096];
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n[nodes.x]\nrole = top\n", parts);
    expect("unknown section", text, false, "t.ini:3: unknown section [nodes.x]");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\ncolour = blue\n%s", parts, nodes3);
    expect("unknown pipeline key", text, false, "t.ini:3: unknown key 'colour' in [pipeline]");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\nmax_train_tokens = 1\n%s", parts, nodes3);
    expect("max_train_tokens out of range", text, false, "t.ini:3: max_train_tokens");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s\ncores = 4\n", parts, nodes3);
    expect("unknown node key", text, false, "t.ini:21: unknown key 'cores' in [node.top]");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nlayers = 0-2\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://a:2\n",
             parts);
    expect("missing role", text, false, "t.ini:3: [node.bottom] has no 'role'");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://a:2\n",
             parts);
    expect("missing layers", text, false, "[node.bottom] has no 'layers'");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\n"
             "[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://a:2\n",
             parts);
    expect("missing listen", text, false, "[node.bottom] has no 'listen'");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 3-5\nlisten = tcp://a:2\n",
             parts);
    expect("gap", text, false, "t.ini:7: [node.top] starts at layer 3 but [node.bottom] ends at 2: a gap");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 1-5\nlisten = tcp://a:2\n",
             parts);
    expect("overlap", text, false, "an overlap; make it layers = 2-5");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://a:1\n",
             parts);
    expect("duplicate endpoint", text, false, "t.ini:7: [node.top] listens on tcp://a:1 like [node.bottom]");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.top]\nrole = top\nlayers = 0-2\nlisten = tcp://a:1\n"
             "[node.bottom]\nrole = bottom\nlayers = 2-5\nlisten = tcp://a:2\n",
             parts);
    expect("order", text, false, "is a top but stage 1 of 2 must be a bottom");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 2-4\nlisten = tcp://a:2\n",
             parts);
    expect("role not matching the part", text, true,
           "t.ini:7: [node.top] is a top but the part for layers 2-4 is a trunk");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-3\nlisten = tcp://a:1\n"
             "[node.top]\nrole = top\nlayers = 3-5\nlisten = tcp://a:2\n",
             parts);
    expect("layers not matching parts", text, true, "t.ini:3: [node.bottom] layers = 0-3 match no part");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s/nowhere\n%s", tmp, nodes3);
    expect("parts missing", text, true, "t.ini:1: parts = ");
    expect("no pipeline", nodes3, false, "no [pipeline] section");
    snprintf(text, sizeof text, "[pipeline]\nname = x\n%s", nodes3);
    expect("no parts", text, false, "t.ini:1: [pipeline] has no 'parts'");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n[node.bottom]\nrole = middle\n", parts);
    expect("bad role", text, false, "t.ini:4: role = middle: write bottom, trunk or top");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n[node.bottom]\nlayers = 2to4\n", parts);
    expect("bad layers", text, false, "t.ini:4: layers = 2to4");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n[node.bottom]\nlisten = http://x\n", parts);
    expect("bad endpoint", text, false, "t.ini:4: listen = http://x");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\ntimeout = soon\n", parts);
    expect("bad number", text, false, "t.ini:3: timeout");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n[node.a]\nrole = bottom\n[node.a]\n", parts);
    expect("duplicate node", text, false, "t.ini:5: [node.a] appears twice");
    expect("not ini", "[pipeline\nparts = x\n", false, "t.ini:1: not INI syntax");
    expect("not ini 2", "[pipeline]\nparts x\n", false, "t.ini:2: not INI syntax");
    expect("key before section", "parts = x\n", false, "t.ini:1: 'parts' is outside any section");
    static const char *const bad_ports[] = {"tcp://127.0.0.1:0", "tcp://127.0.0.1:65536",
                                            "tcp://127.0.0.1",   "tcp://127.0.0.1:http",
                                            "tcp://h:-5",        "tcp://h:99999999999"};
    for (int i = 0; i < 6; i++) {
        snprintf(text, sizeof text, "[pipeline]\nparts = %s\n[node.bottom]\nlisten = %s\n", parts, bad_ports[i]);
        char want[128];
        snprintf(want, sizeof want, "t.ini:4: listen = %s: the port must be a number in 1..65535", bad_ports[i]);
        expect("listen port outside 1..65535", text, false, want);
    }
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\ntimeout = 5\nname = a\ntimeout = 6\n%s", parts, nodes3);
    expect("a pipeline key given twice", text, false,
           "t.ini:5: 'timeout' is given twice in [pipeline] (first at line 3)");
    snprintf(text, sizeof text,
             "[pipeline]\nparts = %s\n[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n"
             "layers = 0-3\n",
             parts);
    expect("a node key given twice", text, false,
           "t.ini:7: 'layers' is given twice in [node.bottom] (first at line 5)");
    sl_topology t;
    sl_err err;
    CHECK(sl_topology_load("/nonexistent/t.ini", &t, false, &err) != 0 && strstr(err.msg, "/nonexistent/t.ini"),
          "missing file: %s", err.msg);
}

/* clip and noise in the bottom's section, grad_clip and grad_noise in the top's. */
static void test_defences(void)
{
    static const char chain[] = "[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n%s"
                                "[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://a:2\n%s";
    char nodes[1024], text[2048];
    static sl_topology t;
    sl_err err;
    snprintf(nodes, sizeof nodes, chain, "clip = 12.5\nnoise = 0.5\n", "grad_clip = 0.01\ngrad_noise = 2\n");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s", parts, nodes);
    CHECK(load_text(text, &t, false, &err) == 0, "defences: %s", err.msg);
    sl_cut_defence b = sl_topology_bottom_defence(&t), g = sl_topology_top_defence(&t);
    CHECK(b.clip == 12.5f && b.noise == 0.5f && g.clip == 0.01f && g.noise == 2.0f, "defences as written");
    snprintf(nodes, sizeof nodes, chain, "", "");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s", parts, nodes);
    CHECK(load_text(text, &t, false, &err) == 0 && !sl_cut_defence_active(sl_topology_bottom_defence(&t)) &&
              !sl_cut_defence_active(sl_topology_top_defence(&t)),
          "no defence by default: %s", err.msg);

    static const struct {
        const char *bottom, *top, *label, *want;
    } bad[] = {
        {"noise = 1\n", "", "noise without clip", "t.ini:7: [node.bottom] has noise = 1 but no clip"},
        {"", "grad_noise = 1\n", "grad_noise without grad_clip",
         "t.ini:11: [node.top] has grad_noise = 1 but no grad_clip"},
        {"", "clip = 3\n", "clip at the top", "t.ini:11: clip/noise in [node.top], a top: only the bottom's section"},
        {"grad_clip = 3\n", "", "grad_clip at the bottom", "t.ini:7: grad_clip/grad_noise in [node.bottom], a bottom"},
        {"clip = 0\n", "", "clip 0", "t.ini:7: clip"},
        {"clip = 1\nnoise = -1\n", "", "negative noise", "t.ini:8: noise"},
        {"clip = lots\n", "", "clip not a number", "t.ini:7: clip"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(nodes, sizeof nodes, chain, bad[i].bottom, bad[i].top);
        snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s", parts, nodes);
        expect(bad[i].label, text, false, bad[i].want);
    }
}

/* Hosts: [host.NAME] sections, restart pipeline-wide and per node. */
static const char hosted[] =
    "[pipeline]\nparts = %s\nrestart = yes\n\n"
    "[host.server]\nrun = ssh -p 2222 'ops team@gpu1'\ndir = /srv/sl\nbin = /srv/sl/bin\n\n"
    "[host.laptop]\nrun =\n\n"
    "[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://10.0.0.1:5701\nhost = laptop\n\n"
    "[node.trunk1]\nrole = trunk\nlayers = 2-4\nlisten = tcp://10.0.0.2:5702\nhost = server\n"
    "restart = no\n\n"
    "[node.top]\nrole = top\nlayers = 4-5\nlisten = tcp://10.0.0.1:5703\nhost = laptop\n%s";

/* kv: the pipeline's default, a node's own, and a value that is not f32 or f16. */
static void test_kv(void)
{
    static const char chain[] = "[node.bottom]\nrole = bottom\nlayers = 0-2\nlisten = tcp://a:1\n"
                                "[node.top]\nrole = top\nlayers = 2-5\nlisten = tcp://a:2\n%s";
    char nodes[1024], text[2048];
    static sl_topology t;
    sl_err err;
    snprintf(nodes, sizeof nodes, chain, "");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s", parts, nodes);
    CHECK(load_text(text, &t, false, &err) == 0 && t.nodes[0].kv == SL_F32 && t.nodes[1].kv == SL_F32,
          "kv is f32 by default: %s", err.msg);
    snprintf(nodes, sizeof nodes, chain, "kv = f32\n");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\nkv = f16\n%s", parts, nodes);
    CHECK(load_text(text, &t, false, &err) == 0 && t.nodes[0].kv == SL_F16 && t.nodes[1].kv == SL_F32,
          "the pipeline's kv = f16 reaches the bottom, the top's own kv = f32 wins: %s", err.msg);
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\nkv = bf16\n%s", parts, nodes);
    expect("kv = bf16", text, false, "t.ini:3: kv: 'bf16' is not f32 or f16");
}

static void test_hosts(void)
{
    static sl_topology t;
    char text[4096];
    sl_err err;
    snprintf(text, sizeof text, hosted, parts, "");
    CHECK(load_text(text, &t, true, &err) == 0, "hosts: %s", err.msg);
    const sl_topo_host *server = sl_topology_host(&t, "server"), *laptop = sl_topology_host(&t, "laptop");
    CHECK(t.n_hosts == 2 && server && laptop && !sl_topology_host(&t, "gpu1"), "two [host.*] sections, looked up");
    CHECK(server && server->has_run && !strcmp(server->run, "ssh -p 2222 'ops team@gpu1'") &&
              !strcmp(server->dir, "/srv/sl") && !strcmp(server->bin, "/srv/sl/bin") && server->line == 5,
          "[host.server] as written");
    CHECK(laptop && laptop->has_run && !laptop->run[0] && !laptop->dir[0] && !laptop->bin[0],
          "an empty run is given (this machine); dir and bin are not");
    CHECK(t.restart && t.nodes[0].restart && !t.nodes[1].restart && t.nodes[2].restart,
          "restart: [pipeline]'s unless the node says otherwise");
    CHECK(t.parts_line == 2 && !strcmp(t.parts_given, parts), "parts as written, and its line");
    snprintf(text, sizeof text, "[pipeline]\nparts = %s\n%s", parts, nodes3);
    CHECK(load_text(text, &t, false, &err) == 0 && !t.restart && !t.nodes[1].restart && t.n_hosts == 0,
          "restart defaults to no; no host sections: %s", err.msg);
}

/* Each error of a host section, compared whole (golden messages). */
static void expect_exact(const char *label, const char *extra, const char *want)
{
    static sl_topology t;
    char text[4096], path[PATH_MAX + 16];
    snprintf(text, sizeof text, hosted, parts, extra);
    sl_err err = {{0}};
    int rc = load_text(text, &t, false, &err);
    snprintf(path, sizeof path, "%s/t.ini:", tmp);
    bool same = rc != 0 && !strncmp(err.msg, path, strlen(path)) && !strcmp(err.msg + strlen(path), want);
    CHECK(same, "%s: want '%s', got rc %d '%s'", label, want, rc, err.msg);
}

static void test_host_errors(void)
{
    expect_exact("unknown host key", "[host.server2]\nuser = me\n",
                 "32: unknown key 'user' in [host.server2] (keys: run, dir, bin)");
    expect_exact("relative dir", "[host.x]\ndir = srv/sl\n",
                 "32: dir = srv/sl: write an absolute path of letters, digits and _@%+=:,./- (under 512 bytes: it "
                 "passes through the host's shell)");
    expect_exact("dir with a blank", "[host.x]\ndir = /srv/my models\n",
                 "32: dir = /srv/my models: write an absolute path of letters, digits and _@%+=:,./- (under 512 "
                 "bytes: it passes through the host's shell)");
    expect_exact("bin with a quote", "[host.x]\nbin = /srv/'bin\n",
                 "32: bin = /srv/'bin: write an absolute path of letters, digits and _@%+=:,./- (under 512 bytes: it "
                 "passes through the host's shell)");
    expect_exact("run with an open quote", "[host.x]\nrun = ssh 'gpu1\n", "32: 'ssh 'gpu1': a ' quote is not closed");
    expect_exact("a host no node runs on", "[host.sever]\ndir = /srv\n",
                 "31: [host.sever]: no node has host = sever; fix the name or remove the section");
    expect_exact("a host twice", "[host.server]\ndir = /srv\n", "31: [host.server] appears twice (first at line 5)");
    expect_exact("a host name like an option", "[host.-oProxyCommand=x]\n",
                 "31: [host.-oProxyCommand=x]: a host name has letters, digits and ._-@: (no leading '-')");
    /* in a section of its own: [node.top] has a host already, and a key given twice is an error */
    expect_exact("a node's host like an option", "[node.other]\nhost = -oProxyCommand=x\n",
                 "32: host = -oProxyCommand=x: a host name has letters, digits and ._-@: (no leading '-')");
    expect_exact("a node name with a blank", "[node.my top]\n",
                 "31: [node.my top]: a node name has letters, digits and ._- (no leading '-')");
    expect_exact("restart neither yes nor no", "restart = often\n", "31: restart = often: write yes or no");
}

static void test_words(void)
{
    char buf[256];
    char *w[8];
    sl_err err;
    int n = sl_split_words("  ip netns exec 'a b' \"c\\\"d\" e\\ f ''  ", buf, sizeof buf, w, 8, &err);
    CHECK(n == 7 && !strcmp(w[0], "ip") && !strcmp(w[2], "exec") && !strcmp(w[3], "a b") && !strcmp(w[4], "c\"d") &&
              !strcmp(w[5], "e f") && !strcmp(w[6], ""),
          "words: quotes group, a backslash escapes, '' is an empty word (%d)", n);
    CHECK(sl_split_words("", buf, sizeof buf, w, 8, &err) == 0, "no words");
    CHECK(sl_split_words("a b c", buf, sizeof buf, w, 2, &err) < 0 && strstr(err.msg, "more than 2 words"), "%s",
          err.msg);
    CHECK(sl_split_words("abcdef", buf, 4, w, 8, &err) < 0 && strstr(err.msg, "too long"), "%s", err.msg);
    CHECK(sl_shell_safe("/srv/sl-1/bin_2") && !sl_shell_safe("/a b") && !sl_shell_safe("$HOME") &&
              !sl_shell_safe("a;b") && !sl_shell_safe(""),
          "shell-safe words");
}

/* The shipped examples are valid topologies (their parts are not here: syntax and chain only). */
static void test_examples(void)
{
    const char *files[] = {"config/local-3stage.ini", "config/local-5stage.ini", "config/u-shaped.ini",
                           "config/multi-host.ini"};
    const int nodes[] = {3, 5, 3, 5};
    for (int i = 0; i < 4; i++) {
        static sl_topology t;
        sl_err err;
        CHECK(sl_topology_load(files[i], &t, false, &err) == 0 && t.n_nodes == nodes[i], "%s: %s", files[i], err.msg);
    }
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_tmpdir(tmp, sizeof tmp, "topo") != 0) return 1;
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/tiny-b", check_fixtures());
    snprintf(parts, sizeof parts, "%s/parts", tmp);
    sl_err err;
    sl_hf_model *ck = sl_hf_model_open(src, &err);
    const int splits[] = {2, 4};
    sl_part_info info[3];
    sl_split_request req = {
        .model_path = src, .name = "tb", .splits = splits, .n_splits = 2, .format = SL_WF_F32, .out_dir = parts};
    CHECK(ck && sl_split_write(ck, &req, info, &err) == 0, "split: %s", err.msg);
    sl_hf_model_destroy(&ck);
    if (check_selected("valid")) test_valid();
    if (check_selected("errors")) test_errors();
    if (check_selected("checkpoint_limit")) test_checkpoint_limit();
    if (check_selected("defences")) test_defences();
    if (check_selected("kv")) test_kv();
    if (check_selected("hosts")) test_hosts();
    if (check_selected("host_errors")) test_host_errors();
    if (check_selected("words")) test_words();
    if (check_selected("examples")) test_examples();
    check_rmtree(tmp);
    return check_done();
}
