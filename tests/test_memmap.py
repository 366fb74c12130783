"""Soft targets and training data larger than memory: streamed .npy files, memory-mapped reads.

References: the teacher's forward pass on the whole tensor (float32, and rounded with torch's
``.half()``), ``torch.softmax``, ``np.load`` of the files, and an in-memory ``fit`` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from darkknowledge.data._types import Splits
from darkknowledge.memmap import (
    MemmapSoftTargets,
    iter_row_blocks,
    open_npy_splits,
    stream_fingerprint,
    stream_teacher_logits,
)
from darkknowledge.models import build_model
from darkknowledge.soft_targets import fingerprint
from darkknowledge.train import fit


class Counting(torch.nn.Module):
    def __init__(self, d: int = 6, c: int = 7, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, c))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _X(tmp_path, n=203, d=6, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    return X, np.load(tmp_path / "X.npy", mmap_mode="r")


def _reference(teacher, X):
    with torch.no_grad():
        return teacher.net(torch.from_numpy(np.array(X)))  # (N, C) float32, one pass


def test_dense_float32_and_float16_match_the_teacher(tmp_path):
    X, Xm = _X(tmp_path)
    teacher = Counting()
    ref = _reference(teacher, X)
    soft32 = stream_teacher_logits(teacher, Xm, cache_dir=tmp_path / "c", dtype="float32", block_rows=50)
    assert soft32.shape == (203, 7) and len(soft32) == 203
    torch.testing.assert_close(soft32[torch.arange(203)], ref, rtol=1e-6, atol=1e-6)
    soft16 = stream_teacher_logits(teacher, Xm, cache_dir=tmp_path / "c", dtype="float16", block_rows=64)
    torch.testing.assert_close(soft16[torch.arange(203)], ref.half().float(), rtol=0, atol=1e-3)
    # the files are plain .npy, readable with numpy alone
    on_disk = np.load(soft16.folder / "logits.npy")
    assert on_disk.dtype == np.float16 and on_disk.shape == (203, 7)
    np.testing.assert_allclose(on_disk.astype(np.float32), ref.half().float().numpy(), rtol=0, atol=1e-3)
    assert soft16.folder != soft32.folder


def test_top_k_keeps_the_top_probabilities(tmp_path):
    X, Xm = _X(tmp_path)
    teacher = Counting()
    p = torch.softmax(_reference(teacher, X).double(), dim=1)  # (N, C)
    soft = stream_teacher_logits(teacher, Xm, cache_dir=tmp_path, dtype="float32", top_k=3, block_rows=40)
    q = torch.softmax(soft[torch.arange(203)].double(), dim=1)
    top = p.topk(3, dim=1).indices
    torch.testing.assert_close(q.gather(1, top), p.gather(1, top), rtol=1e-5, atol=1e-6)
    rest_p = 1 - p.gather(1, top).sum(1)
    mask = torch.ones_like(p, dtype=torch.bool).scatter(1, top, False)
    torch.testing.assert_close(q[mask].reshape(203, 4), (rest_p / 4).unsqueeze(1).expand(203, 4), rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(soft.folder)) == ["meta.json", "rest_logsumexp.npy", "topk_indices.npy", "topk_values.npy"]


def test_gather_any_order_duplicates_negatives(tmp_path):
    X, Xm = _X(tmp_path)
    soft = stream_teacher_logits(Counting(), Xm, cache_dir=tmp_path, dtype="float32", release_every=2)
    full = torch.from_numpy(np.load(soft.folder / "logits.npy"))
    idx = torch.tensor([200, 3, 3, 0, 150, -1])
    torch.testing.assert_close(soft[idx], full[idx], rtol=0, atol=0)
    torch.testing.assert_close(soft[np.array([5, 1])], full[[5, 1]], rtol=0, atol=0)
    torch.testing.assert_close(soft[10:13], full[10:13], rtol=0, atol=0)
    torch.testing.assert_close(soft[4], full[4], rtol=0, atol=0)
    assert soft._maps is None  # released after every 2nd gather (4 gathers so far)
    with pytest.raises(IndexError, match=r"index must hold rows in \[-203, 203\), got values from 0 to 203 instead"):
        soft[torch.tensor([0, 203])]
    with pytest.raises(TypeError, match=r"index must be a 1-d integer tensor or array, a slice or an int, got"):
        soft[torch.tensor([0.5])]


def test_cache_hit_verify_and_rebuild(tmp_path):
    X, Xm = _X(tmp_path)
    teacher = Counting()
    first = stream_teacher_logits(teacher, Xm, cache_dir=tmp_path / "c", block_rows=100)
    calls = teacher.calls
    assert calls == 3
    again = stream_teacher_logits(teacher, torch.from_numpy(X), cache_dir=tmp_path / "c", block_rows=100)
    assert teacher.calls == calls and again.folder == first.folder  # tensor or memmap: same content key
    meta = json.loads((first.folder / "meta.json").read_text())
    assert meta["fingerprint"] == first.fingerprint and meta["rows"] == 203 and meta["dtype"] == "float16"
    # corrupt one logit: the checksum catches it and the folder is rebuilt
    path = first.folder / "logits.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"logits.npy in .* fails its SHA-256 checksum"):
        MemmapSoftTargets(first.folder).verify()
    rebuilt = stream_teacher_logits(teacher, Xm, cache_dir=tmp_path / "c", block_rows=100)
    assert teacher.calls == calls + 3
    rebuilt.verify()
    # a changed teacher is a different key
    other = stream_teacher_logits(Counting(seed=1), Xm, cache_dir=tmp_path / "c", block_rows=100)
    assert other.folder != first.folder
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted([first.folder.name, other.folder.name])


def test_interrupted_stream_leaves_nothing(tmp_path):
    X, Xm = _X(tmp_path)

    class Boom(Counting):
        def forward(self, x):
            if self.calls == 2:
                raise RuntimeError("teacher crashed")
            return super().forward(x)

    with pytest.raises(RuntimeError, match="teacher crashed"):
        stream_teacher_logits(Boom(), Xm, cache_dir=tmp_path / "c", block_rows=50)
    assert list((tmp_path / "c").iterdir()) == []


def test_fingerprint_streamed_equals_whole(tmp_path):
    X, Xm = _X(tmp_path)
    net = Counting()
    assert stream_fingerprint(net, Xm, block_rows=17, split="x") == fingerprint(net, X, split="x")
    blocks = list(iter_row_blocks(Xm, block_rows=64))
    assert [s for s, _ in blocks] == [0, 64, 128, 192]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), X)
    view = Xm[10:]  # a view of a memmap is read through numpy, not by (stale) file offset
    np.testing.assert_array_equal(np.concatenate([b for _, b in iter_row_blocks(view, block_rows=50)]), X[10:])


def test_argument_errors(tmp_path):
    X, Xm = _X(tmp_path)
    with pytest.raises(ValueError, match=r"dtype must be one of 'float32', 'float16'"):
        stream_teacher_logits(Counting(), Xm, cache_dir=tmp_path, dtype="int8")
    with pytest.raises(ValueError, match=r"top_k must be at most the number of classes \(7\), got 9 instead"):
        stream_teacher_logits(Counting(), Xm, cache_dir=tmp_path, top_k=9)
    with pytest.raises(TypeError, match=r"X must be a numpy.ndarray \(or memmap\) or torch.Tensor, got list instead"):
        stream_teacher_logits(Counting(), [[1.0]], cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no meta.json"):
        MemmapSoftTargets(tmp_path)


# ---------------------------------------------------------------- user data as memory maps


class RecordingMemmap(np.memmap):
    """A memmap that records how many rows each read asks for."""

    reads: list[int] = []

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):
            RecordingMemmap.reads.append(len(key))
        elif isinstance(key, slice):
            RecordingMemmap.reads.append(len(range(*key.indices(self.shape[0]))))
        return super().__getitem__(key)


def _blobs_folder(tmp_path, n=300):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    X = (rng.standard_normal((n, 5)) + 2.0 * np.eye(3, 5)[y]).astype(np.float32)
    np.save(tmp_path / "X_train.npy", X)
    np.save(tmp_path / "y_train.npy", y)
    np.save(tmp_path / "X_val.npy", X[:50])
    np.save(tmp_path / "y_val.npy", y[:50])
    return X, y


def test_fit_on_a_memmap_equals_fit_in_memory_and_reads_only_minibatches(tmp_path):
    X, y = _blobs_folder(tmp_path)
    data = open_npy_splits(tmp_path)
    assert isinstance(data.X_train, np.memmap) and data.num_classes == 3 and data.input_shape == (5,)
    kw = dict(epochs=3, batch_size=32, lr=0.1, seed=0, progress=False)
    ref = build_model("mlp", input_shape=(5,), num_classes=3, seed=0, hidden=[8])
    fit(ref, Splits(torch.from_numpy(X), torch.from_numpy(y), data.X_val, data.y_val), **kw)

    rec = np.load(tmp_path / "X_train.npy", mmap_mode="r").view(RecordingMemmap)
    RecordingMemmap.reads = []
    model = build_model("mlp", input_shape=(5,), num_classes=3, seed=0, hidden=[8])
    result = fit(model, Splits(rec, data.y_train, data.X_val, data.y_val), out_dir=tmp_path / "run", **kw)
    for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same rows, same order, same run
    assert result.best_val_accuracy > 0.8
    assert RecordingMemmap.reads and max(RecordingMemmap.reads) <= 32  # never more than a minibatch
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["n_train"] == 300


def test_open_npy_splits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no X_train.npy and y_train.npy"):
        open_npy_splits(tmp_path)
    np.save(tmp_path / "X_train.npy", np.zeros((3, 2), np.float64))
    np.save(tmp_path / "y_train.npy", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"X_train.npy must hold float32 features of shape \(N, ...\), got float64"):
        open_npy_splits(tmp_path)
    np.save(tmp_path / "X_train.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "y_train.npy", np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"y_train.npy must hold 3 labels \(one per row of X_train.npy\), got 2"):
        open_npy_splits(tmp_path)
    np.save(tmp_path / "y_train.npy", np.zeros(3, np.int64))
    np.save(tmp_path / "X_val.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(FileNotFoundError, match=r"X_val.npy and y_val.npy must both exist"):
        open_npy_splits(tmp_path)
    with pytest.raises(TypeError, match=r"a NumPy array is accepted only as a memory map"):
        fit(build_model("mlp", input_shape=(2,), num_classes=2, hidden=[4]),
            Splits(np.zeros((3, 2), np.float32), torch.zeros(3, dtype=torch.long)))


@pytest.mark.slow
def test_fit_on_a_512_mb_memmap_stays_small(tmp_path):
    """One epoch over a 512 MB memmap, in a fresh process: peak RSS grows far less than the file."""
    n, d = 1 << 20, 128  # 1 Mi rows x 128 float32 = 512 MiB
    X = np.lib.format.open_memmap(tmp_path / "X_train.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 1 << 16):
        X[s : s + (1 << 16)] = np.random.default_rng(s).standard_normal((min(1 << 16, n - s), d), dtype=np.float32)
    X.flush()
    del X
    np.save(tmp_path / "y_train.npy", np.arange(n) % 2)
    code = textwrap.dedent(f"""
        import resource, torch
        from darkknowledge.memmap import open_npy_splits
        from darkknowledge.models import build_model
        from darkknowledge.train import fit
        torch.set_num_threads(1)
        data = open_npy_splits({str(tmp_path)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fit(build_model("softmax-regression", input_shape=(128,), num_classes=2, seed=0), data,
            epochs=1, batch_size=4096, lr=0.01, progress=False, lr_schedule="constant")
        print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    before_kb, after_kb = map(int, out.stdout.split())
    # minibatch rows are read with os.pread (no mapped pages, no copy of X): the peak grows by
    # buffers and autograd state only, far below the 512 MiB file
    assert (after_kb - before_kb) / 1024 < 256, (before_kb, after_kb)


def test_distill_reads_soft_targets_from_the_memmap(tmp_path):
    """distill() with a MemmapSoftTargets equals distill() with the same logits as a dense tensor."""
    from darkknowledge.distill import distill

    X, y = _blobs_folder(tmp_path)
    data = Splits(torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(X[:50]), torch.from_numpy(y[:50]),
                  class_names=["a", "b", "c"])
    teacher = build_model("mlp", input_shape=(5,), num_classes=3, seed=5, hidden=[16])
    soft = stream_teacher_logits(teacher, X, cache_dir=tmp_path / "c", dtype="float32", block_rows=64)
    dense = torch.from_numpy(np.load(soft.folder / "logits.npy"))
    kw = dict(temperature=3.0, alpha=0.3, transfer_fraction=0.5, epochs=2, batch_size=32, lr=0.05, progress=False)
    a = build_model("mlp", input_shape=(5,), num_classes=3, seed=0, hidden=[8])
    b = build_model("mlp", input_shape=(5,), num_classes=3, seed=0, hidden=[8])
    distill(a, dense, data, **kw)
    distill(b, soft, data, **kw)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"teacher logits must have shape \(N, C\) with N = 300 rows"):
        distill(b, soft.subset(torch.arange(10)), data, **kw)


def test_gather_rows_reads_a_memmap_by_pread(tmp_path):
    from darkknowledge.data.batches import gather_rows

    X, Xm = _X(tmp_path)
    rows = np.array([0, 5, 5, 202])
    np.testing.assert_array_equal(gather_rows(Xm, rows), X[rows])
    np.testing.assert_array_equal(gather_rows(Xm[1:], rows[:3]), X[1:][rows[:3]])  # a view: plain indexing
    np.testing.assert_array_equal(gather_rows(X, rows), X[rows])
    with pytest.raises(IndexError, match=r"rows must be in \[0, 203\), got values from 0 to 203 instead"):
        gather_rows(Xm, np.array([0, 203]))


def test_distill_reads_memory_mapped_features_and_soft_targets(tmp_path):
    """distill() on X_train.npy opened as a memmap and soft targets streamed to disk: X is never copied whole."""
    import numpy as np
    from torch import nn

    from darkknowledge.distill import distill
    from darkknowledge.memmap import open_npy_splits, stream_teacher_logits
    from darkknowledge.models import build_model

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6)).astype(np.float32)
    with torch.random.fork_rng(devices=[]):  # a fixed teacher, whatever the global RNG holds
        torch.manual_seed(0)
        teacher = nn.Linear(6, 3)
    with torch.no_grad():
        y = teacher(torch.from_numpy(X)).argmax(1).numpy()
    np.save(tmp_path / "X_train.npy", X)
    np.save(tmp_path / "y_train.npy", y)
    np.save(tmp_path / "X_val.npy", X[:50])
    np.save(tmp_path / "y_val.npy", y[:50])
    data = open_npy_splits(tmp_path, class_names=["a", "b", "c"])
    assert isinstance(data.X_train, np.memmap)
    soft = stream_teacher_logits(teacher, data.X_train, cache_dir=tmp_path / "cache", dtype="float32", block_rows=128)
    student = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[16], seed=0)
    result = distill(student, soft, data, temperature=2.0, alpha=0.0, epochs=3, batch_size=32, progress=False)
    assert result.transfer_size == 400
    with torch.no_grad():
        agree = (student.eval()(torch.from_numpy(X)).argmax(1) == torch.from_numpy(y)).float().mean().item()
    assert agree > 0.8


