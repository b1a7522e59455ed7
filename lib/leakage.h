/* leakage.h — what the operator of a stage can learn from what it receives, measured by attacking
 * it: the tokens behind the activations a bottom sends to the first trunk, and the labels behind
 * the gradient a top sends back to the last trunk.
 *
 * The attacker is white-box: it holds the weights of the stages around it (a public pretrained
 * bottom, or one it trained) and knows the defence (cutguard.h) but not its noise. Every attack
 * ranks the vocabulary for each row and gives its SL_LEAK_GUESSES best guesses, best first;
 * sl_leak_score counts how often the truth is the first guess (recovery) or among them (top-5).
 *
 * Rows are sequences of `window` positions each (the last may be shorter), every one starting
 * at position 0, as a client sends its prompts and training batches. */
#ifndef SL_LEAKAGE_H
#define SL_LEAKAGE_H

#include "cutguard.h"
#include "params.h"

enum { SL_LEAK_GUESSES = 5 };

typedef struct sl_leak_score {
    double recovery, top5; /* fractions of the rows with a truth: first guess right, truth in the guesses */
    int rows;              /* rows with a truth (>= 0) */
} sl_leak_score;

sl_leak_score sl_leak_score_of(const int32_t *truth, const int32_t *guesses, int n);

/* Blocks [0, cut) of a whole model with its embeddings: a bottom that borrows whole's weights
 * (whole must outlive it; nothing to free). For measuring every possible first cut. */
sl_params sl_leak_bottom_of(const sl_params *whole, int cut);

/* Runs stage p (no head) over n rows of input: ids (n) when it embeds, else in (n,C), as
 * sequences of `window` positions, into out (n,C). */
int sl_leak_run(const sl_params *p, int window, const int32_t *ids, const float *in, int n, float *out, sl_err *err);

/* nn: the embedding whose direction is closest to each row (cosine similarity with wte[v] +
 * wpe[position], the row's own input when the cut is shallow). guesses (n, SL_LEAK_GUESSES). */
int sl_leak_nn(const sl_params *bottom, int window, const float *rows, int n, int32_t *guesses, sl_err *err);

/* search: position by position, the token that makes the bottom produce the row, given the tokens
 * recovered before it (in a KV cache). Candidates come in the order of their cosine with the
 * bottom's dictionary (every token's output alone at position 0, computed once), `batch` at a
 * time through the bottom in one pass (sl_runner_forward_alternatives), clipped as the defence
 * clips; the search stops when a candidate's output is within the noise's expected distance of
 * the row (float rounding without noise) or after `budget` candidates, and ranks those tried by
 * their distance to the row (with Gaussian noise: the most likely input among them). */
enum { SL_MAX_SEARCH_BATCH = 1024 };

typedef struct sl_leak_search_opts {
    int batch;  /* candidates per pass (<= n_positions, SL_MAX_SEARCH_BATCH); default 256 */
    int budget; /* candidates at most per position; default 2048 */
} sl_leak_search_opts;

#define SL_LEAK_SEARCH_DEFAULT ((sl_leak_search_opts){.batch = 256, .budget = 2048})

typedef struct sl_leak_search sl_leak_search;

/* A search over bottom (borrowed: it must outlive the search), its dictionary computed here.
 * Caller owns the result. */
sl_leak_search *sl_leak_search_new(const sl_params *bottom, const sl_leak_search_opts *opts, sl_err *err);
void sl_leak_search_destroy(sl_leak_search **self);

/* Searches n rows (sequences of window <= n_positions) that went through defence. */
int sl_leak_search_run(sl_leak_search *self, sl_cut_defence defence, int window, const float *rows, int n,
                       int32_t *guesses, sl_err *err);

/* probe: a linear map from rows to token ids fitted on other text (rows and the ids that produced
 * them), by ridge regression onto one-hot targets in closed form: W = (X^T X + lambda I)^-1 X^T Y
 * with X the rows and a constant 1, lambda = ridge times the mean of X^T X's diagonal. */
typedef struct sl_leak_probe sl_leak_probe;

/* Caller owns the result. */
sl_leak_probe *sl_leak_probe_fit(const float *rows, const int32_t *ids, int n, int C, int vocab, double ridge,
                                 sl_err *err);
void sl_leak_probe_destroy(sl_leak_probe **self);
int sl_leak_probe_guess(const sl_leak_probe *self, const float *rows, int n, int32_t *guesses, sl_err *err);

/* The gradient a top sends back to the stage before it in a training step: top (its weights owned
 * in one allocation, as sl_backprop_new needs) over B sequences of T rows in (B*T, C) with targets
 * (B*T, < 0: none), into din (B*T, C). */
int sl_leak_top_gradient(sl_params *top, int B, int T, const float *in, const int32_t *targets, float *din,
                         sl_err *err);

/* label: the label of each gradient row (the next token it was trained on) as the head row closest
 * in direction to the negated gradient (for cross-entropy, d loss / d hidden = sum p_v w_v - w_y),
 * the rows scaled by ln_f's weight, which the gradient passes through. */
int sl_leak_label(const sl_params *top, const float *grads, int n, int32_t *guesses, sl_err *err);

#endif
