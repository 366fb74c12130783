"""Maximum likelihood, shown: logistic regression fitted by Newton–Raphson (IRLS), and the Challenger data.

The model for a binary outcome ``y ∈ {0, 1}`` given features ``x`` is

.. math:: p(x) = P(y = 1 \\mid x) = \\sigma(\\beta_0 + x^\\top \\beta), \\qquad \\sigma(z) = 1 / (1 + e^{-z}).

Maximum likelihood chooses ``β`` to maximise the Bernoulli log-likelihood of the data, which is
minus the binary cross-entropy summed over the samples (in nats):

.. math::
    \\ell(\\beta) = \\sum_i y_i \\log p_i + (1 - y_i) \\log(1 - p_i) = \\sum_i y_i z_i - \\log(1 + e^{z_i}).

References:
    D. R. Cox, *The Regression Analysis of Binary Sequences*, JRSS B, 1958.
    S. R. Dalal, E. B. Fowlkes and B. Hoadley, *Risk Analysis of the Space Shuttle: Pre-Challenger
    Prediction of Failure*, JASA, 1989 (the O-ring data).
    P. McCullagh and J. A. Nelder, *Generalized Linear Models*, 2nd ed., 1989 (IRLS).
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from darkknowledge._checks import check_positive_finite, check_positive_int
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = ["LogisticFit", "fit_logistic_regression", "challenger_data", "plot_logistic_fit"]


@dataclass(frozen=True)
class LogisticFit:
    """A fitted logistic regression ``P(y = 1 | x) = σ(intercept + x · coefficients)``.

    Attributes:
        intercept: ``β_0``.
        coefficients: ``(D,)`` slopes ``β``, one per feature (per unit of that feature).
        log_likelihood: the maximised Bernoulli log-likelihood ``ℓ(β̂)``, in nats.
        n_iter: Newton iterations taken.
        converged: whether the step fell below ``tol`` within ``max_iter`` iterations (``False``
            e.g. for perfectly separated data, whose MLE does not exist).
        standard_errors: ``(D + 1,)`` asymptotic standard errors of ``(β_0, β)``, the square roots of
            the diagonal of the inverse Fisher information ``(Xᵀ W X)⁻¹`` at the optimum.
    """

    intercept: float
    coefficients: np.ndarray
    log_likelihood: float
    n_iter: int
    converged: bool
    standard_errors: np.ndarray = field(repr=False)

    def predict_proba(self, x: Any) -> Any:
        """``P(y = 1 | x)``: ``(N,)`` probabilities for ``x`` of shape ``(N,)`` (one feature) or ``(N, D)``.

        A scalar ``x`` (one sample of a one-feature model) gives a ``float``.
        """
        scalar = np.ndim(x) == 0
        X = _design(x, "x", self.coefficients.shape[0])  # (N, D)
        z = self.intercept + X @ self.coefficients  # (N,) log-odds
        p = _sigmoid(z)
        return float(p[0]) if scalar else p


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow for large ``|z|``."""
    return np.exp(-np.logaddexp(0.0, -z))


