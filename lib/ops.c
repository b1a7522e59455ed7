/* ops.c — forward operations of GPT-2 (plain loops that vectorize, OpenBLAS for matmuls). */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* e^x for x <= 88, to about 1 ulp: Cody-Waite reduction by ln 2 and a degree-6 polynomial.
 * Written without calls or branches so that loops over it vectorize (libm's expf does not
 * without -ffast-math, and attention and GELU spend most of their time here). */
static inline float fast_expf(float x)
{
    const float magic = 12582912.0f;                 /* 1.5 * 2^23: adding it rounds to an integer */
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x; /* ternaries vectorize; fminf does not */
    float k = (x * 1.44269504088896341f + magic) - magic;
    float r = fmaf(k, -0.693359375f, x);
    r = fmaf(k, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

void sl_encoder_forward(float *out, const int32_t *ids, const float *wte, const float *wpe, int T, int pos0, int C)
{
    for (int t = 0; t < T; t++) {
        const float *te = wte + (size_t)ids[t] * C, *pe = wpe + (size_t)(pos0 + t) * C;
        float *o = out + (size_t)t * C;
        for (int i = 0; i < C; i++)
            o[i] = te[i] + pe[i];
    }
}

void sl_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N,
                          int C, float eps)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float sum = 0;
        for (int i = 0; i < C; i++)
            sum += x[i];
        float m = sum / C, var = 0;
        for (int i = 0; i < C; i++)
            var += (x[i] - m) * (x[i] - m);
        float s = 1.0f / sqrtf(var / C + eps);
        for (int i = 0; i < C; i++)
            o[i] = (x[i] - m) * s * w[i] + b[i];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

float sl_matmul_bias(float *out, const float *bias, int N, int OC, bool accumulate)
{
    if (bias) {
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            if (accumulate)
                for (int i = 0; i < OC; i++)
                    o[i] += bias[i];
            else
                memcpy(o, bias, (size_t)OC * sizeof *o);
        }
    }
    return (bias || accumulate) ? 1.0f : 0.0f;
}

void sl_matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC,
                       bool accumulate)
{
    float beta = sl_matmul_bias(out, bias, N, OC, accumulate);
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, C, OC, 1.0f, w, OC, inp, 1, beta, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, C, 1.0f, inp, C, w, OC, beta, out, OC);
}

void sl_matmul_forward_wt(float *out, const float *inp, const float *w, int N, int C, int OC)
{
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, w, C, inp, 1, 0.0f, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC);
}

/* Softmax of row[0 .. valid) in place; the masked rest becomes 0. */
static void causal_softmax_row(float *row, int valid, int len)
{
    float max = row[0];
    for (int j = 1; j < valid; j++)
        max = row[j] > max ? row[j] : max;
    float sum = 0;
    for (int j = 0; j < valid; j++) {
        row[j] = fast_expf(row[j] - max);
        sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < valid; j++)
        row[j] *= inv;
    for (int j = valid; j < len; j++)
        row[j] = 0;
}

void sl_attention_forward(float *out, float *probs, bool keep, const float *q, int q_stride, const float *k,
                          const float *v, int kv_stride, int T, int past, int n_head, int hd)
{
    const int Tk = past + T, C = n_head * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        float *p = probs + (keep ? (size_t)h * T * Tk : 0);
        const float *qh = q + h * hd, *kh = k + h * hd, *vh = v + h * hd;
        if (T == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Tk, hd, scale, kh, kv_stride, qh, 1, 0.0f, p, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, Tk, hd, scale, qh, q_stride, kh, kv_stride, 0.0f, p,
                        Tk);
        for (int t = 0; t < T; t++)
            causal_softmax_row(p + (size_t)t * Tk, past + t + 1, Tk);
        if (T == 1)
            cblas_sgemv(CblasRowMajor, CblasTrans, Tk, hd, 1.0f, vh, kv_stride, p, 1, 0.0f, out + h * hd, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, Tk, 1.0f, p, Tk, vh, kv_stride, 0.0f,
                        out + h * hd, C);
    }
}

void sl_gelu_forward(float *out, const float *inp, size_t n)
{
    /* 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)): one exponential, no cancellation near 0. */
    const float s = 0.7978845608028654f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], u = s * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + fast_expf(-2.0f * u));
    }
}

/* ---- backward ---- */

