"""Evaluation: errors, NLL, calibration (ECE, reliability bins), agreement with the teacher, size, latency.

:func:`evaluate_model` returns the metric keys of one ``"models"`` entry of ``results.json``;
the pure functions it uses take probabilities / labels and can be used on their own.

Conventions: ``probs`` are ``(N, C)`` probabilities (rows sum to 1), ``y`` are ``(N,)`` int
class ids; NLL and KL are in **nats**, averaged over samples. Calibration uses ``n_bins``
equal-width confidence bins ``(b_{i-1}, b_i]`` on ``[0, 1]`` (the first bin also holds 0),
with confidence = the largest probability of a row and correctness = its argmax equals ``y``.

References:
    Guo, Pleiss, Sun & Weinberger, *On Calibration of Modern Neural Networks* (ICML 2017)
    -- ECE and reliability diagrams.
    Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural Network* (2015).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from darkknowledge._checks import check_one_of, check_positive_int
from darkknowledge.data import Splits, as_splits
from darkknowledge.data.batches import num_rows
from darkknowledge.teachers import as_teacher
from darkknowledge.teachers import teacher_logits as _run_logits
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "confusion_matrix",
    "evaluate",
    "evaluate_model",
    "expected_calibration_error",
    "measure_latency",
    "reliability_bins",
]


def _as_tensor(name: str, a: Any) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(a).__name__} instead.")
    return a


def _labels(name: str, y: Any, *, n: int, num_classes: int) -> torch.Tensor:
    y = _as_tensor(name, y)
    if y.ndim != 1 or y.shape[0] != n or y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(
            f"{name} must be (N,) integer class ids with N={n}, "
            f"got shape {tuple(y.shape)} and dtype {y.dtype} instead."
        )
    y = y.to(torch.int64)
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise InputError(f"{name} must hold class ids in [0, {num_classes}), got {bad} instead.")
    return y


def _probs(probs: Any) -> torch.Tensor:
    p = _as_tensor("probs", probs)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise InputError(f"probs must have shape (N, C) with N, C >= 1, got {tuple(p.shape)} instead.")
    if not p.is_floating_point():
        raise InputTypeError(f"probs must be floating point, got {p.dtype} instead.")
    p = p.to(torch.float64)
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise InputError("probs must be finite and non-negative, got other values instead.")
    sums = p.sum(dim=1)  # (N,)
    worst = int((sums - 1).abs().argmax())
    if abs(float(sums[worst]) - 1.0) > 1e-3:
        raise InputError(
            f"probs must have rows summing to 1 (probabilities, not logits), "
            f"got a row summing to {float(sums[worst]):.6g} instead."
        )
    return p


def _bins(probs: Any, y: Any, n_bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin (count, summed confidence, summed correctness) and the bin edges, all float64."""
    check_positive_int("n_bins", n_bins)
    p = _probs(probs)
    y = _labels("y", y, n=p.shape[0], num_classes=p.shape[1])
    conf, pred = p.max(dim=1)  # (N,), (N,)
    correct = (pred == y).to(torch.float64)  # (N,)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)  # (B+1,)
    # bin b holds edges[b] < conf <= edges[b+1]; conf == 0 goes to bin 0
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # (N,) in [0, B)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    correct_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    return edges, count, conf_sum, correct_sum


def expected_calibration_error(
    probs: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, n_bins: int = 15
) -> float:
    """Expected calibration error: the sample-weighted mean gap between accuracy and confidence.

    .. math:: \\mathrm{ECE} = \\sum_{b=1}^{B} \\frac{n_b}{N}\\,
              \\bigl|\\mathrm{acc}(b) - \\mathrm{conf}(b)\\bigr|

    over ``B = n_bins`` equal-width confidence bins (see the module docstring), where
    ``acc(b)`` is the fraction of correct argmax predictions and ``conf(b)`` the mean top
    probability of the samples in bin ``b``. In ``[0, 1]``; 0 is perfectly calibrated.

    Args:
        probs: ``(N, C)`` probabilities. y: ``(N,)`` int class ids. n_bins: ``B >= 1``.

    Example:
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1, 1]), n_bins=2), 4)
        0.0667

    Reference: Guo et al., *On Calibration of Modern Neural Networks* (2017), eq. 3.
    """
    _, count, conf_sum, correct_sum = _bins(probs, y, n_bins)
    return float((conf_sum - correct_sum).abs().sum() / count.sum())


