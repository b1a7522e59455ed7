/* test_leakage.c — the attacks of the leakage meter on the tiny-b fixture (a random 5-layer GPT-2,
 * vocabulary 1000, 48 wide): at a 1-layer cut without defence nearest neighbour and the white-box
 * search recover at least 95% of the tokens, and less and less as the noise grows; the probe
 * beats guessing the commonest token; the top's gradient gives the labels away and grad noise
 * hides them; batched alternatives equal separate runs. The same claims on the trained default
 * model, through the meter's command line, are in test_leakage.sh (cheap here, too slow under
 * valgrind there). */
#include "check.h"
#include "hf_model.h"
#include "gpt2.h"
#include "leakage.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

enum { TEXT = 600, WORDS = 200 }; /* tokens of each text, drawn from the first WORDS of the vocabulary */

/* The model, its whole weights (mapped), its top [3,5) with weights of its own, and two texts:
 * the one attacked and the attacker's public one (the same kind: the same WORDS tokens). */
typedef struct world {
    sl_hf_model *ck;
    sl_params whole, top;
    int32_t ids[TEXT], fit[TEXT];
} world;

static bool world_open(world *w)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-b", check_fixtures());
    sl_err err;
    memset(w, 0, sizeof *w);
    if (!CHECK((w->ck = sl_hf_model_open(path, &err)) &&
                   sl_params_load(&w->whole, w->ck, 0, 5, true, true, false, &err) == 0 &&
                   sl_params_load(&w->top, w->ck, 3, 5, false, true, true, &err) == 0,
               "tiny-b: %s", err.msg))
        return false;
    sl_rng rng;
    sl_rng_seed(&rng, 16);
    for (int i = 0; i < TEXT; i++) { /* a skewed choice: low ids are common, as words are */
        w->ids[i] = (int32_t)sl_rng_below(&rng, 1 + sl_rng_below(&rng, WORDS));
        w->fit[i] = (int32_t)sl_rng_below(&rng, 1 + sl_rng_below(&rng, WORDS));
    }
    return true;
}

static void world_close(world *w)
{
    sl_params_free(&w->whole);
    sl_params_free(&w->top);
    sl_hf_model_destroy(&w->ck);
}

/* What the first trunk receives for ids (n) at a cut, through a defence with seed. */
static float *capture(const sl_params *bottom, const int32_t *ids, int n, sl_cut_defence d, uint64_t seed)
{
    const int C = bottom->cfg.n_embd;
    float *rows = malloc((size_t)n * C * sizeof *rows);
    sl_err err;
    CHECK(sl_leak_run(bottom, bottom->cfg.n_positions, ids, NULL, n, rows, &err) == 0, "bottom: %s", err.msg);
    sl_cutguard *g = sl_cutguard_new(d, C, &seed, &err);
    CHECK(g && sl_cutguard_forward(g, rows, n, false, &err) == 0, "defence: %s", err.msg);
    sl_cutguard_destroy(&g);
    return rows;
}

/* Row k of the alternatives equals running the prefix followed by alternative k. */
static void test_alternatives(const world *w)
{
    const sl_params bottom = sl_leak_bottom_of(&w->whole, 2);
    const int C = bottom.cfg.n_embd, P = 9, K = 6;
    const int32_t alts[6] = {11, 290, 5, 999, 169, 0};
    sl_err err;
    sl_runner *stage = sl_runner_new(&bottom, 16, NULL, &err);
    sl_kv *kv = sl_kv_new(&bottom, 16, SL_F32, &err), *one = sl_kv_new(&bottom, 16, SL_F32, &err);
    float batched[6 * 1024], single[10 * 1024];
    CHECK(sl_runner_forward(stage, kv, P, w->ids, NULL, single, SL_OUT_HIDDEN, &err) == 0, "prefix: %s", err.msg);
    CHECK(sl_runner_forward_alternatives(stage, kv, K, alts, NULL, batched, &err) == 0, "alternatives: %s", err.msg);
    CHECK(sl_kv_len(kv) == P, "the alternatives are not appended (%d)", sl_kv_len(kv));
    for (int k = 0; k < K; k++) {
        int32_t seq[10];
        memcpy(seq, w->ids, P * sizeof *seq);
        seq[P] = alts[k];
        sl_kv_reset(one);
        CHECK(sl_runner_forward(stage, one, P + 1, seq, NULL, single, SL_OUT_HIDDEN, &err) == 0, "%s", err.msg);
        CHECK_CLOSE(batched + (size_t)k * C, single + (size_t)P * C, C, 1e-4, "alternative equals a separate run");
    }
    CHECK(sl_runner_forward_alternatives(stage, kv, 17, alts, NULL, batched, &err) != 0,
          "more than max_tokens: refused");
    sl_kv_destroy(&kv);
    sl_kv_destroy(&one);
    sl_runner_destroy(&stage);
}

