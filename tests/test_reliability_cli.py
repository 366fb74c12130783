"""Bad input, driven through the command line: a clear error naming the input, exit code 2, no traceback.

Every case runs ``darkknowledge train`` / ``darkknowledge run`` (in process, through
:func:`darkknowledge.cli.main`, so each takes well under a second) on a small user data set or
config written in ``tmp_path``, and checks the exit code, the message on stderr (quoted in
docs/reliability.md) and that no traceback was printed. Two cases also go through a real
``python -m darkknowledge`` subprocess, the entry point a user runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from darkknowledge.cli import main
from darkknowledge.data import mnist as mnist_mod

TINY = ["--model", "mlp", "--hidden", "4", "--epochs", "1", "--batch-size", "16"]


def _xy(n=40, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % c


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _run_cli(argv, capsys):
    """(exit code, stderr) of ``darkknowledge <argv>``; the test fails on any escaping exception."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def _check_error(code, err, message):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("darkknowledge: error: "), err
    assert re.search(message, err), f"{message!r} not in {err!r}"


def _train(tmp_path, dataset, *extra):
    return ["train", "--dataset", dataset, "--out", tmp_path / "out", *TINY, *extra]


# --------------------------------------------------------------------------------------------
# features and labels (user .npz / .csv through `darkknowledge train`)


def _bad_npz_cases():
    X, y = _xy()
    nan = X.copy()
    nan[3, 1] = np.nan
    inf = X.copy()
    inf[5, 0] = -np.inf
    return {
        "nan_features": (dict(X=nan, y=y), r"X must be finite, got 1 NaN or inf values instead \(first at index \(3, 1\)\)"),
        "inf_features": (dict(X=inf, y=y), r"X must be finite, got 1 NaN or inf values instead \(first at index \(5, 0\)\)"),
        "label_out_of_range": (dict(X=X, y=np.where(y == 2, 7, y), class_names=np.array(["a", "b", "c"])),
                               r"y must be class labels in \[0, 2\] \(3 classes\), got 7 instead"),
        "negative_label": (dict(X=X, y=np.where(y == 0, -1, y)), r"y must be class labels >= 0, got -1 instead"),
        "non_integer_label": (dict(X=X, y=y + 0.5), r"y must be integer class labels, got the non-integer value 0\.5 at index 0"),
        "huge_label": (dict(X=X, y=np.where(y == 0, 10**9, y)),
                       r"y in data\.npz must be class indices 0\.\.C-1, got the label 1000000000 instead"),
        "length_mismatch": (dict(X=X, y=y[:-1]), r"X and y must have the same length, got 40 samples and 39 labels instead"),
        "empty_dataset": (dict(X=X[:0], y=y[:0]), r"X must not be empty, got shape \(0, 4\) instead"),
        "empty_class": (dict(X=X, y=np.where(y == 1, 2, y)),
                        r"every class must have training samples, got none of class 1 \('1'\) of 3"),
        "empty_named_class": (dict(X=X, y=y, class_names=np.array(["a", "b", "c", "d"])),
                              r"every class must have training samples, got none of class 3 \('d'\) of 4"),
        "test_shape_mismatch": (dict(X=X, y=y, X_test=X[:5, :3], y_test=y[:5]),
                                r"X_test must have the same sample shape as X, \(4,\), got \(3,\) instead"),
        "pickled_object_array": (dict(X=np.array([{"a": 1}] * 40, dtype=object), y=y),
                                 r"array 'X' in data\.npz is an object \(pickled\) array; only numeric arrays are read"),
        "missing_y": (dict(X=X), r"data\.npz must hold arrays 'X' and 'y'; missing 'y'"),
    }


@pytest.mark.parametrize("case", list(_bad_npz_cases()))
def test_bad_npz_dataset(tmp_path, capsys, case):
    arrays, message = _bad_npz_cases()[case]
    code, err = _run_cli(_train(tmp_path, _npz(tmp_path / "data.npz", **arrays)), capsys)
    _check_error(code, err, message)
    assert not (tmp_path / "out" / "summary.json").exists()


