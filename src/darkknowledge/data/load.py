"""``load_dataset``: one call from a name (or a file path) to a :class:`Dataset`.

The names are :data:`DATASETS`; anything else must be a path to an existing ``.npz`` or
``.csv`` file (see :mod:`darkknowledge.data.user`).
"""

from __future__ import annotations

import os
from pathlib import Path

from darkknowledge._checks import check_regular_file

from ._types import Dataset
from .challenger import load_challenger
from .digits import load_digits
from .mnist import IDX_DATASETS, load_idx_dataset
from .user import load_csv, load_npz
from darkknowledge.errors import InputError, InputTypeError

__all__ = ["DATASETS", "load_dataset"]

#: The built-in data sets, ``"digits"`` (the default everywhere) first.
DATASETS: tuple[str, ...] = ("digits", *IDX_DATASETS, "challenger")

_USER_SUFFIXES = (".npz", ".csv")


def load_dataset(
    name: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    mirror: str | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Load a built-in data set by name, or a user ``.npz`` / ``.csv`` file by path.

    ============== ============================== ============================ ==========
    name           X_train / X_test               source                       test split
    ============== ============================== ============================ ==========
    digits         (1347, 64) / (450, 64), [0, 1] scikit-learn, no network      fixed 25 %
    mnist          (60000, 1, 28, 28), [0, 1]     IDX files, found or fetched  official
    fashion-mnist  (60000, 1, 28, 28), [0, 1]     IDX files, found or fetched  official
    challenger     (23, 1), °F                    shipped CSV                  none
    path.npz       as stored                      arrays X, y (X_test, y_test) if stored
    path.csv       (N, features)                  header + ``label_column``    none
    ============== ============================== ============================ ==========

    Args:
        name: one of :data:`DATASETS`, or a path to an existing ``.npz`` / ``.csv`` file.
        data_dir: MNIST / Fashion-MNIST only: a folder to look in first.
        download: ``None`` (allowed unless ``$DARKKNOWLEDGE_OFFLINE=1``), ``True`` or
            ``False``; only MNIST / Fashion-MNIST ever download, the others accept any value.
        mirror: MNIST / Fashion-MNIST only: base URL to download from.
        label_column: CSV only: the label column (default ``"label"``).

    Returns:
        A :class:`Dataset` (float32 features, int64 labels, class names, metadata).

    Raises:
        ValueError: an unknown name that is not an existing ``.npz`` / ``.csv`` path (the
            message lists the valid names), or an option that does not apply to ``name``.
        FileNotFoundError: a ``.npz`` / ``.csv`` path that does not exist, or MNIST files
            that cannot be found (downloads off).
        DatasetUnavailableError: MNIST files neither found nor downloadable (offline).

    Example:
        >>> ds = load_dataset("challenger")
        >>> ds.name, ds.X_train.shape, ds.class_names
        ('challenger', (23, 1), ['no distress', 'distress'])
    """
    if not isinstance(name, (str, os.PathLike)):
        raise InputTypeError(f"name must be a string or a path, got {type(name).__name__} instead.")
    if not os.fspath(name).strip():
        valid = ", ".join(repr(n) for n in DATASETS)
        raise InputError(
            f"the dataset name is empty: expected one of {valid} or a path to a .npz or .csv file, "
            f"got {os.fspath(name)!r} instead."
        )
    key = name if isinstance(name, str) else None
    is_idx = key in IDX_DATASETS
    if not is_idx:
        if download is not None and not isinstance(download, bool):
            raise InputTypeError(f"download must be True, False or None, got {download!r} instead.")
        for option, value in (("data_dir", data_dir), ("mirror", mirror)):
            if value is not None:
                raise InputError(
                    f"{option} applies only to {', '.join(map(repr, IDX_DATASETS))}, "
                    f"got {option}={value!r} for {str(name)!r}."
                )
    path = Path(name)
    is_csv = key not in DATASETS and path.suffix.lower() == ".csv"
    if label_column is not None and not is_csv:
        raise InputError(
            f"label_column applies only to .csv files, got label_column={label_column!r} "
            f"for {str(name)!r}."
        )

    if key == "digits":
        return load_digits()
    if is_idx:
        return load_idx_dataset(key, data_dir=data_dir, download=download, mirror=mirror)
    if key == "challenger":
        return load_challenger()
    if path.suffix.lower() in _USER_SUFFIXES:
        check_regular_file("Data file", path)  # missing, a folder, a FIFO: each said as such
        if path.suffix.lower() == ".npz":
            return load_npz(path)
        return load_csv(path, label_column="label" if label_column is None else label_column)
    valid = ", ".join(repr(n) for n in DATASETS)
    what = " (a folder: only a folder of .npy files can be a data set, opened by open_npy_folder)" if path.is_dir() else ""
    raise InputError(
        f"name must be one of {valid} or a path to an existing .npz or .csv file; "
        f"got {str(name)!r} instead{what}."
    )
