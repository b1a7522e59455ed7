/* leakage.c — the attacks of the leakage meter: nearest neighbour, white-box search, linear probe
 * on activations; nearest neighbour on the top's gradient for labels. */
#include "leakage.h"

#include "gpt2.h"
#include "ops.h"
#include "backprop.h"

#include <cblas.h>
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows scored against the vocabulary at once: bounds the (rows, V) score matrix. */
enum { SCORE_ROWS = 64 };

sl_leak_score sl_leak_score_of(const int32_t *truth, const int32_t *guesses, int n)
{
    sl_leak_score s = {0};
    int first = 0, among = 0;
    for (int i = 0; i < n; i++) {
        if (truth[i] < 0) continue;
        s.rows++;
        const int32_t *g = guesses + (size_t)i * SL_LEAK_GUESSES;
        first += g[0] == truth[i];
        for (int k = 0; k < SL_LEAK_GUESSES; k++)
            if (g[k] == truth[i]) {
                among++;
                break;
            }
    }
    if (s.rows) s.recovery = (double)first / s.rows, s.top5 = (double)among / s.rows;
    return s;
}

/* The indices of the `count` highest of scores (n), highest first, into best. */
static void highest(const float *scores, int n, int count, int32_t *best)
{
    int have = 0;
    for (int v = 0; v < n; v++) {
        if (have == count && scores[v] <= scores[best[count - 1]]) continue;
        int k = have < count ? have++ : count - 1;
        while (k > 0 && scores[best[k - 1]] < scores[v]) {
            best[k] = best[k - 1];
            k--;
        }
        best[k] = v;
    }
    for (int k = have; k < count; k++)
        best[k] = best[0]; /* fewer candidates than asked: repeat the best */
}

sl_params sl_leak_bottom_of(const sl_params *whole, int cut)
{
    sl_params p = *whole;
    p.last = cut;
    p.head = p.head_is_wte = false;
    p.lnf_w = p.lnf_b = p.lm_head = NULL;
    p.head_m = (sl_wmat){0};
    p.owned = NULL;
    p.owned_count = 0;
    p.owned_mats = NULL;
    return p;
}

int sl_leak_run(const sl_params *p, int window, const int32_t *ids, const float *in, int n, float *out, sl_err *err)
{
    const int C = p->cfg.n_embd;
    sl_runner *stage = sl_runner_new(p, window, NULL, err);
    sl_kv *kv = stage ? sl_kv_new(p, window, SL_F32, err) : NULL;
    int rc = kv ? 0 : -1;
    for (int s = 0; rc == 0 && s < n; s += window) {
        int len = n - s < window ? n - s : window;
        sl_kv_reset(kv);
        rc = sl_runner_forward(stage, kv, len, ids ? ids + s : NULL, in ? in + (size_t)s * C : NULL,
                               out + (size_t)s * C, SL_OUT_HIDDEN, err);
    }
    sl_kv_destroy(&kv);
    sl_runner_destroy(&stage);
    return rc;
}

/* ---- nearest neighbour ---- */

/* scores (V) = cos(row, wte[v] + wpe[pos]) for every v: with wte_dot (V) = wte @ row and
 * cand_norm (V) = |wte[v] + wpe[pos]|. */
static void cosine_scores(float *scores, const float *wte_dot, const float *row, const float *pe,
                          const float *cand_norm, int V, int C)
{
    double row_pe = 0, row_sq = 0;
    for (int i = 0; i < C; i++)
        row_pe += (double)row[i] * pe[i], row_sq += (double)row[i] * row[i];
    const float inv_row = row_sq > 0 ? (float)(1.0 / sqrt(row_sq)) : 0.0f;
    for (int v = 0; v < V; v++)
        scores[v] = (wte_dot[v] + (float)row_pe) * inv_row / cand_norm[v];
}

/* cand_norm (V) = |wte[v] + pe| = sqrt(|wte[v]|^2 + 2 wte[v].pe + |pe|^2), wte_sq (V) given. */
static void candidate_norms(float *cand_norm, const float *wte, const float *wte_sq, const float *pe, int V, int C)
{
    cblas_sgemv(CblasRowMajor, CblasNoTrans, V, C, 2.0f, wte, C, pe, 1, 0.0f, cand_norm, 1);
    double pe_sq = 0;
    for (int i = 0; i < C; i++)
        pe_sq += (double)pe[i] * pe[i];
    for (int v = 0; v < V; v++) {
        float sq = cand_norm[v] + wte_sq[v] + (float)pe_sq;
        cand_norm[v] = sq > 1e-30f ? sqrtf(sq) : 1e-15f;
    }
}

