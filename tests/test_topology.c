/* test_topology.c — topology files: a valid one (the split tool's output and the shipped
 * examples' syntax) loads; every validation rule gives its file:line message. */
#include "check.h"
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
    sl_checkpoint *ck = sl_checkpoint_open(src, &err);
    const int splits[] = {2, 4};
    sl_part_info info[3];
    sl_split_request req = {
        .model_path = src, .name = "tb", .splits = splits, .n_splits = 2, .dtype = SL_F32, .out_dir = parts};
    CHECK(ck && sl_split_write(ck, &req, info, &err) == 0, "split: %s", err.msg);
    sl_checkpoint_destroy(&ck);
    if (check_selected("valid")) test_valid();
    if (check_selected("errors")) test_errors();
    if (check_selected("defences")) test_defences();
    if (check_selected("examples")) test_examples();
    check_rmtree(tmp);
    return check_done();
}
