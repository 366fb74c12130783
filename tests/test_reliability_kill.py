"""Faults: nothing lost.

* ``darkknowledge train`` killed with SIGKILL at random moments (before the first checkpoint and
  after), then resumed with ``--resume`` until done, ends with the same weights, bit for bit, as a
  run never interrupted;
* a crash during a checkpoint or soft-target-cache write leaves the previous file intact and
  loadable; a stray half-written temporary file is ignored; a truncated file is never read as
  valid (an error naming it, or for the cache a warning and a rebuild);
* an output folder holding a finished run is never silently overwritten.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from darkknowledge import checkpoint as ckpt_mod
from darkknowledge.checkpoint import load_model, load_training_state
from darkknowledge.cli import main
from darkknowledge.data._types import Splits
from darkknowledge.models import build_model
from darkknowledge.soft_targets import CacheCorruptionWarning, SoftTargetCache
from darkknowledge.train import fit

CHECKPOINT = Path("checkpoint") / "last.safetensors"


# --------------------------------------------------------------------------------------------
# SIGKILL at random moments, then --resume


def _train_argv(out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "darkknowledge", "train", "--dataset", "digits", "--model", "mlp",
            "--hidden", "64", "--dropout", "0.1", "--epochs", str(epochs), "--out", str(out)]


def _env() -> dict[str, str]:
    # one thread in every run (reference and interrupted alike): less contention on a shared CPU
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _kill_and_resume(out: Path, epochs: int, kills_after_checkpoint: int, rng: random.Random) -> dict[str, int]:
    """Run training in ``out``, SIGKILL it once early and ``kills_after_checkpoint`` times after a new
    checkpoint appeared, resuming each time; finally resume to the end. Returns counts of what happened."""
    counts = {"early_kills": 0, "kills_after_checkpoint": 0}
    ckpt = out / CHECKPOINT
    # 1. killed early: usually while Python starts or the first epoch runs, before any checkpoint
    proc = subprocess.Popen(_train_argv(out, epochs), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.3, 2.5))
    if proc.poll() is None:
        proc.kill()
        counts["early_kills"] += 1
    proc.wait()
    # 2. killed at a random moment after a new checkpoint was written (maybe during the next write)
    for _ in range(kills_after_checkpoint):
        before = _mtime(ckpt)
        proc = subprocess.Popen(_train_argv(out, epochs) + ["--resume"], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _mtime(ckpt) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.kill()
            counts["kills_after_checkpoint"] += 1
        proc.wait()
    # 3. resume until done
    done = subprocess.run(_train_argv(out, epochs) + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return counts


def _assert_same_final_weights(out: Path, ref: Path, epochs: int, note: str) -> None:
    got, want = load_file(out / "model.safetensors"), load_file(ref / "model.safetensors")
    assert sorted(got) == sorted(want), note
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name} differs after kill/resume ({note})"
    # the log holds every epoch exactly once, and the same training losses as the reference
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if line]
    ref_log = [line for line in (ref / "log.jsonl").read_text().splitlines() if line]
    epochs_logged = [int(re.search(r'"epoch": (\d+)', line).group(1)) for line in log]
    assert epochs_logged == list(range(1, epochs + 1)), note
    loss = lambda line: re.search(r'"loss": ([^,]+)', line).group(1)  # noqa: E731
    assert [loss(a) for a in log] == [loss(b) for b in ref_log], note


def _kill_test(tmp_path: Path, *, epochs: int, kills: int, rng_seed: int) -> None:
    rng = random.Random(rng_seed)
    ref = tmp_path / "reference"
    reference = subprocess.Popen(_train_argv(ref, epochs), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    counts = _kill_and_resume(tmp_path / "killed", epochs, kills, rng)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    note = f"rng_seed={rng_seed}, {counts}"
    assert counts["kills_after_checkpoint"] >= 1, note  # at least one kill landed mid-run
    _assert_same_final_weights(tmp_path / "killed", ref, epochs, note)


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    _kill_test(tmp_path, epochs=5, kills=2, rng_seed=int.from_bytes(os.urandom(4), "little"))


@pytest.mark.slow
@pytest.mark.parametrize("rng_seed", [1, 2, 3])
def test_sigkill_many_times_then_resume_gives_identical_weights(tmp_path, rng_seed):
    _kill_test(tmp_path, epochs=15, kills=10, rng_seed=rng_seed)


# --------------------------------------------------------------------------------------------
# a crash during a write leaves the previous file intact


class SimulatedKill(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it on the way up."""


