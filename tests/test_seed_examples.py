"""The worked examples of the lecture notes (seeds), by value, at the notes' own rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darkknowledge import functional as Fn
from darkknowledge import info


def test_entropy_of_the_food_preferences():
    # Kacchi 0.1, Burger 0.3, Pizza 0.2, Fried chicken 0.4: H = 1.846 bits (the notes round to 1.85)
    h = info.entropy([0.1, 0.3, 0.2, 0.4])
    assert round(h, 3) == 1.846
    assert h == pytest.approx(-sum(p * math.log2(p) for p in (0.1, 0.3, 0.2, 0.4)), abs=1e-15)


def test_dyadic_code_lengths():
    p = [0.5, 0.25, 0.125, 0.125]
    q = [0.25] * 4
    assert info.entropy(p) == pytest.approx(1.75, abs=1e-15)
    assert info.cross_entropy(p, q) == pytest.approx(2.0, abs=1e-15)
    assert info.kl_divergence(p, q) == pytest.approx(0.25, abs=1e-15)
    # H(p, q) = H(p) + KL(p || q)
    assert info.cross_entropy(p, q) == pytest.approx(info.entropy(p) + info.kl_divergence(p, q), abs=1e-15)
    np.testing.assert_allclose(info.self_information(p), [1.0, 2.0, 3.0, 3.0])


def test_kl_is_not_symmetric():
    assert round(info.kl_divergence([0.5, 0.5], [0.9, 0.1]), 5) == 0.73697
    assert round(info.kl_divergence([0.9, 0.1], [0.5, 0.5]), 5) == 0.53100


def test_softmax_temperature_table():
    z = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(Fn.softmax(z, temperature=1).round(4), [0.0321, 0.0871, 0.2369, 0.6439])
    np.testing.assert_array_equal(Fn.softmax(z, temperature=2).round(4), [0.1015, 0.1674, 0.2760, 0.4551])
    # The hand-written table of the notes, at its 2 decimals: it agrees except for two slips of the
    # hand (P_2 at T = 1 reads 0.07 for 0.0871, P_4 at T = 2 reads 0.44 for 0.4551).
    np.testing.assert_array_equal(Fn.softmax(z, temperature=1).round(2)[[0, 2, 3]], [0.03, 0.24, 0.64])
    np.testing.assert_array_equal(Fn.softmax(z, temperature=2).round(2)[:3], [0.10, 0.17, 0.28])


def test_cross_entropy_of_a_confident_correct_prediction():
    # target class 3 of 3, prediction (0.002, 0.02, 0.978): -log 0.978 = 0.0222 nats (notes: 0.02)
    probs = [0.002, 0.02, 0.978]
    assert round(info.cross_entropy([0, 0, 1], probs, base=math.e), 4) == 0.0222
    log_probs = np.log([probs])
    assert round(float(Fn.nll_loss(log_probs, [2])), 4) == 0.0222
    assert round(float(Fn.cross_entropy(log_probs, [2])), 4) == 0.0222  # log-probs are logits too
    assert round(-math.log(0.98), 2) == 0.02  # the notes' second prediction (0.01, 0.01, 0.98)


def test_softmax_cross_entropy_gradient_is_s_minus_y():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=1)  # any target summing to 1
    Fn.cross_entropy(logits, y, reduction="sum").backward()
    s = torch.softmax(logits.detach(), dim=1)
    torch.testing.assert_close(logits.grad, s - y, rtol=0, atol=1e-14)
    ids = torch.tensor([1, 0, 4, 2])
    logits.grad = None
    Fn.cross_entropy(logits, ids, reduction="sum").backward()
    torch.testing.assert_close(logits.grad, s - torch.eye(5, dtype=torch.float64)[ids], rtol=0, atol=1e-14)


def test_multinomial_logistic_regression_forward_pass():
    # softmax(xW + b) for x = (1, 2), W = [[1, 2, 3], [4, 5, 6]], b = (1, 2, 3)
    x = np.array([1.0, 2.0])
    W = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = np.array([1.0, 2.0, 3.0])
    p = Fn.softmax(x @ W + b)  # logits (10, 14, 18)
    np.testing.assert_allclose(p, [3.29e-4, 1.798e-2, 0.98169], rtol=2e-3)
    assert round(float(p[2]), 5) == 0.98169
