"""Standardizer, train_val_split and prepare_splits, against NumPy by hand and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from darkknowledge.data import (
    Dataset,
    NotFittedError,
    Splits,
    Standardizer,
    load_dataset,
    prepare_splits,
    train_val_split,
)

# --------------------------------------------------------------------------- Standardizer


def data(n=50, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=[1.0, -5.0, 100.0, 0.0][:d], scale=[1.0, 0.1, 30.0, 2.0][:d], size=(n, d))


def test_statistics_match_numpy_by_hand_and_sklearn():
    X = data()
    s = Standardizer().fit(X.astype(np.float32))
    X32 = X.astype(np.float32).astype(np.float64)
    mean = X32.sum(axis=0) / len(X32)
    var = ((X32 - mean) ** 2).sum(axis=0) / len(X32)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-12)
    np.testing.assert_allclose(s.var_, var, rtol=1e-12)
    ref = StandardScaler().fit(X32)
    np.testing.assert_allclose(s.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(s.var_, ref.var_, rtol=1e-10)
    assert s.n_samples_seen_ == 50


def test_transform_matches_formula_and_sklearn():
    X, Xnew = data(), data(seed=1)
    s = Standardizer().fit(X)
    expected = (Xnew - X.mean(axis=0)) / np.sqrt(X.var(axis=0) + 1e-8)
    np.testing.assert_allclose(s.transform(Xnew), expected, rtol=1e-12)
    np.testing.assert_allclose(s.transform(Xnew), StandardScaler().fit(X).transform(Xnew), rtol=1e-6)
    Z = s.fit_transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-6)


def test_float32_in_float32_out():
    X = data().astype(np.float32)
    s = Standardizer().fit(X)
    out = s.transform(X)
    assert out.dtype == np.float32
    ref = (X.astype(np.float64) - X.astype(np.float64).mean(0)) / np.sqrt(X.astype(np.float64).var(0) + 1e-8)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)  # one float32 rounding
    assert Standardizer().fit(np.arange(6).reshape(3, 2)).transform(np.arange(6).reshape(3, 2)).dtype == np.float32


def test_constant_feature_uses_eps():
    X = np.array([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])
    s = Standardizer().fit(X)
    out = s.transform(np.array([[2.0, 3.0], [2.0, 3.5]]))
    np.testing.assert_array_equal(out[:, 1][0], 0.0)
    np.testing.assert_allclose(out[1, 1], 0.5 / np.sqrt(1e-8))
    big = Standardizer(eps=1.0).fit(X)
    np.testing.assert_allclose(big.transform(np.array([[2.0, 4.0]])), [[0.0, 1.0]])


def test_images_have_per_pixel_statistics():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 1, 3, 3)) * np.arange(1, 10).reshape(1, 1, 3, 3)
    s = Standardizer().fit(X)
    assert s.mean_.shape == (1, 3, 3)
    flat = StandardScaler().fit(X.reshape(30, -1))
    np.testing.assert_allclose(s.mean_.reshape(-1), flat.mean_, rtol=1e-12)
    np.testing.assert_allclose(s.transform(X).reshape(30, -1), flat.transform(X.reshape(30, -1)), rtol=1e-6)


def test_torch_tensors_in_and_out():
    X = data()
    s = Standardizer().fit(torch.from_numpy(X))  # fit accepts tensors too
    t32 = s.transform(torch.from_numpy(X).float())
    assert isinstance(t32, torch.Tensor) and t32.dtype == torch.float32
    ref = (X - X.mean(0)) / np.sqrt(X.var(0) + 1e-8)
    X32 = X.astype(np.float32).astype(np.float64)  # the float32 tensor's exact values
    ref32 = (X32 - X.mean(0)) / np.sqrt(X.var(0) + 1e-8)
    np.testing.assert_allclose(t32.numpy(), ref32, rtol=1e-6, atol=1e-7)
    t64 = s.transform(torch.from_numpy(X))
    assert t64.dtype == torch.float64
    np.testing.assert_allclose(t64.numpy(), ref, rtol=1e-12)
    back = s.inverse_transform(t64)
    np.testing.assert_allclose(back.numpy(), X, rtol=1e-12)


def test_inverse_transform_numpy():
    X = data()
    s = Standardizer().fit(X)
    np.testing.assert_allclose(s.inverse_transform(s.transform(X)), X, rtol=1e-12)


def test_transform_before_fit():
    with pytest.raises(NotFittedError, match=r"not fitted yet: call fit\(X_train\) before transform"):
        Standardizer().transform(np.ones((2, 2)))
    with pytest.raises(ValueError, match="not fitted yet"):  # also a ValueError
        Standardizer().transform(torch.ones(2, 2))


def test_shape_mismatch():
    s = Standardizer().fit(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"X must have feature shape \(4,\) \(as in fit\), got samples of shape \(5,\) instead"):
        s.transform(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"X must have feature shape \(4,\)"):
        s.transform(torch.ones(3, 2, 2))


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.array([[1.0], [np.nan]]), ValueError, "X must be finite to fit a Standardizer, got NaN or inf instead"),
        (np.ones((0, 3)), ValueError, r"X must have at least one sample to fit on, got shape \(0, 3\) instead"),
        (np.array([["a"], ["b"]]), TypeError, "X must hold real numbers, got dtype <U1 instead"),
        (np.float64(3.0), ValueError, r"X must have a sample axis \(ndim >= 1\), got a 0-d array instead"),
    ],
)
def test_fit_errors(X, error, message):
    with pytest.raises(error, match=message):
        Standardizer().fit(X)


def test_eps_validation():
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got 0 instead"):
        Standardizer(eps=0)
    with pytest.raises(TypeError, match="eps must be a number, got str instead"):
        Standardizer(eps="1e-8")
    assert repr(Standardizer(eps=0.5)) == "Standardizer(eps=0.5)"


# --------------------------------------------------------------------------- train_val_split


def labels(counts, seed=0):
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("counts, fraction", [((50, 30, 20), 0.2), ((7, 16), 0.3), ((13, 11, 9, 41), 0.25)])
def test_stratified_within_one_sample(counts, fraction):
    y = labels(counts)
    X = np.arange(len(y) * 2).reshape(len(y), 2)
    X_tr, X_val, y_tr, y_val = train_val_split(X, y, val_fraction=fraction, seed=3)
    assert len(y_val) == int(np.ceil(fraction * len(y)))
    assert len(y_tr) + len(y_val) == len(y)
    val_counts = np.bincount(y_val, minlength=len(counts))
    assert np.all(np.abs(val_counts - fraction * np.asarray(counts)) <= 1)
    # rows stay with their labels, and every sample lands in exactly one part
    np.testing.assert_array_equal(y[X_tr[:, 0] // 2], y_tr)
    np.testing.assert_array_equal(np.sort(np.concatenate([X_tr[:, 0], X_val[:, 0]])), X[:, 0])


def test_deterministic_per_seed():
    y = labels((40, 40))
    X = np.arange(80)[:, None]
    a = train_val_split(X, y, seed=7)
    b = train_val_split(X, y, seed=7)
    c = train_val_split(X, y, seed=8)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_torch_inputs_give_torch_outputs():
    y = labels((20, 20))
    X = np.arange(40)[:, None].astype(np.float32)
    ref = train_val_split(X, y, seed=1)
    out = train_val_split(torch.from_numpy(X), torch.from_numpy(y), seed=1)
    assert all(isinstance(t, torch.Tensor) for t in out)
    for a, b in zip(ref, out):
        np.testing.assert_array_equal(a, b.numpy())


def test_unstratified_allows_singleton_class():
    y = np.array([0] * 9 + [1])
    X_tr, X_val, y_tr, y_val = train_val_split(np.arange(10), y, stratify=False)
    assert len(y_val) == 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(val_fraction=0.0), ValueError, r"val_fraction must be strictly between 0 and 1, got 0\.0 instead"),
        (dict(val_fraction=1.0), ValueError, r"val_fraction must be strictly between 0 and 1, got 1\.0 instead"),
        (dict(val_fraction=1.5), ValueError, r"val_fraction must be in \[0\.0, 1\.0\], got 1\.5 instead"),
        (dict(val_fraction="0.2"), TypeError, "val_fraction must be a number, got str instead"),
        (dict(seed=-1), ValueError, "seed must be an integer >= 0, got -1 instead"),
        (dict(seed=1.5), TypeError, "seed must be an integer, got float instead"),
        (dict(stratify="yes"), TypeError, "stratify must be True or False, got 'yes' instead"),
    ],
)
def test_split_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        train_val_split(np.arange(20), labels((10, 10)), **kwargs)


def test_split_data_errors():
    with pytest.raises(ValueError, match="X and y must have the same length, got 5 samples and 4 labels instead"):
        train_val_split(np.arange(5), np.zeros(4))
    with pytest.raises(ValueError, match=r"stratify=True needs at least 2 samples of every class, got 1 of class \[1\] instead; add samples of that class or leave it out of the data \(in Python, stratify=False splits without stratifying\)"):
        train_val_split(np.arange(10), np.array([0] * 9 + [1]))
    with pytest.raises(ValueError, match=r"stratify=True needs at least 3 samples \(one per class\) in each part, got 4 training and 2 validation"):
        train_val_split(np.arange(6), np.array([0, 0, 1, 1, 2, 2]), val_fraction=0.2)
    with pytest.raises(ValueError, match=r"leaves an empty training or validation part"):
        train_val_split(np.arange(1), np.array([0]), val_fraction=0.5, stratify=False)


# --------------------------------------------------------------------------- prepare_splits


def test_prepare_digits_shapes_and_types():
    ds = load_dataset("digits")
    s = prepare_splits(ds)
    assert isinstance(s, Splits)
    assert tuple(s.X_train.shape) == (1077, 64) and tuple(s.X_val.shape) == (270, 64)
    assert tuple(s.X_test.shape) == (450, 64)
    assert s.X_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert s.class_names == ds.class_names and s.num_classes == 10
    _, scaler = prepare_splits(ds, return_standardizer=True)
    np.testing.assert_allclose(s.X_train.numpy().mean(axis=0, dtype=np.float64), 0.0, atol=1e-6)
    # std of (x - mu) / sqrt(var + eps) is sqrt(var / (var + eps)): 1 unless var is tiny
    expected_std = np.sqrt(scaler.var_ / (scaler.var_ + scaler.eps))
    np.testing.assert_allclose(s.X_train.numpy().std(axis=0, dtype=np.float64), expected_std, atol=1e-6)
    assert np.sum(np.abs(expected_std - 1.0) < 0.05) >= 45  # all but the near-constant border pixels


def test_standardizer_fitted_on_training_part_only():
    ds = load_dataset("digits")
    s, scaler = prepare_splits(ds, val_fraction=0.2, seed=5, return_standardizer=True)
    X_tr, X_val, y_tr, y_val = train_val_split(ds.X_train, ds.y_train, val_fraction=0.2, seed=5)
    X_tr64 = X_tr.astype(np.float64)
    mean = X_tr64.sum(axis=0) / len(X_tr64)
    var = ((X_tr64 - mean) ** 2).sum(axis=0) / len(X_tr64)
    np.testing.assert_allclose(scaler.mean_, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scaler.var_, var, rtol=1e-10, atol=1e-12)
    assert not np.allclose(scaler.mean_, ds.X_train.mean(axis=0))  # not the whole training set
    eps = 0.01 * var.mean()  # the default floor: 1 % of the mean per-feature variance
    assert scaler.eps == pytest.approx(eps, rel=1e-12)
    expected_test = (ds.X_test.astype(np.float64) - mean) / np.sqrt(var + eps)
    np.testing.assert_allclose(s.X_test.numpy(), expected_test, rtol=1e-4, atol=1e-4)
    expected_val = (X_val.astype(np.float64) - mean) / np.sqrt(var + eps)
    np.testing.assert_allclose(s.X_val.numpy(), expected_val, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(s.y_val.numpy(), y_val)


def test_prepare_without_standardising_keeps_values():
    ds = load_dataset("digits")
    s, scaler = prepare_splits(ds, standardize=False, return_standardizer=True)
    assert scaler is None
    X_tr, _, y_tr, _ = train_val_split(ds.X_train, ds.y_train)
    np.testing.assert_array_equal(s.X_train.numpy(), X_tr)
    np.testing.assert_array_equal(s.X_test.numpy(), ds.X_test)


def test_prepare_challenger_without_validation():
    s = prepare_splits(load_dataset("challenger"), val_fraction=0.0, standardize=False)
    assert tuple(s.X_train.shape) == (23, 1) and s.X_val is None and s.X_test is None
    assert s.class_names == ["no distress", "distress"]
    assert int(s.y_train.sum()) == 7


def test_prepare_images_per_pixel():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 1, 4, 4)).astype(np.float32) / 255
    y = np.repeat(np.arange(4), 10)
    ds = Dataset("imgs", X, y, X[:5], y[:5], ["a", "b", "c", "d"])
    s, scaler = prepare_splits(ds, return_standardizer=True, eps=1e-8)
    assert tuple(s.X_train.shape) == (32, 1, 4, 4) and tuple(s.X_val.shape) == (8, 1, 4, 4)
    X_tr, *_ = train_val_split(X, y)
    flat = StandardScaler().fit(X_tr.reshape(32, -1).astype(np.float64))
    np.testing.assert_allclose(scaler.mean_.reshape(-1), flat.mean_, rtol=1e-10)
    np.testing.assert_allclose(s.X_train.numpy().reshape(32, -1), flat.transform(X_tr.reshape(32, -1)), rtol=1e-4, atol=1e-5)


def test_default_eps_keeps_near_constant_pixels_bounded():
    # digits' border pixels are (nearly) always 0 in training: with eps = 1e-8 a test image
    # with ink there lands hundreds of standard deviations out; the default floor prevents it.
    ds = load_dataset("digits")
    tiny = prepare_splits(ds, eps=1e-8)
    assert float(tiny.X_test.abs().max()) > 100
    s = prepare_splits(ds)
    assert float(s.X_test.abs().max()) < 40


def test_prepare_rejects_bad_eps():
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0, got -1"):
        prepare_splits(load_dataset("digits"), eps=-1)


def test_prepare_unstratified_split_with_a_singleton_class():
    X = np.arange(10, dtype=np.float32)[:, None]
    ds = Dataset("tiny", X, np.array([0] * 9 + [1]), None, None, ["a", "b"])
    with pytest.raises(ValueError, match="stratify=False"):
        prepare_splits(ds)
    s = prepare_splits(ds, stratify=False, standardize=False)
    assert tuple(s.X_train.shape) == (8, 1) and tuple(s.X_val.shape) == (2, 1)
    np.testing.assert_array_equal(np.sort(np.concatenate([s.X_train[:, 0], s.X_val[:, 0]])), X[:, 0])


def test_prepare_errors():
    ds = load_dataset("challenger")
    with pytest.raises(TypeError, match="dataset must be a Dataset, got dict instead"):
        prepare_splits({})
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1\.0 instead"):
        prepare_splits(ds, val_fraction=1.0)
    with pytest.raises(TypeError, match="standardize must be True or False, got 1 instead"):
        prepare_splits(ds, standardize=1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -2 instead"):
        prepare_splits(ds, val_fraction=0.0, seed=-2)
