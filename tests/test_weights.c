/* test_weights.c — every weight format (f32, f16, bf16, q8_0) and the F16 KV cache, run whole and
 * through split parts loaded as nodes load them (in place), on every kernel path this CPU has,
 * against the references of ../shared/fixtures within the bounds of docs/WEIGHTS.md ("Accuracy of
 * a whole model"); F32 bit for bit where it did not change; the part files of each format, and
 * malformed ones refused; merge and training from 16-bit and 8-bit parts.
 *
 * The bound on a quantity Q (a hidden state, the logits) of scale S = max |reference Q|, computed
 * through n matrices stored in format f, and through the keys and values of k layers held in F16:
 *     B = 1e-5 + (n eps_f + 2 k 2^-11) S
 * eps_f: F16 2^-11, BF16 2^-8 (their unit roundoffs), Q8_0 2/254 + 2^-11 (d/2 of the block's
 * largest weight, the F16 rounding of d, and as much again for x rounded to int8 on avx512vnni).
 * n: 1 (wte) + 4 per block before Q, + 1 for the logits (the head). Greedy continuations must
 * equal the reference's up to the first step whose margin is below 2 B (and below 1e-3, the
 * fixtures' rule for F32 rounding): an error below B on every logit cannot reorder two tokens
 * farther apart than 2 B. */
#include "fixtures.h"
#include "kern.h"
#include "learner.h"
#include "ops.h"
#include "split.h"
#include "wmat.h"

#define TOL 1e-5
#define KV_EPS 0x1p-11

enum { MAX_STAGES = 4, MAX_PROMPTS = 8, DECODE_STEPS = 6 };

static const sl_wformat formats[] = {SL_WF_F32, SL_WF_F16, SL_WF_BF16, SL_WF_Q8_0};
enum { N_FORMATS = sizeof formats / sizeof *formats };

/* The kernels of every runner here unless a test asks for others: two threads, the best set. */
static sl_kern *kern_default;

static double format_eps(sl_wformat f)
{
    static const double eps[SL_WF_COUNT] = {0, 0x1p-11, 0x1p-8, 2.0 / 254 + 0x1p-11};
    return eps[f];
}

/* B for a quantity of scale S behind n_mats matrices in format f and kv16_layers layers of F16 keys
 * and values (see the top of this file). */
