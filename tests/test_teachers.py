"""Tests for darkknowledge.teachers: ensembles, bootstrap indices, teacher_logits, compatibility."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as sp_log_softmax
from scipy.special import logsumexp as sp_logsumexp
from scipy.special import softmax as sp_softmax
from torch import nn

from darkknowledge.teachers import (
    Ensemble,
    as_teacher,
    bootstrap_indices,
    check_compatible,
    teacher_logits,
)

D, C = 5, 4


def _members(k: int, *, seed: int = 0, dtype=torch.float64) -> list[nn.Module]:
    torch.manual_seed(seed)
    out = []
    for _ in range(k):
        lin = nn.Linear(D, C, dtype=dtype)
        with torch.no_grad():
            lin.weight.mul_(3.0)  # sharper, more different members
        out.append(lin)
    return out


def _np_logits(members, x) -> np.ndarray:
    """(M, N, C) float64 member logits, computed independently with NumPy."""
    xs = x.detach().numpy().astype(np.float64)
    return np.stack(
        [xs @ m.weight.detach().numpy().T.astype(np.float64) + m.bias.detach().numpy() for m in members]
    )


@pytest.fixture
def x():
    return torch.randn(7, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# ------------------------------------------------------------------------------ bootstrap


class TestBootstrapIndices:
    def test_reproducible_and_seed_dependent(self):
        a = bootstrap_indices(500, seed=3)
        torch.manual_seed(123)  # the global RNG must not matter
        b = bootstrap_indices(500, seed=3)
        assert torch.equal(a, b)
        assert not torch.equal(a, bootstrap_indices(500, seed=4))

    def test_with_replacement_and_in_range(self):
        n = 2000
        idx = bootstrap_indices(n, seed=0)
        assert idx.dtype == torch.int64 and idx.shape == (n,)
        assert int(idx.min()) >= 0 and int(idx.max()) < n
        unique = torch.unique(idx).numel()
        assert unique < n  # duplicates: drawn with replacement
        # expected fraction of distinct samples is 1 - (1 - 1/n)^n ~ 0.632; sd ~ 0.008 here
        expected = 1 - (1 - 1 / n) ** n
        assert abs(unique / n - expected) < 0.04

    def test_roughly_uniform(self):
        idx = bootstrap_indices(10, seed=0)
        many = torch.cat([bootstrap_indices(10, seed=s) for s in range(400)])  # 4000 draws
        counts = torch.bincount(many, minlength=10).double()
        assert idx.shape == (10,)
        assert float((counts / 4000 - 0.1).abs().max()) < 0.03

    def test_errors(self):
        with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 0 instead"):
            bootstrap_indices(0, seed=0)
        with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1 instead"):
            bootstrap_indices(5, seed=-1)
        with pytest.raises(TypeError, match=r"seed must be an integer, got float instead"):
            bootstrap_indices(5, seed=1.5)


# ------------------------------------------------------------------------------ ensembles


class TestEnsemble:
    def test_single_member_equals_member(self, x):
        (m,) = _members(1)
        for combine in ("prob", "logprob"):
            ens = Ensemble([m], combine=combine)
            ref = sp_log_softmax(_np_logits([m], x)[0], axis=1)
            np.testing.assert_allclose(ens(x).detach().numpy(), ref, rtol=0, atol=1e-12)
            # and as logits it gives the member's probabilities
            torch.testing.assert_close(ens(x).softmax(1), m(x).softmax(1), rtol=0, atol=1e-12)

    def test_prob_average_matches_numpy(self, x):
        members = _members(3)
        z = _np_logits(members, x)  # (M, N, C)
        ref = np.log(sp_softmax(z, axis=2).mean(axis=0))  # (N, C)
        out = Ensemble(members)(x).detach().numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sp_logsumexp(out, axis=1), 0.0, atol=1e-12)  # normalised

    def test_prob_average_is_permutation_invariant(self, x):
        members = _members(3)
        ref = Ensemble(members)(x)
        for perm in itertools.permutations(range(3)):
            out = Ensemble([members[i] for i in perm])(x)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)

    def test_weighted_prob_average(self, x):
        members = _members(3)
        w = np.array([1.0, 3.0, 0.5])
        z = _np_logits(members, x)
        ref = np.log(np.einsum("m,mnc->nc", w / w.sum(), sp_softmax(z, axis=2)))
        out = Ensemble(members, weights=w)(x).detach().numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
        # scale of the weights does not matter; a permutation with permuted weights neither
        torch.testing.assert_close(
            Ensemble(members, weights=[2.0, 6.0, 1.0])(x), torch.from_numpy(out), rtol=0, atol=1e-12
        )
        perm = Ensemble([members[2], members[0], members[1]], weights=torch.tensor([0.5, 1.0, 3.0]))(x)
        torch.testing.assert_close(perm, torch.from_numpy(out), rtol=0, atol=1e-12)

    def test_zero_weight_drops_member(self, x):
        members = _members(3)
        calls = []
        members[1].register_forward_hook(lambda *a: calls.append(1))
        for combine in ("prob", "logprob"):
            out = Ensemble(members, weights=[1.0, 0.0, 1.0], combine=combine)(x)
            ref = Ensemble([members[0], members[2]], combine=combine)(x)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        assert calls == []  # a zero-weight member is not even run

    @pytest.mark.parametrize("weights", [None, [0.2, 0.3, 0.5]])
    def test_logprob_average_matches_scipy(self, x, weights):
        members = _members(3, seed=2)
        z = _np_logits(members, x)
        w = np.full(3, 1 / 3) if weights is None else np.asarray(weights)
        s = np.einsum("m,mnc->nc", w, sp_log_softmax(z, axis=2))  # (N, C)
        ref = s - sp_logsumexp(s, axis=1, keepdims=True)
        out = Ensemble(members, weights=weights, combine="logprob")(x).detach().numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)

    def test_prob_and_logprob_differ(self, x):
        members = _members(2)
        a = Ensemble(members, combine="prob")(x)
        b = Ensemble(members, combine="logprob")(x)
        assert float((a - b).abs().max().detach()) > 1e-3

    def test_weights_in_state_dict_and_combine_in_repr(self):
        ens = Ensemble(_members(2), weights=[1.0, 3.0], combine="logprob")
        torch.testing.assert_close(ens.state_dict()["weights"], torch.tensor([0.25, 0.75], dtype=torch.float64))
        assert "combine='logprob'" in repr(ens)

    def test_errors(self):
        members = _members(2)
        with pytest.raises(ValueError, match=r"weights must have one entry per member \(2\), got 3 instead"):
            Ensemble(members, weights=[1.0, 1.0, 1.0])
        with pytest.raises(ValueError, match=r"weights must be finite and non-negative, got \[1.0, -1.0\]"):
            Ensemble(members, weights=[1.0, -1.0])
        with pytest.raises(ValueError, match=r"weights must be finite and non-negative, got \[1.0, nan\]"):
            Ensemble(members, weights=[1.0, float("nan")])
        with pytest.raises(ValueError, match=r"weights must not all be zero"):
            Ensemble(members, weights=[0.0, 0.0])
        with pytest.raises(TypeError, match=r"weights must be a sequence of numbers, got str instead"):
            Ensemble(members, weights="12")
        with pytest.raises(TypeError, match=r"weights must be a sequence of numbers, got \['a', 'b'\] instead"):
            Ensemble(members, weights=["a", "b"])
        with pytest.raises(ValueError, match=r"combine must be one of 'prob', 'logprob'; got 'mean' instead"):
            Ensemble(members, combine="mean")
        with pytest.raises(TypeError, match=r"members must be a non-empty sequence of nn.Module, got list"):
            Ensemble([])
        with pytest.raises(TypeError, match=r"members must be a non-empty sequence of nn.Module, got Linear"):
            Ensemble(members[0])
        with pytest.raises(TypeError, match=r"members\[1\] must be an nn.Module, got str instead"):
            Ensemble([members[0], "teacher"])
        mixed = Ensemble([nn.Linear(D, C), nn.Linear(D, C + 1)])
        with pytest.raises(ValueError, match=r"members must all return \(N, C\) logits of one shape, got shapes \[\(2, 4\), \(2, 5\)\]"):
            mixed(torch.zeros(2, D))


# ------------------------------------------------------------------------------ teacher_logits


class _GradProbe(nn.Module):
    """Records whether grad mode and training mode were on during forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, C)
        self.seen = []

    def forward(self, x):
        self.seen.append((torch.is_grad_enabled(), self.training))
        return self.lin(x)