int sl_leak_nn(const sl_params *bottom, int window, const float *rows, int n, int32_t *guesses, sl_err *err)
{
    if (!bottom->embed) return sl_fail(err, "the nn attack needs the bottom's embeddings");
    if (bottom->format != SL_WF_F32)
        return sl_fail(err, "the nn attack reads the bottom's embeddings in f32, not %s (load it widened)",
                       sl_wformat_name(bottom->format));
    const int V = bottom->cfg.vocab_size, C = bottom->cfg.n_embd;
    float *wte_sq = malloc((size_t)V * sizeof(float)), *cand_norm = malloc((size_t)V * sizeof(float));
    float *dots = malloc((size_t)SCORE_ROWS * V * sizeof(float)), *scores = malloc((size_t)V * sizeof(float));
    float *gathered = malloc((size_t)SCORE_ROWS * C * sizeof(float));
    int *which = malloc((size_t)SCORE_ROWS * sizeof(int));
    int rc = wte_sq && cand_norm && dots && scores && gathered && which ? 0 : sl_fail(err, "out of memory");
    for (int v = 0; rc == 0 && v < V; v++)
        wte_sq[v] = cblas_sdot(C, bottom->wte + (size_t)v * C, 1, bottom->wte + (size_t)v * C, 1);
    for (int pos = 0; rc == 0 && pos < window && pos < n; pos++) {
        const float *pe = bottom->wpe + (size_t)pos * C;
        candidate_norms(cand_norm, bottom->wte, wte_sq, pe, V, C);
        for (int first = pos; first < n;) { /* the rows at this position (pos + k window), SCORE_ROWS at a time */
            int m = 0;
            for (; m < SCORE_ROWS && first < n; first += window, m++) {
                which[m] = first;
                memcpy(gathered + (size_t)m * C, rows + (size_t)first * C, (size_t)C * sizeof(float));
            }
            sl_matmul_forward_wt(dots, gathered, bottom->wte, m, C, V);
            for (int k = 0; k < m; k++) {
                cosine_scores(scores, dots + (size_t)k * V, gathered + (size_t)k * C, pe, cand_norm, V, C);
                highest(scores, V, SL_LEAK_GUESSES, guesses + (size_t)which[k] * SL_LEAK_GUESSES);
            }
        }
    }
    free(wte_sq);
    free(cand_norm);
    free(dots);
    free(scores);
    free(gathered);
    free(which);
    return rc;
}

/* ---- white-box search ---- */

/* The bottom run on the recovered prefix, its dictionary, the candidates. */
struct sl_leak_search {
    const sl_params *bottom;
    sl_cut_defence defence; /* of the rows being searched */
    int V, C, batch, budget;
    sl_runner *stage;
    sl_kv *kv;
    float *dict;              /* (V,C): each token's output alone at position 0, unit rows */
    float *scores;            /* (V): the row's cosine with every dictionary row; tried ones -inf */
    float *out, *norm, *dist; /* a batch's outputs (batch,C) and norms, the distances tried (budget) */
    int32_t *tried;           /* (budget) */
};

typedef sl_leak_search search;

/* Every token alone at position 0 through the bottom, batch by batch, as unit rows. */
static int build_dictionary(search *s, sl_err *err)
{
    int32_t ids[SL_MAX_SEARCH_BATCH];
    sl_kv_reset(s->kv);
    for (int v0 = 0; v0 < s->V; v0 += s->batch) {
        int k = s->V - v0 < s->batch ? s->V - v0 : s->batch;
        for (int i = 0; i < k; i++)
            ids[i] = v0 + i;
        float *rows = s->dict + (size_t)v0 * s->C;
        if (sl_runner_forward_alternatives(s->stage, s->kv, k, ids, NULL, rows, err) != 0) return -1;
        for (int i = 0; i < k; i++) {
            float *r = rows + (size_t)i * s->C, len = cblas_snrm2(s->C, r, 1);
            if (len > 0) cblas_sscal(s->C, 1.0f / len, r, 1);
        }
    }
    return 0;
}

/* The squared distance under which a candidate explains a row: the noise's expected energy plus
 * four standard deviations of it (a chi-square of C degrees), and float rounding. */
static double explained(const search *s, const float *row)
{
    double sd = (double)s->defence.noise * s->defence.clip, C = s->C, len = cblas_snrm2(s->C, row, 1);
    return C * sd * sd + 4.0 * sqrt(2.0 * C) * sd * sd + 1e-6 * len * len;
}