static sl_leak_score search_score(sl_leak_search *search, const sl_params *bottom, const world *w, int n,
                                  sl_cut_defence d)
{
    float *rows = capture(bottom, w->ids, n, d, 1);
    int32_t *guesses = malloc((size_t)n * SL_LEAK_GUESSES * sizeof *guesses);
    sl_err err;
    CHECK(sl_leak_search_run(search, d, bottom->cfg.n_positions, rows, n, guesses, &err) == 0, "search: %s", err.msg);
    sl_leak_score s = sl_leak_score_of(w->ids, guesses, n);
    free(rows);
    free(guesses);
    return s;
}

static sl_leak_score nn_score(const sl_params *bottom, const world *w, int n, sl_cut_defence d)
{
    float *rows = capture(bottom, w->ids, n, d, 1);
    int32_t *guesses = malloc((size_t)n * SL_LEAK_GUESSES * sizeof *guesses);
    sl_err err;
    CHECK(sl_leak_nn(bottom, bottom->cfg.n_positions, rows, n, guesses, &err) == 0, "nn: %s", err.msg);
    sl_leak_score s = sl_leak_score_of(w->ids, guesses, n);
    free(rows);
    free(guesses);
    return s;
}

/* >= 95% at a 1-layer cut without defence, by nn and by the search; the search falling as sigma
 * grows (clip 0.33: tiny-b's rows there have norms of 0.30 to 0.37). */
static void test_search(const world *w)
{
    const sl_params bottom = sl_leak_bottom_of(&w->whole, 1);
    const int n = 64;
    sl_err err;
    sl_leak_search *search = sl_leak_search_new(&bottom, &SL_LEAK_SEARCH_DEFAULT, &err);
    if (!CHECK(search != NULL, "search: %s", err.msg)) return;
    sl_leak_score clean = search_score(search, &bottom, w, n, (sl_cut_defence){0});
    CHECK(clean.rows == n && clean.recovery >= 0.95, "1-layer cut, no defence: %.3f of %d tokens recovered",
          clean.recovery, clean.rows);
    sl_leak_score nn = nn_score(&bottom, w, n, (sl_cut_defence){0});
    CHECK(nn.recovery >= 0.95, "nn at a 1-layer cut of a random model: %.3f", nn.recovery);
    const float sigmas[] = {0, 0.05f, 0.1f, 0.25f};
    double rate[4];
    for (int i = 0; i < 4; i++) {
        rate[i] = search_score(search, &bottom, w, n, (sl_cut_defence){.clip = 0.33f, .noise = sigmas[i]}).recovery;
        printf("search, clip 0.33, sigma %.2f: %.3f\n", (double)sigmas[i], rate[i]);
    }
    for (int i = 1; i < 4; i++)
        CHECK(rate[i] <= rate[i - 1], "recovery falls as sigma grows: %.3f at %.2f, %.3f at %.2f", rate[i - 1],
              (double)sigmas[i - 1], rate[i], (double)sigmas[i]);
    CHECK(rate[3] < rate[0] - 0.5, "sigma 0.25 stops the search (%.3f vs %.3f)", rate[3], rate[0]);
    sl_leak_search_destroy(&search);
}