class TestTeacherLogits:
    def test_eval_mode_makes_dropout_deterministic(self):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(D, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, C))
        X = torch.randn(50, D)
        a = teacher_logits(net, X, batch_size=16)
        b = teacher_logits(net, X, batch_size=16)
        assert torch.equal(a, b)
        net.eval()
        with torch.no_grad():
            ref = net(X)
        net.train()
        torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6)
        # in train mode the same net is random, so eval mode was really what made it stable
        with torch.no_grad():
            assert not torch.equal(net(X), net(X))

    def test_no_grad_eval_and_modes_restored(self):
        probe = _GradProbe().train()
        out = teacher_logits(probe, torch.randn(10, D), batch_size=4)
        assert probe.seen == [(False, False)] * 3  # 3 batches, all in no_grad + eval
        assert not out.requires_grad
        assert probe.training and probe.lin.training  # restored

    def test_ensemble_members_run_in_eval(self):
        probes = [_GradProbe(), _GradProbe()]
        teacher_logits([*probes], torch.randn(3, D))
        for p in probes:
            assert p.seen == [(False, False)]
            assert p.training

    def test_batching_dtype_and_numpy_input(self):
        torch.manual_seed(0)
        net = nn.Linear(D, C)
        X = np.random.default_rng(0).normal(size=(33, D))  # float64 NumPy
        out = teacher_logits(net, X, batch_size=10)
        assert out.dtype == torch.float32 and out.shape == (33, C)
        with torch.no_grad():
            ref = net(torch.from_numpy(X).float())
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)

    def test_list_is_an_ensemble(self, x):
        members = _members(2)
        out = teacher_logits(members, x)
        ref = np.log(sp_softmax(_np_logits(members, x), axis=2).mean(axis=0))
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)

    def test_errors(self):
        net = nn.Linear(D, C)
        with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0 instead"):
            teacher_logits(net, torch.zeros(2, D), batch_size=0)
        with pytest.raises(TypeError, match=r"X must be a torch.Tensor, numpy.ndarray or dict of them, got list instead"):
            teacher_logits(net, [[0.0] * D])
        with pytest.raises(ValueError, match=r"X must hold at least one sample, got 0 instead"):
            teacher_logits(net, torch.zeros(0, D))
        with pytest.raises(ValueError, match=r"X must have a leading batch dimension, got shape \(\) instead"):
            teacher_logits(net, torch.tensor(1.0))
        with pytest.raises(ValueError, match=r"teacher must return \(N, C\) logits, got \(2, 4, 1\) instead"):
            teacher_logits(nn.Sequential(net, nn.Unflatten(1, (C, 1))), torch.zeros(2, D))


