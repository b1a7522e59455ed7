/* privacy.c — the client's defences at its cuts in training: the bottom's guard and NoPeek, the
 * top's gradient guard. */
#include "privacy.h"

#include "ops.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sl_privacy {
    sl_privacy_opts o;
    int B, T, C;
    sl_cutguard *act, *grad;
    float *embedded;       /* (B*T, C): the bottom's input, wte[id] + wpe[pos] */
    float *dy, *dx;        /* (B*T, C): NoPeek's gradients, kept from the forward */
    double *scratch, dcor; /* sl_dcor_scratch_size(B*T) */
    bool kept;             /* a training forward's NoPeek gradients wait for the backward */
};

bool sl_privacy_active(const sl_privacy_opts *o)
{
    return sl_cut_defence_active(o->activations) || sl_cut_defence_active(o->gradients) || o->nopeek > 0;
}

void sl_privacy_destroy(sl_privacy **self)
{
    assert(self);
    if (!*self) return;
    sl_privacy *p = *self;
    sl_cutguard_destroy(&p->act);
    sl_cutguard_destroy(&p->grad);
    free(p->embedded);
    free(p->dy);
    free(p->dx);
    free(p->scratch);
    free(p);
    *self = NULL;
}

/* NoPeek's buffers for N = B*T rows. */
static int alloc_nopeek(sl_privacy *p, sl_err *err)
{
    const int N = p->B * p->T;
    if (N > SL_NOPEEK_MAX_ROWS)
        return sl_fail(err,
                       "NoPeek over a batch of %d x %d = %d rows: at most %d (its distance matrices grow as the "
                       "square); make --batch or --seq-len smaller",
                       p->B, p->T, N, SL_NOPEEK_MAX_ROWS);
    size_t rows = (size_t)N * p->C;
    p->embedded = malloc(rows * sizeof *p->embedded);
    p->dy = malloc(rows * sizeof *p->dy);
    p->dx = malloc(rows * sizeof *p->dx);
    p->scratch = malloc(sl_dcor_scratch_size(N) * sizeof *p->scratch);
    return p->embedded && p->dy && p->dx && p->scratch ? 0 : sl_fail(err, "out of memory for NoPeek");
}

sl_privacy *sl_privacy_new(const sl_privacy_opts *o, int B, int T, int C, sl_err *err)
{
    sl_privacy *p = calloc(1, sizeof *p);
    if (!p) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    *p = (sl_privacy){.o = *o, .B = B, .T = T, .C = C, .dcor = NAN};
    /* the two guards draw different noise from one seed */
    const uint64_t act_seed = o->noise_seed, grad_seed = o->noise_seed ^ 0x9e3779b97f4a7c15ull;
    int rc = 0;
    if (!(p->act = sl_cutguard_new(o->activations, C, o->seeded ? &act_seed : NULL, err)) ||
        !(p->grad = sl_cutguard_new(o->gradients, C, o->seeded ? &grad_seed : NULL, err)))
        rc = -1;
    if (rc == 0 && o->nopeek > 0) rc = alloc_nopeek(p, err);
    if (rc != 0) sl_privacy_destroy(&p);
    return p;
}

/* lambda * dCor(embedded, rows) and its gradients into dx, dy. */
static void nopeek_forward(sl_privacy *p, const sl_params *bottom, const int32_t *ids, const float *rows)
{
    const int N = p->B * p->T, C = p->C;
    for (int b = 0; b < p->B; b++)
        sl_encoder_forward(p->embedded + (size_t)b * p->T * C, ids + (size_t)b * p->T, bottom->wte, bottom->wpe, p->T,
                           0, C);
    memset(p->dx, 0, (size_t)N * C * sizeof *p->dx);
    memset(p->dy, 0, (size_t)N * C * sizeof *p->dy);
    p->dcor = sl_dcor_forward_backward(p->dx, p->dy, p->embedded, rows, N, C, C, p->o.nopeek, p->scratch);
    p->kept = true;
}

int sl_privacy_bottom_forward(sl_privacy *self, const sl_params *bottom, const int32_t *ids, float *rows, bool train,
                              sl_err *err)
{
    if (train && self->o.nopeek > 0) nopeek_forward(self, bottom, ids, rows);
    return sl_cutguard_forward(self->act, rows, self->B * self->T, train, err);
}

int sl_privacy_bottom_backward(sl_privacy *self, sl_params *grads, const int32_t *ids, float *dout, sl_err *err)
{
    const int N = self->B * self->T, C = self->C;
    if (sl_cutguard_backward(self->act, dout, N, err) != 0) return -1;
    if (!self->kept) return 0;
    for (size_t i = 0; i < (size_t)N * C; i++)
        dout[i] += self->dy[i];
    for (int b = 0; b < self->B; b++)
        sl_encoder_backward(grads->wte, grads->wpe, self->dx + (size_t)b * self->T * C, ids + (size_t)b * self->T,
                            self->T, 0, C);
    self->kept = false;
    return 0;
}

int sl_privacy_top_gradient(sl_privacy *self, float *din, sl_err *err)
{
    return sl_cutguard_forward(self->grad, din, self->B * self->T, false, err);
}

double sl_privacy_dcor(const sl_privacy *self) { return self->dcor; }
