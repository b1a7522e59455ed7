/* cutguard.c — clipping, Gaussian noise and NoPeek's distance correlation at a cut, forward and
 * backward; the noise sources; the Gaussian mechanism's epsilon. */
#include "cutguard.h"

#include "rng.h"

#include <errno.h>
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ---- clipping and noise ---- */

void sl_clip_forward(float *out, float *norm, const float *inp, int N, int C, float clip)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double sq = 0;
        for (int i = 0; i < C; i++)
            sq += (double)x[i] * x[i];
        float len = (float)sqrt(sq), s = len > clip ? clip / len : 1.0f;
        norm[n] = len;
        for (int i = 0; i < C; i++)
            o[i] = x[i] * s;
    }
}

void sl_clip_backward(float *dinp, const float *dout, const float *inp, const float *norm, int N, int C, float clip)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C, len = norm[n];
        if (len <= clip) {
            for (int i = 0; i < C; i++)
                dx[i] += d[i];
            continue;
        }
        /* y = clip x / |x|: dy/dx = (clip / |x|) (I - u u^T), u = x / |x| */
        double xd = 0;
        for (int i = 0; i < C; i++)
            xd += (double)x[i] * d[i];
        float s = clip / len, proj = (float)(xd / ((double)len * len));
        for (int i = 0; i < C; i++)
            dx[i] += s * (d[i] - x[i] * proj);
    }
}

void sl_noise_forward(float *out, const float *inp, const float *z, size_t n, float std)
{
    for (size_t i = 0; i < n; i++)
        out[i] = inp[i] + std * z[i];
}

void sl_noise_backward(float *dinp, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] += dout[i];
}

/* ---- distance correlation ---- */

size_t sl_dcor_scratch_size(int N) { return 3 * (size_t)N * N; }

/* d (N,N) = pairwise Euclidean distances between the rows of x (N,D). */
static void distances(double *d, const float *x, int N, int D)
{
    for (int i = 0; i < N; i++) {
        d[(size_t)i * N + i] = 0;
        for (int j = i + 1; j < N; j++) {
            const float *a = x + (size_t)i * D, *b = x + (size_t)j * D;
            double sq = 0;
            for (int k = 0; k < D; k++) {
                double diff = (double)a[k] - b[k];
                sq += diff * diff;
            }
            d[(size_t)i * N + j] = d[(size_t)j * N + i] = sqrt(sq);
        }
    }
}

/* Double-centres the symmetric d (N,N) in place: d_ij - mean_i - mean_j + mean. */
static void double_centre(double *d, int N)
{
    double *mean = d + (size_t)N * N; /* borrowed: the caller's next N^2 doubles are free now */
    double all = 0;
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < N; j++)
            s += d[(size_t)i * N + j];
        mean[i] = s / N;
        all += s;
    }
    all /= (double)N * N;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            d[(size_t)i * N + j] += all - mean[i] - mean[j];
}

static double frobenius_dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* dv (N,D) += scale * d/dv of a function of the distances |v_i - v_j| whose gradient with respect
 * to the distance of (i, j) is g_ij (symmetric): sum_j 2 g_ij (v_i - v_j) / |v_i - v_j|. */
static void distance_backward(float *dv, const float *v, const double *g, int N, int D, float scale)
{
    for (int i = 0; i < N; i++) {
        const float *vi = v + (size_t)i * D;
        float *di = dv + (size_t)i * D;
        for (int j = 0; j < N; j++) {
            const float *vj = v + (size_t)j * D;
            double sq = 0;
            for (int k = 0; k < D; k++) {
                double diff = (double)vi[k] - vj[k];
                sq += diff * diff;
            }
            if (sq == 0) continue; /* the subgradient 0 */
            const float w = (float)(scale * 2.0 * g[(size_t)i * N + j] / sqrt(sq));
            for (int k = 0; k < D; k++)
                di[k] += w * (vi[k] - vj[k]);
        }
    }
}

