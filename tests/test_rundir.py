"""Run folders and caches: nothing of the user's is overwritten, no checkpoint is discarded silently,
no link is followed, no two processes share a folder, no FIFO hangs a run, temp files respect the umask
and are cleaned up, a float16 cache never stores inf (issue 9, items 5-8, 12, 17, 18)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from _helpers import SimulatedKill
from _helpers import run_data as _data
from _helpers import run_model as _model
from _helpers import die_after as _die_after
import torch

from darkknowledge import rundir
from darkknowledge.checkpoint import (
    NotARegularFileError,
    atomic_write_bytes,
    load_model,
    load_training_state,
    save_model,
)
from darkknowledge.cli import main
from darkknowledge.data._types import Splits
from darkknowledge.distill import distill
from darkknowledge.memmap import MemmapSoftTargets, open_npy_splits, stream_teacher_logits
from darkknowledge.models import build_model
from darkknowledge.rundir import LOCK, MARKER, RunFolderBusyError, RunFolderError, claim_run_dir
from darkknowledge.soft_targets import SoftTargetCache, cached_teacher_logits
from darkknowledge.train import fit

KW = dict(epochs=4, batch_size=16, lr=0.1, momentum=0.9, seed=3, progress=False)
CKPT = Path("checkpoint") / "last.safetensors"


def _check_error(code, err, message):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("darkknowledge: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), f"{message!r} not in {err!r}"


def _npz(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(40) % 2)
    return str(tmp_path / "d.npz")


def _train_argv(data, out, *extra):
    return ["train", "--dataset", data, "--model", "mlp", "--hidden", "4", "--epochs", "3", "--batch-size", "16",
            "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@contextlib.contextmanager
def _deadline(seconds):
    """Fail (instead of hanging forever) if the block takes longer than ``seconds``."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------------------------
# 5. an output folder is new, empty or a darkknowledge run folder; "" is an error


def test_empty_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("mine")
    with pytest.raises(RunFolderError, match=r"out_dir must name a folder, got '' instead \(an empty path would write into the current folder\)"):
        fit(_model(), _data(), out_dir="", **KW)
    teacher = torch.nn.Linear(5, 3)
    with pytest.raises(RunFolderError, match=r"cache_dir must name a folder, got '' instead"):
        distill(_model(), teacher, _data(), cache_dir="", epochs=1)
    with pytest.raises(RunFolderError, match=r"cache_dir must name a folder, got '' instead"):
        SoftTargetCache("")
    with pytest.raises(RunFolderError, match=r"cache_dir must name a folder, got '' instead"):
        stream_teacher_logits(teacher, torch.randn(4, 5), cache_dir="")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == "mine"


