"""Data-parallel training: 2 gloo processes on 127.0.0.1 give the single-process result.

The references are independent of the distributed code: a plain single-process ``fit`` with the
same seed and global batch size (itself tested in test_train.py), and hand-made partitions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from darkknowledge import distributed as D
from darkknowledge.data import load_dataset, prepare_splits
from darkknowledge.models import build_model
from darkknowledge.train import fit

REPO = Path(__file__).resolve().parents[1]
FIT_KW = dict(epochs=3, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4, lr_schedule="cosine",
              seed=3, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digits():
    return prepare_splits(load_dataset("digits"), val_fraction=0.2, seed=0)


def _model():
    return build_model("mlp", input_shape=(64,), num_classes=10, seed=0, hidden=[32])


# ---------------------------------------------------------------- single-process helpers


def test_helpers_without_a_process_group():
    assert not D.is_distributed()
    assert (D.get_rank(), D.get_world_size(), D.is_main_process()) == (0, 1, True)
    assert D.all_reduce_sum([1.0, 2.5]).tolist() == [1.0, 2.5]
    x = torch.arange(6.0).reshape(3, 2)
    assert D.all_gather_rows(x, n_total=3) is x
    D.barrier()  # no-op


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4), (64, 1)])
def test_shards_and_shares_partition_the_rows(n, world):
    shards = [D.shard_range(n, rank=r, world_size=world) for r in range(world)]
    rows = np.concatenate([np.arange(a, b) for a, b in shards])
    np.testing.assert_array_equal(rows, np.arange(n))  # contiguous, in order, each row once
    assert max(b - a for a, b in shards) - min(b - a for a, b in shards) <= 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [D.rank_share(perm, rank=r, world_size=world) for r in range(world)]
    assert sorted(torch.cat(shares).tolist()) == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_resolve_device(monkeypatch):
    assert D.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert D.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device must be 'cpu' or 'auto' on this machine: 'cuda' was requested"):
            D.resolve_device("cuda")
        with pytest.raises(ValueError, match=r"device must be 'cpu' or 'auto' on this machine: 'cuda' was requested"):
            fit(_model(), _digits(), epochs=1, device="cuda", progress=False)
    with pytest.raises(ValueError, match=r"device must be one of 'auto', 'cpu', 'cuda'; got 'tpu' instead"):
        D.resolve_device("tpu")
    with pytest.raises(TypeError, match=r"device must be a str or torch.device, got int instead"):
        D.resolve_device(0)
    with pytest.raises(TypeError, match=r"amp must be a bool, got str instead"):
        fit(_model(), _digits(), epochs=1, amp="yes", progress=False)


def test_env_world_size_and_init_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.env_world_size() == 1
    ctx = D.init_from_env(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, None, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "zero")
    with pytest.raises(ValueError, match=r"the WORLD_SIZE environment variable must be an integer >= 1, got 'zero'"):
        D.env_world_size()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 is set but MASTER_ADDR is not; start the processes with torchrun"):
        D.init_from_env(device="cpu")


def test_amp_bfloat16_trains_close_to_float32():
    data = _digits()
    ref = _model()
    fit(ref, data, **FIT_KW)
    model = _model()
    res = fit(model, data, amp=True, **FIT_KW)
    assert res.best_val_accuracy > 0.9  # bfloat16 forward still learns the digits
    drift = max(float((a - b).detach().abs().max()) for a, b in zip(ref.parameters(), model.parameters()))
    assert 0 < drift < 0.2  # a different (rounded) computation, but the same training


# ---------------------------------------------------------------- two processes


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = D.init_from_env(device="cpu")
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world, "gloo")
        data = _digits()
        model = _model()
        result = fit(model, data, out_dir=Path(out) / "run", **FIT_KW)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(out) / f"rank{rank}.safetensors"))
        with open(Path(out) / f"result{rank}.json", "w") as f:
            json.dump({"history": result.history, "best_epoch": result.best_epoch}, f)
        # soft targets: computed in shards, gathered, written once; then a hit on every rank
        from darkknowledge.soft_targets import SoftTargetCache

        teacher = build_model("mlp", input_shape=(64,), num_classes=10, seed=7, hidden=[16])
        cache = SoftTargetCache(Path(out) / "cache")
        first = cache.get(teacher, data.X_train, dtype="float16")
        again = cache.get(teacher, data.X_train, dtype="float16")
        save_file({"first": first, "again": again}, str(Path(out) / f"soft{rank}.safetensors"))
        with open(Path(out) / f"cache{rank}.json", "w") as f:
            json.dump({"hits": cache.hits, "misses": cache.misses}, f)
        # collectives: sums, ragged gather
        s = D.all_reduce_sum([rank + 1.0, 1.0])
        local = torch.arange(*D.shard_range(7)).float().unsqueeze(1)  # (n_r, 1)
        gathered = D.all_gather_rows(local, n_total=7)
        with open(Path(out) / f"collectives{rank}.json", "w") as f:
            json.dump({"sum": s.tolist(), "gathered": gathered.squeeze(1).tolist()}, f)
    finally:
        D.destroy()


def test_two_gloo_processes_match_one_process(tmp_path):
    data = _digits()
    ref = _model()
    ref_result = fit(ref, data, out_dir=tmp_path / "single", **FIT_KW)

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(r0[name], r1[name], rtol=0, atol=0)  # DDP keeps the ranks identical
        torch.testing.assert_close(r0[name], value, rtol=1e-5, atol=1e-5)  # and equal to one process
    h0 = json.loads((tmp_path / "result0.json").read_text())["history"]
    for mine, single in zip(h0, ref_result.history):
        assert mine["loss"] == pytest.approx(single["loss"], rel=1e-5)  # all-reduced over the global batch
        assert mine["accuracy"] == pytest.approx(single["accuracy"], abs=1e-12)
        assert mine["val_accuracy"] == pytest.approx(single["val_accuracy"], abs=1e-12)

    # artefacts written once, by rank 0: one line per epoch, the final model, the checkpoint
    run = tmp_path / "run"
    lines = (run / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert sorted(p.name for p in run.iterdir()) == [".darkknowledge-lock", ".darkknowledge-run", "checkpoint",
                                                     "config.json", "log.jsonl", "model.json", "model.safetensors"]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    stray = [p for p in run.rglob("*") if p.name.startswith(".") and p.name not in (".darkknowledge-lock", ".darkknowledge-run")]
    assert not stray  # no stray temporary files
    saved = load_file(str(run / "model.safetensors"))
    assert saved.keys() == r0.keys()
    for name in saved:
        torch.testing.assert_close(saved[name], r0[name], rtol=0, atol=0)

    # the soft targets: every row once, in order, as one process computes them; one cache file
    teacher = build_model("mlp", input_shape=(64,), num_classes=10, seed=7, hidden=[16]).eval()
    with torch.no_grad():
        expected = teacher(data.X_train).half().float()  # (N, C) rounded as the float16 cache stores
    for r in (0, 1):
        soft = load_file(str(tmp_path / f"soft{r}.safetensors"))
        torch.testing.assert_close(soft["first"], expected, rtol=0, atol=0)
        torch.testing.assert_close(soft["again"], expected, rtol=0, atol=0)
        assert json.loads((tmp_path / f"cache{r}.json").read_text()) == {"hits": 1, "misses": 1}
    assert len(list((tmp_path / "cache").iterdir())) == 1

    c0, c1 = (json.loads((tmp_path / f"collectives{r}.json").read_text()) for r in (0, 1))
    assert c0 == c1 == {"sum": [3.0, 2.0], "gathered": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}


@pytest.mark.slow
def test_torchrun_cli_train_writes_once(tmp_path):
    """``torchrun --nproc-per-node=2 -m darkknowledge train`` (as python -m torch.distributed.run)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", "-m", "darkknowledge", "train", "--dataset", "digits",
           "--model", "mlp", "--hidden", "32", "--epochs", "3", "--batch-size", "64", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # only rank 0 prints
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.8


@pytest.mark.slow
def test_torchrun_cli_run_matches_one_process(tmp_path):
    """The whole main job under ``torchrun --nproc-per-node=2``: same test errors as one process, written once."""
    config = tmp_path / "small.yaml"
    config.write_text(
        "teacher: {model: {name: mlp, options: {hidden: [64]}}, train: {epochs: 3}}\n"
        "student: {model: {name: mlp, options: {hidden: [8]}}, train: {epochs: 3}}\n"
        "distill: {sweep: {temperatures: [2.0, 4.0], alphas: [0.1], epochs: 2}}\n"
        "seeds: [0]\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "darkknowledge", "run", str(config), "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
                          f"--master-port={_free_port()}", "-m", "darkknowledge", "run", str(config),
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # only rank 0 prints
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    for a, b in zip(r1["models"], r2["models"]):
        assert abs(a["test_errors"] - b["test_errors"]) <= 2, (a["name"], a["test_errors"], b["test_errors"])
    assert len((tmp_path / "two" / "student-distilled" / "seed-0" / "log.jsonl").read_text().splitlines()) == 3
