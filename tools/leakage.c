/* leakage.c — zmq-splitlearn-leakage: the leakage meter. Plays the operator of the first trunk of
 * a pipeline: computes what the bottom sends for a text (with the bottom's defence as the topology
 * sets it), attacks it, and prints how much of the text comes back; and the labels behind the
 * gradient the top sends to the last trunk in training. */
#include "cli.h"
#include "clock.h"
#include "cpu.h"
#include "fileio.h"
#include "gen_opts.h"
#include "leakage.h"
#include "split.h"
#include "tokenizer.h"
#include "topology.h"
#include "version.h"

#include <cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: zmq-splitlearn-leakage TOPOLOGY.ini --data FILE [options]\n"
    "\n"
    "Plays the operator of the first trunk of the pipeline, holding the bottom's weights: computes\n"
    "the rows the bottom sends for the first N tokens of FILE (with the clip and noise of the\n"
    "bottom's section, noise seeded here), attacks them, and prints for each attack the share of\n"
    "tokens it recovers exactly and among its 5 best guesses, with an example. Attacks:\n"
    "  nn      nearest neighbour (cosine) of each row among wte[v] + wpe[position]\n"
    "  search  white-box search, position by position after the recovered prefix: candidates\n"
    "          ranked by the bottom's dictionary (each token's output alone), run through the\n"
    "          bottom in batches, the one whose output explains the row wins\n"
    "  probe   a linear map from rows to tokens (ridge regression, closed form), fitted on the\n"
    "          rows of other text (--probe-data), through the same defence\n"
    "  label   the next-token labels of a training batch, from the gradient the top sends back\n"
    "          to the last trunk (nearest head row; with the top's grad_clip and grad_noise)\n"
    "\n"
    "  --attack nn|search|probe|label|all   (default all; probe needs --probe-data)\n"
    "  --tokens N            tokens of FILE attacked (default 256), as sequences of n_positions\n"
    "  --probe-data FILE     other text the probe is fitted on; --probe-tokens N of it (default 20000)\n"
    "  --batch B --seq-len T the training batch of the label attack (default 4 x 64 tokens of FILE)\n"
    "  --all-cuts            the activation attacks at every first cut of the model (after block 1,\n"
    "                        2, ..., n_layer-1), with the bottom's defence: which cut leaks what\n"
    "  --model DIR           the whole model for --all-cuts (default: the split's parts joined)\n"
    "  --search-budget K     candidates the search tries per token at most (default 2048)\n"
    "  --seed S              the simulated noise (default 1)\n"
    "  --json                one JSON object: attacks.NAME.{recovery, top5, tokens, example},\n"
    "                        row_norm (the rows' median L2 norm before the defence: a scale for\n"
    "                        clip), and cuts[] with --all-cuts\n"
    "  --vocab DIR --threads N --help --version\n"
    "\n"
    "exit status: 0 measured, 1 failure (topology, parts, data), 2 usage error\n";

enum { ATTACK_NN, ATTACK_SEARCH, ATTACK_PROBE, ATTACK_LABEL, N_ATTACKS };
static const char *const attack_names[N_ATTACKS] = {"nn", "search", "probe", "label"};
enum { EXAMPLE_TOKENS = 24 };

typedef struct opts {
    const char *topology, *data, *probe_data, *model, *vocab;
    bool attack[N_ATTACKS];
    long tokens, probe_tokens, batch, seq_len, budget, threads;
    uint64_t seed;
    bool json, all_cuts;
} opts;

/* What one attack found. */
typedef struct result {
    bool ran;
    sl_leak_score score;
    double seconds;
    char original[512], recovered[512]; /* the first EXAMPLE_TOKENS tokens, as text */
    char note[160];
} result;

/* The attacks at one first cut, and the median L2 norm of the rows before the defence (what a
 * clip is measured against). */
typedef struct cut_result {
    result attacks[N_ATTACKS];
    double row_norm;
} cut_result;

