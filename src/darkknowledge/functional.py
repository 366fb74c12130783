"""Softmax and log-softmax with temperature, and the classic losses (MAE, MSE, BCE, CE, NLL, hinge).

Every function takes torch tensors (the result stays differentiable) or NumPy arrays / lists (the
result is NumPy). Losses are in **nats** (natural logarithms), as in PyTorch. Float16 / bfloat16
tensors are computed in float32 and returned in their own dtype; NumPy input is computed in float64.

Reductions: ``"mean"`` (over all samples; the default), ``"sum"``, or ``"none"`` (one loss per
sample). Shapes are checked strictly: no silent broadcasting between input and target.

Numerical conventions:

* softmax / log-softmax subtract the row maximum before exponentiating, so logits of ±1e4 are fine;
* ``-inf`` logits are *masked classes*: probability 0 (log-probability ``-inf``), no NaN anywhere;
* a row whose logits are **all** ``-inf`` has no distribution: ``ValueError`` naming ``logits``
  (as do NaN and ``+inf`` logits) rather than a silent row of NaN or zeros;
* ``0 · log 0 = 0`` in every cross-entropy; nothing is clipped, so a probability of exactly 0 on the
  true class gives a loss of ``+inf`` (``torch.nn.functional.binary_cross_entropy`` would clamp the
  log at -100 instead).

References:
    G. Hinton, O. Vinyals and J. Dean, *Distilling the Knowledge in a Neural Network*, 2015 (eq. 1).
    K. Crammer and Y. Singer, *On the Algorithmic Implementation of Multiclass Kernel-based Vector
    Machines*, JMLR 2001. J. Weston and C. Watkins, *Support Vector Machines for Multi-Class Pattern
    Recognition*, ESANN 1999. C. Szegedy et al., *Rethinking the Inception Architecture*, 2016
    (label smoothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from darkknowledge._checks import check_in_range, check_one_of, check_positive_finite
from darkknowledge.errors import InputError, InputTypeError
from darkknowledge.info import _as_tensor, _common, _distribution, _Kind, _p_log_q, _restore

__all__ = [
    "softmax",
    "log_softmax",
    "mae",
    "mse",
    "binary_cross_entropy",
    "cross_entropy",
    "nll_loss",
    "hinge_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _check_dim(name: str, t: torch.Tensor, dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise InputTypeError(f"dim must be an integer, got {type(dim).__name__} instead.")
    if t.ndim == 0 or t.numel() == 0:
        raise InputError(
            f"{name} must be non-empty with at least one dimension, got shape {tuple(t.shape)} instead."
        )
    if not -t.ndim <= dim < t.ndim:
        raise InputError(
            f"dim must be in [{-t.ndim}, {t.ndim - 1}] for {name} of shape {tuple(t.shape)}, "
            f"got {dim} instead."
        )
    return int(dim)


def _tempered(
    logits: Any, temperature: Any, dim: Any, fn: Callable[..., torch.Tensor]
) -> tuple[torch.Tensor, _Kind]:
    """``fn(logits / T, dim)`` for ``fn`` = softmax or log-softmax, with the checks of the module docstring.

    ``torch.softmax`` / ``torch.log_softmax`` subtract the row maximum themselves. Only if ``logits / T``
    overflows, or ``T`` itself underflows the dtype (a tiny ``T``: ``1e-46`` is 0 in float32), is
    the maximum subtracted *before* dividing, and the division done in float64 by the Python float
    ``T`` (never 0): exact as softmax is shift invariant (so the detached maximum changes no
    gradient either), and as ``T -> 0`` it gives the limit, one-hot on the largest logit (shared
    equally between tied maxima; log-softmax ``0`` there and ``-inf`` elsewhere).
    """
    T = check_positive_finite("temperature", temperature)
    t, kind = _as_tensor("logits", logits)
    d = _check_dim("logits", t, dim)
    out = fn(t / T if T != 1.0 else t, dim=d)  # (..., C, ...)
    if torch.isnan(out.sum()):  # one reduction; NaN iff a row had NaN, +inf, all -inf or overflowed
        _diagnose(t, d)
        shifted = t - t.detach().amax(dim=d, keepdim=True)  # (..., C, ...) <= 0, exact
        wide = torch.float32 if shifted.device.type == "mps" else torch.float64  # no float64 on MPS
        out = fn(shifted.to(wide) / T, dim=d).to(t.dtype)
    return out, kind


def _diagnose(logits: torch.Tensor, dim: int) -> None:
    """Raise the error that explains a NaN in softmax(logits); return if the logits are fine."""
    x = logits.detach()
    if torch.isnan(x).any():
        raise InputError("logits must not contain NaN.")
    if torch.isposinf(x).any():
        raise InputError("logits must not contain +inf (use -inf to mask a class).")
    if torch.isneginf(x).all(dim=dim).any():
        raise InputError(
            f"logits must have at least one entry > -inf along dim {dim}; a row is all -inf "
            "(every class masked) and has no distribution."
        )


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_class_ids(name: str, target: Any, n: int, c: int, device: torch.device) -> torch.Tensor:
    """Integer class ids of shape ``(n,)`` in ``[0, c)``, as an int64 tensor on ``device``."""
    y = target if isinstance(target, torch.Tensor) else torch.as_tensor(np.asarray(target))
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise InputTypeError(f"{name} must be integer class ids, got dtype {y.dtype} instead.")
    if tuple(y.shape) != (n,):
        raise InputError(f"{name} must have shape ({n},) to match N = {n}, got {tuple(y.shape)} instead.")
    y = y.to(device=device, dtype=torch.int64)
    if n and (y.min() < 0 or y.max() >= c):
        bad = y[(y < 0) | (y >= c)][0].item()
        raise InputError(f"{name} must contain class ids in [0, {c - 1}], got {bad} instead.")
    return y


def _check_2d(name: str, t: torch.Tensor) -> tuple[int, int]:
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(f"{name} must have shape (N, C) with N, C >= 1, got {tuple(t.shape)} instead.")
    return int(t.shape[0]), int(t.shape[1])


def _same_shape(input: Any, target: Any, input_name: str = "input"):
    a, b, kind = _common(_as_tensor(input_name, input), _as_tensor("target", target))
    if a.shape != b.shape:
        raise InputError(
            f"target must have the same shape as {input_name} {tuple(a.shape)}, got {tuple(b.shape)} instead."
        )
    if a.numel() == 0:
        raise InputError(f"{input_name} must be non-empty, got shape {tuple(a.shape)} instead.")
    return a, b, kind


# --------------------------------------------------------------------------------------------
# Softmax with temperature
# --------------------------------------------------------------------------------------------
def softmax(logits: Any, *, temperature: float = 1.0, dim: int = -1) -> Any:
    """Softmax with temperature (Hinton et al. 2015, eq. 1): logits to probabilities along ``dim``.

    .. math:: q_i = \\frac{\\exp(z_i / T)}{\\sum_j \\exp(z_j / T)}

    ``T = 1`` is the ordinary softmax; ``T > 1`` softens the distribution (``T -> inf`` tends to
    uniform), ``T < 1`` sharpens it (``T -> 0`` tends to one-hot on the largest logit).

    Args:
        logits: ``(..., C, ...)`` real scores with the ``C`` classes along ``dim``; ``-inf`` masks a class.
        temperature: ``T``, a finite number > 0.
        dim: the class axis.

    Returns:
        Probabilities of the shape of ``logits``, summing to 1 along ``dim``; a tensor in the
        input's dtype for a tensor, a NumPy array for a NumPy array or list.

    Raises:
        ValueError: non-positive or non-finite ``temperature``; NaN or ``+inf`` logits; a row
            whose logits are all ``-inf``.

    Example:
        >>> softmax([1.0, 2.0, 3.0, 4.0]).round(4)
        array([0.0321, 0.0871, 0.2369, 0.6439])
        >>> softmax([1.0, 2.0, 3.0, 4.0], temperature=2).round(4)
        array([0.1015, 0.1674, 0.276 , 0.4551])
    """
    out, kind = _tempered(logits, temperature, dim, torch.softmax)
    return _restore(out, kind)


def log_softmax(logits: Any, *, temperature: float = 1.0, dim: int = -1) -> Any:
    """Log of the softmax with temperature, computed stably: ``z_i/T - logsumexp(z/T)``.

    .. math:: \\log q_i = \\frac{z_i}{T} - \\log \\sum_j \\exp(z_j / T)

    Args:
        logits: ``(..., C, ...)`` real scores with classes along ``dim``; ``-inf`` masks a class
            (its log-probability is ``-inf``).
        temperature: ``T``, a finite number > 0.
        dim: the class axis.

    Returns:
        Log-probabilities (nats, ``<= 0``) of the shape of ``logits``, same kind and dtype as softmax.

    Example:
        >>> log_softmax([0.0, 0.0]).round(4)
        array([-0.6931, -0.6931])
    """
    out, kind = _tempered(logits, temperature, dim, torch.log_softmax)
    return _restore(out, kind)


# --------------------------------------------------------------------------------------------
# Regression losses
# --------------------------------------------------------------------------------------------
def mae(input: Any, target: Any, *, reduction: str = "mean") -> Any:
    """Mean absolute error: ``|input - target|``, reduced.

    .. math:: \\mathrm{MAE} = \\frac{1}{N} \\sum_i |\\hat y_i - y_i|

    Args:
        input: predictions, any shape.
        target: targets, the same shape.
        reduction: ``"mean"`` over all elements, ``"sum"``, or ``"none"`` (elementwise).

    Example:
        >>> float(mae([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]))
        1.0
    """
    reduction = check_one_of("reduction", reduction, _REDUCTIONS)
    a, b, kind = _same_shape(input, target)
    return _restore(_reduce((a - b).abs(), reduction), kind)


def mse(input: Any, target: Any, *, reduction: str = "mean") -> Any:
    """Mean squared error: ``(input - target)^2``, reduced (Gaussian negative log-likelihood up to constants).

    .. math:: \\mathrm{MSE} = \\frac{1}{N} \\sum_i (\\hat y_i - y_i)^2

    Args:
        input: predictions, any shape.
        target: targets, the same shape.
        reduction: ``"mean"`` over all elements, ``"sum"``, or ``"none"`` (elementwise).

    Example:
        >>> float(mse([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]))
        1.6666666666666667
    """
    reduction = check_one_of("reduction", reduction, _REDUCTIONS)
    a, b, kind = _same_shape(input, target)
    return _restore(_reduce((a - b).square(), reduction), kind)


# --------------------------------------------------------------------------------------------
# Classification losses
# --------------------------------------------------------------------------------------------
def binary_cross_entropy(
    input: Any, target: Any, *, from_logits: bool = True, reduction: str = "mean"
) -> Any:
    """Binary cross-entropy (log loss) in nats, from logits (default) or from probabilities.

    .. math::
        \\ell = -[y \\log \\sigma(x) + (1 - y) \\log(1 - \\sigma(x))]
              = \\max(x, 0) - x y + \\log(1 + e^{-|x|})

    The right-hand form is used for logits, so no ``exp`` overflows. With ``from_logits=False``
    ``input`` holds probabilities ``p`` and ``-[y log p + (1-y) log(1-p)]`` is computed with
    ``0 log 0 = 0`` and no clipping (``p = 0`` with ``y > 0`` gives ``+inf``).

    Args:
        input: ``(...)`` finite logits ``x`` (or probabilities in ``[0, 1]`` with ``from_logits=False``).
        target: ``(...)`` same shape, labels or soft targets in ``[0, 1]``.
        from_logits: whether ``input`` holds logits (default) or probabilities.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (elementwise).

    Example:
        >>> round(float(binary_cross_entropy([0.0], [1.0])), 4)  # log 2
        0.6931
        >>> round(float(binary_cross_entropy([0.9], [1.0], from_logits=False)), 4)
        0.1054
    """
    reduction = check_one_of("reduction", reduction, _REDUCTIONS)
    if not isinstance(from_logits, bool):
        raise InputTypeError(f"from_logits must be True or False, got {from_logits!r} instead.")
    x, y, kind = _same_shape(input, target)
    yd = y.detach()
    if torch.isnan(yd).any() or (yd < 0).any() or (yd > 1).any():
        raise InputError("target must contain values in [0, 1] (labels or soft targets).")
    if from_logits:
        if not torch.isfinite(x.detach()).all():
            raise InputError("input must contain finite logits (pass from_logits=False for probabilities).")
        loss = x.clamp(min=0) - x * y + torch.log1p(torch.exp(-x.abs()))
    else:
        xd = x.detach()
        if torch.isnan(xd).any() or (xd < 0).any() or (xd > 1).any():
            raise InputError("input must contain probabilities in [0, 1] when from_logits=False.")
        loss = 0.0 - (_p_log_q(y, x) + _p_log_q(1 - y, 1 - x))
    return _restore(_reduce(loss, reduction), kind)


def cross_entropy(
    logits: Any, target: Any, *, label_smoothing: float = 0.0, reduction: str = "mean"
) -> Any:
    """Softmax cross-entropy in nats from logits, with class-id, one-hot or soft-probability targets.

    .. math::
        \\ell_n = -\\sum_c y'_{nc} \\log \\mathrm{softmax}(z_n)_c, \\qquad
        y' = (1 - \\varepsilon)\\, y + \\varepsilon / C

    The gradient with respect to the logits is ``softmax(z) - y'`` per sample (divided by N
    for ``reduction="mean"``). Matches ``torch.nn.functional.cross_entropy`` (including its
    label-smoothing definition); ``0 · log 0 = 0`` for masked (``-inf``) classes with ``y' = 0``.

    Args:
        logits: ``(N, C)`` real scores.
        target: ``(N,)`` integer class ids in ``[0, C)``, or ``(N, C)`` float probabilities
            (one-hot or soft; non-negative, rows summing to 1).
        label_smoothing: ``ε`` in ``[0, 1]``, mixing the target with the uniform distribution.
        reduction: ``"mean"`` over samples, ``"sum"``, or ``"none"`` (shape ``(N,)``).

    Example:
        >>> round(float(cross_entropy([[0.0, 0.0]], [1])), 4)  # log 2
        0.6931
        >>> round(float(cross_entropy([[0.0, 0.0]], [[0.0, 1.0]])), 4)
        0.6931
    """
    eps = check_in_range("label_smoothing", label_smoothing, 0.0, 1.0)
    reduction = check_one_of("reduction", reduction, _REDUCTIONS)
    z, kind = _as_tensor("logits", logits)
    n, c = _check_2d("logits", z)
    log_p = torch.log_softmax(z, dim=1)  # (N, C), stable: torch subtracts the row maximum
    t_ndim = target.ndim if isinstance(target, torch.Tensor) else np.ndim(target)
    if t_ndim == 1:  # (N,) class ids
        y = _as_class_ids("target", target, n, c, z.device)
        nll = -log_p.gather(1, y[:, None]).squeeze(1)  # (N,)
        loss = nll if eps == 0 else (1 - eps) * nll - eps * log_p.mean(dim=1)
    else:  # (N, C) one-hot or soft probabilities
        tp, tkind = _as_tensor("target", target)
        if tuple(tp.shape) != (n, c):
            raise InputError(
                f"target must have shape (N,) = ({n},) of class ids or (N, C) = ({n}, {c}) of "
                f"probabilities, got {tuple(tp.shape)} instead."
            )
        tp = _distribution("target", tp.to(device=z.device, dtype=z.dtype), 1, False, tkind.half)
        if eps:
            tp = (1 - eps) * tp + eps / c
        # 0 * log 0 = 0 for masked classes: where(), not a product, so no 0 * (-inf) = NaN.
        loss = -torch.where(tp > 0, tp * log_p, torch.zeros_like(log_p)).sum(dim=1)  # (N,)
    if torch.isnan(loss.detach().sum()):  # (N,) NaN iff some row of logits was NaN / +inf / all -inf
        _diagnose(z, 1)
    return _restore(_reduce(loss, reduction), kind)


def nll_loss(log_probs: Any, target: Any, *, reduction: str = "mean") -> Any:
    """Negative log-likelihood of the true classes, in nats: ``-log_probs[n, target[n]]``.

    .. math:: \\ell_n = -\\log p_{n, y_n}

    With ``log_probs = log_softmax(logits)`` this equals :func:`cross_entropy` with class ids.

    Args:
        log_probs: ``(N, C)`` log-probabilities (``<= 0``; ``-inf`` allowed).
        target: ``(N,)`` integer class ids in ``[0, C)``.
        reduction: ``"mean"`` over samples, ``"sum"``, or ``"none"`` (shape ``(N,)``).

    Example:
        >>> import math
        >>> round(float(nll_loss([[math.log(0.002), math.log(0.02), math.log(0.978)]], [2])), 4)
        0.0222
    """
    reduction = check_one_of("reduction", reduction, _REDUCTIONS)
    lp, kind = _as_tensor("log_probs", log_probs)
    n, c = _check_2d("log_probs", lp)
    lpd = lp.detach()
    if torch.isnan(lpd).any() or (lpd > 0).any():
        raise InputError(
            "log_probs must contain log-probabilities (<= 0, not NaN); pass log_softmax(logits), "
            "or use cross_entropy for logits."
        )
    y = _as_class_ids("target", target, n, c, lp.device)
    loss = -lp.gather(1, y[:, None]).squeeze(1)  # (N,)
    return _restore(_reduce(loss, reduction), kind)


def hinge_loss(
    scores: Any,
    target: Any,
    *,
    margin: float = 1.0,
    multiclass: str = "crammer_singer",
    reduction: str = "mean",
) -> Any:
    """Hinge loss, binary (``±1`` labels) or multi-class (Crammer–Singer by default, or Weston–Watkins).

    .. math::
        \\text{binary:}\\quad \\ell_n = \\max(0,\\; m - y_n s_n), \\quad y_n \\in \\{-1, +1\\}

        \\text{Crammer–Singer:}\\quad \\ell_n = \\max(0,\\; m + \\max_{j \\ne y_n} s_{nj} - s_{n y_n})

        \\text{Weston–Watkins:}\\quad \\ell_n = \\sum_{j \\ne y_n} \\max(0,\\; m + s_{nj} - s_{n y_n})

    Crammer–Singer is ``sklearn.metrics.hinge_loss``'s multi-class loss; Weston–Watkins is
    ``C`` times ``torch.nn.functional.multi_margin_loss``.

    Args:
        scores: ``(N,)`` real scores (binary) or ``(N, C)`` class scores with ``C >= 2``.
        target: ``(N,)`` labels in ``{-1, +1}`` (binary) or integer class ids in ``[0, C)``.
        margin: ``m``, a finite number > 0.
        multiclass: ``"crammer_singer"`` or ``"weston_watkins"`` (ignored for binary scores).
        reduction: ``"mean"`` over samples, ``"sum"``, or ``"none"`` (shape ``(N,)``).

    Example:
        >>> float(hinge_loss([2.0, -0.5], [1, 1]))
        0.75
        >>> float(hinge_loss([[1.0, 2.0, 0.0]], [0]))  # CS: 1 + 2 - 1
        2.0
        >>> float(hinge_loss([[1.0, 2.0, 0.0]], [0], multiclass="weston_watkins"))  # 2 + 0
        2.0
    """
    m = check_positive_finite("margin", margin)
    multiclass = check_one_of("multiclass", multiclass, ("crammer_singer", "weston_watkins"))
    reduction = check_one_of("reduction", reduction, _REDUCTIONS)
    s, kind = _as_tensor("scores", scores)
    if s.numel() and not torch.isfinite(s.detach()).all():
        raise InputError("scores must be finite.")
    if s.ndim == 1:
        if s.numel() == 0:
            raise InputError("scores must be non-empty, got shape (0,) instead.")
        y, _ = _as_tensor("target", target)
        if tuple(y.shape) != tuple(s.shape):
            raise InputError(
                f"target must have the same shape as scores {tuple(s.shape)}, got {tuple(y.shape)} instead."
            )
        y = y.to(device=s.device, dtype=s.dtype)
        if not ((y == 1) | (y == -1)).all():
            raise InputError("target must contain only -1 and +1 labels for binary (1-D) scores.")
        loss = (m - y * s).clamp(min=0)  # (N,)
        return _restore(_reduce(loss, reduction), kind)
    n, c = _check_2d("scores", s)
    if c < 2:
        raise InputError(
            f"scores must have C >= 2 classes for the multi-class hinge loss, got C = {c} instead."
        )
    y = _as_class_ids("target", target, n, c, s.device)
    true = s.gather(1, y[:, None])  # (N, 1) score of the true class
    is_true = torch.zeros_like(s, dtype=torch.bool).scatter_(1, y[:, None], True)  # (N, C)
    if multiclass == "crammer_singer":
        rival = s.masked_fill(is_true, float("-inf")).amax(dim=1)  # (N,) best wrong class
        loss = (m + rival - true.squeeze(1)).clamp(min=0)
    else:
        per_class = (m + s - true).clamp(min=0).masked_fill(is_true, 0.0)  # (N, C)
        loss = per_class.sum(dim=1)
    return _restore(_reduce(loss, reduction), kind)
