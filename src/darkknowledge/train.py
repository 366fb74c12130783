"""The training loop of the notes: shuffled minibatch SGD with momentum (or Adam, AdamW, any torch
optimizer), weight decay, a learning-rate schedule, early stopping that keeps the best-validation
weights, checkpoints and resume.

One function, :func:`fit`, reads top to bottom::

    for epoch in 1..epochs:                       # one pass over a fresh permutation of the data
        for idx in minibatches(N):                #   (B,) row indices
            loss = loss_fn(model(X[idx]), y[idx], idx)   #   model(**X[idx]) for a dict of inputs
            stop if loss is not finite            #   TrainingDivergedError names epoch, step, lr
            w <- optimizer step (weight decay on weights only), lr <- schedule
        evaluate on the validation split          # model.eval(), torch.no_grad()
        keep a copy of the weights at a new low of the validation loss
        log one JSON line, write a checkpoint     # when out_dir is given
        stop when the validation loss has not improved for `early_stopping_patience` epochs
    restore the best weights

Weight decay is the notes' L2 penalty :math:`\\lambda \\lVert w \\rVert^2` on the weights
(not biases nor normalisation parameters): the gradient gains :math:`2\\lambda w`, and plain
SGD becomes :math:`w \\leftarrow (1 - 2\\eta\\lambda) w - \\eta \\nabla L`. With torch's SGD that
is ``weight_decay = 2 * lambda`` on the group of parameters with ``ndim >= 2``.

Losses: ``"cross_entropy"`` (integer class labels, ``(N, C)`` logits), ``"mse"`` (regression:
float targets; the Gaussian maximum-likelihood fit), ``"bce"`` (binary labels, one logit), or a
callable ``loss(logits, targets, index) -> scalar`` where ``index`` is the ``(B,)`` int64 tensor
of the minibatch's rows in ``data.X_train`` (on the training device) -- how distillation looks
up cached teacher logits. The validation loss is always the plain named loss (cross-entropy
for a callable), so early stopping means the same thing for a student as for a teacher.

All losses are means over the minibatch, in nats.

Data-parallel (``torchrun``, see :mod:`darkknowledge.distributed`): when a process group is
initialised, ``fit`` wraps the model in ``DistributedDataParallel``; every rank draws the same
permutation from ``seed`` and takes the strided share ``idx[rank::world_size]`` of each global
minibatch of ``batch_size`` rows. Each rank's mean loss is weighted by ``b_r * world_size / B``
before DDP averages the gradients, so the step is the gradient of the *global* minibatch mean,
exactly as in one process (up to float rounding), even for an uneven last batch. A callable
loss must therefore be a mean over its rows. Training metrics are summed over ranks; every
rank evaluates the (small) validation split itself; only rank 0 writes the run folder and
shows the progress bar.

Large data: ``data.X_train`` may be a read-only ``np.memmap`` opened with
``np.load(path, mmap_mode="r")``: each minibatch is gathered as
``torch.from_numpy(X[np.sort(idx)])`` (sorted for sequential reads), so the whole of ``X`` is
never copied into memory.

Run folder (``out_dir``)::

    config.json                   the resolved configuration (every fit argument but callables, model spec)
    log.jsonl                     one line per epoch: epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds
    checkpoint/last.safetensors   the full training state after the last complete epoch (for resume)
    model.safetensors, model.json the final (best) weights: darkknowledge.checkpoint.load_model(out_dir)

Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), sec. 7.1 (weight decay),
7.8 (early stopping), 8.3 (SGD and momentum); Sutskever et al., *On the importance of
initialization and momentum in deep learning* (2013).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from darkknowledge.augment import ImageAugment, resolve_augment
from darkknowledge._checks import MAX_LR, check_in_range, check_one_of, check_positive_finite, check_positive_int
from darkknowledge.checkpoint import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    CheckpointError,
    atomic_write_json,
    atomic_write_text,
    load_training_state,
    pack_tensors,
    save_model,
    save_training_state,
    unpack_tensors,
)
from darkknowledge.losses import LossAndGradient
from darkknowledge.data.batches import gather_rows, minibatches, num_batches, num_rows, take_rows
from darkknowledge.distributed import (
    all_reduce_sum,
    barrier,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    rank_share,
    resolve_device,
)
from darkknowledge.rundir import check_path, claim_run_dir
from darkknowledge.schedules import LR_SCHEDULES, build_scheduler
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "LOSS_NAMES",
    "apply_max_norm",
    "max_norm_weights",
    "FitResult",
    "ResumeMismatchError",
    "TrainingDivergedError",
    "content_fingerprint",
    "data_fingerprint",
    "evaluate_loss_accuracy",
    "fit",
    "make_optimizer",
    "model_logits",
    "OPTIMIZER_NAMES",
    "predict_logits",
]

#: The valid loss names of :func:`fit` (or pass a callable).
LOSS_NAMES: tuple[str, ...] = ("cross_entropy", "mse", "bce")

#: The optimizers :func:`fit` knows by name (or pass a ``torch.optim.Optimizer`` subclass or a factory).
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "adamw", "adam")

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | LossAndGradient"]

_CHECKPOINT = Path("checkpoint") / "last.safetensors"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# fit arguments that may change between an interrupted run and its resumption
_RESUME_FREE = {"resume", "force", "progress", "log_every", "out_dir", "device", "world_size"}
# what a differing field of the run's definition means, for the refusal of a resume
_RESUME_HINTS = {
    "data.sha256": "the training or validation data differ: another data set, split, split_seed or preprocessing",
    "run.teacher_sha256": "another teacher: its logits on the transfer set differ",
}


class TrainingDivergedError(InputError):
    """The training loss became NaN or infinite; the message names the epoch, step and learning rate."""


class ResumeMismatchError(CheckpointError):
    """``resume`` was asked with settings or data other than the interrupted run's; the message names the field."""


@dataclass
class FitResult:
    """What :func:`fit` returns (the model itself is trained in place).

    Attributes:
        history: one dict per epoch: ``epoch`` (1-based), ``loss`` and ``accuracy`` (training
            minibatches, in training mode), ``val_loss``, ``val_accuracy`` (``None`` without a
            validation split; accuracies ``None`` for ``"mse"``), ``lr`` (of the epoch's last step),
            ``seconds``.
        best_epoch: epoch whose weights the model holds (lowest validation loss; the last
            epoch without validation data).
        best_val_loss, best_val_accuracy: validation metrics of ``best_epoch`` (``None`` without validation).
        train_seconds: wall time of all epochs (including those before a resume).
        epochs_run: epochs completed.
        stopped_early: whether early stopping ended the run before ``epochs``.
        out_dir: the run folder, if any.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float | None = None
    best_val_accuracy: float | None = None
    train_seconds: float = 0.0
    epochs_run: int = 0
    stopped_early: bool = False
    out_dir: str | None = None

    def metadata(self) -> dict[str, Any]:
        """What ``fit`` records in the run folder's ``model.json`` (``metadata``) beside the weights."""
        return {"best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss,
                "best_val_accuracy": self.best_val_accuracy, "epochs_run": self.epochs_run,
                "stopped_early": self.stopped_early}


# ----------------------------------------------------------------------------- losses and metrics