/* Tries candidates for row in the dictionary's order, a batch at a time, until one's (clipped)
 * output is within the noise of the row or the budget is spent; the SL_LEAK_GUESSES nearest go
 * into guesses. */
static int search_row(search *s, const float *row, int32_t *guesses, sl_err *err)
{
    const int C = s->C;
    sl_matmul_forward_wt(s->scores, row, s->dict, 1, C, s->V);
    const double enough = explained(s, row);
    double best = INFINITY;
    int n = 0;
    while (n < s->budget && best > enough) {
        int k = s->budget - n < s->batch ? s->budget - n : s->batch;
        int32_t *ids = s->tried + n;
        highest(s->scores, s->V, k, ids);
        for (int i = 0; i < k; i++)
            s->scores[ids[i]] = -INFINITY;
        if (sl_runner_forward_alternatives(s->stage, s->kv, k, ids, NULL, s->out, err) != 0) return -1;
        if (s->defence.clip > 0) sl_clip_forward(s->out, s->norm, s->out, k, C, s->defence.clip);
        for (int i = 0; i < k; i++) {
            double sq = 0;
            for (int c = 0; c < C; c++) {
                double d = (double)s->out[(size_t)i * C + c] - row[c];
                sq += d * d;
            }
            s->dist[n + i] = (float)-sq; /* highest first */
            best = sq < best ? sq : best;
        }
        n += k;
    }
    int32_t order[SL_LEAK_GUESSES];
    highest(s->dist, n, SL_LEAK_GUESSES, order);
    for (int g = 0; g < SL_LEAK_GUESSES; g++)
        guesses[g] = s->tried[order[g]];
    return 0;
}

void sl_leak_search_destroy(sl_leak_search **self)
{
    assert(self);
    if (!*self) return;
    search *s = *self;
    sl_kv_destroy(&s->kv);
    sl_runner_destroy(&s->stage);
    free(s->dict);
    free(s->scores);
    free(s->out);
    free(s->norm);
    free(s->dist);
    free(s->tried);
    free(s);
    *self = NULL;
}

sl_leak_search *sl_leak_search_new(const sl_params *bottom, const sl_leak_search_opts *opts, sl_err *err)
{
    if (!bottom->embed || bottom->head) {
        sl_fail(err, "the search attack runs a bottom (embeddings, no head)");
        return NULL;
    }
    const int V = bottom->cfg.vocab_size, C = bottom->cfg.n_embd;
    int batch = opts->batch < bottom->cfg.n_positions ? opts->batch : bottom->cfg.n_positions;
    if (batch < 1 || batch > SL_MAX_SEARCH_BATCH || opts->budget < SL_LEAK_GUESSES) {
        sl_fail(err, "search: batches of 1..%d candidates and a budget of at least %d", SL_MAX_SEARCH_BATCH,
                SL_LEAK_GUESSES);
        return NULL;
    }
    search *s = calloc(1, sizeof *s);
    if (!s) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    *s = (search){.bottom = bottom, .V = V, .C = C, .batch = batch, .budget = opts->budget < V ? opts->budget : V};
    s->dict = malloc((size_t)V * C * sizeof *s->dict);
    s->scores = malloc((size_t)V * sizeof *s->scores);
    s->out = malloc((size_t)batch * C * sizeof *s->out);
    s->norm = malloc((size_t)batch * sizeof *s->norm);
    s->dist = malloc((size_t)s->budget * sizeof *s->dist);
    s->tried = malloc((size_t)s->budget * sizeof *s->tried);
    int rc = s->dict && s->scores && s->out && s->norm && s->dist && s->tried ? 0 : sl_fail(err, "out of memory");
    if (rc == 0 && (!(s->stage = sl_runner_new(bottom, batch, NULL, err)) ||
                    !(s->kv = sl_kv_new(bottom, bottom->cfg.n_positions, SL_F32, err))))
        rc = -1;
    if (rc == 0) rc = build_dictionary(s, err);
    if (rc != 0) sl_leak_search_destroy(&s);
    return s;
}

int sl_leak_search_run(sl_leak_search *s, sl_cut_defence defence, int window, const float *rows, int n,
                       int32_t *guesses, sl_err *err)
{
    if (window < 1 || window > sl_kv_capacity(s->kv))
        return sl_fail(err, "search: sequences of %d positions (1..%d)", window, sl_kv_capacity(s->kv));
    s->defence = defence;
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        if (i % window == 0) sl_kv_reset(s->kv);
        int32_t *g = guesses + (size_t)i * SL_LEAK_GUESSES;
        rc = search_row(s, rows + (size_t)i * s->C, g, err);
        /* the best guess joins the prefix the next positions are searched after */
        if (rc == 0 && (i + 1) % window != 0 && i + 1 < n)
            rc = sl_runner_forward(s->stage, s->kv, 1, g, NULL, s->out, SL_OUT_HIDDEN, err);
    }
    return rc;
}

