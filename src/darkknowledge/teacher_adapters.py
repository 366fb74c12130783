"""Teacher adapters: turn what people have into modules whose ``forward(x)`` returns ``(B, C)`` logits.

Each adapter is an ``nn.Module`` so that everything downstream (:func:`~darkknowledge.teachers.teacher_logits`,
the soft-target cache, ensembles, distillation) sees one kind of object:

* :class:`LogitsOf` -- a module or any callable whose output is a logits tensor, a tuple / list
  (its first element), a dict or a Hugging Face ``ModelOutput`` (its ``"logits"``); ``output=``
  (a key, an index or a callable applied to the raw output) overrides the guess. A dict input
  ``x`` (``input_ids``, ``attention_mask``, ``pixel_values``, ...) is passed as keyword arguments.
* :class:`EstimatorTeacher` -- an estimator with ``predict_proba`` (scikit-learn, LightGBM's
  scikit-learn API): its probabilities become *floored* log-probabilities,
  ``log(max(p, floor))`` with ``floor = PROBA_FLOOR = 1e-7`` (a class the estimator calls impossible
  gets ``log 1e-7 ~ -16.1`` nats instead of ``-inf``). Log-probabilities are logits up to a per-row
  constant, which softmax ignores. Inputs are flattened to ``(B, D)`` float64 NumPy arrays.
  :func:`cross_fit_logits` gives out-of-fold predictions for the training rows.
* :class:`OnnxTeacher` -- an ``.onnx`` file run with onnxruntime on the CPU.
* :func:`load_teacher_logits` -- precomputed ``(N, C)`` logits (tensor, array, ``.npy``,
  ``.safetensors``), aligned with the data's rows.
* :func:`load_hf_classifier` -- a local Hugging Face model folder (``config.json`` + safetensors).

Adapters without torch parameters define ``content_fingerprint() -> str`` (the SHA-256 of the ONNX
file's bytes; of an estimator's parameters and fitted state) so the soft-target cache keys them by
content. torchvision / timm architectures by name are not supported yet.

Optional dependencies are imported inside the functions that need them; a missing one raises
:class:`~darkknowledge.errors.InputError` naming the ``pip install "darkknowledge[extra]"`` to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from darkknowledge._checks import check_positive_int
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = [
    "PROBA_FLOOR",
    "EstimatorTeacher",
    "LogitsOf",
    "OnnxTeacher",
    "cross_fit_logits",
    "extract_logits",
    "is_hf_folder",
    "load_hf_classifier",
    "load_teacher_logits",
    "probabilities_to_logits",
]

PROBA_FLOOR = 1e-7
"""Probabilities are clamped to ``[PROBA_FLOOR, 1]`` before the log (``log 1e-7 ~ -16.1`` nats)."""


def _require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise an InputError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise InputError(
            f"this teacher needs the optional package {module.split('.')[0]!r}: "
            f'run pip install "darkknowledge[{extra}]" (got ImportError: {err} instead).'
        ) from err


# --------------------------------------------------------------------------------------------
# modules and callables


def extract_logits(out: Any, output: str | int | Callable[[Any], Any] | None = None) -> torch.Tensor:
    """Pick the logits out of a model's raw output.

    Args:
        out: what the model returned.
        output: ``None`` (guess: a tensor as is; a tuple / list's first element; a mapping's or a
            ``ModelOutput``'s ``"logits"``); a key / attribute name; an index; or a callable
            ``raw_output -> tensor``.

    Returns:
        The tensor (not checked for shape here).

    Example:
        >>> z = torch.zeros(2, 3)
        >>> extract_logits({"logits": z, "loss": None}) is z, extract_logits((z, 1)) is z
        (True, True)
    """
    if callable(output):
        picked = output(out)
    elif output is not None:
        try:
            picked = out[output] if isinstance(out, (Mapping, list, tuple)) else getattr(out, output)
        except (KeyError, IndexError, AttributeError, TypeError) as err:
            raise InputError(f"output={output!r} must select the logits, but the teacher returned {_describe(out)}.") from err
    elif isinstance(out, torch.Tensor):
        return out
    elif isinstance(out, Mapping):  # dicts and Hugging Face ModelOutput (an OrderedDict)
        if "logits" not in out:
            raise InputError(
                f"teacher must return logits; it returned {_describe(out)} instead, with no 'logits' key: "
                "pass output=<key or callable> to as_teacher."
            )
        picked = out["logits"]
    elif isinstance(out, (tuple, list)) and len(out) > 0:
        picked = out[0]
    elif hasattr(out, "logits"):
        picked = out.logits
    else:
        raise InputError(
            f"teacher must return a logits tensor, a tuple, a dict or a ModelOutput, got {_describe(out)} instead: "
            "pass output=<key or callable> to as_teacher."
        )
    if not isinstance(picked, torch.Tensor):
        raise InputError(f"teacher's selected output must be a logits tensor, got {_describe(picked)} instead.")
    return picked


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out.keys())}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items"
    return f"a {type(out).__name__}"


def call_model(model: Callable[..., Any], x: Any) -> Any:
    """Call ``model(x)``, or ``model(**x)`` when ``x`` is a dict of tensors (keyword arguments)."""
    return model(**x) if isinstance(x, Mapping) else model(x)


class LogitsOf(nn.Module):
    """Wrap a module or callable so that ``forward(x)`` returns its ``(B, C)`` logits.

    Args:
        model: an ``nn.Module`` (registered as the submodule ``model``: its weights are in the
            ``state_dict`` and the cache key) or any callable ``x -> output``.
        output: see :func:`extract_logits`; ``None`` guesses.

    A plain callable has no weights to hash: its cache key is unique to this wrapper object, so
    logits are never reused across processes for it (wrap the model in an ``nn.Module`` for that).

    Example:
        >>> class Net(nn.Module):
        ...     def forward(self, input_ids, attention_mask):
        ...         return {"logits": (input_ids * attention_mask).float()[:, :2]}
        >>> t = LogitsOf(Net())
        >>> t({"input_ids": torch.ones(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long)}).shape
        torch.Size([4, 2])
    """

    def __init__(self, model: Callable[..., Any], *, output: str | int | Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        if not callable(model):
            raise InputTypeError(f"model must be an nn.Module or a callable, got {type(model).__name__} instead.")
        if output is not None and not (callable(output) or isinstance(output, (str, int))):
            raise InputTypeError(
                f"output must be None, a key, an index or a callable, got {type(output).__name__} instead."
            )
        self.output = output
        if isinstance(model, nn.Module):
            self.model = model
            self._callable = None
        else:
            self._callable = model
            owner = getattr(model, "__self__", None)
            if isinstance(owner, nn.Module):  # a bound method of a module: its weights are the content
                self.owner = owner
            self._token = uuid.uuid4().hex

    def extra_repr(self) -> str:
        out = self.output if not callable(self.output) else getattr(self.output, "__qualname__", "callable")
        fn = "" if self._callable is None else f"callable={getattr(self._callable, '__qualname__', type(self._callable).__name__)}, "
        return f"{fn}output={out!r}"

    def content_fingerprint(self) -> str:
        """The wrapped callable's identity (modules are keyed by their ``state_dict`` instead)."""
        if self._callable is None:
            return ""
        if hasattr(self, "owner"):
            return f"method:{getattr(self._callable, '__qualname__', '')}"
        return f"callable:{self._token}"

    def forward(self, x: Any) -> torch.Tensor:
        """Return the ``(B, C)`` logits of the wrapped model for ``x`` (tensor or dict of tensors)."""
        fn = self.model if self._callable is None else self._callable
        return extract_logits(call_model(fn, x), self.output)


# --------------------------------------------------------------------------------------------
# probabilities -> logits, estimators, cross-fitting


def probabilities_to_logits(p: Any, *, floor: float = PROBA_FLOOR) -> torch.Tensor:
    """Floored natural-log probabilities, ``log(clamp(p, floor, 1))``: logits up to a per-row constant.

    Args:
        p: ``(N, C)`` probabilities (array or tensor; rows sum to 1).
        floor: the smallest probability kept, in ``(0, 1)``; default :data:`PROBA_FLOOR` ``= 1e-7``.

    Returns:
        ``(N, C)`` float32 tensor; ``softmax`` of it is ``clamp(p, floor)`` renormalised.

    Example:
        >>> probabilities_to_logits([[0.5, 0.5, 0.0]])
        tensor([[ -0.6931,  -0.6931, -16.1181]])
    """
    if not (isinstance(floor, float) and 0.0 < floor < 1.0):
        raise InputError(f"floor must be a float in (0, 1), got {floor!r} instead.")
    arr = p.detach().cpu().double().numpy() if isinstance(p, torch.Tensor) else np.asarray(p, dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"probabilities must have shape (N, C), got {arr.shape} instead.")
    if not np.isfinite(arr).all():
        raise InputError("probabilities must be finite, got NaN or infinity instead.")
    return torch.from_numpy(np.log(np.clip(arr, floor, 1.0))).float()  # (N, C)


def _to_numpy_2d(x: Any) -> np.ndarray:
    """``(B, *shape)`` tensor / array -> ``(B, D)`` float64 NumPy array."""
    if isinstance(x, Mapping):
        raise InputTypeError("x must be a tensor or array for an estimator teacher, got a dict instead.")
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)  # (B, D)