def _toy_splits(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(96, 5, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.8).long()  # 3 classes
    return Splits(X[:64], y[:64], X[64:], y[64:], class_names=["a", "b", "c"])


def _model():
    return build_model("mlp", input_shape=(5,), num_classes=3, hidden=[8], dropout=0.2, seed=0)


FIT = dict(epochs=5, batch_size=16, lr=0.1, momentum=0.9, seed=3, progress=False)


def test_crash_during_checkpoint_write_keeps_previous_and_resume_matches(tmp_path, monkeypatch):
    data = _toy_splits()
    reference = _model()
    fit(reference, data, out_dir=tmp_path / "ref", **FIT)

    real_replace = os.replace
    writes = {"n": 0}

    def dying_replace(src, dst):
        if str(dst).endswith("last.safetensors"):
            writes["n"] += 1
            if writes["n"] == 3:  # the third epoch's checkpoint: the temp file is written, the rename never happens
                raise SimulatedKill()
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", dying_replace)
    run = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        fit(_model(), data, out_dir=run, **FIT)
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)

    tensors, state = load_training_state(run / CHECKPOINT)  # the previous checkpoint, whole
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["last.safetensors"]  # temp file removed

    resumed = _model()
    result = fit(resumed, data, out_dir=run, resume=True, **FIT)
    assert result.epochs_run == 5
    for (name, a), (_, b) in zip(resumed.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_stray_half_written_temp_file_is_ignored(tmp_path):
    # what SIGKILL during a write leaves behind: a partial temporary file beside the real checkpoint
    data = _toy_splits()
    reference = _model()
    fit(reference, data, out_dir=tmp_path / "ref", **FIT)
    run = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        fit(_model(), data, out_dir=run, on_epoch_end=_die_after(2), **FIT)
    whole = (run / CHECKPOINT).read_bytes()
    stray = run / "checkpoint" / ".last.safetensors.k1ll3d.tmp"
    stray.write_bytes(whole[: len(whole) // 3])
    resumed = _model()
    fit(resumed, data, out_dir=run, resume=True, **FIT)
    assert not stray.exists()  # a stale temporary file of the run is removed when it starts again
    for (name, a), (_, b) in zip(resumed.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def _die_after(epoch):
    def on_epoch_end(e, metrics):
        if e == epoch:
            raise SimulatedKill()
    return on_epoch_end


def test_truncated_checkpoint_is_refused_with_its_name(tmp_path, capsys):
    out = tmp_path / "run"
    X = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(40) % 2)
    argv = ["train", "--dataset", str(tmp_path / "d.npz"), "--model", "mlp", "--hidden", "4", "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    whole = (out / CHECKPOINT).read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, 7):
        (out / CHECKPOINT).write_bytes(whole[:cut])
        capsys.readouterr()
        assert main(argv + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert re.search(r"darkknowledge: error: .*last\.safetensors is not a readable training state \(.*\); the file is corrupt\.", err), err
        assert "Traceback" not in err


@pytest.mark.parametrize("cut", [0, 8, 100, -1])
def test_truncated_model_weights_are_rejected(tmp_path, cut):
    model = _model()
    ckpt_mod.save_model(tmp_path, model)
    path = tmp_path / "model.safetensors"
    whole = path.read_bytes()
    path.write_bytes(whole[:cut] if cut >= 0 else whole[:-1])
    with pytest.raises(ValueError, match=r"model\.safetensors does not match the SHA-256 recorded in .*model\.json: expected [0-9a-f]{64}, got [0-9a-f]{64}; the file is corrupt, half-written or was altered\."):
        load_model(tmp_path)


def test_crash_between_weights_and_json_is_detected(tmp_path, monkeypatch):
    # save_model writes the weights, then model.json: dying in between leaves new weights, old JSON
    old, new = _model(), build_model("mlp", input_shape=(5,), num_classes=3, hidden=[8], dropout=0.2, seed=1)
    ckpt_mod.save_model(tmp_path, old)
    real = ckpt_mod.atomic_write_json

    def die(*args, **kwargs):
        raise SimulatedKill()

    monkeypatch.setattr(ckpt_mod, "atomic_write_json", die)
    with pytest.raises(SimulatedKill):
        ckpt_mod.save_model(tmp_path, new)
    monkeypatch.setattr(ckpt_mod, "atomic_write_json", real)
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load_model(tmp_path)


# --------------------------------------------------------------------------------------------
# the soft-target cache


def _teacher_and_X():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4)).eval(), torch.randn(50, 5)


def test_crash_during_cache_write_keeps_other_entries_and_rebuilds(tmp_path, monkeypatch):
    teacher, X = _teacher_and_X()
    with torch.no_grad():
        want_a, want_b = teacher(X), teacher(X[:20])
    cache = SoftTargetCache(tmp_path)
    assert torch.equal(cache.get(teacher, X), want_a)  # entry A, written whole
    files_before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def dying_replace(src, dst):
        raise SimulatedKill()

    monkeypatch.setattr(ckpt_mod.os, "replace", dying_replace)
    with pytest.raises(SimulatedKill):
        cache.get(teacher, X[:20])  # entry B dies mid-write
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files_before  # A intact, nothing half-written

    cache = SoftTargetCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hit on A, a clean miss on B: no corruption warning
        assert torch.equal(cache.get(teacher, X), want_a)
        assert torch.equal(cache.get(teacher, X[:20]), want_b)
    assert (cache.hits, cache.misses, cache.rebuilt) == (1, 1, 0)


@pytest.mark.parametrize("cut", [0, 7, 60, -4])
def test_truncated_cache_file_is_never_read_as_valid(tmp_path, cut):
    teacher, X = _teacher_and_X()
    with torch.no_grad():
        want = teacher(X)
    cache = SoftTargetCache(tmp_path)
    cache.get(teacher, X)
    (path,) = list(tmp_path.iterdir())
    whole = path.read_bytes()
    path.write_bytes(whole[:cut] if cut >= 0 else whole[:cut])
    cache = SoftTargetCache(tmp_path)
    with pytest.warns(CacheCorruptionWarning, match=rf"soft-target cache file {path.name} is corrupt .*recomputing the teacher's logits"):
        got = cache.get(teacher, X)
    assert torch.equal(got, want)
    assert (cache.hits, cache.misses, cache.rebuilt) == (0, 1, 1)
    again = SoftTargetCache(tmp_path)
    assert torch.equal(again.get(teacher, X), want) and again.hits == 1  # rebuilt whole: a clean hit now


# --------------------------------------------------------------------------------------------
# a finished run is never silently overwritten


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_refuses_to_overwrite_a_finished_run(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(40) % 2)
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "d.npz"), "--model", "mlp", "--hidden", "4", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(argv + ["--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"darkknowledge: error: --out '.*run' already holds a finished run; pass --force to overwrite it or --resume\.", err), err
    assert "Traceback" not in err
    assert _snapshot(out) == before  # not a byte, not a timestamp changed
    assert main(argv + ["--force", "--lr", "0.01"]) == 0  # --force overwrites
    assert _snapshot(out)["model.safetensors"] != before["model.safetensors"]


def test_run_refuses_to_overwrite_a_finished_run(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(60, 4))
    y = np.arange(60) % 3
    np.savez(tmp_path / "d.npz", X=X, y=y, X_test=X[:15], y_test=y[:15])
    small = "{model: {name: mlp, options: {hidden: [4]}}, train: {epochs: 1, batch_size: 16}}"
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset: {{name: {tmp_path / 'd.npz'}}}\nteacher: {small}\nstudent: {small}\n"
                      f"distill: {{sweep: {{temperatures: [], alphas: []}}}}\nseeds: [0]\nout_dir: {tmp_path / 'run'}\n")
    assert main(["run", str(config)]) == 0
    before = _snapshot(tmp_path / "run")
    assert "results.json" in before
    capsys.readouterr()
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"darkknowledge: error: output folder '.*run' already holds a run \(results\.json\); pass --force to overwrite it or choose another --out\.", err), err
    assert "Traceback" not in err
    assert _snapshot(tmp_path / "run") == before  # not a byte, not a timestamp changed