/* ---- linear probe ---- */

struct sl_leak_probe {
    int C, V;
    float *w; /* (V, C+1): row v scores token v from [row, 1] */
};

/* In place: a (n,n) symmetric positive definite into its inverse, through its Cholesky factor. */
static int spd_invert(double *a, int n, sl_err *err)
{
    for (int j = 0; j < n; j++) { /* a = L L^T, L in the lower triangle */
        double d = a[(size_t)j * n + j];
        for (int k = 0; k < j; k++)
            d -= a[(size_t)j * n + k] * a[(size_t)j * n + k];
        if (!(d > 0)) return sl_fail(err, "probe: the regularised covariance is not positive definite");
        d = sqrt(d);
        a[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[(size_t)i * n + j];
            for (int k = 0; k < j; k++)
                s -= a[(size_t)i * n + k] * a[(size_t)j * n + k];
            a[(size_t)i * n + j] = s / d;
        }
    }
    double *inv = calloc((size_t)n * n, sizeof *inv), *col = malloc((size_t)n * sizeof *col);
    if (!inv || !col) {
        free(inv);
        free(col);
        return sl_fail(err, "out of memory");
    }
    for (int c = 0; c < n; c++) { /* column c of the inverse: L y = e_c, then L^T x = y */
        for (int i = 0; i < n; i++) {
            double s = i == c ? 1.0 : 0.0;
            for (int k = 0; k < i; k++)
                s -= a[(size_t)i * n + k] * col[k];
            col[i] = s / a[(size_t)i * n + i];
        }
        for (int i = n - 1; i >= 0; i--) {
            double s = col[i];
            for (int k = i + 1; k < n; k++)
                s -= a[(size_t)k * n + i] * inv[(size_t)k * n + c];
            inv[(size_t)i * n + c] = s / a[(size_t)i * n + i];
        }
    }
    memcpy(a, inv, (size_t)n * n * sizeof *a);
    free(inv);
    free(col);
    return 0;
}

/* x (m, C+1): rows with a constant 1 appended. */
static void with_bias(float *x, const float *rows, int m, int C)
{
    for (int i = 0; i < m; i++) {
        memcpy(x + (size_t)i * (C + 1), rows + (size_t)i * C, (size_t)C * sizeof(float));
        x[(size_t)i * (C + 1) + C] = 1.0f;
    }
}

/* gram (D,D) = X^T X over the n rows with bias (D = C+1), summed in double chunk by chunk; xty
 * (V,D) = Y^T X: the sum of the rows of each token. */
static void probe_moments(double *gram, float *xty, const float *rows, const int32_t *ids, int n, int C, float *x,
                          float *chunk_gram)
{
    const int D = C + 1;
    for (int s = 0; s < n; s += SCORE_ROWS) {
        int m = n - s < SCORE_ROWS ? n - s : SCORE_ROWS;
        with_bias(x, rows + (size_t)s * C, m, C);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, D, m, 1.0f, x, D, x, D, 0.0f, chunk_gram, D);
        for (size_t i = 0; i < (size_t)D * D; i++)
            gram[i] += chunk_gram[i];
        for (int i = 0; i < m; i++)
            cblas_saxpy(D, 1.0f, x + (size_t)i * D, 1, xty + (size_t)ids[s + i] * D, 1);
    }
}

sl_leak_probe *sl_leak_probe_fit(const float *rows, const int32_t *ids, int n, int C, int vocab, double ridge,
                                 sl_err *err)
{
    const int D = C + 1;
    sl_leak_probe *p = calloc(1, sizeof *p);
    double *gram = calloc((size_t)D * D, sizeof *gram);
    float *xty = calloc((size_t)vocab * D, sizeof *xty), *x = malloc((size_t)SCORE_ROWS * D * sizeof *x);
    float *chunk = malloc((size_t)D * D * sizeof *chunk), *inv = malloc((size_t)D * D * sizeof *inv);
    int rc = p && gram && xty && x && chunk && inv ? 0 : sl_fail(err, "out of memory for a probe of %d x %d", D, vocab);
    for (int i = 0; rc == 0 && i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) rc = sl_fail(err, "probe: token id %d outside the vocabulary", ids[i]);
    if (rc == 0 && n < 1) rc = sl_fail(err, "probe: no rows to fit on");
    if (rc == 0) {
        probe_moments(gram, xty, rows, ids, n, C, x, chunk);
        double mean_diag = 0;
        for (int i = 0; i < D; i++)
            mean_diag += gram[(size_t)i * D + i] / D;
        for (int i = 0; i < D; i++)
            gram[(size_t)i * D + i] += ridge * mean_diag;
        rc = spd_invert(gram, D, err);
    }
    if (rc == 0) {
        for (size_t i = 0; i < (size_t)D * D; i++)
            inv[i] = (float)gram[i];
        p->w = malloc((size_t)vocab * D * sizeof *p->w);
        if (!p->w) rc = sl_fail(err, "out of memory for a probe of %d x %d", D, vocab);
    }
    if (rc == 0) { /* W^T (V,D) = (Y^T X) (X^T X + lambda I)^-1, the inverse symmetric */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, vocab, D, D, 1.0f, xty, D, inv, D, 0.0f, p->w, D);
        p->C = C;
        p->V = vocab;
    }
    free(gram);
    free(xty);
    free(x);
    free(chunk);
    free(inv);
    if (rc != 0) sl_leak_probe_destroy(&p);
    return p;
}

