"""Standardisation: per-feature zero mean and unit variance, with statistics from the training split only.

.. math::

    \\hat x_{ij} = \\frac{x_{ij} - \\mu_j}{\\sqrt{\\sigma_j^2 + \\varepsilon}},
    \\qquad \\mu_j = \\frac1N \\sum_i x_{ij},
    \\qquad \\sigma_j^2 = \\frac1N \\sum_i (x_{ij} - \\mu_j)^2,

with :math:`\\varepsilon = 10^{-8}` by default, so that a feature constant on the training
set (a border pixel always 0) maps to 0 there instead of dividing by zero. A feature is
every position after the sample axis: for images ``(N, C, H, W)`` each pixel of each
channel has its own :math:`\\mu_j, \\sigma_j^2`. The variance is the population one
(``ddof=0``), as in ``sklearn.preprocessing.StandardScaler``, which this matches up to
:math:`\\varepsilon` on non-constant features.

Fit on the training split only, then transform train, validation and test with the same
statistics: fitting on data the model is evaluated on leaks it into the preprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from darkknowledge._checks import check_positive_finite
from darkknowledge.errors import InputError, InputTypeError

__all__ = ["Standardizer", "NotFittedError"]

_CHUNK = 8192  # rows per float64 pass: bounded extra memory for (60000, 1, 28, 28) images


class NotFittedError(InputError, AttributeError):
    """A :class:`Standardizer` was used before :meth:`Standardizer.fit`."""


def _as_numpy(name: str, X: Any) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.dtype == np.bool_ or not np.issubdtype(X.dtype, np.number) or np.issubdtype(
        X.dtype, np.complexfloating
    ):
        raise InputTypeError(f"{name} must hold real numbers, got dtype {X.dtype} instead.")
    if X.ndim < 1:
        raise InputError(f"{name} must have a sample axis (ndim >= 1), got a 0-d array instead.")
    return X


class Standardizer:
    """Per-feature standardisation fitted on training data (scikit-learn style).

    Args:
        eps: :math:`\\varepsilon > 0` added to the variance before the square root
            (default ``1e-8``).

    Attributes:
        mean_: ``(*feature_shape)`` float64 per-feature mean :math:`\\mu`, set by :meth:`fit`.
        var_: ``(*feature_shape)`` float64 per-feature population variance :math:`\\sigma^2`.
        n_samples_seen_: number of samples the statistics come from.

    Works on NumPy arrays and torch tensors: :meth:`transform` returns the same kind, on the
    same device, in the input's floating dtype (float32 for integer input).

    Example:
        >>> import numpy as np
        >>> X = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]], dtype=np.float32)
        >>> s = Standardizer().fit(X)
        >>> s.mean_, s.var_
        (array([ 2., 10.]), array([2.66666667, 0.        ]))
        >>> np.round(s.transform(X), 4)
        array([[-1.2247,  0.    ],
               [ 0.    ,  0.    ],
               [ 1.2247,  0.    ]], dtype=float32)
    """

    def __init__(self, *, eps: float = 1e-8) -> None:
        self.eps = check_positive_finite("eps", eps)

    def __repr__(self) -> str:
        return f"Standardizer(eps={self.eps!r})"

    def fit(self, X: Any) -> "Standardizer":
        """Store the per-feature mean and variance of ``X`` ``(N, *feature_shape)``; returns self."""
        X = _as_numpy("X", X)
        n = X.shape[0]
        if n == 0:
            raise InputError(f"X must have at least one sample to fit on, got shape {X.shape} instead.")
        if not np.isfinite(X).all():
            raise InputError("X must be finite to fit a Standardizer, got NaN or inf instead.")
        mean = X.mean(axis=0, dtype=np.float64)  # (*feature_shape)
        sq = np.zeros_like(mean)
        for start in range(0, n, _CHUNK):  # two-pass variance, float64, chunk by chunk
            sq += ((X[start : start + _CHUNK].astype(np.float64) - mean) ** 2).sum(axis=0)
        self.mean_ = mean
        self.var_ = sq / n  # (*feature_shape), ddof=0
        self.n_samples_seen_ = int(n)
        return self

    def _check_fitted(self, X: Any) -> tuple[int, ...]:
        if not hasattr(self, "mean_"):
            raise NotFittedError(
                "This Standardizer is not fitted yet: call fit(X_train) before transform."
            )
        shape = tuple(X.shape)
        if shape[1:] != self.mean_.shape:
            raise InputError(
                f"X must have feature shape {self.mean_.shape} (as in fit), got samples of "
                f"shape {shape[1:]} instead."
            )
        return shape

    def _apply(self, X: Any, forward: bool) -> Any:
        if isinstance(X, torch.Tensor):
            if X.dtype == torch.bool or X.is_complex():
                raise InputTypeError(f"X must hold real numbers, got dtype {X.dtype} instead.")
        else:
            X = _as_numpy("X", X)
        self._check_fitted(X)
        scale = np.sqrt(self.var_ + self.eps)  # (*feature_shape)
        # float64 arithmetic, chunk by chunk, rounded once into the output dtype (float32 for
        # float32 data): no cancellation error from a float32 mean, bounded extra memory.
        if isinstance(X, torch.Tensor):
            dtype = X.dtype if X.is_floating_point() else torch.float32
            mean = torch.as_tensor(self.mean_, dtype=torch.float64, device=X.device)
            std = torch.as_tensor(scale, dtype=torch.float64, device=X.device)
            out = torch.empty(X.shape, dtype=dtype, device=X.device)
            for i in range(0, X.shape[0], _CHUNK):
                x = X[i : i + _CHUNK].to(torch.float64)
                out[i : i + _CHUNK] = (x - mean) / std if forward else x * std + mean
            return out
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float32)
        out = np.empty(X.shape, dtype=dtype)
        for i in range(0, X.shape[0], _CHUNK):
            x = X[i : i + _CHUNK].astype(np.float64)
            out[i : i + _CHUNK] = (x - self.mean_) / scale if forward else x * scale + self.mean_
        return out

    def transform(self, X: Any) -> Any:
        """Return :math:`(X - \\mu) / \\sqrt{\\sigma^2 + \\varepsilon}` for ``X`` ``(M, *feature_shape)``."""
        return self._apply(X, forward=True)

    def fit_transform(self, X: Any) -> Any:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: Any) -> Any:
        """Undo :meth:`transform`: :math:`Z \\sqrt{\\sigma^2 + \\varepsilon} + \\mu`."""
        return self._apply(Z, forward=False)
