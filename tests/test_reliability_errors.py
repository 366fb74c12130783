"""How the command line sorts what goes wrong: bad input and machine faults are one line and exit 2,
Ctrl-C is exit 130 with the way back, and a bug in darkknowledge is a traceback (exit 1).

The machine faults are real where the test can make them (a full tmpfs mounted by root, a real
SIGINT to a real process) and injected into the library otherwise (a read-only file system), so
that they run everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from darkknowledge.cli import main

TINY = ["--model", "mlp", "--hidden", "4", "--epochs", "1", "--batch-size", "16"]


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _check_error(code, err, pattern):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("darkknowledge: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), f"{pattern!r} not in {err!r}"


def _tiny_run_config(tmp_path: Path, **distill) -> Path:
    cfg = {
        "dataset": {"name": "digits"},
        "teacher": {"model": {"name": "mlp", "options": {"hidden": [16]}}, "train": {"epochs": 1}},
        "student": {"model": {"name": "mlp", "options": {"hidden": [4]}}, "train": {"epochs": 1}},
        "distill": {"sweep": {"temperatures": [], "alphas": []}, **distill},
        "seeds": [0],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------------------------
# a full disk, a read-only file system
# --------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A 96 KiB tmpfs (room for a run folder's first small files, not for its checkpoint)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the injected ENOSPC test below runs everywhere)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_train_on_a_full_disk_is_one_line_not_a_traceback(full_disk, capsys):
    # 64 -> 256 -> 10: 19k float32 weights, 77 KB; with momentum and the best weights the checkpoint is > 96 KiB
    code, err = _cli(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "256", "--epochs", "2",
                      "--out", full_disk / "run"], capsys)
    _check_error(code, err, r"No space left on device: '.*small/run/.*' \(the disk is full; free some space")


def test_injected_disk_full_during_run_is_one_line(tmp_path, capsys, monkeypatch):
    import darkknowledge.checkpoint as checkpoint

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", no_space)
    code, err = _cli(["run", str(_tiny_run_config(tmp_path)), "--out", tmp_path / "out"], capsys)
    _check_error(code, err, r"No space left on device: '.*' \(the disk is full")


def test_read_only_cache_after_the_teacher_trained_is_one_line(tmp_path, capsys, monkeypatch):
    import darkknowledge.soft_targets as soft_targets

    trained = []
    real_fit = __import__("darkknowledge.train", fromlist=["fit"]).fit

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "out" / "cache"))

    def fit_and_note(*args, **kwargs):
        trained.append(True)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(soft_targets, "cached_teacher_logits", read_only)
    import darkknowledge.experiment as experiment

    monkeypatch.setattr(experiment, "cached_teacher_logits", read_only)
    monkeypatch.setattr(experiment, "fit", fit_and_note)
    code, err = _cli(["run", str(_tiny_run_config(tmp_path)), "--out", tmp_path / "out"], capsys)
    assert trained, "the fault was meant to come after the teacher trained"
    _check_error(code, err, r"Read-only file system: '.*cache' \(the file system is read-only")


# --------------------------------------------------------------------------------------------
# numbers and sizes that used to reach torch
# --------------------------------------------------------------------------------------------
def test_huge_learning_rate_is_refused(tmp_path, capsys):
    code, err = _cli(["train", "--dataset", "digits", *TINY, "--lr", "1e300", "--out", tmp_path / "out"], capsys)
    _check_error(code, err, r"lr.*1e\+300")


def test_huge_learning_rate_in_a_sweep_is_refused_before_the_teacher_trains(tmp_path, capsys):
    path = _tiny_run_config(tmp_path, sweep={"temperatures": [2.0], "alphas": [0.5], "lrs": [1e300]})
    code, err = _cli(["run", str(path), "--out", tmp_path / "out"], capsys)
    _check_error(code, err, r"lrs")
    assert not (tmp_path / "out" / "teacher").exists(), "the config must be refused before any work"


def test_a_hidden_layer_larger_than_memory_is_refused_before_allocating(tmp_path, capsys):
    code, err = _cli(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "10000000000",
                      "--epochs", "1", "--out", tmp_path / "out"], capsys)
    _check_error(code, err, r"would have 750,000,000,010 parameters .* more than the .* GiB of memory available")


def test_a_crafted_teacher_folder_with_a_huge_layer_is_refused_before_allocating(tmp_path):
    from darkknowledge.checkpoint import load_model, save_model
    from darkknowledge.models import build_model

    folder = tmp_path / "teacher"
    save_model(folder, build_model("mlp", input_shape=(4,), num_classes=3, hidden=[2]))
    info = json.loads((folder / "model.json").read_text())
    info["spec"]["options"]["hidden"] = [4_000_000_000_000]
    (folder / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"would have .* parameters .* more than the .* memory available"):
        load_model(folder)


@pytest.mark.parametrize("plot, pattern", [
    ("", r"--plot must name a PNG file to write, e\.g\. challenger\.png, got ''"),
    (".", r"--plot must name a PNG file to write, e\.g\. challenger\.png, got '\.'"),
    ("sub/", r"--plot must name a PNG file to write"),
    ("{tmp}", r"--plot must name a PNG file to write, got the folder"),
    ("{tmp}/missing/c.png", r"--plot's folder '.*missing' does not exist"),
])
def test_challenger_plot_paths_that_are_not_files(tmp_path, capsys, plot, pattern):
    code, err = _cli(["challenger", "--plot", plot.format(tmp=tmp_path)], capsys)
    _check_error(code, err, pattern)


def test_challenger_plot_to_a_fifo_is_refused_without_hanging(tmp_path, capsys):
    fifo = tmp_path / "plot.png"
    os.mkfifo(fifo)
    code, err = _cli(["challenger", "--plot", fifo], capsys)
    _check_error(code, err, r"--plot must name a regular file")


def test_repeated_seeds_on_the_command_line_are_refused_like_in_a_config(tmp_path, capsys):
    code, err = _cli(["run", str(_tiny_run_config(tmp_path)), "--seeds", "0", "0", "--out", tmp_path / "out"], capsys)
    _check_error(code, err, r"Config key 'seeds': .*seeds must be distinct, got \[0, 0\]")
    assert not (tmp_path / "out").exists()


def test_mnist_missing_with_downloads_off_is_one_line_for_every_interface(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DARKKNOWLEDGE_OFFLINE", "1")
    monkeypatch.setenv("DARKKNOWLEDGE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("DARKKNOWLEDGE_CACHE_DIR", str(tmp_path / "cache"))
    code, err = _cli(["train", "--dataset", "mnist", *TINY, "--out", tmp_path / "out"], capsys)
    _check_error(code, err, r"MNIST files not found\. Looked in: .* and did not download them "
                            r"\(DARKKNOWLEDGE_OFFLINE is set, which turns downloads off\)\. .*--data-dir on the "
                            r"command line, dataset\.data_dir in a config, data_dir= in Python")


# --------------------------------------------------------------------------------------------
# advice in the words of the command line, not of the Python API
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, pattern", [
    (["info", "entropy", "0.5", "0.6", "--no-normalize"],
     r"p must sum to 1 .* with --no-normalize \(drop the flag to normalise the weights\), got a sum of 1\.1"),
    (["info", "kl", "--p", "0.5", "0.6", "--q", "0.5", "0.5", "--no-normalize"], r"with --no-normalize"),
    (["info", "self-information", "2", "0.5"], r"each P must be a probability in \[0, 1\], got 2 instead"),
    (["info", "self-information", "nan"], r"each P must be a probability in \[0, 1\], got nan instead"),
])
def test_info_errors_name_the_flags_not_python_keywords(capsys, argv, pattern):
    code, err = _cli(argv, capsys)
    _check_error(code, err, pattern)
    assert "normalize=" not in err


# --------------------------------------------------------------------------------------------
# a bug is a bug: a traceback, exit 1, never "bad input"
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bug", [KeyError("spec"), RuntimeError("shape mismatch"), IndexError("list index"),
                                 AttributeError("no attribute"), ValueError("a numpy broadcast failed"),
                                 TypeError("unsupported operand"), OSError(errno.EINVAL, "Invalid argument")])
def test_an_internal_bug_is_not_reported_as_bad_input(tmp_path, monkeypatch, bug):
    import darkknowledge.train as train

    def broken_fit(*args, **kwargs):
        raise bug

    monkeypatch.setattr(train, "fit", broken_fit)
    with pytest.raises(type(bug)):
        main(["train", "--dataset", "digits", *TINY, "--out", str(tmp_path / "out")])


def test_an_internal_bug_prints_a_traceback_and_exits_1(tmp_path):
    code = (
        "import sys, darkknowledge.train as t\n"
        "def broken(*a, **k):\n    raise KeyError('an internal bug')\n"
        "t.fit = broken\n"
        "from darkknowledge.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "train", "--dataset", "digits", *TINY,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "KeyError: 'an internal bug'" in proc.stderr
    assert "darkknowledge: error:" not in proc.stderr


# --------------------------------------------------------------------------------------------
# Ctrl-C: a real SIGINT to a real process
# --------------------------------------------------------------------------------------------
def _start(argv, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "darkknowledge", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before {path} appeared: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {seconds} s")
        time.sleep(0.05)


def test_ctrl_c_during_train_says_where_the_checkpoint_is_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = _start(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "2000",
                   "--batch-size", "8", "--out", str(out)], tmp_path)
    _wait_for(out / "checkpoint" / "last.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert re.search(r"darkknowledge: interrupted\. The last checkpoint is '.*checkpoint/last\.safetensors'; "
                     r"rerun the same command with --resume", err), err


def test_ctrl_c_during_run_exits_130_without_a_traceback(tmp_path):
    out = tmp_path / "run"
    cfg = _tiny_run_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["teacher"]["train"]["epochs"] = 5000  # long enough to be interrupted while training
    cfg.write_text(yaml.safe_dump(raw))
    proc = _start(["run", str(cfg), "--out", str(out)], tmp_path)
    _wait_for(out / "teacher", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert re.search(r"darkknowledge: interrupted\. The run in '.*run' is incomplete", err), err