void sl_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *ids, int T, int pos0, int C)
{
    for (int t = 0; t < T; t++) {
        const float *d = dout + (size_t)t * C;
        float *te = dwte ? dwte + (size_t)ids[t] * C : NULL, *pe = dwpe + (size_t)(pos0 + t) * C;
        for (int i = 0; i < C; i++)
            pe[i] += d[i];
        if (te)
            for (int i = 0; i < C; i++)
                te[i] += d[i];
    }
}

void sl_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                           const float *mean, const float *rstd, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C, *x = inp + (size_t)n * C;
        float *dx = dinp + (size_t)n * C, m = mean[n], s = rstd[n];
        /* dnorm = d * w; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
        float dnorm_mean = 0, dnorm_norm_mean = 0;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s, dnorm = w[i] * d[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s, dnorm = w[i] * d[i];
            db[i] += d[i];
            dw[i] += norm * d[i];
            dx[i] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
        }
    }
}

void sl_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                        int N, int C, int OC)
{
    if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, OC, 1.0f, dout, OC, w, OC, 1.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dw, OC);
    if (dbias)
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++)
                dbias[o] += d[o];
        }
}

void sl_matmul_backward_wt(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int C,
                           int OC)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
}

void sl_attention_backward(float *dqkv, float *dprobs, const float *dout, const float *qkv, const float *probs, int T,
                           int n_head, int hd)
{
    const int C = n_head * hd, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const float *p = probs + (size_t)h * T * T, *q = qkv + h * hd, *k = qkv + C + h * hd, *v = qkv + 2 * C + h * hd;
        float *dq = dqkv + h * hd, *dk = dqkv + C + h * hd, *dv = dqkv + 2 * C + h * hd;
        const float *dy = dout + h * hd;
        /* dP = dY V^T (T,T); dV += P^T dY */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dy, C, v, C3, 0.0f, dprobs, T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, p, T, dy, C, 1.0f, dv, C3);
        /* softmax backward, folded with the 1/sqrt(hd) scale: dS = scale * P (dP - rowsum(P dP)) */
        for (int t = 0; t < T; t++) {
            const float *pr = p + (size_t)t * T;
            float *dr = dprobs + (size_t)t * T, dot = 0;
            for (int j = 0; j <= t; j++)
                dot += pr[j] * dr[j];
            for (int j = 0; j <= t; j++)
                dr[j] = scale * pr[j] * (dr[j] - dot);
            for (int j = t + 1; j < T; j++)
                dr[j] = 0;
        }
        /* dQ += dS K; dK += dS^T Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dprobs, T, k, C3, 1.0f, dq, C3);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dprobs, T, q, C3, 1.0f, dk, C3);
    }
}

void sl_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    const float s = 0.7978845608028654f;
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], u = s * (x + 0.044715f * x * x * x);
        float th = 2.0f / (1.0f + fast_expf(-2.0f * u)) - 1.0f; /* tanh(u) */
        float sech2 = 1.0f - th * th, du = s * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += (0.5f * (1.0f + th) + 0.5f * x * sech2 * du) * dout[i];
    }
}

double sl_crossentropy_forward_backward(float *dlogits, const float *logits, const int32_t *targets, int T, int V,
                                        float scale)
{
    double loss = 0;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        float *dz = dlogits ? dlogits + (size_t)t * V : NULL;
        if (targets[t] < 0) {
            if (dz) memset(dz, 0, (size_t)V * sizeof *dz);
            continue;
        }
        float max = z[0];
        for (int v = 1; v < V; v++)
            max = z[v] > max ? z[v] : max;
        const float target_logit = z[targets[t]]; /* read before dz (maybe z itself) is written */
        double sum = 0;
        if (dz) {
            /* e^(z - max) into dz with the vectorized exp, summed in double, then normalized:
             * the head's softmax is 2.5x the rest of a small model's step with libm's exp. */
            for (int v = 0; v < V; v++)
                dz[v] = fast_expf(z[v] - max);
            for (int v = 0; v < V; v++)
                sum += dz[v];
            const float inv = (float)(1.0 / sum) * scale;
            for (int v = 0; v < V; v++)
                dz[v] *= inv;
            dz[targets[t]] -= scale;
        } else {
            for (int v = 0; v < V; v++)
                sum += exp((double)(z[v] - max));
        }
        loss += log(sum) - (double)(target_logit - max);
    }
    return loss;
}

void sl_adamw_update(float *restrict p, float *restrict m, float *restrict v, const float *restrict g, size_t n,
                     float beta1, float beta2, float eps, float decay, float step_size, float bc2_sqrt)
{
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        p[i] *= decay;
        p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}