static double error_bound(sl_wformat f, int n_mats, int kv16_layers, double S)
{
    return TOL + (n_mats * format_eps(f) + 2 * kv16_layers * KV_EPS) * S;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Steps of the reference's greedy continuation whose margins are all at least `margin`. */
static int comparable_steps(const fixture_prompt *fp, double margin)
{
    int n = 0;
    while (n < fp->n_greedy && fp->margins[n] >= margin)
        n++;
    return n;
}

/* ---- stages chained: a whole model (one stage) or a split's parts ---- */

typedef struct chain {
    int n, C, V;
    sl_part *parts[MAX_STAGES];
    sl_params p[MAX_STAGES];
    sl_runner *run[MAX_STAGES];
    sl_kv *kv[MAX_STAGES];
    int boundary[MAX_STAGES]; /* the first block of stage i */
    float *act[2];            /* (n_positions, C): what crosses between stages */
} chain;

static void chain_close(chain *ch)
{
    for (int i = 0; i < ch->n; i++) {
        sl_kv_destroy(&ch->kv[i]);
        sl_runner_destroy(&ch->run[i]);
        sl_params_free(&ch->p[i]);
        sl_part_destroy(&ch->parts[i]);
    }
    free(ch->act[0]);
    free(ch->act[1]);
    memset(ch, 0, sizeof *ch);
}

/* Runners and caches for the n stages whose params are loaded. */
static int chain_start(chain *ch, sl_dtype kv_dtype, sl_kern *kern)
{
    const sl_config *c = &ch->p[0].cfg;
    ch->C = c->n_embd;
    ch->V = c->vocab_size;
    ch->act[0] = malloc((size_t)c->n_positions * c->n_embd * sizeof(float));
    ch->act[1] = malloc((size_t)c->n_positions * c->n_embd * sizeof(float));
    for (int i = 0; i < ch->n; i++) {
        sl_err err;
        ch->boundary[i] = ch->p[i].first;
        ch->run[i] = sl_runner_new(&ch->p[i], c->n_positions, kern, &err);
        ch->kv[i] = ch->run[i] ? sl_kv_new(&ch->p[i], c->n_positions, kv_dtype, &err) : NULL;
        if (!CHECK(ch->kv[i] != NULL, "stage %d: %s", i, err.msg)) return -1;
    }
    return 0;
}

/* The whole model of ck with its matrices in format f (F32: used in place, as loaded). */
static int chain_whole(chain *ch, const sl_hf_model *ck, sl_wformat f, sl_dtype kv_dtype, sl_kern *kern)
{
    memset(ch, 0, sizeof *ch);
    sl_err err;
    sl_params base;
    const int L = sl_hf_model_config(ck)->n_layer;
    if (!CHECK(sl_params_load(&base, ck, 0, L, true, true, false, &err) == 0, "load: %s", err.msg)) return -1;
    int rc = 0;
    if (f == SL_WF_F32)
        ch->p[0] = base;
    else {
        rc = sl_params_convert(&ch->p[0], &base, f, &err);
        CHECK(rc == 0, "convert to %s: %s", sl_wformat_name(f), err.msg);
        sl_params_free(&base);
    }
    ch->n = rc == 0;
    return rc == 0 ? chain_start(ch, kv_dtype, kern) : -1;
}

/* The parts of the split directory dir, loaded in place as a node loads its part. */
static int chain_parts(chain *ch, const char *dir, sl_dtype kv_dtype, sl_kern *kern)
{
    memset(ch, 0, sizeof *ch);
    sl_err err;
    sl_part_info info[MAX_STAGES];
    int n = sl_split_read_index(dir, info, MAX_STAGES, &err);
    if (!CHECK(n > 0, "%s: %s", dir, err.msg)) return -1;
    for (int i = 0; i < n; i++) {
        ch->parts[i] = sl_part_open_info(&info[i], false, &err);
        if (!CHECK(ch->parts[i] && sl_part_load_params(ch->parts[i], &ch->p[i], false, &err) == 0, "%s: %s",
                   info[i].name, err.msg)) {
            chain_close(ch);
            return -1;
        }
        ch->n++;
    }
    return chain_start(ch, kv_dtype, kern);
}

static void chain_reset(chain *ch)
{
    for (int i = 0; i < ch->n; i++)
        sl_kv_reset(ch->kv[i]);
}

/* T tokens through every stage: out as `which` says from the last; crossing[i] (T,C), when given,
 * receives what stage i passes on (i < n - 1). */
static int chain_forward(chain *ch, int T, const int32_t *ids, float *out, sl_output which, float **crossing)
{
    const float *in = NULL;
    for (int i = 0; i < ch->n; i++) {
        const bool last = i == ch->n - 1;
        float *dst = last ? out : ch->act[i % 2];
        sl_err err;
        if (!CHECK(sl_runner_forward(ch->run[i], ch->kv[i], T, i == 0 ? ids : NULL, in, dst,
                                     last ? which : SL_OUT_HIDDEN, &err) == 0,
                   "stage %d: %s", i, err.msg))
            return -1;
        if (!last && crossing) memcpy(crossing[i], dst, (size_t)T * ch->C * sizeof(float));
        in = dst;
    }
    return 0;
}

/* The prompt, then steps tokens one at a time through the caches: each step's logits (steps, V)
 * into logits. With follow NULL the chain continues with its own argmax, else with follow's ids. */
static int chain_decode(chain *ch, const fixture_prompt *fp, int steps, const int32_t *follow, int32_t *gen,
                        float *logits)
{
    chain_reset(ch);
    const size_t V = (size_t)ch->V;
    if (chain_forward(ch, fp->n_ids, fp->ids, logits, SL_OUT_LOGITS_LAST, NULL) != 0) return -1;
    for (int s = 0; s < steps; s++) {
        gen[s] = follow ? follow[s] : argmax(logits + s * V, ch->V);
        if (s + 1 < steps && chain_forward(ch, 1, &gen[s], logits + (s + 1) * V, SL_OUT_LOGITS_LAST, NULL) != 0)
            return -1;
    }
    return 0;
}

/* ---- the fixtures of one model ---- */

typedef struct model {
    const char *name;
    char dir[1024];
    sl_hf_model *ck;
    sl_st_file *refs;
    fixture_prompt prompts[MAX_PROMPTS];
    int n_prompts, L, C, V;
} model;

static int model_open(model *m, const char *name)
{
    memset(m, 0, sizeof *m);
    m->name = name;
    sl_err err;
    char path[1024];
    snprintf(m->dir, sizeof m->dir, "%s/%s", check_fixtures(), name);
    fixture_path(path, sizeof path, name, "refs.safetensors");
    m->ck = sl_hf_model_open(m->dir, &err);
    if (!CHECK(m->ck != NULL, "%s", err.msg)) return -1;
    m->refs = sl_st_open(path, &err);
    if (!CHECK(m->refs != NULL, "%s", err.msg)) return -1;
    m->n_prompts = fixture_prompts(name, m->prompts, MAX_PROMPTS);
    const sl_config *c = sl_hf_model_config(m->ck);
    m->L = c->n_layer;
    m->C = c->n_embd;
    m->V = c->vocab_size;
    return m->n_prompts > 0 ? 0 : -1;
}

static void model_close(model *m)
{
    sl_st_close(&m->refs);
    sl_hf_model_destroy(&m->ck);
}

/* Prompt i's reference logits: every position (tiny-b) or the last only (tiny-a); *rows says which. */
static const float *ref_logits(const model *m, int i, int *rows)
{
    char name[64];
    snprintf(name, sizeof name, "p%d.logits", i);
    const sl_tensor *all = sl_st_find(m->refs, name);
    if (all) {
        *rows = m->prompts[i].n_ids;
        return fixture_f32(m->refs, name, (size_t)*rows * m->V);
    }
    snprintf(name, sizeof name, "p%d.logits_last", i);
    *rows = 1;
    return fixture_f32(m->refs, name, (size_t)m->V);
}

static const float *ref_hidden(const model *m, int i, int k)
{
    char name[64];
    snprintf(name, sizeof name, "p%d.hidden.%d", i, k);
    return fixture_f32(m->refs, name, (size_t)m->prompts[i].n_ids * m->C);
}

/* ---- accuracy of each format, whole and at every split ---- */

/* The worst of what one format gave on one model, for the table of docs/WEIGHTS.md. */
typedef struct tally {
    double logits, logits_bound, boundary, boundary_bound, final, final_bound, worst_ratio;
    int greedy_compared, greedy_near, greedy_total;
} tally;

/* Records err against bound (the worst of each, and of err / bound) and checks it. */
static void within(tally *t, double *worst, double *worst_bound, double err, double bound, const char *what)
{
    *worst = err > *worst ? err : *worst;
    *worst_bound = bound > *worst_bound ? bound : *worst_bound;
    t->worst_ratio = err / bound > t->worst_ratio ? err / bound : t->worst_ratio;
    CHECK(err <= bound, "%s: max |error| %.3g > bound %.3g", what, err, bound);
}

/* The splits tried: every single point, and a few pairs. */
static int split_list(int L, int splits[][2])
{
    int n = 0;
    for (int s = 1; s < L; s++)
        splits[n][0] = s, splits[n++][1] = 0;
    const int pairs[][2] = {{1, L - 1}, {2, 4}, {L - 2, L - 1}};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        splits[n][0] = pairs[i][0], splits[n++][1] = pairs[i][1];
    return n;
}

static void split_dir(char *out, size_t size, const char *root, const int *split)
{
    snprintf(out, size, "%s/split-%d-%d", root, split[0], split[1]);
}

static int write_split(const model *m, const char *out_dir, const int *split, sl_wformat f)
{
    sl_part_info parts[MAX_STAGES];
    sl_err err;
    const sl_split_request req = {.model_path = m->dir,
                                  .name = m->name,
                                  .splits = split,
                                  .n_splits = split[1] ? 2 : 1,
                                  .format = f,
                                  .out_dir = out_dir};
    int rc = sl_split_write(m->ck, &req, parts, &err);
    CHECK(rc == 0, "split %d,%d as %s: %s", split[0], split[1], sl_wformat_name(f), err.msg);
    return rc;
}

/* Greedy decoding of steps tokens equals the reference's (bounded: how many of them the bound
 * covers, for the message). */
static void check_greedy(chain *ch, const fixture_prompt *fp, int steps, int bounded, const char *what)
{
    if (steps < 1) return;
    int32_t gen[128];
    float *logits = malloc((size_t)steps * ch->V * sizeof(float));
    if (chain_decode(ch, fp, steps, NULL, gen, logits) == 0) {
        int bad = -1;
        for (int s = 0; s < steps && bad < 0; s++)
            bad = gen[s] != fp->greedy[s] ? s : -1;
        CHECK(bad < 0, "%s greedy: step %d gives %d, the reference %d (margin %.3g; %d steps within the bound)", what,
              bad, bad < 0 ? 0 : gen[bad], bad < 0 ? 0 : fp->greedy[bad], bad < 0 ? 0 : fp->margins[bad], bounded);
    }
    free(logits);
}

/* The whole model in format f with a cache of kv_dtype: every prompt's logits and post-ln_f hidden
 * state within their bounds, greedy equal to the reference where the margins allow; all (per
 * prompt, T x V) receives the logits at every position. */
static void check_whole(const model *m, sl_wformat f, sl_dtype kv_dtype, float **all, tally *t)
{
    chain whole;
    if (chain_whole(&whole, m->ck, f, kv_dtype, kern_default) != 0) return;
    const int kv16 = kv_dtype == SL_F16 ? m->L : 0;
    char what[160];
    for (int i = 0; i < m->n_prompts; i++) {
        const fixture_prompt *fp = &m->prompts[i];
        const int T = fp->n_ids;
        int rows;
        const float *ref = ref_logits(m, i, &rows), *ref_final = ref_hidden(m, i, m->L);
        float *hidden = malloc((size_t)T * m->C * sizeof(float));
        chain_reset(&whole);
        if (!ref || !ref_final || chain_forward(&whole, T, fp->ids, all[i], SL_OUT_LOGITS_ALL, NULL) != 0) {
            free(hidden);
            continue;
        }
        const float *got = all[i] + (size_t)(T - rows) * m->V;
        const double B = error_bound(f, 2 + 4 * m->L, kv16, max_abs(ref, (size_t)rows * m->V));
        snprintf(what, sizeof what, "%s %s kv %s p%d logits", m->name, sl_wformat_name(f), sl_dtype_lower(kv_dtype), i);
        within(t, &t->logits, &t->logits_bound, check_max_diff(got, ref, (size_t)rows * m->V), B, what);
        chain_reset(&whole);
        if (chain_forward(&whole, T, fp->ids, hidden, SL_OUT_HIDDEN, NULL) == 0) {
            double Bf = error_bound(f, 1 + 4 * m->L, kv16, max_abs(ref_final, (size_t)T * m->C));
            snprintf(what, sizeof what, "%s %s kv %s p%d hidden after ln_f", m->name, sl_wformat_name(f),
                     sl_dtype_lower(kv_dtype), i);
            within(t, &t->final, &t->final_bound, check_max_diff(hidden, ref_final, (size_t)T * m->C), Bf, what);
        }
        free(hidden);
        /* greedy: the reference's ids up to the first margin the bound cannot hold apart; and
         * (decode as accurate as the prompt) up to the first below 8 times the prompt's error */
        const double observed = check_max_diff(got, ref, (size_t)rows * m->V);
        const int steps = comparable_steps(fp, 2 * B > 1e-3 ? 2 * B : 1e-3);
        const int near = comparable_steps(fp, 8 * observed > 1e-3 ? 8 * observed : 1e-3);
        snprintf(what, sizeof what, "%s %s kv %s p%d", m->name, sl_wformat_name(f), sl_dtype_lower(kv_dtype), i);
        check_greedy(&whole, fp, near > steps ? near : steps, steps, what);
        t->greedy_compared += steps;
        t->greedy_near += near > steps ? near : steps;
        t->greedy_total += fp->n_greedy;
    }
    if (kv_dtype == SL_F16) {
        sl_kv *f32 = sl_kv_new(&whole.p[0], 16, SL_F32, NULL), *f16 = sl_kv_new(&whole.p[0], 16, SL_F16, NULL);
        CHECK(f32 && f16 && 2 * sl_kv_bytes(f16) == sl_kv_bytes(f32) && sl_kv_dtype(f16) == SL_F16,
              "an F16 cache holds half the bytes of an F32 one");
        sl_kv_destroy(&f32);
        sl_kv_destroy(&f16);
    }
    chain_close(&whole);
}

/* The split dir's parts in format f give the whole model's logits bit for bit (prompts, and
 * DECODE_STEPS decode steps of prompt 0), and cross each boundary within its bound. */
static void check_split(const model *m, const char *dir, sl_wformat f, sl_dtype kv_dtype, float **all,
                        const float *decoded, const int32_t *follow, tally *t)
{
    chain parts;
    if (chain_parts(&parts, dir, kv_dtype, kern_default) != 0) return;
    const int kv16 = kv_dtype == SL_F16;
    char what[1024];
    float *crossing[MAX_STAGES];
    for (int k = 0; k < MAX_STAGES; k++)
        crossing[k] = malloc((size_t)m->C * sl_hf_model_config(m->ck)->n_positions * sizeof(float));
    float *logits = malloc((size_t)DECODE_STEPS * m->V * sizeof(float) +
                           (size_t)sl_hf_model_config(m->ck)->n_positions * m->V * sizeof(float));
    bool same = true;
    for (int i = 0; i < m->n_prompts; i++) {
        const fixture_prompt *fp = &m->prompts[i];
        const int T = fp->n_ids;
        chain_reset(&parts);
        if (chain_forward(&parts, T, fp->ids, logits, SL_OUT_LOGITS_ALL, crossing) != 0) break;
        same = same && memcmp(logits, all[i], (size_t)T * m->V * sizeof(float)) == 0;
        for (int s = 0; s + 1 < parts.n; s++) {
            const int K = parts.boundary[s + 1];
            const float *ref = ref_hidden(m, i, K);
            if (!ref) continue;
            double B = error_bound(f, 1 + 4 * K, kv16 ? K : 0, max_abs(ref, (size_t)T * m->C));
            snprintf(what, sizeof what, "%s p%d hidden.%d", dir, i, K);
            within(t, &t->boundary, &t->boundary_bound, check_max_diff(crossing[s], ref, (size_t)T * m->C), B, what);
        }
    }
    CHECK(same, "%s (%s, kv %s): the parts' logits equal the whole model's bit for bit", dir, sl_wformat_name(f),
          sl_dtype_lower(kv_dtype));
    int32_t gen[DECODE_STEPS];
    if (chain_decode(&parts, &m->prompts[0], DECODE_STEPS, follow, gen, logits) == 0)
        CHECK(memcmp(logits, decoded, (size_t)DECODE_STEPS * m->V * sizeof(float)) == 0,
              "%s (%s, kv %s): %d decode steps equal the whole model's bit for bit", dir, sl_wformat_name(f),
              sl_dtype_lower(kv_dtype), DECODE_STEPS);
    for (int k = 0; k < MAX_STAGES; k++)
        free(crossing[k]);
    free(logits);
    chain_close(&parts);
}

static void print_tally(const model *m, sl_wformat f, sl_dtype kv, const tally *t)
{
    printf("%-6s %-4s kv %-3s  logits %.3g (bound %.3g)  split crossings %.3g (bound %.3g)  after ln_f %.3g "
           "(bound %.3g)  worst error/bound %.3f  greedy steps compared %d (bound), %d (8x error) of %d\n",
           m->name, sl_wformat_name(f), sl_dtype_lower(kv), t->logits, t->logits_bound, t->boundary, t->boundary_bound,
           t->final, t->final_bound, t->worst_ratio, t->greedy_compared, t->greedy_near, t->greedy_total);
}

/* Every format, with an F32 and an F16 cache: whole, and through the parts of every split. */
static void test_accuracy(const char *name)
{
    model m;
    char root[256];
    if (model_open(&m, name) != 0 || !CHECK(check_tmpdir(root, sizeof root, "weights") == 0, "tmpdir")) {
        model_close(&m);
        return;
    }
    int splits[16][2];
    const int n_splits = split_list(m.L, splits);
    float *all[MAX_PROMPTS];
    for (int i = 0; i < m.n_prompts; i++)
        all[i] = malloc((size_t)m.prompts[i].n_ids * m.V * sizeof(float));
    float *decoded = malloc((size_t)DECODE_STEPS * m.V * sizeof(float));
    for (int fi = 0; fi < N_FORMATS; fi++) {
        const sl_wformat f = formats[fi];
        char dir[512];
        for (int s = 0; s < n_splits; s++) {
            split_dir(dir, sizeof dir, root, splits[s]);
            write_split(&m, dir, splits[s], f);
        }
        for (int kvi = 0; kvi < 2; kvi++) {
            const sl_dtype kv = kvi ? SL_F16 : SL_F32;
            tally t = {0};
            check_whole(&m, f, kv, all, &t);
            chain whole;
            int32_t follow[DECODE_STEPS];
            if (chain_whole(&whole, m.ck, f, kv, kern_default) != 0 ||
                chain_decode(&whole, &m.prompts[0], DECODE_STEPS, NULL, follow, decoded) != 0) {
                chain_close(&whole);
                continue;
            }
            chain_close(&whole);
            /* the F16 cache through the two-point splits only: the parts' caches are the same code */
            for (int s = kv == SL_F16 ? m.L - 1 : 0; s < n_splits; s++) {
                split_dir(dir, sizeof dir, root, splits[s]);
                check_split(&m, dir, f, kv, all, decoded, follow, &t);
            }
            print_tally(&m, f, kv, &t);
        }
    }
    for (int i = 0; i < m.n_prompts; i++)
        free(all[i]);
    free(decoded);
    check_rmtree(root);
    model_close(&m);
}

/* ---- the kernel paths: every instruction set, F32 bit for bit, float64 references ---- */

/* A whole model's weights as floats, every matrix dequantised into rows (OC, C), for forward64. */
typedef struct dense {
    const sl_params *p;
    float *wte, *head, *mats[64][4];
} dense;

static float *dequantised(const sl_wmat *w)
{
    float *rows = malloc((size_t)w->in * w->out * sizeof(float));
    sl_wmat_to_f32(w, rows, SL_WL_ROWS);
    return rows;
}

static void dense_init(dense *d, const sl_params *p)
{
    d->p = p;
    d->wte = dequantised(&p->wte_m);
    d->head = dequantised(&p->head_m);
    for (int l = 0; l < p->last && l < 64; l++) {
        const sl_block *b = &p->blocks[l];
        const sl_wmat *w[4] = {&b->qkv, &b->attn_proj, &b->fc, &b->fc_proj};
        for (int j = 0; j < 4; j++)
            d->mats[l][j] = dequantised(w[j]);
    }
}

static void dense_free(dense *d)
{
    free(d->wte);
    free(d->head);
    for (int l = 0; l < d->p->last && l < 64; l++)
        for (int j = 0; j < 4; j++)
            free(d->mats[l][j]);
}

static void layernorm64(double *out, const double *x, const float *w, const float *b, int C, double eps)
{
    double mean = 0, var = 0;
    for (int i = 0; i < C; i++)
        mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    const double rstd = 1 / sqrt(var / C + eps);
    for (int i = 0; i < C; i++)
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

/* out (OC) = rows (OC, C) x + bias; with accumulate, out += that. */
static void linear64(double *out, const double *x, const float *rows, const float *bias, int C, int OC, bool accumulate)
{
    for (int o = 0; o < OC; o++) {
        double sum = bias ? bias[o] : 0;
        for (int c = 0; c < C; c++)
            sum += x[c] * rows[(size_t)o * C + c];
        out[o] = accumulate ? out[o] + sum : sum;
    }
}

/* Causal attention of position t over positions 0..t of qkv (T, 3C), into out (C). */
static void attention64(double *out, const double *qkv, int t, int C, int n_head)
{
    const int hd = C / n_head;
    double *w = malloc((size_t)(t + 1) * sizeof *w);
    for (int h = 0; h < n_head; h++) {
        const double *q = qkv + (size_t)t * 3 * C + h * hd;
        double max = -INFINITY, sum = 0;
        for (int j = 0; j <= t; j++) {
            const double *k = qkv + (size_t)j * 3 * C + C + h * hd;
            double dot = 0;
            for (int e = 0; e < hd; e++)
                dot += q[e] * k[e];
            w[j] = dot / sqrt((double)hd);
            max = w[j] > max ? w[j] : max;
        }
        for (int j = 0; j <= t; j++)
            sum += w[j] = exp(w[j] - max);
        for (int e = 0; e < hd; e++) {
            double acc = 0;
            for (int j = 0; j <= t; j++)
                acc += w[j] / sum * qkv[(size_t)j * 3 * C + 2 * C + h * hd + e];
            out[h * hd + e] = acc;
        }
    }
    free(w);
}

/* GPT-2 in float64 on d's weights: the last position's logits (V) of ids (T). */
static void forward64(const dense *d, const int32_t *ids, int T, double *logits)
{
    const sl_params *p = d->p;
    const sl_config *c = &p->cfg;
    const int C = c->n_embd, I = c->n_inner, V = c->vocab_size;
    const double eps = c->layer_norm_epsilon;
    double *x = malloc((size_t)T * C * sizeof *x), *qkv = malloc((size_t)T * 3 * C * sizeof *qkv);
    double *ln = malloc((size_t)C * sizeof *ln), *att = malloc((size_t)C * sizeof *att);
    double *fc = malloc((size_t)I * sizeof *fc);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++)
            x[(size_t)t * C + i] = (double)d->wte[(size_t)ids[t] * C + i] + p->wpe[(size_t)t * C + i];
    for (int l = 0; l < p->last; l++) {
        const sl_block *b = &p->blocks[l];
        for (int t = 0; t < T; t++) {
            layernorm64(ln, x + (size_t)t * C, b->ln1_w, b->ln1_b, C, eps);
            linear64(qkv + (size_t)t * 3 * C, ln, d->mats[l][0], b->qkv_b, C, 3 * C, false);
        }
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * C;
            attention64(att, qkv, t, C, c->n_head);
            linear64(xt, att, d->mats[l][1], b->attn_proj_b, C, C, true);
            layernorm64(ln, xt, b->ln2_w, b->ln2_b, C, eps);
            linear64(fc, ln, d->mats[l][2], b->fc_b, C, I, false);
            for (int i = 0; i < I; i++)
                fc[i] = 0.5 * fc[i] * (1 + tanh(sqrt(2 / M_PI) * (fc[i] + 0.044715 * fc[i] * fc[i] * fc[i])));
            linear64(xt, fc, d->mats[l][3], b->fc_proj_b, I, C, true);
        }
    }
    layernorm64(ln, x + (size_t)(T - 1) * C, p->lnf_w, p->lnf_b, C, eps);
    linear64(logits, ln, d->head, NULL, C, V, false);
    free(x);
    free(qkv);
    free(ln);
    free(att);
    free(fc);
}

