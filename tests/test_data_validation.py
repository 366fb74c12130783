"""Data a careless or hostile user could hand over: a clear error naming the file, before any work.

Issue 9, items 3 (one label exhausting memory), 12 (features beyond float32), 13 (duplicated
columns and class names, one-class data), 14 (offline MNIST, crafted headers) and 16 (messages
that named the wrong thing).
"""

import gzip
import io
import os
import struct
import zipfile

import numpy as np
import pytest

from darkknowledge.data import (
    DataError,
    Dataset,
    DatasetUnavailableError,
    load_dataset,
    open_npy_folder,
    prepare_splits,
    read_idx,
)
from darkknowledge.data import user as user_mod
from darkknowledge.data.idx import gunzip_bounded

# ------------------------------------------------------------------ a folder of .npy files


def _npy_folder(tmp_path, **arrays):
    base = dict(
        X_train=np.zeros((6, 3), np.float32), y_train=np.array([0, 1, 2, 0, 1, 2]),
        X_val=np.zeros((3, 3), np.float32), y_val=np.array([0, 1, 2]),
    )
    base.update(arrays)
    folder = tmp_path / "npyset"
    folder.mkdir()
    for name, array in base.items():
        if array is not None:
            np.save(folder / f"{name}.npy", array)
    return folder


def test_npy_folder_that_is_fine(tmp_path):
    s = open_npy_folder(_npy_folder(tmp_path))
    assert type(s.X_train).__name__ == "memmap" and s.class_names == ["0", "1", "2"]
    assert s.y_val.tolist() == [0, 1, 2] and s.X_test is None


@pytest.mark.parametrize(
    "arrays, error, match",
    [
        (dict(y_train=np.array([0, 1, 2, 0, 1, 10**10])), ValueError,
         r"y_train\.npy in npyset must be class indices 0\.\.C-1, got the label 10000000000 instead, which would make 10000000001 classes"),
        (dict(y_val=np.array([0, 1, 7])), ValueError, r"y_val\.npy must be class labels in \[0, 2\] \(3 classes\), got 7 instead"),
        (dict(y_val=np.array([0, -1, 2])), ValueError, r"y_val\.npy must be class labels >= 0, got -1 instead"),
        (dict(y_train=np.array([0, 1, 2, 0, 1, -3])), ValueError, r"y_train\.npy must be class labels >= 0, got -3 instead"),
        (dict(y_train=np.array([0, 1, 2, 0, 1, 1.5])), ValueError, r"y_train\.npy must be integer class labels, got the non-integer value 1\.5 at index 5"),
        (dict(y_train=np.array([0, 1, 2, 0, 1, np.nan])), ValueError, r"y_train\.npy must be integer class labels, got NaN or inf instead \(nan at index 5\)"),
        (dict(y_train=np.zeros(6, np.int64), y_val=np.zeros(3, np.int64)), ValueError,
         r"the data set in '.*npyset' must have at least 2 classes for classification, got 1 \('0'\) instead"),
        (dict(y_train=np.array([0, 2, 2, 0, 2, 2])), ValueError, r"every class must have training samples, got none of class 1 \('1'\) of 3 in y_train\.npy"),
        (dict(y_val=np.array([0, 1])), ValueError, r"y_val\.npy must hold 3 labels \(one per row of X_val\.npy\), got 2 instead"),
        (dict(X_val=np.zeros((3, 4), np.float32)), ValueError, r"X_val\.npy must have the same sample shape as X_train\.npy, \(3,\), got \(4,\) instead"),
        (dict(X_train=np.zeros((6, 3), np.float64)), ValueError, r"X_train\.npy must hold float32 features of shape \(N, \.\.\.\), got float64"),
        (dict(X_train=np.where(np.arange(18).reshape(6, 3) == 13, np.nan, 0).astype(np.float32)), ValueError,
         r"X_train\.npy must hold finite features, got NaN or inf instead \(first at index \(4, 1\), row 4 of X_train\.npy\); the data is bad, not the training"),
        (dict(X_val=np.full((3, 3), np.inf, np.float32)), ValueError, r"X_val\.npy must hold finite features.*row 0 of X_val\.npy"),
        (dict(y_val=None), FileNotFoundError, r"X_val\.npy and y_val\.npy must both exist"),
    ],
    ids=["huge_label", "val_out_of_range", "val_negative", "train_negative", "float_label", "nan_label",
         "one_class", "empty_class", "val_length", "val_shape", "float64", "nan_train", "inf_val", "missing_y_val"],
)
def test_bad_npy_folder(tmp_path, arrays, error, match):
    folder = _npy_folder(tmp_path, **arrays)
    with pytest.raises(error, match=match):
        open_npy_folder(folder)