def _hash_state(h: Any, obj: Any, seen: set[int], depth: int = 0) -> None:
    """Feed a deterministic description of ``obj`` (arrays by bytes, objects by their attributes) to ``h``."""
    if depth > 40:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            h.update(f"objarray{obj.shape};".encode())
            for item in obj.reshape(-1):
                _hash_state(h, item, seen, depth + 1)
            return
        h.update(f"array:{obj.dtype.str}:{obj.shape};".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
        return
    if isinstance(obj, torch.Tensor):
        _hash_state(h, obj.detach().cpu().numpy(), seen, depth + 1)
        return
    if id(obj) in seen:
        h.update(b"<seen>")
        return
    seen.add(id(obj))
    if isinstance(obj, Mapping):
        h.update(f"map{len(obj)};".encode())
        for key in sorted(obj, key=repr):
            _hash_state(h, key, seen, depth + 1)
            _hash_state(h, obj[key], seen, depth + 1)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"{type(obj).__name__}{len(obj)};".encode())
        for item in items:
            _hash_state(h, item, seen, depth + 1)
        return
    h.update(f"obj:{type(obj).__module__}.{type(obj).__qualname__};".encode())
    to_string = getattr(obj, "model_to_string", None)  # LightGBM Booster: its trees as text
    if callable(to_string):
        h.update(str(to_string()).encode())
        return
    if isinstance(obj, np.random.RandomState):
        _hash_state(h, obj.get_state(), seen, depth + 1)
        return
    if callable(obj) and not hasattr(obj, "__dict__"):
        h.update(str(getattr(obj, "__qualname__", "")).encode())
        return
    state = None
    if hasattr(obj, "__dict__"):
        state = vars(obj)
    else:
        getstate = getattr(obj, "__getstate__", None)  # scikit-learn's Cython Tree: a dict of arrays
        try:
            state = getstate() if callable(getstate) else None
        except Exception:  # noqa: BLE001 - an opaque object contributes only its type
            state = None
    if isinstance(state, (Mapping, list, tuple)):
        _hash_state(h, state, seen, depth + 1)


