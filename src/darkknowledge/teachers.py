"""Teachers: one model, a saved run, or an ensemble of members whose predictions are averaged.

A *teacher* is anything whose forward pass returns ``(N, C)`` logits; :func:`as_teacher` makes one
of anything that produces class scores (adapters in :mod:`darkknowledge.teacher_adapters`):

* an ``nn.Module`` or callable returning logits, a tuple, a dict or a Hugging Face ``ModelOutput``;
* a fitted estimator with ``predict_proba`` (scikit-learn, LightGBM), with out-of-fold predictions
  for its own training rows from :func:`cross_fit_logits`;
* an ``.onnx`` file (onnxruntime), or a local Hugging Face model folder;
* a run folder written by ``darkknowledge train`` (loaded with
  :func:`darkknowledge.checkpoint.load_model`);
* an :class:`Ensemble` of such members (e.g. trained with different seeds, or on bootstrap
  resamples drawn with :func:`bootstrap_indices` -- *bagging*, bootstrap aggregation).

An ensemble combines its members in one of two spaces, with optional non-negative weights
``w_m`` (normalised to sum to 1):

* ``combine="prob"`` (default): the mixture of the members' probabilities,

  .. math:: \\log \\bar p(c \\mid x) = \\log \\sum_m w_m \\, \\mathrm{softmax}(z_m(x))_c ;

* ``combine="logprob"``: the normalised geometric mean (a product of experts),

  .. math:: \\log \\bar p(c \\mid x) = s_c - \\log \\sum_{c'} e^{s_{c'}}, \\quad
            s = \\sum_m w_m \\, \\mathrm{log\\_softmax}(z_m(x)).

Either way the ensemble returns natural-log probabilities, which are valid logits:
``softmax(log p) = p``.

The teacher always runs in ``eval()`` mode (dropout off, batch-norm running statistics) and
under ``torch.no_grad()`` in :func:`teacher_logits`, the one function that computes teacher
outputs for the soft-target cache and for evaluation.

References:
    Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural Network* (2015), sec. 1 and 4.
    Breiman, *Bagging Predictors*, Machine Learning 24 (1996).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from darkknowledge._checks import check_one_of, check_positive_int
from darkknowledge.errors import InputError, InputTypeError
from darkknowledge.teacher_adapters import (
    EstimatorTeacher,
    LogitsOf,
    OnnxTeacher,
    cross_fit_logits,
    is_hf_folder,
    load_hf_classifier,
    load_teacher_logits,
)

__all__ = [
    "COMBINE_MODES",
    "Ensemble",
    "as_teacher",
    "bootstrap_indices",
    "check_compatible",
    "cross_fit_logits",
    "is_precomputed_logits",
    "load_teacher_logits",
    "teacher_logits",
]

COMBINE_MODES = ("prob", "logprob")


def bootstrap_indices(n: int, *, seed: int) -> torch.Tensor:
    """Draw a bootstrap resample of ``range(n)``: ``n`` indices drawn uniformly *with replacement*.

    Training each ensemble member on ``X[bootstrap_indices(n, seed=m)]`` gives bagging
    (bootstrap aggregation): every member sees about ``1 - 1/e ~ 63.2%`` of the distinct
    samples, some of them several times. The draw depends only on ``n`` and ``seed``
    (a private ``torch.Generator``), never on the global random state.

    Args:
        n: number of samples in the training set (>= 1).
        seed: an integer >= 0; the same seed gives the same indices.

    Returns:
        ``(n,)`` int64 tensor of indices in ``[0, n)``.

    Example:
        >>> idx = bootstrap_indices(5, seed=0)
        >>> idx.shape, idx.dtype, bool(((idx >= 0) & (idx < 5)).all())
        (torch.Size([5]), torch.int64, True)
        >>> torch.equal(idx, bootstrap_indices(5, seed=0))
        True

    Reference: Breiman, *Bagging Predictors* (1996).
    """
    check_positive_int("n", n)
    check_positive_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n,), generator=generator, dtype=torch.int64)


def _normalised_weights(weights: Any, num_members: int) -> torch.Tensor:
    """Validate ensemble weights and return them as a float64 ``(M,)`` tensor summing to 1."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray, torch.Tensor)):
        raise InputTypeError(f"weights must be a sequence of numbers, got {type(weights).__name__} instead.")
    try:
        if isinstance(weights, torch.Tensor):
            w = weights.detach().to("cpu", torch.float64).reshape(-1)
        else:
            w = torch.from_numpy(np.asarray(weights, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as err:
        raise InputTypeError(f"weights must be a sequence of numbers, got {weights!r} instead.") from err
    if w.numel() != num_members:
        raise InputError(
            f"weights must have one entry per member ({num_members}), got {w.numel()} instead."
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise InputError(f"weights must be finite and non-negative, got {w.tolist()} instead.")
    total = float(w.sum())
    if total <= 0:
        raise InputError(f"weights must not all be zero, got {w.tolist()} instead.")
    return w / total


class Ensemble(nn.Module):
    """An ensemble teacher: averages its members' predictions and returns log-probabilities.

    Args:
        members: a non-empty sequence of ``nn.Module`` s, each mapping ``(N, *input_shape)``
            to ``(N, C)`` logits with the same ``C``.
        weights: optional ``(M,)`` non-negative weights, one per member (normalised to sum
            to 1; members with weight 0 are not run). Default: equal weights.
        combine: ``"prob"`` (default) -- log of the weighted mean of the members'
            probabilities; ``"logprob"`` -- weighted mean of the members' log-probabilities,
            renormalised (a normalised geometric mean). See the module docstring.

    Shapes: input ``(N, *input_shape)``; output ``(N, C)`` natural-log probabilities
    (``logsumexp`` over classes is 0), usable anywhere logits are expected.

    The weights are a buffer, so they are part of the ``state_dict`` (and of the soft-target
    cache fingerprint); ``combine`` appears in ``repr``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> members = [nn.Linear(4, 3), nn.Linear(4, 3)]
        >>> ens = Ensemble(members, weights=[1.0, 3.0])
        >>> x = torch.randn(2, 4)
        >>> p = 0.25 * members[0](x).softmax(-1) + 0.75 * members[1](x).softmax(-1)
        >>> torch.allclose(ens(x).exp(), p, atol=1e-6)
        True
    """

    weights: torch.Tensor

    def __init__(
        self,
        members: Sequence[nn.Module],
        *,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        combine: str = "prob",
    ) -> None:
        super().__init__()
        if isinstance(members, nn.Module) or not isinstance(members, Sequence) or len(members) == 0:
            raise InputTypeError(
                f"members must be a non-empty sequence of nn.Module, got {type(members).__name__} instead."
            )
        for i, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise InputTypeError(f"members[{i}] must be an nn.Module, got {type(member).__name__} instead.")
        self.combine = check_one_of("combine", combine, COMBINE_MODES)
        self.members = nn.ModuleList(members)
        w = (
            torch.full((len(members),), 1.0 / len(members), dtype=torch.float64)
            if weights is None
            else _normalised_weights(weights, len(members))
        )
        self.register_buffer("weights", w)  # float64: 1/3 stays 1/3 to 1e-16

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(N, C)`` log-probabilities of the combined prediction for ``x``."""
        w = self.weights.double()
        active = [(float(w[m]), member) for m, member in enumerate(self.members) if float(w[m]) > 0]
        outputs = [member(x) for _, member in active]  # M' x (N, C) logits
        shapes = sorted({tuple(z.shape) for z in outputs})
        if len(shapes) != 1 or len(shapes[0]) != 2:
            raise InputError(f"members must all return (N, C) logits of one shape, got shapes {shapes} instead.")
        # (M', N, C) member log-probabilities, in float64 so averaging adds no error
        logp = torch.stack([z.double().log_softmax(dim=-1) for z in outputs])
        wa = torch.tensor([wm for wm, _ in active], dtype=torch.float64, device=logp.device)
        if self.combine == "prob":
            # log sum_m w_m p_m = logsumexp_m(log w_m + log p_m)          -> (N, C)
            out = torch.logsumexp(logp + wa.log().view(-1, 1, 1), dim=0)
        else:
            s = (wa.view(-1, 1, 1) * logp).sum(dim=0)  # (N, C) weighted mean log-prob
            out = s - torch.logsumexp(s, dim=-1, keepdim=True)
        return out.to(outputs[0].dtype)


_ADAPTERS = (Ensemble, LogitsOf, EstimatorTeacher, OnnxTeacher)


def as_teacher(
    obj: Any,
    *,
    output: str | int | Callable[[Any], Any] | None = None,
    output_kind: str | None = None,
    weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    combine: str = "prob",
) -> nn.Module:
    """Turn anything that produces class scores into a teacher module: ``forward(x) -> (B, C)`` logits.

    Args:
        obj: one of

            * an ``nn.Module`` or any callable whose output is a logits tensor, a tuple / list
              (its first element), a dict or a Hugging Face ``ModelOutput`` (its ``"logits"``),
              wrapped in :class:`~darkknowledge.teacher_adapters.LogitsOf` (darkknowledge's own
              models and teachers are returned as they are); a dict input ``x`` is passed as
              keyword arguments, ``model(**x)``;
            * a fitted estimator with ``predict_proba`` (scikit-learn, LightGBM):
              :class:`~darkknowledge.teacher_adapters.EstimatorTeacher`, floored log-probabilities
              (for the training rows prefer :func:`~darkknowledge.teacher_adapters.cross_fit_logits`);
            * a path to an ``.onnx`` file: :class:`~darkknowledge.teacher_adapters.OnnxTeacher`;
            * a path to a local Hugging Face model folder (``config.json`` + safetensors weights):
              :func:`~darkknowledge.teacher_adapters.load_hf_classifier`;
            * a path to a run folder saved by ``darkknowledge train`` (``model.json``), loaded with
              :func:`darkknowledge.checkpoint.load_model`;
            * a list / tuple of the above, which becomes an :class:`Ensemble`.

            Precomputed logits (a tensor, an array, an ``.npy`` / ``.safetensors`` file) are not a
            module: load them with :func:`~darkknowledge.teacher_adapters.load_teacher_logits`.
        output: which part of a module's / callable's output holds the logits: a key, an index or
            a callable ``raw_output -> tensor`` (default: guessed); for an ONNX file, the output's name.
        output_kind: for an ONNX file, ``"logits"`` or ``"probabilities"`` (default: decided from
            the graph, see :class:`~darkknowledge.teacher_adapters.OnnxTeacher`).
        weights, combine: passed to :class:`Ensemble` when ``obj`` is a list; must be left at
            their defaults otherwise.

    Returns:
        An ``nn.Module`` mapping ``(B, *input_shape)`` (or a dict of ``(B, ...)`` tensors) to
        ``(B, C)`` logits.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> t = as_teacher(lin)
        >>> type(t).__name__, as_teacher(t) is t, torch.equal(t(torch.ones(1, 3)), lin(torch.ones(1, 3)))
        ('LogitsOf', True, True)
        >>> type(as_teacher([lin, nn.Linear(3, 2)], combine="logprob")).__name__
        'Ensemble'
    """
    if isinstance(obj, (list, tuple)):
        members = [as_teacher(member, output=output, output_kind=output_kind) for member in obj]
        return Ensemble(members, weights=weights, combine=combine)
    if weights is not None or combine != "prob":
        raise InputError(
            "weights and combine apply only to a list of ensemble members, "
            f"got a single {type(obj).__name__} instead."
        )
    if output_kind is not None and not (isinstance(obj, (str, os.PathLike)) and str(obj).endswith(".onnx")):
        raise InputError(f"output_kind applies only to an .onnx file, got a {type(obj).__name__} instead.")
    if is_precomputed_logits(obj):
        raise InputTypeError(
            "teacher must be a model, got precomputed logits "
            f"({type(obj).__name__}) instead: load them with load_teacher_logits and pass the (N, C) tensor "
            "as the teacher's logits."
        )
    if isinstance(obj, nn.Module):
        if output is None and (isinstance(obj, _ADAPTERS) or type(obj).__module__.startswith("darkknowledge.")):
            return obj  # already returns (B, C) logits
        return LogitsOf(obj, output=output)
    if isinstance(obj, (str, os.PathLike)):
        if str(obj).endswith(".onnx"):
            return OnnxTeacher(obj, output=output, output_kind=output_kind)
        if is_hf_folder(obj):
            return load_hf_classifier(obj, output=output)
        from darkknowledge.checkpoint import load_model  # lazy: checkpoint is a lower floor

        module = load_model(obj)
        return module if output is None else LogitsOf(module, output=output)
    if callable(getattr(obj, "predict_proba", None)):
        if output is not None:
            raise InputError(f"output does not apply to an estimator, got output={output!r} instead.")
        return EstimatorTeacher(obj)
    if callable(obj):
        return LogitsOf(obj, output=output)
    raise InputTypeError(
        "teacher must be an nn.Module, a callable, an estimator with predict_proba, an .onnx file, "
        f"a Hugging Face or run folder path, or a list of them, got {type(obj).__name__} instead."
    )


def _reference_tensor(module: nn.Module) -> torch.Tensor | None:
    """The first parameter (or buffer) of ``module``: its device and dtype are the model's."""
    for tensor in module.parameters():
        return tensor
    for tensor in module.buffers():
        return tensor
    return None


def _as_input_tensor(X: Any, module: nn.Module) -> torch.Tensor:
    if isinstance(X, np.ndarray):  # a copy of these rows (a memory map stays read-only and unread elsewhere)
        X = torch.from_numpy(np.array(X, copy=True))
    if not isinstance(X, torch.Tensor):
        raise InputTypeError(f"X must be a torch.Tensor or numpy.ndarray, got {type(X).__name__} instead.")
    if X.ndim < 1:
        raise InputError(f"X must have a leading batch dimension, got shape {tuple(X.shape)} instead.")
    ref = _reference_tensor(module)
    if X.is_floating_point() and ref is not None and ref.is_floating_point() and X.dtype != ref.dtype:
        X = X.to(ref.dtype)
    return X


def _num_rows(X: Any) -> int:
    """``N`` of a tensor / array, or of a dict of equal-length tensors / arrays (checked)."""
    if isinstance(X, Mapping):
        if not X:
            raise InputError("X must hold at least one input tensor, got an empty dict instead.")
        lengths = {}
        for key, value in X.items():
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                raise InputTypeError(
                    f"X[{key!r}] must be a torch.Tensor or numpy.ndarray, got {type(value).__name__} instead."
                )
            if value.ndim < 1:
                raise InputError(f"X[{key!r}] must have a leading batch dimension, got shape () instead.")
            lengths[key] = int(value.shape[0])
        if len(set(lengths.values())) != 1:
            raise InputError(f"X must hold tensors with one length (rows), got lengths {lengths} instead.")
        return next(iter(lengths.values()))
    if not isinstance(X, (torch.Tensor, np.ndarray)):
        raise InputTypeError(
            f"X must be a torch.Tensor, numpy.ndarray or dict of them, got {type(X).__name__} instead."
        )
    if X.ndim < 1:
        raise InputError(f"X must have a leading batch dimension, got shape {tuple(X.shape)} instead.")
    return int(X.shape[0])


def _batch(X: Any, start: int, stop: int, module: nn.Module, device: torch.device) -> Any:
    """Rows ``[start, stop)`` of ``X`` (each key of a dict), as tensors on ``device``."""
    if isinstance(X, Mapping):
        return {k: _as_input_tensor(v[start:stop], module).to(device) for k, v in X.items()}
    return _as_input_tensor(X[start:stop], module).to(device)


def teacher_logits(teacher: Any, X: Any, *, batch_size: int = 1024) -> torch.Tensor:
    """Run a teacher over ``X`` in ``eval()`` mode under ``torch.no_grad()`` and return its logits.

    Args:
        teacher: anything :func:`as_teacher` accepts (module, estimator, ONNX file, folder, list).
        X: ``(N, *input_shape)`` inputs (tensor or NumPy array, read batch by batch, so a
            memory map larger than RAM works; floating inputs are cast to the teacher's parameter
            dtype and moved batch by batch to its device), or a dict of such arrays with one
            ``N`` (e.g. ``input_ids`` and ``attention_mask``), batched key by key and passed to
            the model as keyword arguments.
        batch_size: rows per forward pass (>= 1); the result does not depend on it beyond
            floating-point rounding.

    Returns:
        ``(N, C)`` float32 CPU tensor of logits (for an :class:`Ensemble`: log-probabilities).
        Nothing in it requires grad. The modules' previous ``training`` flags are restored.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
        >>> X = torch.randn(10, 4)
        >>> a = teacher_logits(net, X, batch_size=3)
        >>> a.shape, torch.equal(a, teacher_logits(net, X, batch_size=3)), net.training
        (torch.Size([10, 3]), True, True)
    """
    check_positive_int("batch_size", batch_size)
    module = as_teacher(teacher)
    n = _num_rows(X)
    ref = _reference_tensor(module)
    device = ref.device if ref is not None else torch.device("cpu")
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                # a NumPy X (e.g. a memory map) is read one batch at a time
                stop = min(start + batch_size, n)
                out = module(_batch(X, start, stop, module, device))
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != stop - start:
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise InputError(f"teacher must return (N, C) logits, got {shape} instead.")
                chunks.append(out.detach().to("cpu", torch.float32))
    finally:
        for m, mode in modes:
            m.training = mode
    if not chunks:  # N == 0: no forward pass, no known C
        raise InputError("X must hold at least one sample, got 0 instead.")
    return torch.cat(chunks)  # (N, C)


def is_precomputed_logits(teacher: Any) -> bool:
    """Whether ``teacher`` is precomputed logits (a tensor, an array, an ``.npy`` / ``.safetensors`` path).

    Such a teacher is not a module: read it with :func:`load_teacher_logits`.

    Example:
        >>> is_precomputed_logits(torch.zeros(3, 2)), is_precomputed_logits("z.npy"), is_precomputed_logits(nn.Linear(2, 2))
        (True, True, False)
    """
    return isinstance(teacher, (torch.Tensor, np.ndarray)) or (
        isinstance(teacher, (str, os.PathLike)) and str(teacher).endswith((".npy", ".safetensors"))
    )


def check_compatible(
    teacher: Any,
    *,
    num_classes: int,
    input_shape: Sequence[int] | None = None,
    num_rows: int | None = None,
    sample: Any = None,
) -> int:
    """Check, before any training, that a teacher accepts the data's inputs and predicts its classes.

    A model is probed with ``sample`` (a few real rows: a tensor, array or dict of them) if given,
    else with a zero batch of shape ``(2, *input_shape)`` (in ``eval()``, no grad). Precomputed
    logits (tensor, array, ``.npy`` / ``.safetensors`` path) are checked for their shape instead:
    ``(num_rows, num_classes)``, finite.

    Args:
        teacher: anything :func:`as_teacher` accepts, or precomputed logits.
        num_classes: the number of classes of the data / student.
        input_shape: the shape of one sample, e.g. ``(64,)`` or ``(1, 28, 28)``.
        num_rows: the number of rows of the data precomputed logits must be aligned with.
        sample: inputs to probe the teacher with instead of zeros (e.g. a dict of token ids).

    Returns:
        ``num_classes`` (the teacher's, which matched).

    Raises:
        ValueError: the teacher fails on inputs of ``input_shape``, predicts a different number
            of classes, or (precomputed) has another number of rows.

    Example:
        >>> check_compatible(nn.Linear(64, 10), num_classes=10, input_shape=(64,))
        10
        >>> check_compatible(torch.zeros(5, 10), num_classes=10, num_rows=5)
        10
    """
    check_positive_int("num_classes", num_classes)
    if num_rows is not None:
        check_positive_int("num_rows", num_rows)
    if is_precomputed_logits(teacher):
        load_teacher_logits(teacher, num_rows=num_rows, num_classes=num_classes)
        return num_classes
    module = as_teacher(teacher)
    if sample is not None:
        probe = {k: v[:2] for k, v in sample.items()} if isinstance(sample, Mapping) else sample[:2]
        where = "the sample inputs"
    elif input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if any(d < 1 for d in shape):
            raise InputError(f"input_shape must hold positive sizes, got {shape} instead.")
        ref = _reference_tensor(module)
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
        probe = torch.zeros((2, *shape), dtype=dtype)
        where = f"inputs of shape (N, {', '.join(map(str, shape))})"
    else:
        raise InputError("check_compatible needs input_shape or sample to probe a model teacher, got neither.")
    try:
        out = teacher_logits(module, probe, batch_size=2)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise InputError(
            f"teacher must accept {where} and return (N, C) logits; it failed instead with: {err}"
        ) from err
    if out.shape[1] != num_classes:
        raise InputError(
            f"teacher must predict num_classes={num_classes} classes (the data's), "
            f"got {out.shape[1]} instead."
        )
    return num_classes