/* The F32 forward pass as the runner computed it before the kernels (ops.h, OpenBLAS for every
 * matrix): every position's logits (T, V). */
static void ops_forward(const sl_params *p, const int32_t *ids, int T, float *logits)
{
    const sl_config *c = &p->cfg;
    const int C = c->n_embd, I = c->n_inner, H = c->n_head;
    const float eps = (float)c->layer_norm_epsilon;
    float *x = malloc((size_t)T * C * sizeof *x), *ln = malloc((size_t)T * C * sizeof *ln);
    float *qkv = malloc((size_t)T * 3 * C * sizeof *qkv), *k = malloc((size_t)T * C * sizeof *k);
    float *v = malloc((size_t)T * C * sizeof *v), *probs = malloc((size_t)H * T * T * sizeof *probs);
    float *att = malloc((size_t)T * C * sizeof *att), *fch = malloc((size_t)T * I * sizeof *fch);
    sl_encoder_forward(x, ids, p->wte, p->wpe, T, 0, C);
    for (int l = 0; l < p->last; l++) {
        const sl_block *b = &p->blocks[l];
        sl_layernorm_forward(ln, NULL, NULL, x, b->ln1_w, b->ln1_b, T, C, eps);
        sl_matmul_forward(qkv, ln, b->qkv_w, b->qkv_b, T, C, 3 * C, false);
        for (int t = 0; t < T; t++) {
            memcpy(k + (size_t)t * C, qkv + (size_t)t * 3 * C + C, (size_t)C * sizeof *k);
            memcpy(v + (size_t)t * C, qkv + (size_t)t * 3 * C + 2 * C, (size_t)C * sizeof *v);
        }
        sl_attention_forward(att, probs, true, qkv, 3 * C, k, v, C, T, 0, H, C / H);
        sl_matmul_forward(x, att, b->attn_proj_w, b->attn_proj_b, T, C, C, true);
        sl_layernorm_forward(ln, NULL, NULL, x, b->ln2_w, b->ln2_b, T, C, eps);
        sl_matmul_forward(fch, ln, b->fc_w, b->fc_b, T, C, I, false);
        sl_gelu_forward(fch, fch, (size_t)T * I);
        sl_matmul_forward(x, fch, b->fc_proj_w, b->fc_proj_b, T, I, C, true);
    }
    sl_layernorm_forward(ln, NULL, NULL, x, p->lnf_w, p->lnf_b, T, C, eps);
    sl_matmul_forward_wt(logits, ln, p->lm_head, T, C, c->vocab_size);
    free(x), free(ln), free(qkv), free(k), free(v), free(probs), free(att), free(fch);
}