void sl_leak_probe_destroy(sl_leak_probe **self)
{
    assert(self);
    if (!*self) return;
    free((*self)->w);
    free(*self);
    *self = NULL;
}

int sl_leak_probe_guess(const sl_leak_probe *self, const float *rows, int n, int32_t *guesses, sl_err *err)
{
    const int C = self->C, D = C + 1, V = self->V;
    float *x = malloc((size_t)SCORE_ROWS * D * sizeof *x), *scores = malloc((size_t)SCORE_ROWS * V * sizeof *scores);
    int rc = x && scores ? 0 : sl_fail(err, "out of memory");
    for (int s = 0; rc == 0 && s < n; s += SCORE_ROWS) {
        int m = n - s < SCORE_ROWS ? n - s : SCORE_ROWS;
        with_bias(x, rows + (size_t)s * C, m, C);
        sl_matmul_forward_wt(scores, x, self->w, m, D, V);
        for (int i = 0; i < m; i++)
            highest(scores + (size_t)i * V, V, SL_LEAK_GUESSES, guesses + (size_t)(s + i) * SL_LEAK_GUESSES);
    }
    free(x);
    free(scores);
    return rc;
}

/* ---- labels from the top's gradient ---- */

int sl_leak_top_gradient(sl_params *top, int B, int T, const float *in, const int32_t *targets, float *din, sl_err *err)
{
    sl_backprop *train = sl_backprop_new(top, B, T, err);
    float loss;
    int rc = train ? 0 : -1;
    if (rc == 0) rc = sl_backprop_forward(train, NULL, in, targets, NULL, &loss, err);
    if (rc == 0) rc = sl_backprop_backward(train, NULL, din, err);
    sl_backprop_destroy(&train);
    return rc;
}

int sl_leak_label(const sl_params *top, const float *grads, int n, int32_t *guesses, sl_err *err)
{
    if (!top->head) return sl_fail(err, "the label attack needs the top's head");
    const int V = top->cfg.vocab_size, C = top->cfg.n_embd;
    float *cand = malloc((size_t)V * C * sizeof *cand), *scores = malloc((size_t)SCORE_ROWS * V * sizeof *scores);
    float *neg = malloc((size_t)SCORE_ROWS * C * sizeof *neg);
    int rc = cand && scores && neg ? 0 : sl_fail(err, "out of memory");
    for (int v = 0; rc == 0 && v < V; v++) { /* head rows through ln_f's scale, normalised */
        float *c = cand + (size_t)v * C;
        double sq = 0;
        for (int i = 0; i < C; i++) {
            c[i] = top->lm_head[(size_t)v * C + i] * top->lnf_w[i];
            sq += (double)c[i] * c[i];
        }
        float inv = sq > 0 ? (float)(1.0 / sqrt(sq)) : 0.0f;
        for (int i = 0; i < C; i++)
            c[i] *= inv;
    }
    for (int s = 0; rc == 0 && s < n; s += SCORE_ROWS) {
        int m = n - s < SCORE_ROWS ? n - s : SCORE_ROWS;
        for (size_t i = 0; i < (size_t)m * C; i++)
            neg[i] = -grads[(size_t)s * C + i];
        sl_matmul_forward_wt(scores, neg, cand, m, C, V);
        for (int i = 0; i < m; i++)
            highest(scores + (size_t)i * V, V, SL_LEAK_GUESSES, guesses + (size_t)(s + i) * SL_LEAK_GUESSES);
    }
    free(cand);
    free(scores);
    free(neg);
    return rc;
}