def _match(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    # (N, 1) outputs against (N,) targets (or the reverse): same numbers, one shape.
    if out.shape == y.shape:
        return out
    if out.numel() == y.numel():
        return out.reshape(y.shape)
    raise InputError(
        f"model output of shape {tuple(out.shape)} does not fit targets of shape {tuple(y.shape)} "
        f"for loss {loss!r}."
    )


def _loss_sum(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Summed (not mean) named loss, in nats (squared units for mse)."""
    if loss == "cross_entropy":
        return F.cross_entropy(out, y, reduction="sum")
    if loss == "mse":
        return F.mse_loss(_match(out, y, loss), y.to(out.dtype), reduction="sum")
    return F.binary_cross_entropy_with_logits(_match(out, y, loss), y.to(out.dtype), reduction="sum")


def _num_correct(out: torch.Tensor, y: torch.Tensor, loss: str) -> int | None:
    if loss == "mse":
        return None
    if loss == "bce":
        return int(((_match(out, y, loss) > 0) == (y > 0.5)).sum())
    if out.dim() != 2 or y.dim() != 1 or y.is_floating_point():
        return None
    return int((out.argmax(dim=1) == y).sum())


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _logits_of(out: Any) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself, a dict's / ``ModelOutput``'s ``"logits"``, a tuple's first."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):  # a dict, or a Hugging Face ModelOutput (an OrderedDict)
        if "logits" not in out:
            raise InputError(f"model returned a dict without 'logits', expected logits, got keys {sorted(out)} instead.")
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputTypeError(
        f"model must return a logits tensor, a tuple (logits first) or a dict with 'logits', "
        f"got {type(out).__name__} instead."
    )


def model_logits(model: Callable[..., Any], xb: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``model(**xb)`` for a dict batch (text models: ``input_ids``, ``attention_mask``, ...), else ``model(xb)``; the logits.

    The output may be a tensor, a tuple / list (the first element), a dict or a Hugging Face
    ``ModelOutput`` (its ``"logits"``).

    Args:
        model: any callable module.
        xb: ``(B, *input_shape)`` tensor or ``{name: (B, ...) tensor}``.

    Returns:
        ``(B, C)`` logits (or ``(B,)``), as the model computed them.

    Example:
        >>> class M(torch.nn.Module):
        ...     def forward(self, input_ids, attention_mask):
        ...         return {"logits": (input_ids * attention_mask).float()}
        >>> model_logits(M(), {"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3)}).shape
        torch.Size([2, 3])
    """
    out = model(**xb) if isinstance(xb, Mapping) else model(xb)
    return out if isinstance(out, torch.Tensor) else _logits_of(out)


def _to_device(X: Any, device: torch.device) -> Any:
    if isinstance(X, Mapping):
        return {k: v.to(device) for k, v in X.items()}
    return X.to(device)


def _slice_rows(X: Any, start: int, stop: int) -> Any:
    if isinstance(X, Mapping):
        return {k: v[start:stop] for k, v in X.items()}
    return X[start:stop]


def predict_logits(model: nn.Module, X: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs for every row of ``X``, in ``eval()`` mode under ``torch.no_grad()``.

    Runs in chunks of ``batch_size`` rows on the model's device; the model's train/eval mode
    is restored afterwards.

    Args:
        model: maps ``(B, *input_shape)`` to ``(B, C)`` logits (or ``(B,)``).
        X: ``(N, *input_shape)`` inputs, or a dict of ``(N, ...)`` tensors (``model(**batch)``).

    Returns:
        ``(N, C)`` (or ``(N,)``) logits on ``X``'s device (a dict's first tensor's).

    Example:
        >>> m = torch.nn.Linear(3, 2)
        >>> predict_logits(m, torch.zeros(5, 3), batch_size=2).shape
        torch.Size([5, 2])
    """
    if isinstance(X, Mapping):
        if not X or not all(isinstance(v, torch.Tensor) for v in X.values()):
            raise InputTypeError("X as a dict must map names to tensors of equal length, got "
                                 f"{ {k: type(v).__name__ for k, v in X.items()} } instead.")
        home = next(iter(X.values())).device
    elif isinstance(X, torch.Tensor):
        home = X.device
    else:
        raise InputTypeError(f"X must be a torch.Tensor or a dict of tensors, got {type(X).__name__} instead.")
    check_positive_int("batch_size", batch_size)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            chunks = [model_logits(model, _to_device(_slice_rows(X, i, i + batch_size), device)).to(home)
                      for i in range(0, num_rows(X), batch_size)]
    finally:
        model.train(was_training)
    if not chunks:
        raise InputError("X must have at least one row, got 0 instead.")
    return torch.cat(chunks)  # (N, C)


def evaluate_loss_accuracy(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1024,
    loss: str = "cross_entropy",
) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``model`` on ``(X, y)``, in ``eval()`` mode under ``no_grad``.

    Args:
        X: ``(N, *input_shape)`` inputs (or a dict of ``(N, ...)`` tensors); y: ``(N,)`` targets (class ids, 0/1 for ``"bce"``,
            floats for ``"mse"``).
        loss: one of :data:`LOSS_NAMES`.

    Returns:
        ``(mean loss in nats, fraction correct)``; the accuracy is ``None`` for ``"mse"``.

    Example:
        >>> m = torch.nn.Linear(2, 2, bias=False)
        >>> _ = m.weight.data.copy_(torch.eye(2))
        >>> loss, acc = evaluate_loss_accuracy(m, torch.eye(2), torch.tensor([0, 1]))
        >>> round(loss, 4), acc  # -log(e / (e + 1))
        (0.3133, 1.0)
    """
    check_one_of("loss", loss, LOSS_NAMES)
    n = num_rows(X) if isinstance(X, (Mapping, torch.Tensor)) else len(X)
    if not isinstance(y, torch.Tensor) or len(y) != n:
        raise InputError(f"y must be a tensor with one target per row of X ({n}), got {_describe(y)} instead.")
    out = predict_logits(model, X, batch_size=batch_size)
    y = y.to(out.device)
    with torch.no_grad():
        total = float(_loss_sum(out.double(), y, loss))
    correct = _num_correct(out, y, loss)
    return total / n, (None if correct is None else correct / n)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__


# ----------------------------------------------------------------------------- optimizer


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("model has no trainable parameters (none with requires_grad=True).")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        {"params": ps, "weight_decay": wd}
        for ps, wd in ((decay, 2.0 * weight_decay), (no_decay, 0.0))
        if ps
    ]


def _optimizer_label(optimizer: Any) -> str:
    """How the config records the optimizer (a resume with another one is refused)."""
    if isinstance(optimizer, str):
        return optimizer
    if isinstance(optimizer, type):
        return f"class:{optimizer.__module__}.{optimizer.__qualname__}"
    return f"callable:{getattr(optimizer, '__qualname__', type(optimizer).__name__)}"


def _check_optimizer(optimizer: Any) -> None:
    if isinstance(optimizer, str):
        check_one_of("optimizer", optimizer, OPTIMIZER_NAMES)
    elif isinstance(optimizer, type):
        if not issubclass(optimizer, torch.optim.Optimizer):
            raise InputTypeError(
                f"optimizer must be one of {list(OPTIMIZER_NAMES)}, a torch.optim.Optimizer subclass or a callable "
                f"params -> optimizer, got the class {optimizer.__name__} instead."
            )
    elif not callable(optimizer) or isinstance(optimizer, torch.optim.Optimizer):
        raise InputTypeError(
            f"optimizer must be one of {list(OPTIMIZER_NAMES)}, a torch.optim.Optimizer subclass or a callable "
            f"params -> optimizer, got {type(optimizer).__name__} instead"
            + (" (pass the class or a factory: fit builds the optimizer over the model's parameters)."
               if isinstance(optimizer, torch.optim.Optimizer) else ".")
        )


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    optimizer: str | type[torch.optim.Optimizer] | Callable[[list[dict[str, Any]]], torch.optim.Optimizer] = "sgd",
) -> torch.optim.Optimizer:
    """An optimizer whose weight decay is the L2 penalty ``weight_decay * ||w||^2`` on the weights only.

    Two parameter groups: weights (``ndim >= 2``: linear and convolution kernels) with torch's
    ``weight_decay = 2 * weight_decay``, and biases / normalisation parameters without. So
    one plain SGD step (momentum 0) is ``w <- (1 - 2 lr weight_decay) w - lr grad``.

    Args:
        optimizer: ``"sgd"`` (with ``momentum``, ``nesterov``), ``"adam"`` (torch's coupled L2:
            the penalty's gradient ``2 weight_decay w`` joins the loss's), ``"adamw"`` (decoupled:
            each step shrinks the weights by ``1 - 2 lr weight_decay``, as plain SGD's penalty does),
            any ``torch.optim.Optimizer`` subclass (called as ``cls(groups, lr=lr)``; its own
            defaults otherwise), or a factory ``groups -> optimizer`` that receives the two groups
            above and returns an optimizer: the factory's ``lr`` is used, not ``lr``.

    >>> opt = make_optimizer(torch.nn.Linear(2, 1), lr=0.1, weight_decay=0.01)
    >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    [(1, 0.02), (1, 0.0)]
    >>> type(make_optimizer(torch.nn.Linear(2, 1), lr=1e-3, optimizer="adamw")).__name__
    'AdamW'
    """
    _check_optimizer(optimizer)
    groups = _param_groups(model, weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if momentum or nesterov:
        raise InputError(
            f"momentum and nesterov apply only to optimizer='sgd', got momentum={momentum!r}, "
            f"nesterov={nesterov!r} with optimizer {_optimizer_label(optimizer)!r} instead; leave them unset."
        )
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if isinstance(optimizer, type):
        return optimizer(groups, lr=lr)
    built = optimizer(groups)
    if not isinstance(built, torch.optim.Optimizer):
        raise InputTypeError(
            f"the optimizer factory must return a torch.optim.Optimizer, got {type(built).__name__} instead."
        )
    return built


# ----------------------------------------------------------------------------- fit


def _check_data(data: Any) -> None:
    X_train = getattr(data, "X_train", None)
    if isinstance(X_train, Mapping):  # text models: {"input_ids": (N, L), "attention_mask": (N, L), ...}
        if not X_train or not all(isinstance(v, torch.Tensor) and v.ndim >= 1 for v in X_train.values()):
            raise InputTypeError(
                "data.X_train as a dict must map names to (N, ...) tensors, got "
                f"{ {k: _describe(v) for k, v in X_train.items()} } instead."
            )
        lengths = {k: len(v) for k, v in X_train.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"data.X_train's tensors must have the same number of rows, got {lengths} instead.")
    elif isinstance(X_train, np.memmap):
        if X_train.ndim < 2 or X_train.dtype.kind != "f":
            raise InputTypeError(
                f"data.X_train as a numpy.memmap must be floating point with shape (N, ...), "
                f"got dtype {X_train.dtype} and shape {X_train.shape} instead."
            )
    elif not isinstance(X_train, torch.Tensor):
        raise InputTypeError(
            f"data.X_train must be a torch.Tensor (data must be a darkknowledge.data Splits), "
            f"got {_describe(X_train)} instead; a NumPy array is accepted only as a memory map "
            "(np.load(path, mmap_mode='r'))."
        )
    if not isinstance(getattr(data, "y_train", None), torch.Tensor):
        raise InputTypeError(
            f"data.y_train must be a torch.Tensor (data must be a darkknowledge.data Splits), "
            f"got {_describe(getattr(data, 'y_train', None))} instead."
        )
    if num_rows(data.X_train) != len(data.y_train) or num_rows(data.X_train) == 0:
        raise InputError(
            f"data.X_train and data.y_train must have the same number (> 0) of rows, "
            f"got {num_rows(data.X_train)} and {len(data.y_train)} instead."
        )
    X_val, y_val = getattr(data, "X_val", None), getattr(data, "y_val", None)
    if (X_val is None) != (y_val is None) or (X_val is not None and num_rows(X_val) != len(y_val)):
        raise InputError(
            f"data.X_val and data.y_val must both be None or have the same number of rows, "
            f"got {_describe(X_val)} and {_describe(y_val)} instead."
        )


def _torch_dtype(X: torch.Tensor | np.ndarray) -> torch.dtype:
    return X.dtype if isinstance(X, torch.Tensor) else torch.from_numpy(np.empty(0, dtype=X.dtype)).dtype


def _gather_rows(X: torch.Tensor | np.ndarray | dict, idx: torch.Tensor, device: torch.device) -> Any:
    """Rows ``X[idx]`` on ``device``; a NumPy array (memmap) is read in sorted row order, never whole."""
    if isinstance(X, torch.Tensor):
        return X[idx]  # (B, *input_shape)
    if isinstance(X, Mapping):  # {name: (B, ...)} on the device X was moved to
        return take_rows(X, idx)
    order = idx.cpu().numpy()
    sorted_rows = np.sort(order)  # sequential reads from the file
    block = torch.from_numpy(gather_rows(X, sorted_rows))  # (B, *input_shape), a copy of B rows
    inverse = torch.from_numpy(np.searchsorted(sorted_rows, order))  # positions of idx in the sorted rows
    return block[inverse].to(device)


def clip_grad_norm(parameters: list[torch.Tensor], max_norm: float) -> None:
    r"""Scale the gradients in place so that their global 2-norm is at most ``max_norm``.

    The rule of ``torch.nn.utils.clip_grad_norm_``: with :math:`\lVert g \rVert_2` over all
    gradients together, multiply each by :math:`\min(1, \text{max\_norm} / (\lVert g \rVert_2 + 10^{-6}))`.
    Written with the foreach kernels: on a small model the library function's bookkeeping costs
    several times the arithmetic. On the CPU the norm is read on the host and the gradients are
    only touched when they must shrink; on a GPU the factor stays on the device (no host
    synchronisation per step), as in torch.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # () global 2-norm
    if total.device.type != "cpu":
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return
    coef = max_norm / (float(total) + 1e-6)
    if coef < 1.0:  # most steps of a healthy run are under the norm: nothing to scale (a NaN norm stays NaN)
        torch._foreach_mul_(grads, coef)


def max_norm_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights a max-norm constraint applies to: every ``nn.Linear`` / ``nn.Conv1d/2d/3d`` weight but the output layer's.

    The output layer is the last ``nn.Linear`` in module order (Srivastava et al. constrain the
    incoming weights of *hidden* units). Frozen weights (``requires_grad=False``) are left alone.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    output = linears[-1] if linears else None
    return [m.weight for m in layers if m is not output and m.weight.requires_grad]


@torch.no_grad()
def apply_max_norm(weights: list[torch.Tensor], max_norm: float) -> None:
    r"""Rescale in place every unit's incoming weight vector whose 2-norm exceeds ``max_norm``.

    For a weight :math:`W` of shape ``(out, *fan_in)`` each row :math:`w_j` (flattened) becomes
    :math:`w_j \cdot \min(1, c / \lVert w_j \rVert_2)`: the projection onto the ball of radius :math:`c`
    (Srivastava et al. 2014, section 5.1). Rows already inside the ball are unchanged bit for bit.
    """
    for w in weights:
        norms = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1)  # (out,)
        over = norms > max_norm
        if bool(over.any()):
            scale = torch.where(over, max_norm / norms, torch.ones_like(norms))  # (out,)
            w.mul_(scale.reshape(-1, *([1] * (w.dim() - 1))))


def _resolve_loss(loss: str | LossFn) -> tuple[str, LossFn, str]:
    """(name of the validation loss, training loss callable, name stored in the config)."""
    if callable(loss):
        return "cross_entropy", loss, f"callable:{getattr(loss, '__qualname__', type(loss).__name__)}"
    check_one_of("loss", loss, LOSS_NAMES)

    def named(out: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return _loss_sum(out, y, loss) / len(y)

    return loss, named, loss


def _targets(y: torch.Tensor, loss: str, name: str) -> torch.Tensor:
    if loss == "cross_entropy":
        if y.is_floating_point() or y.dtype == torch.bool:
            raise InputTypeError(f"{name} must hold integer class ids for cross-entropy, got dtype {y.dtype} instead.")
        return y.long()  # int32 -> int64 is exact
    return y


def fit(
    model: nn.Module,
    data: Any,
    *,
    loss: str | LossFn = "cross_entropy",
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 0.05,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    optimizer: str | type[torch.optim.Optimizer] | Callable[[list[dict[str, Any]]], torch.optim.Optimizer] = "sgd",
    lr_schedule: str = "cosine",
    warmup_epochs: int = 0,
    early_stopping_patience: int | None = None,
    restore_best: bool = True,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    resume_key: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    log_every: int = 10,
    device: str | torch.device | None = None,
    amp: bool = False,
    max_grad_norm: float | None = None,
    max_norm: float | None = None,
    augment: ImageAugment | Mapping[str, Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data`` with minibatch SGD (or Adam, AdamW, ...); return the history and the best epoch.

    Args:
        model: any ``nn.Module`` mapping ``(B, *input_shape)`` to outputs; if it carries a
            ``spec`` (from :func:`~darkknowledge.models.build_model`) the spec is saved in
            ``out_dir`` so :func:`~darkknowledge.checkpoint.load_model` can rebuild it.
        data: a :class:`~darkknowledge.data._types.Splits` (``X_train``, ``y_train``, optional
            ``X_val``, ``y_val``); the features' dtype must match the model's. ``X_train`` may
            also be a read-only ``np.memmap``: minibatches are gathered from it
            row by row, never copying the whole array. ``X_train`` / ``X_val`` may be a dict of
            equal-length tensors (text models: ``input_ids``, ``attention_mask``, ...): each
            minibatch is then passed as ``model(**batch)``. A model may return a tensor, a tuple
            (logits first), a dict or a Hugging Face ``ModelOutput`` (its ``logits``): see :func:`model_logits`.
        loss: ``"cross_entropy"``, ``"mse"``, ``"bce"`` or a callable ``(logits, targets, index) -> scalar``
            (``index``: the ``(B,)`` int64 rows of ``data.X_train`` in the minibatch, on ``device``).
            The callable may instead return a :class:`~darkknowledge.losses.LossAndGradient`
            (the loss and its gradient with respect to the logits): backpropagation then starts
            at the logits, with no graph built for the loss. A callable with an attribute
            ``takes_inputs = True`` is called as ``loss(logits, targets, index, inputs)`` with the
            minibatch the model saw (after augmentation): how an online teacher sees the same batch.
        epochs: passes over the training data.
        batch_size: rows per minibatch (the last one of an epoch may be smaller).
        lr: base (peak) learning rate :math:`\\eta` (a factory ``optimizer``'s own lr wins).
        momentum: heavy-ball momentum in ``[0, 1)`` (``None``: 0.9); ``nesterov``: Nesterov's variant
            (needs momentum > 0). SGD only: either with another optimizer is an error.
        optimizer: ``"sgd"`` (the default), ``"adamw"``, ``"adam"``, a ``torch.optim.Optimizer``
            subclass (called as ``cls(groups, lr=lr)``) or a factory ``groups -> optimizer``; the
            groups split weights (``weight_decay``) from biases, see :func:`make_optimizer`. The
            schedule scales whatever lr the optimizer starts with; a resume with another optimizer
            is refused.
        weight_decay: :math:`\\lambda` of the penalty :math:`\\lambda\\lVert w\\rVert^2` on weights (not biases).
        lr_schedule: ``"constant"``, ``"cosine"`` (to 0 at the end) or ``"onecycle"``, stepped per minibatch.
        warmup_epochs: epochs of linear warm-up (``< epochs``).
        early_stopping_patience: stop after this many epochs without a new lowest validation
            loss (``None``: run all epochs). Needs a validation split.
        restore_best: with a validation split, end with the weights of the lowest validation loss.
        seed: seeds ``fit``'s own minibatch ``torch.Generator`` and, for dropout, the global
            torch RNG inside ``torch.random.fork_rng``: the caller's global RNG state is the same
            after ``fit`` as before; the model's initialisation is seeded where it is built
            (``build_model(..., seed=...)``). Same seed, same run, bit for bit on the CPU.
        out_dir: run folder for ``config.json``, ``log.jsonl``, the resume checkpoint and the final model.
            It must be new, empty or a darkknowledge training run folder (``""`` is an error); it is
            locked while the run lasts (see :mod:`darkknowledge.rundir`).
        resume: continue from ``out_dir``'s last complete checkpoint (a fresh start if there is
            none); the other arguments must equal the interrupted run's (``device``,
            ``progress``, ``log_every`` excepted), and so must the data (a SHA-256 of the
            training and validation splits) and ``resume_key``. The result equals an
            uninterrupted run's.
        force: start over in an ``out_dir`` that holds a checkpoint (interrupted or finished), or
            write into a folder that is not a darkknowledge run folder. Without it such a folder
            is refused; ``force`` with ``resume`` is an error.
        resume_key: JSON values that also define the run (``distill`` passes the teacher's
            fingerprint and its loss settings); recorded in the checkpoint and compared on resume.
        progress: a tqdm bar per epoch; ``None``: only when stderr is a terminal.
        log_every: steps between updates of the bar's running loss.
        device: where the model and data live during training: ``None`` (the default: where the
            model's parameters already are, so a model on a GPU stays there), ``"cpu"``, ``"cuda"``
            (``cuda:<LOCAL_RANK>`` under torchrun), ``"auto"`` (CUDA when available), or a
            ``torch.device``; ``"cuda"`` without a GPU is a ``ValueError``.
        amp: mixed precision -- the forward pass under ``torch.autocast(dtype=torch.bfloat16)``
            (CPU or CUDA); the loss is computed from the outputs cast back to float32.
        max_grad_norm: clip the global gradient 2-norm to this before each step (``None``: no clipping).
        max_norm: the max-norm constraint :math:`c` of Srivastava et al. (2014), Hinton's MNIST teacher
            recipe: after every step each hidden unit's incoming weight vector (a row of an ``nn.Linear``
            weight, a filter of an ``nn.Conv*``) is rescaled to 2-norm :math:`\\le c`; the output layer
            (the last ``nn.Linear``) and biases are not constrained (``None``: no constraint). See
            :func:`apply_max_norm`.
        augment: random flips and shifts of each training minibatch of images, an
            :class:`~darkknowledge.augment.ImageAugment` or its dict form ``{"hflip": True, "shift": 2}``
            (``None``: none). Drawn from the run's generator: reproducible and resumable.
        on_epoch_end: called as ``on_epoch_end(epoch, metrics)`` after each epoch's checkpoint
            is written; an exception raised there interrupts the run (it can be resumed).

    Returns:
        A :class:`FitResult`; the model holds the best (or last) weights, in ``eval()`` mode.

    Raises:
        TrainingDivergedError: the training loss became NaN or infinite (names epoch, step, lr).
        RunFolderError: ``out_dir`` cannot be used (not empty, holds a checkpoint, a link inside, in use).
        CheckpointError: the checkpoint to resume is corrupt or malformed (``ResumeMismatchError``:
            it belongs to another configuration, data or teacher; the field is named).
        ValueError / TypeError: invalid arguments or data.

    Example:
        >>> from darkknowledge.data._types import Splits
        >>> from darkknowledge.models import build_model
        >>> X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        >>> y = (X[:, 0] > 0).long()
        >>> model = build_model("softmax-regression", input_shape=(2,), num_classes=2, seed=0)
        >>> result = fit(model, Splits(X, y, X, y), epochs=5, batch_size=16, lr=0.5)
        >>> result.epochs_run, result.best_val_accuracy > 0.9
        (5, True)
    """
    # --- validate and resolve the configuration (one place for every setting)
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__} instead.")
    _check_data(data)
    val_loss_name, loss_fn, loss_label = _resolve_loss(loss)
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_positive_finite("lr", lr)
    if lr > MAX_LR:  # torch casts lr to the weights' dtype: 1e300 is inf in float32, far earlier nonsense
        raise InputError(f"lr must be at most {MAX_LR:g} (a step that large only diverges), got {lr!r} instead.")
    _check_optimizer(optimizer)
    if optimizer != "sgd":  # momentum and nesterov are SGD's; Adam's betas go through a class or a factory
        if momentum is not None or nesterov:
            raise InputError(
                f"momentum and nesterov apply only to optimizer='sgd', got momentum={momentum!r}, "
                f"nesterov={nesterov!r} with optimizer {_optimizer_label(optimizer)!r} instead; leave them unset."
            )
    else:
        momentum = check_in_range("momentum", 0.9 if momentum is None else momentum, 0.0, 1.0)
        if momentum == 1.0:
            raise InputError(f"momentum must be in [0, 1), got {momentum!r} instead.")
        if nesterov and momentum == 0:
            raise InputError("nesterov=True needs momentum > 0, got momentum=0.0 instead.")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise InputTypeError(f"weight_decay must be a number, got {type(weight_decay).__name__} instead.")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise InputError(f"weight_decay must be a finite number >= 0, got {weight_decay!r} instead.")
    check_one_of("lr_schedule", lr_schedule, LR_SCHEDULES)
    check_positive_int("warmup_epochs", warmup_epochs, minimum=0)
    if warmup_epochs and warmup_epochs >= epochs:
        raise InputError(f"warmup_epochs must be < epochs={epochs}, got {warmup_epochs} instead.")
    has_val = getattr(data, "X_val", None) is not None and num_rows(data.X_val) > 0
    if early_stopping_patience is not None:
        check_positive_int("early_stopping_patience", early_stopping_patience)
        if not has_val:
            raise InputError(
                "early_stopping_patience needs a validation split, but data.X_val is empty or None; "
                "pass early_stopping_patience=None or add validation data."
            )
    check_positive_int("seed", seed, minimum=0)
    check_positive_int("log_every", log_every)
    if max_grad_norm is not None:
        check_positive_finite("max_grad_norm", max_grad_norm)
    if max_norm is not None:
        check_positive_finite("max_norm", max_norm)
    augmenter = resolve_augment(augment)
    dict_input = isinstance(data.X_train, Mapping)
    if augmenter is not None:
        if dict_input:
            raise InputError("augment needs image tensors, got a dict of inputs (data.X_train) instead; "
                             "set augment to None.")
        augmenter.check_input_shape(tuple(data.X_train.shape[1:]))
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise InputTypeError(f"on_epoch_end must be callable or None, got {type(on_epoch_end).__name__} instead.")
    if not isinstance(amp, bool):
        raise InputTypeError(f"amp must be a bool, got {type(amp).__name__} instead.")
    if resume and force:
        raise InputError("resume=True and force=True contradict each other: resume continues the run in out_dir, "
                         "force starts it over; pass one of them.")
    if resume_key is not None and not isinstance(resume_key, Mapping):
        raise InputTypeError(f"resume_key must be a mapping or None, got {type(resume_key).__name__} instead.")
    run = check_path(out_dir) if out_dir is not None else None
    if progress is None:
        progress = sys.stderr.isatty()
    device = _model_device(model) if device is None else resolve_device(device)
    world, rank = get_world_size(), get_rank()
    main = is_main_process()
    progress = bool(progress) and main  # only rank 0 shows a bar

    spec = getattr(model, "spec", None)
    config: dict[str, Any] = {
        "loss": loss_label,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": float(lr),
        "optimizer": _optimizer_label(optimizer),
        "momentum": momentum,
        "nesterov": bool(nesterov),
        "weight_decay": float(weight_decay),
        "lr_schedule": lr_schedule,
        "warmup_epochs": warmup_epochs,
        "early_stopping_patience": early_stopping_patience,
        "restore_best": bool(restore_best),
        "seed": seed,
        "max_grad_norm": None if max_grad_norm is None else float(max_grad_norm),
        "max_norm": None if max_norm is None else float(max_norm),
        "augment": None if augmenter is None else augmenter.to_dict(),
        "model_spec": spec.to_dict() if hasattr(spec, "to_dict") else None,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "data": {
            "n_train": num_rows(data.X_train),
            "n_val": num_rows(data.X_val) if has_val else 0,
            "input_shape": ({k: list(v.shape[1:]) for k, v in data.X_train.items()} if dict_input
                            else list(data.X_train.shape[1:])),
            "sha256": data_fingerprint(data) if run is not None else None,
        },
        "run": None if resume_key is None else json.loads(json.dumps(dict(resume_key), allow_nan=False)),
        "device": str(device),
        "amp": amp,
        "world_size": world,
        "out_dir": None if out_dir is None else str(out_dir),
        "resume": bool(resume),
        "progress": bool(progress),
        "log_every": log_every,
    }

    # --- check the dtypes agree; data and model on the device
    param = next(iter(model.parameters()), None)
    x_dtype = None if dict_input else _torch_dtype(data.X_train)
    if param is not None and x_dtype is not None and x_dtype.is_floating_point and param.dtype != x_dtype:
        raise InputTypeError(
            f"data.X_train is {x_dtype} but the model's parameters are {param.dtype}; "
            "convert one to the other (e.g. model.double() or X.float())."
        )
    # a callable loss gets the training targets as they are; named losses get them checked
    y = data.y_train if callable(loss) else _targets(data.y_train, val_loss_name, "data.y_train")
    y_val = _targets(data.y_val, val_loss_name, "data.y_val") if has_val else None
    model.to(device)
    # a NumPy X_train (e.g. a memmap) stays where it is; minibatches are gathered from it
    X = _to_device(data.X_train, device) if isinstance(data.X_train, (torch.Tensor, Mapping)) else data.X_train  # (N, *input_shape)
    y = y.to(device)  # (N,)
    X_val = _to_device(data.X_val, device) if has_val else None
    y_val = y_val.to(device) if has_val else None

    n = num_rows(X) if dict_input else len(X)
    steps_per_epoch = num_batches(n, batch_size=batch_size)
    opt_spec = optimizer
    optimizer = make_optimizer(model, lr=lr, momentum=momentum or 0.0, nesterov=nesterov, weight_decay=weight_decay,
                               optimizer=opt_spec)
    config["optimizer_class"] = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    scheduler = build_scheduler(
        optimizer,
        schedule=lr_schedule,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=warmup_epochs * steps_per_epoch,
    )
    generator = torch.Generator().manual_seed(seed)
    # dropout draws from the global RNG: seeded here for a reproducible run, inside fork_rng so the
    # caller's global state (CPU and this CUDA device) is restored when fit returns or raises
    rng_fork = contextlib.ExitStack()

    # --- the run folder: checked, marked and locked (rank 0) before anything is written
    handle = claim_run_dir(run, kind="fit", force=force, resume=resume) if run is not None else None
    try:
        rng_fork.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):  # this device only: fork_rng restores it afterwards
                torch.cuda.manual_seed(seed)
        result = FitResult(out_dir=None if out_dir is None else str(out_dir))
        best_weights: dict[str, torch.Tensor] | None = None
        start_epoch = 1

        # --- run folder: fresh start or resume from the last complete checkpoint
        if run is not None:
            ckpt = run / _CHECKPOINT
            if resume and os.path.lexists(ckpt):
                tensors, state = load_training_state(ckpt)  # SHA-256 verified
                best_weights = _restore_training_state(
                    ckpt, tensors, state, config=config, model=model, optimizer=optimizer, scheduler=scheduler,
                    generator=generator, device=device, steps_per_epoch=steps_per_epoch, result=result,
                )
                start_epoch = len(result.history) + 1
            elif main:
                # a fresh start (force=True, checked by the claim): drop the old run's resume point and final model
                for stale in (ckpt, run / MODEL_WEIGHTS, run / MODEL_JSON, run / "summary.json"):
                    stale.unlink(missing_ok=True)  # the claim refused links here, so never a file elsewhere
            if main:
                atomic_write_json(run / "config.json", config)
                # the log is rewritten from the checkpoint's history, so it never holds an epoch twice
                atomic_write_text(run / "log.jsonl", "".join(json.dumps(h, allow_nan=False) + "\n" for h in result.history))
            barrier()  # every rank has read the checkpoint before rank 0 writes the next one

        # --- data-parallel: DDP averages the gradients (and broadcasts rank 0's weights now)
        forward: nn.Module = model
        if is_distributed():
            forward = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        # --- the loop (chosen once: a dict batch goes in as keyword arguments; a loss may ask for the batch)
        if dict_input:
            def forward_batch(xb: Mapping[str, torch.Tensor]) -> Any:
                return forward(**xb)
        else:
            forward_batch = forward
        loss_takes_inputs = bool(getattr(loss_fn, "takes_inputs", False))
        trainable = [p for p in model.parameters() if p.requires_grad]
        constrained = max_norm_weights(model) if max_norm is not None else []
        last_lr = optimizer.param_groups[0]["lr"]
        for epoch in range(start_epoch, epochs + 1):
            if result.stopped_early:
                break
            t0 = time.perf_counter()
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            count_correct = True
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
            for step, global_idx in enumerate(minibatches(n, batch_size=batch_size, generator=generator), start=1):
                # same permutation on every rank; this rank's strided share of the global batch
                idx = rank_share(global_idx, rank=rank, world_size=world).to(device)  # (b,) rows of X, b ~ B / world
                xb, yb = _gather_rows(X, idx, device), y[idx]  # (b, *input_shape), (b,)
                if augmenter is not None:  # drawn for the global batch, so every rank's generator stays in step
                    draws = augmenter.draw(len(global_idx), generator)
                    if world > 1:
                        draws = draws.select(rank_share(torch.arange(len(global_idx)), rank=rank, world_size=world))
                    xb = augmenter.apply(xb, draws)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    out = forward_batch(xb)  # (b, C) logits
                if not isinstance(out, torch.Tensor):  # a tuple, dict or ModelOutput: its logits
                    out = _logits_of(out)
                out = out.float() if amp else out
                b = len(idx)
                out_grad = None  # set when the loss gives its gradient with respect to out
                if b:
                    # mean over this rank's b rows; an online teacher's loss also gets the (augmented) batch
                    batch_loss = loss_fn(out, yb, idx, xb) if loss_takes_inputs else loss_fn(out, yb, idx)
                    if isinstance(batch_loss, LossAndGradient):
                        batch_loss, out_grad = batch_loss
                else:  # fewer rows than ranks in the last batch: join the gradient all-reduce with zeros
                    batch_loss = out.sum() * 0.0
                last_lr = optimizer.param_groups[0]["lr"]
                c = None
                if count_correct and b:
                    with torch.no_grad():
                        c = _num_correct(out.detach(), yb, val_loss_name)
                local_loss = float(batch_loss.detach()) * b if b else 0.0
                finite = math.isfinite(local_loss) and bool(torch.isfinite(batch_loss.detach()).all())
                uncountable = count_correct and b > 0 and c is None  # e.g. mse: no accuracy
                if world > 1:  # one collective for the step's metrics, so every rank stops together
                    stats = all_reduce_sum(
                        [local_loss if finite else 0.0, b, c or 0, 0.0 if finite else 1.0, float(uncountable)]
                    )  # (5,) sums over ranks
                    step_loss, step_seen, step_correct = float(stats[0]), int(stats[1]), int(stats[2])
                    any_bad, uncountable = bool(stats[3] > 0), bool(stats[4] > 0)
                    bad_value = float(batch_loss.detach().reshape(-1)[0]) if not finite else float("nan")
                else:
                    step_loss, step_seen, step_correct, any_bad = local_loss, b, c or 0, not finite
                    bad_value = float(batch_loss.detach().reshape(-1)[0])
                if any_bad:
                    bar.close()
                    raise TrainingDivergedError(
                        f"the training loss became {bad_value} at epoch {epoch}, "
                        f"step {step} (lr={last_lr:.4g}); lower the learning rate or the temperature "
                        "(or set max_grad_norm)."
                    )
                optimizer.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks; weighting by b * world / B makes that the
                # gradient of the global minibatch mean: (1/W) sum_r (b_r W / B) mean_r = (1/B) sum_i l_i
                weight = b * world / len(global_idx) if world > 1 else 1.0
                if out_grad is not None:
                    out.backward(out_grad * weight if weight != 1.0 else out_grad)
                else:
                    (batch_loss * weight if weight != 1.0 else batch_loss).backward()
                if max_grad_norm is not None:
                    clip_grad_norm(trainable, max_grad_norm)
                optimizer.step()
                if constrained:
                    apply_max_norm(constrained, max_norm)
                scheduler.step()

                loss_sum += step_loss
                seen += step_seen
                if uncountable:
                    count_correct = False
                correct += step_correct
                bar.update(1)
                if step % log_every == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{last_lr:.3g}")
            bar.close()

            metrics: dict[str, Any] = {
                "epoch": epoch,
                "loss": loss_sum / seen,
                "accuracy": correct / seen if count_correct else None,
                "val_loss": None,
                "val_accuracy": None,
                "lr": last_lr,
            }
            if has_val:
                metrics["val_loss"], metrics["val_accuracy"] = evaluate_loss_accuracy(
                    model, X_val, y_val, loss=val_loss_name
                )
                if not math.isfinite(metrics["val_loss"]):
                    raise TrainingDivergedError(
                        f"the validation loss became {metrics['val_loss']} after epoch {epoch} (lr={last_lr:.4g}); "
                        "lower the learning rate or the temperature (or set max_grad_norm)."
                    )
                if result.best_val_loss is None or metrics["val_loss"] < result.best_val_loss:
                    result.best_epoch = epoch
                    result.best_val_loss = metrics["val_loss"]
                    result.best_val_accuracy = metrics["val_accuracy"]
                    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                result.best_epoch = epoch
            metrics["seconds"] = time.perf_counter() - t0
            result.history.append(metrics)
            if (
                early_stopping_patience is not None
                and epoch < epochs
                and epoch - result.best_epoch >= early_stopping_patience
            ):
                result.stopped_early = True
            if progress:
                tqdm.write(_format_metrics(metrics, epochs), file=sys.stderr)

            if run is not None and main:
                _save_checkpoint(run / _CHECKPOINT, model, optimizer, scheduler, generator, best_weights, result, config, device)
                log_fd = os.open(run / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
                with os.fdopen(log_fd, "a", encoding="utf-8") as f:  # never appended through a link
                    f.write(json.dumps(metrics, allow_nan=False) + "\n")
                    f.flush()
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(metrics))

        # --- the best weights, the summary, the final model file
        if has_val and restore_best and best_weights is not None:
            model.load_state_dict(best_weights)
        else:
            result.best_epoch = len(result.history)
            if has_val and result.history:
                result.best_val_loss = result.history[-1]["val_loss"]
                result.best_val_accuracy = result.history[-1]["val_accuracy"]
        result.epochs_run = len(result.history)
        result.train_seconds = sum(h["seconds"] for h in result.history)
        model.eval()
        if run is not None and main:
            save_model(run, model, metadata=result.metadata())
        barrier()  # the run folder is complete before any rank moves on
        return result
    finally:
        rng_fork.close()
        if handle is not None:
            handle.release()


