/* Fused distillation loss kernel: loss and analytic gradient in one pass per row.
 *
 * Built when the package is installed (setup.py declares it as the optional extension module
 * darkknowledge._fused_kd_c) and called through ctypes by darkknowledge/_fused_kd.py, which
 * loads it only from the package's own folder. The module has no Python methods: the
 * extension machinery is only the way to build and install the shared library with the package.
 * Compiled with -O3 -fopenmp-simd (the `omp simd` pragmas only: no OpenMP runtime, so no second
 * libgomp beside torch's), never -ffast-math, so that -inf and NaN keep their IEEE meaning.
 *
 * For each row i of student logits s (C,) and teacher logits t (C,), with u = s / T:
 *   loss[i]    = w_hard * CE(s, y_i) + w_soft * T^2 * D(softmax(t/T), softmax(s/T))
 *   grad[i, :] = gscale * (w_hard * (softmax(s) - onehot(y_i)) + w_soft * T * dD/du)
 * where D is forward KL (div 0), reverse KL (div 1) or Jensen-Shannon (div 2), in nats.
 *
 * Two ways to the soft term, chosen per row:
 *  - fast (float32, max-subtracted): every row is read from main memory once; the three
 *    exponentials of a row are kept in scratch (3 * C floats) so the later passes over the row
 *    run from cache. Sums are accumulated in double. exp / log are vectorisable Cephes-style
 *    polynomials.
 *  - stable (double, for rows whose logit ranges are both <= DK_STABLE_RANGE * T, i.e. high
 *    temperatures): with centred logits a = (t - mean t)/T, b = (s - mean s)/T, the log-ratio
 *    r_j = log q_j - log p_j = (b_j - a_j) - log1p(mean expm1 b) + log1p(mean expm1 a) is
 *    computed without the cancellation of log Z_s - log Z_t, and each divergence is written
 *    as a sum of non-negative terms (an f-divergence), e.g. KL(p||q) = sum_j p_j (e^r - 1 - r),
 *    with T^2 (e^r - 1 - r) evaluated as rho^2 (1/2 + r/6 + ...) for small r = rho / T.
 *    So T^2 D and T dD/du stay exact to a few ulps as T -> inf, where they tend to Hinton's
 *    logit-matching limit (1 / (2C)) sum_j (sbar_j - tbar_j)^2 (KL and reverse KL; JS: 1/(8C)).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LN2 0.69314718055994530942
/* rows whose teacher and student logit ranges are both <= this * T take the stable way */
#define DK_STABLE_RANGE 1.0
/* below this |r| the series of e^r - 1 - r and of the JS generator are used */
#define DK_SERIES_R 1e-3

#if defined(__GNUC__)
#define DK_EXPORT __attribute__((visibility("default")))
#define DK_INLINE static inline __attribute__((always_inline))
#else
#define DK_EXPORT
#define DK_INLINE static inline
#endif

/* Portable build (no -march=native, so a wheel runs on any x86-64), with an AVX2 clone chosen
 * at load time where GCC and glibc support function multiversioning. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DK_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DK_CLONES
#endif

/* exp(x) for float, about 1 ulp; exactly 0 below -87.3 (where expf is subnormal), NaN stays NaN. */
DK_INLINE float dk_expf(float x) {
    float xc = x < -87.3f ? -87.3f : x;
    xc = xc > 88.7f ? 88.7f : xc;
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    y = y * scale;
    y = x < -87.3f ? 0.0f : y;
    y = x > 88.7f ? INFINITY : y;
    return y;
}

