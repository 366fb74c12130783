"""Training a student from a teacher: Hinton et al.'s distillation with cached (or online) soft targets.

The student is fitted with the same loop as ``darkknowledge.train.fit`` (schedules, weight decay,
early stopping on the validation cross-entropy, checkpoints, resume, progress, JSONL log); only the
loss changes, to the fused

.. math::

    L = \\alpha \\, \\mathrm{CE}(s, y) + (1 - \\alpha) \\, T^2 \\, \\mathrm{KL}(\\mathrm{softmax}(t/T) \\,\\|\\, \\mathrm{softmax}(s/T))

where ``t`` are the teacher's logits, read for each minibatch from a tensor computed once (and cached on
disk, see ``darkknowledge.soft_targets``), so an epoch of distillation costs about what an epoch of
plain training costs. With random augmentation the teacher runs *online* instead: in ``eval()``
mode under ``torch.no_grad()`` on exactly the augmented minibatch the student sees, every step
("consistent teaching", Beyer et al. 2022), at the cost of one teacher forward pass per step.
The loss is :class:`~darkknowledge.losses.TrainingDistillationLoss`: its settings
and the labels are checked once before training, and each step hands ``fit`` the loss and its gradient
with respect to the student's logits, so no graph is built for the loss.

Reference: G. Hinton, O. Vinyals, J. Dean, *Distilling the Knowledge in a Neural Network*, 2015;
L. Beyer et al., *Knowledge distillation: A good teacher is patient and consistent*, CVPR 2022.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from darkknowledge._checks import check_in_range, check_one_of, check_positive_finite
from darkknowledge.augment import ImageAugment, resolve_augment
from darkknowledge.data._types import Splits
from darkknowledge.data.batches import num_rows, take_rows
from darkknowledge.losses import LossAndGradient, TrainingDistillationLoss
from darkknowledge.rundir import check_path
from darkknowledge.train import (
    FitResult,
    TrainingDivergedError,
    _model_device,
    content_fingerprint,
    evaluate_loss_accuracy,
    fit,
    model_logits,
    predict_logits,
)
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "DistillResult",
    "SweepResult",
    "DistillationDivergedError",
    "distill",
    "resolve_teacher_logits",
    "transfer_indices",
    "adjust_missing_class_bias",
    "BIAS_SHIFTS",
    "sweep",
]

TRANSFER_KINDS = ("train", "unlabelled")
#: ``distill``'s ``teacher_mode``: logits computed once and cached, the teacher run on every batch, or chosen.
TEACHER_MODES = ("auto", "cached", "online")


class DistillationDivergedError(TrainingDivergedError):
    """Distillation produced a non-finite loss; the message says what happened and what to change."""


@dataclass
class DistillResult:
    """What ``distill`` returns: the fit's result plus the distillation settings that produced it."""

    fit: FitResult
    temperature: float
    alpha: float
    divergence: str
    transfer_size: int
    bias_shift: float | None = None
    teacher_mode: str = "cached"
    #: classes the transfer set lacked (``omit_class`` / those ``transfer_classes`` leaves out): their biases moved by ``bias_shift``
    missing_classes: list[int] = field(default_factory=list)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.fit.history


@dataclass
class SweepResult:
    """Validation scores of every (temperature, alpha, lr) tried, and the best one (lowest validation NLL)."""

    rows: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None