/* The text, the model's parts and the defences the meter works with. */
typedef struct meter {
    opts o;
    sl_topology topo;
    sl_tokenizer *tok;
    int32_t *ids, *probe_ids;
    int n_ids, n_probe;
    sl_part *parts[SL_MAX_SPLITS + 1];
    sl_params params[SL_MAX_SPLITS + 1]; /* bottom, trunks, top (the top's weights owned) */
    int n_parts;
    sl_cut_defence defence, grad_defence;
    int C, V, window;
} meter;

static int parse_attack(opts *o, const char *name, sl_err *err)
{
    bool all = !strcmp(name, "all");
    int found = 0;
    for (int a = 0; a < N_ATTACKS; a++) {
        o->attack[a] = all || !strcmp(name, attack_names[a]);
        found += o->attack[a];
    }
    return found ? 0 : sl_fail(err, "--attack %s: nn, search, probe, label or all", name);
}

static int parse(opts *o, int argc, char **argv, sl_err *err)
{
    static const struct option options[] = {{"data", 1, 0, 'd'},
                                            {"attack", 1, 0, 'a'},
                                            {"tokens", 1, 0, 'n'},
                                            {"probe-data", 1, 0, 'p'},
                                            {"probe-tokens", 1, 0, 'P'},
                                            {"batch", 1, 0, 'b'},
                                            {"seq-len", 1, 0, 'T'},
                                            {"all-cuts", 0, 0, 'A'},
                                            {"model", 1, 0, 'm'},
                                            {"search-budget", 1, 0, 'K'},
                                            {"seed", 1, 0, 's'},
                                            {"json", 0, 0, 'j'},
                                            {"vocab", 1, 0, 'V'},
                                            {"threads", 1, 0, 't'},
                                            {"help", 0, 0, 'h'},
                                            {"version", 0, 0, 'v'},
                                            {0, 0, 0, 0}};
    long v;
    int c, rc = 0;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1 && rc == 0) {
        switch (c) {
        case 'd':
            o->data = optarg;
            break;
        case 'a':
            rc = parse_attack(o, optarg, err);
            break;
        case 'n':
            rc = sl_parse_long(optarg, "--tokens", 1, 1 << 20, &o->tokens, err);
            break;
        case 'p':
            o->probe_data = optarg;
            break;
        case 'P':
            rc = sl_parse_long(optarg, "--probe-tokens", 1, 1 << 24, &o->probe_tokens, err);
            break;
        case 'b':
            rc = sl_parse_long(optarg, "--batch", 1, 4096, &o->batch, err);
            break;
        case 'T':
            rc = sl_parse_long(optarg, "--seq-len", 2, 1 << 16, &o->seq_len, err);
            break;
        case 'A':
            o->all_cuts = true;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'K':
            rc = sl_parse_long(optarg, "--search-budget", SL_LEAK_GUESSES, 1 << 24, &o->budget, err);
            break;
        case 's':
            rc = sl_parse_long(optarg, "--seed", 0, __LONG_MAX__, &v, err), o->seed = (uint64_t)v;
            break;
        case 'j':
            o->json = true;
            break;
        case 'V':
            o->vocab = optarg;
            break;
        case 't':
            rc = sl_parse_long(optarg, "--threads", 0, 1024, &o->threads, err);
            break;
        case 'h':
            fputs(usage, stdout), exit(SL_EXIT_OK);
        case 'v':
            printf("zmq-splitlearn-leakage %s\n", SL_VERSION), exit(SL_EXIT_OK);
        default:
            return sl_fail(err, "unknown option");
        }
    }
    if (rc != 0) return -1;
    if (argc - optind != 1) return sl_fail(err, "give one TOPOLOGY.ini");
    o->topology = argv[optind];
    if (!o->data) return sl_fail(err, "give --data FILE: the text to attack");
    if (o->attack[ATTACK_PROBE] && !o->probe_data) {
        bool alone = !o->attack[ATTACK_NN] && !o->attack[ATTACK_SEARCH] && !o->attack[ATTACK_LABEL];
        if (alone) return sl_fail(err, "--attack probe needs --probe-data FILE (other text to fit it on)");
        o->attack[ATTACK_PROBE] = false; /* all: the probe needs text of its own */
    }
    if (o->model && !o->all_cuts) return sl_fail(err, "--model is for --all-cuts");
    return 0;
}

