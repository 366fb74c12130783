"""The distillation loss across temperatures, against references written from the formula.

The reference is the definition evaluated in arbitrary precision (mpmath, with enough digits that
``T**2 * D`` loses nothing to cancellation at any T):

    p = softmax(t / T), q = softmax(s / T)
    KL(p||q) = sum p log(p / q); KL(q||p); JS = (KL(p||m) + KL(q||m)) / 2, m = (p + q) / 2
    loss = alpha * CE(s, y) + (1 - alpha) * T^2 * D,   d loss / d s from the hand-derived gradients

and, as T -> inf, Hinton et al. (2015, section 2.1)'s logit matching, derived by expanding
log softmax(x / T) = xbar / T - log C - |xbar|^2 / (2 C T^2) + O(T^-3) (xbar = x - mean x):

    T^2 KL(p||q) -> sum_j (sbar_j - tbar_j)^2 / (2 C),  T (q - p) -> (sbar - tbar) / C
    T^2 KL(q||p) -> the same;  T^2 JS -> sum_j (sbar_j - tbar_j)^2 / (8 C), gradient (sbar - tbar) / (4 C).
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pytest
import torch

from darkknowledge import _fused_kd
from darkknowledge.errors import DarkKnowledgeError
from darkknowledge.losses import TEMPERATURE_RANGE, DistillationLoss, TrainingDistillationLoss, distillation_loss

mpmath = pytest.importorskip("mpmath")

DIVS = ["kl", "reverse_kl", "js"]
TEMPERATURES = [1e-6, 1e-3, 0.1, 1.0, 4.0, 10.0, 30.0, 1e3, 1e4, 1e5, 1e6, 1e12, 1e30]
N, C = 4, 10


def inputs():
    g = torch.Generator().manual_seed(7)
    s = 3 * torch.randn(N, C, generator=g)  # (N, C) float32 student logits
    t = 3 * torch.randn(N, C, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    return s, t, y


@functools.lru_cache(maxsize=None)
def reference(divergence: str, T: float, alpha: float):
    """Per-row loss (N,) and gradient of the summed loss (N, C), float64, from the formula in mpmath."""
    s, t, y = inputs()
    mp = mpmath.mp.clone()
    mp.dps = int(40 + 2 * abs(math.log10(T)))
    Tm = mp.mpf(T)

    def softmax(x, temp):
        m = max(x)
        e = [mp.exp((v - m) / temp) for v in x]
        z = mp.fsum(e)
        return [v / z for v in e]

    losses, grads = [], []
    for i in range(N):
        si = [mp.mpf(float(v)) for v in s[i]]
        ti = [mp.mpf(float(v)) for v in t[i]]
        p, q = softmax(ti, Tm), softmax(si, Tm)
        if divergence == "kl":
            d = mp.fsum(a * mp.log(a / b) for a, b in zip(p, q))
            g = [b - a for a, b in zip(p, q)]  # dKL(p||q)/du = q - p
        elif divergence == "reverse_kl":
            d = mp.fsum(b * mp.log(b / a) for a, b in zip(p, q))
            g = [b * (mp.log(b / a) - d) for a, b in zip(p, q)]
        else:
            m = [(a + b) / 2 for a, b in zip(p, q)]
            d = (mp.fsum(a * mp.log(a / c) for a, c in zip(p, m)) + mp.fsum(b * mp.log(b / c) for b, c in zip(q, m))) / 2
            h = [mp.log(b / c) / 2 for b, c in zip(q, m)]
            qh = mp.fsum(b * k for b, k in zip(q, h))
            g = [b * (k - qh) for b, k in zip(q, h)]
        loss = (1 - alpha) * Tm * Tm * d
        grad = [(1 - alpha) * Tm * v for v in g]  # T^2 dD/ds = T dD/du
        if alpha:
            q1 = softmax(si, mp.mpf(1))
            yi = int(y[i])
            loss += alpha * -mp.log(q1[yi])
            grad = [gj + alpha * (q1[j] - (1 if j == yi else 0)) for j, gj in enumerate(grad)]
        losses.append(float(loss))
        grads.append([float(v) for v in grad])
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(grads, dtype=torch.float64)


def ours(divergence, T, alpha, backend, dtype=torch.float32):
    s, t, y = inputs()
    x = s.to(dtype).requires_grad_(True)
    v = distillation_loss(x, t.to(dtype), y if alpha else None, temperature=T, alpha=alpha,
                          divergence=divergence, reduction="none", backend=backend)
    v.sum().backward()
    return v.detach().double(), x.grad.double()


def check(v, g, rv, rg, rtol, T):
    # values: relative (1e-30 absolute for the ~e^(-gap/T) losses of rows whose teacher and student
    # agree on the argmax at low T); gradients: relative to their natural scale, the largest entry
    # or, where the whole gradient vanishes (one-hot q at low T), 1e-6 T (T dD/du with |dD/du| <= 1)
    torch.testing.assert_close(v, rv, rtol=rtol, atol=1e-30)
    scale = max(rg.abs().max().item(), 1e-6 * T)
    torch.testing.assert_close(g / scale, rg / scale, rtol=0, atol=rtol)


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("backend", ["compiled", "eager"])
def test_soft_term_matches_the_formula_at_every_temperature(backend, divergence, T):
    if backend == "compiled" and _fused_kd.load_kernel() is None:
        pytest.skip("no compiled kernel")
    v, g = ours(divergence, T, 0.0, backend)
    rv, rg = reference(divergence, T, 0.0)
    check(v, g, rv, rg, rtol=2e-5, T=T)
    assert (v >= 0).all()  # a divergence: never the negative losses of the old high-T path


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("divergence", DIVS)
def test_float64_matches_the_formula_at_every_temperature(divergence, T):
    v, g = ours(divergence, T, 0.0, "eager", dtype=torch.float64)
    rv, rg = reference(divergence, T, 0.0)
    check(v, g, rv, rg, rtol=1e-11, T=T)


@pytest.mark.parametrize("T", [1e-3, 1.0, 1e4, 1e6])
@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("backend", ["compiled", "eager"])
def test_with_the_hard_term(backend, divergence, T):
    if backend == "compiled" and _fused_kd.load_kernel() is None:
        pytest.skip("no compiled kernel")
    v, g = ours(divergence, T, 0.1, backend)
    rv, rg = reference(divergence, T, 0.1)
    check(v, g, rv, rg, rtol=2e-5, T=T)


@pytest.mark.parametrize("T", [1e4, 1e6, 1e30])
@pytest.mark.parametrize("backend", ["compiled", "eager"])
def test_training_loss_at_high_temperature(backend, T):
    if backend == "compiled" and _fused_kd.load_kernel() is None:
        pytest.skip("no compiled kernel")
    s, t, y = inputs()
    rv, rg = reference("kl", T, 0.1)
    out = TrainingDistillationLoss(temperature=T, alpha=0.1, backend=backend).value_and_grad(s, t, y)
    torch.testing.assert_close(out.loss.double(), rv.mean(), rtol=2e-5, atol=0)
    torch.testing.assert_close(out.grad.double(), rg / N, rtol=0, atol=2e-5 * rg.abs().max().item() / N)


@pytest.mark.parametrize("divergence", DIVS)
@pytest.mark.parametrize("backend", ["compiled", "eager", "float64"])
def test_high_temperature_limit_is_hinton_logit_matching(backend, divergence):
    if backend == "compiled" and _fused_kd.load_kernel() is None:
        pytest.skip("no compiled kernel")
    s, t, _ = inputs()
    s, t = s.double(), t.double()
    delta = (s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))  # (N, C)
    k = 8 if divergence == "js" else 2  # T^2 D -> |delta|^2 / (k C)
    limit_v = (delta**2).sum(1) / (k * C)
    limit_g = delta * (2 / (k * C))  # d/ds of the limit
    dtype = torch.float64 if backend == "float64" else torch.float32
    v, g = ours(divergence, 1e12, 0.0, "eager" if backend == "float64" else backend, dtype)
    tol = 1e-11 if backend == "float64" else 1e-6
    torch.testing.assert_close(v, limit_v, rtol=tol, atol=0)
    torch.testing.assert_close(g, limit_g, rtol=0, atol=tol * limit_g.abs().max().item())


@pytest.mark.parametrize("bad", [1e-200, 5e-324, 9.9e-7, 1.1e30, 1e300])
def test_temperatures_outside_the_range_are_refused(bad):
    s, t, y = inputs()
    lo, hi = TEMPERATURE_RANGE
    assert (lo, hi) == (1e-6, 1e30)
    match = r"temperature must be in \[1e-06, 1e\+30\], got " + re.escape(repr(bad)) + " instead"
    with pytest.raises(ValueError, match=match) as err:
        distillation_loss(s, t, y, temperature=bad)
    assert isinstance(err.value, DarkKnowledgeError)  # bad input: the CLI's one-line error, exit 2
    with pytest.raises(ValueError, match=match):
        DistillationLoss(temperature=bad)
    with pytest.raises(ValueError, match=match):
        TrainingDistillationLoss(temperature=bad)


@pytest.mark.parametrize("backend", ["compiled", "eager"])
def test_masked_classes_at_high_temperature_stay_finite(backend):
    """A padded vocabulary (-inf in both) takes the max-subtracted path at any T: still finite."""
    if backend == "compiled" and _fused_kd.load_kernel() is None:
        pytest.skip("no compiled kernel")
    s, t, y = inputs()
    s[:, -2:] = t[:, -2:] = -math.inf
    x = s.clone().requires_grad_(True)
    v = distillation_loss(x, t, y, temperature=1e3, backend=backend)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(x.grad).all() and (x.grad[:, -2:] == 0).all()


def test_the_stable_rows_switch_where_the_documented_range_says():
    s, t, _ = inputs()
    width = torch.maximum(s.amax(1) - s.amin(1), t.amax(1) - t.amin(1))  # (N,)
    T = float(width.median())
    idx = _fused_kd._stable_rows(s, t, T)
    assert idx.tolist() == np.flatnonzero((width <= _fused_kd.STABLE_RANGE * T).numpy()).tolist()