def reliability_bins(
    probs: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, n_bins: int = 15
) -> dict[str, list]:
    """The reliability diagram's data: per confidence bin, mean confidence, accuracy and count.

    Args:
        probs: ``(N, C)`` probabilities. y: ``(N,)`` int class ids. n_bins: ``B >= 1``.

    Returns:
        ``{"bin_edges": [B+1 floats], "bin_confidence": [B], "bin_accuracy": [B],
        "bin_count": [B ints]}``; an empty bin has confidence and accuracy ``0.0`` and count 0.

    Example:
        >>> rb = reliability_bins(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), n_bins=2)
        >>> rb["bin_edges"], rb["bin_count"], rb["bin_accuracy"]
        ([0.0, 0.5, 1.0], [0, 2], [0.0, 0.5])
    """
    edges, count, conf_sum, correct_sum = _bins(probs, y, n_bins)
    safe = count.clamp(min=1)  # empty bins: 0 / 1 = 0
    return {
        "bin_edges": edges.tolist(),
        "bin_confidence": (conf_sum / safe).tolist(),
        "bin_accuracy": (correct_sum / safe).tolist(),
        "bin_count": [int(c) for c in count.tolist()],
    }


def confusion_matrix(
    y_true: torch.Tensor | np.ndarray, y_pred: torch.Tensor | np.ndarray, *, num_classes: int
) -> torch.Tensor:
    """Count matrix ``M[i, j]`` = number of samples of true class ``i`` predicted as ``j``.

    Args:
        y_true, y_pred: ``(N,)`` int class ids in ``[0, num_classes)``.
        num_classes: ``C >= 1``.

    Returns:
        ``(C, C)`` int64 tensor; rows are true classes, columns predicted classes.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), num_classes=2).tolist()
        [[1, 0], [1, 1]]
    """
    check_positive_int("num_classes", num_classes)
    t = _as_tensor("y_true", y_true)
    n = t.shape[0] if t.ndim == 1 else -1
    t = _labels("y_true", t, n=n, num_classes=num_classes)
    p = _labels("y_pred", y_pred, n=t.shape[0], num_classes=num_classes)
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)  # (C*C,)
    return flat.reshape(num_classes, num_classes)  # (C, C)