/* ---- loading ---- */

static int read_tokens(meter *m, const char *path, long max, int32_t **ids, int *n, sl_err *err)
{
    char *text = sl_read_text_file(path, (size_t)1 << 30, err);
    if (!text) return -1;
    size_t count = 0, cap = 0;
    int rc = sl_tokenizer_encode(m->tok, text, strlen(text), ids, &count, &cap, err);
    free(text);
    if (rc == 0 && count == 0) rc = sl_fail(err, "%s: no text", path);
    *n = (int)(count < (size_t)max ? count : (size_t)max);
    return rc;
}

/* Whether a part's matrices are in a format the attacks cannot read in place (they read f32). */
static bool widen(const sl_part *part) { return strcmp(sl_part_info_of(part)->dtype, "f32") != 0; }

/* The parts of the topology's split in chain order: the bottom and trunks mapped (widened to f32
 * when stored in another format), the top copied (its gradient is computed with the training
 * code, which needs its own weights). */
static int load_parts(meter *m, sl_err *err)
{
    const sl_topology *t = &m->topo;
    for (int i = 0; i < t->n_nodes; i++) {
        const sl_topo_node *node = &t->nodes[i];
        bool top = i == t->n_nodes - 1;
        if (!(m->parts[i] = sl_part_open(t->parts, node->first, node->last, t->verify, err)) ||
            sl_part_load_params(m->parts[i], &m->params[i], top || widen(m->parts[i]), err) != 0)
            return -1;
        m->n_parts = i + 1;
    }
    const sl_config *cfg = &m->params[0].cfg;
    m->C = cfg->n_embd;
    m->V = cfg->vocab_size;
    m->window = cfg->n_positions;
    return 0;
}

static int load(meter *m, sl_err *err)
{
    opts *o = &m->o;
    if (sl_topology_load(o->topology, &m->topo, true, err) != 0 || load_parts(m, err) != 0) return -1;
    m->defence = sl_topology_bottom_defence(&m->topo);
    m->grad_defence = sl_topology_top_defence(&m->topo);
    char vocab[PATH_MAX];
    sl_default_vocab_dir(vocab, sizeof vocab);
    if (!(m->tok = sl_tokenizer_new(o->vocab ? o->vocab : vocab, err))) return -1;
    long need = o->tokens > o->batch * o->seq_len + 1 ? o->tokens : o->batch * o->seq_len + 1;
    if (read_tokens(m, o->data, need, &m->ids, &m->n_ids, err) != 0) return -1;
    if (o->probe_data && read_tokens(m, o->probe_data, o->probe_tokens, &m->probe_ids, &m->n_probe, err) != 0)
        return -1;
    if (o->seq_len > m->window)
        return sl_fail(err, "--seq-len %ld is longer than the model's n_positions (%d)", o->seq_len, m->window);
    return 0;
}

static void unload(meter *m)
{
    for (int i = 0; i < m->n_parts; i++) {
        sl_params_free(&m->params[i]);
        sl_part_destroy(&m->parts[i]);
    }
    sl_tokenizer_destroy(&m->tok);
    free(m->ids);
    free(m->probe_ids);
}

/* ---- attacks ---- */

/* Clip and noise as the bottom (or the top, for gradients) applies them; seed picks the noise. */
static int defend(sl_cut_defence d, int C, uint64_t seed, float *rows, int n, sl_err *err)
{
    sl_cutguard *g = sl_cutguard_new(d, C, &seed, err);
    int rc = g ? sl_cutguard_forward(g, rows, n, false, err) : -1;
    sl_cutguard_destroy(&g);
    return rc;
}

/* The decoded text of up to EXAMPLE_TOKENS ids (ids < 0 skipped) into out. */
static void example_text(const meter *m, const int32_t *ids, int n, int stride, char *out, size_t size)
{
    int32_t pick[EXAMPLE_TOKENS];
    int k = 0;
    for (int i = 0; i < n && k < EXAMPLE_TOKENS; i++)
        if (ids[(size_t)i * stride] >= 0) pick[k++] = ids[(size_t)i * stride];
    char *text = sl_tokenizer_decode(m->tok, pick, (size_t)k, NULL, NULL);
    snprintf(out, size, "%s", text ? text : "");
    free(text);
}

