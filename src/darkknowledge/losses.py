r"""The distillation loss of Hinton, Vinyals & Dean (2015), fused: loss and gradient in one pass.

.. math::

    L = \alpha\,\mathrm{CE}(s, y) + (1 - \alpha)\,T^2\,
        D\big(\mathrm{softmax}(t / T)\,\|\,\mathrm{softmax}(s / T)\big)

for student logits :math:`s`, teacher logits :math:`t`, hard labels :math:`y` and temperature
:math:`T`. :math:`\alpha` weights the hard-label cross-entropy; the factor :math:`T^2` keeps
the soft term's gradients on the same scale as the hard term's when :math:`T` changes. All
values are in nats.

The loss is one :class:`torch.autograd.Function` that computes, for each row, the loss *and*
its analytic gradient with respect to the student logits in the forward pass; backward only
multiplies the saved gradient by the incoming one. With ``u = s / T``, ``q = softmax(u)``,
``p = softmax(t / T)`` and :math:`g_j = \partial D / \partial u_j`:

- ``"kl"``: :math:`D = \mathrm{KL}(p\|q) = \sum_j p_j \log(p_j / q_j)` (Hinton's choice),
  :math:`g = q - p`.
- ``"reverse_kl"``: :math:`D = \mathrm{KL}(q\|p)`,
  :math:`g_j = q_j (\log(q_j/p_j) - \mathrm{KL}(q\|p))`.
- ``"js"``: :math:`D = \tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m)`,
  :math:`m = (p+q)/2`, :math:`g_j = q_j (h_j - \sum_k q_k h_k)` with
  :math:`h = \tfrac12 \log(q/m)`.

and :math:`\partial L / \partial s = \alpha(\mathrm{softmax}(s) - \mathrm{onehot}(y)) +
(1-\alpha)\,T\,g` per row (divided by N for ``reduction="mean"``). The teacher never gets a
gradient.

Two backends compute the same thing: ``"compiled"``, a C kernel built with the package when it
is installed (see :mod:`darkknowledge._fused_kd`), for CPU tensors computed in float32; and
``"eager"``, torch operations over chunks of rows, for any dtype and device. ``"auto"`` (the
default, or ``$DARKKNOWLEDGE_LOSS_BACKEND``) uses the compiled kernel where it applies and
falls back to eager, with one :class:`~darkknowledge._fused_kd.KernelUnavailableWarning`, if it
was not built (no C compiler at install time).

Temperatures: :math:`T` must lie in ``TEMPERATURE_RANGE`` = [1e-6, 1e30] (a ValueError
otherwise); the loss and its gradient are exact across it (float32: a few 1e-7 relative). At
high :math:`T` (both rows' logit ranges at most :math:`T`) both backends switch to a float64
formulation without cancellation, so the loss tends to Hinton's logit-matching limit
(section 2.1): with centred logits :math:`\bar s = s - \mathrm{mean}(s)`,
:math:`\bar t = t - \mathrm{mean}(t)`,

.. math::

    T^2\,\mathrm{KL} \to \frac{1}{2C}\sum_j (\bar s_j - \bar t_j)^2, \qquad
    T\,\frac{\partial\,\mathrm{KL}}{\partial u} = T(q - p) \to \frac{1}{C}(\bar s - \bar t),

the same for reverse KL, and a quarter of it for JS (:math:`\frac{1}{8C}\sum_j (\bar s_j - \bar t_j)^2`).

For a training loop, :class:`TrainingDistillationLoss` computes the same loss with its settings
checked once and no per-call checks; its :meth:`~TrainingDistillationLoss.value_and_grad` returns
the loss and the gradient for ``logits.backward(grad)`` (what ``darkknowledge.distill`` uses).

Reference: G. Hinton, O. Vinyals, J. Dean, *Distilling the Knowledge in a Neural Network*,
arXiv:1503.02531 (2015).
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from darkknowledge import _fused_kd
from darkknowledge._checks import (
    TEMPERATURE_RANGE,
    check_in_range,
    check_one_of,
    check_positive_finite,
    check_positive_int,
)
from darkknowledge.errors import InputError, InputTypeError

__all__ = ["BACKENDS", "DIVERGENCES", "REDUCTIONS", "TEMPERATURE_RANGE", "DistillationLoss",
           "LossAndGradient", "TrainingDistillationLoss", "check_temperature", "distillation_loss"]

DIVERGENCES = _fused_kd.DIVERGENCES
REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "eager", "compiled")
#: The temperatures the loss is computed for (exact across it; refused outside it).

# Eager path: rows per chunk so that one (chunk, C) temporary holds about this many elements.
_CHUNK_ELEMENTS = 1 << 18

_warned_fallback = False


def _as_tensor(name: str, x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__} instead.")
    return x


def _validate(student, teacher, target):
    """Check the inputs; return the logits as given and the target flattened to (N,) int64."""
    s = _as_tensor("student_logits", student)
    t = _as_tensor("teacher_logits", teacher)
    for name, x in (("student_logits", s), ("teacher_logits", t)):
        if not x.is_floating_point():
            raise InputTypeError(f"{name} must have a floating dtype, got {x.dtype} instead.")
    if s.ndim == 0 or s.numel() == 0:
        raise InputError(
            f"student_logits must have shape (..., C) with at least one row and one class, "
            f"got {tuple(s.shape)} instead.")
    if t.shape != s.shape:
        raise InputError(
            f"teacher_logits must have the same shape as student_logits {tuple(s.shape)}, "
            f"got {tuple(t.shape)} instead.")
    if t.device != s.device:
        raise InputError(f"teacher_logits must be on the device of student_logits ({s.device}), "
                         f"got {t.device} instead.")
    y = None
    if target is not None:
        y = _as_tensor("target", target)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InputTypeError(f"target must hold integer class ids (int64), got {y.dtype} instead.")
        if y.shape != s.shape[:-1]:
            raise InputError(f"target must have shape {tuple(s.shape[:-1])} (the leading dims of "
                             f"the logits), got {tuple(y.shape)} instead.")
        if y.dtype != torch.int64 or y.device != s.device:
            y = y.to(device=s.device, dtype=torch.int64)
        y = y.reshape(-1).contiguous()  # (N,)
        lo, hi = torch.aminmax(y)  # one pass; the offending values only on failure
        c = s.shape[-1]
        if lo.item() < 0 or hi.item() >= c:
            raise _fused_kd.label_error(y, c)
    return s, t, y


def check_temperature(temperature) -> float:
    """Return ``float(temperature)`` if it is a number in ``TEMPERATURE_RANGE``, else raise.

    Below 1e-6, ``T**2 * D`` underflows float32 and ``1 / T`` overflows it; above 1e30 nothing is
    gained (the loss has long reached its logit-matching limit).

    >>> check_temperature(4)
    4.0
    """
    t = check_positive_finite("temperature", temperature)
    lo, hi = TEMPERATURE_RANGE
    if not lo <= t <= hi:
        raise InputError(f"temperature must be in [{lo:g}, {hi:g}], got {temperature!r} instead.")
    return t


def _resolve_backend(backend) -> str:
    if backend is None:
        backend = os.environ.get("DARKKNOWLEDGE_LOSS_BACKEND", "auto")
        return check_one_of("$DARKKNOWLEDGE_LOSS_BACKEND", backend, BACKENDS)
    return check_one_of("backend", backend, BACKENDS)


def _use_kernel(backend: str, s: torch.Tensor, compute_dtype: torch.dtype) -> bool:
    """Whether the compiled kernel runs these inputs (loading it on first use; said once if absent)."""
    global _warned_fallback
    if backend == "eager" or s.device.type != "cpu" or compute_dtype != torch.float32:
        return False
    if _fused_kd.load_kernel() is not None:
        return True
    if backend == "compiled":
        raise RuntimeError(f"backend='compiled' was asked for, but the fused kernel is not "
                           f"available: {_fused_kd.kernel_error()}")
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"darkknowledge: the compiled fused distillation kernel is not available "
                      f"({_fused_kd.kernel_error()}); using the slower eager backend.",
                      _fused_kd.KernelUnavailableWarning, stacklevel=4)
    return False


def _diagnose_nan(s: torch.Tensor, t: torch.Tensor) -> None:
    """Raise a ValueError that says which input made the loss NaN."""
    for name, x in (("student_logits", s), ("teacher_logits", t)):
        if torch.isnan(x).any():
            raise InputError(f"{name} must not contain NaN, got {int(torch.isnan(x).sum())} NaN "
                             f"value(s) instead.")
        if torch.isposinf(x).any():
            raise InputError(f"{name} must not contain +inf, got {int(torch.isposinf(x).sum())} "
                             f"+inf value(s) instead.")
        dead = torch.isneginf(x).all(dim=-1)
        if dead.any():
            raise InputError(f"{name} must have a finite logit in every row, got "
                             f"{int(dead.sum())} row(s) of all -inf instead.")
    raise RuntimeError("the distillation loss is NaN for finite inputs; this is a bug in darkknowledge, "
                       "please report it.")


class _FusedDistillation(torch.autograd.Function):
    """Loss forward, analytic gradient saved; backward = grad_output * saved gradient."""

    @staticmethod
    def forward(ctx, s, t, y, temperature, w_hard, w_soft, divergence, reduction, backend, chunk_size):
        # s, t: (N, C); y: (N,) int64 or None
        compute_dtype = torch.promote_types(torch.promote_types(s.dtype, t.dtype), torch.float32)
        n = s.shape[0]
        gscale = 1.0 / n if reduction == "mean" else 1.0
        kw = dict(temperature=temperature, w_hard=w_hard, w_soft=w_soft, divergence=divergence,
                  gscale=gscale)
        sc = (s if s.dtype == compute_dtype else s.to(compute_dtype)).detach().contiguous()
        tc = (t if t.dtype == compute_dtype else t.to(compute_dtype)).detach().contiguous()
        if _use_kernel(backend, s, compute_dtype):
            rows, grad, nan_rows = _fused_kd.rows_compiled(sc, tc, y, **kw)
        else:
            rows, grad, nan_rows = _fused_kd.rows_eager(sc, tc, y, chunk_size=chunk_size, **kw)
        if nan_rows:
            _diagnose_nan(sc, tc)
        ctx.reduction = reduction
        if not ctx.needs_input_grad[0]:
            grad = None
        elif grad.dtype != s.dtype:
            grad = grad.to(s.dtype)  # (N, C) in the student's dtype
        ctx.save_for_backward(grad)
        if reduction == "none":
            return rows  # (N,)
        total = rows.sum()
        return total * gscale if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if grad is None:
            return (None,) * 10
        if grad_output.dtype != grad.dtype:
            grad_output = grad_output.to(grad.dtype)
        if ctx.reduction == "none":
            grad_s = grad * grad_output[:, None]  # (N, C) * (N, 1)
        else:
            grad_s = grad * grad_output  # (N, C) * ()
        return (grad_s,) + (None,) * 9


def distillation_loss(student_logits, teacher_logits, target=None, *, temperature: float = 4.0,
                      alpha: float = 0.1, divergence: str = "kl", reduction: str = "mean",
                      backend: str | None = None, chunk_size: int | None = None) -> torch.Tensor:
    r"""Hinton's distillation loss :math:`\alpha\,\mathrm{CE}(s,y) + (1-\alpha)\,T^2 D(p_T\|q_T)`, in nats.

    Args:
        student_logits: (..., C) student logits (not probabilities); leading dims are
            flattened into N rows. Floating dtype; float16 / bfloat16 are computed in float32.
        teacher_logits: (..., C) teacher logits, same shape. Never receives a gradient.
        target: (...) integer class ids in [0, C-1], or None for soft targets only: then the
            loss is :math:`T^2 D` with weight 1 and ``alpha`` is ignored.
        temperature: T in ``TEMPERATURE_RANGE`` = [1e-6, 1e30]. Both softmaxes of the soft
            term use it; the hard cross-entropy uses T = 1.
        alpha: weight of the hard-label term, in [0, 1].
        divergence: ``"kl"`` for KL(teacher || student) (Hinton), ``"reverse_kl"`` for
            KL(student || teacher), ``"js"`` for Jensen-Shannon; see the module docstring for
            their gradients.
        reduction: ``"mean"`` over the N rows (KL's "batchmean"), ``"sum"``, or ``"none"``
            for the per-row losses of shape (...).
        backend: ``"auto"``, ``"eager"`` or ``"compiled"`` (module docstring); default
            ``$DARKKNOWLEDGE_LOSS_BACKEND`` or ``"auto"``. The compiled kernel serves CPU tensors
            computed in float32 (float32, float16, bfloat16); float64 and non-CPU tensors always
            run eager.
        chunk_size: rows per chunk on the eager path (default: about 2**18 elements per
            chunk), which bounds its temporaries; the compiled kernel works row by row.

    Returns:
        The loss: a scalar, or (...) for ``reduction="none"``; float32 for float32 / float16 /
        bfloat16 logits, float64 for float64.

    Numerical conventions: ``0 log 0 = 0``, so classes masked with ``-inf`` in *both*
    logits (a padded vocabulary) contribute nothing and get a zero gradient. A ``-inf``
    student logit where the teacher has mass makes ``"kl"`` +inf (and a ``-inf`` teacher
    logit where the student has mass makes ``"reverse_kl"`` +inf, with a non-finite
    gradient); ``"js"`` stays finite. NaN or +inf logits, or a row that is all ``-inf``,
    raise a ValueError (detected cheaply from the per-row losses).

    Example:
        >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
        >>> t = torch.tensor([[3.0, 1.0, -2.0]])
        >>> y = torch.tensor([0])
        >>> loss = distillation_loss(s, t, y, temperature=2.0, alpha=0.5)
        >>> round(loss.item(), 4)
        0.1934
        >>> loss.backward()
        >>> [round(v, 4) for v in s.grad[0].tolist()]
        [-0.2071, 0.1125, 0.0945]
    """
    temperature = check_temperature(temperature)
    alpha = check_in_range("alpha", alpha, 0.0, 1.0)
    check_one_of("divergence", divergence, DIVERGENCES)
    check_one_of("reduction", reduction, REDUCTIONS)
    backend = _resolve_backend(backend)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    s, t, y = _validate(student_logits, teacher_logits, target)
    lead, c = s.shape[:-1], s.shape[-1]
    s2, t2 = s.reshape(-1, c), t.reshape(-1, c)  # (N, C)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // c)
    w_hard, w_soft = (alpha, 1.0 - alpha) if y is not None else (0.0, 1.0)
    if w_hard == 0.0:
        y = None
    out = _FusedDistillation.apply(s2, t2, y, temperature, w_hard, w_soft, divergence, reduction,
                                   backend, chunk_size)
    return out.reshape(lead) if reduction == "none" else out


class DistillationLoss(nn.Module):
    """Module form of :func:`distillation_loss`: stores the hyperparameters, takes tensors.

    Example:
        >>> loss_fn = DistillationLoss(temperature=2.0, alpha=0.5)
        >>> loss_fn
        DistillationLoss(temperature=2.0, alpha=0.5, divergence='kl', reduction='mean')
        >>> s, t = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[3.0, 1.0, -2.0]])
        >>> round(loss_fn(s, t, torch.tensor([0])).item(), 4)
        0.1934
    """

    def __init__(self, *, temperature: float = 4.0, alpha: float = 0.1, divergence: str = "kl",
                 reduction: str = "mean", backend: str | None = None) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.alpha = check_in_range("alpha", alpha, 0.0, 1.0)
        self.divergence = check_one_of("divergence", divergence, DIVERGENCES)
        self.reduction = check_one_of("reduction", reduction, REDUCTIONS)
        self.backend = None if backend is None else check_one_of("backend", backend, BACKENDS)

    def forward(self, student_logits, teacher_logits, target=None) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, target,
                                 temperature=self.temperature, alpha=self.alpha,
                                 divergence=self.divergence, reduction=self.reduction,
                                 backend=self.backend)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, alpha={self.alpha}, "
                f"divergence={self.divergence!r}, reduction={self.reduction!r}")


class LossAndGradient(NamedTuple):
    r"""A loss and its gradient with respect to the logits, for loops that call ``logits.backward(grad)``.

    ``darkknowledge.train.fit`` accepts a loss callable that returns one of these: it then starts
    backpropagation at the model's output with ``grad`` instead of building a graph for the loss.

    Attributes:
        loss: ``()`` the loss value, detached (in nats for the distillation loss).
        grad: ``(B, C)`` :math:`\partial\,\text{loss} / \partial\,\text{logits}`, detached.
    """

    loss: torch.Tensor
    grad: torch.Tensor


class TrainingDistillationLoss:
    r""":func:`distillation_loss` (mean over rows) for the inner step of a training loop.

    The hyperparameters are checked once, here; each call only checks what costs nothing
    (shapes, dtype, device). Class ids outside ``[0, C)`` in ``target`` are refused with a
    ValueError on every path: the compiled kernel checks them before reading through them (one
    compare per row), the general path with one ``aminmax``. On a small student
    the per-call checks and the Python ``autograd.Function`` of :func:`distillation_loss` cost
    as much as the loss itself, so this path gets the loss and its analytic gradient
    :math:`G = \partial L / \partial s` from the compiled kernel and either returns both
    (:meth:`value_and_grad`, for a loop that calls ``logits.backward(G)``) or attaches ``G``
    with built-in autograd operations (calling the object):

    .. math::

        \text{out} = L + \big(\textstyle\sum_{ij} s_{ij} G_{ij} - \operatorname{stop}(\sum_{ij} s_{ij} G_{ij})\big),

    whose value is exactly ``L`` (the bracket is ``x - x = 0``) and whose gradient is ``G``.
    Anything the kernel does not serve (another dtype or device, a NaN, no compiled kernel)
    takes :func:`distillation_loss` itself, with all its checks.

    Args:
        temperature, alpha, divergence, backend: as for :func:`distillation_loss`.

    Call: ``loss(student_logits (B, C), teacher_logits (B, C), target (B,) int64 or None)``
    returns the scalar mean loss, in nats, equal to ``distillation_loss(...)``'s.

    Example:
        >>> loss_fn = TrainingDistillationLoss(temperature=2.0, alpha=0.5)
        >>> s = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
        >>> loss = loss_fn(s, torch.tensor([[3.0, 1.0, -2.0]]), torch.tensor([0]))
        >>> round(loss.item(), 4)
        0.1934
        >>> loss.backward()
        >>> [round(v, 4) for v in s.grad[0].tolist()]
        [-0.2071, 0.1125, 0.0945]
    """

    def __init__(self, *, temperature: float = 4.0, alpha: float = 0.1, divergence: str = "kl",
                 backend: str | None = None) -> None:
        self.temperature = check_temperature(temperature)
        self.alpha = check_in_range("alpha", alpha, 0.0, 1.0)
        self.divergence = check_one_of("divergence", divergence, DIVERGENCES)
        self.backend = _resolve_backend(backend)

    def __repr__(self) -> str:
        return (f"TrainingDistillationLoss(temperature={self.temperature}, alpha={self.alpha}, "
                f"divergence={self.divergence!r})")

    def _general(self, s, t, y) -> torch.Tensor:
        return distillation_loss(s, t, y, temperature=self.temperature, alpha=self.alpha,
                                 divergence=self.divergence, backend=self.backend)

    def _kernel(self, s, t, y) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean loss (), gradient (B, C))`` from the compiled kernel, or None where it does not apply."""
        if (s.dtype != torch.float32 or s.ndim != 2 or s.device.type != "cpu" or t.shape != s.shape
                or t.device.type != "cpu" or not t.is_floating_point()
                or (y is not None and (y.dtype != torch.int64 or y.shape != s.shape[:1]))
                or not _use_kernel(self.backend, s, torch.float32)):
            return None
        w_hard, w_soft = (self.alpha, 1.0 - self.alpha) if y is not None else (0.0, 1.0)
        n = s.shape[0]
        sd = s.detach()
        rows, grad, nan_rows = _fused_kd.rows_compiled(
            sd if sd.is_contiguous() else sd.contiguous(),
            (t if t.dtype == torch.float32 else t.float()).contiguous(),
            None if y is None else y.contiguous(),  # checked by the kernel even when alpha = 0
            temperature=self.temperature, w_hard=w_hard, w_soft=w_soft, divergence=self.divergence,
            gscale=1.0 / n)
        if nan_rows:
            return None  # the general path says which input is at fault
        return rows.sum().mul_(1.0 / n), grad  # as distillation_loss scales it, to the last bit

    def value_and_grad(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       target: torch.Tensor | None = None) -> LossAndGradient:
        """The mean loss and its gradient with respect to ``student_logits``, without an autograd graph."""
        fast = self._kernel(student_logits, teacher_logits, target)
        if fast is not None:
            return LossAndGradient(*fast)
        s = student_logits.detach().requires_grad_()
        with torch.enable_grad():
            loss = self._general(s, teacher_logits, target)
            (grad,) = torch.autograd.grad(loss, s)
        return LossAndGradient(loss.detach(), grad)

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        s = student_logits
        fast = self._kernel(s, teacher_logits, target)
        if fast is None:
            return self._general(s, teacher_logits, target)
        total, grad = fast
        if not s.requires_grad:
            return total
        dot = (s * grad).sum()  # () its gradient with respect to s is grad
        if not torch.isfinite(dot).item():  # x - x would be NaN: the general path keeps the value
            return self._general(s, teacher_logits, target)
        return total + (dot - dot.detach())
