"""scikit-learn's embedded 8x8 handwritten digits, with a fixed stratified test split.

The data ship with scikit-learn (``sklearn.datasets.load_digits``: 1,797 images of 8x8
pixels with integer intensities 0..16, ten classes), so loading needs no network; it is
the default data set everywhere in darkknowledge.

It has no official test split, so one is fixed here: :data:`TEST_FRACTION` = 25 % of the
images (450), stratified by class, drawn with ``random_state`` :data:`SEED` = 0 by
``sklearn.model_selection.train_test_split``; the other 1,347 are the training set.
Features are float32 ``(N, 64)`` (the 8x8 image row by row) scaled to ``[0, 1]`` by
``/ 16``; labels int64 ``0..9``.

Reference: E. Alpaydin, C. Kaynak, *Optical Recognition of Handwritten Digits*, UCI
Machine Learning Repository (1998).
"""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.datasets import load_digits as _sklearn_load_digits
from sklearn.model_selection import train_test_split

from ._types import Dataset

__all__ = ["load_digits", "TEST_FRACTION", "SEED"]

#: Share of the 1,797 images held out as the fixed test split.
TEST_FRACTION = 0.25
#: ``random_state`` of the fixed split.
SEED = 0


def load_digits() -> Dataset:
    """Load the 8x8 digits with the fixed, stratified, seeded test split.

    Returns:
        A :class:`Dataset`: ``X_train`` float32 ``(1347, 64)`` and ``X_test`` ``(450, 64)``
        in ``[0, 1]`` (intensity / 16), ``y_*`` int64 in ``0..9``, class names
        ``"0".."9"``, and ``metadata`` (``source``, ``sha256`` of the raw arrays,
        ``shape``, ``split``, ``scaling``).

    Example:
        >>> ds = load_digits()
        >>> ds.X_train.shape, ds.X_test.shape, ds.num_classes
        ((1347, 64), (450, 64), 10)
        >>> float(ds.X_train.max())
        1.0
    """
    bunch = _sklearn_load_digits()
    X = (bunch.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
    y = bunch.target.astype(np.int64)  # (1797,)
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(bunch.data, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(bunch.target, dtype=np.int64).tobytes())
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y
    )
    return Dataset(
        name="digits",
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        class_names=[str(int(c)) for c in bunch.target_names],
        metadata={
            "source": "sklearn.datasets.load_digits",
            "sha256": digest.hexdigest(),
            "shape": {"X_train": list(X_train.shape), "X_test": list(X_test.shape)},
            "split": f"stratified test_size={TEST_FRACTION}, random_state={SEED}",
            "scaling": "intensity / 16",
        },
    )