def _format_metrics(m: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {m['epoch']}/{epochs}", f"loss {m['loss']:.4f}"]
    if m["accuracy"] is not None:
        parts.append(f"acc {m['accuracy']:.4f}")
    if m["val_loss"] is not None:
        parts.append(f"val_loss {m['val_loss']:.4f}")
    if m["val_accuracy"] is not None:
        parts.append(f"val_acc {m['val_accuracy']:.4f}")
    parts += [f"lr {m['lr']:.3g}", f"{m['seconds']:.1f}s"]
    return "  ".join(parts)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _save_checkpoint(path, model, optimizer, scheduler, generator, best_weights, result, config, device) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().to("cpu").clone()
    for k, v in (best_weights or {}).items():
        tensors[f"best.{k}"] = v.detach().to("cpu").clone()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    state = {
        "config": config,
        "optimizer": pack_tensors(optimizer.state_dict(), "optimizer", tensors),
        "scheduler": scheduler.state_dict(),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "best_val_accuracy": result.best_val_accuracy,
        "stopped_early": result.stopped_early,
    }
    save_training_state(path, tensors=tensors, state=state)


def content_fingerprint(**arrays: Any) -> str:
    """SHA-256 (hex) of named tensors / arrays: each name, dtype, shape and bytes, in argument order.

    ``None`` is hashed as absent. A ``np.memmap`` backed by a file is identified by the file (its
    real path, size and modification time, the offset, shape and dtype) rather than read whole.
    An object with a ``fingerprint`` attribute (a memory-mapped soft-target reader) by that.

    >>> a = content_fingerprint(x=torch.zeros(2))
    >>> a == content_fingerprint(x=torch.zeros(2)), a == content_fingerprint(x=torch.ones(2))
    (True, False)
    """
    h = hashlib.sha256(b"darkknowledge.content/1")
    for name, a in arrays.items():
        h.update(f"|{name}|".encode())
        if a is None:
            h.update(b"none")
        elif isinstance(a, np.memmap) and isinstance(getattr(a, "filename", None), str):
            st = os.stat(a.filename)
            h.update(f"memmap|{os.path.realpath(a.filename)}|{st.st_size}|{st.st_mtime_ns}|{a.offset}|"
                     f"{a.shape}|{a.strides}|{a.dtype.str}".encode())
        elif isinstance(a, np.ndarray):
            h.update(f"{a.dtype.str}|{a.shape}|".encode())
            if a.size:
                h.update(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8)))
        elif isinstance(a, torch.Tensor):
            t = a.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        elif hasattr(a, "fingerprint"):
            h.update(f"fingerprint|{a.fingerprint}|{getattr(a, 'shape', None)}".encode())
            rows = getattr(a, "rows", None)
            if isinstance(rows, torch.Tensor):
                h.update(content_fingerprint(rows=rows).encode())
        elif hasattr(a, "parent") and hasattr(a, "rows"):  # a row subset of a reader
            h.update(content_fingerprint(parent=a.parent, rows=a.rows).encode())
        else:
            raise InputTypeError(f"cannot fingerprint {name} of type {type(a).__name__}.")
    return h.hexdigest()


