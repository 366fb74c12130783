"""darkknowledge.info against SciPy (float64, 1e-12), autograd, and the laws of information theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, xlogy
from scipy.stats import entropy as scipy_entropy

from darkknowledge.info import cross_entropy, entropy, js_divergence, kl_divergence, self_information

BASES = [2, math.e, 10, 3.5]


def _random_pair(rng: np.random.Generator, shape=(7, 5), zero_frac=0.3):
    """Non-negative, unnormalised rows with zeros, where p > 0 implies q > 0 (finite KL)."""
    p = rng.random(shape) * (rng.random(shape) > zero_frac)
    p[:, 0] += 0.1  # no all-zero rows
    q = rng.random(shape) * (rng.random(shape) > zero_frac)
    q = np.where(p > 0, q + 0.05, q)
    return p, q


def _norm(a, axis=-1):
    return a / a.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------------
# Agreement with SciPy
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_entropy_matches_scipy(base, axis):
    p, _ = _random_pair(np.random.default_rng(0), shape=(6, 6))
    p[0] += 0.1  # axis 0 also needs no all-zero columns
    ours = entropy(p, base=base, axis=axis)
    ref = scipy_entropy(p, base=base, axis=axis)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("base", BASES)
def test_kl_matches_scipy_rel_entr_and_stats_entropy(base):
    p, q = _random_pair(np.random.default_rng(1))
    ours = kl_divergence(p, q, base=base)
    ref = rel_entr(_norm(p), _norm(q)).sum(axis=-1) / math.log(base)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, scipy_entropy(p, q, base=base, axis=-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("base", BASES)
def test_cross_entropy_matches_scipy(base):
    p, q = _random_pair(np.random.default_rng(2))
    ours = cross_entropy(p, q, base=base)
    ref = -xlogy(_norm(p), _norm(q)).sum(axis=-1) / math.log(base)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # H(p, q) = H(p) + KL(p || q), with SciPy for both terms
    ref2 = scipy_entropy(p, base=base, axis=-1) + scipy_entropy(p, q, base=base, axis=-1)
    np.testing.assert_allclose(ours, ref2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("axis", [0, -1])
def test_js_matches_scipy_jensenshannon_squared(base, axis):
    rng = np.random.default_rng(3)
    p = rng.random((6, 6)) * (rng.random((6, 6)) > 0.3) + np.eye(6)
    q = rng.random((6, 6)) * (rng.random((6, 6)) > 0.3) + np.eye(6)[::-1]
    ours = js_divergence(p, q, base=base, axis=axis)
    ref = jensenshannon(p, q, base=base, axis=axis) ** 2
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_self_information_matches_log():
    p = np.random.default_rng(4).random(10)
    np.testing.assert_allclose(self_information(p), -np.log2(p), rtol=1e-15)
    np.testing.assert_allclose(self_information(p, base=math.e), -np.log(p), rtol=1e-15)
    np.testing.assert_array_equal(self_information([0.0, 1.0]), [np.inf, 0.0])
    # normalize=True: surprisal of each outcome of a distribution given as weights
    np.testing.assert_allclose(self_information([1, 1, 2], normalize=True), [2.0, 2.0, 1.0], rtol=1e-15)


def test_agrees_with_torch_distributions():
    # An independent implementation: torch.distributions.Categorical (nats).
    p, q = _random_pair(np.random.default_rng(5), zero_frac=0.0)
    tp, tq = torch.tensor(_norm(p)), torch.tensor(_norm(q))
    cp, cq = torch.distributions.Categorical(probs=tp), torch.distributions.Categorical(probs=tq)
    torch.testing.assert_close(entropy(tp, base=math.e), cp.entropy(), rtol=0, atol=1e-12)
    kl = torch.distributions.kl_divergence(cp, cq)
    torch.testing.assert_close(kl_divergence(tp, tq, base=math.e), kl, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------------
def test_zero_conventions():
    assert entropy([1.0, 0.0, 0.0]) == 0.0
    assert cross_entropy([1.0, 0.0], [1.0, 0.0]) == 0.0  # 0 log 0 = 0
    assert cross_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf  # p > 0 where q = 0
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(1.0, abs=1e-15)
    assert js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0, abs=1e-15)  # finite, 1 bit


def test_normalize_like_scipy_and_strict_mode():
    assert entropy([1, 3, 2, 4]) == pytest.approx(scipy_entropy([1, 3, 2, 4], base=2), abs=1e-12)
    assert entropy([0.1, 0.3, 0.2, 0.4], normalize=False) == pytest.approx(1.8464393446710154, abs=1e-12)
    with pytest.raises(ValueError, match=r"p must sum to 1 along axis -1 \(within 1e-06\) when normalize=False, got a sum of 10"):
        entropy([1, 3, 2, 4], normalize=False)
    with pytest.raises(ValueError, match=r"q must sum to 1 along axis -1"):
        kl_divergence([0.5, 0.5], [0.5, 0.6], normalize=False)
    # float32 gets a float32 tolerance
    p32 = np.full(1000, 1e-3, dtype=np.float32)
    assert entropy(p32, normalize=False) == pytest.approx(math.log2(1000), rel=1e-5)


def test_return_kinds_and_dtypes():
    assert type(entropy([0.5, 0.5])) is float
    batch = entropy([[0.5, 0.5], [1.0, 0.0]])
    assert isinstance(batch, np.ndarray) and batch.shape == (2,)
    np_scalar = entropy(np.array([0.5, 0.5]))
    assert isinstance(np_scalar, np.floating) and np_scalar == 1.0
    assert entropy(np.ones((3, 4), dtype=np.float32)).dtype == np.float32
    assert entropy(np.ones((3, 4), dtype=np.int64)).dtype == np.float64
    t = entropy(torch.ones(3, 4, dtype=torch.float16))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float16 and t.shape == (3,)
    torch.testing.assert_close(t.float(), torch.full((3,), 2.0))
    assert entropy(torch.ones(2, 4, dtype=torch.int64)).dtype == torch.get_default_dtype()
    # mixed kinds: a tensor wins over an array, an array over a list
    assert isinstance(kl_divergence(np.array([0.5, 0.5]), torch.tensor([0.9, 0.1])), torch.Tensor)
    assert isinstance(kl_divergence([0.5, 0.5], np.array([0.9, 0.1])), np.floating)
    assert self_information(0.25) == 2.0


def test_torch_gradcheck_and_backward():
    g = torch.Generator().manual_seed(0)
    p = (torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    q = (torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    for fn in (cross_entropy, kl_divergence, js_divergence):
        assert torch.autograd.gradcheck(lambda a, b: fn(a, b, base=math.e), (p, q))
    assert torch.autograd.gradcheck(lambda a: entropy(a), (p,))
    assert torch.autograd.gradcheck(lambda a: self_information(a / 2), (p,))
    # analytic gradient of H(p) in nats for a normalised p, without normalisation: -(log p + 1)
    pn = (p.detach() / p.detach().sum(-1, keepdim=True)).requires_grad_()
    entropy(pn, base=math.e, normalize=False).sum().backward()
    torch.testing.assert_close(pn.grad, -(torch.log(pn.detach()) + 1))


def test_gradients_stay_finite_with_zero_probabilities():
    p = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.0, 0.2, 0.8], [0.7, 0.3, 0.0]], dtype=torch.float64, requires_grad=True)
    for fn in (cross_entropy, kl_divergence, js_divergence):
        out = fn(p, q)
        assert torch.isfinite(out).all()
        p.grad = q.grad = None
        out.sum().backward()
        assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()
    # gradient of KL w.r.t. q where both are positive is -p/q (nats), independent of masked terms
    q.grad = None
    kl_divergence(p, q, base=math.e, normalize=False).sum().backward()
    assert q.grad[0, 1].item() == pytest.approx(-0.5 / 0.2, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------
_probs = arrays(np.float64, st.integers(2, 8), elements=st.floats(0.0, 1.0, allow_nan=False)).filter(
    lambda a: a.sum() > 1e-3
)


@settings(max_examples=150, deadline=None)
@given(_probs, st.data())
def test_kl_nonnegative_and_zero_iff_equal(p, data):
    q = data.draw(arrays(np.float64, p.shape, elements=st.floats(0.0, 1.0)).filter(lambda a: a.sum() > 1e-3))
    kl = kl_divergence(p, q)
    assert kl >= -1e-12
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    if kl < 1e-13:  # KL = 0 only when the normalised distributions coincide
        np.testing.assert_allclose(_norm(p), _norm(q), atol=1e-5)


@settings(max_examples=150, deadline=None)
@given(_probs, st.data())
def test_gibbs_inequality(p, data):
    q = data.draw(arrays(np.float64, p.shape, elements=st.floats(0.0, 1.0)).filter(lambda a: a.sum() > 1e-3))
    assert cross_entropy(p, q) >= entropy(p) - 1e-12


@settings(max_examples=150, deadline=None)
@given(_probs, st.data())
def test_js_symmetric_and_at_most_one_bit(p, data):
    q = data.draw(arrays(np.float64, p.shape, elements=st.floats(0.0, 1.0)).filter(lambda a: a.sum() > 1e-3))
    js = js_divergence(p, q)
    assert js == pytest.approx(js_divergence(q, p), abs=1e-12)
    assert -1e-12 <= js <= 1.0 + 1e-12
    assert js_divergence(p, q, base=math.e) <= math.log(2) + 1e-12


@settings(max_examples=100, deadline=None)
@given(_probs)
def test_entropy_bounds(p):
    h = entropy(p)
    assert -1e-12 <= h <= math.log2(len(p)) + 1e-12


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn", [entropy, lambda p: kl_divergence(p, [0.5, 0.5]), lambda p: cross_entropy(p, [0.5, 0.5])]
)
def test_bad_p(fn):
    with pytest.raises(ValueError, match=r"p must be non-negative, got a minimum of -0.5 instead"):
        fn([-0.5, 1.5])
    with pytest.raises(ValueError, match=r"p must not contain NaN"):
        fn([math.nan, 1.0])
    with pytest.raises(ValueError, match=r"p must contain finite probabilities, got an infinite entry"):
        fn([math.inf, 1.0])
    with pytest.raises(ValueError, match=r"p must have a positive sum along axis -1 to be normalised"):
        fn([0.0, 0.0])


def test_bad_q_and_shapes():
    with pytest.raises(ValueError, match=r"q must be non-negative"):
        kl_divergence([0.5, 0.5], [-0.1, 1.1])
    with pytest.raises(ValueError, match=r"q must have the same shape as p \(2,\), got \(3,\) instead"):
        js_divergence([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"p must be non-empty, got shape \(0,\) instead"):
        entropy([])
    with pytest.raises(ValueError, match=r"p must have at least one dimension"):
        entropy(0.5)
    with pytest.raises(ValueError, match=r"axis must be in \[-2, 1\] for p of shape \(2, 2\), got 2 instead"):
        entropy([[0.5, 0.5], [0.5, 0.5]], axis=2)
    with pytest.raises(TypeError, match=r"axis must be an integer, got float instead"):
        entropy([0.5, 0.5], axis=1.0)


def test_bad_base_normalize_and_types():
    with pytest.raises(ValueError, match=r"base must be a finite number > 0 other than 1, got 1 instead"):
        entropy([0.5, 0.5], base=1)
    with pytest.raises(ValueError, match=r"base must be a finite number > 0, got -2 instead"):
        entropy([0.5, 0.5], base=-2)
    with pytest.raises(TypeError, match=r"base must be a number, got str instead"):
        entropy([0.5, 0.5], base="e")
    with pytest.raises(TypeError, match=r"normalize must be True or False, got 1 instead"):
        kl_divergence([0.5, 0.5], [0.5, 0.5], normalize=1)
    with pytest.raises(TypeError, match=r"p must be a \(nested, rectangular\) list of numbers"):
        entropy(["a", "b"])
    with pytest.raises(TypeError, match=r"p must be a list of numbers, a NumPy array or a torch tensor, got dict"):
        entropy({"a": 1})
    with pytest.raises(TypeError, match=r"q must be a real tensor, got dtype torch.complex64"):
        kl_divergence(torch.ones(2), torch.ones(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"p must be an array of real numbers, got dtype <U1"):
        entropy(np.array(["a"]))
    with pytest.raises(ValueError, match=r"p must be probabilities in \[0, 1\], got a maximum of 2.0"):
        self_information([0.5, 2.0])
