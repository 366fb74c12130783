"""Tests for darkknowledge.soft_targets: the content-keyed cache, top-k storage, and the analysis."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import safetensors.torch
import torch
from scipy.special import softmax as sp_softmax
from scipy.stats import entropy as sp_entropy
from torch import nn

from darkknowledge.soft_targets import (
    CacheCorruptionWarning,
    SoftTargetCache,
    analyse_soft_targets,
    cached_teacher_logits,
    compress_top_k,
    dense_logits,
    examples,
    fingerprint,
)
from darkknowledge.teachers import Ensemble

D, C = 6, 5


class Counting(nn.Module):
    """A teacher whose forward calls are counted (and which has dropout, to check eval mode)."""

    def __init__(self, seed: int = 0, num_classes: int = C):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, num_classes))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return 4.0 * self.net(x)


def _reference(teacher: Counting, X: torch.Tensor) -> torch.Tensor:
    """The teacher's logits computed directly (eval mode, no grad), without the counter."""
    was = teacher.net.training
    teacher.net.eval()
    with torch.no_grad():
        out = 4.0 * teacher.net(X)
    teacher.net.train(was)
    return out


@pytest.fixture
def X():
    return torch.randn(40, D, generator=torch.Generator().manual_seed(7))


# ------------------------------------------------------------------------------ fingerprint


class TestFingerprint:
    def test_deterministic_and_copy_invariant(self, X):
        t = Counting()
        a = fingerprint(t, X, split="train")
        assert len(a) == 64 and int(a, 16) >= 0
        assert fingerprint(copy.deepcopy(t), X.clone(), split="train") == a
        assert fingerprint(t, X.numpy(), split="train") == a  # NumPy and torch views of the same bytes

    def test_changes_with_weights_data_and_keys(self, X):
        t = Counting()
        base = fingerprint(t, X, split="train", dtype="float32", top_k=None)
        t2 = copy.deepcopy(t)
        with torch.no_grad():
            t2.net[0].weight[0, 0] += 1e-6
        X2 = X.clone()
        X2[3, 2] += 1e-6
        changed = {
            "weights": fingerprint(t2, X, split="train", dtype="float32", top_k=None),
            "data": fingerprint(t, X2, split="train", dtype="float32", top_k=None),
            "data shape": fingerprint(t, X[:-1], split="train", dtype="float32", top_k=None),
            "data dtype": fingerprint(t, X.double(), split="train", dtype="float32", top_k=None),
            "split": fingerprint(t, X, split="val", dtype="float32", top_k=None),
            "dtype": fingerprint(t, X, split="train", dtype="float16", top_k=None),
            "top_k": fingerprint(t, X, split="train", dtype="float32", top_k=3),
            "architecture": fingerprint(Counting(num_classes=C + 1), X, split="train", dtype="float32", top_k=None),
        }
        for what, fp in changed.items():
            assert fp != base, what
        assert len(set(changed.values())) == len(changed)

    def test_ensemble_weights_and_combine_change_it(self, X):
        members = [nn.Linear(D, C), nn.Linear(D, C)]
        a = fingerprint(Ensemble(members), X)
        assert fingerprint(Ensemble(members, weights=[1, 2]), X) != a
        assert fingerprint(Ensemble(members, combine="logprob"), X) != a
        assert fingerprint(Ensemble(members, weights=[5, 5]), X) == a  # same normalised weights

    def test_errors(self):
        with pytest.raises(TypeError, match=r"X must be a torch.Tensor, a numpy.ndarray or a dict of them, got list instead"):
            fingerprint(nn.Linear(2, 2), [[1.0, 2.0]])


# ------------------------------------------------------------------------------ the cache