def estimator_fingerprint(estimator: Any) -> str:
    """SHA-256 of an estimator's ``get_params()`` (sorted JSON) and its fitted state.

    The fitted state is read without pickling: NumPy arrays by bytes, nested objects by their
    attributes (scikit-learn trees through ``__getstate__()``, LightGBM boosters through
    ``model_to_string()``); opaque handles contribute only their type. Changing a parameter or
    refitting on other data changes the digest.
    """
    h = hashlib.sha256()
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    h.update(f"{type(estimator).__module__}.{type(estimator).__qualname__}|".encode())
    h.update(json.dumps(params, sort_keys=True, default=repr).encode())
    _hash_state(h, vars(estimator) if hasattr(estimator, "__dict__") else {}, set())
    return h.hexdigest()


def _check_fitted(estimator: Any) -> np.ndarray:
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise InputError(
            f"estimator must be fitted (have classes_) before it can teach, got an unfitted {type(estimator).__name__} instead."
        )
    classes = np.asarray(classes)
    if classes.dtype.kind not in "iub" or not np.array_equal(classes, np.arange(len(classes))):
        raise InputError(
            "estimator.classes_ must be the integer labels 0..C-1 (the columns of predict_proba are the "
            f"data's classes), got {classes.tolist()} instead."
        )
    return classes


