"""Private kernels of the fused distillation loss: a compiled C row kernel and an eager one.

Both compute, for every row of student logits ``s`` (N, C) and teacher logits ``t`` (N, C),
the per-row loss and its analytic gradient with respect to ``s`` in a single forward pass::

    loss[i]    = w_hard * CE(s_i, y_i) + w_soft * T**2 * D(softmax(t_i / T), softmax(s_i / T))
    grad[i, :] = gscale * d loss[i] / d s_i

``losses.py`` wraps them in a ``torch.autograd.Function`` (and, for training loops, in
``TrainingDistillationLoss``, which hands the gradient to ``fit``); users never call this module.

The compiled kernel is the C source below, built on first use with the system C compiler
(``$CC`` or ``gcc``; ``-O3 -march=native -fopenmp``, but not ``-ffast-math``, so ``-inf`` and
NaN keep their IEEE meaning), cached under ``$DARKKNOWLEDGE_CACHE_DIR`` (default
``~/.cache/darkknowledge``) keyed by a hash of the source, flags and CPU, written atomically,
and called through :mod:`ctypes` with the tensors' data pointers. It reads each row from main
memory once and keeps the row's three exponentials in per-thread scratch (3 * C floats), so
memory traffic is one read of ``s`` and ``t`` and one write of the gradient.

The eager kernel is the same mathematics in torch operations over chunks of rows, for any
dtype and device; it is the reference path and the fallback.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["DIVERGENCES", "kernel_error", "load_kernel", "rows_compiled", "rows_eager"]

#: Divergence names, in the order of the C kernel's ``div`` code.
DIVERGENCES = ("kl", "reverse_kl", "js")

_C_SOURCE = r"""/* Fused distillation loss kernel: loss and analytic gradient in one pass per row.
 *
 * Compiled on first use by darkknowledge/_fused_kd.py (gcc -O3 -march=native -fopenmp,
 * no -ffast-math so that -inf and NaN keep their IEEE meaning) and called through ctypes.
 *
 * For each row i of student logits s (C,) and teacher logits t (C,), with u = s / T:
 *   loss[i]    = w_hard * CE(s, y_i) + w_soft * T^2 * D(softmax(t/T), softmax(s/T))
 *   grad[i, :] = gscale * (w_hard * (softmax(s) - onehot(y_i)) + w_soft * T * dD/du)
 * where D is forward KL (div 0), reverse KL (div 1) or Jensen-Shannon (div 2), in nats.
 * Every row is read from main memory once; the three exponentials of a row are kept in
 * per-thread buffers (3 * C floats) so the later passes over the row run from cache.
 * Sums are accumulated in double. exp / log are vectorisable Cephes-style polynomials.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LN2 0.69314718055994530942

/* exp(x) for float, about 1 ulp; exactly 0 below -87.3 (where expf is subnormal), NaN stays NaN. */
static inline float dk_expf(float x) {
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
static inline float dk_logf(float x) {
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

static void dk_row(const float *s, const float *t, int64_t yi, int64_t C, float invT, float T,
                   float w_hard, float w_soft, int div, float gscale, float *loss, float *g,
                   float *es, float *et, float *e1) {
    /* pass 1: the row maxima */
    float ms = -INFINITY, mt = -INFINITY;
#pragma omp simd reduction(max : ms, mt)
    for (int64_t j = 0; j < C; j++) {
        ms = s[j] > ms ? s[j] : ms;
        mt = t[j] > mt ? t[j] : mt;
    }
    if (isinf(ms) && ms < 0) ms = 0.0f; /* an all -inf row: sums are 0, the loss NaN */
    if (isinf(mt) && mt < 0) mt = 0.0f;
    /* pass 2: the exponentials and their sums */
    double Zs = 0.0, Zt = 0.0, Z1 = 0.0;
#pragma omp simd reduction(+ : Zs, Zt)
    for (int64_t j = 0; j < C; j++) {
        float a = dk_expf((s[j] - ms) * invT);
        float b = dk_expf((t[j] - mt) * invT);
        es[j] = a;
        et[j] = b;
        Zs += a;
        Zt += b;
    }
    if (w_hard != 0.0f) {
#pragma omp simd reduction(+ : Z1)
        for (int64_t j = 0; j < C; j++) {
            float c = dk_expf(s[j] - ms);
            e1[j] = c;
            Z1 += c;
        }
    }
    const float rZs = (float)(1.0 / Zs), rZt = (float)(1.0 / Zt);
    const double lZs = log(Zs), lZt = log(Zt);
    double D = 0.0;
    float gs = gscale * w_soft * T; /* T^2 * dD/ds = T * dD/du */
    if (w_soft == 0.0f) {
        memset(g, 0, sizeof(float) * (size_t)C); /* alpha = 1: no soft term, not even 0 * inf */
    } else if (div == 0) {
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
    double L = w_soft == 0.0f ? 0.0 : (double)w_soft * T * T * D;
    if (w_hard != 0.0f) {
        const float rZ1 = (float)(1.0 / Z1), gh = gscale * w_hard;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) g[j] += gh * (e1[j] * rZ1);
        g[yi] -= gh;
        L += (double)w_hard * (log(Z1) - ((double)s[yi] - ms));
    }
    *loss = (float)L;
}

/* work: nthreads * 3 * C floats of scratch, one slice per thread. Returns the number of
 * rows whose loss is NaN (NaN or +inf logits, or a row that is all -inf). */
int64_t dk_kd_forward(const float *s, const float *t, const int64_t *y, int64_t N, int64_t C,
                      float T, float w_hard, float w_soft, int div, float gscale, float *loss,
                      float *grad, float *work, int nthreads) {
    const float invT = 1.0f / T;
    int64_t nan_rows = 0;
    if (nthreads <= 1) { /* small batches: no OpenMP team to start */
        for (int64_t i = 0; i < N; i++) {
            dk_row(s + i * C, t + i * C, y ? y[i] : 0, C, invT, T, w_hard, w_soft, div, gscale,
                   loss + i, grad + i * C, work, work + C, work + 2 * C);
            nan_rows += isnan(loss[i]) ? 1 : 0;
        }
        return nan_rows;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : nan_rows)
    for (int64_t i = 0; i < N; i++) {
        float *buf = work + (size_t)omp_get_thread_num() * 3 * (size_t)C;
        dk_row(s + i * C, t + i * C, y ? y[i] : 0, C, invT, T, w_hard, w_soft, div, gscale,
               loss + i, grad + i * C, buf, buf + C, buf + 2 * C);
        nan_rows += isnan(loss[i]) ? 1 : 0;
    }
    return nan_rows;
}
"""

_CFLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fopenmp",
           "-fPIC", "-shared", "-std=c99")

_lock = threading.Lock()
_kernel = None  # the loaded ctypes function, once built
_kernel_error: str | None = None  # why the build failed, once it has


def _cpu_key() -> str:
    """The CPU model and feature flags (so ``-march=native`` builds are not shared across CPUs)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def _cache_dir() -> Path:
    root = os.environ.get("DARKKNOWLEDGE_CACHE_DIR")
    if root:
        return Path(root) / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "darkknowledge" / "kernels"


def _build(cc: str) -> Path:
    """Compile the kernel (or find it cached) and return the shared library's path."""
    key = hashlib.sha256(
        "\0".join([_C_SOURCE, cc, " ".join(_CFLAGS), platform.machine(), _cpu_key()]).encode()
    ).hexdigest()[:16]
    uid = getattr(os, "getuid", lambda: 0)()
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"darkknowledge-{uid}"):
        lib = folder / f"fused_kd_{key}.so"
        if lib.exists():
            return lib
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if not os.access(folder, os.W_OK):
            continue
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            c_file = Path(tmp) / "fused_kd.c"
            c_file.write_text(_C_SOURCE)
            out = Path(tmp) / "fused_kd.so"
            proc = subprocess.run([cc, *_CFLAGS, str(c_file), "-o", str(out), "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"{cc} failed to compile the fused kernel:\n{proc.stderr[-2000:]}")
            os.replace(out, lib)  # atomic: a concurrent process sees no half-written library
        return lib
    raise RuntimeError("no writable cache folder for the compiled fused kernel")


def load_kernel():
    """Return the compiled C kernel (a ctypes function), building it on first use; None on failure.

    The reason for a failure is then given by :func:`kernel_error`.
    """
    global _kernel, _kernel_error
    if _kernel is not None or _kernel_error is not None:
        return _kernel
    with _lock:
        if _kernel is not None or _kernel_error is not None:
            return _kernel
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        try:
            if cc is None:
                raise RuntimeError("no C compiler found (set $CC or install gcc)")
            lib = ctypes.CDLL(str(_build(cc)))
            fn = lib.dk_kd_forward
            fn.restype = ctypes.c_int64
            p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
            fn.argtypes = [p, p, p, i64, i64, f32, f32, f32, ctypes.c_int, f32, p, p, p, ctypes.c_int]
            _kernel = fn
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _kernel_error = str(exc)
    return _kernel


def kernel_error() -> str | None:
    """Why the compiled kernel could not be built, or None if it was built (or not yet tried)."""
    return _kernel_error


# Below this many elements one thread is faster than waking a team of threads.
_PARALLEL_MIN_ELEMENTS = 1 << 16


def rows_compiled(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, *, temperature: float,
                  w_hard: float, w_soft: float, divergence: str, gscale: float):
    """Per-row loss (N,), scaled gradient (N, C) (float32) and the count of NaN rows, compiled.

    ``s`` and ``t`` are contiguous float32 CPU tensors (N, C); ``y`` is a contiguous int64
    tensor (N,) or None (then ``w_hard`` must be 0).
    """
    fn = load_kernel()
    if fn is None:
        raise RuntimeError(f"the compiled fused kernel is not available: {_kernel_error}")
    n, c = s.shape
    threads = 1 if n * c < _PARALLEL_MIN_ELEMENTS else max(1, min(torch.get_num_threads(), n))
    rows = torch.empty(n, dtype=torch.float32)  # (N,)
    grad = torch.empty(n, c, dtype=torch.float32)  # (N, C)
    work = torch.empty(threads, 3, c, dtype=torch.float32)  # per-thread row scratch
    nan_rows = fn(s.data_ptr(), t.data_ptr(), 0 if y is None else y.data_ptr(), n, c, temperature,
       w_hard, w_soft, DIVERGENCES.index(divergence), gscale, rows.data_ptr(),
       grad.data_ptr(), work.data_ptr(), threads)
    return rows, grad, nan_rows


def _soft_rows(ls: torch.Tensor, lt: torch.Tensor, divergence: str, temperature: float):
    """Divergence per row (n,) and T * dD/du (n, C) from log-probabilities ls = log q, lt = log p."""
    q, p = ls.exp(), lt.exp()  # (n, C) student and teacher probabilities at T
    zero = ls.new_zeros(())
    if divergence == "kl":
        # KL(p||q) = sum p (log p - log q); dKL/du = q - p
        d = torch.where(p != 0, p * (lt - ls), zero).sum(-1)
        g = q - p
    elif divergence == "reverse_kl":
        # KL(q||p) = sum q (log q - log p); dKL/du_j = q_j (log q_j - log p_j - KL)
        diff = ls - lt
        d = torch.where(q != 0, q * diff, zero).sum(-1)
        g = torch.where(q != 0, q * (diff - d[:, None]), zero)
    else:
        # JS = (KL(p||m) + KL(q||m)) / 2, m = (p + q) / 2; dJS/du_j = q_j (h_j - sum q h),
        # h = (log q - log m) / 2
        lm = torch.logaddexp(lt, ls) - math.log(2.0)  # (n, C) log m
        h = 0.5 * (ls - lm)
        qh = torch.where(q != 0, q * h, zero).sum(-1)  # (n,)
        d = 0.5 * torch.where(p != 0, p * (lt - lm), zero).sum(-1) + qh
        g = torch.where(q != 0, q * (h - qh[:, None]), zero)
    return d, temperature * g


def rows_eager(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, *, temperature: float,
               w_hard: float, w_soft: float, divergence: str, gscale: float, chunk_size: int):
    """Per-row loss (N,), scaled gradient (N, C) and the count of NaN rows, by torch operations.

    Works ``chunk_size`` rows at a time.

    Computes in ``s.dtype`` (float32 or float64); memory beyond the outputs is a few
    (chunk_size, C) temporaries.
    """
    n, c = s.shape
    rows = s.new_empty(n)  # (N,)
    grad = s.new_empty(n, c)  # (N, C)
    inv_t = 1.0 / temperature
    for lo in range(0, n, chunk_size):
        hi = min(n, lo + chunk_size)
        sc, tc = s[lo:hi], t[lo:hi]  # (n, C)
        if w_soft != 0.0:
            ls = torch.log_softmax(sc * inv_t, dim=-1)  # (n, C) log q
            lt = torch.log_softmax(tc * inv_t, dim=-1)  # (n, C) log p
            d, g = _soft_rows(ls, lt, divergence, temperature)
            r = (w_soft * temperature * temperature) * d  # (n,)
            g = g.mul_(w_soft * gscale)
        else:  # alpha = 1: no soft term (not even 0 * inf)
            r, g = sc.new_zeros(hi - lo), torch.zeros_like(sc)
        if w_hard != 0.0:
            l1 = torch.log_softmax(sc, dim=-1)  # (n, C) log softmax(s)
            yc = y[lo:hi, None]  # (n, 1)
            r = r - w_hard * l1.gather(-1, yc).squeeze(-1)
            g1 = l1.exp_()
            g1.scatter_add_(-1, yc, g1.new_full(yc.shape, -1.0))  # softmax(s) - onehot(y)
            g = g.add_(g1, alpha=w_hard * gscale)
        rows[lo:hi] = r
        grad[lo:hi] = g
    return rows, grad, int(torch.isnan(rows).sum())