def data_fingerprint(data: Any) -> str:
    """SHA-256 of the training and validation splits (features and labels): what a resume must find again.

    Another data set, another ``split_seed``, another preprocessing: another fingerprint. Computed
    once when a run starts (only with ``out_dir``), never per step.
    """
    arrays: dict[str, Any] = {}
    for k in ("X_train", "y_train", "X_val", "y_val"):
        v = getattr(data, k, None)
        if isinstance(v, Mapping):  # a dict of inputs: each tensor under its name, in sorted order
            arrays.update({f"{k}.{name}": v[name] for name in sorted(v)})
        else:
            arrays[k] = v
    return content_fingerprint(**arrays)


_MISSING = object()


def _config_diffs(saved: Any, current: Any, name: str) -> list[tuple[str, Any, Any]]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            if not name and k in _RESUME_FREE:
                continue
            out += _config_diffs(saved.get(k, _MISSING), current.get(k, _MISSING), f"{name}.{k}" if name else str(k))
        return out
    return [] if saved == current else [(name, saved, current)]


def _short(v: Any) -> str:
    if v is _MISSING:
        return "absent"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return repr(v[:12] + "...")
    return repr(v)


def _check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose configuration, data or ``resume_key`` differ from the checkpoint's, naming the fields."""
    current = json.loads(json.dumps(current, allow_nan=False))  # the saved config went through JSON too
    diff = _config_diffs(saved, current, "")
    if diff:
        detail = "; ".join(f"{k}: {_short(a)} then, {_short(b)} now" for k, a, b in diff)
        hints = sorted({hint for k, _, _ in diff for field, hint in _RESUME_HINTS.items() if k == field})
        hint = "".join(f"; {h}" for h in hints)
        raise ResumeMismatchError(
            f"cannot resume from {path}: the configuration differs ({detail}){hint}; "
            "resume with the same settings and data, or start over with --force (force=True)."
        )