class EstimatorTeacher(nn.Module):
    """An estimator with ``predict_proba`` as a teacher: ``forward(x) = log(max(p(x), floor))``.

    Args:
        estimator: a *fitted* classifier whose ``classes_`` are ``0..C-1`` (scikit-learn,
            LightGBM's ``LGBMClassifier``, ...).
        floor: probability floor before the log (default :data:`PROBA_FLOOR` ``= 1e-7``).

    Shapes: ``x`` ``(B, *shape)`` tensor, flattened to ``(B, D)`` float64 for the estimator;
    output ``(B, C)`` float32 log-probabilities on ``x``'s device.

    An estimator labelling the rows it was fitted on is overconfident there (a deep tree is 100%
    sure of every training row): for the training set's soft targets use :func:`cross_fit_logits`.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
        >>> t = EstimatorTeacher(LogisticRegression().fit(X, y))
        >>> t(torch.tensor([[0.0], [3.0]])).argmax(1).tolist()
        [0, 1]
    """

    def __init__(self, estimator: Any, *, floor: float = PROBA_FLOOR) -> None:
        super().__init__()
        if not callable(getattr(estimator, "predict_proba", None)):
            raise InputTypeError(
                f"estimator must have a predict_proba method, got {type(estimator).__name__} instead."
            )
        if not (isinstance(floor, float) and 0.0 < floor < 1.0):
            raise InputError(f"floor must be a float in (0, 1), got {floor!r} instead.")
        self.num_classes = len(_check_fitted(estimator))
        self.estimator = estimator
        self.floor = floor

    def extra_repr(self) -> str:
        return f"estimator={type(self.estimator).__name__}, num_classes={self.num_classes}, floor={self.floor}"

    @property
    def num_features(self) -> int | None:
        """The number of input features the estimator was fitted on (``n_features_in_``), if known."""
        n = getattr(self.estimator, "n_features_in_", None)
        return int(n) if n is not None else None

    def content_fingerprint(self) -> str:
        """SHA-256 of the estimator's parameters and fitted state (see :func:`estimator_fingerprint`)."""
        return f"estimator:{estimator_fingerprint(self.estimator)}|floor={self.floor!r}"

    def forward(self, x: Any) -> torch.Tensor:
        """Return ``(B, C)`` float32 floored log-probabilities for ``x``."""
        arr = _to_numpy_2d(x)  # (B, D) float64
        if self.num_features is not None and arr.shape[1] != self.num_features:
            raise InputError(
                f"x must have {self.num_features} features per row (the estimator's n_features_in_), "
                f"got {arr.shape[1]} instead."
            )
        out = probabilities_to_logits(self.estimator.predict_proba(arr), floor=self.floor)
        return out.to(x.device) if isinstance(x, torch.Tensor) else out