static void finish(const meter *m, result *r, const int32_t *truth, const int32_t *guesses, int n, double t0)
{
    r->ran = true;
    r->score = sl_leak_score_of(truth, guesses, n);
    r->seconds = sl_now() - t0;
    int32_t shown[EXAMPLE_TOKENS];
    int k = 0;
    for (int i = 0; i < n && k < EXAMPLE_TOKENS; i++)
        if (truth[i] >= 0) shown[k++] = i;
    int32_t orig[EXAMPLE_TOKENS], got[EXAMPLE_TOKENS];
    for (int i = 0; i < k; i++)
        orig[i] = truth[shown[i]], got[i] = guesses[(size_t)shown[i] * SL_LEAK_GUESSES];
    example_text(m, orig, k, 1, r->original, sizeof r->original);
    example_text(m, got, k, 1, r->recovered, sizeof r->recovered);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median L2 norm of n rows (n,C); 0 when out of memory. */
static double median_norm(const float *rows, int n, int C)
{
    double *norms = malloc((size_t)n * sizeof *norms), median = 0;
    if (!norms) return 0;
    for (int i = 0; i < n; i++) {
        double sq = 0;
        for (int c = 0; c < C; c++)
            sq += (double)rows[(size_t)i * C + c] * rows[(size_t)i * C + c];
        norms[i] = sqrt(sq);
    }
    qsort(norms, (size_t)n, sizeof *norms, compare_double);
    median = n % 2 ? norms[n / 2] : 0.5 * (norms[n / 2 - 1] + norms[n / 2]);
    free(norms);
    return median;
}

/* The rows the first trunk receives for text ids (n), through bottom and the defence; norm, when
 * not NULL, receives the median norm of the rows before the defence. */
static int capture(const meter *m, const sl_params *bottom, const int32_t *ids, int n, uint64_t seed, float *rows,
                   double *norm, sl_err *err)
{
    if (sl_leak_run(bottom, m->window, ids, NULL, n, rows, err) != 0) return -1;
    if (norm) *norm = median_norm(rows, n, m->C);
    return defend(m->defence, m->C, seed, rows, n, err);
}

static int run_probe(const meter *m, const sl_params *bottom, const float *rows, int n, int32_t *guesses, sl_err *err)
{
    float *fit = malloc((size_t)m->n_probe * m->C * sizeof *fit);
    if (!fit) return sl_fail(err, "out of memory for %d probe rows", m->n_probe);
    int rc = capture(m, bottom, m->probe_ids, m->n_probe, m->o.seed + 1, fit, NULL, err); /* other noise draws */
    sl_leak_probe *probe = rc == 0 ? sl_leak_probe_fit(fit, m->probe_ids, m->n_probe, m->C, m->V, 1e-3, err) : NULL;
    if (rc == 0) rc = probe ? sl_leak_probe_guess(probe, rows, n, guesses, err) : -1;
    sl_leak_probe_destroy(&probe);
    free(fit);
    return rc;
}

static int run_search(const meter *m, const sl_params *bottom, const float *rows, int n, int32_t *guesses, sl_err *err)
{
    sl_leak_search_opts opts = SL_LEAK_SEARCH_DEFAULT;
    opts.budget = (int)m->o.budget;
    sl_leak_search *search = sl_leak_search_new(bottom, &opts, err);
    int rc = search ? sl_leak_search_run(search, m->defence, m->window, rows, n, guesses, err) : -1;
    sl_leak_search_destroy(&search);
    return rc;
}

/* The activation attacks asked for, on the rows bottom sends for the text. */
static int attack_rows(const meter *m, const sl_params *bottom, cut_result *cut, sl_err *err)
{
    const int n = (int)(m->o.tokens < m->n_ids ? m->o.tokens : m->n_ids);
    float *rows = malloc((size_t)n * m->C * sizeof *rows);
    int32_t *guesses = malloc((size_t)n * SL_LEAK_GUESSES * sizeof *guesses);
    result *res = cut->attacks;
    int rc = rows && guesses ? capture(m, bottom, m->ids, n, m->o.seed, rows, &cut->row_norm, err)
                             : sl_fail(err, "out of memory");
    for (int a = 0; rc == 0 && a < ATTACK_LABEL; a++) {
        if (!m->o.attack[a]) continue;
        double t0 = sl_now();
        if (a == ATTACK_NN) rc = sl_leak_nn(bottom, m->window, rows, n, guesses, err);
        if (a == ATTACK_SEARCH) rc = run_search(m, bottom, rows, n, guesses, err);
        if (a == ATTACK_PROBE) rc = run_probe(m, bottom, rows, n, guesses, err);
        if (rc == 0) finish(m, &res[a], m->ids, guesses, n, t0);
        if (a == ATTACK_PROBE)
            snprintf(res[a].note, sizeof res[a].note, "fitted on %d tokens of %s", m->n_probe, m->o.probe_data);
    }
    free(rows);
    free(guesses);
    return rc;
}

/* The label attack: a training batch through the chain (the bottom's defence included), the
 * gradient the top sends back (with its defence), its rows matched against the head. */
static int attack_labels(meter *m, result *r, sl_err *err)
{
    const int B = (int)m->o.batch, T = (int)m->o.seq_len, N = B * T, last = m->n_parts - 1;
    if (m->n_ids < N + 1) return sl_fail(err, "--data has %d tokens: the label attack needs %d", m->n_ids, N + 1);
    float *a = malloc((size_t)N * m->C * sizeof *a), *b = malloc((size_t)N * m->C * sizeof *b);
    int32_t *targets = malloc((size_t)N * sizeof *targets), *guesses = malloc((size_t)N * SL_LEAK_GUESSES * 4);
    int rc = a && b && targets && guesses ? 0 : sl_fail(err, "out of memory");
    for (int i = 0; i < N; i++)
        targets[i] = m->ids[i + 1];
    double t0 = sl_now();
    if (rc == 0 && (sl_leak_run(&m->params[0], T, m->ids, NULL, N, a, err) != 0 ||
                    defend(m->defence, m->C, m->o.seed, a, N, err) != 0))
        rc = -1;
    for (int i = 1; rc == 0 && i < last; i++) { /* the trunks */
        rc = sl_leak_run(&m->params[i], T, NULL, a, N, b, err);
        float *swap = a;
        a = b, b = swap;
    }
    if (rc == 0) rc = sl_leak_top_gradient(&m->params[last], B, T, a, targets, b, err);
    if (rc == 0) rc = defend(m->grad_defence, m->C, m->o.seed + 2, b, N, err);
    if (rc == 0) rc = sl_leak_label(&m->params[last], b, N, guesses, err);
    if (rc == 0) {
        finish(m, r, targets, guesses, N, t0);
        snprintf(r->note, sizeof r->note, "the top's gradient to the stage before it, a batch of %d x %d", B, T);
    }
    free(a);
    free(b);
    free(targets);
    free(guesses);
    return rc;
}

/* ---- every cut ---- */

static int load_whole(const meter *m, sl_params *whole, sl_hf_model **ck, sl_err *err)
{
    if (!m->o.model) return sl_split_join(m->topo.parts, whole, err);
    if (!(*ck = sl_hf_model_open(m->o.model, err))) return -1;
    const sl_config *cfg = sl_hf_model_config(*ck);
    if (cfg->n_embd != m->C || cfg->vocab_size != m->V)
        return sl_fail(err, "--model %s is %d wide with %d tokens; the split is %d wide with %d", m->o.model,
                       cfg->n_embd, cfg->vocab_size, m->C, m->V);
    return sl_params_load(whole, *ck, 0, cfg->n_layer, true, false, false, err);
}

/* The activation attacks at every cut 1 .. n_layer-1: (*res)[cut - 1], allocated here. */
static int attack_cuts(const meter *m, cut_result **res, int *n_cuts, sl_err *err)
{
    sl_params whole = {0};
    sl_hf_model *ck = NULL;
    int rc = load_whole(m, &whole, &ck, err);
    *n_cuts = rc == 0 ? whole.cfg.n_layer - 1 : 0;
    if (rc == 0 && *n_cuts > 0 && !(*res = calloc((size_t)*n_cuts, sizeof **res))) rc = sl_fail(err, "out of memory");
    for (int cut = 1; rc == 0 && cut <= *n_cuts; cut++) {
        sl_params bottom = sl_leak_bottom_of(&whole, cut);
        rc = attack_rows(m, &bottom, &(*res)[cut - 1], err);
        if (!m->o.json) fprintf(stderr, "cut after block %d of %d measured\n", cut, whole.cfg.n_layer);
    }
    sl_params_free(&whole);
    sl_hf_model_destroy(&ck);
    return rc;
}

/* ---- output ---- */

/* text with control characters shown as \n, \t, ... (the example is one line). */
static void print_escaped(const char *label, const char *text)
{
    printf("  %-10s \"", label);
    for (const char *p = text; *p; p++) {
        if (*p == '\n')
            fputs("\\n", stdout);
        else if ((unsigned char)*p < 0x20)
            printf("\\x%02x", (unsigned char)*p);
        else
            putchar(*p);
    }
    puts("\"");
}

static void describe_defence(const char *what, sl_cut_defence d, double sensitivity_rows)
{
    if (!sl_cut_defence_active(d)) {
        printf("%s: none\n", what);
        return;
    }
    printf("%s: clip %g, noise %g", what, (double)d.clip, (double)d.noise);
    if (d.noise > 0)
        printf(" (per row: (epsilon, delta) = (%.3g, 1e-5), Gaussian mechanism, replace-one: docs/PRIVACY.md)",
               sl_gauss_epsilon(sensitivity_rows * d.clip, (double)d.noise * d.clip, 1e-5));
    putchar('\n');
}

static void print_text(const meter *m, const cut_result *own, const cut_result *cuts, int n_cuts)
{
    const sl_topo_node *first = &m->topo.nodes[0];
    const result *res = own->attacks;
    printf("leakage of %s: what the first trunk receives, the rows of blocks [0,%d) (%s)\n", m->topo.name, first->last,
           m->o.data);
    printf("rows before the defence: median L2 norm %.4g\n", own->row_norm);
    describe_defence("bottom's defence", m->defence, 2);
    if (res[ATTACK_LABEL].ran) describe_defence("top's gradient defence", m->grad_defence, 2);
    printf("\n%-8s %9s %8s %7s\n", "attack", "recovery", "top-5", "rows");
    for (int a = 0; a < N_ATTACKS; a++)
        if (res[a].ran)
            printf("%-8s %8.1f%% %7.1f%% %7d  %s\n", attack_names[a], 100 * res[a].score.recovery,
                   100 * res[a].score.top5, res[a].score.rows, res[a].note);
    for (int a = 0; a < N_ATTACKS; a++) {
        if (!res[a].ran) continue;
        printf("\n%s:\n", attack_names[a]);
        print_escaped("original", res[a].original);
        print_escaped("recovered", res[a].recovered);
    }
    if (!n_cuts) return;
    printf("\nevery first cut (recovery / top-5):\n%-6s %9s", "cut", "row norm");
    for (int a = 0; a < ATTACK_LABEL; a++)
        if (cuts[0].attacks[a].ran) printf(" %17s", attack_names[a]);
    putchar('\n');
    for (int c = 0; c < n_cuts; c++) {
        printf("%-6d %9.4g", c + 1, cuts[c].row_norm);
        for (int a = 0; a < ATTACK_LABEL; a++) {
            const result *r = &cuts[c].attacks[a];
            if (r->ran) printf("   %6.1f%% / %5.1f%%", 100 * r->score.recovery, 100 * r->score.top5);
        }
        putchar('\n');
    }
}

static cJSON *json_attacks(const result *res)
{
    cJSON *attacks = cJSON_CreateObject();
    for (int a = 0; a < N_ATTACKS; a++) {
        if (!res[a].ran) continue;
        cJSON *o = cJSON_AddObjectToObject(attacks, attack_names[a]);
        cJSON_AddNumberToObject(o, "recovery", res[a].score.recovery);
        cJSON_AddNumberToObject(o, "top5", res[a].score.top5);
        cJSON_AddNumberToObject(o, "tokens", res[a].score.rows);
        cJSON_AddNumberToObject(o, "seconds", res[a].seconds);
        if (res[a].note[0]) cJSON_AddStringToObject(o, "note", res[a].note);
        cJSON *ex = cJSON_AddObjectToObject(o, "example");
        cJSON_AddStringToObject(ex, "original", res[a].original);
        cJSON_AddStringToObject(ex, "recovered", res[a].recovered);
    }
    return attacks;
}

static cJSON *json_defence(sl_cut_defence d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "clip", d.clip);
    cJSON_AddNumberToObject(o, "noise", d.noise);
    double eps = d.noise > 0 ? sl_gauss_epsilon(2.0 * d.clip, (double)d.noise * d.clip, 1e-5) : INFINITY;
    if (isfinite(eps)) cJSON_AddNumberToObject(o, "epsilon_per_row", eps), cJSON_AddNumberToObject(o, "delta", 1e-5);
    return o;
}