def _design(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Features as a float64 ``(N, D)`` matrix (a 1-D ``x`` is one feature), checked finite."""
    try:
        X = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"{name} must be an array of numbers, got {type(x).__name__} instead.") from None
    if X.ndim == 0:
        X = X.reshape(1, 1)
    elif X.ndim == 1:
        X = X[:, None]  # (N,) -> (N, 1)
    elif X.ndim != 2:
        raise InputError(f"{name} must have shape (N,) or (N, D), got {X.shape} instead.")
    if X.shape[0] == 0:
        raise InputError(f"{name} must have at least one sample, got shape {X.shape} instead.")
    if not np.isfinite(X).all():
        raise InputError(f"{name} must contain finite numbers.")
    if d is not None and X.shape[1] != d:
        raise InputError(f"{name} must have {d} feature(s) per sample, got {X.shape[1]} instead.")
    return X


def _log_likelihood(y: np.ndarray, z: np.ndarray) -> float:
    """``Σ y z - log(1 + e^z)``, stable for any ``z``."""
    return float(np.sum(y * z - np.logaddexp(0.0, z)))


def fit_logistic_regression(
    x: Any, y: Any, *, max_iter: int = 100, tol: float = 1e-10
) -> LogisticFit:
    """Fit a logistic regression by maximum likelihood with Newton–Raphson (IRLS), in float64.

    With the design matrix ``X = [1, x]`` (``(N, D + 1)``), ``p = σ(Xβ)`` and ``W = diag(p (1 - p))``:

    .. math::
        \\nabla \\ell = X^\\top (y - p), \\qquad
        \\nabla^2 \\ell = -X^\\top W X, \\qquad
        \\beta \\leftarrow \\beta + (X^\\top W X)^{-1} X^\\top (y - p).

    ``ℓ`` is concave, so Newton's method converges (quadratically near the optimum); a step that
    would lower ``ℓ`` is halved until it does not. Iteration stops when the largest step component
    is at most ``tol · (1 + max |β|)``.

    Args:
        x: ``(N,)`` one feature or ``(N, D)`` features, finite.
        y: ``(N,)`` binary outcomes, 0 or 1.
        max_iter: the most Newton iterations.
        tol: relative step size at which to stop, a finite number > 0.

    Returns:
        A :class:`LogisticFit`.

    Example:
        >>> temperature_f, distress = challenger_data()
        >>> fit = fit_logistic_regression(temperature_f, distress)
        >>> round(fit.intercept, 4), round(float(fit.coefficients[0]), 4), fit.converged
        (15.0429, -0.2322, True)
        >>> round(fit.predict_proba(31.0), 4)  # P(distress) at the launch temperature, 31 °F
        0.9996
    """
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive_finite("tol", tol)
    X1 = _design(x, "x")  # (N, D)
    n, d = X1.shape
    yv = np.asarray(y, dtype=np.float64)
    if yv.shape != (n,):
        raise InputError(f"y must have shape ({n},) to match x, got {yv.shape} instead.")
    if not np.isin(yv, (0.0, 1.0)).all():
        raise InputError("y must contain only 0 and 1.")
    X = np.hstack([np.ones((n, 1)), X1])  # (N, D + 1) with the intercept column
    beta = np.zeros(d + 1)
    ll = _log_likelihood(yv, X @ beta)
    converged, it = False, 0
    info = X.T @ X  # placeholder until the first Hessian
    for it in range(1, max_iter + 1):
        p = _sigmoid(X @ beta)  # (N,)
        grad = X.T @ (yv - p)  # (D + 1,)
        info = X.T @ (X * (p * (1 - p))[:, None])  # (D + 1, D + 1) = Xᵀ W X = -Hessian
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            break  # singular information: separated data or collinear features
        new_ll = _log_likelihood(yv, X @ (beta + step))
        for _ in range(50):  # step halving: never go downhill
            if new_ll >= ll - 1e-12 * (1 + abs(ll)):
                break
            step = step / 2
            new_ll = _log_likelihood(yv, X @ (beta + step))
        beta, ll = beta + step, new_ll
        if np.max(np.abs(step)) <= tol * (1 + np.max(np.abs(beta))):
            converged = True
            break
    p = _sigmoid(X @ beta)
    info = X.T @ (X * (p * (1 - p))[:, None])
    try:
        se = np.sqrt(np.diag(np.linalg.inv(info)))
    except np.linalg.LinAlgError:
        se = np.full(d + 1, np.inf)
    return LogisticFit(
        intercept=float(beta[0]),
        coefficients=beta[1:].copy(),
        log_likelihood=_log_likelihood(yv, X @ beta),
        n_iter=it,
        converged=converged,
        standard_errors=se,
    )


def challenger_data() -> tuple[np.ndarray, np.ndarray]:
    """The 23 pre-accident shuttle flights: launch temperature (°F) and O-ring distress (0/1).

    Read from the CSV shipped with the package (``data/challenger.csv``, columns
    ``temperature_f,distress``).

    Returns:
        ``(temperature_f, distress)``: two ``(23,)`` float64 arrays.

    Example:
        >>> t, y = challenger_data()
        >>> t.shape, int(y.sum())
        ((23,), 7)
    """
    return _load_challenger()


def _load_challenger() -> tuple[np.ndarray, np.ndarray]:
    # The same shipped CSV that darkknowledge.data.load_dataset("challenger") reads; read directly so
    # that this module (and `darkknowledge challenger`) does not import the data package (scikit-learn).
    raw = resources.files("darkknowledge").joinpath("data/challenger.csv").read_bytes()
    data = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)  # (23, 2)
    return data[:, 0].copy(), data[:, 1].copy()


def plot_logistic_fit(
    fit: LogisticFit,
    x: Any,
    y: Any,
    path: str | os.PathLike,
    *,
    mark: float | None = None,
    xlabel: str = "x",
    ylabel: str = "P(y = 1)",
    title: str = "Logistic regression (maximum likelihood)",
) -> Path:
    """Write a PNG of the fitted curve ``P(y = 1 | x)`` over the data points, atomically.

    Args:
        fit: a one-feature :class:`LogisticFit`.
        x, y: ``(N,)`` the data the fit came from.
        path: the PNG to write (written to a temporary file beside it, then renamed).
        mark: an ``x`` to mark with its predicted probability (e.g. 31 °F for Challenger).
        xlabel, ylabel, title: labels.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if fit.coefficients.shape != (1,):
        raise InputError(f"fit must have one feature to plot, got {fit.coefficients.shape[0]} instead.")
    xv = _design(x, "x", 1)[:, 0]
    yv = np.asarray(y, dtype=np.float64)
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"path must name a PNG file to write, got {path!r} instead.")
    path = Path(path)
    if path.is_dir() or path.name in ("", ".", ".."):
        raise InputError(f"path must name a PNG file to write, got the folder {str(path)!r} instead.")
    if not path.parent.is_dir():
        raise MissingFileError(f"path's folder {str(path.parent)!r} does not exist.")
    lo, hi = float(xv.min()), float(xv.max())
    if mark is not None:
        lo, hi = min(lo, mark), max(hi, mark)
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 400)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(grid, fit.predict_proba(grid), label="P(y = 1 | x), MLE fit")
    ax.scatter(xv, yv, color="black", zorder=3, label="data")
    if mark is not None:
        pm = fit.predict_proba(float(mark))
        ax.scatter([mark], [pm], color="red", marker="x", zorder=4, label=f"x = {mark:g}: {pm:.4f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
    return path
