"""The models of the notes, built by name and size: linear / logistic / softmax regression, MLP, small CNN.

One registry (:data:`MODEL_NAMES`) and one entry point, :func:`build_model`. Every model
takes a batch ``(N, *input_shape)`` and returns raw scores (logits), never probabilities:

============================  ==================================  ================
name                          architecture                        output
============================  ==================================  ================
``"linear"``                  flatten, ``Linear(D, K)``           ``(N, K)`` values
``"logistic"``                flatten, ``Linear(D, 1)``           ``(N,)`` logits
``"softmax-regression"``      flatten, ``Linear(D, C)``           ``(N, C)`` logits
``"mlp"``                     flatten, [Linear, ReLU, Dropout]*,  ``(N, C)`` logits
                              ``Linear(H, C)``
``"cnn"``                     [[Conv3x3, (BatchNorm), ReLU]*k,    ``(N, C)`` logits
                              MaxPool2]*, Linear, ReLU, Dropout,
                              ``Linear(H, C)``
============================  ==================================  ================

``D = prod(input_shape)``. Image input ``(N, 1, 28, 28)`` and flat input ``(N, 784)`` are
both accepted by the flattening models. The CNN reads images ``(C, H, W)``; given a flat
``input_shape = (H*H,)`` that is a perfect square (digits: ``(64,)``) it reshapes each row
to ``(1, H, H)`` itself.

Softmax regression on 28x28 images has the notes' 784 * 10 + 10 = 7,850 parameters.

Each built model carries its :class:`ModelSpec` as ``model.spec``; the spec is what
checkpoints store, so :func:`build_model_from_spec` rebuilds the architecture before the
weights are loaded.

Reference: Goodfellow, Bengio & Courville, *Deep Learning* (2016), ch. 6 and 9; LeCun et al.,
*Gradient-based learning applied to document recognition* (1998) for the LeNet layout;
Srivastava et al., *Dropout* (JMLR 2014).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from darkknowledge._checks import check_in_range, check_one_of, check_positive_int
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "MODEL_NAMES",
    "ModelSpec",
    "build_model",
    "build_model_from_spec",
    "count_parameters",
    "default_options",
]

#: The valid model names of :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = ("linear", "logistic", "softmax-regression", "mlp", "cnn")

# One source of defaults: every option a model accepts, with its default value.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {},
    "logistic": {},
    "softmax-regression": {},
    "mlp": {"hidden": (256, 256), "dropout": 0.0, "input_dropout": 0.0},
    "cnn": {"channels": (32, 64), "hidden": 128, "dropout": 0.0, "batchnorm": False, "convs_per_stage": 1},
}


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a model's architecture (not its weights).

    ``options`` holds every option resolved (defaults included) in JSON-friendly form
    (tuples as lists), so ``ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))``
    equals ``spec``.

    >>> spec = ModelSpec("mlp", (64,), 10, {"hidden": [32], "dropout": 0.0, "input_dropout": 0.0})
    >>> ModelSpec.from_dict(spec.to_dict()) == spec
    True
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict ``{"name", "input_shape", "num_classes", "options"}``."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "options": _jsonable(self.options),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        if not isinstance(d, Mapping):
            raise InputTypeError(f"spec must be a mapping, got {type(d).__name__} instead.")
        keys = {"name", "input_shape", "num_classes", "options"}
        unknown = sorted(set(d) - keys)
        if unknown:
            raise InputError(f"spec has unknown keys {unknown}; expected {sorted(keys)}.")
        missing = sorted(keys - {"options"} - set(d))
        if missing:
            raise InputError(f"spec is missing keys {missing}; expected {sorted(keys)}.")
        return cls(
            name=d["name"],
            input_shape=tuple(d["input_shape"]),
            num_classes=d["num_classes"],
            options=_jsonable(dict(d.get("options") or {})),
        )


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def default_options(name: str) -> dict[str, Any]:
    """The options a model accepts and their defaults.

    >>> default_options("cnn")
    {'channels': (32, 64), 'hidden': 128, 'dropout': 0.0, 'batchnorm': False, 'convs_per_stage': 1}
    """
    check_one_of("name", name, MODEL_NAMES)
    return dict(_DEFAULTS[name])


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (all of them, or only those with ``requires_grad``).

    >>> count_parameters(build_model("softmax-regression", input_shape=(1, 28, 28), num_classes=10))
    7850
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__} instead.")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model_from_spec(spec: ModelSpec | Mapping[str, Any], *, seed: int | None = None) -> nn.Module:
    """Rebuild a model from its :class:`ModelSpec` (or the spec's dict form, as checkpoints store it).

    >>> m = build_model("mlp", input_shape=(64,), num_classes=10, hidden=[32])
    >>> count_parameters(build_model_from_spec(m.spec.to_dict())) == count_parameters(m)
    True
    """
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.from_dict(spec)
    return build_model(
        spec.name,
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        options=spec.options,
        seed=seed,
    )


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...] | list[int],
    num_classes: int,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name; its resolved :class:`ModelSpec` is attached as ``model.spec``.

    Args:
        name: one of :data:`MODEL_NAMES`.
        input_shape: shape of one sample, e.g. ``(64,)`` or ``(1, 28, 28)``.
        num_classes: outputs: classes for classifiers, target dimensions for ``"linear"``
            (typically 1); ``"logistic"`` is binary and takes ``1`` or ``2`` (one logit either way).
        seed: if given, the weights are initialised from ``torch.manual_seed(seed)`` inside a
            forked RNG (the global RNG is left as it was); else from the global RNG.
        options: model options as a mapping (the ``options`` of a spec, so that
            ``build_model(**spec.to_dict())`` works); merged with ``**kwargs``.
        **kwargs: model options (see :func:`default_options`):
            ``mlp``: ``hidden`` (sizes of the hidden layers, default ``(256, 256)``; ``()``
            is softmax regression), ``dropout`` (after each hidden ReLU), ``input_dropout``
            (on the input), each in ``[0, 1)``;
            ``cnn``: ``channels`` (one 3x3 conv + 2x2 max-pool stage per entry, default
            ``(32, 64)``), ``hidden`` (fully connected width, 128), ``dropout`` (before the last layer).

    Returns:
        An ``nn.Module`` mapping ``(N, *input_shape)`` to logits ``(N, num_classes)``
        (``(N,)`` for ``"logistic"``).

    Raises:
        ValueError: unknown name (the message lists :data:`MODEL_NAMES`), unknown option,
            non-positive sizes, dropout outside ``[0, 1)``, an input too small for the CNN.

    Example:
        >>> model = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, hidden=(100,))
        >>> count_parameters(model)  # 784*100 + 100 + 100*10 + 10
        79510
        >>> model(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """
    check_one_of("name", name, MODEL_NAMES)
    input_shape = _check_shape(input_shape)
    check_positive_int("num_classes", num_classes)
    if seed is not None:
        check_positive_int("seed", seed, minimum=0)
    given = dict(options or {})
    overlap = sorted(set(given) & set(kwargs))
    if overlap:
        raise InputError(f"options {overlap} were given both in options= and as keywords; give each once.")
    given.update(kwargs)
    unknown = sorted(set(given) - set(_DEFAULTS[name]))
    if unknown:
        valid = sorted(_DEFAULTS[name]) or "none"
        raise InputError(f"unknown option(s) {unknown} for model {name!r}; valid options: {valid}.")
    resolved = {**_DEFAULTS[name], **given}

    with torch.device("meta"):  # first without memory: checks the options and counts the parameters
        _check_fits_in_memory(name, _BUILDERS[name](input_shape, num_classes, dict(resolved)))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = _BUILDERS[name](input_shape, num_classes, resolved)
    model.spec = ModelSpec(name, input_shape, num_classes, _jsonable(_normalise(resolved)))
    return model


def available_memory_bytes() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), else physical memory, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_fits_in_memory(name: str, probe: nn.Module) -> None:
    """Refuse a model whose float32 weights alone (``probe`` built on the meta device) exceed the memory available."""
    numel = sum(t.numel() for t in probe.parameters()) + sum(t.numel() for t in probe.buffers())
    need = 4 * numel  # bytes of float32 weights and buffers
    available = available_memory_bytes()
    if available is not None and need > available:
        raise InputError(
            f"model {name!r} would have {numel:,} parameters ({need / 2**30:,.1f} GiB of float32 weights), "
            f"more than the {available / 2**30:,.1f} GiB of memory available; choose smaller layers "
            "(training needs about 4x the weights: weights, gradients, momentum and the best weights)."
        )


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) == 0:
        raise InputTypeError(f"input_shape must be a non-empty tuple of ints, got {input_shape!r} instead.")
    for d in input_shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise InputError(f"input_shape must contain positive ints, got {tuple(input_shape)!r} instead.")
    return tuple(input_shape)