/* The probe, fitted on the public text, beats always guessing the public text's commonest token. */
static void test_probe(const world *w)
{
    const sl_params bottom = sl_leak_bottom_of(&w->whole, 2);
    const int n = TEXT, nf = TEXT, C = bottom.cfg.n_embd, V = bottom.cfg.vocab_size;
    float *rows = capture(&bottom, w->ids, n, (sl_cut_defence){0}, 1);
    float *fit = capture(&bottom, w->fit, nf, (sl_cut_defence){0}, 2);
    int32_t *guesses = malloc((size_t)n * SL_LEAK_GUESSES * sizeof *guesses);
    sl_err err;
    sl_leak_probe *probe = sl_leak_probe_fit(fit, w->fit, nf, C, V, 1e-3, &err);
    CHECK(probe && sl_leak_probe_guess(probe, rows, n, guesses, &err) == 0, "probe: %s", err.msg);
    sl_leak_score s = sl_leak_score_of(w->ids, guesses, n);
    int32_t common = 0;
    int best = 0;
    for (int i = 0; i < nf; i++) {
        int count = 0;
        for (int j = 0; j < nf; j++)
            count += w->fit[j] == w->fit[i];
        if (count > best) best = count, common = w->fit[i];
    }
    int hits = 0;
    for (int i = 0; i < n; i++)
        hits += w->ids[i] == common;
    printf("probe: %.3f recovered, %.3f in its top 5; the commonest token alone: %.3f\n", s.recovery, s.top5,
           (double)hits / n);
    CHECK(s.recovery > (double)hits / n + 0.15, "probe %.3f vs %.3f for the commonest token", s.recovery,
          (double)hits / n);
    int32_t bad = V;
    CHECK(!sl_leak_probe_fit(fit, &bad, 1, C, V, 1e-3, &err), "an id outside the vocabulary is refused");
    sl_leak_probe_destroy(&probe);
    free(rows);
    free(fit);
    free(guesses);
}

/* The gradient the top (blocks 3-4, ln_f, head) sends back gives the next tokens away; noise on it
 * (grad_clip, grad_noise) takes that away. */
static void test_label(world *w)
{
    const int B = 1, T = 64, N = B * T, C = w->whole.cfg.n_embd;
    sl_err err;
    sl_params *top = &w->top;
    sl_params below = sl_leak_bottom_of(&w->whole, 3);
    float *x = capture(&below, w->ids, N, (sl_cut_defence){0}, 1), *g = malloc((size_t)N * C * sizeof *g);
    int32_t targets[64], guesses[64 * SL_LEAK_GUESSES];
    for (int i = 0; i < N; i++)
        targets[i] = w->ids[i + 1];
    double rate[2];
    for (int k = 0; k < 2; k++) {
        CHECK(sl_leak_top_gradient(top, B, T, x, targets, g, &err) == 0, "top gradient: %s", err.msg);
        uint64_t seed = 3;
        sl_cutguard *guard = sl_cutguard_new((sl_cut_defence){.clip = 1e-3f, .noise = 1}, C, &seed, &err);
        if (k == 1) sl_cutguard_forward(guard, g, N, false, &err);
        sl_cutguard_destroy(&guard);
        CHECK(sl_leak_label(top, g, N, guesses, &err) == 0, "label: %s", err.msg);
        rate[k] = sl_leak_score_of(targets, guesses, N).recovery;
    }
    printf("labels from the top's gradient: %.3f; with grad_clip 1e-3, grad_noise 1: %.3f\n", rate[0], rate[1]);
    CHECK(rate[0] >= 0.5, "the labels leak through the gradient: %.3f", rate[0]);
    CHECK(rate[1] < rate[0] / 4, "grad noise hides them: %.3f vs %.3f", rate[1], rate[0]);
    free(x);
    free(g);
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    world w;
    if (world_open(&w)) {
        if (check_selected("alternatives")) test_alternatives(&w);
        if (check_selected("search")) test_search(&w);
        if (check_selected("probe")) test_probe(&w);
        if (check_selected("label")) test_label(&w);
    }
    world_close(&w);
    return check_done();
}