def measure_latency(
    model: nn.Module, X: torch.Tensor | np.ndarray, *, batch_size: int = 1024, repeats: int = 3
) -> float:
    """Batched inference time in wall-clock milliseconds per sample (median of ``repeats`` passes).

    One warm-up batch runs first; each timed pass runs the whole of ``X`` in batches of
    ``batch_size`` in ``eval()`` mode under ``no_grad`` (the model's modes are restored).

    Args:
        model: an ``nn.Module``. X: ``(N, *input_shape)`` inputs. batch_size, repeats: >= 1.

    Example:
        >>> ms = measure_latency(nn.Linear(8, 2), torch.randn(64, 8), batch_size=32, repeats=2)
        >>> ms > 0
        True
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("repeats", repeats)
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__} instead.")
    if isinstance(X, dict):  # text models: {"input_ids": (N, T), ...}
        n = num_rows(X)
        shape = f"{n} rows"
        warm = {k: v[: min(n, batch_size)] for k, v in X.items()}
    else:
        X = _as_tensor("X", X)
        n = X.shape[0] if X.ndim else 0
        shape = f"shape {tuple(X.shape)}"
        warm = X[: min(n, batch_size)]
    if n < 1:
        raise InputError(f"X must hold at least one sample, got {shape} instead.")
    _run_logits(model, warm, batch_size=batch_size)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _run_logits(model, X, batch_size=batch_size)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / n


def evaluate_model(
    model: nn.Module,
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    teacher_logits: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 1024,
    n_bins: int = 15,
    latency_repeats: int = 3,
) -> dict[str, Any]:
    """Evaluate a classifier on ``(X, y)``: the metric keys of one ``results.json`` model entry.

    The model runs in ``eval()`` mode under ``no_grad``. With ``p = softmax(model(X))`` and the
    teacher's ``q = softmax(teacher_logits)`` (both at ``T = 1``):

    * ``nll`` = mean of ``-log p[y]`` (nats); ``accuracy`` = fraction of ``argmax p == y``;
      ``test_errors`` = number of wrong argmax predictions; ``n_test`` = N;
    * ``ece`` and ``reliability`` as in :func:`expected_calibration_error` / :func:`reliability_bins`;
    * ``agreement`` = fraction of ``argmax p == argmax q``; ``kl_to_teacher`` = mean
      ``KL(q || p) = sum_c q_c (log q_c - log p_c)`` (nats); both ``None`` without teacher logits;
    * ``params`` = number of parameters; ``latency_ms_per_sample`` from :func:`measure_latency`
      (``None`` when ``latency_repeats == 0``); ``confusion`` = :func:`confusion_matrix` as lists.

    Args:
        model: an ``nn.Module`` mapping ``(N, *input_shape)`` to ``(N, C)`` logits.
        X: ``(N, *input_shape)`` inputs. y: ``(N,)`` int class ids.
        teacher_logits: optional ``(N, C)`` teacher logits on the same ``X``.
        batch_size: rows per forward pass. n_bins: calibration bins.
        latency_repeats: timed passes (0 skips the latency measurement).

    Returns:
        ``{"params", "test_errors", "n_test", "accuracy", "nll", "ece", "agreement",
        "kl_to_teacher", "latency_ms_per_sample", "confusion", "reliability"}``, plain
        Python numbers and lists (JSON-ready).

    Example:
        >>> net = nn.Linear(4, 3)
        >>> X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
        >>> m = evaluate_model(net, X, y, teacher_logits=net(X).detach(), latency_repeats=1)
        >>> m["params"], m["n_test"], m["agreement"], abs(m["kl_to_teacher"]) < 1e-6
        (15, 20, 1.0, True)
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__} instead.")
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_bins", n_bins)
    check_positive_int("latency_repeats", latency_repeats, minimum=0)
    logits = _run_logits(model, X, batch_size=batch_size).to(torch.float64)  # (N, C)
    n, num_classes = logits.shape
    y = _labels("y", y, n=n, num_classes=num_classes)
    logp = logits.log_softmax(dim=1)  # (N, C) model log-probabilities
    pred = logp.argmax(dim=1)  # (N,)
    probs = logp.exp()
    errors = int((pred != y).sum())
    nll = float(-logp.gather(1, y.unsqueeze(1)).mean())

    agreement = kl = None
    if teacher_logits is not None:
        t = _as_tensor("teacher_logits", teacher_logits)
        if tuple(t.shape) != (n, num_classes) or not t.is_floating_point():
            raise InputError(
                f"teacher_logits must be floating point with shape ({n}, {num_classes}) like the model's "
                f"logits, got {tuple(t.shape)} ({t.dtype}) instead."
            )
        logq = t.to(torch.float64).log_softmax(dim=1)  # (N, C) teacher log-probabilities
        agreement = float((logq.argmax(dim=1) == pred).to(torch.float64).mean())
        q = logq.exp()
        kl = float((torch.special.xlogy(q, q) - q * logp).sum(dim=1).mean())  # 0 log 0 = 0

    params = sum(p.numel() for p in model.parameters())
    latency = (
        measure_latency(model, X, batch_size=batch_size, repeats=latency_repeats) if latency_repeats else None
    )
    return {
        "params": int(params),
        "test_errors": errors,
        "n_test": int(n),
        "accuracy": 1.0 - errors / n,
        "nll": nll,
        "ece": expected_calibration_error(probs, y, n_bins=n_bins),
        "agreement": agreement,
        "kl_to_teacher": kl,
        "latency_ms_per_sample": latency,
        "confusion": confusion_matrix(y, pred, num_classes=num_classes).tolist(),
        "reliability": reliability_bins(probs, y, n_bins=n_bins),
    }


