/* test_cutguard.c — the defences at a cut: clipping, noise and NoPeek's distance correlation
 * against finite differences and known values; the noise sources' statistics; the Gaussian
 * mechanism's epsilon against the published figure. */
#include "check.h"
#include "cutguard.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 7, C = 5 };

static void fill_normal(float *x, size_t n, float scale, uint64_t seed)
{
    sl_rng rng;
    sl_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * sl_rng_normal(&rng);
}

/* sum(w * f(x)) for the scalar probe of a vector function. */
static double dot(const float *w, const float *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)w[i] * y[i];
    return s;
}

/* Largest |analytic - numeric| relative to max(1, |numeric|) over the entries. */
static double worst_relative(const float *analytic, const double *numeric, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(analytic[i] - numeric[i]) / fmax(1.0, fabs(numeric[i]));
        worst = isnan(d) ? INFINITY : fmax(worst, d);
    }
    return worst;
}

/* f maps x (N,C) to a scalar; numeric gradient by central differences of step h. */
typedef double (*scalar_fn)(const float *x, void *ctx);

static void numeric_grad(scalar_fn f, void *ctx, const float *x, size_t n, float h, double *out)
{
    float *xp = malloc(n * sizeof *xp);
    memcpy(xp, x, n * sizeof *xp);
    for (size_t i = 0; i < n; i++) {
        xp[i] = x[i] + h;
        double up = f(xp, ctx);
        xp[i] = x[i] - h;
        double down = f(xp, ctx);
        xp[i] = x[i];
        out[i] = (up - down) / (2.0 * (double)h);
    }
    free(xp);
}

typedef struct clip_ctx {
    const float *w;
    float clip;
} clip_ctx;

static double clip_probe(const float *x, void *ctx)
{
    clip_ctx *c = ctx;
    float out[N * C], norm[N];
    sl_clip_forward(out, norm, x, N, C, c->clip);
    return dot(c->w, out, N * C);
}

static void test_clip(void)
{
    float x[N * C], w[N * C], out[N * C], norm[N], dx[N * C];
    fill_normal(x, N * C, 1.0f, 1);
    fill_normal(w, N * C, 1.0f, 2);
    const float clip = 2.0f;
    sl_clip_forward(out, norm, x, N, C, clip);
    int clipped = 0;
    for (int n = 0; n < N; n++) {
        double sq = 0;
        for (int i = 0; i < C; i++)
            sq += (double)out[n * C + i] * out[n * C + i];
        clipped += norm[n] > clip;
        CHECK(sqrt(sq) <= clip * (1 + 1e-6), "row %d: norm %g after clipping to %g", n, sqrt(sq), (double)clip);
        if (norm[n] <= clip) CHECK_CLOSE(out + n * C, x + n * C, C, 0, "a row within the bound is unchanged");
    }
    CHECK(clipped > 0 && clipped < N, "the test has rows on both sides of the bound (%d clipped)", clipped);
    for (size_t i = 0; i < N * C; i++)
        dx[i] = 0.5f; /* backward accumulates */
    sl_clip_backward(dx, w, x, norm, N, C, clip);
    for (size_t i = 0; i < N * C; i++)
        dx[i] -= 0.5f;
    double numeric[N * C];
    clip_ctx ctx = {w, clip};
    numeric_grad(clip_probe, &ctx, x, N * C, 1e-3f, numeric);
    double worst = worst_relative(dx, numeric, N * C);
    CHECK(worst < 2e-3, "clip backward vs finite differences: %g", worst);
}

typedef struct guard_ctx {
    const float *w;
    sl_cut_defence d;
} guard_ctx;

/* The defended rows with the same noise every call (seed 7). */
static double guard_probe(const float *x, void *ctx)
{
    guard_ctx *g = ctx;
    float y[N * C];
    memcpy(y, x, sizeof y);
    uint64_t seed = 7;
    sl_cutguard *guard = sl_cutguard_new(g->d, C, &seed, NULL);
    sl_cutguard_forward(guard, y, N, false, NULL);
    sl_cutguard_destroy(&guard);
    return dot(g->w, y, N * C);
}

