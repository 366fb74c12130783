"""The Challenger O-ring data: launch temperature and O-ring thermal distress, 23 flights.

The 23 Space Shuttle flights before the Challenger accident (28 January 1986, launched at
31 °F), in flight order: the temperature at launch in degrees Fahrenheit and whether any
field joint O-ring showed thermal distress (1) or not (0); 7 of the 23 did. It is the
lecture notes' example of logistic regression,
:math:`p(x) = \\Pr(Y = 1 \\mid x) = 1 / (1 + e^{-(a + b x)})`, fitted by maximum likelihood.
The values ship with the package as ``challenger.csv`` (columns ``temperature_f,distress``).

References:
    Report of the Presidential Commission on the Space Shuttle Challenger Accident (1986),
    vol. 4, part 3.
    S. R. Dalal, E. B. Fowlkes, B. Hoadley, *Risk Analysis of the Space Shuttle:
    Pre-Challenger Prediction of Failure*, JASA 84(408), 945-957 (1989).
"""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import numpy as np

from ._types import Dataset

__all__ = ["load_challenger", "LAUNCH_TEMPERATURE_F"]

#: Temperature at the Challenger launch, 28 January 1986 (°F), far below every flight in the data.
LAUNCH_TEMPERATURE_F = 31.0


def load_challenger() -> Dataset:
    """Load the 23 pre-accident flights.

    Returns:
        A :class:`Dataset`: ``X_train`` float32 ``(23, 1)`` launch temperatures in °F
        (unscaled), ``y_train`` int64 ``(23,)`` distress 0 / 1, no test split
        (``X_test`` and ``y_test`` are ``None``), class names
        ``["no distress", "distress"]``, and ``metadata`` (``source``, ``sha256`` of the
        CSV, ``shape``, ``units``).

    Example:
        >>> ds = load_challenger()
        >>> ds.X_train.shape, int(ds.y_train.sum()), float(ds.X_train.min())
        ((23, 1), 7, 53.0)
    """
    raw = resources.files("darkknowledge.data").joinpath("challenger.csv").read_bytes()
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, ndmin=2)  # (23, 2)
    X = table[:, :1].astype(np.float32)  # (23, 1) °F
    y = table[:, 1].astype(np.int64)  # (23,)
    return Dataset(
        name="challenger",
        X_train=X,
        y_train=y,
        X_test=None,
        y_test=None,
        class_names=["no distress", "distress"],
        metadata={
            "source": "darkknowledge/data/challenger.csv (Rogers Commission report, 1986)",
            "sha256": hashlib.sha256(raw).hexdigest(),
            "shape": {"X_train": list(X.shape)},
            "units": {"temperature_f": "degrees Fahrenheit"},
        },
    )
