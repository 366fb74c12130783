"""Training checkpoints: checksummed, structurally validated, and tied to the run that wrote them
(issue 9, items 9 and 10). Each defect is a CheckpointError (a ValueError) naming the file and what
is wrong, never a KeyError / RuntimeError from inside torch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _helpers import SimulatedKill
from _helpers import run_data as _data
from _helpers import run_model as _model
from _helpers import die_after as _die_after
import torch
from safetensors.torch import load as st_load

from darkknowledge.checkpoint import CheckpointError, load_training_state, save_training_state
from darkknowledge.cli import main
from darkknowledge.data import load_dataset, prepare_splits
from darkknowledge.data._types import Splits
from darkknowledge.distill import distill
from darkknowledge.models import build_model
from darkknowledge.train import ResumeMismatchError, fit

KW = dict(epochs=4, batch_size=16, lr=0.1, momentum=0.9, seed=3, progress=False)
CKPT = Path("checkpoint") / "last.safetensors"


def _interrupted(out, after=2, **kw):
    with pytest.raises(SimulatedKill):
        fit(_model(), _data(), out_dir=out, on_epoch_end=_die_after(after), **dict(KW, **kw))
    return out / CKPT


def _rewrite(path, edit):
    """Load a checkpoint, let ``edit(tensors, state)`` change it, save it with a valid checksum."""
    tensors, state = load_training_state(path)
    edit(tensors, state)
    save_training_state(path, tensors=tensors, state=state)


# --------------------------------------------------------------------------------------------
# 9. integrity and structure


def test_a_flipped_bit_in_the_checkpoint_is_refused(tmp_path):
    path = _interrupted(tmp_path / "run")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes: safetensors still parses it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.safetensors is not a readable training state \(its SHA-256 does not match "
                                              r"the one recorded in it: expected [0-9a-f]{64}, got [0-9a-f]{64}\); the file is corrupt"):
        fit(_model(), _data(), out_dir=tmp_path / "run", resume=True, **KW)


def test_cli_resume_from_a_flipped_bit_is_one_line(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(40) % 2)
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "d.npz"), "--model", "mlp", "--hidden", "4", "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    data = bytearray((out / CKPT).read_bytes())
    data[-1] ^= 0x01
    (out / CKPT).write_bytes(bytes(data))
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^darkknowledge: error: .*last\.safetensors is not a readable training state \(its SHA-256 does not match", err), err
    assert "Traceback" not in err and err.count("\n") == 1


def _pad_history(t, s):
    s["history"] += [dict(s["history"][-1], epoch=e) for e in (3, 4, 5)]


def _drop(key):
    return lambda t, s: s.pop(key)


def _reshape(name):
    def edit(t, s):
        key = next(k for k in t if k.startswith(name))
        t[key] = t[key].reshape(-1)[:-1].clone()
    return edit


def _truncate_rng(t, s):
    t["rng.torch"] = t["rng.torch"][:100].clone()


def _drop_optimizer_tensor(t, s):
    del t[next(k for k in t if k.startswith("optimizer."))]


def _scheduler_ahead(t, s):
    s["scheduler"]["last_epoch"] += 1


def _history_gap(t, s):
    s["history"][1]["epoch"] = 7


def _nan_weight(t, s):
    key = next(k for k in t if k.startswith("model."))
    t[key] = t[key].clone()
    t[key].view(-1)[0] = float("nan")


def _inf_momentum(t, s):
    key = next(k for k in t if k.startswith("optimizer."))
    t[key] = t[key].clone()
    t[key].view(-1)[0] = float("inf")


@pytest.mark.parametrize("edit, message", [
    (_pad_history, r"its history holds 5 epochs, more than the run's 4"),
    (_drop("config"), r"no 'config'"),
    (_drop("optimizer"), r"no 'optimizer'"),
    (_reshape("model."), r"tensor model\.\S+ has shape \(\d+,\) and torch\.float32, the model's \(\d+,( \d+)?\)"),
    (_reshape("best."), r"tensor best\.\S+ has shape"),
    (_truncate_rng, r"RNG state rng\.torch is torch\.uint8 of shape \(100,\), expected uint8 of shape \(\d+,\)"),
    (_drop_optimizer_tensor, r"its optimizer state refers to a missing or malformed tensor \(KeyError"),
    (_scheduler_ahead, r"its scheduler is at step \d+, but 2 epochs of 3 steps end at step 6"),
    (_history_gap, r"history entry 1 is not epoch 2"),
    (_nan_weight, r"tensor model\.\S+ holds NaN or infinite values"),
    (_inf_momentum, r"its momentum buffer of parameter \d+ holds NaN or infinite values"),
], ids=["padded_history", "no_config", "no_optimizer", "model_shape", "best_shape", "rng", "optimizer_tensor",
        "scheduler", "history_gap", "nan_weight", "inf_momentum"])
def test_malformed_state_is_refused_clearly(tmp_path, edit, message):
    path = _interrupted(tmp_path / "run")
    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=rf"last\.safetensors holds a malformed training state \({message}"):
        fit(_model(), _data(), out_dir=tmp_path / "run", resume=True, **KW)


def test_a_state_without_a_checksum_is_refused(tmp_path):
    from safetensors.torch import save as st_save

    path = _interrupted(tmp_path / "run")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    del meta["sha256"]
    path.write_bytes(st_save(st_load(raw), metadata=meta))
    with pytest.raises(CheckpointError, match=r"it records no SHA-256, so it cannot be verified"):
        load_training_state(path)


# --------------------------------------------------------------------------------------------
# 10. what defines a run is checked on resume


def test_resume_with_another_split_is_refused(tmp_path):
    digits = load_dataset("digits")
    a, b = prepare_splits(digits, seed=0), prepare_splits(digits, seed=1)
    model = lambda: build_model("softmax-regression", input_shape=a.input_shape, num_classes=10, seed=0)  # noqa: E731
    kw = dict(KW, batch_size=256)
    with pytest.raises(SimulatedKill):
        fit(model(), a, out_dir=tmp_path / "run", on_epoch_end=_die_after(1), **kw)
    with pytest.raises(ResumeMismatchError, match=r"cannot resume from .*last\.safetensors: the configuration differs \(data\.sha256: "
                                                  r"'[0-9a-f]{12}\.\.\.' then, '[0-9a-f]{12}\.\.\.' now\); the training or validation data "
                                                  r"differ: another data set, split, split_seed or preprocessing"):
        fit(model(), b, out_dir=tmp_path / "run", resume=True, **kw)
    assert fit(model(), a, out_dir=tmp_path / "run", resume=True, **kw).epochs_run == 4


def _distill_interrupted(out, teacher_logits, **kw):
    with pytest.raises(SimulatedKill):
        distill(_model(), teacher_logits, _data(), out_dir=out, on_epoch_end=_die_after(1), **dict(KW, **kw))


@pytest.mark.parametrize("change, message", [
    (dict(temperature=2.0), r"run\.temperature: 4\.0 then, 2\.0 now"),
    (dict(alpha=0.5), r"run\.alpha: 0\.1 then, 0\.5 now"),
    (dict(divergence="js"), r"run\.divergence: 'kl' then, 'js' now"),
    (dict(teacher_seed=1), r"run\.teacher_sha256: '[0-9a-f]{12}\.\.\.' then, '[0-9a-f]{12}\.\.\.' now\); another teacher"),
])
def test_distill_resume_with_another_teacher_or_loss_is_refused(tmp_path, change, message):
    change = dict(change)
    teacher = lambda seed: torch.randn(48, 3, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    _distill_interrupted(tmp_path / "run", teacher(0), temperature=4.0, alpha=0.1)
    settings = dict(temperature=4.0, alpha=0.1)
    seed = change.pop("teacher_seed", 0)
    settings.update(change)
    with pytest.raises(ResumeMismatchError, match=rf"cannot resume from .*: the configuration differs \({message}"):
        distill(_model(), teacher(seed), _data(), out_dir=tmp_path / "run", resume=True, **settings, **KW)
    result = distill(_model(), teacher(0), _data(), out_dir=tmp_path / "run", resume=True, temperature=4.0, alpha=0.1, **KW)
    assert result.fit.epochs_run == 4