static void test_noise_and_guard(void)
{
    float x[N * C], w[N * C], z[N * C], y[N * C], dx[N * C];
    fill_normal(x, N * C, 1.0f, 3);
    fill_normal(w, N * C, 1.0f, 4);
    fill_normal(z, N * C, 1.0f, 5);
    sl_noise_forward(y, x, z, N * C, 0.5f);
    CHECK(fabsf(y[3] - (x[3] + 0.5f * z[3])) < 1e-7f, "noise adds std * z");
    memset(dx, 0, sizeof dx);
    sl_noise_backward(dx, w, N * C);
    CHECK_CLOSE(dx, w, N * C, 0, "noise backward is the identity");

    guard_ctx ctx = {w, {.clip = 1.5f, .noise = 0.7f}};
    uint64_t seed = 7;
    sl_err err;
    sl_cutguard *guard = sl_cutguard_new(ctx.d, C, &seed, &err);
    if (!CHECK(guard != NULL, "guard: %s", err.msg)) return;
    memcpy(y, x, sizeof y);
    CHECK(sl_cutguard_forward(guard, y, N, true, &err) == 0, "guard forward: %s", err.msg);
    memcpy(dx, w, sizeof dx);
    CHECK(sl_cutguard_backward(guard, dx, N, &err) == 0, "guard backward: %s", err.msg);
    CHECK(sl_cutguard_backward(guard, dx, N - 1, &err) != 0, "a backward of another size is refused");
    sl_cutguard_destroy(&guard);
    CHECK(guard == NULL, "destroy nulls the pointer");
    double numeric[N * C];
    numeric_grad(guard_probe, &ctx, x, N * C, 1e-3f, numeric);
    double worst = worst_relative(dx, numeric, N * C);
    CHECK(worst < 2e-3, "guard backward vs finite differences: %g", worst);

    CHECK(!sl_cutguard_new((sl_cut_defence){.clip = 0, .noise = 1}, C, &seed, &err) && strstr(err.msg, "clip"),
          "noise without a clip is refused: %s", err.msg);
    CHECK(!sl_cutguard_new((sl_cut_defence){.clip = -1}, C, &seed, &err), "a negative clip is refused");
}

typedef struct dcor_ctx {
    const float *x, *y;
    int n, dx_width, dy_width;
    bool vary_x;
    double *scratch;
} dcor_ctx;

static double dcor_probe(const float *v, void *ctx)
{
    dcor_ctx *c = ctx;
    return sl_dcor_forward_backward(NULL, NULL, c->vary_x ? v : c->x, c->vary_x ? c->y : v, c->n, c->dx_width,
                                    c->dy_width, 1, c->scratch);
}

static void test_dcor(void)
{
    enum { M = 9, DX = 4, DY = 6 };
    float x[M * DX], y[M * DY], gx[M * DX], gy[M * DY];
    double *scratch = malloc(sl_dcor_scratch_size(M) * sizeof *scratch);
    fill_normal(x, M * DX, 1.0f, 11);
    fill_normal(y, M * DY, 1.0f, 12);
    for (int i = 0; i < M; i++) /* y depends on x in part */
        for (int k = 0; k < DX; k++)
            y[i * DY + k] += 0.8f * x[i * DX + k] * x[i * DX + k];
    memset(gx, 0, sizeof gx);
    memset(gy, 0, sizeof gy);
    const float scale = 0.7f;
    double d = sl_dcor_forward_backward(gx, gy, x, y, M, DX, DY, scale, scratch);
    CHECK(d > 0.1 && d < 1, "dCor of dependent data in (0,1): %g", d);
    double self = sl_dcor_forward_backward(NULL, NULL, x, x, M, DX, DX, 1, scratch);
    CHECK(fabs(self - 1) < 1e-9, "dCor(x, x) = 1: %.12f", self);
    float scaled[M * DX];
    for (int i = 0; i < M * DX; i++)
        scaled[i] = 3 * x[i] + 1;
    double similar = sl_dcor_forward_backward(NULL, NULL, x, scaled, M, DX, DX, 1, scratch);
    CHECK(fabs(similar - 1) < 1e-6, "dCor is invariant to scaling and shifting: %.9f", similar);

    double nx[M * DX], ny[M * DY];
    dcor_ctx ctx = {x, y, M, DX, DY, true, scratch};
    numeric_grad(dcor_probe, &ctx, x, M * DX, 1e-3f, nx);
    ctx.vary_x = false;
    numeric_grad(dcor_probe, &ctx, y, M * DY, 1e-3f, ny);
    for (int i = 0; i < M * DX; i++)
        nx[i] *= scale;
    for (int i = 0; i < M * DY; i++)
        ny[i] *= scale;
    double wx = worst_relative(gx, nx, M * DX), wy = worst_relative(gy, ny, M * DY);
    CHECK(wx < 1e-3, "dCor gradient for x vs finite differences: %g", wx);
    CHECK(wy < 1e-3, "dCor gradient for y vs finite differences: %g", wy);
    double norm = 0;
    for (int i = 0; i < M * DY; i++)
        norm += fabs(ny[i]);
    CHECK(norm > 1e-3, "the gradient is not trivially zero (%g)", norm);

    float same[M * DX] = {0};
    CHECK(sl_dcor_forward_backward(gx, NULL, same, x, M, DX, DX, 1, scratch) == 0, "constant x: dCor 0");
    free(scratch);
}