def _bad_npz_files(tmp_path):
    X, y = _xy()
    good = Path(_npz(tmp_path / "good.npz", X=X, y=y)).read_bytes()
    npy = tmp_path / "array.npy"
    np.save(npy, X)
    return {
        "truncated.npz": (good[: len(good) // 2], r"truncated\.npz is not a readable \.npz archive \(BadZipFile"),
        "garbage.npz": (b"this is not an archive\n" * 10, r"garbage\.npz is not a readable \.npz archive \(not a zip nor \.npy file\)"),
        "empty.npz": (b"", r"empty\.npz is not a readable \.npz archive"),
        "single.npz": (npy.read_bytes(), r"single\.npz holds a single \.npy array, not a \.npz archive"),
    }


@pytest.mark.parametrize("name", ["truncated.npz", "garbage.npz", "empty.npz", "single.npz"])
def test_corrupt_npz_file(tmp_path, capsys, name):
    data, message = _bad_npz_files(tmp_path)[name]
    (tmp_path / name).write_bytes(data)
    code, err = _run_cli(_train(tmp_path, tmp_path / name), capsys)
    _check_error(code, err, message)


@pytest.mark.parametrize(
    "text, message",
    [
        (b"a,b,label\n1,2,0\n3,x,1\n", r"table\.csv line 3, column 'b' must be a number, got 'x' instead"),
        (b"a,b,label\n1,2,0\n3,4\n", r"table\.csv line 3 has 2 fields: expected 3 like the header"),
        (b"a,b,label\n1,inf,0\n3,4,1\n", r"X must be finite, got 1 NaN or inf values instead \(first at index \(0, 1\)\)"),
        (b"a,b,label\n1,2,0\n3,4,-2\n", r"column 'label' must be class labels >= 0, got -2 instead"),
        (b"a,b,label\n", r"table\.csv has a header but no data rows: the data set is empty"),
        (b"", r"table\.csv is empty: expected a header row and data rows"),
        (b"a,b,label\n1,2,0\n\xff\xfe,4,1\n", r"table\.csv must be UTF-8 text, got a byte it cannot decode"),
        (b"a,b,label\n1,2,0\n3,4,2\n", r"every class must have training samples, got none of class 1 \('1'\) of 3"),
    ],
    ids=["not_a_number", "short_row", "inf", "negative_label", "header_only", "empty_file", "not_utf8", "empty_class"],
)
def test_bad_csv_dataset(tmp_path, capsys, text, message):
    (tmp_path / "table.csv").write_bytes(text)
    code, err = _run_cli(_train(tmp_path, tmp_path / "table.csv"), capsys)
    _check_error(code, err, message)


def test_missing_data_file(tmp_path, capsys):
    code, err = _run_cli(_train(tmp_path, tmp_path / "nope.npz"), capsys)
    _check_error(code, err, r"Data file '.*nope\.npz' does not exist")


def test_unknown_dataset_name(tmp_path, capsys):
    code, err = _run_cli(_train(tmp_path, "mnits"), capsys)
    _check_error(code, err, r"name must be one of 'digits', 'mnist', 'fashion-mnist', 'challenger' or a path")


# --------------------------------------------------------------------------------------------
# IDX files (MNIST layout) and downloads


ROLES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def mnist_env(tmp_path, monkeypatch):
    """No data variables; cache and system folder in tmp_path; tiny MNIST-format arrays registered as official."""
    for var in ("DARKKNOWLEDGE_DATA", "DARKKNOWLEDGE_OFFLINE", "DARKKNOWLEDGE_MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "SYSTEM_DATA_DIR", tmp_path / "system")
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(30) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(10) % 10).astype(np.uint8),
    }

    def register(arrays):
        gz = {ROLES[r]: gzip.compress(_idx(a), mtime=0) for r, a in arrays.items()}
        files = {
            role: mnist_mod.RemoteFile(fname, "sha256", hashlib.sha256(gz[fname]).hexdigest(),
                                       hashlib.sha256(_idx(arrays[role])).hexdigest())
            for role, fname in ROLES.items()
        }
        monkeypatch.setitem(mnist_mod.SOURCES, "mnist", dataclasses.replace(mnist_mod.SOURCES["mnist"], files=files))
        return gz

    return arrays, register


def _put(folder: Path, gz: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in gz.items():
        (folder / name).write_bytes(data)
    return folder


def test_idx_file_that_is_not_the_official_one(tmp_path, capsys, monkeypatch):
    # the real registry: random bytes in the right names fail the recorded checksum
    monkeypatch.setattr(mnist_mod, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    folder = _put(tmp_path / "d", {name: _idx(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)) for name in ROLES.values()})
    code, err = _run_cli(_train(tmp_path, "mnist", "--data-dir", folder), capsys)
    _check_error(code, err, r"train-images-idx3-ubyte\.gz is not the official train-images-idx3-ubyte\.gz: expected sha256 [0-9a-f]{64}")


def test_idx_truncated_gzip(tmp_path, capsys, mnist_env):
    _, register = mnist_env
    gz = register(mnist_env[0])
    gz["t10k-labels-idx1-ubyte.gz"] = gz["t10k-labels-idx1-ubyte.gz"][:-9]
    folder = _put(tmp_path / "d", gz)
    code, err = _run_cli(_train(tmp_path, "mnist", "--data-dir", folder), capsys)
    _check_error(code, err, r"t10k-labels-idx1-ubyte\.gz is a corrupt or truncated gzip file")


def test_idx_labels_and_images_mismatched(tmp_path, capsys, mnist_env):
    arrays, register = mnist_env
    arrays = dict(arrays, train_labels=arrays["train_labels"][:-1])
    folder = _put(tmp_path / "d", register(arrays))
    code, err = _run_cli(_train(tmp_path, "mnist", "--data-dir", folder), capsys)
    _check_error(code, err, r"train-labels-idx1-ubyte\.gz has 29 labels, but its images file has 30 images")


def test_idx_header_does_not_match_data(tmp_path, capsys, mnist_env, monkeypatch):
    arrays, register = mnist_env
    gz = register(arrays)
    raw = bytearray(_idx(arrays["test_images"]))
    raw[7] = 11  # header now promises 11 images, the data holds 10
    bad = gzip.compress(bytes(raw), mtime=0)
    gz["t10k-images-idx3-ubyte.gz"] = bad
    # register the damaged file as official, so that the IDX reader itself must catch it
    src = mnist_mod.SOURCES["mnist"]
    files = dict(src.files, test_images=dataclasses.replace(src.files["test_images"], checksum=hashlib.sha256(bad).hexdigest()))
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", dataclasses.replace(src, files=files))
    folder = _put(tmp_path / "d", gz)
    code, err = _run_cli(_train(tmp_path, "mnist", "--data-dir", folder), capsys)
    _check_error(code, err, r"t10k-images-idx3-ubyte\.gz is truncated: its header promises shape \(11, 28, 28\)")


def test_download_with_wrong_checksum(tmp_path, capsys, mnist_env, monkeypatch, local_http_server):
    arrays, register = mnist_env
    gz = register(arrays)
    served = dict(gz)
    flipped = bytearray(gz["train-images-idx3-ubyte.gz"])
    flipped[len(flipped) // 2] ^= 0x01
    served["train-images-idx3-ubyte.gz"] = bytes(flipped)
    with local_http_server(served) as server:
        monkeypatch.setenv("DARKKNOWLEDGE_MNIST_MIRROR", server.url)
        code, err = _run_cli(_train(tmp_path, "mnist"), capsys)
    expected = hashlib.sha256(gz["train-images-idx3-ubyte.gz"]).hexdigest()
    got = hashlib.sha256(bytes(flipped)).hexdigest()
    _check_error(code, err, rf"Checksum mismatch for train-images-idx3-ubyte\.gz downloaded from .*: expected sha256 {expected}, got {got}\. The file was not kept\.")
    cache = tmp_path / "cache" / "darkknowledge" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-downloaded kept


# --------------------------------------------------------------------------------------------
# configs


def _yaml(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "command, text, message",
    [
        ("train", "train:\n  epochs: [1\n", r"Config file '.*config\.yaml' is not valid YAML: while parsing a flow sequence"),
        ("run", "distill: {temperature: 4\n", r"Config file '.*config\.yaml' is not valid YAML"),
        ("train", "train:\n  epocs: 3\n", r"Unknown config key 'train\.epocs' \(did you mean 'epochs'\?\)\. Valid keys here: epochs, "),
        ("run", "distill:\n  temprature: 3\n", r"Unknown config key 'distill\.temprature' \(did you mean 'temperature'\?\)"),
        ("run", "sedes: [0]\n", r"Unknown config key 'sedes' \(did you mean 'seeds'\?\)"),
        ("train", "train:\n  epochs: lots\n", r"Config key 'train\.epochs': Input should be a valid integer, unable to parse string as an integer; got 'lots'"),
        ("run", "seeds: 0\n", r"Config key 'seeds': Input should be a valid list; got 0"),
        ("run", "- a list\n- not a mapping\n", r"A config must be a mapping of keys to values, got list instead"),
        ("run", "distill:\n  temperature: 0\n", r"Config key 'distill\.temperature': Input should be greater than 0; got 0"),
        ("run", "distill:\n  temperature: -2.5\n", r"Config key 'distill\.temperature': Input should be greater than 0; got -2\.5"),
        ("run", "distill:\n  alpha: 1.5\n", r"Config key 'distill\.alpha': Input should be less than or equal to 1; got 1\.5"),
        ("run", "distill:\n  alpha: -0.1\n", r"Config key 'distill\.alpha': Input should be greater than or equal to 0; got -0\.1"),
        ("run", "distill:\n  sweep: {temperatures: [2, 0], alphas: [0.1]}\n", r"Config key 'distill\.sweep\.temperatures': Value error, every temperature must be > 0"),
        ("run", "distill:\n  sweep: {temperatures: [2], alphas: [2]}\n", r"Config key 'distill\.sweep\.alphas': Value error, every alpha must be in \[0, 1\]"),
        ("run", "!!python/object/apply:os.system ['true']\n", r"is not valid YAML: could not determine a constructor for the tag"),
        ("run", "student:\n  train: {augment: {hflip: true}}\ndistill: {teacher_mode: cached}\n", r"Config: Value error, student\.train\.augment needs distill\.teacher_mode online \(or auto\): cached soft targets are the teacher's outputs"),
        ("train", "train:\n  augment: {shift: -1}\n", r"Config key 'train\.augment\.shift': Input should be greater than or equal to 0; got -1"),
    ],
    ids=["yaml_train", "yaml_run", "unknown_key_train", "unknown_key_run", "unknown_top_key", "wrong_type",
         "wrong_type_list", "not_a_mapping", "temperature_zero", "temperature_negative", "alpha_above_1",
         "alpha_below_0", "sweep_temperature", "sweep_alpha", "python_tag", "student_augment", "negative_shift"],
)
def test_bad_config(tmp_path, capsys, command, text, message):
    code, err = _run_cli([command, _yaml(tmp_path, text), "--out", tmp_path / "out"], capsys)
    _check_error(code, err, message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_config_file(tmp_path, capsys):
    code, err = _run_cli(["run", tmp_path / "nope.yaml"], capsys)
    _check_error(code, err, r"Config file '.*nope\.yaml' does not exist")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "softmax", "1", "2", "-T", "0"], r"temperature must be a finite number > 0, got 0\.0 instead"),
        (["info", "softmax", "1", "2", "-T", "-1"], r"temperature must be a finite number > 0, got -1\.0 instead"),
        (["train", "--lr", "-1"], r"Config key 'train\.lr': Input should be greater than 0; got -1\.0"),
        (["train", "--dropout", "1.5", "--model", "mlp"], r"dropout must be in \[0\.0, 1\.0\], got 1\.5 instead"),
        (["info", "entropy", "0.5", "nan"], r"must be finite|NaN"),
        (["train", "--shift", "2", "--model", "mlp"], r"augment needs image inputs of shape \(C, H, W\) or \(H, W\) per sample, got \(64,\) instead"),
        (["train", "--model", "cnn", "--hidden", "32", "16"], r"--hidden takes one size for a cnn \(its dense layer\), got \[32, 16\] instead"),
    ],
    ids=["softmax_T0", "softmax_Tneg", "negative_lr", "dropout", "entropy_nan", "shift_flat_data", "cnn_two_hidden"],
)
def test_bad_hyperparameter_flags(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = argv + ["--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "out")]
    code, err = _run_cli(argv, capsys)
    _check_error(code, err, message)


# --------------------------------------------------------------------------------------------
# `run`: teacher and student must agree; output folders


def _run_config(tmp_path, data, **override):
    small = {"model": {"name": "mlp", "options": {"hidden": [4]}}, "train": {"epochs": 1, "batch_size": 16}}
    cfg = {"dataset": {"name": str(data)}, "teacher": dict(small), "student": dict(small),
           "distill": {"sweep": {"temperatures": [], "alphas": []}}, "seeds": [0], "out_dir": str(tmp_path / "run")}
    for key, value in override.items():
        loaded_teacher = key == "teacher" and "run_dir" in value  # a loaded teacher is not trained here
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and not loaded_teacher else value
    return _yaml(tmp_path, yaml.safe_dump(cfg), name="run.yaml")


def _dataset_with_test(tmp_path, name, *, d=4, c=3):
    X, y = _xy(n=60, d=d, c=c)
    return _npz(tmp_path / name, X=X, y=y, X_test=X[:15], y_test=y[:15])


@pytest.mark.parametrize(
    "d, c, message",
    [
        (4, 4, r"teacher\.run_dir '.*teacher' must hold a teacher for the data's input shape \(4,\) and 3 classes, got input shape \(4,\) and 4 classes instead"),
        (5, 3, r"teacher\.run_dir '.*teacher' must hold a teacher for the data's input shape \(4,\) and 3 classes, got input shape \(5,\) and 3 classes instead"),
    ],
    ids=["classes", "input_shape"],
)
def test_teacher_and_student_disagree(tmp_path, capsys, d, c, message):
    other = _dataset_with_test(tmp_path, "other.npz", d=d, c=c)
    assert main(["train", "--dataset", other, "--out", str(tmp_path / "teacher"), *TINY]) == 0
    capsys.readouterr()
    config = _run_config(tmp_path, _dataset_with_test(tmp_path, "data.npz"), teacher={"run_dir": str(tmp_path / "teacher")})
    code, err = _run_cli(["run", config], capsys)
    _check_error(code, err, message)
    assert not (tmp_path / "run" / "results.json").exists()


def test_missing_teacher_folder(tmp_path, capsys):
    config = _run_config(tmp_path, _dataset_with_test(tmp_path, "data.npz"), teacher={"run_dir": str(tmp_path / "nowhere")})
    code, err = _run_cli(["run", config], capsys)
    _check_error(code, err, r"nowhere/model\.json not found: a model folder holds model\.safetensors and model\.json")


def test_run_needs_a_test_split(tmp_path, capsys):
    X, y = _xy()
    config = _run_config(tmp_path, _npz(tmp_path / "data.npz", X=X, y=y))
    code, err = _run_cli(["run", config], capsys)
    _check_error(code, err, r"dataset '.*data\.npz' has no test split; the run evaluates on a held-out test split")


@pytest.mark.parametrize("command", ["train", "run"])
def test_unwritable_output_folder(tmp_path, capsys, command):
    # a regular file where a folder must go: fails even as root (permissions would not)
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "run"
    data = _dataset_with_test(tmp_path, "data.npz")
    if command == "train":
        argv = ["train", "--dataset", data, "--out", out, *TINY]
    else:
        argv = ["run", _run_config(tmp_path, data), "--out", out]
    code, err = _run_cli(argv, capsys)
    _check_error(code, err, r"the output folder '.*afile/run' must be a folder that can be created and written, "
                            r"got NotADirectoryError: Not a directory instead")
    assert (tmp_path / "afile").read_text() == "not a folder"


# --------------------------------------------------------------------------------------------
# the real entry point: a subprocess, as a user runs it


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: ["train", "--dataset", _npz(p / "d.npz", X=np.full((6, 2), np.nan), y=np.arange(6) % 2), "--out", str(p / "o")],
         r"darkknowledge: error: X must be finite, got 12 NaN or inf values instead"),
        (lambda p: ["run", str(_yaml(p, "distill:\n  alpah: 0.5\n"))],
         r"darkknowledge: error: Unknown config key 'distill\.alpah' \(did you mean 'alpha'\?\)"),
    ],
    ids=["nan_features", "unknown_key"],
)
def test_subprocess_exit_code_and_no_traceback(tmp_path, make, message):
    proc = subprocess.run([sys.executable, "-m", "darkknowledge", *make(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert proc.stderr.count("\n") == 1  # one line: the message