def resolve_teacher_logits(
    teacher: nn.Module | torch.Tensor | str | Path | list[nn.Module],
    X: torch.Tensor,
    *,
    cache_dir: str | Path | None = None,
    dtype: str = "float32",
    top_k: int | None = None,
    split: str = "train",
) -> torch.Tensor:
    """Teacher logits ``(N, C)`` float32 for the rows of ``X``: given directly, or computed once (and cached when ``cache_dir`` is set).

    Given directly: a tensor, a NumPy array, an ``.npy`` / ``.safetensors`` file
    (:func:`darkknowledge.teachers.load_teacher_logits`) or a row reader such as
    :class:`darkknowledge.memmap.MemmapSoftTargets`, aligned with the rows of ``X``.
    """
    from darkknowledge.teachers import is_precomputed_logits, load_teacher_logits

    n = num_rows(X)
    if (not isinstance(teacher, (torch.Tensor, np.ndarray)) and hasattr(teacher, "shape")
            and hasattr(teacher, "__getitem__")):
        # a row reader, e.g. darkknowledge.memmap.MemmapSoftTargets: soft[index] -> (B, C) float32
        if len(teacher.shape) != 2 or teacher.shape[0] != n:
            raise InputError(
                f"teacher logits must have shape (N, C) with N = {n} rows of the transfer set, "
                f"got {tuple(teacher.shape)} instead."
            )
        return teacher
    if is_precomputed_logits(teacher):
        if isinstance(teacher, torch.Tensor) and (teacher.ndim != 2 or teacher.shape[0] != n):
            raise InputError(
                f"teacher logits must have shape (N, C) with N = {n} rows of the transfer set, "
                f"got {tuple(teacher.shape)} instead."
            )
        return load_teacher_logits(teacher, num_rows=n).detach().float()
    from darkknowledge.soft_targets import cached_teacher_logits
    from darkknowledge.teachers import as_teacher, teacher_logits

    module = as_teacher(teacher)
    if cache_dir is None:
        return teacher_logits(module, X)
    check_path(cache_dir, name="cache_dir")
    return cached_teacher_logits(module, X, cache_dir=cache_dir, dtype=dtype, top_k=top_k, split=split)


def transfer_indices(
    y: torch.Tensor, *, fraction: float = 1.0, omit_class: int | None = None,
    transfer_classes: Sequence[int] | None = None, seed: int = 0,
) -> torch.Tensor:
    """Rows of the training split that form the transfer set: a seeded ``fraction`` of them, optionally without
    one class (``omit_class``) or with only some classes (``transfer_classes``).

    Hinton et al. (section 3) distil an MNIST student on a transfer set that holds no 3 at all, and on one
    that holds only 7s and 8s.

    >>> transfer_indices(torch.tensor([0, 1, 2, 1, 0]), omit_class=1).tolist()
    [0, 2, 4]
    >>> transfer_indices(torch.tensor([0, 1, 2, 1, 0]), transfer_classes=[1, 2]).tolist()
    [1, 2, 3]
    """
    check_in_range("fraction", fraction, 0.0, 1.0)
    if fraction == 0.0:
        raise InputError("fraction must be > 0, got 0.0 instead.")
    if omit_class is not None and transfer_classes is not None:
        raise InputError("give omit_class or transfer_classes, not both: the classes missing from the transfer set "
                         "are then the ones transfer_classes leaves out.")
    keep = torch.ones(len(y), dtype=torch.bool)
    if omit_class is not None:
        if not (y == omit_class).any():
            raise InputError(f"omit_class {omit_class} does not occur in the training labels.")
        keep &= y != omit_class
    if transfer_classes is not None:
        classes = _check_transfer_classes(transfer_classes)
        absent = [c for c in classes if not bool((y == c).any())]
        if absent:
            raise InputError(f"transfer_classes {absent} do not occur in the training labels.")
        keep &= torch.isin(y, torch.tensor(classes, dtype=y.dtype))
    idx = torch.nonzero(keep).flatten()
    if fraction < 1.0:
        g = torch.Generator().manual_seed(seed)
        n = max(1, int(round(fraction * len(idx))))
        idx = idx[torch.randperm(len(idx), generator=g)[:n]].sort().values
    return idx


def _last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None or last.bias is None:
        raise InputError("the student has no final nn.Linear layer with a bias to adjust.")
    return last


def _check_transfer_classes(classes: Any) -> list[int]:
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise InputTypeError(f"transfer_classes must be a list of class ids, got {type(classes).__name__} instead.")
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
            raise InputError(f"transfer_classes must hold class ids (integers >= 0), got {list(classes)!r} instead.")
        out.append(int(c))
    if not out:
        raise InputError("transfer_classes must name at least one class, got an empty list instead.")
    if len(set(out)) != len(out):
        raise InputError(f"transfer_classes must name each class once, got {out} instead.")
    return sorted(out)


#: Bias shifts tried by :func:`adjust_missing_class_bias`: 0 to 20 in steps of 0.25 (Hinton et al. found 3.5 and 7.6).
BIAS_SHIFTS = tuple(x / 4 for x in range(0, 81))


