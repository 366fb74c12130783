"""Hinton et al. (2015) section 3's recipe and experiments: max-norm, the 7s-and-8s transfer set with its bias
search, pixel scaling for jitter, and the shipped MNIST configs run end to end on a few hundred MNIST-dev images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from darkknowledge.config import ConfigError, DatasetConfig, ExperimentConfig, load_config, parse_config, with_overrides
from darkknowledge.data import Splits
from darkknowledge.distill import adjust_missing_class_bias, distill, transfer_indices
from darkknowledge.errors import InputError
from darkknowledge.experiment import load_splits
from darkknowledge.models import build_model
from darkknowledge.train import apply_max_norm, fit, max_norm_weights

ROOT = Path(__file__).resolve().parents[1]
MNIST_DEV = ROOT.parent / "shared" / "data" / "mnist-dev.npz"


def _blobs(n=300, d=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 3
    y = torch.arange(n) % c
    X = centres[y] + torch.randn(n, d, generator=g)
    cut = int(0.7 * n)
    return Splits(X[:cut], y[:cut], X[cut:], y[cut:], X[cut:], y[cut:], [str(i) for i in range(c)])


# ---------------------------------------------------------------------------------------------- max-norm
def test_apply_max_norm_is_the_projection_onto_the_ball_per_unit():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 5, generator=g) * torch.tensor([0.1, 1, 2, 3, 4, 5, 6]).reshape(-1, 1)
    expected = torch.renorm(w.double(), p=2, dim=0, maxnorm=2.0)  # torch's own per-row projection, in float64
    inside = w.double().norm(dim=1) <= 2.0
    got = w.clone()
    apply_max_norm([got], 2.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(got[inside], w[inside])  # rows inside the ball are untouched, bit for bit
    conv = torch.randn(4, 3, 3, 3, generator=g) * 5
    apply_max_norm([conv], 1.5)
    assert float(conv.reshape(4, -1).norm(dim=1).max()) <= 1.5 * (1 + 1e-6)


def test_max_norm_constrains_hidden_units_only():
    model = build_model("mlp", input_shape=(6,), num_classes=4, hidden=[16, 8], seed=0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    weights = max_norm_weights(model)
    assert [id(w) for w in weights] == [id(m.weight) for m in linears[:-1]]  # not the output layer, no biases


def test_max_norm_holds_after_every_step_of_fit():
    data = _blobs()
    c = 0.5
    model = build_model("mlp", input_shape=(6,), num_classes=4, hidden=[32, 32], seed=0)
    hidden = max_norm_weights(model)
    seen: list[float] = []

    def loss(out, y, index):  # called at each step, before the step: sees the weights the last step left
        seen.append(max(float(w.detach().norm(dim=1).max()) for w in hidden))
        return nn.functional.cross_entropy(out, y)

    fit(model, data, loss=loss, epochs=3, batch_size=32, lr=0.5, max_norm=c, progress=False)
    after_steps = seen[1:] + [max(float(w.detach().norm(dim=1).max()) for w in hidden)]
    assert len(after_steps) == 3 * 7
    assert max(after_steps) <= c * (1 + 1e-6)
    # without the constraint the same run leaves the ball: the test can fail
    free = build_model("mlp", input_shape=(6,), num_classes=4, hidden=[32, 32], seed=0)
    fit(free, data, epochs=3, batch_size=32, lr=0.5, progress=False)
    assert max(float(w.norm(dim=1).max()) for w in max_norm_weights(free)) > c


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_max_norm_must_be_positive_and_finite(bad):
    model = build_model("mlp", input_shape=(6,), num_classes=4, hidden=[4], seed=0)
    with pytest.raises(ValueError, match="max_norm"):
        fit(model, _blobs(), epochs=1, max_norm=bad, progress=False)


def test_max_norm_in_configs():
    assert parse_config({"teacher": {"train": {"max_norm": 3.5}}}).teacher.train.fit_kwargs()["max_norm"] == 3.5
    with pytest.raises(ConfigError, match=r"'teacher\.train\.max_norm'.*greater than 0"):
        parse_config({"teacher": {"train": {"max_norm": 0}}})


# ---------------------------------------------------------------------------------------------- 7s and 8s
def test_transfer_classes_keep_only_those_classes():
    y = torch.tensor([7, 8, 1, 7, 3, 8, 0])
    idx = transfer_indices(y, transfer_classes=[8, 7])
    assert idx.tolist() == [0, 1, 3, 5]
    assert set(y[idx].tolist()) == {7, 8}
    with pytest.raises(InputError, match=r"transfer_classes \[9\] do not occur"):
        transfer_indices(y, transfer_classes=[7, 9])
    with pytest.raises(InputError, match="omit_class or transfer_classes, not both"):
        transfer_indices(y, omit_class=3, transfer_classes=[7])
    with pytest.raises(InputError, match="each class once"):
        transfer_indices(y, transfer_classes=[7, 7])


def test_bias_search_moves_only_the_missing_classes_by_one_shift():
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))
    X = torch.randn(200, 5, generator=g)
    y = torch.randint(0, 4, (200,), generator=g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    shift = adjust_missing_class_bias(model, [0, 2], X, y, shifts=shifts)
    after = model.state_dict()
    for k in before:
        if k != "2.bias":
            assert torch.equal(before[k], after[k]), k  # nothing else moved
    moved = after["2.bias"] - before["2.bias"]
    assert moved.tolist() == pytest.approx([shift, 0.0, shift, 0.0])
    # the chosen shift is the best on these rows, by brute force (first best on ties)
    with torch.no_grad():
        logits = nn.Sequential(*[m for m in model])(X) - torch.tensor([shift, 0.0, shift, 0.0])
    accs = [float(((logits + torch.tensor([s, 0.0, s, 0.0])).argmax(1) == y).double().mean()) for s in shifts]
    assert shift == shifts[int(np.argmax(accs))]


def test_distill_on_two_classes_transfers_to_the_others_after_the_bias_shift():
    data = _blobs(n=800)
    teacher = build_model("mlp", input_shape=(6,), num_classes=4, hidden=[32], seed=0)
    fit(teacher, data, epochs=20, batch_size=32, lr=0.1, progress=False)
    student = build_model("mlp", input_shape=(6,), num_classes=4, hidden=[32], seed=1)
    res = distill(student, teacher, data, temperature=4.0, alpha=0.0, transfer_classes=[1, 2], epochs=15,
                  batch_size=32, lr=0.05, progress=False)
    assert res.transfer_size == int(torch.isin(data.y_train, torch.tensor([1, 2])).sum())
    assert res.missing_classes == [0, 3]
    assert res.bias_shift is not None


def test_config_transfer_classes_are_checked():
    cfg = parse_config({"distill": {"transfer_classes": [7, 8]}})
    assert cfg.distill.transfer_classes == [7, 8]
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"distill": {"transfer_classes": [7, 8], "omit_class": 3}})
    with pytest.raises(ConfigError, match="listed once"):
        parse_config({"distill": {"transfer_classes": [7, 7]}})
    from darkknowledge.config import check_config_against_data

    with pytest.raises(ConfigError, match=r"'distill\.transfer_classes' must list classes of the data"):
        check_config_against_data(parse_config({"distill": {"transfer_classes": [7, 12]}}), num_classes=10)


# ---------------------------------------------------------------------------------------------- data and CLI
def test_scale_divides_integer_pixels_only(tmp_path):
    X = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(6, 1, 4, 4) * 5
    y = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "u8.npz", X=X, y=y, X_test=X[:2], y_test=y[:2])
    np.savez(tmp_path / "f32.npz", X=X.astype(np.float32), y=y, X_test=X[:2].astype(np.float32), y_test=y[:2])
    cfg = dict(val_fraction=0.5, standardize=False, scale=255)
    u8, _ = load_splits(DatasetConfig(name=str(tmp_path / "u8.npz"), **cfg))
    f32, _ = load_splits(DatasetConfig(name=str(tmp_path / "f32.npz"), **cfg))
    assert float(u8.X_train.max()) <= 1.0 and float(u8.X_test.max()) <= 1.0
    both = torch.cat([u8.X_train, u8.X_val]).flatten().sort().values
    expected = torch.from_numpy(X.astype(np.float64) / 255).flatten().sort().values
    torch.testing.assert_close(both.double(), expected, rtol=1e-7, atol=0)
    assert float(f32.X_train.max()) > 1.0  # float features are taken as they are
    with pytest.raises(InputError, match="dataset.scale applies to"):
        load_splits(DatasetConfig(csv=str(tmp_path / "x.csv"), scale=255))


def test_with_overrides_keeps_a_loaded_teacher(tmp_path):
    cfg = parse_config({"teacher": {"run_dir": "runs/t"}, "seeds": [0]})
    assert with_overrides(cfg, seeds=[1, 2]).teacher.run_dir == "runs/t"


# ---------------------------------------------------------------------------------------------- configs end to end
def _mnist_dev_subset(tmp_path: Path, n: int = 400, n_test: int = 200) -> Path:
    if not MNIST_DEV.exists():
        pytest.skip(f"MNIST-dev is not here ({MNIST_DEV}): the shipped MNIST configs are run on it")
    with np.load(MNIST_DEV) as z:
        path = tmp_path / "mnist-dev-small.npz"
        np.savez(path, X=z["X"][:n], y=z["y"][:n], X_test=z["X_test"][:n_test], y_test=z["y_test"][:n_test])
    return path


def _short(cfg: ExperimentConfig, teacher_dir: Path) -> ExperimentConfig:
    raw = cfg.model_dump(exclude_unset=True)
    raw["teacher"] = {"run_dir": str(teacher_dir)}
    raw["seeds"] = [0]
    raw["student"]["model"] = {"name": "mlp", "options": {"hidden": [32, 32]}}
    raw["student"]["train"] = dict(raw["student"].get("train", {}), epochs=2)
    raw["distill"]["sweep"] = {"temperatures": [], "alphas": []}
    return parse_config(raw)


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """configs/mnist-teacher.yaml, 2 epochs of a 64-64 MLP, trained through the CLI on 400 MNIST-dev images."""
    from darkknowledge.cli import main

    tmp = tmp_path_factory.mktemp("hinton")
    data = _mnist_dev_subset(tmp)
    out = tmp / "teacher"
    assert main(["train", str(ROOT / "configs" / "mnist-teacher.yaml"), "--dataset", str(data), "--out", str(out),
                 "--epochs", "2", "--hidden", "64", "64"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["max_norm"] == 3.5 and saved["augment"]["shift"] == 2  # Hinton's recipe, as shipped
    return data, out


@pytest.mark.parametrize("name", ["mnist-hinton", "mnist-consistent", "mnist-missing-3", "mnist-7s-8s",
                                  "mnist-3-percent", "mnist-3-percent-hard"])
def test_shipped_mnist_configs_run_end_to_end(name, small_teacher, tmp_path):
    from darkknowledge.experiment import run_experiment

    data, teacher_dir = small_teacher
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    cfg = with_overrides(_short(cfg, teacher_dir), dataset={"name": str(data)})
    results = run_experiment(cfg, out_dir=tmp_path / name, log=lambda s: None)
    assert (tmp_path / name / "results.json").exists() and (tmp_path / name / "report.html").exists()
    roles = [m["role"] for m in results["models"]]
    assert roles.count("student-distilled") == 1
    assert ("student-alone" in roles) == cfg.student.alone
    distilled = results["models"][-1]
    if cfg.distill.omit_class is not None or cfg.distill.transfer_classes is not None:
        assert distilled["bias_shift"] is not None and "test_errors_before_bias_shift" in distilled
        assert 0.0 <= distilled["missing_class_recall"] <= 1.0


def test_run_cli_takes_a_dataset_and_a_trained_teacher(small_teacher, tmp_path, capsys):
    from darkknowledge.cli import main

    data, teacher_dir = small_teacher
    cfg = tmp_path / "c.yaml"
    cfg.write_text("student: {model: {name: mlp, options: {hidden: [16]}}, train: {epochs: 1}}\n"
                   "distill: {sweep: {temperatures: [], alphas: []}}\nseeds: [0]\n"
                   "dataset: {name: digits, standardize: false, scale: 255, val_fraction: 0.1}\n")
    assert main(["run", str(cfg), "--dataset", str(data), "--teacher", str(teacher_dir),
                 "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["teacher"]["run_dir"] == str(teacher_dir)
    assert results["dataset"]["num_train"] == 360


def test_a_missing_teacher_run_dir_names_the_config_key(tmp_path, capsys):
    from darkknowledge.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("seeds: [0]\nstudent: {train: {epochs: 1}}\n")
    assert main(["run", str(cfg), "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert f"teacher.run_dir '{tmp_path / 'nowhere'}'" in capsys.readouterr().err
    # the failed run left no work behind: the same command runs again without --force
    assert main(["run", str(cfg), "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "--force" not in capsys.readouterr().err
