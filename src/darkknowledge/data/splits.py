"""Hold-out splits: a seeded, stratified validation split, and the ``Splits`` training reads.

The notes' recipe (no cross-validation for neural networks: training is long): keep the
test set aside, take 20 % of the training set as the validation set, and use the
validation loss for early stopping and model choice. Standardisation is then fitted on the
remaining training part only and applied unchanged to validation and test.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from darkknowledge._checks import check_in_range, check_positive_finite, check_positive_int

from ._types import Dataset, Splits
from ._validate import check_class_names
from .preprocessing import Standardizer
from darkknowledge.errors import InputError, InputTypeError

__all__ = ["train_val_split", "prepare_splits"]


def _labels_numpy(y: Any) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        return y.detach().cpu().numpy()
    return np.asarray(y)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputTypeError(f"{name} must be True or False, got {value!r} instead.")
    return value


def _check_seed(seed: Any) -> int:
    return check_positive_int("seed", seed, minimum=0)


def train_val_split(
    X: Any, y: Any, *, val_fraction: float = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[Any, Any, Any, Any]:
    """Split ``(X, y)`` into training and validation parts, seeded and stratified by class.

    The validation part has ``ceil(val_fraction * N)`` samples (scikit-learn's rounding);
    with ``stratify`` every class keeps its proportion up to one sample. The same ``seed``
    gives the same split. Uses ``sklearn.model_selection.train_test_split`` on the sample
    indices, so ``X`` and ``y`` may be NumPy arrays or torch tensors (returned as the same
    kind).

    Args:
        X: ``(N, ...)`` features.
        y: ``(N,)`` labels.
        val_fraction: share of samples for validation, in ``(0, 1)`` (default 0.2).
        seed: non-negative integer ``random_state``.
        stratify: keep class proportions (needs at least 2 samples per class).

    Returns:
        ``(X_train, X_val, y_train, y_val)``, in scikit-learn's order.

    Example:
        >>> import numpy as np
        >>> X, y = np.arange(20).reshape(10, 2), np.array([0] * 5 + [1] * 5)
        >>> X_tr, X_val, y_tr, y_val = train_val_split(X, y, val_fraction=0.2, seed=0)
        >>> X_tr.shape, X_val.shape, sorted(y_val.tolist())
        ((8, 2), (2, 2), [0, 1])
    """
    val_fraction = check_in_range("val_fraction", val_fraction, 0.0, 1.0)
    if val_fraction in (0.0, 1.0):
        raise InputError(
            f"val_fraction must be strictly between 0 and 1, got {val_fraction!r} instead."
        )
    seed = _check_seed(seed)
    stratify = _check_bool("stratify", stratify)
    n = len(X)
    if len(y) != n:
        raise InputError(
            f"X and y must have the same length, got {n} samples and {len(y)} labels instead."
        )
    n_val = int(np.ceil(val_fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise InputError(
            f"val_fraction={val_fraction} of {n} samples leaves an empty training or "
            "validation part: expected at least one sample in each."
        )
    y_np = _labels_numpy(y)
    strata = None
    if stratify:
        classes, counts = np.unique(y_np, return_counts=True)
        if counts.min() < 2:
            rare = classes[counts < 2].tolist()
            raise InputError(
                f"stratify=True needs at least 2 samples of every class, got 1 of class "
                f"{rare} instead; add samples of that class or leave it out of the data (in Python, "
                "stratify=False splits without stratifying)."
            )
        if n_val < len(classes) or n - n_val < len(classes):
            raise InputError(
                f"stratify=True needs at least {len(classes)} samples (one per class) in each "
                f"part, got {n - n_val} training and {n_val} validation samples instead; "
                "change val_fraction (dataset.val_fraction in a config) or, in Python, pass stratify=False."
            )
        strata = y_np
    train_idx, val_idx = train_test_split(
        np.arange(n), test_size=n_val, random_state=seed, stratify=strata
    )
    if isinstance(X, torch.Tensor) or isinstance(y, torch.Tensor):
        train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return X[train_idx], X[val_idx], y[train_idx], y[val_idx]


def _float_tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))


def _long_tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64))


@overload
def prepare_splits(
    dataset: Dataset, *, val_fraction: float = ..., seed: int = ..., standardize: bool = ...,
    stratify: bool = ..., return_standardizer: Literal[False] = ..., eps: float | None = ...,
) -> Splits: ...


@overload
def prepare_splits(
    dataset: Dataset, *, val_fraction: float = ..., seed: int = ..., standardize: bool = ...,
    stratify: bool = ..., return_standardizer: Literal[True], eps: float | None = ...,
) -> tuple[Splits, Standardizer | None]: ...


def prepare_splits(
    dataset: Dataset,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    stratify: bool = True,
    return_standardizer: bool = False,
    eps: float | None = None,
) -> Splits | tuple[Splits, Standardizer | None]:
    """Turn a loaded :class:`Dataset` into the :class:`Splits` a training loop reads.

    1. split the training arrays into train / validation with :func:`train_val_split`
       (stratified, ``seed``; ``val_fraction=0`` keeps all for training, ``X_val = None``);
    2. if ``standardize``, fit a :class:`Standardizer` on the **training part only**
       (per feature; for images per pixel) and apply it to train, validation and test;
    3. convert features to float32 and labels to int64 torch tensors (CPU), keeping the
       class names. The official test split, if any, is never used for fitting.

    Args:
        dataset: from :func:`darkknowledge.data.load_dataset`.
        val_fraction: share of the training arrays held out for validation, in ``[0, 1)``.
        seed: seed of the validation split.
        standardize: fit and apply a :class:`Standardizer`.
        stratify: stratify the validation split by class (see :func:`train_val_split`).
        return_standardizer: also return the fitted standardiser (``None`` if not
            ``standardize``), to preprocess new data the same way.
        eps: the standardiser's :math:`\\varepsilon`. ``None`` (default) takes 1 % of the mean
            per-feature variance of the training part, a floor that keeps features which are
            (nearly) constant on the training part — the border pixels of digit images — from
            blowing up to hundreds of standard deviations on validation and test samples.

    Returns:
        :class:`Splits` with ``X_* (N_*, *input_shape)`` float32 and ``y_* (N_*,)`` int64,
        or ``(Splits, Standardizer | None)`` with ``return_standardizer=True``.

    Example:
        >>> from darkknowledge.data import load_dataset
        >>> s = prepare_splits(load_dataset("digits"))
        >>> tuple(s.X_train.shape), tuple(s.X_val.shape), tuple(s.X_test.shape)
        ((1077, 64), (270, 64), (450, 64))
        >>> abs(float(s.X_train.mean())) < 1e-6
        True
    """
    if not isinstance(dataset, Dataset):
        raise InputTypeError(f"dataset must be a Dataset, got {type(dataset).__name__} instead.")
    val_fraction = check_in_range("val_fraction", val_fraction, 0.0, 1.0)
    if val_fraction >= 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction!r} instead.")
    standardize = _check_bool("standardize", standardize)
    if eps is not None:
        check_positive_finite("eps", eps)
    return_standardizer = _check_bool("return_standardizer", return_standardizer)

    X, y = dataset.X_train, dataset.y_train
    if dataset.class_names:  # (regression data has none)
        check_class_names(f"data set {dataset.name!r}", dataset.class_names, _labels_numpy(y))
    counts = np.bincount(_labels_numpy(y), minlength=len(dataset.class_names))[: len(dataset.class_names)]  # (C,)
    if len(counts) and counts.min() == 0:
        empty = int(np.argmin(counts))
        raise InputError(
            f"every class must have training samples, got none of class {empty} "
            f"({dataset.class_names[empty]!r}) of {len(dataset.class_names)} in the training data of "
            f"{dataset.name!r} instead; add samples of it or drop it from the classes."
        )
    if val_fraction > 0.0:
        X_train, X_val, y_train, y_val = train_val_split(
            X, y, val_fraction=val_fraction, seed=seed, stratify=stratify
        )
    else:
        _check_seed(seed)
        _check_bool("stratify", stratify)
        X_train, X_val, y_train, y_val = X, None, y, None
    X_test, y_test = dataset.X_test, dataset.y_test

    scaler = None
    if standardize:
        if eps is None:
            flat = np.asarray(X_train, dtype=np.float64).reshape(len(X_train), -1)
            eps = max(0.01 * float(flat.var(axis=0).mean()), 1e-8)
        scaler = Standardizer(eps=eps).fit(X_train)  # statistics of the training part only
        X_train = scaler.transform(X_train)
        X_val = None if X_val is None else scaler.transform(X_val)
        X_test = None if X_test is None else scaler.transform(X_test)

    splits = Splits(
        X_train=_float_tensor(X_train),
        y_train=_long_tensor(y_train),
        X_val=_float_tensor(X_val),
        y_val=_long_tensor(y_val),
        X_test=_float_tensor(X_test),
        y_test=_long_tensor(y_test),
        class_names=list(dataset.class_names),
    )
    return (splits, scaler) if return_standardizer else splits