/* log(x) for a normal float x > 0 (callers guard x > 0), about 1 ulp. */
DK_INLINE float dk_logf(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126;
    int32_t mbits = (bits & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
    float m;
    memcpy(&m, &mbits, sizeof m);
    float fe = (float)e;
    int small = m < 0.707106781186547524f;
    fe = small ? fe - 1.0f : fe;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    float y = p * m * z;
    y += fe * -2.12194440e-4f;
    y += -0.5f * z;
    return m + y + fe * 0.693359375f;
}

/* T^2 (e^r - 1 - r) with r = rho / T, without cancellation for small r nor overflow of T^2. */
static double dk_phi2(double rho, double r, double T) {
    if (fabs(r) < DK_SERIES_R)
        return rho * rho *
               (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r / 5040)))));
    return (expm1(r) - r) * T * T;
}

/* T^2 psi(r), psi(r) = (e^r (r - h) - h) / 2 with h = log((1 + e^r) / 2): the JS generator. */
static double dk_psi2(double rho, double r, double T) {
    if (fabs(r) < DK_SERIES_R)
        return rho * rho *
               (0.125 + r * (1.0 / 16 + r * (1.0 / 64 + r * (1.0 / 384 + r * (1.0 / 2304 + r / 11520)))));
    double h = log1p(0.5 * expm1(r));
    return 0.5 * (exp(r) * (r - h) - h) * T * T;
}

/* The soft term of one all-finite row the stable way: returns T^2 D, writes T dD/du * gs to g.
 * ea, eb: 2 * C doubles of scratch. */
static double dk_soft_stable(const float *s, const float *t, int64_t C, double T, int div, double gs,
                             float *g, double *ea, double *eb) {
    double ms = 0.0, mt = 0.0;
    for (int64_t j = 0; j < C; j++) {
        ms += s[j];
        mt += t[j];
    }
    ms /= (double)C;
    mt /= (double)C;
    double A = 0.0, B = 0.0;
    for (int64_t j = 0; j < C; j++) {
        ea[j] = expm1(((double)t[j] - mt) / T); /* e^a - 1, a = centred teacher logit / T */
        eb[j] = expm1(((double)s[j] - ms) / T);
        A += ea[j];
        B += eb[j];
    }
    A /= (double)C;
    B /= (double)C;
    /* rho_j = T r_j = T (log q_j - log p_j) */
    const double shift = T * (log1p(A) - log1p(B));
    const double zp = 1.0 / ((double)C * (1.0 + A)), zq = 1.0 / ((double)C * (1.0 + B));
    double D2 = 0.0;
    if (div == 0) { /* KL(p||q) = sum p (e^r - 1 - r); T dKL/du = T (q - p) = T p (e^r - 1) */
        for (int64_t j = 0; j < C; j++) {
            double rho = (((double)s[j] - ms) - ((double)t[j] - mt)) + shift, r = rho / T;
            double p = (1.0 + ea[j]) * zp;
            D2 += p * dk_phi2(rho, r, T);
            g[j] = (float)(gs * p * (T * expm1(r)));
        }
    } else if (div == 1) { /* KL(q||p) = sum q (e^-r - 1 + r); T dKL/du_j = q_j (rho_j - T KL) */
        for (int64_t j = 0; j < C; j++) {
            double rho = (((double)s[j] - ms) - ((double)t[j] - mt)) + shift;
            D2 += (1.0 + eb[j]) * zq * dk_phi2(-rho, -rho / T, T);
        }
        const double TD = D2 / T;
        for (int64_t j = 0; j < C; j++) {
            double rho = (((double)s[j] - ms) - ((double)t[j] - mt)) + shift;
            g[j] = (float)(gs * (1.0 + eb[j]) * zq * (rho - TD));
        }
    } else { /* JS = sum p psi(r); T dJS/du_j = q_j (k_j - sum q k), k = T (log q - log m) / 2 */
        double qk = 0.0;
        for (int64_t j = 0; j < C; j++) {
            double rho = (((double)s[j] - ms) - ((double)t[j] - mt)) + shift, r = rho / T;
            D2 += (1.0 + ea[j]) * zp * dk_psi2(rho, r, T);
            double k = 0.5 * (rho - T * log1p(0.5 * expm1(r))); /* log(q/m) = r - h(r) */
            qk += (1.0 + eb[j]) * zq * k;
            ea[j] = k; /* kept for the gradient pass */
        }
        for (int64_t j = 0; j < C; j++) g[j] = (float)(gs * (1.0 + eb[j]) * zq * (ea[j] - qk));
    }
    return D2;
}