double sl_dcor_forward_backward(float *dx, float *dy, const float *x, const float *y, int N, int Dx, int Dy,
                                float scale, double *scratch)
{
    const size_t NN = (size_t)N * N;
    double *A = scratch, *B = scratch + NN, *G = scratch + 2 * NN;
    distances(A, x, N, Dx);
    double_centre(A, N); /* uses B as its row means: B is written next */
    distances(B, y, N, Dy);
    double_centre(B, N); /* uses G */
    const double c = frobenius_dot(A, B, NN), p = frobenius_dot(A, A, NN), q = frobenius_dot(B, B, NN);
    if (!(p > 0 && q > 0 && c > 0)) return 0;
    const double root = sqrt(p * q), dcor = sqrt(c / root);
    /* dCor^2 = c / sqrt(pq) with c = sum A_ij b_ij = sum a_ij B_ij and p, q the sums of A^2, B^2,
     * as functions of the raw distances a, b (centring is linear and idempotent):
     * d(dCor^2)/db_ij = (A_ij - (c/q) B_ij) / sqrt(pq), and d(dCor) = d(dCor^2) / (2 dCor). */
    const double k = 1.0 / (2.0 * dcor * root);
    if (dy) {
        for (size_t i = 0; i < NN; i++)
            G[i] = k * (A[i] - c / q * B[i]);
        distance_backward(dy, y, G, N, Dy, scale);
    }
    if (dx) {
        for (size_t i = 0; i < NN; i++)
            G[i] = k * (B[i] - c / p * A[i]);
        distance_backward(dx, x, G, N, Dx, scale);
    }
    return dcor;
}

/* ---- noise sources ---- */

struct sl_gauss {
    bool seeded;
    sl_rng rng;
    uint64_t pool[256]; /* cryptographic: random words not used yet */
    size_t left;
    double spare; /* Box-Muller gives two draws */
    bool has_spare;
};

sl_gauss *sl_gauss_new(const uint64_t *seed, sl_err *err)
{
    sl_gauss *g = calloc(1, sizeof *g);
    if (!g) {
        sl_fail(err, "out of memory");
        return NULL;
    }
    g->seeded = seed != NULL;
    if (seed) sl_rng_seed(&g->rng, *seed);
    return g;
}

void sl_gauss_destroy(sl_gauss **self)
{
    assert(self);
    if (!*self) return;
    explicit_bzero(*self, sizeof **self); /* what noise remains unused must not be read later */
    free(*self);
    *self = NULL;
}

static int next_word(sl_gauss *g, uint64_t *out, sl_err *err)
{
    if (g->seeded) return *out = sl_rng_next(&g->rng), 0;
    if (g->left == 0) {
        size_t got = 0;
        while (got < sizeof g->pool) {
            ssize_t n = getrandom((char *)g->pool + got, sizeof g->pool - got, 0);
            if (n < 0 && errno != EINTR) return sl_fail(err, "getrandom: %s", strerror(errno));
            if (n > 0) got += (size_t)n;
        }
        g->left = sizeof g->pool / sizeof *g->pool;
    }
    *out = g->pool[--g->left];
    g->pool[g->left] = 0;
    return 0;
}

int sl_gauss_fill(sl_gauss *self, float *z, size_t n, sl_err *err)
{
    size_t i = 0;
    if (n && self->has_spare) z[i++] = (float)self->spare, self->has_spare = false;
    while (i < n) {
        uint64_t a, b;
        if (next_word(self, &a, err) != 0 || next_word(self, &b, err) != 0) return -1;
        double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740992.0); /* (0, 1]: log is finite */
        double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1)), angle = 2.0 * M_PI * u2;
        z[i++] = (float)(r * cos(angle));
        if (i < n)
            z[i++] = (float)(r * sin(angle));
        else
            self->spare = r * sin(angle), self->has_spare = true;
    }
    return 0;
}

/* log Phi(x) for the standard normal CDF, finite down to about x = -37. */
static double log_phi(double x) { return log(0.5 * erfc(-x / M_SQRT2)); }

/* delta of the Gaussian mechanism at eps, with r = sensitivity / std (Balle and Wang, Thm. 8). */
static double gauss_delta(double r, double eps)
{
    double a = r / 2.0, b = eps / r;
    return exp(log_phi(a - b)) - exp(eps + log_phi(-a - b));
}

