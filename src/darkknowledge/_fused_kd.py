"""Private kernels of the fused distillation loss: a compiled C row kernel and an eager one.

Both compute, for every row of student logits ``s`` (N, C) and teacher logits ``t`` (N, C),
the per-row loss and its analytic gradient with respect to ``s`` in a single forward pass::

    loss[i]    = w_hard * CE(s_i, y_i) + w_soft * T**2 * D(softmax(t_i / T), softmax(s_i / T))
    grad[i, :] = gscale * d loss[i] / d s_i

``losses.py`` wraps them in a ``torch.autograd.Function`` (and, for training loops, in
``TrainingDistillationLoss``, which hands the gradient to ``fit``); users never call this module.

The compiled kernel is ``_fused_kd.c``, built when the package is installed (``pip install .``
or ``pip install -e .``; ``setup.py`` declares it as the optional extension module
``darkknowledge._fused_kd_c``, compiled with ``-O3 -fopenmp-simd``, never ``-ffast-math``, so
``-inf`` and NaN keep their IEEE meaning). It is loaded with :mod:`ctypes` from the package's
own folder only (the file that ``importlib.util.find_spec`` finds for that module, checked to
sit beside this file): nothing is compiled at run time and nothing is ever loaded from a cache
or temporary folder. Without it (no C compiler when the package was installed) the eager path
runs, ``losses`` says so once (a :class:`KernelUnavailableWarning`), and :func:`kernel_error`
says why.

The kernel has no OpenMP runtime (torch's wheels bundle their own libgomp, and two OpenMP
runtimes in one process fight over threads): one call is single-threaded, and a large batch is
split into row blocks run by a few Python threads (ctypes releases the GIL during the call).
Each call reads each row from main memory once and keeps the row's exponentials in scratch
(4 * C floats), so memory traffic is one read of ``s`` and ``t`` and one write of the gradient.

High temperatures: where both rows' logit ranges are at most ``T`` the kernel switches to a
float64 formulation without cancellation (centred logits, ``expm1`` / ``log1p``, the divergence
as a sum of non-negative terms, a series for small log-ratios), so ``T**2 * D`` and its gradient
stay exact as ``T -> inf``, where they tend to Hinton's logit-matching limit
``sum_j ((s_j - mean s) - (t_j - mean t))**2 / (2 C)`` (KL and reverse KL; JS has ``8 C``).
The eager kernel does the same in torch float64 for those rows.

The eager kernel is the same mathematics in torch operations over chunks of rows, for any
dtype and device; it is the reference path and the fallback.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from darkknowledge.errors import InputError

__all__ = ["DIVERGENCES", "KernelUnavailableWarning", "STABLE_RANGE", "kernel_error", "label_error",
           "load_kernel", "rows_compiled", "rows_eager"]

#: Divergence names, in the order of the C kernel's ``div`` code.
DIVERGENCES = ("kl", "reverse_kl", "js")

#: Rows whose teacher and student logit ranges (max - min) are both <= STABLE_RANGE * T take the
#: cancellation-free high-temperature formulation (the C kernel's DK_STABLE_RANGE).
STABLE_RANGE = 1.0

#: The extension module that holds the compiled kernel, inside this package.
_EXTENSION = "darkknowledge._fused_kd_c"


class KernelUnavailableWarning(Warning):
    """The compiled fused kernel is not installed; the (slower) eager path computes the loss.

    Its own category (a plain ``Warning``, not a ``UserWarning`` / ``RuntimeWarning``), so that
    suites that turn darkknowledge's warnings into errors still run where no compiler was present
    at install time; filter it with ``warnings.filterwarnings("ignore", category=...)``.
    """


_lock = threading.Lock()
_kernel = None  # the loaded ctypes function, once loaded
_kernel_error: str | None = None  # why it could not be loaded, once tried
_pool: ThreadPoolExecutor | None = None  # row-block workers for large batches
_pool_key = (0, 0)  # (pid, workers) of _pool


def _library_path() -> Path:
    """The compiled extension's file, which must sit in this package's own folder."""
    spec = importlib.util.find_spec(_EXTENSION)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"the extension module {_EXTENSION} is not installed (no C compiler was found when "
            f"darkknowledge was installed; install gcc or clang and reinstall, e.g. "
            f"`pip install -e .`)")
    path = Path(spec.origin).resolve()
    here = Path(__file__).resolve().parent
    if path.parent != here:
        raise RuntimeError(f"the extension module {_EXTENSION} was found outside the package folder "
                           f"{here} (at {path}); refusing to load it")
    return path


def load_kernel():
    """Return the compiled C kernel (a ctypes function) from the package folder; None if absent.

    The reason for a failure is then given by :func:`kernel_error`. Nothing is compiled here.
    """
    global _kernel, _kernel_error
    if _kernel is not None or _kernel_error is not None:
        return _kernel
    with _lock:
        if _kernel is not None or _kernel_error is not None:
            return _kernel
        try:
            lib = ctypes.CDLL(str(_library_path()))
            fn = lib.dk_kd_forward
            fn.restype = ctypes.c_int64
            p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
            fn.argtypes = [p, p, p, i64, i64, ctypes.c_double, f32, f32, ctypes.c_int, f32, p, p, p]
            _kernel = fn
        except (OSError, RuntimeError, AttributeError, ImportError) as exc:
            _kernel_error = str(exc)
    return _kernel


def kernel_error() -> str | None:
    """Why the compiled kernel could not be loaded, or None if it was (or has not been tried yet)."""
    return _kernel_error


def label_error(y: torch.Tensor, c: int, name: str = "target") -> InputError:
    """The ValueError for class ids ``y`` (N,) outside ``[0, c)``: the range and the offending values."""
    bad = y[(y < 0) | (y >= c)]
    shown = ", ".join(str(v) for v in bad.unique()[:5].tolist())
    more = ", ..." if bad.unique().numel() > 5 else ""
    return InputError(f"{name} must hold class ids in [0, {c - 1}] (C = {c} classes), got "
                      f"{bad.numel()} value(s) outside that range ({shown}{more}) instead.")


# Below this many elements one thread is faster than handing row blocks to worker threads.
_PARALLEL_MIN_ELEMENTS = 1 << 16


def _workers(threads: int) -> ThreadPoolExecutor:
    """The worker threads for row blocks: at least ``threads``, and this process's own (a pool
    inherited through ``fork`` has no threads left in the child, so it is replaced)."""
    global _pool, _pool_key
    with _lock:
        if _pool is None or _pool_key[0] != os.getpid() or _pool_key[1] < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="darkknowledge-kd")
            _pool_key = (os.getpid(), threads)
        return _pool


def rows_compiled(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, *, temperature: float,
                  w_hard: float, w_soft: float, divergence: str, gscale: float):
    """Per-row loss (N,), scaled gradient (N, C) (float32) and the count of NaN rows, compiled.

    ``s`` and ``t`` are contiguous float32 CPU tensors (N, C); ``y`` is a contiguous int64
    tensor (N,) or None (then ``w_hard`` must be 0). Labels outside ``[0, C)`` are refused by
    the kernel before it reads through them: a ValueError naming ``target`` and the values.
    """
    fn = load_kernel()
    if fn is None:
        raise RuntimeError(f"the compiled fused kernel is not available: {_kernel_error}")
    n, c = s.shape
    threads = 1 if n * c < _PARALLEL_MIN_ELEMENTS else max(1, min(torch.get_num_threads(), n))
    rows = torch.empty(n, dtype=torch.float32)  # (N,)
    grad = torch.empty(n, c, dtype=torch.float32)  # (N, C)
    work = torch.empty(threads, 4, c, dtype=torch.float32)  # per-block row scratch
    args = (temperature, w_hard, w_soft, DIVERGENCES.index(divergence), gscale)
    sp, tp, yp = s.data_ptr(), t.data_ptr(), 0 if y is None else y.data_ptr()
    rp, gp, wp = rows.data_ptr(), grad.data_ptr(), work.data_ptr()
    if threads == 1:
        nan_rows = fn(sp, tp, yp, n, c, *args, rp, gp, wp)
        bad = nan_rows < 0
    else:
        step = -(-n // threads)  # rows per block
        f4 = 4  # bytes per float32
        futures = [
            _workers(threads).submit(
                fn, sp + lo * c * f4, tp + lo * c * f4, yp and yp + lo * 8, min(step, n - lo), c,
                *args, rp + lo * f4, gp + lo * c * f4, wp + k * 4 * c * f4)
            for k, lo in enumerate(range(0, n, step))]
        counts = [f.result() for f in futures]
        bad = any(k < 0 for k in counts)
        nan_rows = sum(counts)
    if bad:
        raise label_error(y, c)
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


# Series of e^r - 1 - r and of the JS generator below this |r| (the C kernel's DK_SERIES_R).
_SERIES_R = 1e-3


def _phi2(rho: torch.Tensor, T: float) -> torch.Tensor:
    """``T**2 * (e^r - 1 - r)`` with ``r = rho / T``: a series for small ``r``, no overflow of ``T**2``."""
    r = rho / T
    series = rho * rho * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r / 5040)))))
    direct = (torch.expm1(r) - r) * T * T
    return torch.where(r.abs() < _SERIES_R, series, direct)


def _psi2(rho: torch.Tensor, T: float) -> torch.Tensor:
    """``T**2 * psi(r)``, ``psi(r) = (e^r (r - h) - h) / 2``, ``h = log((1 + e^r) / 2)`` (JS generator)."""
    r = rho / T
    series = rho * rho * (0.125 + r * (1 / 16 + r * (1 / 64 + r * (1 / 384 + r * (1 / 2304 + r / 11520)))))
    h = torch.log1p(0.5 * torch.expm1(r))
    direct = 0.5 * (torch.exp(r) * (r - h) - h) * T * T
    return torch.where(r.abs() < _SERIES_R, series, direct)


def _soft_rows_stable(s: torch.Tensor, t: torch.Tensor, divergence: str, temperature: float):
    """``T**2 * D`` per row (n,) and ``T * dD/du`` (n, C), in float64, for finite rows at high T.

    With centred logits ``a = (t - mean t) / T``, ``b = (s - mean s) / T`` and
    ``A = mean(expm1(a))``, ``B = mean(expm1(b))``, the log-ratio of the student's to the teacher's
    probabilities is ``r = log q - log p = (b - a) + log1p(A) - log1p(B)``, with no ``log Z``
    cancelling another; ``rho = T * r`` stays of the size of the logits. Then, with every term
    non-negative (f-divergences; ``sum p e^r = sum q = 1``):

    - KL(p||q) = sum p (e^r - 1 - r);  T dKL/du = T (q - p) = p T expm1(r)
    - KL(q||p) = sum q (e^-r - 1 + r); T dKL/du_j = q_j (rho_j - T KL)
    - JS = sum p psi(r);               T dJS/du_j = q_j (k_j - sum q k), k = T (r - h(r)) / 2
    """
    s, t = s.double(), t.double()  # (n, C)
    T = temperature
    c = s.shape[-1]
    sbar = s - s.mean(-1, keepdim=True)  # (n, C) centred student logits
    tbar = t - t.mean(-1, keepdim=True)
    ea, eb = torch.expm1(tbar / T), torch.expm1(sbar / T)  # (n, C) e^a - 1, e^b - 1
    A, B = ea.mean(-1, keepdim=True), eb.mean(-1, keepdim=True)  # (n, 1)
    rho = (sbar - tbar) + T * (torch.log1p(A) - torch.log1p(B))  # (n, C) T (log q - log p)
    p = (1 + ea) / (c * (1 + A))  # (n, C) teacher probabilities at T
    q = (1 + eb) / (c * (1 + B))  # (n, C) student probabilities at T
    if divergence == "kl":
        d2 = (p * _phi2(rho, T)).sum(-1)
        g = p * (T * torch.expm1(rho / T))
    elif divergence == "reverse_kl":
        d2 = (q * _phi2(-rho, T)).sum(-1)
        g = q * (rho - d2[:, None] / T)
    else:
        d2 = (p * _psi2(rho, T)).sum(-1)
        k = 0.5 * (rho - T * torch.log1p(0.5 * torch.expm1(rho / T)))  # (n, C) T log(q/m) / 2
        g = q * (k - (q * k).sum(-1, keepdim=True))
    return d2, g


def _stable_rows(sc: torch.Tensor, tc: torch.Tensor, temperature: float) -> torch.Tensor:
    """Indices of the rows whose logit ranges are finite and both <= STABLE_RANGE * T."""
    smin, smax = torch.aminmax(sc, dim=-1)  # (n,)
    tmin, tmax = torch.aminmax(tc, dim=-1)
    width = torch.maximum(smax - smin, tmax - tmin)  # (n,) NaN / inf for non-finite rows
    keep = torch.isfinite(width) & (width.double() <= STABLE_RANGE * temperature)
    return keep.nonzero().squeeze(1)


def rows_eager(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, *, temperature: float,
               w_hard: float, w_soft: float, divergence: str, gscale: float, chunk_size: int):
    """Per-row loss (N,), scaled gradient (N, C) and the count of NaN rows, by torch operations.

    Works ``chunk_size`` rows at a time.

    Computes in ``s.dtype`` (float32 or float64), except rows at high temperature (both logit
    ranges <= ``STABLE_RANGE * T``), which take :func:`_soft_rows_stable` in float64; memory beyond
    the outputs is a few (chunk_size, C) temporaries. ``y`` must hold class ids in ``[0, C)``
    (``losses`` checks them before calling; ``gather`` would raise, not wrap, otherwise).
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
            idx = _stable_rows(sc, tc, temperature)
            if idx.numel():  # high temperature: these rows the cancellation-free way
                host = torch.device("cpu") if sc.device.type == "mps" else sc.device  # no float64 on MPS
                d2, g2 = _soft_rows_stable(sc[idx].to(host), tc[idx].to(host), divergence, temperature)
                d2, g2 = d2.to(sc.device), g2.to(sc.device)
                r[idx] = (w_soft * d2).to(r.dtype)
                g[idx] = (g2 * (w_soft * gscale)).to(g.dtype)
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