def cross_fit_logits(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    k: int = 5,
    seed: int = 0,
    num_classes: int | None = None,
    floor: float = PROBA_FLOOR,
) -> torch.Tensor:
    """Out-of-fold teacher logits: row ``i`` comes from a clone that was never fitted on row ``i``.

    The rows are split into ``k`` stratified folds (``StratifiedKFold(shuffle=True,
    random_state=seed)``); for each fold a fresh ``sklearn.base.clone(estimator)`` is fitted on the
    other ``k - 1`` folds and labels this one. Use it for the *training* rows' soft targets whenever
    the teacher was (or would be) fitted on those same rows: trees and nearest neighbours memorise
    their training set, so their in-sample probabilities are near one-hot and carry no dark
    knowledge. (For validation / test rows, use the teacher fitted on all training rows.)

    Args:
        estimator: an (unfitted or fitted) scikit-learn-compatible classifier; it is not modified.
        X: ``(N, *shape)`` inputs (flattened to ``(N, D)`` float64).
        y: ``(N,)`` integer labels in ``[0, num_classes)``.
        k: number of folds, ``2 <= k <= `` the smallest class count.
        seed: seed of the fold shuffle.
        num_classes: ``C``; default ``max(y) + 1``. A class missing from a fold's training rows
            gets probability ``floor`` on that fold.
        floor: probability floor before the log (:data:`PROBA_FLOOR`).

    Returns:
        ``(N, C)`` float32 floored log-probabilities, aligned with ``X``'s rows: precomputed teacher
        logits for ``distill``.

    Example:
        >>> from sklearn.neighbors import KNeighborsClassifier
        >>> X = np.arange(12.0).reshape(12, 1); y = np.array([0, 1] * 6)
        >>> z = cross_fit_logits(KNeighborsClassifier(1), X, y, k=3)
        >>> knn = KNeighborsClassifier(1).fit(X, y)  # in sample, a 1-NN is always right
        >>> float((knn.predict(X) == y).mean()), z.shape, bool((z.argmax(1).numpy() == y).mean() < 1)
        (1.0, torch.Size([12, 2]), True)
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    check_positive_int("k", k, minimum=2)
    check_positive_int("seed", seed, minimum=0)
    arr = _to_numpy_2d(X)  # (N, D)
    labels = (y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)).reshape(-1)
    if labels.shape[0] != arr.shape[0]:
        raise InputError(f"y must have one label per row of X ({arr.shape[0]}), got {labels.shape[0]} instead.")
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise InputError(f"y must hold integer labels >= 0, got dtype {labels.dtype} instead.")
    C = int(labels.max()) + 1 if num_classes is None else check_positive_int("num_classes", num_classes)
    if labels.size and labels.max() >= C:
        raise InputError(f"y must hold labels < num_classes={C}, got {int(labels.max())} instead.")
    counts = np.bincount(labels)  # (max(y) + 1,) rows per class
    smallest = int(counts[counts > 0].min())
    if k > smallest:
        raise InputError(f"k must be at most the smallest class count ({smallest}), got {k} instead.")
    proba = np.full((arr.shape[0], C), floor, dtype=np.float64)  # (N, C)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train_idx, test_idx in folds.split(arr, labels):
        model = clone(estimator).fit(arr[train_idx], labels[train_idx])
        cols = np.asarray(model.classes_).astype(np.int64)  # the classes this fold's model saw
        proba[np.ix_(test_idx, cols)] = model.predict_proba(arr[test_idx])
    return probabilities_to_logits(proba, floor=floor)


# --------------------------------------------------------------------------------------------
# ONNX

_ONNX_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(float16)": np.float16, "tensor(bool)": np.bool_}
OUTPUT_KINDS = ("logits", "probabilities")


class OnnxTeacher(nn.Module):
    """An ``.onnx`` model run with onnxruntime (CPU) as a teacher.

    Args:
        path: the ``.onnx`` file.
        output: the name of the graph output holding the class scores; default: the first output
            of rank 2 (a scikit-learn model exported with skl2onnx: ``output_probability``; export
            it with ``options={"zipmap": False}`` so that it is a plain tensor).
        output_kind: ``"logits"`` or ``"probabilities"`` (floored log, as for estimators). Default:
            ``"probabilities"`` when the output's name contains ``"prob"`` or the node producing it
            is a ``Softmax``; otherwise ``"logits"``.
        floor: probability floor for ``"probabilities"``.

    Inputs: a tensor is fed to the graph's single input (cast to its dtype; flattened to
    ``(B, D)`` when that input has rank 2); a dict of tensors feeds inputs by name. The cache
    key is the SHA-256 of the file's bytes (``content_fingerprint``).
    """

    def __init__(self, path: str | os.PathLike, *, output: str | None = None, output_kind: str | None = None,
                 floor: float = PROBA_FLOOR) -> None:
        super().__init__()
        ort = _require("onnxruntime", "onnx")
        onnx = _require("onnx", "onnx")
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(f"path must be an existing .onnx file, got {str(p)!r} instead.")
        data = p.read_bytes()
        self._sha256 = hashlib.sha256(data).hexdigest()
        try:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            graph = onnx.load_model_from_string(data).graph
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputError(f"path must be a valid ONNX model, got {p.name!r} which failed to load: {err}") from err
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        if output is None:
            ranked = [o for o in outputs if o.type.startswith("tensor(") and len(o.shape or []) == 2]
            if not ranked:
                described = [f"{o.name}: {o.type}" for o in outputs]
                raise InputError(
                    f"the ONNX model must have an output tensor of shape (N, C), got outputs {described} instead "
                    "(a scikit-learn export needs options={'zipmap': False})."
                )
            output = ranked[0].name
        elif output not in names:
            raise InputError(f"output must be one of the ONNX outputs {names}, got {output!r} instead.")
        if output_kind is None:
            producer = [n.op_type for n in graph.node if output in n.output]
            output_kind = "probabilities" if "prob" in output.lower() or producer[:1] == ["Softmax"] else "logits"
        if output_kind not in OUTPUT_KINDS:
            raise InputError(f"output_kind must be one of 'logits', 'probabilities'; got {output_kind!r} instead.")
        if not (isinstance(floor, float) and 0.0 < floor < 1.0):
            raise InputError(f"floor must be a float in (0, 1), got {floor!r} instead.")
        self.output = output
        self.output_kind = output_kind
        self.floor = floor
        self._inputs = [(i.name, i.type, list(i.shape or [])) for i in self.session.get_inputs()]

    def extra_repr(self) -> str:
        return f"output={self.output!r}, output_kind={self.output_kind!r}"

    def content_fingerprint(self) -> str:
        """SHA-256 of the ONNX file's bytes, plus the output read and how."""
        return f"onnx:{self._sha256}|{self.output}|{self.output_kind}|{self.floor!r}"

    def _feed(self, name: str, kind: str, shape: list, x: Any) -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if len(shape) == 2 and arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)  # (B, D)
        return arr.astype(_ONNX_NUMPY.get(kind, arr.dtype), copy=False)

    def forward(self, x: Any) -> torch.Tensor:
        """Return ``(B, C)`` float32 logits for ``x`` (tensor, or dict of tensors by input name)."""
        if isinstance(x, Mapping):
            missing = [n for n, _, _ in self._inputs if n not in x]
            if missing:
                raise InputError(f"x must hold the ONNX inputs {[n for n, _, _ in self._inputs]}, missing {missing}.")
            feed = {n: self._feed(n, t, s, x[n]) for n, t, s in self._inputs}
        else:
            if len(self._inputs) != 1:
                raise InputError(
                    f"x must be a dict for an ONNX model with inputs {[n for n, _, _ in self._inputs]}, got a tensor instead."
                )
            n, t, s = self._inputs[0]
            feed = {n: self._feed(n, t, s, x)}
        try:
            (raw,) = self.session.run([self.output], feed)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputError(f"the ONNX teacher failed on inputs {[(k, v.shape) for k, v in feed.items()]}: {err}") from err
        raw = np.asarray(raw)
        if self.output_kind == "probabilities":
            out = probabilities_to_logits(raw, floor=self.floor)
        else:
            out = torch.from_numpy(raw.astype(np.float32, copy=False))
        return out.to(x.device) if isinstance(x, torch.Tensor) else out