def _check_sizes(name: str, sizes: Any, *, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        sizes = (sizes,)
    if not isinstance(sizes, (tuple, list)):
        raise InputTypeError(f"{name} must be a tuple of positive ints, got {sizes!r} instead.")
    if not sizes and not allow_empty:
        raise InputError(f"{name} must have at least one entry, got {tuple(sizes)!r} instead.")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise InputError(f"{name} must be a tuple of positive ints, got {tuple(sizes)!r} instead.")
    return tuple(sizes)


def _check_dropout(name: str, p: Any) -> float:
    p = check_in_range(name, p, 0.0, 1.0)
    if p == 1.0:
        raise InputError(f"{name} must be in [0, 1), got {p!r} instead.")
    return p


def _normalise(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


class _SqueezeLast(nn.Module):
    """``(N, 1) -> (N,)``: the one logit of a binary classifier."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


class _ToImage(nn.Module):
    """Reshape each row to ``(C, H, W)``: accepts ``(N, C*H*W)`` as well as ``(N, C, H, W)``."""

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)  # (N, C, H, W)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _in_features(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


def _build_linear(input_shape, num_classes, options) -> nn.Module:
    return nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), out=nn.Linear(_in_features(input_shape), num_classes))
    )


def _build_logistic(input_shape, num_classes, options) -> nn.Module:
    if num_classes > 2:
        raise InputError(
            f"num_classes must be 1 or 2 for the binary 'logistic' model, got {num_classes} instead; "
            "use 'softmax-regression' for more classes."
        )
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            out=nn.Linear(_in_features(input_shape), 1),
            squeeze=_SqueezeLast(),  # (N, 1) -> (N,)
        )
    )


def _build_softmax_regression(input_shape, num_classes, options) -> nn.Module:
    return _build_linear(input_shape, num_classes, options)


def _build_mlp(input_shape, num_classes, options) -> nn.Module:
    hidden = _check_sizes("hidden", options["hidden"], allow_empty=True)
    dropout = _check_dropout("dropout", options["dropout"])
    input_dropout = _check_dropout("input_dropout", options["input_dropout"])
    options["hidden"] = hidden
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())  # (N, D)
    if input_dropout > 0:
        layers["input_dropout"] = nn.Dropout(input_dropout)
    width = _in_features(input_shape)
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)  # (N, h)
        layers[f"relu{i}"] = nn.ReLU()
        if dropout > 0:
            layers[f"dropout{i}"] = nn.Dropout(dropout)
        width = h
    layers["out"] = nn.Linear(width, num_classes)  # (N, C)
    return nn.Sequential(layers)


def _build_cnn(input_shape, num_classes, options) -> nn.Module:
    channels = _check_sizes("channels", options["channels"], allow_empty=False)
    hidden = check_positive_int("hidden", options["hidden"])
    dropout = _check_dropout("dropout", options["dropout"])
    batchnorm = options["batchnorm"]
    if not isinstance(batchnorm, bool):
        raise InputTypeError(f"batchnorm must be a bool, got {type(batchnorm).__name__} instead.")
    convs = check_positive_int("convs_per_stage", options["convs_per_stage"])
    options["channels"] = channels

    if len(input_shape) == 3:
        c_in, h, w = input_shape
    elif len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 == input_shape[0]:
        c_in, h, w = 1, math.isqrt(input_shape[0]), math.isqrt(input_shape[0])
    else:
        raise InputError(
            "input_shape must be (C, H, W) or flat (H*H,) with H*H a perfect square for the cnn, "
            f"got {input_shape!r} instead."
        )
    stages = len(channels)
    if h >> stages < 1 or w >> stages < 1:
        raise InputError(
            f"input of {h}x{w} pixels is too small for {stages} pooling stages (channels={channels}); "
            "use fewer channels entries."
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict(to_image=_ToImage((c_in, h, w)))  # (N, C, H, W)
    for i, c in enumerate(channels, start=1):
        for j in range(1, convs + 1):  # a stage of `convs` 3x3 convolutions at one resolution
            tag = f"{i}" if j == 1 else f"{i}_{j}"  # conv1, conv1_2, ...: one-conv stages keep their old names
            layers[f"conv{tag}"] = nn.Conv2d(c_in if j == 1 else c, c, kernel_size=3, padding=1,
                                             bias=not batchnorm)  # (N, c, h, w)
            if batchnorm:  # normalise each channel over the batch (running statistics in eval())
                layers[f"bn{tag}"] = nn.BatchNorm2d(c)
            layers[f"relu{tag}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)  # (N, c, h // 2, w // 2)
        c_in, h, w = c, h // 2, w // 2
    layers["flatten"] = nn.Flatten()  # (N, c * h * w)
    layers["fc"] = nn.Linear(c_in * h * w, hidden)  # (N, hidden)
    layers["relu_fc"] = nn.ReLU()
    if dropout > 0:
        layers["dropout"] = nn.Dropout(dropout)
    layers["out"] = nn.Linear(hidden, num_classes)  # (N, C)
    return nn.Sequential(layers)


_BUILDERS = {
    "linear": _build_linear,
    "logistic": _build_logistic,
    "softmax-regression": _build_softmax_regression,
    "mlp": _build_mlp,
    "cnn": _build_cnn,
}
