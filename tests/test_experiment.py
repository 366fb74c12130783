"""The main job end to end on digits: every artefact written, numbers consistent, outputs never overwritten."""

import json
import math

import pytest
import yaml
from safetensors.torch import load_file

from darkknowledge.cli import main
from darkknowledge.config import parse_config
from darkknowledge.experiment import OutputExistsError, format_table, run_experiment

SMALL = {
    "teacher": {"model": {"name": "mlp", "options": {"hidden": [64]}}, "train": {"epochs": 4}},
    "student": {"model": {"name": "mlp", "options": {"hidden": [8]}}, "train": {"epochs": 3}},
    "distill": {"sweep": {"temperatures": [2.0, 4.0], "alphas": [0.1], "epochs": 2}},
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = run_experiment(parse_config(SMALL), out_dir=out, log=lambda s: None)
    return out, results


def test_run_writes_every_artefact(small_run):
    out, results = small_run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (out / "config.json").is_file()
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    for folder in ["teacher/member-0", "student-alone/seed-0", "student-alone/seed-1",
                   "student-distilled/seed-0", "student-distilled/seed-1"]:
        assert load_file(out / folder / "model.safetensors"), folder  # weights as safetensors
        assert (out / folder / "model.json").is_file()
        lines = (out / folder / "log.jsonl").read_text().splitlines()
        assert lines and {"epoch", "loss", "val_loss", "lr"} <= set(json.loads(lines[0]))
    assert len(list((out / "cache").glob("*.safetensors"))) == 1
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))


def test_results_rows_are_consistent(small_run):
    _, results = small_run
    roles = [m["role"] for m in results["models"]]
    assert roles == ["teacher", "student-alone", "student-distilled"]
    n_test = results["dataset"]["num_test"]
    assert n_test == 450
    for m in results["models"]:
        assert m["n_test"] == n_test
        assert m["accuracy"] == pytest.approx(1 - m["test_errors"] / n_test)
        assert len(m["confusion"]) == 10 and math.isfinite(m["nll"])
    teacher, alone, distilled = results["models"]
    assert teacher["agreement"] is None and alone["agreement"] is not None
    assert alone["seeds"] == [0, 1] and [r["seed"] for r in alone["per_seed"]] == [0, 1]
    assert alone["test_errors"] == pytest.approx(sum(r["test_errors"] for r in alone["per_seed"]) / 2)
    assert distilled["params"] == alone["params"] < teacher["params"]
    d = results["distillation"]
    gap = (alone["test_errors"] - distilled["test_errors"]) / (alone["test_errors"] - teacher["test_errors"])
    assert d["gap_closed"] == pytest.approx(gap)


def test_sweep_result_is_used(small_run):
    _, results = small_run
    sweep = results["sweep"]
    assert [(r["temperature"], r["alpha"]) for r in sweep] == [(2.0, 0.1), (4.0, 0.1)]
    best = min(sweep, key=lambda r: r["val_nll"])
    assert results["sweep_best"] == best
    assert results["distillation"]["temperature"] == best["temperature"]


def test_soft_target_analysis_is_in_the_results(small_run):
    _, results = small_run
    st = results["soft_targets"]
    assert set(st["per_class_entropy_bits"]) == {"1", "4", "20"}
    for row in st["examples"]:
        for probs in row["probs"].values():
            assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    # entropy grows with temperature (softer targets)
    for c in range(10):
        assert st["per_class_entropy_bits"]["1"][c] <= st["per_class_entropy_bits"]["20"][c]


def test_format_table_lists_every_model(small_run):
    _, results = small_run
    table = format_table(results["models"])
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["model", "params"]
    assert len(lines) == 2 + len(results["models"])
    assert "± " in lines[3]  # the mean of two seeds carries its spread


def test_a_finished_run_is_not_overwritten(small_run):
    out, _ = small_run
    before = (out / "results.json").read_bytes()
    with pytest.raises(OutputExistsError, match="already holds a run.*--force"):
        run_experiment(parse_config(SMALL), out_dir=out, log=lambda s: None)
    assert (out / "results.json").read_bytes() == before


def test_ensemble_teacher_with_bagging(tmp_path):
    cfg = parse_config(dict(SMALL, teacher={"model": {"name": "mlp", "options": {"hidden": [32]}},
                                            "members": 2, "bagging": True, "train": {"epochs": 2}},
                            seeds=[0], distill={"sweep": {"temperatures": [], "alphas": []}}))
    results = run_experiment(cfg, out_dir=tmp_path, log=lambda s: None)
    roles = [m["role"] for m in results["models"]]
    assert roles == ["teacher-member", "teacher-member", "teacher", "student-alone", "student-distilled"]
    assert results["sweep"] == [] and results["sweep_best"] is None
    assert (tmp_path / "teacher" / "member-1" / "model.safetensors").is_file()


def test_cli_train_then_run_with_that_teacher(tmp_path, capsys):
    teacher_dir = tmp_path / "teacher"
    code = main(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "2",
                 "--out", str(teacher_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test:" in out and "errors / 450" in out
    summary = json.loads((teacher_dir / "summary.json").read_text())
    assert summary["params"] == 64 * 32 + 32 + 32 * 10 + 10

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "teacher": {"run_dir": str(teacher_dir)},
        "student": {"model": {"name": "mlp", "options": {"hidden": [8]}}, "train": {"epochs": 2}},
        "distill": {"sweep": {"temperatures": [], "alphas": []}},
        "seeds": [0],
    }))
    code = main(["run", str(config), "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    assert "student distilled (mlp 8)" in out and "KL to teacher" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["models"][0]["params"] == summary["params"]


def test_cli_refuses_to_overwrite_and_names_the_flag(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--model", "softmax-regression", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run; pass --force" in err and "Traceback" not in err
    assert main(args + ["--force"]) == 0


def test_cli_run_with_a_bad_config_exits_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("student:\n  modle: {name: mlp}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'student.modle' (did you mean 'model'?)" in err
    assert not (tmp_path / "out").exists()