def test_npy_folder_class_names(tmp_path):
    folder = _npy_folder(tmp_path)
    assert open_npy_folder(folder, class_names=["a", "b", "c"]).class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"class_names of the data set in '.*' must be distinct, got 'a' twice \(classes 0 and 2\)"):
        open_npy_folder(folder, class_names=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"y_train\.npy must be class labels in \[0, 1\] \(2 classes\), got 2 instead"):
        open_npy_folder(folder, class_names=["a", "b"])


def _crafted_npy(path, shape, dtype="<f4", data=b"\0" * 64):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(b"\x93NUMPY\x01\x00"[:0] + buf.getvalue() + data)


@pytest.mark.parametrize("which", ["X_train", "y_train", "y_val"])
def test_npy_header_promising_more_than_the_file_holds(tmp_path, which):
    folder = _npy_folder(tmp_path)
    dtype = "<f4" if which.startswith("X") else "<i8"
    _crafted_npy(folder / f"{which}.npy", (10**11, 4) if which.startswith("X") else (10**11,), dtype)
    with pytest.raises(DataError, match=rf"{which}\.npy is truncated or corrupt: its header promises shape \(100000000000,"):
        open_npy_folder(folder)


def test_npy_corrupt_header_names_the_file(tmp_path):
    folder = _npy_folder(tmp_path)
    (folder / "y_train.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(DataError, match=r"y_train\.npy has an unreadable \.npy header"):
        open_npy_folder(folder)


def test_npy_folder_given_as_file_or_empty(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"'.*f' is not a folder: expected a folder holding X_train\.npy"):
        open_npy_folder(tmp_path / "f")
    with pytest.raises(ValueError, match=r"the dataset folder name is empty"):
        open_npy_folder("")
    with pytest.raises(FileNotFoundError, match=r"folder '.*nowhere' does not exist"):
        open_npy_folder(tmp_path / "nowhere")


# ------------------------------------------------------------------ .npz: crafted headers, class names, float32 range


def _npz_with_member(path, name, member_bytes, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr(f"{name}.npy", member_bytes)
    path.write_bytes(buf.getvalue())


def test_npz_header_promising_1e11_rows_is_refused_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 4)})
    path = tmp_path / "data.npz"
    _npz_with_member(path, "X", header.getvalue() + b"\0" * 64, y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"array 'X' in data\.npz is truncated or corrupt: its header promises shape \(100000000000, 4\) of float32 \(1600000000000 bytes\), but the file holds 64 bytes"):
        load_dataset(path)


def test_npz_member_larger_than_memory_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((100, 4)), y=np.arange(100) % 2)
    monkeypatch.setattr(user_mod, "memory_limit_bytes", lambda: 1000)
    with pytest.raises(DataError, match=r"array 'X' in data\.npz is \d+ bytes uncompressed, more than this machine's memory \(1000 bytes\)"):
        load_dataset(path)


def test_npz_duplicated_class_names_and_one_class(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.ones((4, 2)), y=np.array([0, 1, 0, 1]), class_names=np.array(["cat", "cat"]))
    with pytest.raises(ValueError, match=r"class_names of data\.npz must be distinct, got 'cat' twice \(classes 0 and 1\) instead"):
        load_dataset(path)
    np.savez(path, X=np.ones((4, 2)), y=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"data\.npz must have at least 2 classes for classification, got 1 \('0'\) instead"):
        load_dataset(path)
    np.savez(path, X=np.ones((4, 2)), y=np.zeros(4, np.int64), X_test=np.ones((2, 2)), y_test=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"the training labels of data\.npz must hold at least 2 classes for classification, got only class 0 \('0'\) instead"):
        load_dataset(path)