def test_cli_empty_out_is_refused_and_the_current_folder_untouched(tmp_path, monkeypatch, capsys):
    data = _npz(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text("mine")
    monkeypatch.chdir(work)
    code = main(_train_argv(data, ""))  # refused by the config (out_dir) or by the run folder's check (--out)
    _check_error(code, capsys.readouterr().err, r"(--out must name a folder|out_dir must not be empty), got '' instead")
    code = main(["run", "--out", ""])
    _check_error(code, capsys.readouterr().err, r"--out must name a folder, got '' instead")
    assert sorted(p.name for p in work.iterdir()) == ["config.json"]


def test_folder_with_other_files_is_refused_without_force(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("my config")
    (out / "notes.txt").write_text("my notes")
    before = _snapshot(out)
    with pytest.raises(RunFolderError, match=r"the output folder '.*mine' is not empty and is not a darkknowledge run folder "
                                             r"\(it holds 'config.json', 'notes.txt'\); choose a new or empty folder, or pass force=True"):
        fit(_model(), _data(), out_dir=out, **KW)
    assert _snapshot(out) == before
    fit(_model(), _data(), out_dir=out, force=True, **KW)  # the user's choice
    assert (out / "notes.txt").read_text() == "my notes" and json.loads((out / MARKER).read_text())["kind"] == "fit"
    fit(_model(), _data(), out_dir=tmp_path / "new" / "run", **KW)  # new folders are fine
    empty = tmp_path / "empty"
    empty.mkdir()
    fit(_model(), _data(), out_dir=empty, **KW)  # and empty ones


def test_cli_run_into_a_folder_with_other_files_is_refused(tmp_path, capsys):
    out = tmp_path / "site"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "report.html").write_text("<html>mine</html>")
    before = _snapshot(out)
    code = main(["run", "--out", str(out)])
    _check_error(code, capsys.readouterr().err,
                 r"the output folder '.*site' is not empty and is not a darkknowledge run folder \(it holds 'config.json', "
                 r"'report.html'\); choose a new or empty folder, or pass --force")
    assert _snapshot(out) == before


def test_a_run_of_another_kind_is_refused(tmp_path):
    out = tmp_path / "exp"
    claim_run_dir(out, kind="experiment").release()
    (out / "results.json").write_text("{}")
    with pytest.raises(RunFolderError, match=r"holds a darkknowledge experiment run, not a fit run; choose another folder, or pass force=True"):
        fit(_model(), _data(), out_dir=out, **KW)


# --------------------------------------------------------------------------------------------
# 6. an interrupted run is never discarded silently; --force with --resume is an error


def test_fit_over_an_interrupted_run_needs_resume_or_force(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        fit(_model(), _data(), out_dir=out, on_epoch_end=_die_after(2), **KW)
    ckpt = (out / CKPT).read_bytes()
    with pytest.raises(RunFolderError, match=r"the output folder '.*run' holds an interrupted run \(checkpoint at epoch 2 of 4\); "
                                             r"pass resume=True to continue it, force=True to start over\."):
        fit(_model(), _data(), out_dir=out, **KW)
    assert (out / CKPT).read_bytes() == ckpt
    with pytest.raises(ValueError, match=r"resume=True and force=True contradict each other"):
        fit(_model(), _data(), out_dir=out, resume=True, force=True, **KW)
    assert fit(_model(), _data(), out_dir=out, resume=True, **KW).epochs_run == 4


def test_cli_train_over_an_interrupted_run(tmp_path, monkeypatch, capsys):
    import darkknowledge.train as train_mod

    data, out = _npz(tmp_path), tmp_path / "run"
    real_fit = train_mod.fit
    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: real_fit(*a, on_epoch_end=_die_after(1), **k))
    with pytest.raises(SimulatedKill):
        main(_train_argv(data, out))
    monkeypatch.setattr(train_mod, "fit", real_fit)
    before = _snapshot(out)
    capsys.readouterr()
    code = main(_train_argv(data, out))
    _check_error(code, capsys.readouterr().err,
                 r"the output folder '.*run' holds an interrupted run \(checkpoint at epoch 1 of 3\); "
                 r"pass --resume to continue it, --force to start over\.")
    assert _snapshot(out) == before  # the checkpoint is kept
    code = main(_train_argv(data, out, "--resume", "--force"))
    _check_error(code, capsys.readouterr().err, r"--resume and --force contradict each other: --resume continues the run")
    assert main(_train_argv(data, out, "--resume")) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 3


# --------------------------------------------------------------------------------------------
# 7. never delete or replace through a link inside a run folder


@pytest.mark.parametrize("link", ["checkpoint", "checkpoint/last.safetensors", "log.jsonl", "model.safetensors"])
def test_links_inside_a_run_folder_are_refused(tmp_path, link):
    out = tmp_path / "run"
    fit(_model(), _data(), out_dir=out, **KW)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "precious"
    (out / link).unlink() if (out / link).is_file() else __import__("shutil").rmtree(out / link)
    if link == "checkpoint":
        target.mkdir()
        (target / "last.safetensors").write_bytes(b"not yours")
    else:
        target.write_bytes(b"not yours")
    os.symlink(target, out / link)
    outside = _snapshot(elsewhere)
    for kwargs in (dict(force=True), dict(resume=True)):
        with pytest.raises(RunFolderError, match=rf"{re.escape(str(out / link.split('/')[0]))}.* is a symbolic link \(to "
                                                 r"'.*precious'\); darkknowledge never writes, replaces or deletes through a link"):
            fit(_model(), _data(), out_dir=out, **kwargs, **KW)
    assert _snapshot(elsewhere) == outside


def test_the_run_folder_itself_may_be_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    fit(_model(), _data(), out_dir=tmp_path / "link", **KW)
    assert (real / "model.safetensors").is_file() and not (real / "model.safetensors").is_symlink()


def test_atomic_write_replaces_a_link_never_its_target(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"keep me")
    os.symlink(target, tmp_path / "file")
    atomic_write_bytes(tmp_path / "file", b"new")
    assert target.read_bytes() == b"keep me"
    assert not (tmp_path / "file").is_symlink() and (tmp_path / "file").read_bytes() == b"new"


def test_a_link_at_a_cache_entry_is_refused(tmp_path):
    teacher, X = torch.nn.Linear(5, 3), torch.randn(10, 5)
    cache = SoftTargetCache(tmp_path / "cache")
    cache.get(teacher, X)
    (entry,) = (tmp_path / "cache").iterdir()
    entry.rename(tmp_path / "moved")
    os.symlink(tmp_path / "moved", entry)
    with pytest.raises(RunFolderError, match=rf"{re.escape(entry.name)} is a symbolic link"):
        SoftTargetCache(tmp_path / "cache").get(teacher, X)


# --------------------------------------------------------------------------------------------
# 8. one process per run folder


@contextlib.contextmanager
def _held_by_another(folder: Path, pid: int = 424242):
    """Hold the folder's lock through a second open file description, as another process would."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_a_second_process_is_refused_with_the_first_ones_pid(tmp_path, capsys):
    out = tmp_path / "run"
    with _held_by_another(out):
        with pytest.raises(RunFolderBusyError, match=r"the output folder '.*run' is in use by another darkknowledge process "
                                                     r"\(PID 424242\); wait for it to finish"):
            fit(_model(), _data(), out_dir=out, **KW)
        code = main(_train_argv(_npz(tmp_path), out))
        _check_error(code, capsys.readouterr().err, r"is in use by another darkknowledge process \(PID 424242\)")
    assert not (out / "log.jsonl").exists()
    fit(_model(), _data(), out_dir=out, **KW)  # free again
    assert (out / LOCK).read_text().strip() == str(os.getpid())


def test_the_lock_is_held_for_the_whole_run_and_released(tmp_path):
    out = tmp_path / "run"
    seen = []

    def probe(epoch, metrics):
        fd = os.open(out / LOCK, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(epoch)
        finally:
            os.close(fd)

    fit(_model(), _data(), out_dir=out, on_epoch_end=probe, **KW)
    assert seen == [1, 2, 3, 4]
    fd = os.open(out / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end
    os.close(fd)


def test_ranks_other_than_0_neither_lock_nor_write(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "is_main_process", lambda: False)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(rundir, "_lock", lambda folder: pytest.fail("rank 1 took the lock"))
        handle = claim_run_dir(tmp_path / "run", kind="fit")
    handle.release()
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# 17. a FIFO is never opened for reading (it would block forever)


def test_fifo_at_a_cache_entry_is_refused_not_waited_on(tmp_path):
    teacher, X = torch.nn.Linear(5, 3), torch.randn(10, 5)
    cache = SoftTargetCache(tmp_path)
    path = cache.path_for(__import__("darkknowledge.soft_targets", fromlist=["fingerprint"]).fingerprint(
        teacher, X, split="train", dtype="float32", top_k=None))
    os.mkfifo(path)
    with _deadline(20), pytest.raises(RunFolderError, match=rf"{re.escape(str(path))} is a FIFO, where darkknowledge writes a regular file"):
        cache.get(teacher, X)


def test_fifos_where_files_are_read_are_refused(tmp_path):
    out = tmp_path / "run"
    fit(_model(), _data(), out_dir=out, **KW)
    with _deadline(20):
        (out / CKPT).unlink()
        os.mkfifo(out / CKPT)
        with pytest.raises(NotARegularFileError, match=r"last\.safetensors is a FIFO, not a regular training state file"):
            load_training_state(out / CKPT)
        with pytest.raises(RunFolderError, match=r"last\.safetensors is a FIFO, where darkknowledge writes a regular file"):
            fit(_model(), _data(), out_dir=out, resume=True, **KW)
        (out / "model.json").unlink()
        os.mkfifo(out / "model.json")
        with pytest.raises(NotARegularFileError, match=r"model\.json is a FIFO, not a regular file"):
            load_model(out)
        npy = tmp_path / "npy"
        npy.mkdir()
        np.save(npy / "y_train.npy", np.array([0, 1]))
        os.mkfifo(npy / "X_train.npy")
        with pytest.raises(ValueError, match=r"X_train\.npy' is a FIFO \(named pipe\), not a regular file"):
            open_npy_splits(npy)  # the one .npy reader (darkknowledge.data.open_npy_folder) checks with stat
        soft = stream_teacher_logits(torch.nn.Linear(5, 3), torch.randn(6, 5), cache_dir=tmp_path / "c", dtype="float32")
        meta = soft.folder / "meta.json"
        meta.unlink()
        os.mkfifo(meta)
        with pytest.raises(NotARegularFileError, match=r"meta\.json is a FIFO"):
            MemmapSoftTargets(soft.folder)


# --------------------------------------------------------------------------------------------
# 18. the umask is respected; stale temporary files of a killed run are removed


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        save_model(tmp_path / "m", _model())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "m" / "model.safetensors").stat().st_mode) == mode


def test_stale_temp_files_are_removed_on_start_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        fit(_model(), _data(), out_dir=out, on_epoch_end=_die_after(1), **KW)
    stale = [out / "checkpoint" / ".last.safetensors.k1ll3d.tmp", out / ".log.jsonl.a_b4c9x.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = [out / "notes.tmp", out / "checkpoint" / "last.safetensors.tmp"]
    for p in keep:
        p.write_bytes(b"mine")
    (tmp_path / "outside").write_bytes(b"outside")
    os.symlink(tmp_path / "outside", out / ".config.json.zzzzzz.tmp")  # a link is neither followed nor removed
    fit(_model(), _data(), out_dir=out, resume=True, **KW)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"mine" for p in keep)
    assert (out / ".config.json.zzzzzz.tmp").is_symlink() and (tmp_path / "outside").read_bytes() == b"outside"


# --------------------------------------------------------------------------------------------
# 12 (last part). float16 cannot hold logits above 65504: refused, never stored as inf


class _Loud(torch.nn.Module):
    def forward(self, x):  # (N, 5) -> (N, 3) logits up to 7e4
        return torch.stack([x[:, 0], x[:, 1] * 0, torch.full_like(x[:, 0], 7e4)], dim=1)


@pytest.mark.parametrize("top_k", [None, 2])
def test_float16_cache_refuses_logits_beyond_its_range(tmp_path, top_k):
    X = torch.randn(8, 5)
    msg = r"the teacher's logits reach \|z\| = 7e\+04, above float16's largest value 65504, so a float16 soft-target cache would hold inf; store them as float32"
    with pytest.raises(ValueError, match=msg):
        cached_teacher_logits(_Loud(), X, cache_dir=tmp_path / "a", dtype="float16", top_k=top_k)
    with pytest.raises(ValueError, match=msg):
        stream_teacher_logits(_Loud(), X, cache_dir=tmp_path / "b", dtype="float16", top_k=top_k)
    z = cached_teacher_logits(_Loud(), X, cache_dir=tmp_path / "a", dtype="float32", top_k=top_k)
    assert torch.isfinite(z).all() and float(z.max()) == 7e4


def test_run_into_an_incomplete_experiment_needs_force(tmp_path):
    from darkknowledge.experiment import OutputExistsError, run_experiment

    out = tmp_path / "exp"
    claim_run_dir(out, kind="experiment").release()
    (out / "teacher").mkdir()  # what a run killed while training its teacher leaves
    with pytest.raises(OutputExistsError, match=r"output folder '.*exp' holds an incomplete run \(no results\.json; it holds "
                                                r"'teacher'\); pass --force to start it over or choose another --out\."):
        run_experiment(out_dir=out)


def test_a_claim_killed_before_its_marker_was_renamed_is_not_foreign(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("123\n")
    (out / f"{MARKER}.x1y2z3ab.tmp").write_text("{")  # SIGKILL between the marker's write and its rename
    fit(_model(), _data(), out_dir=out, **KW)
    assert json.loads((out / MARKER).read_text())["kind"] == "fit"
    assert not (out / f"{MARKER}.x1y2z3ab.tmp").exists()
