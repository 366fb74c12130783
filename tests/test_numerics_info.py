"""Extreme inputs to the information theory and the tempered softmax: right numbers or a clear error.

References: SciPy (``scipy.stats.entropy``, ``scipy.special.rel_entr``, ``jensenshannon``) on the
same distributions at a representable scale (normalisation makes them scale-free), analytic
values, and the T -> 0 limit of softmax (one-hot on the largest logit, shared between ties).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import entropy as sp_entropy

from darkknowledge.cli import main
from darkknowledge.functional import log_softmax, softmax
from darkknowledge.info import cross_entropy, entropy, js_divergence, kl_divergence, self_information

HUGE = [1e308, 1e308]  # their sum overflows float64


def test_entropy_of_huge_weights_is_one_bit():
    assert entropy(HUGE) == 1.0
    assert entropy([1e308, 1e308, 1e308, 1e308]) == 2.0
    assert math.isclose(entropy([1e308, 3e307]), sp_entropy([10, 3], base=2), rel_tol=1e-14)
    assert math.isclose(entropy([1.7e308, 1e308, 1e300]), sp_entropy([1.7, 1.0, 1e-8], base=2), rel_tol=1e-12)


@pytest.mark.parametrize("scale", [1e308, 1e-310, 5e-324 * 3])  # overflowing sum; subnormal entries
def test_every_function_is_scale_free(scale):
    p, q = np.array([1.0, 3.0]), np.array([2.0, 1.0])
    pn, qn = p / p.sum(), q / q.sum()
    ps, qs = list(p / 3 * scale), list(q / 3 * scale)
    assert math.isclose(entropy(ps), sp_entropy(pn, base=2), rel_tol=1e-12)
    assert math.isclose(kl_divergence(ps, qs), rel_entr(pn, qn).sum() / math.log(2), rel_tol=1e-12)
    assert math.isclose(cross_entropy(ps, qs), -(pn * np.log2(qn)).sum(), rel_tol=1e-12)
    assert math.isclose(js_divergence(ps, qs), jensenshannon(pn, qn, base=2) ** 2, rel_tol=1e-10)
    np.testing.assert_allclose(self_information(ps, normalize=True), -np.log2(pn), rtol=1e-12)


def test_kl_of_huge_weights_is_not_zero():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 log2(2) + 1/2 log2(2/3)
    expect = 0.5 + 0.5 * math.log2(2 / 3)
    assert math.isclose(kl_divergence(HUGE, [1, 3]), expect, rel_tol=1e-14)
    assert math.isclose(kl_divergence([1, 3], [5e307, 1.5e308]), rel_entr([0.25, 0.75], [0.25, 0.75]).sum(), abs_tol=1e-15)


def test_float32_and_tensors_near_their_maximum():
    assert entropy(np.array([3e38, 3e38], dtype=np.float32)) == np.float32(1.0)
    out = entropy(torch.tensor([3e38, 3e38, 3e38, 3e38]))
    assert out.dtype == torch.float32 and out.item() == 2.0
    out = entropy(torch.tensor([6e4, 6e4], dtype=torch.float16))
    assert out.dtype == torch.float16 and out.item() == 1.0


def test_gradient_is_that_of_the_unscaled_distribution():
    w = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64, requires_grad=True)
    entropy(w, base=math.e).backward()
    big = (w.detach() * 1e300).requires_grad_(True)
    entropy(big, base=math.e).backward()
    # H(c w) = H(w) for any c > 0, so dH/d(c w) = (1/c) dH/dw
    torch.testing.assert_close(big.grad * 1e300, w.grad, rtol=1e-12, atol=0)
    # and the unscaled gradient is the analytic one: dH/dw_i = -(log p_i + H) / sum(w)
    p = w.detach() / w.detach().sum()
    h = -(p * p.log()).sum()
    torch.testing.assert_close(w.grad, -(p.log() + h) / w.detach().sum(), rtol=1e-12, atol=1e-15)


def test_cli_entropy_of_huge_weights(capsys):
    assert main(["info", "entropy", "1e308", "1e308"]) == 0
    assert capsys.readouterr().out == "1.0000 bits\n"
    assert main(["info", "kl", "--p", "1e308", "1e308", "--q", "1", "3"]) == 0
    assert capsys.readouterr().out == f"{0.5 + 0.5 * math.log2(2 / 3):.4f} bits\n"


# ---------------------------------------------------------------- softmax at tiny temperatures


@pytest.mark.parametrize("T", [1e-46, 1e-30, 1e-300, 5e-324])
@pytest.mark.parametrize("kind", ["list", "float32", "float64", "float16"])
def test_softmax_at_tiny_temperature_is_the_argmax(kind, T):
    x = [1.0, 3.0, 2.0, -5.0]
    arg = x if kind == "list" else torch.tensor(x, dtype=getattr(torch, kind))
    out = softmax(arg, temperature=T)
    out = np.asarray(out.float() if isinstance(out, torch.Tensor) else out)
    np.testing.assert_array_equal(out, [0.0, 1.0, 0.0, 0.0])
    # log q_i = (x_i - max x) / T exactly (no ties), rounded to the dtype: -inf where it overflows
    lout = log_softmax(arg, temperature=T)
    dtype = np.float64 if kind == "list" else getattr(np, kind)
    with np.errstate(over="ignore"):
        expect = ((np.array(x) - 3.0) / T).astype(dtype)
    lout = lout.numpy() if isinstance(lout, torch.Tensor) else lout
    np.testing.assert_allclose(lout, expect, rtol=1e-6)
    assert lout[1] == 0.0 and (lout[[0, 2, 3]] < -1e4).all()
    if isinstance(arg, torch.Tensor):
        assert softmax(arg, temperature=T).dtype == arg.dtype


def test_softmax_at_tiny_temperature_shares_ties_with_the_analytic_gradient():
    T = 1e-46
    x = torch.tensor([[3.0, 1.0, 3.0], [0.0, -1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    out = softmax(x, temperature=T)
    q = torch.tensor([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.detach(), q, rtol=0, atol=0)
    out[:, 0].sum().backward()
    # d q_0 / d x_j = q_0 (delta_0j - q_j) / T: (1/4T, 0, -1/4T) on the tie, 0 on the clear argmax
    expect = q[:, :1] * (torch.eye(3, dtype=torch.float64)[0] - q) / T
    torch.testing.assert_close(x.grad, expect, rtol=1e-12, atol=0)


def test_softmax_at_small_but_representable_temperature_is_exact():
    # T = 1e-3 on logits 1 apart: q_1 / q_0 = e^(1000) overflows nothing once the max is subtracted
    x = np.array([0.0, 0.001, 0.002])
    expect = np.exp((x - x.max()) / 1e-3) / np.exp((x - x.max()) / 1e-3).sum()
    np.testing.assert_allclose(softmax(list(x), temperature=1e-3), expect, rtol=1e-14)
    np.testing.assert_allclose(softmax(torch.tensor(x, dtype=torch.float32), temperature=1e-3).numpy(),
                               expect, rtol=1e-5)


def test_softmax_still_refuses_bad_logits_at_tiny_temperature():
    with pytest.raises(ValueError, match="logits must not contain NaN"):
        softmax(torch.tensor([1.0, math.nan]), temperature=1e-46)
    with pytest.raises(ValueError, match=r"logits must not contain \+inf"):
        softmax(torch.tensor([1.0, math.inf]), temperature=1e-46)
    with pytest.raises(ValueError, match="a row is all -inf"):
        log_softmax(torch.tensor([-math.inf, -math.inf]), temperature=1e-46)


def test_js_with_a_subnormal_probability_stays_finite():
    """Found by hypothesis: m = (p + q) / 2 underflowed to 0 where p = 5e-324, q = 0, and JS was inf."""
    p, q = np.array([1.0, 5e-324]), np.array([1.0, 0.0])
    js = js_divergence(p, q)
    assert np.isfinite(js) and 0.0 <= js <= 1e-300
    assert js_divergence(q, p) == js
    # and ordinary values still agree with SciPy (its distance is the square root of the divergence)
    a, b = np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.0, 0.4])
    assert js_divergence(a, b) == pytest.approx(jensenshannon(a, b, base=2) ** 2, rel=1e-12)