static void print_json(const meter *m, const cut_result *own, const cut_result *cuts, int n_cuts)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "topology", m->topo.path);
    cJSON_AddStringToObject(root, "data", m->o.data);
    cJSON_AddNumberToObject(root, "cut", m->topo.nodes[0].last);
    cJSON_AddItemToObject(root, "defence", json_defence(m->defence));
    cJSON_AddItemToObject(root, "grad_defence", json_defence(m->grad_defence));
    cJSON_AddNumberToObject(root, "row_norm", own->row_norm);
    cJSON_AddItemToObject(root, "attacks", json_attacks(own->attacks));
    if (n_cuts) {
        cJSON *arr = cJSON_AddArrayToObject(root, "cuts");
        for (int c = 0; c < n_cuts; c++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "cut", c + 1);
            cJSON_AddNumberToObject(o, "row_norm", cuts[c].row_norm);
            cJSON_AddItemToObject(o, "attacks", json_attacks(cuts[c].attacks));
            cJSON_AddItemToArray(arr, o);
        }
    }
    char *text = cJSON_Print(root);
    puts(text);
    free(text);
    cJSON_Delete(root);
}

static int measure(meter *m, sl_err *err)
{
    cut_result own = {0}, *cuts = NULL;
    int n_cuts = 0;
    if (load(m, err) != 0) return -1;
    int rc = attack_rows(m, &m->params[0], &own, err);
    if (rc == 0 && m->o.attack[ATTACK_LABEL]) rc = attack_labels(m, &own.attacks[ATTACK_LABEL], err);
    if (rc == 0 && m->o.all_cuts) rc = attack_cuts(m, &cuts, &n_cuts, err);
    if (rc == 0 && m->o.json) print_json(m, &own, cuts, n_cuts);
    if (rc == 0 && !m->o.json) print_text(m, &own, cuts, n_cuts);
    free(cuts);
    return rc;
}

int main(int argc, char **argv)
{
    meter m = {.o = {.tokens = 256, .probe_tokens = 20000, .batch = 4, .seq_len = 64, .budget = 2048, .seed = 1}};
    sl_err err;
    if (parse(&m.o, argc, argv, &err) != 0) {
        fprintf(stderr, "zmq-splitlearn-leakage: %s\n%s", err.msg, usage);
        return SL_EXIT_USAGE;
    }
    bool any = false;
    for (int a = 0; a < N_ATTACKS; a++)
        any |= m.o.attack[a];
    if (!any) parse_attack(&m.o, "all", &err), m.o.attack[ATTACK_PROBE] = m.o.probe_data != NULL;
    int rc = sl_threads_setup((int)m.o.threads, false, &err);
    if (rc == 0) rc = measure(&m, &err);
    if (rc != 0) fprintf(stderr, "zmq-splitlearn-leakage: %s\n", err.msg);
    unload(&m);
    return rc == 0 ? SL_EXIT_OK : SL_EXIT_FAILURE;
}
