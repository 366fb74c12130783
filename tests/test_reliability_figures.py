"""Figures that must mean one thing: the share of the gap closed, and the metadata a run folder keeps."""

from __future__ import annotations

import json

import pytest

import darkknowledge.experiment as experiment
from darkknowledge.report import gap_closed, headline


def _results(teacher: int, alone: int, distilled: int) -> dict:
    def row(name, role, errors):
        return {"name": name, "role": role, "test_errors": errors, "n_test": 1000, "accuracy": 1 - errors / 1000,
                "nll": 0.1, "ece": 0.01, "params": 100, "latency_ms": 1.0}

    return {"models": [row("teacher", "teacher", teacher), row("student alone", "student-alone", alone),
                       row("student distilled", "student-distilled", distilled)]}


def test_gap_closed_has_one_definition():
    # Hinton et al. (2015), MNIST: teacher 67, student alone 146, distilled 74 test errors -> 72 / 79
    assert gap_closed(67, 146, 74) == pytest.approx(72 / 79)
    assert gap_closed(100, 200, 250) == pytest.approx(-0.5)  # distillation made it worse
    assert gap_closed(100, 200, 90) == pytest.approx(1.1)  # the student beat its teacher
    # no gap to close: the student alone matches or beats the teacher (run and report used to disagree here)
    assert gap_closed(100, 100, 90) is None
    assert gap_closed(100, 90, 95) is None
    assert "already beat the teacher" in headline(_results(100, 90, 95))
    assert "already matched the teacher" in headline(_results(100, 100, 90))
    assert "closed 91 % of the gap" in headline(_results(67, 146, 74))
    # the run's results.json takes the same function as the report
    assert experiment.gap_closed is gap_closed


def test_gap_closed_in_a_run_matches_the_report(tmp_path, monkeypatch):
    """A real (tiny) run: results.json's gap_closed is the report's, whatever the errors turn out to be."""
    from darkknowledge.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({
        "dataset": {"name": "digits"},
        "teacher": {"model": {"name": "mlp", "options": {"hidden": [32]}}, "train": {"epochs": 3}},
        "student": {"model": {"name": "mlp", "options": {"hidden": [4]}}, "train": {"epochs": 1}},
        "distill": {"sweep": {"temperatures": [], "alphas": []}},
        "seeds": [0],
    }))
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {m["role"]: m["test_errors"] for m in results["models"]}
    assert results["distillation"]["gap_closed"] == gap_closed(rows["teacher"], rows["student-alone"],
                                                               rows["student-distilled"])
    # and every model folder keeps what fit recorded (a second save used to overwrite it with {})
    for folder in ("teacher/member-0", "student-alone/seed-0", "student-distilled/seed-0"):
        meta = json.loads((tmp_path / "out" / folder / "model.json").read_text())["metadata"]
        assert meta["best_epoch"] >= 1 and meta["epochs_run"] >= meta["best_epoch"], (folder, meta)


def test_train_keeps_the_metadata_fit_recorded(tmp_path):
    from darkknowledge.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "8", "--epochs", "3",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())["metadata"]
    summary = json.loads((out / "summary.json").read_text())
    assert meta["epochs_run"] == 3
    assert meta["best_epoch"] == summary["best_epoch"] and 1 <= meta["best_epoch"] <= 3
    assert meta["best_val_accuracy"] is not None and 0 < meta["best_val_accuracy"] <= 1