# --------------------------------------------------------------------------------------------
# precomputed logits


def load_teacher_logits(
    source: Any, *, num_rows: int | None = None, num_classes: int | None = None, key: str | None = None
) -> torch.Tensor:
    """Precomputed teacher logits as an ``(N, C)`` float32 tensor, checked.

    Args:
        source: a tensor or NumPy array, or a path to an ``.npy`` file (read without pickle) or a
            ``.safetensors`` file (its only tensor, or the tensor named ``key`` / ``"logits"``).
        num_rows: if given, ``N`` must equal it (the data's rows, in the same order).
        num_classes: if given, ``C`` must equal it.
        key: the tensor's name in a ``.safetensors`` file with several.

    Returns:
        ``(N, C)`` float32 CPU tensor (finite).

    Example:
        >>> load_teacher_logits(np.zeros((3, 2)), num_rows=3).shape
        torch.Size([3, 2])
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise MissingFileError(f"teacher logits file must exist, got {str(p)!r} instead.")
        if p.suffix == ".npy":
            try:
                arr = np.load(p, allow_pickle=False, mmap_mode="r")
            except ValueError as err:
                raise InputError(f"teacher logits file must be a numeric .npy array, got {p.name!r}: {err}") from err
            z = torch.from_numpy(np.array(arr, dtype=np.float32))
        elif p.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(p))
            name = key if key is not None else ("logits" if "logits" in tensors or len(tensors) != 1 else next(iter(tensors)))
            if name not in tensors:
                raise InputError(
                    f"key must name a tensor of {p.name!r} (one of {sorted(tensors)}), got {name!r} instead."
                )
            z = tensors[name]
        else:
            raise InputError(f"teacher logits file must end in .npy or .safetensors, got {p.name!r} instead.")
    elif isinstance(source, torch.Tensor):
        z = source.detach()
    elif isinstance(source, np.ndarray):
        if source.dtype.kind not in "fiu":
            raise InputTypeError(f"teacher logits must be numeric, got dtype {source.dtype} instead.")
        z = torch.from_numpy(np.array(source))
    else:
        raise InputTypeError(
            f"teacher logits must be a tensor, an array or a .npy / .safetensors path, got {type(source).__name__} instead."
        )
    z = z.to("cpu", torch.float32)
    if z.ndim != 2:
        raise InputError(f"teacher logits must have shape (N, C), got {tuple(z.shape)} instead.")
    if num_rows is not None and z.shape[0] != num_rows:
        raise InputError(
            f"teacher logits must have one row per sample of the data ({num_rows}), got {z.shape[0]} instead."
        )
    if num_classes is not None and z.shape[1] != num_classes:
        raise InputError(
            f"teacher logits must have num_classes={num_classes} columns (the data's), got {z.shape[1]} instead."
        )
    if not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).any(1).sum())
        raise InputError(f"teacher logits must be finite, got {bad} rows with NaN or infinity instead.")
    return z


# --------------------------------------------------------------------------------------------
# Hugging Face folders


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Hugging Face model folder (``config.json``, no darkknowledge ``model.json``)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and not (p / "model.json").exists()


def load_hf_classifier(path: str | os.PathLike, *, output: Any = None) -> LogitsOf:
    """Load a local Hugging Face classifier folder as a teacher (never from the network).

    The folder's ``config.json`` ``architectures`` decides the class: ``*ForSequenceClassification``
    -> ``AutoModelForSequenceClassification``, ``*ForImageClassification`` ->
    ``AutoModelForImageClassification``. Weights must be safetensors (``model.safetensors`` or a
    sharded ``model.safetensors.index.json``); loading uses ``local_files_only=True``.

    Returns:
        A :class:`LogitsOf` whose ``forward(x)`` takes the model's inputs as a dict (``input_ids``,
        ``attention_mask``, ...) or a tensor (``pixel_values``) and returns ``(B, C)`` logits.
    """
    p = Path(path)
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"path must hold a readable config.json, got {str(p)!r}: {err}") from err
    if not any((p / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise MissingFileError(
            f"a Hugging Face teacher folder must hold safetensors weights (model.safetensors), got none in {str(p)!r} instead."
        )
    archs = list(config.get("architectures") or [])
    transformers = _require("transformers", "hf")
    if any(a.endswith("ForSequenceClassification") for a in archs):
        auto = transformers.AutoModelForSequenceClassification
    elif any(a.endswith("ForImageClassification") for a in archs):
        auto = transformers.AutoModelForImageClassification
    else:
        raise InputError(
            "config.json architectures must name a *ForSequenceClassification or *ForImageClassification model, "
            f"got {archs} instead."
        )
    model = auto.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
    model.eval()
    return LogitsOf(model, output="logits" if output is None else output)