def test_features_beyond_float32_are_refused_naming_file_and_row(tmp_path):
    path = tmp_path / "data.npz"
    X = np.ones((5, 2))
    X[3, 1] = 1e39  # finite in float64, inf in float32
    np.savez(path, X=X, y=np.array([0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match=r"X must be finite as float32 \(\|x\| <= 3\.402823e\+38\), got 1 values beyond that range instead \(first at index \(3, 1\): 1e\+39\); the first bad row is row 3 of data\.npz"):
        load_dataset(path)
    csv = tmp_path / "t.csv"
    csv.write_text("a,label\n1,0\n-1e300,1\n")
    with pytest.raises(ValueError, match=r"X must be finite as float32.*row 1 of t\.csv"):
        load_dataset(csv)


def test_nan_features_name_the_file_and_row(tmp_path):
    path = tmp_path / "data.npz"
    X = np.ones((5, 2))
    X[2, 0] = np.nan
    np.savez(path, X=X, y=np.array([0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match=r"X must be finite, got 1 NaN or inf values instead \(first at index \(2, 0\)\); the first bad row is row 2 of data\.npz"):
        load_dataset(path)


def test_prepare_splits_refuses_one_class_and_duplicated_names():
    X, y = np.ones((10, 2), np.float32), np.zeros(10, np.int64)
    with pytest.raises(ValueError, match=r"data set 'd' must have at least 2 classes for classification, got 1"):
        prepare_splits(Dataset("d", X, y, None, None, ["only"]))
    with pytest.raises(ValueError, match=r"class_names of data set 'd' must be distinct, got 'a' twice"):
        prepare_splits(Dataset("d", X, y % 2, None, None, ["a", "a"]))


# ------------------------------------------------------------------ CSV


def test_csv_duplicated_label_column_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,label,label\n1,0,1\n2,1,0\n")
    with pytest.raises(ValueError, match=r"the columns of t\.csv must have distinct names, got 'label' twice \(columns 2 and 3\) instead; a second label column would be read as a feature"):
        load_dataset(path)


def test_csv_byte_order_mark_is_stripped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbflabel,a\n0,1\n1,2\n")
    ds = load_dataset(path)
    assert ds.metadata["feature_names"] == ["a"] and ds.y_train.tolist() == [0, 1]


def test_csv_one_class_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,label\n1,cat\n2,cat\n")
    with pytest.raises(ValueError, match=r"t\.csv must have at least 2 classes for classification, got 1 \('cat'\) instead"):
        load_dataset(path)


# ------------------------------------------------------------------ names, FIFOs, folders


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_dataset_name(name):
    with pytest.raises(ValueError, match=r"the dataset name is empty: expected one of 'digits'"):
        load_dataset(name)


def test_data_file_that_is_a_folder_or_fifo(tmp_path):
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(ValueError, match=r"Data file '.*d\.npz' is a folder: expected a regular file"):
        load_dataset(tmp_path / "d.npz")
    os.mkfifo(tmp_path / "p.csv")
    with pytest.raises(ValueError, match=r"Data file '.*p\.csv' is a FIFO \(named pipe\), not a regular file"):
        load_dataset(tmp_path / "p.csv")  # never opened: that would block


# ------------------------------------------------------------------ MNIST offline, gzip bombs


def test_mnist_offline_is_a_one_line_error_of_the_projects_type(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DARKKNOWLEDGE_DATA", raising=False)
    monkeypatch.delenv("DARKKNOWLEDGE_OFFLINE", raising=False)
    monkeypatch.setattr("darkknowledge.data.mnist.SYSTEM_DATA_DIR", tmp_path / "nothing")
    # a port nothing listens on: "connection refused", what an offline machine gets at once
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("fashion-mnist", mirror="http://127.0.0.1:9/")
    message = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)
    assert "\n" not in message
    for part in ("Fashion-MNIST is not on this machine and could not be downloaded",
                 "from http://127.0.0.1:9/train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "DARKKNOWLEDGE_DATA", "--data-dir", "dataset.data_dir", "apt-get install dataset-fashion-mnist"):
        assert part in message, part
    assert list((tmp_path / "cache").rglob("*.gz")) == []


def test_gzip_bomb_is_refused(tmp_path):
    raw = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10**6) + bytes(10**6)
    bomb = gzip.compress(raw)
    with pytest.raises(ValueError, match=r"IDX file x\.gz decompresses to more than 1000 bytes"):
        gunzip_bounded(bomb, "x.gz", limit=1000)
    assert read_idx(bomb).shape == (10**6,)  # within the machine's memory it reads
    with pytest.raises(ValueError, match=r"IDX file <bytes> is a corrupt or truncated gzip file"):
        read_idx(bomb[:-9])
    with pytest.raises(ValueError, match=r"corrupt or truncated gzip file \(\d+ bytes after the gzip data"):
        read_idx(bomb + b"garbage")
    assert read_idx(gzip.compress(raw[:20]) + gzip.compress(raw[20:])).shape == (10**6,)  # two members


def test_idx_header_promising_a_huge_array_is_refused_without_allocating():
    raw = bytes([0, 0, 0x0D, 2]) + struct.pack(">II", 10**9, 10**3) + bytes(16)
    with pytest.raises(ValueError, match=r"IDX file <bytes> is truncated: its header promises shape \(1000000000, 1000\)"):
        read_idx(raw)
