"""Tests for darkknowledge.data.adapters (as_splits) and the row helpers of darkknowledge.data.batches."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from darkknowledge.data import Splits, TabularEncoder, as_splits, load_dataset, num_rows, take_rows, train_val_split
from darkknowledge.errors import InputError, InputTypeError, MissingFileError


def _xy(n=20, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.array([0, 1] * (n // 2))


# ----------------------------------------------------------------------------- take_rows / num_rows


def test_take_rows_tensor_array_memmap_and_dict(tmp_path):
    X = torch.arange(12.0).reshape(6, 2)
    idx = torch.tensor([4, 0, 4])
    assert torch.equal(take_rows(X, idx), X[idx])
    arr = X.numpy()
    np.save(tmp_path / "x.npy", arr)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(take_rows(mm, idx), arr[[4, 0, 4]])
    np.testing.assert_array_equal(take_rows(arr, np.array([1, 2])), arr[[1, 2]])
    d = {"input_ids": torch.arange(6).reshape(6, 1), "attention_mask": torch.ones(6, 3)}
    out = take_rows(d, idx)
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].flatten().tolist() == [4, 0, 4] and out["attention_mask"].shape == (3, 3)
    assert num_rows(d) == 6 and num_rows(X) == 6 and num_rows(mm) == 6


def test_take_rows_refuses_other_kinds():
    with pytest.raises(InputTypeError, match="X must be a torch.Tensor, a numpy array or a dict of tensors, got list"):
        take_rows([1, 2, 3], torch.tensor([0]))
    with pytest.raises(InputError, match="non-empty dict"):
        num_rows({})


def test_splits_validates_dict_features():
    ids = torch.zeros(3, 4, dtype=torch.long)
    s = Splits(X_train={"input_ids": ids}, y_train=torch.tensor([0, 1, 2]))
    assert s.input_shape == {"input_ids": (4,)} and s.num_classes == 3
    with pytest.raises(InputError, match=r"X_train must hold tensors of one length \(rows\), got lengths"):
        Splits(X_train={"input_ids": ids, "attention_mask": torch.ones(2, 4)}, y_train=torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="X_val and y_val must have the same number of rows, got 3 and 2 instead"):
        Splits(X_train={"a": ids}, y_train=torch.tensor([0, 1, 2]), X_val={"a": ids}, y_val=torch.tensor([0, 1]))
    with pytest.raises(InputTypeError, match="X_train must map names to"):
        Splits(X_train={"a": [1, 2]}, y_train=torch.tensor([0, 1]))
    with pytest.raises(InputError, match="X_train must be a non-empty dict"):
        Splits(X_train={}, y_train=torch.tensor([0]))


# ----------------------------------------------------------------------------- tuples


def test_tuple_split_matches_train_val_split():
    X, y = _xy()
    s = as_splits((X, y), val_fraction=0.25, seed=3)
    tr, va, _, _ = train_val_split(np.arange(20), y, val_fraction=0.25, seed=3)  # independent: the same helper on indices
    np.testing.assert_allclose(s.X_train.numpy(), X[tr].astype(np.float32))
    np.testing.assert_allclose(s.X_val.numpy(), X[va].astype(np.float32))
    assert s.y_val.tolist() == y[va].tolist() and s.X_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert sorted(s.y_val.tolist()) == [0, 0, 1, 1, 1] or sorted(s.y_val.tolist()) == [0, 0, 0, 1, 1]
    assert s.class_names == ["0", "1"] and s.X_test is None and s.encoder is None


def test_tuple_with_val_and_test_and_no_split():
    X, y = _xy()
    s = as_splits((torch.tensor(X), torch.tensor(y)), val=(X[:4], y[:4]), test=(X[:2], y[:2]))
    assert s.X_train.shape == (20, 3) and s.X_val.shape == (4, 3) and s.X_test.shape == (2, 3)
    whole = as_splits((X, y), val_fraction=0.0)
    assert whole.X_val is None and whole.X_train.shape == (20, 3)


def test_string_labels_are_mapped_sorted_and_checked_in_val():
    X, _ = _xy(6)
    s = as_splits((X, ["dog", "cat", "dog", "cat", "emu", "emu"]), val=(X[:2], ["emu", "cat"]))
    assert s.class_names == ["cat", "dog", "emu"] and s.y_train.tolist() == [1, 0, 1, 0, 2, 2] and s.y_val.tolist() == [2, 0]
    with pytest.raises(InputError, match="val labels must hold the classes .* got the unknown label 'yak' instead"):
        as_splits((X, ["dog", "cat"] * 3), val=(X[:1], ["yak"]))
    with pytest.raises(InputError, match="val labels must be integer class ids like the training labels, got strings"):
        as_splits((X, [0, 1] * 3), val=(X[:1], ["yak"]))


def test_dict_features_keep_integer_ids():
    ids = np.arange(40).reshape(20, 2)
    s = as_splits(({"input_ids": ids, "attention_mask": np.ones((20, 2), bool), "pixel": np.zeros((20, 1))}, [0, 1] * 10))
    assert s.X_train["input_ids"].dtype == torch.int64 and s.X_train["attention_mask"].dtype == torch.int64
    assert s.X_train["pixel"].dtype == torch.float32
    assert num_rows(s.X_train) == 16 and num_rows(s.X_val) == 4
    rows = sorted(s.X_train["input_ids"][:, 0].tolist() + s.X_val["input_ids"][:, 0].tolist())
    assert rows == list(range(0, 40, 2))  # every row once, ids kept with their row
    with pytest.raises(InputError, match="standardize=True applies to tensor features, got a dict"):
        as_splits(({"input_ids": ids}, [0, 1] * 10), standardize=True)


@pytest.mark.parametrize(
    "data, error, match",
    [
        ((np.zeros((4, 2)), np.array([0, 1, 0])), InputError, "the features and labels of data must have the same length, got 4 rows and 3 labels"),
        ((np.array([[0.0], [np.nan]]), np.array([0, 1])), InputError, "data features must be finite"),
        ((np.array([[0.0], [1e39]]), np.array([0, 1])), InputError, "data features must be finite as float32"),
        ((np.zeros((2, 1)), np.array([0.5, 1.0])), InputError, "data labels must be integer class labels, got the non-integer value 0.5"),
        ((np.zeros((2, 1)), np.array([-1, 0])), InputError, "data labels must be class labels >= 0, got -1"),
        (({"a": np.zeros((3, 1)), "b": np.zeros((2, 1))}, np.array([0, 1, 0])), InputError, "data features must hold arrays of one length"),
        ((np.zeros((2, 1)),), InputError, r"data as a tuple must be \(X, y\), got a tuple of length 1"),
        ([np.zeros((2, 1)), np.array([0, 1])], InputTypeError, "data must be a Splits, a tuple .* got list instead"),
    ],
)
def test_tuple_errors(data, error, match):
    with pytest.raises(error, match=match):
        as_splits(data, val_fraction=0.0)


def test_splits_pass_through_and_argument_checks():
    s = as_splits(_xy())
    assert as_splits(s) is s
    with pytest.raises(InputError, match="val and test apply when data is not a Splits"):
        as_splits(s, val=_xy())
    with pytest.raises(InputError, match=r"val_fraction must be in \[0, 1\), got 1.0 instead"):
        as_splits(_xy(), val_fraction=1.0)
    with pytest.raises(InputError, match="categorical must be one of 'onehot', 'ordinal'; got 'hash' instead"):
        as_splits(_xy(), categorical="hash")
    with pytest.raises(InputError, match=r"data labels must be class ids in \[0, 2\) \(2 classes\), got 2 instead"):
        as_splits((np.zeros((3, 1)), np.array([0, 1, 2])), class_names=["a", "b"], val_fraction=0.0)


def test_standardize_fits_on_training_part_only():
    X, y = _xy(40)
    X = X * 5 + 3
    s = as_splits((X, y), val=(X[:5] + 100, y[:5]), standardize=True)
    np.testing.assert_allclose(s.X_train.numpy().mean(0), 0.0, atol=1e-5)
    assert float(s.X_val.mean()) > 10  # transformed with the training statistics, not refitted


# ----------------------------------------------------------------------------- torch datasets and loaders


class _DictSet(Dataset):
    def __init__(self, n, key="label"):
        self.n, self.key = n, key

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"input_ids": torch.tensor([i, i + 1]), "attention_mask": torch.ones(2), self.key: i % 2}


def test_torch_dataset_of_tuples_and_dicts():
    X, y = torch.randn(10, 3), torch.tensor([0, 1] * 5)
    s = as_splits(TensorDataset(X, y), val_fraction=0.0)
    assert torch.equal(s.X_train, X) and torch.equal(s.y_train, y)
    d = as_splits(_DictSet(6, key="labels"), val_fraction=0.0)
    assert d.X_train["input_ids"][:, 0].tolist() == list(range(6)) and d.y_train.tolist() == [0, 1] * 3
    assert set(d.X_train) == {"input_ids", "attention_mask"}
    c = as_splits(_DictSet(4, key="target"), label="target", val_fraction=0.0)
    assert c.y_train.tolist() == [0, 1, 0, 1]
    with pytest.raises(InputError, match="data must yield dicts with a label under 'label' or 'labels', got the keys"):
        as_splits(_DictSet(4, key="target"), val_fraction=0.0)


def test_dataloader_is_read_once_in_order_and_shuffling_refused():
    X, y = torch.randn(10, 3), torch.tensor([0, 1] * 5)
    s = as_splits(DataLoader(TensorDataset(X, y), batch_size=3), val_fraction=0.0)
    assert torch.equal(s.X_train, X) and torch.equal(s.y_train, y)
    d = as_splits(DataLoader(_DictSet(5), batch_size=2), val_fraction=0.0)
    assert d.X_train["input_ids"][:, 0].tolist() == list(range(5))
    with pytest.raises(InputError, match=r"data must be a DataLoader that reads its rows in order \(shuffle=False\).*RandomSampler"):
        as_splits(DataLoader(TensorDataset(X, y), batch_size=3, shuffle=True))


# ----------------------------------------------------------------------------- files


def _write_csv(path, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_numeric_csv_matches_load_dataset(tmp_path):
    path = _write_csv(tmp_path / "num.csv", [["a", "b", "label"]] + [[i, i * 0.5, i % 3] for i in range(9)])
    s = as_splits(path, val_fraction=0.0)
    ref = load_dataset(path)  # today's loader: an independent reading of the same file
    np.testing.assert_array_equal(s.X_train.numpy(), ref.X_train)
    assert s.y_train.tolist() == ref.y_train.tolist() and s.class_names == ref.class_names
    assert s.feature_names == ["a", "b"]


def test_csv_categorical_onehot_and_ordinal(tmp_path):
    rows = [["size", "colour", "y"], [1, "red", "no"], [2, "blue", "yes"], [3, "red", "no"], [4, "green", "yes"]]
    path = _write_csv(tmp_path / "t.csv", rows)
    val = _write_csv(tmp_path / "v.csv", [["size", "colour", "y"], [5, "mauve", "yes"], [6, "blue", "no"]])
    s = as_splits(path, val=val, label="y")
    assert s.feature_names == ["size", "colour=blue", "colour=green", "colour=red"]
    assert s.X_train.tolist() == [[1, 0, 0, 1], [2, 1, 0, 0], [3, 0, 0, 1], [4, 0, 1, 0]]
    assert s.X_val.tolist() == [[5, 0, 0, 0], [6, 1, 0, 0]]  # an unseen category: a row of zeros
    assert s.class_names == ["no", "yes"] and s.y_val.tolist() == [1, 0]
    assert isinstance(s.encoder, TabularEncoder) and s.encoder.categories == {"colour": ("blue", "green", "red")}
    np.testing.assert_array_equal(s.encoder.transform({"size": [0], "colour": ["green"]}), [[0, 0, 1, 0]])
    o = as_splits(path, val=val, label="y", categorical="ordinal")
    assert o.feature_names == ["size", "colour"] and o.X_train[:, 1].tolist() == [2, 0, 2, 1] and o.X_val[:, 1].tolist() == [-1, 0]


def test_table_errors(tmp_path):
    path = _write_csv(tmp_path / "t.csv", [["size", "y"], [1, 0], [2, 1]])
    with pytest.raises(InputError, match=r"label must be one of the columns of t.csv, \['size', 'y'\]; got 'label' instead"):
        as_splits(path)
    bad = _write_csv(tmp_path / "v.csv", [["size", "y"], ["big", 0]])
    with pytest.raises(InputError, match="column 'size' of v.csv must hold numbers .* got 'big' instead"):
        as_splits(path, val=bad, label="y")
    missing = _write_csv(tmp_path / "m.csv", [["width", "y"], [1, 0]])
    with pytest.raises(InputError, match=r"m.csv must have the columns \['size'\], got none named \['size'\]"):
        as_splits(path, val=missing, label="y")
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,y\n1,0\n2\n")
    with pytest.raises(InputError, match="r.csv line 3 has 1 fields: expected 2"):
        as_splits(ragged, label="y")
    with pytest.raises(MissingFileError, match="data .*nope.csv' does not exist"):
        as_splits(tmp_path / "nope.csv")
    other = tmp_path / "x.txt"
    other.write_text("hi")
    with pytest.raises(InputError, match=r"data must be a .npz, .csv or .parquet file.*got .*x.txt"):
        as_splits(other)


def test_parquet_equals_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"size": [1.0, 2.0, 3.0, 4.0], "colour": ["red", "blue", "red", "green"], "label": [0, 1, 0, 1]})
    pq.write_table(table, tmp_path / "t.parquet")
    _write_csv(tmp_path / "t.csv", [["size", "colour", "label"]] + [list(r.values()) for r in table.to_pylist()])
    a, b = as_splits(tmp_path / "t.parquet", val_fraction=0.0), as_splits(tmp_path / "t.csv", val_fraction=0.0)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_train, b.y_train) and a.feature_names == b.feature_names


def test_missing_pyarrow_names_the_install(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import pyarrow.parquet -> ImportError
    with pytest.raises(InputError, match="needs 'pyarrow.parquet', which is not installed: run pip install pyarrow"):
        as_splits(tmp_path / "t.parquet")


def test_npz_with_test_split_and_npy_folder(tmp_path):
    X, y = _xy(10)
    np.savez(tmp_path / "d.npz", X=X, y=y, X_test=X[:3], y_test=y[:3])
    s = as_splits(tmp_path / "d.npz", val_fraction=0.2)
    assert s.X_train.shape == (8, 3) and s.X_val.shape == (2, 3) and s.X_test.shape == (3, 3)
    np.testing.assert_allclose(s.X_test.numpy(), X[:3].astype(np.float32))
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "X_train.npy", X.astype(np.float32))
    np.save(folder / "y_train.npy", y)
    m = as_splits(folder)
    assert isinstance(m.X_train, np.memmap) and m.y_train.tolist() == y.tolist()
    with pytest.raises(InputError, match="val and test apply when data is not a folder of .npy files"):
        as_splits(folder, val=(X, y))


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {}
    for cls in ("zebra", "ant"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            a = rng.integers(0, 256, size=(4, 5), dtype=np.uint8)
            _png(tmp_path / cls / f"{i}.png", a)
            imgs[(cls, i)] = a
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    s = as_splits(tmp_path, val_fraction=0.0)
    assert s.class_names == ["ant", "zebra"] and s.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert s.X_train.shape == (6, 1, 4, 5)
    np.testing.assert_allclose(s.X_train[3, 0].numpy(), imgs[("zebra", 0)] / 255.0, rtol=1e-6)
    r = as_splits(tmp_path, val_fraction=0.0, image_size=(2, 3))
    assert r.X_train.shape == (6, 1, 2, 3)
    _png(tmp_path / "ant" / "rgb.png", rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"must all have one size, got 2 sizes .* pass image_size=\(height, width\)"):
        as_splits(tmp_path)
    rgb = as_splits(tmp_path, image_size=4, val_fraction=0.0)
    assert rgb.X_train.shape == (7, 3, 4, 4)  # one colour image: every image as RGB
    with pytest.raises(InputError, match="image_size must be an int or"):
        as_splits(tmp_path, image_size=(0, 2))


# ----------------------------------------------------------------------------- Hugging Face datasets


def test_hf_dataset_columns_classlabel_and_tokens():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 1.0, 0.0, 0.0], "label": [0, 1, 0, 1]},
        features=datasets.Features({"a": datasets.Value("float32"), "b": datasets.Value("float32"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}),
    )
    s = as_splits(ds, val_fraction=0.0)
    assert s.class_names == ["neg", "pos"] and s.X_train.tolist() == [[0, 1], [1, 1], [2, 0], [3, 0]]
    only_a = as_splits(ds, features=["a"], val_fraction=0.0)
    assert only_a.X_train.tolist() == [0, 1, 2, 3]
    tok = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3, 4]], "attention_mask": [[1, 1], [1, 0]], "labels": [1, 0]})
    t = as_splits(tok, val_fraction=0.0)
    assert t.X_train["input_ids"].tolist() == [[1, 2], [3, 4]] and t.y_train.tolist() == [1, 0]
    with pytest.raises(InputError, match=r"features must be columns of data, .*got \['c'\] instead"):
        as_splits(ds, features=["c"])
    with pytest.raises(InputError, match=r"label must be one of the columns of data, .*got 'y' instead"):
        as_splits(ds, label="y")


def test_hf_text_column_with_tokenizer():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": ["a b", "c", "d e f"], "label": ["pos", "neg", "pos"]})

    def tokenizer(texts, padding, truncation):  # a stand-in for a Hugging Face tokenizer: word lengths, padded
        width = max(len(t.split()) for t in texts)
        ids = [[len(w) + 1 for w in t.split()] + [0] * (width - len(t.split())) for t in texts]
        return {"input_ids": ids, "attention_mask": [[int(i > 0) for i in row] for row in ids]}

    s = as_splits(ds, text="sentence", tokenizer=tokenizer, val_fraction=0.0)
    assert s.X_train["input_ids"].tolist() == [[2, 2, 0], [2, 0, 0], [2, 2, 2]]
    assert s.X_train["attention_mask"].dtype == torch.int64 and s.class_names == ["neg", "pos"] and s.y_train.tolist() == [1, 0, 1]
    with pytest.raises(InputError, match="text='sentence' needs tokenizer=<callable>"):
        as_splits(ds, text="sentence")


def test_hf_dataset_saved_to_disk(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"x": [0.5, 1.5, 2.5], "label": [0, 1, 0]})
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dict"))
    s = as_splits(tmp_path / "one", test=tmp_path / "dict" / "test", val_fraction=0.0)
    assert s.X_train.tolist() == [0.5, 1.5, 2.5] and s.y_test.tolist() == [0, 1, 0]
    assert as_splits(tmp_path / "dict", val_fraction=0.0).y_train.tolist() == [0, 1, 0]
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(InputError, match=r"needs 'datasets', which is not installed: run pip install \"darkknowledge\[hf\]\""):
        as_splits(tmp_path / "one")


def test_dataloader_with_shuffling_batch_sampler_or_drop_last_refused():
    from torch.utils.data import BatchSampler, RandomSampler

    ds = TensorDataset(torch.randn(6, 2), torch.tensor([0, 1] * 3))
    with pytest.raises(InputError, match="in order .*got a RandomSampler instead"):
        as_splits(DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds), batch_size=2, drop_last=False)))
    with pytest.raises(InputError, match="data must be a DataLoader with drop_last=False"):
        as_splits(DataLoader(ds, batch_size=4, drop_last=True))


def test_image_folder_val_uses_the_training_classes(tmp_path):
    for split, classes in (("train", ("ant", "bee", "cat")), ("val", ("cat",)), ("bad", ("dog",))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                _png(tmp_path / split / c / f"{i}.png", np.full((3, 3), 10 * i, np.uint8))
    s = as_splits(tmp_path / "train", val=tmp_path / "val")
    assert s.class_names == ["ant", "bee", "cat"] and s.y_val.tolist() == [2, 2]  # 'cat' keeps id 2, not 0
    with pytest.raises(InputError, match=r"must be among the classes \['ant', 'bee', 'cat'\], got \['dog'\] instead"):
        as_splits(tmp_path / "train", val=tmp_path / "bad")


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_path_is_not_the_current_folder(empty, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # even where the current folder would be a valid image folder
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match=r"data must be a path to a data file or folder, got an empty path"):
        as_splits(empty)