DK_INLINE void dk_row(const float *s, const float *t, int64_t yi, int64_t C, double T, float invT,
                      float w_hard, float w_soft, int div, float gscale, float *loss, float *g,
                      float *es, float *et, float *e1) {
    /* pass 1: the row maxima and minima */
    float ms = -INFINITY, mt = -INFINITY, ns = INFINITY, nt = INFINITY;
#pragma omp simd reduction(max : ms, mt) reduction(min : ns, nt)
    for (int64_t j = 0; j < C; j++) {
        ms = s[j] > ms ? s[j] : ms;
        mt = t[j] > mt ? t[j] : mt;
        ns = s[j] < ns ? s[j] : ns;
        nt = t[j] < nt ? t[j] : nt;
    }
    const int stable = w_soft != 0.0f && isfinite(ms) && isfinite(mt) && isfinite(ns) &&
                       isfinite(nt) && ((double)ms - ns) <= DK_STABLE_RANGE * T &&
                       ((double)mt - nt) <= DK_STABLE_RANGE * T;
    if (isinf(ms) && ms < 0) ms = 0.0f; /* an all -inf row: sums are 0, the loss NaN */
    if (isinf(mt) && mt < 0) mt = 0.0f;
    double L = 0.0;
    float gs = (float)(gscale * w_soft * T); /* T^2 * dD/ds = T * dD/du */
    if (w_soft == 0.0f) {
        memset(g, 0, sizeof(float) * (size_t)C); /* alpha = 1: no soft term, not even 0 * inf */
    } else if (stable) {
        /* es, et, e1 are 3 * C floats; the stable way needs 2 * C doubles (the caller gives 4 * C floats) */
        double *ea = (double *)es, *eb = ea + C;
        L = (double)w_soft * dk_soft_stable(s, t, C, T, div, (double)gscale * w_soft, g, ea, eb);
    } else {
        /* pass 2: the exponentials and their sums */
        double Zs = 0.0, Zt = 0.0;
#pragma omp simd reduction(+ : Zs, Zt)
        for (int64_t j = 0; j < C; j++) {
            float a = dk_expf((s[j] - ms) * invT);
            float b = dk_expf((t[j] - mt) * invT);
            es[j] = a;
            et[j] = b;
            Zs += a;
            Zt += b;
        }
        const float rZs = (float)(1.0 / Zs), rZt = (float)(1.0 / Zt);
        const double lZs = log(Zs), lZt = log(Zt);
        double D = 0.0;
        if (div == 0) {
            /* KL(p||q) = sum_j p_j (a_j - b_j) - log Zt + log Zs, a = (t - mt)/T, b = (s - ms)/T
             * dKL/du = q - p */
            double acc = 0.0;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < C; j++) {
                float d = (t[j] - mt) * invT - (s[j] - ms) * invT;
                acc += et[j] != 0.0f ? et[j] * d : 0.0f;
                g[j] = gs * (es[j] * rZs - et[j] * rZt);
            }
            D = acc / Zt - lZt + lZs;
        } else if (div == 1) {
            /* KL(q||p) = sum_j q_j d_j, d = log q - log p = b - a - log Zs + log Zt
             * dKL/du_j = q_j (d_j - KL) */
            double acc = 0.0;
            const float off = (float)(lZt - lZs);
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < C; j++) {
                float d = (s[j] - ms) * invT - (t[j] - mt) * invT;
                acc += es[j] != 0.0f ? es[j] * d : 0.0f;
            }
            D = acc / Zs + lZt - lZs;
            const float Df = (float)D;
#pragma omp simd
            for (int64_t j = 0; j < C; j++) {
                float d = (s[j] - ms) * invT - (t[j] - mt) * invT + off;
                float q = es[j] * rZs;
                float v = gs * q * (d - Df);
                g[j] = q != 0.0f ? v : 0.0f;
            }
        } else {
            /* JS = 1/2 sum p (log p - log m) + 1/2 sum q (log q - log m), m = (p + q) / 2
             * dJS/du_j = q_j (h_j - sum_k q_k h_k), h = 1/2 (log q - log m) */
            double accp = 0.0, accq = 0.0;
            const float flZs = (float)lZs, flZt = (float)lZt;
#pragma omp simd reduction(+ : accp, accq)
            for (int64_t j = 0; j < C; j++) {
                float p = et[j] * rZt, q = es[j] * rZs;
                float sm = p + q;
                float lm = dk_logf(sm > 0.0f ? sm : 1.0f) - (float)LN2;
                float lp = (t[j] - mt) * invT - flZt;
                float lq = (s[j] - ms) * invT - flZs;
                float h = 0.5f * (lq - lm);
                accp += p != 0.0f ? p * (lp - lm) : 0.0f;
                accq += q != 0.0f ? q * h : 0.0f;
                g[j] = h; /* kept for the gradient pass */
            }
            D = 0.5 * accp + accq;
            const float qh = (float)accq;
#pragma omp simd
            for (int64_t j = 0; j < C; j++) {
                float q = es[j] * rZs;
                float v = gs * q * (g[j] - qh);
                g[j] = q != 0.0f ? v : 0.0f;
            }
        }
        L = (double)w_soft * T * T * D;
    }
    if (w_hard != 0.0f) {
        double Z1 = 0.0;
#pragma omp simd reduction(+ : Z1)
        for (int64_t j = 0; j < C; j++) {
            float c = dk_expf(s[j] - ms);
            e1[j] = c;
            Z1 += c;
        }
        const float rZ1 = (float)(1.0 / Z1), gh = gscale * w_hard;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) g[j] += gh * (e1[j] * rZ1);
        g[yi] -= gh;
        L += (double)w_hard * (log(Z1) - ((double)s[yi] - ms));
    }
    *loss = (float)L;
}