@torch.no_grad()
def adjust_missing_class_bias(
    student: nn.Module,
    class_id: int | Sequence[int],
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    shifts: Sequence[float] = BIAS_SHIFTS,
    batch_size: int = 4096,
) -> float:
    """Raise the output biases of the classes the transfer set lacked by the one shift that maximises validation accuracy.

    Hinton et al. (2015, section 3): a student that never saw a 3 still learns what a 3 looks like from the
    teacher's soft targets on other digits; raising the 3's bias by 3.5 made it recognise 98.6 % of the test 3s.
    With a transfer set of only 7s and 8s, raising the biases of the eight other classes together by 7.6 took
    the error from 47.3 % to 13.2 %.

    The student's logits on ``X_val`` are computed once: a shift ``b`` of the missing classes' biases adds ``b``
    to those logits, so each candidate costs one argmax. Only the biases of ``class_id`` move; the tie-break
    is the smallest shift. Returns the chosen shift (added in place to the bias of the last ``nn.Linear``).
    """
    layer = _last_linear(student)
    ids = [int(class_id)] if isinstance(class_id, (int, np.integer)) else _check_transfer_classes(class_id)
    num_classes = layer.bias.shape[0]
    if any(c >= num_classes for c in ids):
        raise InputError(f"class ids {ids} must be below the student's {num_classes} outputs.")
    was_training = student.training
    student.eval()
    logits = predict_logits(student, X_val, batch_size=batch_size)  # (N_val, C) on the CPU
    student.train(was_training)
    y = torch.as_tensor(y_val).to(logits.device)
    mask = torch.zeros(num_classes, dtype=logits.dtype)
    mask[ids] = 1.0
    best_shift, best_acc = 0.0, -1.0
    for shift in shifts:
        acc = ((logits + shift * mask).argmax(-1) == y).double().mean().item()
        if acc > best_acc + 1e-12:
            best_shift, best_acc = float(shift), acc
    layer.bias[ids] += best_shift
    return best_shift


def _diverged_message(exc: Exception, temperature: float, lr: float) -> str:
    return (
        f"{exc} Distillation at T = {temperature:g} with lr = {lr:g}: the T²-scaled soft-target gradient "
        f"behaves like logit matching (about (s − t)/C per logit) and needs its own step size. "
        f"Try a smaller lr (e.g. {lr / max(temperature, 2.0):g}), a lower temperature, or max_grad_norm."
    )


def _check_class_ids(y: torch.Tensor, num_classes: int) -> None:
    """Raise unless the labels ``y`` ``(N,)`` are integer class ids in ``[0, num_classes)``."""
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputTypeError(f"data.y_train must hold integer class ids, got {y.dtype} instead.")
    if len(y):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise InputError(f"data.y_train must hold class ids in [0, {num_classes - 1}], got values in [{lo}, {hi}] instead.")


