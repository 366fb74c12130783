"""darkknowledge.functional against torch.nn.functional / SciPy / scikit-learn in float64, autograd and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import hinge_loss as sk_hinge
from sklearn.metrics import log_loss as sk_log_loss

from darkknowledge.functional import (
    binary_cross_entropy,
    cross_entropy,
    hinge_loss,
    log_softmax,
    mae,
    mse,
    nll_loss,
    softmax,
)


def _randn(*shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


# --------------------------------------------------------------------------------------------
# softmax / log_softmax
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.1, 1.0, 2.0, 20.0])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch_and_scipy(temperature, dim):
    x = _randn(4, 5, 3) * 3
    torch.testing.assert_close(softmax(x, temperature=temperature, dim=dim), torch.softmax(x / temperature, dim=dim),
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(log_softmax(x, temperature=temperature, dim=dim),
                               F.log_softmax(x / temperature, dim=dim), rtol=0, atol=1e-12)
    xn = x.numpy()
    np.testing.assert_allclose(softmax(xn, temperature=temperature, dim=dim),
                               scipy.special.softmax(xn / temperature, axis=dim), rtol=0, atol=1e-15)
    np.testing.assert_allclose(log_softmax(xn, temperature=temperature, dim=dim),
                               scipy.special.log_softmax(xn / temperature, axis=dim), rtol=0, atol=1e-12)


def test_softmax_kinds_and_dtypes():
    assert isinstance(softmax([1.0, 2.0]), np.ndarray)
    assert softmax(np.array([1, 2, 3], dtype=np.float32)).dtype == np.float32
    assert softmax(np.array([1, 2, 3])).dtype == np.float64
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        out = softmax(torch.tensor([1.0, 2.0, 3.0], dtype=dtype))
        assert out.dtype == dtype
        ref = torch.softmax(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), dim=-1)
        torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-3)


def test_softmax_gradcheck():
    x = _randn(3, 4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: softmax(z, temperature=1.7), (x,))
    assert torch.autograd.gradcheck(lambda z: log_softmax(z, temperature=0.6, dim=0), (x,))


def test_extreme_logits_are_finite_with_finite_gradients():
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=torch.float64, requires_grad=True)
    s, ls = softmax(x), log_softmax(x)
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64))
    assert torch.isfinite(ls).all()
    assert ls[0, 1].item() == -2e4
    (s[:, 0].sum() + ls.sum()).backward()
    assert torch.isfinite(x.grad).all()
    # float16 logits of 12: exp(12) overflows float16 (max 65504); computed in float32, still finite
    h = torch.tensor([12.0, 0.0, -12.0], dtype=torch.float16, requires_grad=True)
    sh = softmax(h, temperature=0.5)
    assert sh.dtype == torch.float16 and torch.isfinite(sh).all()
    ref = torch.softmax(torch.tensor([12.0, 0.0, -12.0], dtype=torch.float64) / 0.5, dim=-1)
    torch.testing.assert_close(sh.double(), ref, rtol=1e-3, atol=1e-4)
    lh = log_softmax(h)
    assert torch.isfinite(lh).all()
    lh.sum().backward()
    assert torch.isfinite(h.grad).all()
    ce = cross_entropy(torch.full((2, 3), 12.0, dtype=torch.float16), [0, 1])
    assert ce.dtype == torch.float16 and abs(ce.item() - math.log(3)) < 1e-3


def test_tiny_temperature_overflow_still_gives_one_hot():
    # 2 / 1e-308 overflows to inf: the maximum is then subtracted before dividing (exact)
    np.testing.assert_array_equal(softmax([1.0, 2.0], temperature=1e-308), [0.0, 1.0])
    np.testing.assert_allclose(log_softmax([1.0, 2.0], temperature=1e-308), [-1e308, 0.0], rtol=1e-15)


def test_masked_classes():
    x = torch.tensor([[1.0, -math.inf, 2.0, -math.inf]], dtype=torch.float64, requires_grad=True)
    s = softmax(x)
    torch.testing.assert_close(s[0, [0, 2]], torch.softmax(torch.tensor([1.0, 2.0], dtype=torch.float64), -1))
    assert s[0, 1].item() == 0.0 and s[0, 3].item() == 0.0
    assert log_softmax(x)[0, 1].item() == -math.inf
    loss = cross_entropy(x, torch.tensor([[0.5, 0.0, 0.5, 0.0]], dtype=torch.float64))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 1].item() == 0.0


def test_softmax_errors():
    with pytest.raises(ValueError, match=r"logits must have at least one entry > -inf along dim -1; a row is all -inf"):
        softmax(torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]))
    with pytest.raises(ValueError, match=r"logits must have at least one entry > -inf along dim 0"):
        log_softmax(np.array([-np.inf, -np.inf]), dim=0)
    with pytest.raises(ValueError, match=r"logits must not contain NaN"):
        softmax([1.0, math.nan])
    with pytest.raises(ValueError, match=r"logits must not contain \+inf"):
        log_softmax([1.0, math.inf])
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got .* instead"):
            softmax([1.0, 2.0], temperature=bad)
    with pytest.raises(TypeError, match=r"temperature must be a number, got str instead"):
        softmax([1.0, 2.0], temperature="2")
    with pytest.raises(ValueError, match=r"dim must be in \[-1, 0\] for logits of shape \(2,\), got 1 instead"):
        softmax([1.0, 2.0], dim=1)
    with pytest.raises(ValueError, match=r"logits must be non-empty with at least one dimension, got shape \(\)"):
        softmax(1.0)
    with pytest.raises(TypeError, match=r"dim must be an integer, got float instead"):
        softmax([1.0, 2.0], dim=0.0)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(-50, 50)), st.floats(-1e3, 1e3),
       st.floats(0.05, 20))
def test_softmax_shift_invariant(z, c, t):
    np.testing.assert_allclose(softmax(z + c, temperature=t), softmax(z, temperature=t), atol=1e-9)
    assert softmax(z, temperature=t).sum() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(2, 8), elements=st.floats(-10, 10), unique=True))
def test_temperature_limits(z):
    c = len(z)
    np.testing.assert_allclose(softmax(z, temperature=1e7), np.full(c, 1 / c), atol=1e-5)  # T -> inf: uniform
    gap = np.sort(z)[-1] - np.sort(z)[-2]
    if gap > 1e-3:  # T -> 0: one-hot on the largest logit
        np.testing.assert_allclose(softmax(z, temperature=gap / 100), np.eye(c)[np.argmax(z)], atol=1e-40)


# --------------------------------------------------------------------------------------------
# cross_entropy / nll_loss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_cross_entropy_matches_torch(reduction, eps):
    z = _randn(6, 4) * 4
    ids = torch.tensor([0, 3, 1, 2, 3, 0])
    soft = torch.softmax(_randn(6, 4, seed=1), dim=1)
    for target in (ids, F.one_hot(ids, 4).double(), soft):
        ours = cross_entropy(z, target, label_smoothing=eps, reduction=reduction)
        ref = F.cross_entropy(z, target, label_smoothing=eps, reduction=reduction)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    # NumPy in, NumPy out; integer one-hot lists are probabilities too
    np.testing.assert_allclose(cross_entropy(z.numpy(), ids.numpy(), label_smoothing=eps, reduction=reduction),
                               F.cross_entropy(z, ids, label_smoothing=eps, reduction=reduction).numpy(), atol=1e-12)
    np.testing.assert_allclose(cross_entropy(z.numpy(), F.one_hot(ids, 4).tolist(), label_smoothing=eps),
                               F.cross_entropy(z, ids, label_smoothing=eps).numpy(), atol=1e-12)


def test_cross_entropy_gradcheck_and_gradient():
    z = _randn(5, 3, requires_grad=True)
    ids = torch.tensor([0, 2, 1, 1, 0])
    soft = torch.softmax(_randn(5, 3, seed=2), dim=1)
    assert torch.autograd.gradcheck(lambda a: cross_entropy(a, ids, label_smoothing=0.2), (z,))
    assert torch.autograd.gradcheck(lambda a: cross_entropy(a, soft, reduction="sum"), (z,))
    cross_entropy(z, soft, reduction="sum").backward()
    torch.testing.assert_close(z.grad, torch.softmax(z.detach(), 1) - soft)  # s - y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_torch(reduction):
    lp = F.log_softmax(_randn(7, 5, requires_grad=True), dim=1)
    y = torch.tensor([4, 0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(nll_loss(lp, y, reduction=reduction), F.nll_loss(lp, y, reduction=reduction),
                               rtol=0, atol=1e-12)
    leaf = lp.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: nll_loss(a, y), (leaf,))


def test_cross_entropy_and_nll_errors():
    z = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"target must contain class ids in \[0, 3\], got 4 instead"):
        cross_entropy(z, [0, 4, 1])
    with pytest.raises(ValueError, match=r"target must contain class ids in \[0, 3\], got -1 instead"):
        nll_loss(F.log_softmax(z, 1), [0, -1, 1])
    with pytest.raises(ValueError, match=r"target must have shape \(3,\) to match N = 3, got \(2,\) instead"):
        cross_entropy(z, [0, 1])
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(3,\) of class ids or \(N, C\) = \(3, 4\)"):
        cross_entropy(z, torch.ones(3, 3) / 3)
    with pytest.raises(TypeError, match=r"target must be integer class ids, got dtype torch.float32 instead"):
        cross_entropy(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target must sum to 1 along axis 1"):
        cross_entropy(z, torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"target must be non-negative"):
        cross_entropy(z, torch.tensor([[2.0, -1.0, 0.0, 0.0]] * 3))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\) with N, C >= 1, got \(4,\) instead"):
        cross_entropy(torch.zeros(4), [0])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0.0, 1.0\], got 1.5 instead"):
        cross_entropy(z, [0, 1, 2], label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none'; got 'avg' instead"):
        cross_entropy(z, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match=r"log_probs must contain log-probabilities \(<= 0, not NaN\)"):
        nll_loss(torch.ones(3, 4), [0, 1, 2])
    with pytest.raises(ValueError, match=r"logits must have at least one entry > -inf along dim 1"):
        cross_entropy(torch.full((1, 2), -math.inf), [0])


# --------------------------------------------------------------------------------------------
# Binary cross-entropy, MAE, MSE
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_torch(reduction):
    x = _randn(4, 3) * 10
    y = torch.rand(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(binary_cross_entropy(x, y, reduction=reduction),
                               F.binary_cross_entropy_with_logits(x, y, reduction=reduction), rtol=0, atol=1e-12)
    p = torch.sigmoid(_randn(4, 3, seed=3))
    torch.testing.assert_close(binary_cross_entropy(p, y, from_logits=False, reduction=reduction),
                               F.binary_cross_entropy(p, y, reduction=reduction), rtol=0, atol=1e-12)


def test_bce_against_sklearn_extremes_and_gradcheck():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.6, 0.3, 0.99])
    assert binary_cross_entropy(p, y.astype(float), from_logits=False) == pytest.approx(sk_log_loss(y, p), abs=1e-12)
    logits = np.log(p / (1 - p))
    assert binary_cross_entropy(logits, y.astype(float)) == pytest.approx(sk_log_loss(y, p), abs=1e-12)
    # extreme logits: exact and finite
    x = torch.tensor([1e4, -1e4, 800.0], dtype=torch.float64, requires_grad=True)
    out = binary_cross_entropy(x, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), reduction="none")
    torch.testing.assert_close(out, torch.tensor([1e4, 1e4, 0.0], dtype=torch.float64))
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64))  # sigma(x) - y
    # no clipping: p = 0 on a positive label is an infinite loss
    assert binary_cross_entropy([0.0, 0.5], [1.0, 1.0], from_logits=False, reduction="none")[0] == np.inf
    assert binary_cross_entropy([0.0, 1.0], [0.0, 1.0], from_logits=False) == 0.0
    xl = _randn(6, requires_grad=True)
    yt = torch.rand(6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: binary_cross_entropy(a, yt), (xl,))
    pl = torch.sigmoid(_randn(6, seed=5)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: binary_cross_entropy(a, yt, from_logits=False), (pl,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mae_mse_match_torch(reduction):
    a, b = _randn(3, 4, requires_grad=True), _randn(3, 4, seed=1)
    torch.testing.assert_close(mae(a, b, reduction=reduction), F.l1_loss(a, b, reduction=reduction))
    torch.testing.assert_close(mse(a, b, reduction=reduction), F.mse_loss(a, b, reduction=reduction))
    assert torch.autograd.gradcheck(lambda t: mse(t, b), (a,))
    assert torch.autograd.gradcheck(lambda t: mae(t, b), (a,))
    np.testing.assert_allclose(mse(a.detach().numpy(), b.numpy(), reduction=reduction),
                               F.mse_loss(a, b, reduction=reduction).detach().numpy())


def test_regression_and_bce_errors():
    with pytest.raises(ValueError, match=r"target must have the same shape as input \(3,\), got \(2,\) instead"):
        mse([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"target must have the same shape as input \(2, 1\), got \(2,\)"):
        mae(torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match=r"input must be non-empty"):
        mse([], [])
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        mae([1.0], [1.0], reduction="max")
    with pytest.raises(ValueError, match=r"target must contain values in \[0, 1\]"):
        binary_cross_entropy([0.0], [2.0])
    with pytest.raises(ValueError, match=r"input must contain finite logits"):
        binary_cross_entropy([math.inf], [1.0])
    with pytest.raises(ValueError, match=r"input must contain probabilities in \[0, 1\] when from_logits=False"):
        binary_cross_entropy([1.5], [1.0], from_logits=False)
    with pytest.raises(TypeError, match=r"from_logits must be True or False, got 'no' instead"):
        binary_cross_entropy([0.5], [1.0], from_logits="no")


# --------------------------------------------------------------------------------------------
# Hinge
# --------------------------------------------------------------------------------------------
def test_binary_hinge_matches_sklearn():
    s = np.array([2.0, -0.5, 0.3, -3.0, 0.9])
    y = np.array([1, 1, -1, -1, 1])
    assert hinge_loss(s, y) == pytest.approx(sk_hinge(y, s), abs=1e-15)
    np.testing.assert_allclose(hinge_loss(s, y, reduction="none"), np.maximum(0, 1 - y * s))
    assert hinge_loss(s, y, margin=2.0, reduction="sum") == pytest.approx(np.maximum(0, 2 - y * s).sum())


def test_multiclass_hinge_crammer_singer_and_weston_watkins():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(20, 4)) * 2
    y = rng.integers(0, 4, size=20)
    assert hinge_loss(s, y) == pytest.approx(sk_hinge(y, s, labels=[0, 1, 2, 3]), abs=1e-12)  # Crammer-Singer
    st_, yt = torch.tensor(s), torch.tensor(y)
    ww = hinge_loss(st_, yt, multiclass="weston_watkins")
    torch.testing.assert_close(ww, 4 * F.multi_margin_loss(st_, yt))  # torch divides by C
    torch.testing.assert_close(hinge_loss(st_, yt, multiclass="weston_watkins", margin=0.5, reduction="none"),
                               4 * F.multi_margin_loss(st_, yt, margin=0.5, reduction="none"))
    x = torch.tensor(s[:5] + 0.01 * np.arange(4), requires_grad=True)  # away from the kinks
    assert torch.autograd.gradcheck(lambda a: hinge_loss(a, yt[:5]), (x,))
    assert torch.autograd.gradcheck(lambda a: hinge_loss(a, yt[:5], multiclass="weston_watkins"), (x,))


def test_hinge_errors():
    with pytest.raises(ValueError, match=r"target must contain only -1 and \+1 labels for binary \(1-D\) scores"):
        hinge_loss([0.5, 0.2], [0, 1])
    with pytest.raises(ValueError, match=r"target must have the same shape as scores \(2,\), got \(3,\) instead"):
        hinge_loss([0.5, 0.2], [1, 1, -1])
    with pytest.raises(ValueError, match=r"target must contain class ids in \[0, 2\], got 3 instead"):
        hinge_loss(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match=r"multiclass must be one of 'crammer_singer', 'weston_watkins'; got 'ovr'"):
        hinge_loss(np.zeros((2, 3)), [0, 1], multiclass="ovr")
    with pytest.raises(ValueError, match=r"scores must have C >= 2 classes"):
        hinge_loss(np.zeros((2, 1)), [0, 0])
    with pytest.raises(ValueError, match=r"margin must be a finite number > 0, got 0 instead"):
        hinge_loss([0.5], [1], margin=0)
    with pytest.raises(ValueError, match=r"scores must be finite"):
        hinge_loss([math.nan], [1])
    with pytest.raises(ValueError, match=r"scores must have shape \(N, C\) with N, C >= 1, got \(1, 2, 2\)"):
        hinge_loss(np.zeros((1, 2, 2)), [0])