_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,), "optimizer": (dict,), "scheduler": (dict,), "history": (list,),
    "best_epoch": (int,), "stopped_early": (bool,),
}
_HISTORY_NUMBERS = ("loss", "lr", "seconds")
_HISTORY_OPTIONAL = ("accuracy", "val_loss", "val_accuracy")
_SCHEDULER_STEPPED = {"last_epoch", "_step_count", "_last_lr"}
# the per-parameter buffers each built-in optimizer keeps (another optimizer's are checked by shape only)
_OPTIMIZER_BUFFERS: dict[type, frozenset[str]] = {
    torch.optim.SGD: frozenset({"momentum_buffer"}),
    torch.optim.Adam: frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    torch.optim.AdamW: frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
}
_SCALAR_BUFFERS = {"step"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _restore_training_state(path, tensors, state, *, config, model, optimizer, scheduler, generator, device,
                            steps_per_epoch, result) -> dict[str, torch.Tensor] | None:
    """Check the structure of a (checksum-verified) training state, then load it; return the best weights.

    Every defect is a :class:`CheckpointError` naming the file and what is wrong, never a
    ``KeyError`` / ``RuntimeError`` from deep inside torch.
    """

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{path} holds a malformed training state ({what}); it was altered or written by something else: "
            "start over with --force (force=True), or resume from an intact copy."
        )

    if not isinstance(state, dict):
        raise bad(f"expected a JSON object, got {type(state).__name__}")
    for key, types in _STATE_TYPES.items():
        if key not in state:
            raise bad(f"no {key!r}")
        v = state[key]
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise bad(f"{key!r} is {type(v).__name__}, expected {types[0].__name__}")
    for key in ("best_val_loss", "best_val_accuracy"):
        if key not in state:
            raise bad(f"no {key!r}")
        if state[key] is not None and not _is_number(state[key]):
            raise bad(f"{key!r} is {state.get(key)!r}, expected a finite number or null")
    _check_resume_config(state["config"], config, path)

    # the history: one entry per epoch done, numbered 1..k, k <= epochs, finite metrics
    history, epochs = state["history"], config["epochs"]
    if len(history) > epochs:
        raise bad(f"its history holds {len(history)} epochs, more than the run's {epochs}")
    for i, h in enumerate(history):
        if not isinstance(h, dict) or type(h.get("epoch")) is not int or h["epoch"] != i + 1:
            raise bad(f"history entry {i} is not epoch {i + 1}")
        for k in _HISTORY_NUMBERS:
            if not _is_number(h.get(k)):
                raise bad(f"history entry {i} has {k} = {h.get(k)!r}, expected a finite number")
        for k in _HISTORY_OPTIONAL:
            if h.get(k) is not None and not _is_number(h.get(k)):
                raise bad(f"history entry {i} has {k} = {h.get(k)!r}, expected a finite number or null")
    if not 0 <= state["best_epoch"] <= len(history):
        raise bad(f"best_epoch {state['best_epoch']} is outside the {len(history)} epochs done")

    # the scheduler: a fresh one's settings, its step counter at the end of the last epoch done
    sched, fresh = state["scheduler"], json.loads(json.dumps(scheduler.state_dict(), default=lambda o: None))
    if set(sched) != set(fresh):
        raise bad(f"its scheduler state has keys {sorted(sched)}, expected {sorted(fresh)}")
    for k in sorted(set(fresh) - _SCHEDULER_STEPPED):
        if sched[k] != fresh[k]:
            raise bad(f"its scheduler's {k} is {sched[k]!r}, expected {fresh[k]!r}")
    steps = len(history) * steps_per_epoch
    if type(sched["last_epoch"]) is not int or sched["last_epoch"] != steps or sched["_step_count"] != steps + 1:
        raise bad(f"its scheduler is at step {sched['last_epoch']!r}, but {len(history)} epochs of {steps_per_epoch} "
                  f"steps end at step {steps}")
    last_lr = sched["_last_lr"]
    if not isinstance(last_lr, list) or len(last_lr) != len(fresh["_last_lr"]) or not all(map(_is_number, last_lr)):
        raise bad(f"its scheduler's _last_lr is {last_lr!r}")

    # the tensors: the model's names, shapes and dtypes; RNG states of the right size
    expected = model.state_dict()
    for prefix, required in (("model.", True), ("best.", False)):
        got = _prefixed(tensors, prefix)
        if not got and not required:
            continue
        if set(got) != set(expected):
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            raise bad(f"its {prefix[:-1]} weights lack {missing[:3]} or have extra {extra[:3]}")
        for k, t in got.items():
            if t.shape != expected[k].shape or t.dtype != expected[k].dtype:
                raise bad(f"tensor {prefix}{k} has shape {tuple(t.shape)} and {t.dtype}, the model's "
                          f"{tuple(expected[k].shape)} and {expected[k].dtype}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):  # else resuming "diverges" at once
                raise bad(f"tensor {prefix}{k} holds NaN or infinite values")
    for name, reference in (("rng.torch", torch.get_rng_state()), ("rng.generator", generator.get_state())):
        t = tensors.get(name)
        if t is None or t.dtype != torch.uint8 or t.shape != reference.shape:
            got = "missing" if t is None else f"{t.dtype} of shape {tuple(t.shape)}"
            raise bad(f"RNG state {name} is {got}, expected uint8 of shape {tuple(reference.shape)}")

    # the optimizer: the same parameter groups; a buffer of each parameter's shape
    try:
        opt = unpack_tensors(state["optimizer"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad(f"its optimizer state refers to a missing or malformed tensor ({type(e).__name__}: {e})") from None
    # the fresh optimizer's settings as they read after JSON (Adam's betas tuple is a list there)
    fresh_opt = {"param_groups": json.loads(json.dumps(optimizer.state_dict()["param_groups"], default=lambda o: None))}
    if not isinstance(opt, dict) or set(opt) != {"state", "param_groups"}:
        raise bad("its optimizer state is not {state, param_groups}")
    groups = opt["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_opt["param_groups"]):
        raise bad("its optimizer has other parameter groups than the model's")
    for i, (g, fg) in enumerate(zip(groups, fresh_opt["param_groups"])):
        if not isinstance(g, dict) or set(g) != set(fg):
            raise bad("its optimizer's parameter groups have other settings than the run's")
        for k in fg:
            if k == "lr":  # set by the scheduler at its last step, together with its _last_lr
                if not _is_number(g[k]) or g[k] != last_lr[i]:
                    raise bad(f"its optimizer's lr is {g[k]!r}, its scheduler's {last_lr[i]!r}")
            elif g[k] != fg[k]:
                raise bad(f"its optimizer's {k} is {g[k]!r}, expected {fg[k]!r}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(opt["state"], dict):
        raise bad("its optimizer's per-parameter state is not a mapping")
    for pid, buffers in opt["state"].items():
        if type(pid) is not int or not 0 <= pid < len(params) or not isinstance(buffers, dict):
            raise bad(f"its optimizer has state for an unknown parameter {pid!r}")
        known = _OPTIMIZER_BUFFERS.get(type(optimizer))
        for k, buf in buffers.items():
            if known is not None and k not in known:
                raise bad(f"its optimizer has an unknown buffer {k!r}")
            if k in _SCALAR_BUFFERS or (known is None and not (isinstance(buf, torch.Tensor) and buf.ndim)):
                # a step counter: a non-negative finite number or a 0-d tensor (Adam's float32 step)
                value = buf.item() if isinstance(buf, torch.Tensor) and buf.numel() == 1 else buf
                if buf is not None and (isinstance(buf, torch.Tensor) and buf.ndim or not _is_number(value) or value < 0):
                    raise bad(f"its optimizer's {k} of parameter {pid} is {buf!r}, expected a finite number >= 0")
                continue
            what = "momentum buffer" if k == "momentum_buffer" else f"optimizer buffer {k}"
            if buf is not None and (not isinstance(buf, torch.Tensor) or buf.shape != params[pid].shape
                                    or buf.dtype != params[pid].dtype):
                got = f"shape {tuple(buf.shape)}" if isinstance(buf, torch.Tensor) else type(buf).__name__
                raise bad(f"its {what} of parameter {pid} has {got}, expected shape {tuple(params[pid].shape)}")
            if buf is not None and not bool(torch.isfinite(buf).all()):
                raise bad(f"its {what} of parameter {pid} holds NaN or infinite values")

    # load (each call checked above; anything torch still refuses is the same error)
    try:
        model.load_state_dict(_prefixed(tensors, "model."), strict=True)
        optimizer.load_state_dict(opt)
        scheduler.load_state_dict(sched)
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.generator"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise bad(f"{type(e).__name__}: {e}") from None
    for key in ("history", "best_epoch", "best_val_loss", "best_val_accuracy", "stopped_early"):
        setattr(result, key, state[key])
    best = _prefixed(tensors, "best.")
    return {k: v.to(device) for k, v in best.items()} if best else None