/* F32 prompts (T > 1) through the runner: the bits of ops_forward, whatever the kernel set. */
static void check_f32_prefill(const model *m, sl_kern *kern)
{
    chain whole;
    if (chain_whole(&whole, m->ck, SL_WF_F32, SL_F32, kern) != 0) return;
    for (int i = 0; i < m->n_prompts; i++) {
        const fixture_prompt *fp = &m->prompts[i];
        if (fp->n_ids < 2) continue; /* one token is a decode step */
        float *got = malloc((size_t)fp->n_ids * m->V * sizeof(float)), *want = malloc((size_t)fp->n_ids * m->V * 4);
        chain_reset(&whole);
        if (chain_forward(&whole, fp->n_ids, fp->ids, got, SL_OUT_LOGITS_ALL, NULL) == 0) {
            ops_forward(&whole.p[0], fp->ids, fp->n_ids, want);
            CHECK(memcmp(got, want, (size_t)fp->n_ids * m->V * sizeof(float)) == 0,
                  "%s p%d (%s kernels): F32 prefill gives the bits of the sgemm path before the kernels", m->name, i,
                  sl_kern_isa_name(sl_kern_isa_used(kern)));
        }
        free(got);
        free(want);
    }
    chain_close(&whole);
}

/* The largest |a - b| of n floats against doubles. */
static double diff64(const float *a, const double *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        worst = isnan(d) ? INFINITY : d > worst ? d : worst;
    }
    return worst;
}