_PRECOMPUTED_SUFFIXES = (".npy", ".safetensors")


def evaluate(
    model: Any,
    data: Any,
    *,
    teacher: Any = None,
    split: str = "test",
    batch_size: int = 1024,
    n_bins: int = 15,
    latency_repeats: int = 0,
) -> dict[str, Any]:
    """Evaluate a classifier on data of any kind: errors, accuracy, NLL, ECE, agreement and KL to a teacher.

    A thin public wrapper over :func:`evaluate_model` (same metrics, same keys).

    Args:
        model: an ``nn.Module`` (``(N, ...) -> (N, C)`` logits), or anything
            :func:`~darkknowledge.teachers.as_teacher` accepts (an estimator with ``predict_proba``,
            an ``.onnx`` file, ...), to report a teacher on its own.
        data: a :class:`~darkknowledge.data.Splits`, whose part ``split`` is evaluated; or anything
            else :func:`~darkknowledge.data.as_splits` accepts (``(X, y)``, a torch ``Dataset`` /
            ``DataLoader``, a Hugging Face dataset, a path), which is evaluated **whole**, every row
            in order (no split, no standardisation; ``split`` must be left at its default; to evaluate
            the test part of a file call ``as_splits`` first and pass its ``Splits``).
        teacher: optional, for ``agreement`` and ``kl_to_teacher``: anything ``as_teacher`` accepts
            (run on the same rows), or precomputed ``(N, C)`` logits (tensor, array, ``.npy`` /
            ``.safetensors`` path) aligned with the evaluated rows.
        split: ``"test"`` (default), ``"val"`` or ``"train"``: the part of a ``Splits``.
        batch_size, n_bins, latency_repeats: as for :func:`evaluate_model` (latency is skipped by
            default here: ``latency_ms_per_sample`` is ``None``).

    Returns:
        The dict of :func:`evaluate_model`: ``test_errors``, ``n_test``, ``accuracy``, ``nll`` (nats),
        ``ece``, ``agreement``, ``kl_to_teacher`` (nats, ``KL(teacher || model)``), ``params``, ...

    Example:
        >>> net = nn.Linear(4, 3)
        >>> X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
        >>> m = evaluate(net, (X, y), teacher=net)
        >>> m["n_test"], m["agreement"], abs(m["kl_to_teacher"]) < 1e-6
        (20, 1.0, True)
    """
    split = check_one_of("split", split, ("test", "val", "train"))
    if isinstance(data, Splits):
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
        if X is None or y is None:
            raise InputError(
                f"split={split!r} must name a part the data holds, got a Splits without X_{split} instead; "
                "pass split='val' or 'train', or give as_splits a test= part."
            )
    else:
        if split != "test":
            raise InputError(
                f"split applies to a Splits, got split={split!r} with {type(data).__name__} data instead "
                "(that data is evaluated whole)."
            )
        whole = as_splits(data, val_fraction=0.0)
        X, y = whole.X_train, whole.y_train
    if not isinstance(model, nn.Module):
        model = as_teacher(model)
    t_logits = None
    if teacher is not None:
        precomputed = isinstance(teacher, (torch.Tensor, np.ndarray)) or (
            isinstance(teacher, (str, os.PathLike)) and str(teacher).lower().endswith(_PRECOMPUTED_SUFFIXES)
        )
        if precomputed:
            from darkknowledge.teacher_adapters import load_teacher_logits

            t_logits = load_teacher_logits(teacher, num_rows=num_rows(X))
        else:
            t_logits = _run_logits(teacher, X, batch_size=batch_size)
    return evaluate_model(
        model, X, y, teacher_logits=t_logits, batch_size=batch_size, n_bins=n_bins, latency_repeats=latency_repeats
    )
