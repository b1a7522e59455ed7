/* test_leakage.c — the leakage meter is a real attack: on the embedded default model (a trained
 * 4-layer GPT-2 with GPT-2's vocabulary) the white-box search recovers at least 95% of a held-out
 * text's tokens at a 1-layer cut without defences, and less and less as the noise grows; the
 * probe beats guessing the commonest token; the top's gradient gives the labels away. Batched
 * alternatives equal separate runs. */
#include "check.h"
#include "gpt2.h"
#include "leakage.h"
#include "split.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Held out of the default model's training (the last 5% of the KJV): Revelation 21:1-5. */
static const char attacked[] =
    "And I saw a new heaven and a new earth: for the first heaven and the first earth were passed away; "
    "and there was no more sea. And I John saw the holy city, new Jerusalem, coming down from God out of "
    "heaven, prepared as a bride adorned for her husband. And I heard a great voice out of heaven saying, "
    "Behold, the tabernacle of God is with men, and he will dwell with them";

/* Public text the attacker fits its probe on: Genesis 1:1-19. */
static const char public_text[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
    "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the "
    "waters. And God said, Let there be light: and there was light. And God saw the light, that it was "
    "good: and God divided the light from the darkness. And God called the light Day, and the darkness "
    "he called Night. And the evening and the morning were the first day. And God said, Let there be a "
    "firmament in the midst of the waters, and let it divide the waters from the waters. And God made "
    "the firmament, and divided the waters which were under the firmament from the waters which were "
    "above the firmament: and it was so. And God called the firmament Heaven. And the evening and the "
    "morning were the second day. And God said, Let the waters under the heaven be gathered together "
    "unto one place, and let the dry land appear: and it was so. And God called the dry land Earth; and "
    "the gathering together of the waters called he Seas: and God saw that it was good. And God said, "
    "Let the earth bring forth grass, the herb yielding seed, and the fruit tree yielding fruit after "
    "his kind, whose seed is in itself, upon the earth: and it was so. And the earth brought forth "
    "grass, and herb yielding seed after his kind, and the tree yielding fruit, whose seed was in "
    "itself, after his kind: and God saw that it was good. And the evening and the morning were the "
    "third day. And God said, Let there be lights in the firmament of the heaven to divide the day from "
    "the night; and let them be for signs, and for seasons, and for days, and years: And let them be for "
    "lights in the firmament of the heaven to give light upon the earth: and it was so. And God made two "
    "great lights; the greater light to rule the day, and the lesser light to rule the night: he made "
    "the stars also. And God set them in the firmament of the heaven to give light upon the earth, And "
    "to rule over the day and over the night, and to divide the light from the darkness: and God saw "
    "that it was good. And the evening and the morning were the fourth day.";

/* The default model, its whole weights in memory, and the texts as ids. */
typedef struct world {
    sl_params whole;
    sl_tokenizer *tok;
    int32_t *ids, *fit;
    size_t n_ids, n_fit;
} world;

static int32_t *encode(sl_tokenizer *tok, const char *text, size_t *n)
{
    int32_t *ids = NULL;
    size_t cap = 0;
    sl_err err;
    *n = 0;
    CHECK(sl_tokenizer_encode(tok, text, strlen(text), &ids, n, &cap, &err) == 0, "encode: %s", err.msg);
    return ids;
}

static bool world_open(world *w)
{
    sl_err err;
    memset(w, 0, sizeof *w);
    if (!CHECK(sl_split_join("models/default/parts", &w->whole, &err) == 0, "default model: %s", err.msg)) return false;
    if (!CHECK((w->tok = sl_tokenizer_new("models/gpt2-vocab", &err)) != NULL, "vocab: %s", err.msg)) return false;
    w->ids = encode(w->tok, attacked, &w->n_ids);
    w->fit = encode(w->tok, public_text, &w->n_fit);
    return CHECK(w->n_ids >= 65 && w->n_fit >= 300, "texts of %zu and %zu tokens", w->n_ids, w->n_fit);
}

static void world_close(world *w)
{
    sl_params_free(&w->whole);
    sl_tokenizer_destroy(&w->tok);
    free(w->ids);
    free(w->fit);
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
    const int32_t alts[6] = {11, 290, 5, 50256, 1169, 0};
    sl_err err;
    sl_stage *stage = sl_stage_new(&bottom, 16, &err);
    sl_kv *kv = sl_kv_new(&bottom, 16, &err), *one = sl_kv_new(&bottom, 16, &err);
    float batched[6 * 1024], single[10 * 1024];
    CHECK(sl_stage_forward(stage, kv, P, w->ids, NULL, single, SL_OUT_HIDDEN, &err) == 0, "prefix: %s", err.msg);
    CHECK(sl_stage_forward_alternatives(stage, kv, K, alts, NULL, batched, &err) == 0, "alternatives: %s", err.msg);
    CHECK(sl_kv_len(kv) == P, "the alternatives are not appended (%d)", sl_kv_len(kv));
    for (int k = 0; k < K; k++) {
        int32_t seq[10];
        memcpy(seq, w->ids, P * sizeof *seq);
        seq[P] = alts[k];
        sl_kv_reset(one);
        CHECK(sl_stage_forward(stage, one, P + 1, seq, NULL, single, SL_OUT_HIDDEN, &err) == 0, "%s", err.msg);
        CHECK_CLOSE(batched + (size_t)k * C, single + (size_t)P * C, C, 1e-4, "alternative equals a separate run");
    }
    CHECK(sl_stage_forward_alternatives(stage, kv, 17, alts, NULL, batched, &err) != 0,
          "more than max_tokens: refused");
    sl_kv_destroy(&kv);
    sl_kv_destroy(&one);
    sl_stage_destroy(&stage);
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

/* >= 95% at a 1-layer cut without defence; falling as sigma grows (clip 50, about the rows' norm). */
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
    const float sigmas[] = {0, 0.05f, 0.1f, 0.25f};
    double rate[4];
    for (int i = 0; i < 4; i++) {
        rate[i] = search_score(search, &bottom, w, n, (sl_cut_defence){.clip = 50, .noise = sigmas[i]}).recovery;
        printf("search, clip 50, sigma %.2f: %.3f\n", (double)sigmas[i], rate[i]);
    }
    for (int i = 1; i < 4; i++)
        CHECK(rate[i] <= rate[i - 1], "recovery falls as sigma grows: %.3f at %.2f, %.3f at %.2f", rate[i - 1],
              (double)sigmas[i - 1], rate[i], (double)sigmas[i]);
    CHECK(rate[3] < rate[0] - 0.5, "sigma 0.25 stops the search (%.3f vs %.3f)", rate[3], rate[0]);
    sl_leak_search_destroy(&search);
}

/* The probe, fitted on Genesis, beats always guessing the commonest token of Genesis. */
static void test_probe(const world *w)
{
    const sl_params bottom = sl_leak_bottom_of(&w->whole, 1);
    const int n = (int)w->n_ids, nf = (int)w->n_fit, C = bottom.cfg.n_embd, V = bottom.cfg.vocab_size;
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

/* The gradient the top (block 3, ln_f, head) sends back gives the next tokens away; noise on it
 * (grad_clip, grad_noise) takes that away. */
static void test_label(const world *w)
{
    const int B = 1, T = 64, N = B * T, C = w->whole.cfg.n_embd;
    sl_err err;
    sl_part *part = sl_part_open("models/default/parts", 3, 4, false, &err);
    sl_params top = {0};
    if (!CHECK(part && sl_part_load_params(part, &top, true, &err) == 0, "top: %s", err.msg)) return;
    sl_params below = sl_leak_bottom_of(&w->whole, 3);
    float *x = capture(&below, w->ids, N, (sl_cut_defence){0}, 1), *g = malloc((size_t)N * C * sizeof *g);
    int32_t targets[64], guesses[64 * SL_LEAK_GUESSES];
    for (int i = 0; i < N; i++)
        targets[i] = w->ids[i + 1];
    double rate[2];
    for (int k = 0; k < 2; k++) {
        CHECK(sl_leak_top_gradient(&top, B, T, x, targets, g, &err) == 0, "top gradient: %s", err.msg);
        uint64_t seed = 3;
        sl_cutguard *guard = sl_cutguard_new((sl_cut_defence){.clip = 1e-3f, .noise = 1}, C, &seed, &err);
        if (k == 1) sl_cutguard_forward(guard, g, N, false, &err);
        sl_cutguard_destroy(&guard);
        CHECK(sl_leak_label(&top, g, N, guesses, &err) == 0, "label: %s", err.msg);
        rate[k] = sl_leak_score_of(targets, guesses, N).recovery;
    }
    printf("labels from the top's gradient: %.3f; with grad_clip 1e-3, grad_noise 1: %.3f\n", rate[0], rate[1]);
    CHECK(rate[0] >= 0.5, "the labels leak through the gradient: %.3f", rate[0]);
    CHECK(rate[1] < rate[0] / 4, "grad noise hides them: %.3f vs %.3f", rate[1], rate[0]);
    free(x);
    free(g);
    sl_params_free(&top);
    sl_part_destroy(&part);
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