/* The prompt and DECODE_STEPS decode steps along the reference's greedy ids, with weights in f, a
 * cache of kv_dtype and the kernels of isa on `threads` threads: runs times on the same kernels,
 * logits (runs of DECODE_STEPS x V each) receiving each run's. */
static int decode_on(const model *m, sl_wformat f, sl_dtype kv_dtype, sl_kern_isa isa, int threads,
                     const fixture_prompt *fp, int runs, float **logits)
{
    sl_err err;
    sl_kern *kern = sl_kern_new(threads, false, isa, &err);
    chain whole;
    int32_t gen[DECODE_STEPS];
    int rc = CHECK(kern != NULL, "%s: %s", sl_kern_isa_name(isa), err.msg) ? 0 : -1;
    if (rc == 0) rc = chain_whole(&whole, m->ck, f, kv_dtype, kern);
    for (int run = 0; run < runs && rc == 0; run++)
        rc = chain_decode(&whole, fp, DECODE_STEPS, fp->greedy, gen, logits[run]);
    if (kern) chain_close(&whole);
    sl_kern_destroy(&kern);
    return rc;
}

/* One format (and cache) on one kernel set: the same bits with 1 and 2 threads and on a second run;
 * the logits within F32's rounding of a float64 pass over the same (dequantised) weights, want
 * (plus, for Q8_0 on avx512vnni, x's rounding to int8: 1/254 of the scale per matrix). */
static void check_path(const model *m, sl_wformat f, sl_dtype kv_dtype, sl_kern_isa isa, const fixture_prompt *fp,
                       const double *want)
{
    const size_t n = (size_t)DECODE_STEPS * m->V;
    float *logits[3] = {malloc(n * sizeof(float)), malloc(n * sizeof(float)), malloc(n * sizeof(float))};
    const char *name = sl_kern_isa_name(isa);
    if (decode_on(m, f, kv_dtype, isa, 1, fp, 1, logits) == 0 &&
        decode_on(m, f, kv_dtype, isa, 2, fp, 2, logits + 1) == 0) {
        CHECK(!memcmp(logits[0], logits[1], n * sizeof(float)) && !memcmp(logits[1], logits[2], n * sizeof(float)),
              "%s %s, kv %s on %s: the same bits with 1 and 2 threads and on a second run", m->name, sl_wformat_name(f),
              sl_dtype_lower(kv_dtype), name);
        if (want) {
            double scale = 0;
            for (size_t i = 0; i < n; i++)
                scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
            const bool int8_x = f == SL_WF_Q8_0 && isa == SL_KERN_AVX512VNNI;
            const double tol = TOL + (int8_x ? (2 + 4 * m->L) * scale / 254 : 0), got = diff64(logits[0], want, n);
            CHECK(got <= tol,
                  "%s %s on %s: prompt and decode logits %.3g from the float64 pass of the same weights (> %.3g)",
                  m->name, sl_wformat_name(f), name, got, tol);
            printf("%-6s %-4s on %-10s: %d decode steps within %.3g of float64 on the same weights (allowed %.3g)\n",
                   m->name, sl_wformat_name(f), name, DECODE_STEPS, got, tol);
        }
    }
    for (int i = 0; i < 3; i++)
        free(logits[i]);
}

/* Every format on every kernel set this CPU runs, through the runner. */
static void test_paths(const char *name)
{
    model m;
    if (model_open(&m, name) != 0) {
        model_close(&m);
        return;
    }
    const fixture_prompt *fp = &m.prompts[0];
    for (int i = 1; i < m.n_prompts; i++)
        if (m.prompts[i].n_ids > fp->n_ids && m.prompts[i].n_greedy >= DECODE_STEPS) fp = &m.prompts[i];
    double *want = malloc((size_t)DECODE_STEPS * m.V * sizeof *want);
    int32_t seq[256];
    memcpy(seq, fp->ids, (size_t)fp->n_ids * sizeof *seq);
    memcpy(seq + fp->n_ids, fp->greedy, DECODE_STEPS * sizeof *seq);
    int paths = 0;
    for (int fi = 0; fi < N_FORMATS; fi++) {
        chain whole;
        if (chain_whole(&whole, m.ck, formats[fi], SL_F32, kern_default) != 0) continue;
        dense d;
        dense_init(&d, &whole.p[0]);
        for (int s = 0; s < DECODE_STEPS; s++)
            forward64(&d, seq, fp->n_ids + s, want + (size_t)s * m.V);
        dense_free(&d);
        chain_close(&whole);
        for (int isa = 0; isa < SL_KERN_ISA_COUNT; isa++) {
            if (!sl_kern_isa_supported((sl_kern_isa)isa)) continue;
            check_path(&m, formats[fi], SL_F32, (sl_kern_isa)isa, fp, want);
            paths += fi == 0;
            if (fi == 0) {
                sl_kern *kern = sl_kern_new(2, false, (sl_kern_isa)isa, NULL);
                if (kern) check_f32_prefill(&m, kern);
                sl_kern_destroy(&kern);
                check_path(&m, SL_WF_Q8_0, SL_F16, (sl_kern_isa)isa, fp, NULL);
            }
        }
    }
    CHECK(paths >= 1 && sl_kern_isa_supported(SL_KERN_PORTABLE), "the portable kernels at least (%d sets)", paths);
    free(want);
    model_close(&m);
}

/* ---- the files ---- */

static const sl_dtype stored_dtype[SL_WF_COUNT] = {SL_F32, SL_F16, SL_BF16, SL_I8};

/* How far a stored weight may be from the F32 weight w it came from (block_max: the largest |w|
 * of its Q8_0 block): F16 and BF16 round to nearest (and F16's subnormals by 2^-25); Q8_0 d/2 and
 * the F16 rounding of d (wmat.h). */
static double element_bound(sl_wformat f, double w, double block_max)
{
    switch (f) {
    case SL_WF_F16:
        return fabs(w) * 0x1p-11 + 0x1p-25;
    case SL_WF_BF16:
        return fabs(w) * 0x1p-8;
    case SL_WF_Q8_0:
        return block_max / 254 * (1 + 0x1p-11) + block_max * 0x1p-11;
    default:
        return 0;
    }
}

typedef struct file_check {
    const sl_hf_model *ck; /* the part file */
    const sl_params *f32;  /* the F32 model it was cut from */
    sl_wformat f;
    size_t tensors, bytes; /* found in the file */
    int bad_place, bad_value, bad_pad;
} file_check;

/* One tensor of a part in format fc->f: stored as docs/WEIGHTS.md says, used in place, and each
 * weight within element_bound of the F32 weight. */
