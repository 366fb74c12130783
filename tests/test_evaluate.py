"""Tests for darkknowledge.evaluate against sklearn, SciPy and plain-Python references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr
from scipy.special import softmax as sp_softmax
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import log_loss
from torch import nn

from darkknowledge.errors import InputError
from darkknowledge.evaluate import (
    confusion_matrix,
    evaluate_model,
    expected_calibration_error,
    measure_latency,
    reliability_bins,
)


def _loop_ece(probs, y, n_bins):
    """Independent reference: plain Python loops over bins (lo, hi], the first bin also holding 0."""
    n = len(y)
    rows = [(max(row), max(range(len(row)), key=lambda j: row[j])) for row in probs]
    total = 0.0
    bins = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i, (conf, _) in enumerate(rows) if (lo < conf <= hi) or (b == 0 and conf == 0)]
        if members:
            acc = sum(1 for i in members if rows[i][1] == y[i]) / len(members)
            conf = sum(rows[i][0] for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
            bins.append((len(members), acc, conf))
        else:
            bins.append((0, 0.0, 0.0))
    return total, bins


def _random_probs(n, c, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    p = sp_softmax(scale * rng.normal(size=(n, c)), axis=1)
    y = rng.integers(0, c, size=n)
    return p, y


class TestCalibration:
    def test_tiny_example_by_hand(self):
        # 4 bins of width 0.25; confidences 0.9 (right), 0.6 (wrong), 0.7 (right), 0.4 (right)
        probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.4, 0.35, 0.25]])
        y = np.array([0, 1, 1, 0])
        # bin (0.25, 0.5]: {0.4}: acc 1, conf 0.4 -> 0.6 * 1/4
        # bin (0.5, 0.75]: {0.6, 0.7}: acc 0.5, conf 0.65 -> 0.15 * 2/4
        # bin (0.75, 1]: {0.9}: acc 1, conf 0.9 -> 0.1 * 1/4
        expected = 0.6 / 4 + 0.15 * 2 / 4 + 0.1 / 4
        assert expected_calibration_error(probs, y, n_bins=4) == pytest.approx(expected, abs=1e-12)
        rb = reliability_bins(torch.tensor(probs), torch.tensor(y), n_bins=4)
        assert rb["bin_edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert rb["bin_count"] == [0, 1, 2, 1]
        assert rb["bin_accuracy"] == pytest.approx([0.0, 1.0, 0.5, 1.0])
        assert rb["bin_confidence"] == pytest.approx([0.0, 0.4, 0.65, 0.9])

    def test_bins_are_right_closed(self):
        # confidences exactly on edges: 0.5 -> (0.25, 0.5]; 0.75 -> (0.5, 0.75]; 1.0 -> (0.75, 1]
        probs = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
        y = np.array([0, 0, 1])
        ref, ref_bins = _loop_ece(probs.tolist(), y.tolist(), 4)
        assert reliability_bins(probs, y, n_bins=4)["bin_count"] == [b[0] for b in ref_bins] == [0, 1, 1, 1]
        assert expected_calibration_error(probs, y, n_bins=4) == pytest.approx(ref, abs=1e-12)

    @pytest.mark.parametrize("seed,n_bins", [(0, 15), (1, 10), (2, 1), (3, 40)])
    def test_matches_loop_reference(self, seed, n_bins):
        p, y = _random_probs(500, 6, seed)
        ref, ref_bins = _loop_ece(p.tolist(), y.tolist(), n_bins)
        assert expected_calibration_error(p, y, n_bins=n_bins) == pytest.approx(ref, rel=1e-10, abs=1e-12)
        rb = reliability_bins(p, y, n_bins=n_bins)
        assert rb["bin_count"] == [b[0] for b in ref_bins]
        assert rb["bin_accuracy"] == pytest.approx([b[1] for b in ref_bins], abs=1e-12)
        assert rb["bin_confidence"] == pytest.approx([b[2] for b in ref_bins], abs=1e-12)
        assert len(rb["bin_edges"]) == n_bins + 1

    def test_perfectly_calibrated_and_overconfident(self):
        # one-hot correct predictions: confidence 1, accuracy 1
        y = np.arange(5) % 3
        assert expected_calibration_error(np.eye(3)[y], y) == 0.0
        # all confidence 1, all wrong: ECE 1
        assert expected_calibration_error(np.eye(3)[(y + 1) % 3], y) == 1.0

    def test_errors(self):
        p, y = _random_probs(4, 3, 0)
        with pytest.raises(ValueError, match=r"probs must have rows summing to 1 \(probabilities, not logits\), got a row summing to 2"):
            expected_calibration_error(2 * p, y)
        with pytest.raises(ValueError, match=r"probs must be finite and non-negative"):
            expected_calibration_error(p - 0.5, y)
        with pytest.raises(ValueError, match=r"probs must have shape \(N, C\) with N, C >= 1, got \(3,\) instead"):
            reliability_bins(p[0], y)
        with pytest.raises(TypeError, match=r"probs must be floating point, got torch.int64 instead"):
            expected_calibration_error(torch.ones(4, 1, dtype=torch.int64), y)
        with pytest.raises(ValueError, match=r"n_bins must be an integer >= 1, got 0 instead"):
            expected_calibration_error(p, y, n_bins=0)
        with pytest.raises(ValueError, match=r"y must hold class ids in \[0, 3\), got 3 instead"):
            expected_calibration_error(p, np.array([0, 1, 2, 3]))
        with pytest.raises(ValueError, match=r"y must be \(N,\) integer class ids with N=4, got shape \(4,\) and dtype torch.float64"):
            expected_calibration_error(p, y.astype(np.float64))
        with pytest.raises(TypeError, match=r"probs must be a torch.Tensor or numpy.ndarray, got list instead"):
            expected_calibration_error(p.tolist(), y)


class TestConfusion:
    def test_matches_sklearn(self):
        rng = np.random.default_rng(0)
        t, p = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
        ours = confusion_matrix(torch.from_numpy(t), p, num_classes=7)
        assert ours.dtype == torch.int64 and ours.shape == (7, 7)
        np.testing.assert_array_equal(ours.numpy(), sk_confusion_matrix(t, p, labels=range(7)))

    def test_absent_classes_give_zero_rows(self):
        m = confusion_matrix(np.array([0, 0]), np.array([0, 2]), num_classes=4)
        np.testing.assert_array_equal(m.numpy(), sk_confusion_matrix([0, 0], [0, 2], labels=range(4)))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"y_pred must hold class ids in \[0, 3\), got 3 instead"):
            confusion_matrix(np.array([0, 1]), np.array([0, 3]), num_classes=3)
        with pytest.raises(ValueError, match=r"y_true must hold class ids in \[0, 3\), got -1 instead"):
            confusion_matrix(np.array([0, -1]), np.array([0, 1]), num_classes=3)
        with pytest.raises(ValueError, match=r"y_pred must be \(N,\) integer class ids with N=2, got shape \(3,\)"):
            confusion_matrix(np.array([0, 1]), np.array([0, 1, 1]), num_classes=3)
        with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got 0 instead"):
            confusion_matrix(np.array([0]), np.array([0]), num_classes=0)


class _Dropout(nn.Module):
    def __init__(self, d, c, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, c))
        self.grad_seen = []

    def forward(self, x):
        self.grad_seen.append(torch.is_grad_enabled())
        return self.net(x)


class TestEvaluateModel:
    def setup_method(self):
        g = torch.Generator().manual_seed(0)
        self.X = torch.randn(200, 8, generator=g)
        self.y = torch.randint(0, 5, (200,), generator=g)
        self.model = _Dropout(8, 5, seed=1)
        self.teacher = _Dropout(8, 5, seed=2)

    def _eval_logits(self, model):
        model.eval()
        with torch.no_grad():
            out = model.net(self.X).double()
        model.train()
        return out

    def test_metrics_against_independent_references(self):
        t_logits = self._eval_logits(self.teacher).float()
        m = evaluate_model(self.model, self.X, self.y, teacher_logits=t_logits, batch_size=64, latency_repeats=2)
        assert set(m) == {
            "params", "test_errors", "n_test", "accuracy", "nll", "ece", "agreement",
            "kl_to_teacher", "latency_ms_per_sample", "confusion", "reliability",
        }
        z = self._eval_logits(self.model).numpy()  # eval mode: deterministic
        p = sp_softmax(z, axis=1)
        y = self.y.numpy()
        pred = p.argmax(1)
        assert m["params"] == 8 * 32 + 32 + 32 * 5 + 5
        assert m["n_test"] == 200
        assert m["test_errors"] == int((pred != y).sum())
        assert m["accuracy"] == pytest.approx(float((pred == y).mean()), abs=1e-12)
        assert m["nll"] == pytest.approx(log_loss(y, p, labels=range(5)), rel=1e-6)
        ref_ece, _ = _loop_ece(p.tolist(), y.tolist(), 15)
        assert m["ece"] == pytest.approx(ref_ece, rel=1e-5, abs=1e-7)
        q = sp_softmax(t_logits.double().numpy(), axis=1)
        assert m["agreement"] == pytest.approx(float((q.argmax(1) == pred).mean()))
        assert m["kl_to_teacher"] == pytest.approx(float(rel_entr(q, p).sum(1).mean()), rel=1e-5)
        np.testing.assert_array_equal(np.array(m["confusion"]), sk_confusion_matrix(y, pred, labels=range(5)))
        assert sum(m["reliability"]["bin_count"]) == 200 and len(m["reliability"]["bin_edges"]) == 16
        assert m["latency_ms_per_sample"] > 0
        assert not any(self.model.grad_seen) and self.model.training  # no_grad; mode restored
        json.dumps(m, allow_nan=False)

    def test_without_teacher_and_teacher_itself(self):
        m = evaluate_model(self.model, self.X, self.y, latency_repeats=0)
        assert m["agreement"] is None and m["kl_to_teacher"] is None and m["latency_ms_per_sample"] is None
        self_logits = self._eval_logits(self.model)
        m = evaluate_model(self.model, self.X.numpy(), self.y.numpy(), teacher_logits=self_logits.numpy(), latency_repeats=0)
        assert m["agreement"] == 1.0 and abs(m["kl_to_teacher"]) < 1e-6

    def test_deterministic_despite_dropout(self):
        a = evaluate_model(self.model, self.X, self.y, latency_repeats=0)
        b = evaluate_model(self.model, self.X, self.y, latency_repeats=0)
        assert a == b

    def test_errors(self):
        with pytest.raises(ValueError, match=r"teacher_logits must be floating point with shape \(200, 5\) like the model's logits, got \(200, 4\)"):
            evaluate_model(self.model, self.X, self.y, teacher_logits=torch.zeros(200, 4), latency_repeats=0)
        with pytest.raises(ValueError, match=r"y must hold class ids in \[0, 5\), got 5 instead"):
            evaluate_model(self.model, self.X, torch.full((200,), 5), latency_repeats=0)
        with pytest.raises(ValueError, match=r"latency_repeats must be an integer >= 0, got -1 instead"):
            evaluate_model(self.model, self.X, self.y, latency_repeats=-1)
        with pytest.raises(TypeError, match=r"model must be an nn.Module, got function instead"):
            evaluate_model(lambda x: x, self.X, self.y)


class TestLatency:
    def test_positive_and_scaled_per_sample(self):
        model = nn.Linear(16, 4)
        ms = measure_latency(model, torch.randn(512, 16), batch_size=128, repeats=3)
        assert 0 < ms < 50  # a 16x4 linear layer takes far less than 50 ms per sample
        assert math.isfinite(ms)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"repeats must be an integer >= 1, got 0 instead"):
            measure_latency(nn.Linear(2, 2), torch.zeros(3, 2), repeats=0)
        with pytest.raises(ValueError, match=r"X must hold at least one sample, got shape \(0, 2\) instead"):
            measure_latency(nn.Linear(2, 2), torch.zeros(0, 2))
        with pytest.raises(TypeError, match=r"model must be an nn.Module, got str instead"):
            measure_latency("model", torch.zeros(3, 2))


# ----------------------------------------------------------------------------- evaluate (the public wrapper)


def test_evaluate_wrapper_matches_evaluate_model_on_every_data_kind(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from darkknowledge.data import as_splits
    from darkknowledge.evaluate import evaluate

    torch.manual_seed(0)
    net, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    t = teacher(X).detach()
    ref = evaluate_model(net, X, y, teacher_logits=t, latency_repeats=0)
    assert ref["kl_to_teacher"] > 0
    np.save(tmp_path / "t.npy", t.numpy())
    for data in ((X, y), (X.numpy(), y.numpy()), TensorDataset(X, y), DataLoader(TensorDataset(X, y), batch_size=7)):
        for given in (teacher, t, t.numpy(), tmp_path / "t.npy"):
            got = evaluate(net, data, teacher=given)
            assert got["test_errors"] == ref["test_errors"] and got["n_test"] == 30
            assert got["nll"] == pytest.approx(ref["nll"], abs=1e-6) and got["ece"] == pytest.approx(ref["ece"], abs=1e-6)
            assert got["kl_to_teacher"] == pytest.approx(ref["kl_to_teacher"], abs=1e-6)
            assert got["agreement"] == ref["agreement"] and got["latency_ms_per_sample"] is None
    s = as_splits((X, y), test=(X[:10], y[:10]))
    part = evaluate(net, s)  # split="test"
    assert part["test_errors"] == evaluate_model(net, X[:10], y[:10], latency_repeats=0)["test_errors"]
    assert part["n_test"] == 10 and part["agreement"] is None
    assert evaluate(net, s, split="val")["n_test"] == len(s.y_val)


def test_evaluate_estimator_and_dict_inputs():
    from sklearn.linear_model import LogisticRegression

    from darkknowledge.evaluate import evaluate

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.array([0, 1] * 20)
    clf = LogisticRegression().fit(X, y)
    m = evaluate(clf, (X, y))
    assert m["accuracy"] == pytest.approx(clf.score(X.astype(np.float32), y))  # sklearn's own accuracy

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 2)

        def forward(self, input_ids, attention_mask):
            return (self.emb(input_ids) * attention_mask[..., None]).sum(1)  # (N, 2)

    net = Text()
    ids, mask = torch.randint(0, 10, (8, 5)), torch.ones(8, 5, dtype=torch.long)
    r = evaluate(net, ({"input_ids": ids, "attention_mask": mask}, [0, 1] * 4), teacher=net, latency_repeats=1)
    assert r["n_test"] == 8 and r["agreement"] == 1.0 and r["latency_ms_per_sample"] > 0
    expected = int((net(ids, mask).argmax(1) != torch.tensor([0, 1] * 4)).sum())
    assert r["test_errors"] == expected


def test_evaluate_errors():
    from darkknowledge.data import as_splits
    from darkknowledge.evaluate import evaluate

    X, y = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    net = nn.Linear(4, 2)
    with pytest.raises(InputError, match="split must be one of 'test', 'val', 'train'; got 'dev' instead"):
        evaluate(net, (X, y), split="dev")
    with pytest.raises(InputError, match="split='test' must name a part the data holds, got a Splits without X_test"):
        evaluate(net, as_splits((X, y)))
    with pytest.raises(InputError, match="split applies to a Splits, got split='val' with tuple data instead"):
        evaluate(net, (X, y), split="val")
    with pytest.raises(ValueError, match="10"):
        evaluate(net, (X, y), teacher=torch.zeros(9, 2))
