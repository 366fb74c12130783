"""User data sets: a ``.npz`` file of arrays or a ``.csv`` file with a label column.

``.npz`` (read with ``allow_pickle=False``): arrays ``X`` ``(N, ...)`` numeric and ``y``
``(N,)`` integer class labels in ``0..C-1``; optionally ``X_test`` and ``y_test`` (both or
neither) and ``class_names`` (``C`` strings). Without ``class_names``, ``C`` is the largest
label + 1 and the names are ``"0".."C-1"``. Float labels are accepted when integral.

``.csv``: a header row, then one sample per row; the column ``label_column`` (default
``"label"``) holds the class, every other column a numeric feature. Labels that all read
as numbers must be integers >= 0 (the names are then ``"0".."C-1"``); otherwise every label
is taken as a string and the classes are the sorted distinct strings, label ``k`` being the
``k``-th of them (``["cat", "dog"]`` -> ``cat = 0``, ``dog = 1``). A CSV has no test split.

Features become float32, labels int64; NaN / inf features (also values beyond float32's range),
negative, non-integral or out-of-range labels, mismatched lengths, empty data, fewer than two
classes in the training labels, duplicated class names and (CSV) duplicated column names raise
``ValueError`` naming the array or column. A CSV may start with a UTF-8 byte-order mark.
Each ``.npz`` member's header is checked against the bytes the archive holds and this machine's
memory before anything is allocated.
A file that is not a readable archive / UTF-8 CSV, or an object (pickled) array, raises
:class:`~darkknowledge.data.DataError` (a ``ValueError``) naming the file; nothing is unpickled.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from darkknowledge._checks import memory_limit_bytes

from ._types import Dataset
from ._validate import (
    MAX_CLASSES_FROM_LABELS,
    DataError,
    check_class_names,
    check_npy_header,
    names_from_labels as _names_from_labels,
    validate_pair,
)
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = ["load_npz", "load_csv", "MAX_CLASSES_FROM_LABELS"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# What a damaged archive can raise while numpy parses it: zip structure, CRC, inflate, npy header.
_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, KeyError)


def _check_member(archive: np.lib.npyio.NpzFile, key: str, file: str, limit: int) -> None:
    """Check member ``key``'s ``.npy`` header against its size in the zip and ``limit`` bytes.

    numpy allocates the whole array its header states before reading a byte of data, so a
    header promising shape ``(1e11, 4)`` in a 200-byte archive would be a ``MemoryError``.
    """
    member = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    try:
        info = archive.zip.getinfo(member)
        label = f"array {key!r} in {file}"
        if info.file_size > limit:
            raise DataError(
                f"{label} is {info.file_size} bytes uncompressed, more than this machine's memory "
                f"({limit} bytes); expected an array that fits in memory."
            )
        with archive.zip.open(member) as fp:
            if fp.read(6) != b"\x93NUMPY":
                return  # not a .npy member: numpy returns its bytes, at most file_size of them
            fp.seek(0)
            check_npy_header(fp, label, info.file_size, limit=limit)
    except DataError:
        raise
    except _NPZ_ERRORS as exc:
        raise DataError(f"array {key!r} in {file} is corrupt ({type(exc).__name__}: {exc}).") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, never unpickling; a damaged file raises ``DataError``."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MissingFileError(f"Data file {str(path)!r} does not exist.") from None
    except _NPZ_ERRORS as exc:
        # numpy takes a file that is neither zip nor .npy for a pickle, which it refuses to load
        why = "not a zip nor .npy file" if "pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise DataError(
            f"{path.name} is not a readable .npz archive ({why}); expected a "
            "zip of .npy arrays written by numpy.savez."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path.name} holds a single .npy array, not a .npz archive: expected arrays 'X' and 'y' "
            "written by numpy.savez."
        )
    arrays = {}
    limit = memory_limit_bytes()
    with archive:
        for key in archive.files:
            _check_member(archive, key, path.name, limit)
            try:
                arrays[key] = np.asarray(archive[key])
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise DataError(
                        f"array {key!r} in {path.name} is an object (pickled) array; only numeric "
                        "arrays are read (pickles are never loaded)."
                    ) from None
                raise DataError(f"array {key!r} in {path.name} is corrupt ({exc}).") from None
            except _NPZ_ERRORS as exc:
                raise DataError(
                    f"array {key!r} in {path.name} is corrupt ({type(exc).__name__}: {exc})."
                ) from None
    return arrays


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load a user ``.npz`` data set (see the module docstring for its layout).

    Example:
        >>> import numpy as np, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> path = os.path.join(folder, "toy.npz")
        >>> np.savez(path, X=np.eye(3), y=np.array([0, 1, 2]))
        >>> ds = load_npz(path)
        >>> ds.X_train.dtype, ds.class_names, ds.X_test is None
        (dtype('float32'), ['0', '1', '2'], True)
    """
    path = Path(path)
    arrays = _read_npz(path)
    missing = [key for key in ("X", "y") if key not in arrays]
    if missing:
        raise InputError(
            f"{path.name} must hold arrays 'X' and 'y'; missing {', '.join(map(repr, missing))} "
            f"(found {sorted(arrays) or 'no arrays'})."
        )
    has_test = ("X_test" in arrays, "y_test" in arrays)
    if has_test[0] != has_test[1]:
        raise InputError(
            f"{path.name} must hold both 'X_test' and 'y_test' or neither, got only "
            f"{'X_test' if has_test[0] else 'y_test'}."
        )
    names = arrays.get("class_names")
    num_classes = None
    if names is not None:
        if names.ndim != 1 or names.size == 0:
            raise InputError(
                f"class_names in {path.name} must be a non-empty 1-d array, got shape "
                f"{names.shape} instead."
            )
        class_names = check_class_names(path.name, [str(n) for n in names.tolist()])
        num_classes = len(class_names)
    integer_features = np.issubdtype(arrays["X"].dtype, np.integer)  # stored pixels: dataset.scale applies
    X, y = validate_pair("X", arrays["X"], "y", arrays["y"], num_classes=num_classes, source=path.name)
    X_test = y_test = None
    if has_test[0]:
        X_test, y_test = validate_pair(
            "X_test", arrays["X_test"], "y_test", arrays["y_test"], num_classes=num_classes,
            source=path.name,
        )
        if X_test.shape[1:] != X.shape[1:]:
            raise InputError(
                f"X_test must have the same sample shape as X, {X.shape[1:]}, got "
                f"{X_test.shape[1:]} instead."
            )
    if names is None:
        high = max(int(y.max()), int(y_test.max()) if y_test is not None else 0)
        class_names = _names_from_labels(path.name, "y", high)
    check_class_names(path.name, class_names, y)
    shape = {"X_train": list(X.shape)}
    if X_test is not None:
        shape["X_test"] = list(X_test.shape)
    return Dataset(
        name=path.stem,
        X_train=X,
        y_train=y,
        X_test=X_test,
        y_test=y_test,
        class_names=class_names,
        metadata={"source": str(path), "sha256": _sha256(path), "shape": shape,
                  "integer_features": bool(integer_features)},
    )


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def load_csv(path: str | os.PathLike, *, label_column: str = "label") -> Dataset:
    """Load a user ``.csv`` data set (see the module docstring for the label rules).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pets.csv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("weight,species\\n4.1,cat\\n30.5,dog\\n3.9,cat\\n")
        >>> ds = load_csv(path, label_column="species")
        >>> ds.class_names, ds.y_train.tolist(), ds.X_train.shape
        (['cat', 'dog'], [0, 1, 0], (3, 1))
    """
    path = Path(path)
    if not isinstance(label_column, str):
        raise InputTypeError(f"label_column must be a string, got {type(label_column).__name__} instead.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: drop a byte-order mark
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name} must be UTF-8 text, got a byte it cannot decode ({exc}).") from None
    except csv.Error as exc:
        raise DataError(f"{path.name} is not a readable CSV file ({exc}).") from None
    rows = [row for row in rows if row]  # blank lines carry nothing
    if not rows:
        raise InputError(f"{path.name} is empty: expected a header row and data rows.")
    header = [name.strip() for name in rows[0]]
    for col, name in enumerate(header):
        if header.index(name) != col:
            raise InputError(
                f"the columns of {path.name} must have distinct names, got {name!r} twice (columns "
                f"{header.index(name) + 1} and {col + 1}) instead; a second label column would be "
                "read as a feature."
            )
    if label_column not in header:
        raise InputError(
            f"label_column must be one of the columns of {path.name}, {header}; got "
            f"{label_column!r} instead."
        )
    if len(header) < 2:
        raise InputError(f"{path.name} must have at least one feature column besides the label.")
    data = rows[1:]
    if not data:
        raise InputError(f"{path.name} has a header but no data rows: the data set is empty.")
    li = header.index(label_column)
    features, labels = [], []
    for line, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise InputError(
                f"{path.name} line {line} has {len(row)} fields: expected {len(header)} "
                f"like the header."
            )
        values = []
        for col, text in enumerate(row):
            if col == li:
                continue
            value = _as_float(text)
            if value is None:
                raise InputError(
                    f"{path.name} line {line}, column {header[col]!r} must be a number, got "
                    f"{text!r} instead."
                )
            values.append(value)
        label = row[li].strip()
        if label == "":
            raise InputError(f"{path.name} line {line} has an empty {label_column!r} value.")
        features.append(values)
        labels.append(label)

    numeric = [_as_float(label) for label in labels]
    if all(v is not None and math.isfinite(v) for v in numeric):
        y_raw = np.asarray(numeric, dtype=np.float64)
        label_kind = "integer"
    else:
        class_names = sorted(set(labels))
        index = {name: k for k, name in enumerate(class_names)}
        y_raw = np.asarray([index[label] for label in labels], dtype=np.int64)
        label_kind = "strings, sorted"
    X, y = validate_pair(
        "X", np.asarray(features, dtype=np.float64), f"column {label_column!r}", y_raw,
        source=path.name,
    )
    if label_kind == "integer":
        class_names = _names_from_labels(path.name, f"column {label_column!r}", int(y.max()))
    check_class_names(path.name, class_names, y)
    return Dataset(
        name=path.stem,
        X_train=X,
        y_train=y,
        X_test=None,
        y_test=None,
        class_names=class_names,
        metadata={
            "source": str(path),
            "sha256": _sha256(path),
            "shape": {"X_train": list(X.shape)},
            "feature_names": [h for i, h in enumerate(header) if i != li],
            "label_column": label_column,
            "labels": label_kind,
        },
    )