static int check_stored(sl_param_ref *ref, void *ctx)
{
    file_check *fc = ctx;
    const sl_tensor *t = sl_hf_model_tensor(fc->ck, ref->name, NULL);
    const bool q8 = ref->wmat && fc->f == SL_WF_Q8_0;
    const int nb = ref->wmat ? sl_wmat_q8_blocks(ref->in) : 0;
    if (!CHECK(t != NULL, "%s: missing", ref->name)) return 0;
    fc->tensors++;
    fc->bytes += t->nbytes;
    if (!ref->wmat) {
        CHECK(t->dtype == SL_F32 && t->numel == ref->numel, "%s: F32 with %zu values", ref->name, ref->numel);
        return 0;
    }
    const int64_t cols = q8 ? (int64_t)nb * SL_Q8_BLOCK : ref->in;
    CHECK(t->dtype == stored_dtype[fc->f] && t->ndim == 2 && t->shape[0] == ref->out && t->shape[1] == cols,
          "%s: %s [%d, %lld] (rows of its outputs)", ref->name, sl_dtype_name(stored_dtype[fc->f]), ref->out,
          (long long)cols);
    fc->bad_place += ref->wmat->data != t->data || *ref->slot != NULL;
    if (q8) {
        char name[96];
        snprintf(name, sizeof name, "%s.scales", ref->name);
        const sl_tensor *sc = sl_hf_model_tensor(fc->ck, name, NULL);
        if (!CHECK(sc && sc->dtype == SL_F16 && sc->ndim == 2 && sc->shape[0] == ref->out && sc->shape[1] == nb,
                   "%s: F16 [%d, %d]", name, ref->out, nb))
            return 0;
        fc->tensors++;
        fc->bytes += sc->nbytes;
        fc->bad_place += ref->wmat->scales != sc->data;
        for (int o = 0; o < ref->out; o++)
            for (int c = ref->in; c < nb * SL_Q8_BLOCK; c++)
                fc->bad_pad += ((const int8_t *)t->data)[(size_t)o * nb * SL_Q8_BLOCK + c] != 0;
    }
    /* the same tensor of the F32 model: its matrix in its own layout */
    sl_param_ref *src = NULL;
    fixture_refs all = {0};
    sl_params_foreach((sl_params *)fc->f32, fixture_collect, &all);
    for (int i = 0; i < all.n && !src; i++)
        if (!strcmp(all.refs[i].name, ref->name)) src = &all.refs[i];
    if (!CHECK(src != NULL, "%s: not in the F32 model", ref->name)) return 0;
    float *row = malloc((size_t)ref->in * sizeof *row), *orig = malloc((size_t)ref->in * sizeof *orig);
    for (int o = 0; o < ref->out; o++) {
        sl_wmat_row_f32(ref->wmat, o, 0, ref->in, row);
        sl_wmat_row_f32(src->wmat, o, 0, ref->in, orig);
        for (int c = 0; c < ref->in; c++) {
            double block_max = 0;
            for (int k = c / SL_Q8_BLOCK * SL_Q8_BLOCK; k < ref->in && k < (c / SL_Q8_BLOCK + 1) * SL_Q8_BLOCK; k++)
                block_max = fabs(orig[k]) > block_max ? fabs(orig[k]) : block_max;
            fc->bad_value += fabs((double)row[c] - orig[c]) > element_bound(fc->f, orig[c], block_max);
        }
    }
    free(row);
    free(orig);
    return 0;
}

/* Parts written in f16, bf16 and q8_0: each file as documented, in place, within its element error. */
static void test_files(void)
{
    model m;
    char root[256], dir[512];
    sl_params f32;
    sl_err err;
    if (model_open(&m, "tiny-b") != 0 || !CHECK(check_tmpdir(root, sizeof root, "wfiles") == 0, "tmpdir") ||
        !CHECK(sl_params_load(&f32, m.ck, 0, m.L, true, true, false, &err) == 0, "%s", err.msg)) {
        model_close(&m);
        return;
    }
    const int split[2] = {2, 4};
    for (int fi = 1; fi < N_FORMATS; fi++) {
        const sl_wformat f = formats[fi];
        snprintf(dir, sizeof dir, "%s/%s", root, sl_wformat_name(f));
        sl_part_info info[MAX_STAGES];
        if (write_split(&m, dir, split, f) != 0 || sl_split_read_index(dir, info, MAX_STAGES, &err) != 3) continue;
        for (int i = 0; i < 3; i++) {
            sl_hf_model *ck = sl_hf_model_open_file(info[i].file, &info[i].cfg, &err);
            sl_st_file *st = sl_st_open(info[i].file, &err);
            sl_params p;
            if (!CHECK(ck && st &&
                           sl_params_load(&p, ck, info[i].first, info[i].last, i == 0, i == 2, false, &err) == 0,
                       "%s: %s", info[i].file, err.msg)) {
                sl_st_close(&st);
                sl_hf_model_destroy(&ck);
                continue;
            }
            const char *declared = sl_st_metadata(st, "weights_format");
            CHECK(declared && !strcmp(declared, sl_wformat_name(f)) && !strcmp(info[i].dtype, sl_wformat_name(f)),
                  "%s: weights_format \"%s\" in the file and the metadata's dtype", info[i].file, sl_wformat_name(f));
            CHECK(p.format == f, "%s: loaded as %s", info[i].file, sl_wformat_name(f));
            file_check fc = {.ck = ck, .f32 = &f32, .f = f};
            sl_params_foreach(&p, check_stored, &fc);
            CHECK(fc.tensors == sl_st_count(st), "%s: %zu tensors, %zu of them the stage's", info[i].file,
                  sl_st_count(st), fc.tensors);
            CHECK(sl_params_bytes(&p) == fc.bytes, "%s: sl_params_bytes %zu = the file's tensors' %zu bytes",
                  info[i].file, sl_params_bytes(&p), fc.bytes);
            CHECK(fc.bad_place == 0, "%s: %d matrices not used in place from the file", info[i].file, fc.bad_place);
            CHECK(fc.bad_value == 0, "%s: %d weights beyond their format's element error", info[i].file, fc.bad_value);
            CHECK(fc.bad_pad == 0, "%s: %d padding values of Q8_0 rows are not 0", info[i].file, fc.bad_pad);
            sl_params_free(&p);
            sl_st_close(&st);
            sl_hf_model_destroy(&ck);
        }
    }
    sl_params_free(&f32);
    check_rmtree(root);
    model_close(&m);
}

/* ---- malformed files ---- */

typedef enum edit_kind { EDIT_NONE, EDIT_DROP, EDIT_AS_F32, EDIT_TRANSPOSE, EDIT_MISALIGN } edit_kind;

/* Writes dst: the safetensors file src with weights_format `format` (NULL: src's; "": none) and the
 * tensor `name` dropped, stored as F32 zeros, or with its shape reversed; or (misalign) every
 * tensor moved one byte on. */