/* Mean and variance of n draws. */
static void moments(const float *z, size_t n, double *mean, double *var)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s += z[i], s2 += (double)z[i] * z[i];
    *mean = s / n;
    *var = s2 / n - *mean * *mean;
}

static void test_sources(void)
{
    enum { M = 200001 };
    float *a = malloc(M * sizeof *a), *b = malloc(M * sizeof *b);
    uint64_t seed = 42;
    sl_err err;
    sl_gauss *g1 = sl_gauss_new(&seed, &err), *g2 = sl_gauss_new(&seed, &err), *crypto = sl_gauss_new(NULL, &err);
    CHECK(g1 && g2 && crypto, "sources: %s", err.msg);
    sl_gauss_fill(g1, a, 3, &err); /* an odd count keeps a spare for the next call */
    sl_gauss_fill(g1, a + 3, M - 3, &err);
    sl_gauss_fill(g2, b, M, &err);
    CHECK(memcmp(a, b, M * sizeof *a) == 0, "a seeded source is reproducible, however the draws are split");
    for (int k = 0; k < 2; k++) {
        if (k == 1) CHECK(sl_gauss_fill(crypto, a, M, &err) == 0, "getrandom: %s", err.msg);
        double mean, var;
        moments(a, M, &mean, &var);
        CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.02, "%s source: mean %g, variance %g",
              k ? "cryptographic" : "seeded", mean, var);
    }
    sl_gauss_fill(crypto, b, M, &err);
    CHECK(memcmp(a, b, 64) != 0, "the cryptographic source does not repeat itself");
    sl_gauss_destroy(&g1);
    sl_gauss_destroy(&g2);
    sl_gauss_destroy(&crypto);
    free(a);
    free(b);
}

static void test_epsilon(void)
{
    /* Balle and Wang (ICML 2018): eps 1, delta 1e-5, sensitivity 1 needs std 3.73 (classic: 4.84). */
    double eps = sl_gauss_epsilon(1, 3.7306, 1e-5);
    CHECK(fabs(eps - 1) < 1e-3, "analytic Gaussian mechanism at std 3.7306: eps %g, want 1", eps);
    double e1 = sl_gauss_epsilon(2, 1, 1e-5), e2 = sl_gauss_epsilon(2, 2, 1e-5);
    CHECK(e1 > e2 && e2 > 0, "more noise, smaller epsilon (%g > %g)", e1, e2);
    CHECK(isinf(sl_gauss_epsilon(2, 0, 1e-5)), "no noise: no guarantee");
}

int main(int argc, char **argv)
{
    check_init(argc, argv);
    if (check_selected("clip")) test_clip();
    if (check_selected("noise-guard")) test_noise_and_guard();
    if (check_selected("dcor")) test_dcor();
    if (check_selected("sources")) test_sources();
    if (check_selected("epsilon")) test_epsilon();
    return check_done();
}