def distill(
    student: nn.Module,
    teacher: nn.Module | torch.Tensor | str | Path | list[nn.Module],
    data: Splits,
    *,
    temperature: float = 4.0,
    alpha: float = 0.1,
    divergence: str = "kl",
    transfer: str = "train",
    transfer_fraction: float = 1.0,
    omit_class: int | None = None,
    transfer_classes: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    soft_target_dtype: str = "float32",
    top_k: int | None = None,
    max_grad_norm: float | None = 5.0,
    seed: int = 0,
    teacher_mode: str = "auto",
    augment: ImageAugment | dict[str, Any] | None = None,
    **fit_kwargs: Any,
) -> DistillResult:
    """Fit ``student`` to ``teacher``'s softened outputs (and the hard labels) on the transfer set.

    Args:
        student: an ``nn.Module`` returning logits ``(N, C)``; trained in place.
        teacher: an ``nn.Module``, a run folder, a list of modules (an ensemble), or precomputed
            teacher logits ``(N_train, C)`` aligned with ``data.X_train``.
        data: the ``Splits``; the transfer set is drawn from ``data.X_train``; the validation split
            drives early stopping (plain cross-entropy, so it means the same as for ``fit``).
        temperature: T > 0 of the softmax on both sides.
        alpha: weight of the hard-label cross-entropy in [0, 1]; the soft term gets 1 − alpha.
        divergence: ``"kl"`` (forward, Hinton), ``"reverse_kl"`` or ``"js"``.
        transfer: ``"train"`` (labels used with weight alpha) or ``"unlabelled"`` (soft targets only).
        transfer_fraction: a seeded fraction of the training rows to use as the transfer set.
        omit_class: leave this class out of the transfer set, then raise its output bias by the shift
            that maximises validation accuracy (Hinton et al.'s missing-3 experiment).
        transfer_classes: keep only these classes in the transfer set (Hinton et al.'s 7s-and-8s experiment),
            then raise the output biases of every other class together by the one shift that maximises
            validation accuracy (:func:`adjust_missing_class_bias`). Exclusive with ``omit_class``.
        cache_dir: where teacher logits are cached (keyed by content); ``None`` computes them in memory.
        max_grad_norm: gradient-norm clipping, a guard against the divergence of high-T distillation.
            Default 5.0; ``None`` never clips. On Fashion-MNIST a 2x64 student distilled at T = 4
            with lr 0.1 and no clipping collapsed to a constant prediction (finite loss, dead
            ReLUs); clipped at 5.0 it trained normally. Clipping costs a tiny student about a fifth
            of its epoch (docs/performance-distill.md).
        seed: seeds the minibatch order and dropout (as in ``fit``) and the transfer subset.
        teacher_mode: ``"cached"``: the teacher's logits on the transfer set are computed once (and
            cached by content with ``cache_dir``); random augmentation is then refused (the cached
            teacher saw other pixels than the student). ``"online"``: the teacher (an ``nn.Module`` or
            anything :func:`~darkknowledge.teachers.as_teacher` accepts, not precomputed logits) runs
            in ``eval()`` mode under ``torch.no_grad()`` on exactly the (augmented) minibatch the
            student sees, every step -- one teacher forward per step, nothing else. ``"auto"``:
            online when ``augment`` is active, else cached.
        augment: random flips and shifts of each training minibatch (see ``fit``); needs
            ``teacher_mode="online"`` (or ``"auto"``).
        **fit_kwargs: passed to ``darkknowledge.train.fit`` (epochs, batch_size, lr, ``optimizer``
            (``"sgd"``, ``"adamw"``, ``"adam"``, a class or a factory), momentum, ``device``,
            ``out_dir``, ``resume``, ``force``, ...). With ``out_dir``, what defines the distillation --
            a SHA-256 of the teacher's logits on the transfer set, ``temperature``, ``alpha``,
            ``divergence``, ``transfer``, ``transfer_fraction``, ``omit_class`` -- is recorded in the
            checkpoint (``fit``'s ``resume_key``), so ``resume=True`` with another teacher or other
            settings is refused, naming the field.

    Returns:
        ``DistillResult``; the student holds the best-validation weights.

    Raises:
        DistillationDivergedError: the loss became non-finite (the message says which step and what to change).
    """
    temperature = check_positive_finite("temperature", temperature)
    alpha = check_in_range("alpha", alpha, 0.0, 1.0)
    if cache_dir is not None:
        check_path(cache_dir, name="cache_dir")
    check_one_of("divergence", divergence, ("kl", "reverse_kl", "js"))
    check_one_of("transfer", transfer, TRANSFER_KINDS)
    check_one_of("teacher_mode", teacher_mode, TEACHER_MODES)
    augmenter = resolve_augment(augment)
    if teacher_mode == "auto":
        teacher_mode = "online" if augmenter is not None else "cached"
    if teacher_mode == "cached" and augmenter is not None:
        raise InputError(
            "augment must be None with teacher_mode='cached', got a random augmentation instead: cached soft "
            "targets are the teacher's outputs for the unaugmented transfer set (it saw other pixels than the "
            "student); pass teacher_mode='online' to run the teacher on each augmented batch."
        )
    precomputed = isinstance(teacher, torch.Tensor) or (
        not isinstance(teacher, (nn.Module, str, Path, list, tuple)) and hasattr(teacher, "shape")
        and hasattr(teacher, "__getitem__"))
    from darkknowledge.teachers import is_precomputed_logits

    precomputed = precomputed or is_precomputed_logits(teacher)  # an .npy / .safetensors file of logits too
    if teacher_mode == "online" and precomputed:
        raise InputError(
            "teacher must be a model for teacher_mode='online', got precomputed logits instead: they cannot "
            "be recomputed on an augmented batch; pass the teacher module, or use teacher_mode='cached'."
        )

    num_classes = data.num_classes
    first = take_rows(data.X_train, torch.tensor([0]))  # (1, *input_shape) or a dict of (1, ...); X may be a memmap
    if isinstance(first, np.ndarray):
        first = torch.from_numpy(np.array(first))
    student_device = _model_device(student)
    if isinstance(first, dict):
        first = {k: v.to(student_device) for k, v in first.items()}
    else:
        first = first.to(student_device)
    teacher_module: nn.Module | None = None
    if teacher_mode == "online":
        from darkknowledge.teachers import as_teacher

        teacher_module = as_teacher(teacher)
        teacher_device = _model_device(teacher_module)
        was_training = teacher_module.training
        teacher_module.eval()
        with torch.no_grad():
            t_probe = teacher_module(first if teacher_device == student_device else _to(first, teacher_device))
        teacher_module.train(was_training)
        teacher_classes = t_probe.shape[-1]
        logits_all = None
    else:
        logits_all = resolve_teacher_logits(
            teacher, data.X_train, cache_dir=cache_dir, dtype=soft_target_dtype, top_k=top_k
        )  # (N_train, C) raw teacher logits
        teacher_classes = logits_all.shape[1]
    if teacher_classes != num_classes:
        raise InputError(
            f"teacher has {teacher_classes} classes but the data has {num_classes}; "
            "a teacher must predict the same classes as the student."
        )
    was_training = student.training
    with torch.no_grad():
        probe = model_logits(student.eval(), first)
    student.train(was_training)
    if probe.shape[-1] != num_classes:
        raise InputError(f"student has {probe.shape[-1]} outputs but the data has {num_classes} classes.")

    if max_grad_norm is not None:
        max_grad_norm = check_positive_finite("max_grad_norm", max_grad_norm)

    idx = transfer_indices(data.y_train, fraction=transfer_fraction, omit_class=omit_class,
                           transfer_classes=transfer_classes, seed=seed)
    if transfer_classes is not None:
        transfer_classes = _check_transfer_classes(transfer_classes)
        if transfer_classes[-1] >= num_classes:
            raise InputError(f"transfer_classes {transfer_classes} must be class ids below {num_classes}.")
    missing = ([omit_class] if omit_class is not None else
               [c for c in range(num_classes) if c not in transfer_classes] if transfer_classes is not None else [])
    if len(idx) == len(data.y_train):  # the whole training split: no copy (X may be a memmap larger than RAM)
        transfer_data, soft = data, logits_all
    else:
        X_transfer = take_rows(data.X_train, idx) if isinstance(data.X_train, dict) else data.X_train[idx.numpy()]
        transfer_data = replace(data, X_train=X_transfer, y_train=data.y_train[idx])
        # (N_transfer, C); a memory-mapped reader is not loaded, only re-indexed
        if logits_all is None:
            soft = None
        else:
            soft = logits_all[idx].contiguous() if isinstance(logits_all, torch.Tensor) else logits_all.subset(idx)
    use_labels = transfer == "train" and alpha > 0.0

    if use_labels:  # checked once here, so the loss need not check each minibatch
        _check_class_ids(transfer_data.y_train, num_classes)
    step_loss = TrainingDistillationLoss(temperature=temperature, alpha=alpha if use_labels else 0.0,
                                         divergence=divergence)

    if teacher_module is None:
        # rows of a dense tensor by index_select (cheaper per step than soft[index]); a memory-mapped reader by its own indexing
        rows_of = soft.index_select if isinstance(soft, torch.Tensor) else (lambda dim, index: soft[index])

        def loss(logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> LossAndGradient:
            return step_loss.value_and_grad(logits, rows_of(0, index), targets if use_labels else None)
    else:
        loss = _online_loss(teacher_module, step_loss, use_labels)

    if fit_kwargs.get("out_dir") is not None:  # what defines this run, checked by fit on resume (once, at start)
        key = {
            "kind": "distill",
            "teacher_sha256": (content_fingerprint(teacher_logits=soft) if teacher_module is None
                               else _weights_fingerprint(teacher_module)),
            "temperature": float(temperature),
            "alpha": float(alpha),
            "divergence": divergence,
            "transfer": transfer,
            "transfer_fraction": float(transfer_fraction),
            "omit_class": omit_class,
        }
        if transfer_classes is not None:
            key["transfer_classes"] = transfer_classes
        if teacher_module is not None:
            key["teacher_mode"] = "online"
        if fit_kwargs.get("resume_key") is not None:
            key["user"] = dict(fit_kwargs["resume_key"])
        fit_kwargs = dict(fit_kwargs, resume_key=key)

    teacher_was_training = teacher_module is not None and teacher_module.training
    if teacher_module is not None:
        teacher_module.eval()
    try:
        result = fit(student, transfer_data, loss=loss, seed=seed, max_grad_norm=max_grad_norm, augment=augmenter,
                     **fit_kwargs)
    except TrainingDivergedError as exc:
        raise DistillationDivergedError(_diverged_message(exc, temperature, fit_kwargs.get("lr", 0.05))) from exc
    finally:
        if teacher_module is not None:
            teacher_module.train(teacher_was_training)

    bias_shift = None
    if missing and data.X_val is not None:
        bias_shift = adjust_missing_class_bias(student, missing, data.X_val, data.y_val)
    return DistillResult(
        fit=result,
        temperature=temperature,
        alpha=alpha,
        divergence=divergence,
        transfer_size=len(idx),
        bias_shift=bias_shift,
        missing_classes=missing,
        teacher_mode=teacher_mode,
    )


def _to(x: Any, device: torch.device) -> Any:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def _weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a teacher's class and weights (its ``state_dict``): what an online distillation resumes with."""
    state = module.state_dict()
    return content_fingerprint(cls=torch.tensor(list(type(module).__qualname__.encode())),
                               **{f"teacher.{k}": v for k, v in state.items()})


def _online_loss(teacher: nn.Module, step_loss: TrainingDistillationLoss, use_labels: bool) -> Callable[..., LossAndGradient]:
    """The loss of online distillation: the teacher's logits on the very batch the student saw, then the fused loss."""
    teacher_device = _model_device(teacher)

    def loss(logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor, inputs: Any) -> LossAndGradient:
        with torch.no_grad():  # the teacher is in eval() mode (set by distill around fit)
            t = teacher(inputs if logits.device == teacher_device else _to(inputs, teacher_device))  # (B, C)
        t = t.to(device=logits.device, dtype=torch.float32)
        return step_loss.value_and_grad(logits, t, targets if use_labels else None)

    loss.takes_inputs = True  # fit passes the (augmented) minibatch as the fourth argument
    return loss


def sweep(
    make_student: Callable[[], nn.Module],
    teacher_logits: torch.Tensor,
    data: Splits,
    *,
    temperatures: list[float],
    alphas: list[float],
    lrs: list[float] | None = None,
    divergence: str = "kl",
    seed: int = 0,
    **fit_kwargs: Any,
) -> SweepResult:
    """Distil a fresh student for each (temperature, alpha[, lr]) and score it on the validation split.

    The best combination is the one with the lowest validation NLL (nats): on a small validation split
    the NLL ranks recipes more reliably than accuracy, which moves in steps of one sample.
    A combination that diverges is recorded with ``val_accuracy = 0`` and ``diverged = 1`` and never chosen.
    """
    if data.X_val is None:
        raise InputError("sweep needs a validation split (data.X_val is None).")
    if not temperatures or not alphas:
        raise InputError("sweep needs at least one temperature and one alpha.")
    lr_grid = list(lrs) if lrs else [fit_kwargs.pop("lr", 0.05)]
    fit_kwargs.pop("lr", None)
    fit_kwargs["progress"] = False
    result = SweepResult()
    for temperature, alpha, lr in itertools.product(temperatures, alphas, lr_grid):
        student = make_student()
        row = {"temperature": float(temperature), "alpha": float(alpha), "lr": float(lr)}
        try:
            distill(
                student, teacher_logits, data, temperature=temperature, alpha=alpha,
                divergence=divergence, seed=seed, lr=lr, **fit_kwargs,
            )
            val_loss, val_acc = evaluate_loss_accuracy(student, data.X_val, data.y_val)
            row.update(val_accuracy=float(val_acc), val_nll=float(val_loss), diverged=0.0)
        except DistillationDivergedError:
            row.update(val_accuracy=0.0, val_nll=math.inf, diverged=1.0)
        result.rows.append(row)
    ok = [r for r in result.rows if not r["diverged"]]
    if ok:
        result.best = min(ok, key=lambda r: (r["val_nll"], -r["val_accuracy"]))
    return result