def test_cli_train_and_run_take_a_folder_of_npy_files(tmp_path, capsys):
    """`--dataset <folder>` and `dataset: {name: <folder>}` open the .npy files as memory maps, used as stored."""
    from darkknowledge.cli import main

    folder = tmp_path / "npy"
    folder.mkdir()
    X, y = _blobs_folder(folder)
    np.save(folder / "X_test.npy", X[50:110])
    np.save(folder / "y_test.npy", y[50:110])
    code = main(["train", "--dataset", str(folder), "--model", "mlp", "--hidden", "8", "--epochs", "2",
                 "--out", str(tmp_path / "t")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "npy: 300 train / 50 val / 60 test" in out.out
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["test"]["n_test"] == 60

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: {{name: {folder}}}\n"
                   "teacher: {model: {name: mlp, options: {hidden: [16]}}, train: {epochs: 2}}\n"
                   "student: {model: {name: mlp, options: {hidden: [4]}}, train: {epochs: 2}}\n"
                   "distill: {sweep: {temperatures: [], alphas: []}}\nseeds: [0]\n")
    code = main(["run", str(cfg), "--out", str(tmp_path / "r")])
    out = capsys.readouterr()
    assert code == 0, out.err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert {m["n_test"] for m in results["models"]} == {60}

    (folder / "X_val.npy").unlink()
    (folder / "y_val.npy").unlink()
    code = main(["run", str(cfg), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "has no validation split (X_val.npy / y_val.npy)" in err
