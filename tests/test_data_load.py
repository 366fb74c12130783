"""load_dataset: the embedded digits, the Challenger CSV, user .npz / .csv files, and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_load_digits

from darkknowledge.data import DATASETS, Dataset, load_dataset

# --------------------------------------------------------------------------- registry


def test_datasets_names():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "challenger")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"name must be one of 'digits', 'mnist', 'fashion-mnist', 'challenger' or a path to an existing \.npz or \.csv file; got 'cifar10' instead\."):
        load_dataset("cifar10")


def test_missing_user_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Data file '.*absent\.npz' does not exist"):
        load_dataset(tmp_path / "absent.npz")


def test_name_type():
    with pytest.raises(TypeError, match="name must be a string or a path, got int instead"):
        load_dataset(3)


def test_download_flag_is_accepted_by_every_name():
    assert load_dataset("challenger", download=False).X_train.shape == (23, 1)
    with pytest.raises(TypeError, match="download must be True, False or None, got 0 instead"):
        load_dataset("digits", download=0)


def test_options_that_do_not_apply():
    with pytest.raises(ValueError, match=r"data_dir applies only to 'mnist', 'fashion-mnist', got data_dir='x' for 'digits'"):
        load_dataset("digits", data_dir="x")
    with pytest.raises(ValueError, match=r"mirror applies only to 'mnist', 'fashion-mnist'"):
        load_dataset("challenger", mirror="http://127.0.0.1/")
    with pytest.raises(ValueError, match=r"label_column applies only to \.csv files, got label_column='y' for 'digits'"):
        load_dataset("digits", label_column="y")


# --------------------------------------------------------------------------- digits


def test_digits_shapes_types_and_scaling():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.name == "digits"
    assert ds.X_train.shape == (1347, 64) and ds.X_test.shape == (450, 64)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.class_names == [str(d) for d in range(10)] and ds.num_classes == 10
    assert ds.input_shape == (64,)
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    # together the two splits are exactly scikit-learn's data / 16, each image once
    bunch = sk_load_digits()
    ours = np.concatenate([ds.X_train, ds.X_test]).astype(np.float64) * 16
    ours_y = np.concatenate([ds.y_train, ds.y_test])
    order_ours = np.lexsort(np.column_stack([ours, ours_y]).T)
    order_ref = np.lexsort(np.column_stack([bunch.data, bunch.target]).T)
    np.testing.assert_array_equal(ours[order_ours], bunch.data[order_ref])
    np.testing.assert_array_equal(ours_y[order_ours], bunch.target[order_ref])


def test_digits_test_split_is_stratified_and_fixed():
    ds = load_dataset("digits")
    total = np.bincount(sk_load_digits().target)
    test = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test - 0.25 * total) <= 1)
    again = load_dataset("digits")
    np.testing.assert_array_equal(ds.X_test, again.X_test)
    np.testing.assert_array_equal(ds.y_train, again.y_train)
    assert ds.metadata["source"] == "sklearn.datasets.load_digits"
    assert ds.metadata["shape"] == {"X_train": [1347, 64], "X_test": [450, 64]}


# --------------------------------------------------------------------------- challenger

FLIGHTS = [(66, 0), (70, 1), (69, 0), (68, 0), (67, 0), (72, 0), (73, 0), (70, 0), (57, 1),
           (63, 1), (70, 1), (78, 0), (67, 0), (53, 1), (67, 0), (75, 0), (70, 0), (81, 0),
           (76, 0), (79, 0), (75, 1), (76, 0), (58, 1)]


def test_challenger_values():
    ds = load_dataset("challenger")
    assert ds.X_train.shape == (23, 1) and ds.X_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.X_train[:, 0], [t for t, _ in FLIGHTS])
    np.testing.assert_array_equal(ds.y_train, [d for _, d in FLIGHTS])
    assert ds.y_train.sum() == 7  # "in 7 from 23 flights there have been problems"
    assert ds.X_test is None and ds.y_test is None
    assert ds.class_names == ["no distress", "distress"]


def test_challenger_csv_file_layout():
    text = (Path(__file__).parents[1] / "src" / "darkknowledge" / "data" / "challenger.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "temperature_f,distress"
    assert [tuple(map(int, line.split(","))) for line in lines[1:]] == FLIGHTS


# --------------------------------------------------------------------------- user .npz


def save(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_train_only(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    path = save(tmp_path, "toy.npz", X=X, y=np.array([0, 2, 1, 2]))
    ds = load_dataset(path)
    assert ds.name == "toy"
    np.testing.assert_array_equal(ds.X_train, X.astype(np.float32))
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.class_names == ["0", "1", "2"]
    assert ds.X_test is None and ds.y_test is None


def test_npz_with_test_split_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    path = save(tmp_path, X=rng.normal(size=(6, 2, 2)), y=np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]),
                X_test=rng.normal(size=(3, 2, 2)), y_test=np.array([2, 0, 1]),
                class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(path))
    assert ds.input_shape == (2, 2) and ds.X_test.shape == (3, 2, 2)
    np.testing.assert_array_equal(ds.y_train, [0, 1, 0, 1, 0, 1])
    assert ds.y_train.dtype == np.int64
    assert ds.class_names == ["a", "b", "c"]


def test_npz_class_count_from_test_labels(tmp_path):
    path = save(tmp_path, X=np.ones((2, 1)), y=np.array([0, 1]), X_test=np.ones((1, 1)), y_test=np.array([3]))
    assert load_dataset(path).class_names == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "arrays, error, message",
    [
        (dict(X=np.ones((2, 1))), ValueError, r"data\.npz must hold arrays 'X' and 'y'; missing 'y'"),
        (dict(X=np.ones((2, 1)), y=np.array([0, 1]), X_test=np.ones((1, 1))), ValueError,
         "must hold both 'X_test' and 'y_test' or neither, got only X_test"),
        (dict(X=np.array([[1.0], [np.nan], [np.inf]]), y=np.array([0, 1, 0])), ValueError,
         r"X must be finite, got 2 NaN or inf values instead \(first at index \(1, 0\)\)"),
        (dict(X=np.ones((3, 1)), y=np.array([0, -1, 1])), ValueError, "y must be class labels >= 0, got -1 instead"),
        (dict(X=np.ones((3, 1)), y=np.array([0.0, 1.5, 1.0])), ValueError,
         r"y must be integer class labels, got the non-integer value 1\.5 at index 1 instead"),
        (dict(X=np.ones((3, 1)), y=np.array([0, 1])), ValueError,
         "X and y must have the same length, got 3 samples and 2 labels instead"),
        (dict(X=np.ones((0, 4)), y=np.zeros(0, dtype=int)), ValueError, r"X must not be empty, got shape \(0, 4\) instead"),
        (dict(X=np.ones((2, 1)), y=np.array([0, 3]), class_names=np.array(["a", "b"])), ValueError,
         r"y must be class labels in \[0, 1\] \(2 classes\), got 3 instead"),
        (dict(X=np.array([["a"], ["b"]]), y=np.array([0, 1])), TypeError, "X must hold numbers, got dtype <U1 instead"),
        (dict(X=np.ones((2, 1)), y=np.array([[0], [1]])), ValueError, r"y must be 1-d \(one label per sample\), got shape \(2, 1\) instead"),
        (dict(X=np.ones((2, 1)), y=np.array([0, 1]), X_test=np.ones((1, 2)), y_test=np.array([0])), ValueError,
         r"X_test must have the same sample shape as X, \(1,\), got \(2,\) instead"),
        (dict(X=np.ones((2, 1)), y=np.array([0, 1]), X_test=np.ones((1, 1)), y_test=np.array([np.nan])), ValueError,
         "y_test must be integer class labels, got NaN or inf instead"),
    ],
)
def test_npz_errors(tmp_path, arrays, error, message):
    with pytest.raises(error, match=message):
        load_dataset(save(tmp_path, **arrays))


# --------------------------------------------------------------------------- user .csv


def write(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_integer_labels(tmp_path):
    path = write(tmp_path, "a,label,b\n1.5,0,2\n-3,2,4e1\n0,1,0\n")
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.X_train, np.array([[1.5, 2], [-3, 40], [0, 0]], dtype=np.float32))
    np.testing.assert_array_equal(ds.y_train, [0, 2, 1])
    assert ds.class_names == ["0", "1", "2"] and ds.X_test is None
    assert ds.metadata["feature_names"] == ["a", "b"]


def test_csv_string_labels_map_to_sorted_names(tmp_path):
    path = write(tmp_path, "x,species\n1,dog\n2,cat\n3,emu\n4,cat\n")
    ds = load_dataset(path, label_column="species")
    assert ds.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(ds.y_train, [1, 0, 2, 0])


def test_csv_integral_float_labels(tmp_path):
    ds = load_dataset(write(tmp_path, "x,label\n1,1.0\n2,0.0\n"))
    np.testing.assert_array_equal(ds.y_train, [1, 0])


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("x,label\n1,0\n", dict(label_column="y"), r"label_column must be one of the columns of table\.csv, \['x', 'label'\]; got 'y' instead"),
        ("x,label\n1,0\nabc,1\n", {}, r"table\.csv line 3, column 'x' must be a number, got 'abc' instead"),
        ("x,label\n1,0\n2,1,3\n", {}, r"table\.csv line 3 has 3 fields: expected 2 like the header"),
        ("", {}, r"table\.csv is empty: expected a header row and data rows"),
        ("x,label\n", {}, r"table\.csv has a header but no data rows: the data set is empty"),
        ("x,label\n1,0\n2,-1\n", {}, r"column 'label' must be class labels >= 0, got -1 instead"),
        ("x,label\n1,0\n2,1.5\n", {}, r"column 'label' must be integer class labels, got the non-integer value 1\.5 at index 1"),
        ("x,label\n1,0\n2,\n", {}, r"table\.csv line 3 has an empty 'label' value"),
        ("x,label\n1,0\nnan,1\n", {}, r"X must be finite, got 1 NaN or inf values instead \(first at index \(1, 0\)\)"),
        ("label\n1\n", {}, r"table\.csv must have at least one feature column besides the label"),
    ],
)
def test_csv_errors(tmp_path, text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(write(tmp_path, text), **kwargs)


def test_csv_label_column_type(tmp_path):
    from darkknowledge.data.user import load_csv

    with pytest.raises(TypeError, match="label_column must be a string, got int instead"):
        load_csv(write(tmp_path, "x,label\n1,0\n"), label_column=1)