double sl_gauss_epsilon(double sensitivity, double std, double delta)
{
    if (!(std > 0)) return INFINITY;
    const double r = sensitivity / std;
    if (gauss_delta(r, 0) <= delta) return 0;
    double lo = 0, hi = 1;
    while (gauss_delta(r, hi) > delta && hi < 1e4)
        hi *= 2;
    for (int i = 0; i < 200 && hi - lo > 1e-9 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (gauss_delta(r, mid) > delta)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* ---- a defended cut ---- */

bool sl_cut_defence_active(sl_cut_defence d) { return d.clip > 0; }

struct sl_cutguard {
    sl_cut_defence d;
    int C;
    sl_gauss *gauss;
    float *kept, *norm, *z; /* rows before clipping, their norms, noise / scratch: cap rows each */
    int cap, kept_rows;
};

sl_cutguard *sl_cutguard_new(sl_cut_defence d, int C, const uint64_t *seed, sl_err *err)
{
    if (!(d.clip >= 0 && d.noise >= 0 && isfinite(d.clip) && isfinite(d.noise)) || (d.noise > 0 && d.clip <= 0)) {
        sl_fail(err, "a cut defence needs clip >= 0 and noise >= 0, and a clip when there is noise (clip %g, noise %g)",
                (double)d.clip, (double)d.noise);
        return NULL;
    }
    sl_cutguard *g = calloc(1, sizeof *g);
    if (!g || !(g->gauss = sl_gauss_new(seed, err))) {
        if (!g) sl_fail(err, "out of memory");
        sl_cutguard_destroy(&g);
        return NULL;
    }
    g->d = d;
    g->C = C;
    return g;
}

void sl_cutguard_destroy(sl_cutguard **self)
{
    assert(self);
    if (!*self) return;
    sl_cutguard *g = *self;
    sl_gauss_destroy(&g->gauss);
    free(g->kept);
    free(g->norm);
    free(g->z);
    free(g);
    *self = NULL;
}

sl_cut_defence sl_cutguard_defence(const sl_cutguard *self) { return self->d; }

static int reserve(sl_cutguard *g, int N, sl_err *err)
{
    if (N <= g->cap) return 0;
    size_t rows = (size_t)N, C = (size_t)g->C;
    if (rows > SIZE_MAX / sizeof(float) / (C ? C : 1)) return sl_fail(err, "a cut of %d rows is too large", N);
    float *kept = realloc(g->kept, rows * C * sizeof(float));
    if (kept) g->kept = kept;
    float *norm = realloc(g->norm, rows * sizeof(float));
    if (norm) g->norm = norm;
    float *z = realloc(g->z, rows * C * sizeof(float));
    if (z) g->z = z;
    if (!kept || !norm || !z) return sl_fail(err, "out of memory for a cut of %d rows", N);
    g->cap = N;
    return 0;
}

int sl_cutguard_forward(sl_cutguard *self, float *x, int N, bool keep, sl_err *err)
{
    if (!sl_cut_defence_active(self->d) || N <= 0) return 0;
    if (reserve(self, N, err) != 0) return -1;
    const size_t n = (size_t)N * self->C;
    if (keep) memcpy(self->kept, x, n * sizeof *x), self->kept_rows = N;
    sl_clip_forward(x, self->norm, x, N, self->C, self->d.clip);
    if (self->d.noise <= 0) return 0;
    if (sl_gauss_fill(self->gauss, self->z, n, err) != 0) return -1;
    sl_noise_forward(x, x, self->z, n, self->d.noise * self->d.clip);
    return 0;
}

int sl_cutguard_backward(sl_cutguard *self, float *dx, int N, sl_err *err)
{
    if (!sl_cut_defence_active(self->d)) return 0;
    if (N != self->kept_rows)
        return sl_fail(err, "the backward of a cut of %d rows follows a kept forward of %d", N, self->kept_rows);
    const size_t n = (size_t)N * self->C;
    float *dclipped = self->z; /* the noise is spent: its buffer takes the gradient at the clipped rows */
    memset(dclipped, 0, n * sizeof *dclipped);
    sl_noise_backward(dclipped, dx, n);
    memset(dx, 0, n * sizeof *dx);
    sl_clip_backward(dx, dclipped, self->kept, self->norm, N, self->C, self->d.clip);
    return 0;
}