# ------------------------------------------------------------------------------ as_teacher / compatibility


class TestAsTeacher:
    def test_module_and_list(self):
        net = nn.Linear(D, C)
        wrapped = as_teacher(net)
        assert wrapped.model is net and as_teacher(wrapped) is wrapped  # wrapped once, then as is
        x = torch.randn(3, D)
        assert torch.equal(wrapped(x), net(x))
        ens = as_teacher([net, nn.Linear(D, C)], weights=[1, 2], combine="logprob")
        assert isinstance(ens, Ensemble) and ens.combine == "logprob"
        torch.testing.assert_close(ens.weights, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))

    def test_run_folder(self, tmp_path):
        from darkknowledge.checkpoint import save_model
        from darkknowledge.models import build_model

        m = build_model("mlp", input_shape=(D,), num_classes=C, hidden=[8], seed=0)
        save_model(tmp_path / "run", m)
        X = torch.randn(6, D)
        for path in (tmp_path / "run", str(tmp_path / "run")):
            loaded = as_teacher(path)
            torch.testing.assert_close(teacher_logits(loaded, X), teacher_logits(m, X), rtol=0, atol=0)
        ens = as_teacher([tmp_path / "run", m])  # paths and modules mixed: an ensemble of equal members
        torch.testing.assert_close(
            teacher_logits(ens, X), teacher_logits(m, X).log_softmax(1), rtol=1e-5, atol=1e-5
        )

    def test_errors(self, tmp_path):
        with pytest.raises(TypeError, match=r"teacher must be an nn.Module, a callable, an estimator with predict_proba, an .onnx file, a Hugging Face or run folder path, or a list of them, got int instead"):
            as_teacher(3)
        with pytest.raises(ValueError, match=r"weights and combine apply only to a list of ensemble members, got a single Linear"):
            as_teacher(nn.Linear(2, 2), combine="logprob")
        with pytest.raises(FileNotFoundError):
            as_teacher(tmp_path / "missing")


class TestCheckCompatible:
    def test_ok(self):
        assert check_compatible(nn.Linear(D, C), num_classes=C, input_shape=(D,)) == C
        conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        assert check_compatible(conv, num_classes=3, input_shape=[1, 6, 6]) == 3

    def test_mismatched_classes_error_before_training(self):
        net = nn.Linear(D, C)
        calls = []
        net.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
        with pytest.raises(ValueError, match=r"teacher must predict num_classes=10 classes \(the data's\), got 4 instead"):
            check_compatible(net, num_classes=10, input_shape=(D,))
        assert calls == [(2, D)]  # one zero-batch probe, no data touched
        with pytest.raises(ValueError, match=r"got 4 instead"):
            check_compatible([net, nn.Linear(D, C)], num_classes=3, input_shape=(D,))

    def test_wrong_input_shape(self):
        with pytest.raises(ValueError, match=r"teacher must accept inputs of shape \(N, 7\).*failed instead with"):
            check_compatible(nn.Linear(D, C), num_classes=C, input_shape=(7,))

    def test_argument_errors(self):
        with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got 0 instead"):
            check_compatible(nn.Linear(D, C), num_classes=0, input_shape=(D,))
        with pytest.raises(ValueError, match=r"input_shape must hold positive sizes, got \(0,\) instead"):
            check_compatible(nn.Linear(D, C), num_classes=C, input_shape=(0,))
