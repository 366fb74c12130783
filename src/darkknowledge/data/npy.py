"""A data set stored as ``.npy`` files in a folder, opened as memory maps after checking every file.

The folder holds ``X_train.npy`` ``(N, ...)`` float32 features (already preprocessed, e.g.
standardised) and ``y_train.npy`` ``(N,)`` integer labels, and optionally the pairs
``X_val.npy`` / ``y_val.npy`` and ``X_test.npy`` / ``y_test.npy``. The features stay on disk
(``np.load(..., mmap_mode="r")``): a training loop reads only each minibatch's rows. The
labels, and the validation and test features, are read into memory.

Everything is checked before a byte of an array is allocated or a model is trained, with the
file named in each message:

* each ``.npy`` header against the file's size (a crafted shape ``(1e11, 4)`` is refused, not a
  ``MemoryError``) and, for what is read into memory, against this machine's memory;
* features: float32, at least 2-d, the same sample shape in every split, finite (scanned in
  blocks; the message names the file and the first bad row);
* labels: 1-d integers (integral floats accepted) ``>= 0``, as many as feature rows; without
  ``class_names`` the classes are ``0 .. max(y_train)``, at most
  :data:`~darkknowledge.data._validate.MAX_CLASSES_FROM_LABELS` (one label of ``1e10`` would
  otherwise build ten billion class names), with ``class_names`` there must be that many,
  distinct; validation and test labels must be classes of the training labels; every class
  must have training samples, and there must be at least two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkknowledge._checks import check_regular_file, memory_limit_bytes

from ._types import Splits
from ._validate import DataError, check_class_names, check_npy_header, names_from_labels, validate_labels
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = ["open_npy_folder"]

#: Rows per block when the features are scanned for NaN / inf (about 64 MiB of float32 a block).
_SCAN_BYTES = 64 << 20


def _open_npy(path: Path, *, mmap: bool, limit: int | None) -> np.ndarray:
    """``np.load`` of one ``.npy`` file after checking its header; errors name the file."""
    check_regular_file("Data file", path)
    size = path.stat().st_size
    with open(path, "rb") as fp:
        check_npy_header(fp, path.name, size, limit=limit)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable .npy file ({type(exc).__name__}: {exc}).") from None


def _check_finite(path: Path, X: np.ndarray) -> None:
    """Scan ``X`` (a memory map) block by block; name the file and the first row with NaN / inf."""
    row_bytes = max(int(np.prod(X.shape[1:], dtype=np.int64)) * X.dtype.itemsize, 1)
    block = max(_SCAN_BYTES // row_bytes, 1)
    for start in range(0, X.shape[0], block):
        part = np.asarray(X[start : start + block])  # (B, ...)
        bad = ~np.isfinite(part)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            index = (start + first[0], *first[1:])
            raise InputError(
                f"{path.name} must hold finite features, got NaN or inf instead (first at index "
                f"{index}, row {index[0]} of {path.name}); the data is bad, not the training."
            )


def open_npy_folder(folder: str | os.PathLike[str], *, class_names: list[str] | None = None) -> Splits:
    """Open the ``.npy`` data set in ``folder`` (see the module docstring), every file checked.

    Args:
        folder: holds ``X_train.npy`` and ``y_train.npy``, optionally the val / test pairs.
        class_names: default ``["0", ..., str(C - 1)]`` from the largest training label.

    Returns:
        :class:`~darkknowledge.data.Splits` whose ``X_train`` is an ``np.memmap`` ``(N, ...)``;
        ``y_*`` int64 tensors ``(N_*,)``; ``X_val`` / ``X_test`` float32 tensors (or ``None``).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> np.save(f"{d}/X_train.npy", np.zeros((4, 3), np.float32)); np.save(f"{d}/y_train.npy", np.array([0, 1, 1, 0]))
        >>> s = open_npy_folder(d)
        >>> type(s.X_train).__name__, s.input_shape, s.num_classes
        ('memmap', (3,), 2)
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise InputTypeError(f"folder must be a string or a path, got {type(folder).__name__} instead.")
    if not os.fspath(folder).strip():
        raise InputError("the dataset folder name is empty: expected a folder holding X_train.npy and y_train.npy.")
    root = Path(folder)
    if not root.exists():
        raise MissingFileError(f"folder {str(root)!r} does not exist (expected X_train.npy and y_train.npy in it).")
    if not root.is_dir():
        raise InputError(f"{str(root)!r} is not a folder: expected a folder holding X_train.npy and y_train.npy.")
    limit = memory_limit_bytes()
    X: dict[str, Any] = {}
    y: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        x_path, y_path = root / f"X_{split}.npy", root / f"y_{split}.npy"
        if x_path.exists() != y_path.exists():
            raise MissingFileError(f"{x_path.name} and {y_path.name} must both exist in {str(root)!r} or neither.")
        if not x_path.exists():
            if split == "train":
                raise MissingFileError(f"folder {str(root)!r} holds no X_train.npy and y_train.npy.")
            X[split] = y[split] = None
            continue
        # the training features stay on disk; validation / test features are read into memory
        features = _open_npy(x_path, mmap=True, limit=None if split == "train" else limit)
        if features.ndim < 2 or features.dtype != np.float32:
            raise InputError(
                f"{x_path.name} must hold float32 features of shape (N, ...), got {features.dtype} "
                f"{features.shape} instead."
            )
        if split != "train" and features.shape[1:] != X["train"].shape[1:]:
            raise InputError(
                f"{x_path.name} must have the same sample shape as X_train.npy, {X['train'].shape[1:]}, "
                f"got {features.shape[1:]} instead."
            )
        labels = validate_labels(y_path.name, _open_npy(y_path, mmap=False, limit=limit))
        if len(labels) != len(features):
            raise InputError(
                f"{y_path.name} must hold {len(features)} labels (one per row of {x_path.name}), got "
                f"{len(labels)} instead."
            )
        _check_finite(x_path, features)
        X[split], y[split] = features, labels
    if class_names is None:
        names = names_from_labels(root.name or str(root), "y_train.npy", int(y["train"].max()))
    else:
        names = list(class_names)
    names = check_class_names(f"the data set in {str(root)!r}", names)
    for split in ("train", "val", "test"):
        if y[split] is not None:
            validate_labels(f"y_{split}.npy", y[split], num_classes=len(names))
    counts = np.bincount(y["train"], minlength=len(names))  # (C,)
    if counts.min() == 0:
        empty = int(np.argmin(counts))
        raise InputError(
            f"every class must have training samples, got none of class {empty} ({names[empty]!r}) of "
            f"{len(names)} in y_train.npy of {str(root)!r} instead; add samples of it or drop it from the classes."
        )
    check_class_names(f"the data set in {str(root)!r}", names, y["train"])
    return Splits(
        X_train=X["train"],
        y_train=torch.from_numpy(y["train"]),
        X_val=None if X["val"] is None else torch.from_numpy(np.array(X["val"])),
        y_val=None if y["val"] is None else torch.from_numpy(y["val"]),
        X_test=None if X["test"] is None else torch.from_numpy(np.array(X["test"])),
        y_test=None if y["test"] is None else torch.from_numpy(y["test"]),
        class_names=names,
    )