static int rewrite(const char *src, const char *dst, const char *format, const char *name, edit_kind kind)
{
    sl_err err;
    sl_st_file *in = sl_st_open(src, &err);
    sl_st_writer *w = sl_st_writer_new();
    const char *declared = format ? format : in ? sl_st_metadata(in, "weights_format") : NULL;
    int rc = in && w ? 0 : -1;
    static const int8_t pad = 0;
    const int64_t one = 1;
    if (rc == 0 && declared && *declared) rc = sl_st_writer_set_metadata(w, "weights_format", declared, &err);
    if (rc == 0 && kind == EDIT_MISALIGN) rc = sl_st_writer_add_raw(w, "a.pad", SL_I8, &pad, 1, &one, &err);
    float *zeros = NULL;
    for (size_t i = 0; rc == 0 && in && i < sl_st_count(in); i++) {
        const sl_tensor *t = sl_st_at(in, i);
        const bool edited = name && !strcmp(t->name, name);
        int64_t shape[SL_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (edited && kind == EDIT_DROP) continue;
        if (edited && kind == EDIT_TRANSPOSE) shape[0] = t->shape[1], shape[1] = t->shape[0];
        if (edited && kind == EDIT_AS_F32) {
            zeros = calloc(t->numel, sizeof(float));
            rc = sl_st_writer_add_f32(w, t->name, SL_F32, zeros, t->ndim, shape, &err);
        } else {
            rc = sl_st_writer_add_raw(w, t->name, t->dtype, t->data, t->ndim, shape, &err);
        }
    }
    if (rc == 0) rc = sl_st_writer_write(w, dst, NULL, &err);
    CHECK(rc == 0, "rewrite %s: %s", src, err.msg);
    free(zeros);
    sl_st_writer_destroy(&w);
    sl_st_close(&in);
    return rc;
}

/* Loading file as the part info describes must fail with a message naming the file and needle. */
static void refused(const sl_part_info *info, const char *file, const char *needle, const char *what)
{
    sl_err err = {0};
    sl_params p;
    sl_hf_model *ck = sl_hf_model_open_file(file, &info->cfg, &err);
    int rc = ck ? sl_params_load(&p, ck, info->first, info->last, info->role == SL_ROLE_BOTTOM,
                                 info->role == SL_ROLE_TOP, false, &err)
                : -1;
    CHECK(rc != 0 && strstr(err.msg, file) && strstr(err.msg, needle), "%s: refused naming the file and '%s': %s", what,
          needle, rc == 0 ? "(loaded)" : err.msg);
    if (rc == 0) sl_params_free(&p);
    sl_hf_model_destroy(&ck);
}

/* Malformed parts: how each is made from a good top part, what the refusal must name. */
#define QKV "transformer.h.3.attn.c_attn.weight"
#define FIRST_QKV "transformer.h.2.attn.c_attn.weight" /* the top's first matrix, checked first */
static const struct {
    const char *format, *tensor; /* as rewrite takes them */
    edit_kind kind;
    const char *needle, *what;
    bool q8_0; /* a case of Q8_0 parts only, else of 16-bit ones only when misaligning */
} hostile_cases[] = {
    {"q4_k", NULL, EDIT_NONE, "weights_format", "an unknown weights_format", false},
    {NULL, QKV, EDIT_AS_F32, QKV, "a matrix stored F32", false},
    {NULL, QKV, EDIT_TRANSPOSE, QKV, "a matrix in HF's orientation", false},
    {"", NULL, EDIT_NONE, FIRST_QKV, "no weights_format (its matrices taken for HF's)", false},
    {NULL, NULL, EDIT_MISALIGN, FIRST_QKV, "16-bit matrices at odd addresses", false},
    {NULL, QKV ".scales", EDIT_DROP, QKV ".scales", "a matrix without its scales", true},
    {NULL, QKV ".scales", EDIT_AS_F32, QKV ".scales", "scales stored F32", true},
    {NULL, QKV ".scales", EDIT_TRANSPOSE, QKV ".scales", "scales of another shape", true},
    {NULL, NULL, EDIT_MISALIGN, ".scales", "scales at odd addresses", true},
};

static void test_hostile(void)
{
    model m;
    char root[256], dir[512], bad[600], what[160];
    sl_err err;
    if (model_open(&m, "tiny-b") != 0 || !CHECK(check_tmpdir(root, sizeof root, "whostile") == 0, "tmpdir")) {
        model_close(&m);
        return;
    }
    const int split[2] = {2, 0};
    snprintf(bad, sizeof bad, "%s/bad.safetensors", root);
    for (int fi = 1; fi < N_FORMATS; fi++) {
        const sl_wformat f = formats[fi];
        sl_part_info info[2];
        snprintf(dir, sizeof dir, "%s/%s", root, sl_wformat_name(f));
        if (write_split(&m, dir, split, f) != 0 || sl_split_read_index(dir, info, 2, &err) != 2) continue;
        for (size_t i = 0; i < sizeof hostile_cases / sizeof *hostile_cases; i++) {
            const bool q8_0 = f == SL_WF_Q8_0, misalign = hostile_cases[i].kind == EDIT_MISALIGN;
            if (hostile_cases[i].q8_0 ? !q8_0 : misalign && q8_0) continue;
            snprintf(what, sizeof what, "%s: %s", sl_wformat_name(f), hostile_cases[i].what);
            if (rewrite(info[1].file, bad, hostile_cases[i].format, hostile_cases[i].tensor, hostile_cases[i].kind) ==
                0)
                refused(&info[1], bad, hostile_cases[i].needle, what);
        }
    }
    check_rmtree(root);
    model_close(&m);
}

/* ---- merging and training from parts in other formats ---- */

/* m split at split in format f under root/tag and merged as dtype into root/tag-merged: its
 * model.safetensors opened (NULL, a failed check, on failure); info (2 parts at most) the parts. */
static sl_st_file *split_merged(const model *m, const char *root, const char *tag, const int *split, sl_wformat f,
                                sl_dtype dtype, sl_part_info *info)
{
    char dir[512], out[600], path[700];
    sl_err err;
    snprintf(dir, sizeof dir, "%s/%s", root, tag);
    snprintf(out, sizeof out, "%s-merged", dir);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    if (write_split(m, dir, split, f) != 0 || sl_split_read_index(dir, info, MAX_STAGES, &err) < 2 ||
        !CHECK(sl_split_merge(dir, out, dtype, &err) == 0, "merge: %s", err.msg))
        return NULL;
    sl_st_file *merged = sl_st_open(path, &err);
    CHECK(merged != NULL, "%s", err.msg);
    return merged;
}

/* tiny-a (stored F16) split in f16 and merged as F16: every tensor's bytes as in its file. */
static void check_merge_f16(const model *m, const char *root)
{
    const int split[2] = {2, 4};
    sl_part_info info[MAX_STAGES];
    sl_st_file *merged = split_merged(m, root, "a-f16", split, SL_WF_F16, SL_F16, info);
    if (!merged) return;
    int same = 0;
    for (size_t i = 0; i < sl_st_count(merged); i++) {
        const sl_tensor *t = sl_st_at(merged, i);
        const bool head = !strcmp(t->name, "lm_head.weight"); /* tied: wte's copy */
        const sl_tensor *src = sl_hf_model_tensor(m->ck, head ? "transformer.wte.weight" : t->name, NULL);
        same += src && src->dtype == SL_F16 && t->dtype == SL_F16 && src->nbytes == t->nbytes &&
                !memcmp(src->data, t->data, t->nbytes);
    }
    CHECK(same == (int)sl_st_count(merged) && same == 4 + 12 * m->L + 1,
          "merging f16 parts of tiny-a as F16 gives back its %d tensors byte for byte (%d equal)", 4 + 12 * m->L, same);
    sl_st_close(&merged);
}

/* tiny-b split in q8_0 and merged as F32: each block matrix the dequantised stored weights, d * q. */
static void check_merge_q8(const model *m, const char *root)
{
    const int split[2] = {2, 0};
    sl_part_info info[MAX_STAGES];
    sl_err err;
    sl_st_file *merged = split_merged(m, root, "b-q8", split, SL_WF_Q8_0, SL_F32, info);
    sl_st_file *top = merged ? sl_st_open(info[1].file, &err) : NULL;
    const char *name = "transformer.h.3.mlp.c_fc.weight";
    char scales_name[96];
    snprintf(scales_name, sizeof scales_name, "%s.scales", name);
    const sl_tensor *w = merged ? sl_st_find(merged, name) : NULL, *q = top ? sl_st_find(top, name) : NULL;
    const sl_tensor *d = top ? sl_st_find(top, scales_name) : NULL;
    if (CHECK(w && q && d && w->dtype == SL_F32, "%s in the merged model (F32) and the q8_0 top", name)) {
        const int C = m->C, I = (int)w->shape[1], nb = sl_wmat_q8_blocks(C);
        int differ = 0;
        for (int c = 0; c < C; c++)
            for (int o = 0; o < I; o++) {
                float scale, got;
                sl_dtype_to_f32(&scale, (const uint16_t *)d->data + (size_t)o * nb + c / SL_Q8_BLOCK, SL_F16, 1);
                memcpy(&got, (const float *)w->data + (size_t)c * I + o, sizeof got);
                differ += got != scale * ((const int8_t *)q->data)[(size_t)o * nb * SL_Q8_BLOCK + c];
            }
        CHECK(differ == 0, "merged q8_0 parts hold d * q in HF's layout (%d of %d differ)", differ, C * I);
    }
    sl_st_close(&merged);
    sl_st_close(&top);
}

static void test_merge(void)
{
    model a, b;
    char root[256];
    if (model_open(&a, "tiny-a") == 0 && model_open(&b, "tiny-b") == 0 &&
        CHECK(check_tmpdir(root, sizeof root, "wmerge") == 0, "tmpdir")) {
        check_merge_f16(&a, root);
        check_merge_q8(&b, root);
        check_rmtree(root);
    }
    model_close(&a);
    model_close(&b);
}

/* A trunk trains from a part in format f: the learner widens it once (the same values, F32), its
 * forward equals the runner's on the part, one AdamW step moves it; and a learner that never
 * trained saves the part as it is. */
static void check_train_from(const model *m, const char *root, sl_wformat f)
{
    char dir[512], ckpt[600];
    sl_err err;
    const int split[2] = {1, 3};
    snprintf(dir, sizeof dir, "%s/%s", root, sl_wformat_name(f));
    snprintf(ckpt, sizeof ckpt, "%s/ckpt-%s", root, sl_wformat_name(f));
    if (write_split(m, dir, split, f) != 0) return;
    const fixture_prompt *fp = &m->prompts[m->n_prompts - 1];
    const int T = fp->n_ids, C = m->C;
    const float *in = ref_hidden(m, m->n_prompts - 1, 1);
    sl_part *mapped = sl_part_open(dir, 1, 3, true, &err), *trained = sl_part_open(dir, 1, 3, true, &err);
    sl_params p;
    if (!in || !CHECK(mapped && trained && sl_part_load_params(mapped, &p, false, &err) == 0, "%s", err.msg)) {
        sl_part_destroy(&mapped);
        sl_part_destroy(&trained);
        return;
    }
    sl_learner *l = sl_learner_new(trained, false, &err);
    float *want = malloc((size_t)T * C * sizeof *want), *got = malloc((size_t)T * C * sizeof *got);
    sl_runner *r = sl_runner_new(&p, T, kern_default, &err);
    sl_kv *kv = r ? sl_kv_new(&p, T, SL_F32, &err) : NULL;
    if (CHECK(l && kv && sl_runner_forward(r, kv, T, NULL, in, want, SL_OUT_HIDDEN, &err) == 0, "%s", err.msg) &&
        CHECK(sl_learner_params(l)->format == f, "the learner uses the %s part in place until it trains",
              sl_wformat_name(f)) &&
        CHECK(sl_learner_prepare(l, 1, T, &err) == 0, "prepare: %s", err.msg)) {
        sl_params *w = sl_learner_params(l);
        const size_t n = (size_t)C * 3 * C;
        float *widened = malloc(n * sizeof *widened);
        sl_wmat_to_f32(&p.blocks[0].qkv, widened, SL_WL_CONV1D);
        CHECK(w->format == SL_WF_F32 && w->blocks[0].qkv_w && !memcmp(w->blocks[0].qkv_w, widened, n * sizeof(float)),
              "%s part widened once to F32 for training: the same values", sl_wformat_name(f));
        sl_backprop *bp = sl_learner_train(l);
        sl_adamw opt = SL_ADAMW_DEFAULT;
        if (CHECK(sl_backprop_forward(bp, NULL, in, NULL, got, NULL, &err) == 0, "forward: %s", err.msg)) {
            CHECK_CLOSE(got, want, (size_t)T * C, TOL, "training forward on the widened part vs the runner on it");
            sl_backprop_zero_grad(bp);
            for (size_t i = 0; i < (size_t)T * C; i++)
                got[i] = got[i] - in[i]; /* any gradient */
            CHECK(sl_backprop_backward(bp, got, want, &err) == 0, "backward: %s", err.msg);
            sl_backprop_step(bp, &opt, 1.0f);
            size_t moved = 0, finite = 0;
            for (size_t i = 0; i < n; i++) {
                moved += w->blocks[0].qkv_w[i] != widened[i];
                finite += isfinite(w->blocks[0].qkv_w[i]);
            }
            CHECK(moved > n / 2 && finite == n, "one AdamW step moves the widened weights (%zu of %zu)", moved, n);
        }
        free(widened);
    }
    sl_kv_destroy(&kv);
    sl_runner_destroy(&r);
    sl_learner_destroy(&l);
    free(want);
    free(got);
    /* a learner of the part that never trained: its checkpoint is the part */
    sl_learner *idle = sl_learner_new(sl_part_open(dir, 1, 3, false, &err), false, &err);
    sl_part_info saved;
    if (CHECK(idle != NULL, "%s", err.msg) && CHECK(sl_learner_save(idle, ckpt, -1, NAN, &saved, &err) == 0,
                                                    "an untrained %s learner saves: %s", sl_wformat_name(f), err.msg)) {
        sl_part *back = sl_part_open_info(&saved, true, &err);
        sl_params q;
        if (CHECK(back && sl_part_load_params(back, &q, false, &err) == 0, "%s", err.msg)) {
            size_t bytes = 0, scale_bytes = 0;
            sl_wmat_sizes(f, C, 3 * C, &bytes, &scale_bytes, NULL);
            CHECK(q.format == f && !memcmp(q.blocks[0].qkv.data, p.blocks[0].qkv.data, bytes),
                  "... in its format, %s, with the same weights", sl_wformat_name(f));
            sl_params_free(&q);
        }
        sl_part_destroy(&back);
    }
    sl_learner_destroy(&idle);
    sl_params_free(&p);
    sl_part_destroy(&mapped);
}

static void test_train(void)
{
    model m;
    char root[256];
    if (model_open(&m, "tiny-b") == 0 && CHECK(check_tmpdir(root, sizeof root, "wtrain") == 0, "tmpdir")) {
        for (int fi = 1; fi < N_FORMATS; fi++)
            check_train_from(&m, root, formats[fi]);
        check_rmtree(root);
    }
    model_close(&m);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    sl_err err;
    kern_default = sl_kern_new(2, false, SL_KERN_AUTO, &err);
    if (!CHECK(kern_default != NULL, "%s", err.msg)) return check_done();
    if (check_selected("tiny-a")) test_accuracy("tiny-a");
    if (check_selected("tiny-b")) test_accuracy("tiny-b");
    if (check_selected("paths-tiny-a")) test_paths("tiny-a");
    if (check_selected("paths-tiny-b")) test_paths("tiny-b");
    if (check_selected("files")) test_files();
    if (check_selected("hostile")) test_hostile();
    if (check_selected("merge")) test_merge();
    if (check_selected("train")) test_train();
    sl_kern_destroy(&kern_default);
    return check_done();
}
