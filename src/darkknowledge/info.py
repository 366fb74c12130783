"""Information theory on discrete distributions: self-information, entropy, cross-entropy, KL and JS.

All functions take Python lists, NumPy arrays or torch tensors and return the same kind:

* a torch tensor in gives a torch tensor out, on the same device, differentiable;
* a NumPy array in gives a NumPy array (or NumPy scalar, for a single distribution) out;
* a Python list in gives a ``float`` (one distribution) or a NumPy array (several) out.

When ``p`` and ``q`` are of different kinds, a tensor wins over an array and an array over a list.
Integer inputs are read as floats; float16 / bfloat16 tensors are computed in float32 and returned in
their own dtype; NumPy inputs are computed in float64 (float32 arrays are returned as float32).

Units: ``base=2`` (the default) gives **bits**, ``base=math.e`` gives **nats**; any finite base > 0
other than 1 is allowed. The distributions lie along ``axis`` (default the last); that axis is reduced.

Conventions, honoured everywhere:

* ``0 · log 0 = 0`` (an outcome of probability 0 contributes nothing);
* where ``p > 0`` but ``q = 0``, cross-entropy and KL divergence are ``+inf``;
* ``normalize=True`` (the default) divides non-negative rows by their sum along ``axis``, as
  ``scipy.stats.entropy`` does (after dividing by the row maximum, so rows of huge or subnormal
  entries such as ``[1e308, 1e308]`` are normalised exactly); ``normalize=False`` requires each row to sum to 1 within a tolerance
  (``1e-6`` in float64, ``1e-4`` in float32, ``1e-2`` in half precision) and raises otherwise;
* negative entries, NaN, ±inf, empty input and mismatched shapes raise ``ValueError`` naming the
  argument.

References:
    C. E. Shannon, *A Mathematical Theory of Communication*, 1948.
    S. Kullback and R. A. Leibler, *On Information and Sufficiency*, 1951.
    J. Lin, *Divergence measures based on the Shannon entropy*, IEEE Trans. Inf. Theory, 1991.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from darkknowledge._checks import check_positive_finite
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "self_information",
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "js_divergence",
]

_HALF = (torch.float16, torch.bfloat16)
# Tolerance on |sum - 1| when normalize=False, by the dtype the sum is computed in.
_SUM_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}
_HALF_SUM_TOL = 1e-2


# --------------------------------------------------------------------------------------------
# Input / output kinds (shared with darkknowledge.functional)
# --------------------------------------------------------------------------------------------
class _Kind:
    """Where a value came from and how to give the result back: ``"list" | "numpy" | "torch"``."""

    __slots__ = ("kind", "out_dtype", "half")

    def __init__(self, kind: str, out_dtype: Any, half: bool = False) -> None:
        self.kind = kind
        self.out_dtype = out_dtype  # torch dtype (torch) or NumPy dtype (numpy / list)
        self.half = half  # True when the input was computed in float32 for a half dtype


_RANK = {"list": 0, "numpy": 1, "torch": 2}


def _as_tensor(name: str, x: Any) -> tuple[torch.Tensor, _Kind]:
    """Convert a list, NumPy array or tensor to a floating tensor to compute with.

    Returns the tensor (float32 for half-precision inputs, float64 for lists and NumPy
    arrays other than float32) and the :class:`_Kind` needed by :func:`_restore`.
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise InputTypeError(f"{name} must be a real tensor, got dtype {x.dtype} instead.")
        t = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        out = t.dtype
        if t.dtype in _HALF:
            return t.float(), _Kind("torch", out, half=True)
        return t, _Kind("torch", out)
    if isinstance(x, (np.ndarray, np.generic)):
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise InputTypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype} instead.")
        out = np.dtype(np.float32) if arr.dtype == np.float32 else np.dtype(np.float64)
        compute = np.float32 if out == np.float32 else np.float64
        return torch.from_numpy(np.array(arr, dtype=compute)), _Kind("numpy", out)
    if isinstance(x, (list, tuple, int, float)) and not isinstance(x, bool):
        try:
            arr = np.array(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputTypeError(
                f"{name} must be a (nested, rectangular) list of numbers, got {x!r:.80} instead."
            ) from None
        return torch.from_numpy(arr), _Kind("list", np.dtype(np.float64))
    raise InputTypeError(
        f"{name} must be a list of numbers, a NumPy array or a torch tensor, "
        f"got {type(x).__name__} instead."
    )


def _common(a: tuple[torch.Tensor, _Kind], b: tuple[torch.Tensor, _Kind]):
    """Bring two converted inputs to one compute dtype and device; return them and the result kind."""
    (ta, ka), (tb, kb) = a, b
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    device = ta.device if ka.kind == "torch" else tb.device
    ta, tb = ta.to(device=device, dtype=dtype), tb.to(device=device, dtype=dtype)
    kind = ka if _RANK[ka.kind] >= _RANK[kb.kind] else kb
    if ka.kind == kb.kind == "torch":
        out = torch.promote_types(ka.out_dtype, kb.out_dtype)
        kind = _Kind("torch", out, half=out in _HALF)
    elif ka.kind == kb.kind == "numpy":
        kind = _Kind("numpy", np.promote_types(ka.out_dtype, kb.out_dtype))
    return ta, tb, kind


def _restore(t: torch.Tensor, kind: _Kind) -> Any:
    """Give a result back in the kind its input came in (see the module docstring)."""
    if kind.kind == "torch":
        return t.to(kind.out_dtype) if t.dtype != kind.out_dtype else t
    arr = t.detach().cpu().numpy().astype(kind.out_dtype, copy=False)
    if arr.ndim == 0:
        return float(arr) if kind.kind == "list" else arr[()]
    return arr


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _log_base(base: Any) -> float:
    """``ln(base)``, the divisor that turns nats into units of ``base``."""
    b = check_positive_finite("base", base)
    if b == 1.0:
        raise InputError("base must be a finite number > 0 other than 1, got 1 instead.")
    return math.log(b)


def _check_axis(name: str, t: torch.Tensor, axis: Any) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InputTypeError(f"axis must be an integer, got {type(axis).__name__} instead.")
    if t.ndim == 0:
        raise InputError(
            f"{name} must have at least one dimension (the distribution lies along axis), "
            "got a scalar instead."
        )
    if not -t.ndim <= axis < t.ndim:
        raise InputError(
            f"axis must be in [{-t.ndim}, {t.ndim - 1}] for {name} of shape {tuple(t.shape)}, "
            f"got {axis} instead."
        )
    return int(axis)


def _check_entries(name: str, t: torch.Tensor) -> None:
    """Non-empty, no NaN, no ±inf, no negative entries (two reductions; diagnosis only on failure)."""
    if t.numel() == 0:
        raise InputError(f"{name} must be non-empty, got shape {tuple(t.shape)} instead.")
    d = t.detach()
    lowest = d.min()
    if torch.isnan(lowest) or not torch.isfinite(d.sum()):
        if torch.isnan(d).any():
            raise InputError(f"{name} must not contain NaN.")
        if torch.isinf(d).any():
            raise InputError(f"{name} must contain finite probabilities, got an infinite entry instead.")
    if lowest < 0:
        raise InputError(f"{name} must be non-negative, got a minimum of {lowest.item()!r} instead.")


def _distribution(name: str, t: torch.Tensor, axis: int, normalize: bool, half: bool) -> torch.Tensor:
    """Check ``t`` and return it as probabilities along ``axis`` (normalised or verified)."""
    _check_entries(name, t)
    if normalize:
        # Divide by the row maximum first, so that the sum neither overflows (1e308 + 1e308 = inf
        # would make every p_i 0) nor loses subnormal entries: the scaled row lies in [0, 1] with
        # a 1 in it, its sum in [1, C]. The maximum is detached: t / m / sum(t / m) = t / sum(t)
        # for any constant m, so values and gradients are those of t / sum(t).
        peak = t.detach().amax(dim=axis, keepdim=True)  # (..., 1, ...) row maxima
        if (peak == 0).any():
            raise InputError(
                f"{name} must have a positive sum along axis {axis} to be normalised, "
                "got a row of zeros instead."
            )
        scaled = t / peak  # (..., C, ...) in [0, 1]
        return scaled / scaled.sum(dim=axis, keepdim=True)
    total = t.sum(dim=axis, keepdim=True)  # (..., 1, ...) row sums
    tol = _HALF_SUM_TOL if half else _SUM_TOL.get(t.dtype, 1e-4)
    worst = (total.detach() - 1).abs().max().item()
    if worst > tol:
        bad = total.detach().flatten()[(total.detach() - 1).abs().flatten().argmax()].item()
        raise InputError(
            f"{name} must sum to 1 along axis {axis} (within {tol:g}) when normalize=False, "
            f"got a sum of {bad!r} instead."
        )
    return t


def _check_normalize(normalize: Any) -> bool:
    if not isinstance(normalize, bool):
        raise InputTypeError(f"normalize must be True or False, got {normalize!r} instead.")
    return normalize


def _pair(p: Any, q: Any, axis: Any, normalize: Any):
    """Convert, check and (optionally) normalise a pair of distributions of the same shape."""
    normalize = _check_normalize(normalize)
    tp, tq, kind = _common(_as_tensor("p", p), _as_tensor("q", q))
    if tp.shape != tq.shape:
        raise InputError(
            f"q must have the same shape as p {tuple(tp.shape)}, got {tuple(tq.shape)} instead."
        )
    ax = _check_axis("p", tp, axis)
    tp = _distribution("p", tp, ax, normalize, kind.half)
    tq = _distribution("q", tq, ax, normalize, kind.half)
    return tp, tq, ax, kind


# --------------------------------------------------------------------------------------------
# The maths
# --------------------------------------------------------------------------------------------
def _p_log_q(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``p · ln q`` elementwise, with ``0 · ln(anything) = 0`` and gradients that stay finite there.

    Where ``p == 0`` the logarithm is taken of 1 instead, so neither the value nor the
    gradient sees ``0 · (-inf)``; where ``p > 0`` and ``q == 0`` the value is ``-inf``.
    """
    if not (torch.is_grad_enabled() and (p.requires_grad or q.requires_grad)):
        return torch.special.xlogy(p, q)  # same values, one kernel
    positive = p > 0
    q_safe = torch.where(positive, q, torch.ones_like(q))
    return torch.where(positive, p * torch.log(q_safe), torch.zeros_like(p))


def self_information(p: Any, *, base: float = 2, normalize: bool = False, axis: int = -1) -> Any:
    """Self-information (surprisal) of events of probability ``p``: ``I(p) = -log_b p``.

    .. math:: I(p) = -\\log_b p

    Elementwise; the output has the shape of ``p``. ``I(1) = 0`` and ``I(0) = +inf``.

    Args:
        p: probabilities in ``[0, 1]``, any shape (a scalar is fine).
        base: logarithm base; 2 gives bits (default), ``math.e`` nats.
        normalize: unlike the other functions of this module the default is ``False``,
            because ``p`` here is a set of event probabilities, not necessarily a distribution.
            With ``True``, ``p`` is first normalised along ``axis`` (its rows divided by their sum),
            giving the information content of each outcome of that distribution.
        axis: the axis of the distribution when ``normalize=True``; unused otherwise.

    Returns:
        The surprisal of each entry, in units of ``base``; same kind as ``p``.

    Example:
        >>> self_information([0.5, 0.25, 0.125])
        array([1., 2., 3.])
        >>> self_information(0.5)
        1.0
    """
    normalize = _check_normalize(normalize)
    ln_b = _log_base(base)
    t, kind = _as_tensor("p", p)
    if normalize:
        t = _distribution("p", t, _check_axis("p", t, axis), True, kind.half)
    else:
        _check_entries("p", t)
        if (t.detach() > 1).any():
            raise InputError(
                f"p must be probabilities in [0, 1], got a maximum of {t.detach().max().item()!r} "
                "instead (pass normalize=True to normalise a distribution)."
            )
    return _restore((0.0 - torch.log(t)) / ln_b, kind)  # 0.0 - x: no -0.0 for p = 1


def entropy(p: Any, *, base: float = 2, axis: int = -1, normalize: bool = True) -> Any:
    """Shannon entropy of the distribution(s) ``p`` along ``axis``.

    .. math:: H(p) = -\\sum_i p_i \\log_b p_i \\qquad (0 \\log 0 = 0)

    Args:
        p: probabilities, shape ``(..., C, ...)`` with the ``C`` outcomes along ``axis``.
        base: logarithm base; 2 gives bits (default), ``math.e`` nats.
        axis: the axis of the outcomes (reduced).
        normalize: divide each row by its sum first (default, as SciPy); with ``False`` each row
            must already sum to 1.

    Returns:
        ``H(p)`` in units of ``base``, shape of ``p`` without ``axis``; same kind as ``p``.

    Example:
        >>> round(entropy([0.1, 0.3, 0.2, 0.4]), 4)  # bits
        1.8464
        >>> entropy([0.5, 0.25, 0.125, 0.125])
        1.75
    """
    normalize = _check_normalize(normalize)
    ln_b = _log_base(base)
    t, kind = _as_tensor("p", p)
    ax = _check_axis("p", t, axis)
    t = _distribution("p", t, ax, normalize, kind.half)
    return _restore((0.0 - _p_log_q(t, t).sum(dim=ax)) / ln_b, kind)


def cross_entropy(p: Any, q: Any, *, base: float = 2, axis: int = -1, normalize: bool = True) -> Any:
    """Cross-entropy of ``q`` relative to ``p``: the mean code length when coding ``p`` with ``q``'s code.

    .. math:: H(p, q) = -\\sum_i p_i \\log_b q_i = H(p) + D_{KL}(p \\| q)

    ``0 · log q = 0`` for any ``q``; ``p_i > 0`` with ``q_i = 0`` gives ``+inf``.

    Args:
        p: the reference (data, "true") distribution, shape ``(..., C, ...)``.
        q: the model distribution, same shape as ``p``.
        base: logarithm base; 2 gives bits (default), ``math.e`` nats.
        axis: the axis of the outcomes (reduced).
        normalize: normalise each row of ``p`` and ``q`` first (default).

    Returns:
        ``H(p, q)`` in units of ``base``, shape of ``p`` without ``axis``.

    Example:
        >>> cross_entropy([0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25])
        2.0
    """
    ln_b = _log_base(base)
    tp, tq, ax, kind = _pair(p, q, axis, normalize)
    return _restore((0.0 - _p_log_q(tp, tq).sum(dim=ax)) / ln_b, kind)


def kl_divergence(p: Any, q: Any, *, base: float = 2, axis: int = -1, normalize: bool = True) -> Any:
    """Kullback–Leibler divergence KL(p ‖ q), the extra code length of coding ``p`` with ``q``'s code.

    .. math:: D_{KL}(p \\| q) = \\sum_i p_i \\log_b \\frac{p_i}{q_i} = H(p, q) - H(p) \\ge 0

    Not symmetric: ``KL(p‖q) != KL(q‖p)`` in general. Terms with ``p_i = 0`` are 0; ``p_i > 0``
    with ``q_i = 0`` gives ``+inf``. Equals ``scipy.special.rel_entr(p, q).sum(axis) / ln(base)``.

    Args:
        p: the reference distribution, shape ``(..., C, ...)``.
        q: the approximating distribution, same shape.
        base: logarithm base; 2 gives bits (default), ``math.e`` nats.
        axis: the axis of the outcomes (reduced).
        normalize: normalise each row of ``p`` and ``q`` first (default).

    Returns:
        ``KL(p‖q)`` in units of ``base``, shape of ``p`` without ``axis``.

    Example:
        >>> round(kl_divergence([0.5, 0.5], [0.9, 0.1]), 5)
        0.73697
        >>> round(kl_divergence([0.9, 0.1], [0.5, 0.5]), 5)
        0.531
    """
    ln_b = _log_base(base)
    tp, tq, ax, kind = _pair(p, q, axis, normalize)
    kl = (_p_log_q(tp, tp) - _p_log_q(tp, tq)).sum(dim=ax)  # (...,) in nats
    return _restore(kl / ln_b, kind)


def js_divergence(p: Any, q: Any, *, base: float = 2, axis: int = -1, normalize: bool = True) -> Any:
    """Jensen–Shannon divergence: the mean KL of ``p`` and ``q`` to their mixture ``m``.

    .. math::
        JS(p, q) = \\tfrac12 D_{KL}(p \\| m) + \\tfrac12 D_{KL}(q \\| m), \\qquad m = \\tfrac12 (p + q)

    Symmetric, finite, ``0 <= JS <= log_b 2`` (at most 1 bit). It is the *square* of
    ``scipy.spatial.distance.jensenshannon`` (which returns the JS distance).

    Args:
        p, q: distributions of the same shape ``(..., C, ...)``.
        base: logarithm base; 2 gives bits (default), ``math.e`` nats.
        axis: the axis of the outcomes (reduced).
        normalize: normalise each row of ``p`` and ``q`` first (default).

    Returns:
        ``JS(p, q)`` in units of ``base``, shape of ``p`` without ``axis``.

    Example:
        >>> js_divergence([1.0, 0.0], [0.0, 1.0])
        1.0
    """
    ln_b = _log_base(base)
    tp, tq, ax, kind = _pair(p, q, axis, normalize)
    # KL(p || m) = sum p log(2p / (p + q)): through the sum s = p + q, which is >= p and >= q, so it cannot
    # underflow to 0 where p or q is a subnormal (m = s / 2 can: 5e-324 / 2 == 0, and p log(p / 0) = inf)
    s = tp + tq  # (..., C, ...) twice the mixture
    ln2 = math.log(2.0)
    kl_pm = (_p_log_q(tp, tp) - _p_log_q(tp, s)).sum(dim=ax) + ln2 * tp.sum(dim=ax)
    kl_qm = (_p_log_q(tq, tq) - _p_log_q(tq, s)).sum(dim=ax) + ln2 * tq.sum(dim=ax)
    return _restore(0.5 * (kl_pm + kl_qm) / ln_b, kind)
