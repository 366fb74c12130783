"""The YAML side of "bring your own teacher, student and data": each new key drives a real run.

* ``teacher: {onnx: ...}`` with ``dataset: {csv: ..., label: ..., test: ...}``: a scikit-learn teacher exported
  with skl2onnx teaches an MLP through ``darkknowledge run`` (the tabular path of the issue);
* ``dataset: {imagefolder: ...}`` with an augmented student: the teacher runs online (consistent teaching);
* ``train: {optimizer: adamw}`` through ``darkknowledge train``;
* and the contradictions each key can make, refused before any work.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from darkknowledge.cli import main
from darkknowledge.config import ConfigError, parse_config

SMALL = {"model": {"name": "mlp", "options": {"hidden": [8]}}, "train": {"epochs": 2, "batch_size": 32}}


def _write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join(f"f{j}" for j in range(X.shape[1])) + ",label"
    rows = [",".join(f"{v:.6f}" for v in x) + f",{int(c)}" for x, c in zip(X, y)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _tabular(tmp_path: Path, n=300, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1.0).astype(int)  # 3 classes
    return X, y


def test_onnx_teacher_on_a_csv_data_set_through_run(tmp_path, capsys):
    pytest.importorskip("skl2onnx", reason="the onnx extra: pip install 'darkknowledge[onnx]'")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    X, y = _tabular(tmp_path)
    train, test = _write_csv(tmp_path / "train.csv", X[:240], y[:240]), _write_csv(tmp_path / "test.csv", X[240:], y[240:])
    # a forest: skl2onnx 1.20 cannot export HistGradientBoostingClassifier beside numpy 2 (a bool in a node's ints)
    estimator = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X[:240], y[:240])
    onx = convert_sklearn(estimator, initial_types=[("x", FloatTensorType([None, X.shape[1]]))],
                          options={"zipmap": False})
    (tmp_path / "teacher.onnx").write_bytes(onx.SerializeToString())
    cfg = {
        # features used as stored (standardize: false): the ONNX teacher was fitted on the raw columns
        "dataset": {"csv": str(train), "label": "label", "test": str(test), "standardize": False},
        "teacher": {"onnx": str(tmp_path / "teacher.onnx")},
        "student": SMALL,
        "distill": {"sweep": {"temperatures": [], "alphas": []}},
        "seeds": [0],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    teacher = next(m for m in results["models"] if m["role"] == "teacher")
    assert teacher["name"] == "teacher (ONNX: teacher.onnx)"
    # the teacher's test errors are the estimator's own on the test file
    assert teacher["test_errors"] == int((estimator.predict(X[240:]) != y[240:]).sum())
    assert results["dataset"]["num_test"] == 60 and results["dataset"]["num_classes"] == 3


def _image_folder(root: Path, n_per_class=24, seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, size=(8, 8), dtype=np.uint8)
            img[:, :4] += 150 if c == 0 else 0  # class 0: bright left half, class 1: dark
            Image.fromarray(img, mode="L").save(root / f"class{c}" / f"{i}.png")
    return root


def test_an_augmented_student_on_an_image_folder_is_taught_online(tmp_path, capsys):
    train, test = _image_folder(tmp_path / "train"), _image_folder(tmp_path / "test", n_per_class=8, seed=1)
    cfg = {
        "dataset": {"imagefolder": str(train), "test": str(test)},
        "teacher": SMALL,
        "student": {"model": {"name": "mlp", "options": {"hidden": [4]}},
                    "train": {"epochs": 2, "batch_size": 16, "augment": {"shift": 1}}},
        "distill": {"sweep": {"temperatures": [], "alphas": []}},  # teacher_mode auto: online, since augmented
        "seeds": [0],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "the teacher runs online on every student batch" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dataset"]["input_shape"] == [1, 8, 8]
    assert results["dataset"]["class_names"] == ["class0", "class1"]


def test_an_augmented_student_with_cached_soft_targets_is_refused():
    with pytest.raises(ConfigError, match=r"student\.train\.augment needs distill\.teacher_mode online"):
        parse_config({"student": {"train": {"augment": {"hflip": True}}}, "distill": {"teacher_mode": "cached"}})


def test_train_with_adamw_from_a_config(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [8]}},
                                    "train": {"optimizer": "adamw", "lr": 0.01, "epochs": 2}}))
    from darkknowledge.config import TrainRunConfig, load_config

    cfg = load_config(path, TrainRunConfig)
    kwargs = cfg.train.fit_kwargs()
    assert kwargs["optimizer"] == "adamw" and "momentum" not in kwargs and "nesterov" not in kwargs
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["optimizer"] == "adamw"


@pytest.mark.parametrize("raw, message", [
    ({"train": {"optimizer": "adamw", "momentum": 0.5}}, r"momentum applies to optimizer sgd only, got optimizer 'adamw'"),
    ({"train": {"optimizer": "adam", "nesterov": True}}, r"nesterov applies to optimizer sgd only"),
    ({"train": {"optimizer": "lion"}}, r"train\.optimizer"),
])
def test_train_config_contradictions(raw, message):
    from darkknowledge.config import TrainRunConfig

    with pytest.raises(ConfigError, match=message):
        parse_config(raw, TrainRunConfig)


@pytest.mark.parametrize("raw, message", [
    ({"teacher": {"onnx": "t.onnx", "run_dir": "runs/t"}}, r"give one of run_dir, onnx and huggingface"),
    ({"teacher": {"onnx": "t.onnx", "model": {"name": "mlp"}}}, r"a teacher loaded from onnx is not trained here: drop \['model'\]"),
    ({"teacher": {"huggingface": ""}}, r"teacher\.huggingface must not be empty"),
    ({"dataset": {"csv": "a.csv", "parquet": "b.parquet"}}, r"give one of csv, parquet and imagefolder"),
    ({"dataset": {"csv": "a.csv", "name": "digits"}}, r"either as name or as csv, not both"),
    ({"dataset": {"imagefolder": "photos", "label": "y"}}, r"an image folder's labels are its class subfolders"),
    ({"dataset": {"name": "digits", "test": "t.csv"}}, r"test names the test part of a csv, parquet or imagefolder"),
    ({"distill": {"teacher_mode": "sometimes"}}, r"distill\.teacher_mode"),
])
def test_experiment_config_contradictions(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_a_csv_run_without_a_test_part_says_how_to_give_one(tmp_path, capsys):
    X, y = _tabular(tmp_path)
    train = _write_csv(tmp_path / "train.csv", X, y)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"csv": str(train), "label": "label"}, "teacher": SMALL,
                                    "student": SMALL, "seeds": [0]}))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(r"has no test split \(give one with dataset\.test: a file or folder of the same kind\)", err), err


def test_train_optimizer_flag(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--hidden", "8", "--epochs", "1",
                 "--optimizer", "adam", "--lr", "0.01", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["optimizer"] == "adam"
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--optimizer", "adam", "--momentum", "0.5",
                 "--out", str(tmp_path / "out2")])
    assert code == 2 and "momentum applies to optimizer sgd only" in capsys.readouterr().err


def test_an_augmented_student_on_flat_features_is_refused_before_the_teacher_trains(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"name": "digits"}, "teacher": SMALL, "seeds": [0],
                                    "student": {"model": {"name": "mlp", "options": {"hidden": [4]}},
                                                "train": {"epochs": 1, "augment": {"hflip": True}}}}))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "student.train.augment: augment needs image inputs of shape (C, H, W) or (H, W) per sample, got (64,)" in err
    assert not (tmp_path / "out" / "teacher").exists()