class TestCache:
    def test_hit_skips_teacher(self, tmp_path, X):
        t = Counting()
        first = cached_teacher_logits(t, X, cache_dir=tmp_path, batch_size=16)
        assert t.calls == 3  # ceil(40 / 16) batches
        torch.testing.assert_close(first, _reference(t, X), rtol=1e-6, atol=1e-6)
        assert first.dtype == torch.float32 and first.shape == (40, C)
        again = cached_teacher_logits(t, X, cache_dir=tmp_path, batch_size=16)
        assert t.calls == 3  # a hit: the teacher did not run
        assert torch.equal(first, again)
        cache = SoftTargetCache(tmp_path)
        cache.get(t, X)
        assert (cache.hits, cache.misses, t.calls) == (1, 0, 3)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == [f"{fingerprint(t, X, split='train', dtype='float32', top_k=None)}.safetensors"]

    def test_changed_teacher_or_data_is_a_miss_not_stale(self, tmp_path, X):
        t = Counting()
        cache = SoftTargetCache(tmp_path)
        old = cache.get(t, X)
        with torch.no_grad():
            t.net[3].bias[0] += 1.0  # logit 0 moves by +4
        new = cache.get(t, X)
        assert cache.misses == 2 and cache.hits == 0
        torch.testing.assert_close(new, _reference(t, X), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(new[:, 0] - old[:, 0], torch.full((40,), 4.0), rtol=0, atol=1e-5)
        X2 = X.clone()
        X2[0, 0] = 9.0
        other = cache.get(t, X2)
        assert cache.misses == 3
        torch.testing.assert_close(other, _reference(t, X2), rtol=1e-6, atol=1e-6)
        cache.get(t, X, split="val")
        assert cache.misses == 4
        assert len(list(tmp_path.glob("*.safetensors"))) == 4
        assert not [p for p in tmp_path.iterdir() if p.suffix != ".safetensors"]  # no temp files left

    def test_run_folder_teacher_hits_across_loads(self, tmp_path, X):
        from darkknowledge.checkpoint import save_model
        from darkknowledge.models import build_model

        m = build_model("mlp", input_shape=(D,), num_classes=C, hidden=[8], seed=0)
        save_model(tmp_path / "run", m)
        cache = SoftTargetCache(tmp_path / "cache")
        a = cache.get(tmp_path / "run", X)  # loaded once here ...
        b = cache.get(str(tmp_path / "run"), X)  # ... and again: same content, same key
        assert (cache.misses, cache.hits) == (1, 1)
        assert torch.equal(a, b)
        with torch.no_grad():
            torch.testing.assert_close(a, m.eval()(X), rtol=1e-6, atol=1e-6)

    def test_file_content_is_plain_arrays(self, tmp_path, X):
        t = Counting()
        cache = SoftTargetCache(tmp_path)
        cache.get(t, X, split="train")
        key = fingerprint(t, X, split="train", dtype="float32", top_k=None)
        stored = safetensors.torch.load_file(str(cache.path_for(key)))
        assert list(stored) == ["logits"]
        torch.testing.assert_close(stored["logits"], _reference(t, X), rtol=1e-6, atol=1e-6)

    @pytest.mark.parametrize(
        "damage",
        ["truncate", "flip_payload_byte", "garbage", "empty", "wrong_entry"],
    )
    def test_corrupt_file_detected_and_rebuilt(self, tmp_path, X, damage):
        t = Counting()
        cache = SoftTargetCache(tmp_path)
        good = cache.get(t, X)
        path = cache.path_for(fingerprint(t, X, split="train", dtype="float32", top_k=None))
        data = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(data[: len(data) - 37])
        elif damage == "flip_payload_byte":
            path.write_bytes(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
        elif damage == "garbage":
            path.write_bytes(b"not a safetensors file at all" * 10)
        elif damage == "empty":
            path.write_bytes(b"")
        else:  # a valid file of another entry under this name
            other = SoftTargetCache(tmp_path / "other")
            other.get(t, X, split="val")
            path.write_bytes(other.path_for(fingerprint(t, X, split="val", dtype="float32", top_k=None)).read_bytes())
        calls = t.calls
        with pytest.warns(CacheCorruptionWarning, match=r"soft-target cache file .*\.safetensors is corrupt"):
            rebuilt = cache.get(t, X)
        assert t.calls > calls and cache.rebuilt == 1
        assert torch.equal(rebuilt, good)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(cache.get(t, X), good)  # the rebuilt file is valid: a silent hit
        assert cache.hits == 1

    def test_float16_storage(self, tmp_path, X):
        t = Counting()
        out = cached_teacher_logits(t, X, cache_dir=tmp_path, dtype="float16")
        ref = _reference(t, X)
        assert out.dtype == torch.float32
        # exactly float16 rounding of the float32 logits (round to nearest, relative error <= 2^-11)
        ref16 = torch.from_numpy(ref.numpy().astype(np.float16).astype(np.float32))
        assert torch.equal(out, ref16)
        assert float(((out - ref).abs() / ref.abs().clamp(min=1e-4)).max()) <= 2.0**-11
        key = fingerprint(t, X, split="train", dtype="float16", top_k=None)
        stored = safetensors.torch.load_file(str(SoftTargetCache(tmp_path).path_for(key)))
        assert stored["logits"].dtype == torch.float16
        # float16 and float32 entries are separate
        calls = t.calls
        cached_teacher_logits(t, X, cache_dir=tmp_path, dtype="float32")
        assert t.calls > calls

    def test_top_k_equal_to_c_is_exact(self, tmp_path, X):
        t = Counting()
        out = cached_teacher_logits(t, X, cache_dir=tmp_path, top_k=C)
        ref = _reference(t, X).double().numpy()
        for temperature in (1.0, 4.0, 20.0):
            np.testing.assert_allclose(
                (out.double() / temperature).softmax(1).numpy(), sp_softmax(ref / temperature, axis=1),
                rtol=1e-6, atol=1e-9,
            )
        stored = safetensors.torch.load_file(str(next(tmp_path.glob("*.safetensors"))))
        assert sorted(stored) == ["rest_logsumexp", "topk_indices", "topk_values"]
        assert stored["topk_values"].shape == (40, C)

    def test_top_k_keeps_top_probabilities_and_spreads_the_rest(self, tmp_path, X):
        t = Counting()
        k = 2
        out = cached_teacher_logits(t, X, cache_dir=tmp_path, top_k=k).double()
        full = sp_softmax(_reference(t, X).double().numpy(), axis=1)  # (N, C)
        p = out.softmax(1).numpy()
        top = np.argsort(-full, axis=1)[:, :k]
        rows = np.arange(40)[:, None]
        np.testing.assert_allclose(p[rows, top], full[rows, top], rtol=1e-5, atol=1e-7)
        rest = np.ones_like(p, dtype=bool)
        rest[rows, top] = False
        tail = p[rest].reshape(40, C - k)
        np.testing.assert_allclose(tail, np.repeat(tail[:, :1], C - k, axis=1), rtol=1e-6)  # uniform
        np.testing.assert_allclose(tail.sum(1), 1 - full[rows, top].sum(1), rtol=1e-5, atol=1e-7)

    def test_errors(self, tmp_path, X):
        t = Counting()
        with pytest.raises(ValueError, match=r"dtype must be one of 'float32', 'float16'; got 'bfloat16' instead"):
            cached_teacher_logits(t, X, cache_dir=tmp_path, dtype="bfloat16")
        with pytest.raises(ValueError, match=r"top_k must be an integer >= 1, got 0 instead"):
            cached_teacher_logits(t, X, cache_dir=tmp_path, top_k=0)
        with pytest.raises(ValueError, match=rf"top_k must be at most the number of classes \({C}\), got 9 instead"):
            cached_teacher_logits(t, X, cache_dir=tmp_path, top_k=9)
        with pytest.raises(TypeError, match=r"split must be a non-empty string, got '' instead"):
            cached_teacher_logits(t, X, cache_dir=tmp_path, split="")
        with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got -1 instead"):
            cached_teacher_logits(t, X, cache_dir=tmp_path, batch_size=-1)
        with pytest.raises(TypeError, match=r"root must be a path \(str or os.PathLike\), got int instead"):
            SoftTargetCache(3)
        assert t.calls == 1  # only the top_k=9 call reached the teacher (C is known after it runs)


# ------------------------------------------------------------------------------ top-k helpers


class TestTopK:
    def test_compress_matches_numpy(self):
        z = torch.randn(8, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        v, i, r = compress_top_k(z, k=3)
        zn = z.numpy()
        order = np.argsort(-zn, axis=1)[:, :3]
        np.testing.assert_array_equal(i.numpy(), order)
        np.testing.assert_array_equal(v.numpy(), np.take_along_axis(zn, order, axis=1))
        mask = np.ones_like(zn, dtype=bool)
        np.put_along_axis(mask, order, False, axis=1)
        ref = np.log(np.exp(zn[mask].reshape(8, 4)).sum(1))
        np.testing.assert_allclose(r.numpy(), ref, rtol=1e-12)
        _, _, r_all = compress_top_k(z, k=7)
        assert bool(torch.isinf(r_all).all()) and bool((r_all < 0).all())

    def test_dense_k_equal_c_reproduces_logits(self):
        z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
        assert torch.equal(dense_logits(*compress_top_k(z, k=4), num_classes=4), z)

    def test_errors(self):
        z = torch.zeros(2, 3)
        with pytest.raises(ValueError, match=r"k must be at most the number of classes \(3\), got 4 instead"):
            compress_top_k(z, k=4)
        with pytest.raises(ValueError, match=r"logits must have shape \(N, C\), got \(3,\) instead"):
            compress_top_k(torch.zeros(3), k=1)
        with pytest.raises(TypeError, match=r"logits must be floating point, got torch.int64 instead"):
            compress_top_k(torch.zeros(2, 3, dtype=torch.int64), k=1)
        v, i, r = compress_top_k(z, k=2)
        with pytest.raises(ValueError, match=r"num_classes must be at least k=2, got 1 instead"):
            dense_logits(v, i, r, num_classes=1)
        with pytest.raises(ValueError, match=r"values, indices and rest_logsumexp must have shapes"):
            dense_logits(v, i[:1], r, num_classes=3)


# ------------------------------------------------------------------------------ analysis


def _synthetic(seed: int = 0, n: int = 300, c: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    z = rng.normal(size=(n, c)) + 5.0 * np.eye(c)[y]
    z[y == 2, 3] += 3.0  # class 2 resembles class 3
    return z.astype(np.float32), y


class TestAnalyse:
    def test_entropy_and_dark_mass_vs_scipy(self):
        z, y = _synthetic()
        out = analyse_soft_targets(torch.from_numpy(z), torch.from_numpy(y), temperatures=(1, 4, 20))
        assert set(out) == {"examples", "per_class_entropy_bits", "dark_mass", "similar_classes"}
        assert list(out["per_class_entropy_bits"]) == ["1", "4", "20"]
        for key, t in (("1", 1.0), ("4", 4.0), ("20", 20.0)):
            p = sp_softmax(z.astype(np.float64) / t, axis=1)
            for c in range(4):
                ent = np.mean([sp_entropy(row, base=2) for row in p[y == c]])
                assert out["per_class_entropy_bits"][key][c] == pytest.approx(ent, rel=1e-9)
                dark = np.mean(1.0 - p[y == c, c])
                assert out["dark_mass"][key][c] == pytest.approx(dark, rel=1e-9)
        # softer targets: higher entropy and more dark mass
        assert all(a < b for a, b in zip(out["per_class_entropy_bits"]["1"], out["per_class_entropy_bits"]["20"]))
        assert all(a < b for a, b in zip(out["dark_mass"]["1"], out["dark_mass"]["20"]))

    def test_similar_classes_by_hand(self):
        z, y = _synthetic()
        out = analyse_soft_targets(z, y, similarity_temperature=4.0)
        p = sp_softmax(z.astype(np.float64) / 4.0, axis=1)
        expected = []
        for c in range(4):
            mean = p[y == c].mean(axis=0)
            others = [j for j in np.argsort(-mean, kind="stable") if j != c]
            expected.append([c, [int(j) for j in others]])
        assert out["similar_classes"] == expected
        assert out["similar_classes"][2][1][0] == 3  # the planted resemblance

    def test_examples_and_json(self):
        z, y = _synthetic()
        names = ["zero", "one", "two", "three"]
        ex = examples(z, y, indices=[0, 5], temperatures=(1, 2.5), class_names=names)
        assert [e["index"] for e in ex] == [0, 5]
        assert ex[1]["label"] == int(y[5]) and ex[1]["label_name"] == names[int(y[5])]
        np.testing.assert_allclose(ex[1]["probs"]["2.5"], sp_softmax(z[5].astype(np.float64) / 2.5), rtol=1e-9)
        out = analyse_soft_targets(z, y, class_names=names)
        first = [int(np.flatnonzero(y == c)[0]) for c in range(4)]
        assert [e["index"] for e in out["examples"]] == first
        json.dumps(out, allow_nan=False)  # plain numbers only

    def test_absent_class_is_null(self):
        z = np.array([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0]], dtype=np.float32)
        out = analyse_soft_targets(z, np.array([0, 1]), temperatures=(1,))
        assert out["per_class_entropy_bits"]["1"][2] is None and out["dark_mass"]["1"][2] is None
        assert [c for c, _ in out["similar_classes"]] == [0, 1]
        json.dumps(out, allow_nan=False)

    def test_errors(self):
        z, y = _synthetic(n=10)
        with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got -1 instead"):
            analyse_soft_targets(z, y, temperatures=(1, -1))
        with pytest.raises(ValueError, match=r"temperatures must be distinct, got \[4, 4.0\] instead"):
            analyse_soft_targets(z, y, temperatures=(4, 4.0))
        with pytest.raises(TypeError, match=r"temperatures must be a non-empty sequence of numbers, got \(\) instead"):
            analyse_soft_targets(z, y, temperatures=())
        with pytest.raises(ValueError, match=r"y must hold class ids in \[0, 4\), got 7 instead"):
            analyse_soft_targets(z, np.full(10, 7))
        with pytest.raises(ValueError, match=r"y must be \(N,\) integer class ids with N=10, got shape \(9,\)"):
            analyse_soft_targets(z, y[:9])
        with pytest.raises(ValueError, match=r"teacher_logits must have shape \(N, C\), got \(10,\) instead"):
            analyse_soft_targets(z[:, 0], y)
        with pytest.raises(ValueError, match=r"class_names must have 4 entries, got 2 instead"):
            analyse_soft_targets(z, y, class_names=["a", "b"])
        with pytest.raises(ValueError, match=r"indices must be integers in \[0, 10\), got 10 instead"):
            examples(z, y, indices=[10])
        with pytest.raises(ValueError, match=r"similarity_temperature must be a finite number > 0, got 0 instead"):
            analyse_soft_targets(z, y, similarity_temperature=0)


def test_token_dict_inputs_are_cached_by_every_key(tmp_path):
    """Text teachers take {input_ids, attention_mask}: the cache keys on each tensor and hits on the same inputs."""
    from torch import nn

    from darkknowledge.soft_targets import cached_teacher_logits, fingerprint
    from darkknowledge.teachers import teacher_logits

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.EmbeddingBag(20, 3, mode="sum")

        def forward(self, input_ids, attention_mask):
            return {"logits": self.e(input_ids, per_sample_weights=attention_mask.float())}

    g = torch.Generator().manual_seed(0)
    X = {"input_ids": torch.randint(0, 20, (10, 5), generator=g), "attention_mask": torch.ones(10, 5, dtype=torch.long)}
    teacher = Bag()
    first = cached_teacher_logits(teacher, X, cache_dir=tmp_path)
    assert torch.equal(first, teacher_logits(teacher, X))  # the teacher's own numbers
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    assert torch.equal(cached_teacher_logits(teacher, X, cache_dir=tmp_path), first)  # a hit: no new entry
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    masked = dict(X, attention_mask=X["attention_mask"].clone())
    masked["attention_mask"][0, 0] = 0
    assert fingerprint(teacher, masked) != fingerprint(teacher, X)  # every key counts
    with pytest.raises(TypeError, match=r"X must be a torch.Tensor, a numpy.ndarray or a dict of them, got list"):
        fingerprint(teacher, {"input_ids": [1, 2]})