/* Rows [0, N) of s, t (N, C) and y (N,) (or NULL when w_hard == 0).
 * work: 4 * C floats of scratch for this call (the caller runs concurrent calls on disjoint
 * row blocks, each with its own scratch). Returns -1 if a label is outside [0, C) (checked
 * before anything is read or written through it), else the number of rows whose loss is NaN
 * (NaN or +inf logits, or a row that is all -inf). */
DK_EXPORT DK_CLONES int64_t dk_kd_forward(const float *s, const float *t, const int64_t *y,
                                          int64_t N, int64_t C, double T, float w_hard,
                                          float w_soft, int div, float gscale, float *loss,
                                          float *grad, float *work) {
    if (y != NULL) {
        int64_t bad = 0;
        for (int64_t i = 0; i < N; i++) bad |= (uint64_t)y[i] >= (uint64_t)C;
        if (bad) return -1;
    }
    const float invT = (float)(1.0 / T);
    int64_t nan_rows = 0;
    for (int64_t i = 0; i < N; i++) {
        dk_row(s + i * C, t + i * C, y ? y[i] : 0, C, T, invT, w_hard, w_soft, div, gscale,
               loss + i, grad + i * C, work, work + C, work + 2 * C);
        nan_rows += isnan(loss[i]) ? 1 : 0;
    }
    return nan_rows;
}

/* The extension module itself: no methods (the kernel is called through ctypes). */
static struct PyModuleDef dk_module = {
    PyModuleDef_HEAD_INIT, "_fused_kd_c",
    "The compiled fused distillation kernel (dk_kd_forward), called through ctypes by "
    "darkknowledge._fused_kd.",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fused_kd_c(void) { return PyModule_Create(&dk_module); }
