"""Validated configurations for ``darkknowledge train`` and ``darkknowledge run``: the one place for defaults.

A config is YAML read with ``yaml.safe_load`` (never a tag that runs code) into pydantic models that
reject unknown keys and wrong types with a message naming the key, e.g.::

    Unknown config key 'student.modle' (did you mean 'model'?)
    Config key 'distill.temperature' must be > 0, got -1.

Every field has its default here and nowhere else; the resolved config (defaults filled in) is
saved beside the results so a run can be repeated exactly.

What a careless or hostile config gets, before any work is done:

* YAML aliases (``&a`` / ``*a``) may not expand the document past :data:`MAX_YAML_NODES`
  values: a few hundred bytes of nested aliases would expand to gigabytes; it is counted
  without expanding. ``<<`` merge keys, recursive aliases, a key given twice in one mapping
  (YAML lets the last win silently), nesting deeper than :data:`MAX_YAML_DEPTH` and a file
  larger than :data:`MAX_CONFIG_BYTES` are refused.
* every number must be finite (no ``.nan`` / ``.inf``), seeds in ``[0, 2**32 - 1]`` and
  distinct, learning rates in ``(0, MAX_LR]``, epochs at most :data:`MAX_EPOCHS`; names and
  paths must not be empty.
* checks that need the data (``distill.omit_class``, ``soft_targets.top_k``) are in
  :func:`check_config_against_data`, to call right after the data is loaded, before a teacher
  is trained.

A config changed after loading (command-line flags) goes through :func:`with_overrides`, which
validates the result again (``model_copy(update=...)`` would not).

Example (the embedded default, digits)::

    >>> cfg = ExperimentConfig()
    >>> cfg.dataset.name, cfg.distill.temperature
    ('digits', 4.0)
"""

from __future__ import annotations

import difflib
import math
import os
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from darkknowledge._checks import MAX_LR, TEMPERATURE_RANGE
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ModelConfig",
    "AugmentConfig",
    "TrainConfig",
    "TeacherConfig",
    "StudentConfig",
    "SweepConfig",
    "DistillConfig",
    "SoftTargetConfig",
    "ExperimentConfig",
    "TrainRunConfig",
    "load_config",
    "load_yaml",
    "parse_config",
    "with_overrides",
    "check_config_against_data",
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "MAX_SEED",
    "MAX_EPOCHS",
    "MAX_LR",
]

#: A config file larger than this is refused before it is parsed (configs are a few kB).
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of YAML mappings / lists accepted (the shipped configs use 4).
MAX_YAML_DEPTH = 32
#: Most values (mappings, lists, scalars) a config may hold with its aliases written out.
MAX_YAML_NODES = 100_000
#: Seeds are ``0 .. 2**32 - 1``: what NumPy and scikit-learn accept as a ``random_state``.
MAX_SEED = 2**32 - 1
#: More epochs than this is a typo, not a plan.
MAX_EPOCHS = 100_000
#: Largest batch size, number of seeds, ensemble members, classes and similar counts.
MAX_BATCH_SIZE = 1 << 24
MAX_SEEDS = 1000
MAX_MEMBERS = 1000
MAX_CLASSES = 100_000


class ConfigError(InputError):
    """An invalid configuration (a ``ValueError``): the message names the key and what was expected."""


class _Strict(BaseModel):
    # allow_inf_nan=False: every float field (and every float in a list) must be finite
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False, allow_inf_nan=False)


def _check_text(what: str, value: str | None) -> str | None:
    """A name or a path: ``None`` passes; an empty string or one holding a NUL byte does not."""
    if value is None:
        return None
    if not value.strip():
        raise InputError(f"{what} must not be empty, got {value!r} instead")
    if "\x00" in value:
        raise InputError(f"{what} must not contain a NUL byte, got {value!r} instead")
    return value


def _check_seed(what: str, seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"{what} must be an integer in [0, {MAX_SEED}], got {seed} instead")
    return seed


def _check_finite_tree(what: str, value: Any) -> None:
    """Every float in a nested structure of dicts / lists must be finite (model options)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value!r} instead")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite_tree(f"{what}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite_tree(f"{what}[{i}]", item)


class DatasetConfig(_Strict):
    """Which data, and how it is split and standardised (statistics from the training split only)."""

    name: str = "digits"
    data_dir: str | None = None
    download: bool | None = None
    label_column: str | None = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    standardize: bool = True
    # integer features (8-bit pixels stored in a .npz) are divided by this before the split: 255 maps them to
    # [0, 1] like the built-in MNIST loaders, whose float features are left as they are. With standardize false a
    # shifted image's fill 0 is then its background (per-pixel standardisation would make shifts meaningless).
    scale: float | None = Field(None, gt=0.0)
    # the file kinds by key, as the issue writes them: {csv: data/customers.csv, label: churned}
    csv: str | None = None
    parquet: str | None = None
    imagefolder: str | None = None
    label: str | None = None
    test: str | None = None  # the held-out test part of a csv / parquet / image folder data set, of the same kind

    @field_validator("name", "data_dir", "label_column", "csv", "parquet", "imagefolder", "label", "test")
    @classmethod
    def _not_empty(cls, v: str | None, info: Any) -> str | None:
        what = "the dataset name" if info.field_name == "name" else info.field_name
        return _check_text(what, v)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        """``csv:`` / ``parquet:`` / ``imagefolder:`` name the file instead of ``name:``; ``label`` is ``label_column``."""
        given = [k for k in ("csv", "parquet", "imagefolder") if getattr(self, k) is not None]
        if len(given) > 1:
            raise InputError(f"give one of csv, parquet and imagefolder, got {given} instead")
        if given and "name" in self.model_fields_set:
            raise InputError(f"give the data set either as name or as {given[0]}, not both")
        if self.label is not None and self.label_column is not None and self.label != self.label_column:
            raise InputError("label and label_column name the same thing; give one of them")
        if self.imagefolder is not None and (self.label or self.label_column):
            raise InputError("an image folder's labels are its class subfolders: label does not apply to it")
        if self.test is not None and not given:
            raise InputError("test names the test part of a csv, parquet or imagefolder data set; the other data "
                             "sets bring their own test split")
        return self

    @property
    def source(self) -> str:
        """The path or built-in name the data is read from."""
        return self.csv or self.parquet or self.imagefolder or self.name

    @property
    def label_name(self) -> str | None:
        return self.label or self.label_column


class ModelConfig(_Strict):
    """A model by registry name and options, as ``darkknowledge.models.build_model`` takes them."""

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, v: str) -> str:
        return _check_text("the model name", v)  # type: ignore[return-value]

    @field_validator("options")
    @classmethod
    def _finite_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_finite_tree("options", v)
        return v


class AugmentConfig(_Strict):
    """Random flips and shifts of training images (``darkknowledge.augment.ImageAugment``)."""

    hflip: bool = False
    shift: int = Field(0, ge=0, le=1024)
    fill: float = Field(0.0, allow_inf_nan=False)


class TrainConfig(_Strict):
    """Hyperparameters of ``darkknowledge.train.fit`` (minibatch SGD of the notes)."""

    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    lr: float = Field(0.05, gt=0.0, le=MAX_LR)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    lr_schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    early_stopping_patience: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    max_grad_norm: float | None = Field(None, gt=0.0)
    max_norm: float | None = Field(None, gt=0.0)  # Srivastava et al.'s max-norm constraint on hidden units
    augment: AugmentConfig | None = None
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> TrainConfig:
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise InputError(
                f"warmup_epochs must be < epochs={self.epochs}, got {self.warmup_epochs} instead"
            )
        return self

    @model_validator(mode="after")
    def _momentum_is_sgds(self) -> TrainConfig:
        defaults = type(self).model_fields
        given = [k for k in ("momentum", "nesterov") if getattr(self, k) != defaults[k].default]
        if self.optimizer != "sgd" and given:
            verb = "apply" if len(given) > 1 else "applies"
            raise InputError(f"{' and '.join(given)} {verb} to optimizer sgd only, got optimizer {self.optimizer!r}")
        return self

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``fit`` (momentum and nesterov only for SGD)."""
        kwargs = self.model_dump()
        if self.optimizer != "sgd":
            kwargs.pop("momentum")
            kwargs.pop("nesterov")
        return kwargs


class TeacherConfig(_Strict):
    """The teacher: trained here (one model or an ensemble of ``members``), or loaded from ``run_dir``."""

    run_dir: str | None = None
    onnx: str | None = None
    huggingface: str | None = None
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(name="mlp", options={"hidden": [256, 256], "dropout": 0.2})
    )
    members: int = Field(1, ge=1, le=MAX_MEMBERS)
    bagging: bool = False
    combine: Literal["prob", "logprob"] = "prob"
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=40, weight_decay=1e-4))

    @field_validator("run_dir", "onnx", "huggingface")
    @classmethod
    def _path_not_empty(cls, v: str | None, info: Any) -> str | None:
        return _check_text(f"teacher.{info.field_name}", v)

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        """A teacher is trained here (model, train) or loaded from one of run_dir, onnx, huggingface."""
        given = [k for k in ("run_dir", "onnx", "huggingface") if getattr(self, k) is not None]
        if len(given) > 1:
            raise InputError(f"give one of run_dir, onnx and huggingface, got {given} instead")
        trained_here = sorted({"model", "members", "bagging", "train"} & self.model_fields_set)
        if given and trained_here:
            raise InputError(f"a teacher loaded from {given[0]} is not trained here: drop {trained_here}")
        return self

    @property
    def source(self) -> str | None:
        """The file or folder the teacher is loaded from; None when it is trained here."""
        return self.run_dir or self.onnx or self.huggingface


class StudentConfig(_Strict):
    """The small model, trained alone and by distillation with the same recipe and epochs."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="mlp", options={"hidden": [16]}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=40))
    # train the student alone too (the table's baseline); false skips it when another run measured it
    alone: bool = True


def _distinct(what: str, values: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise InputError(f"every {what} must be listed once, got {v!r} twice in {values} instead")
        seen.add(v)
    return values


class SweepConfig(_Strict):
    """Grid of (temperature, alpha) tried on the validation split; empty lists switch the sweep off."""

    temperatures: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.5])
    lrs: list[float] = Field(default_factory=list)
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, v: list[float]) -> list[float]:
        if any(not (t > 0) for t in v):
            raise InputError(f"every temperature must be > 0, got {v}")
        lo, hi = TEMPERATURE_RANGE
        if any(not (lo <= t <= hi) for t in v):
            raise InputError(f"every temperature must be in [{lo:g}, {hi:g}] (the loss's exact range)")
        return _distinct("temperature", v)

    @field_validator("alphas")
    @classmethod
    def _alphas_in_unit_interval(cls, v: list[float]) -> list[float]:
        if any(not (0.0 <= a <= 1.0) for a in v):
            raise InputError(f"every alpha must be in [0, 1], got {v}")
        return _distinct("alpha", v)

    @field_validator("lrs")
    @classmethod
    def _positive_lrs(cls, v: list[float]) -> list[float]:
        if any(not (0 < lr <= MAX_LR) for lr in v):
            raise InputError(f"every learning rate must be in (0, {MAX_LR:g}], got {v}")
        return _distinct("learning rate", v)

    @model_validator(mode="after")
    def _both_or_neither(self) -> SweepConfig:
        if bool(self.temperatures) != bool(self.alphas):
            raise InputError(
                "temperatures and alphas must both be empty (no sweep) or both list values, got "
                f"temperatures {self.temperatures} and alphas {self.alphas} instead"
            )
        if self.lrs and not self.temperatures:
            raise InputError(
                f"lrs {self.lrs} has no effect without a sweep: expected temperatures and alphas to "
                "list values, or lrs to be empty"
            )
        return self


class DistillConfig(_Strict):
    """Hinton et al.'s loss: alpha * CE(hard labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""

    temperature: float = Field(4.0, gt=0.0)
    teacher_mode: Literal["auto", "cached", "online"] = "auto"
    alpha: float = Field(0.1, ge=0.0, le=1.0)
    divergence: Literal["kl", "reverse_kl", "js"] = "kl"
    lr: float | None = Field(None, gt=0.0, le=MAX_LR)
    max_grad_norm: float | None = Field(5.0, gt=0.0, allow_inf_nan=False)
    transfer: Literal["train", "unlabelled"] = "train"
    transfer_fraction: float = Field(1.0, gt=0.0, le=1.0)
    omit_class: int | None = Field(None, ge=0, lt=MAX_CLASSES)
    # only these classes in the transfer set (Hinton's 7s and 8s); the others' biases are then raised together
    transfer_classes: list[int] | None = None
    sweep: SweepConfig = Field(default_factory=SweepConfig)

    @field_validator("transfer_classes")
    @classmethod
    def _transfer_classes(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return None
        if not v:
            raise InputError("transfer_classes must name at least one class, got an empty list instead")
        if any(c < 0 or c >= MAX_CLASSES for c in v):
            raise InputError(f"transfer_classes must hold class ids in [0, {MAX_CLASSES - 1}], got {v} instead")
        return _distinct("transfer class", v)

    @model_validator(mode="after")
    def _omit_or_keep(self) -> DistillConfig:
        if self.omit_class is not None and self.transfer_classes is not None:
            raise InputError("give omit_class or transfer_classes, not both: the classes missing from the transfer "
                             "set are the ones transfer_classes leaves out")
        return self

    @field_validator("temperature")
    @classmethod
    def _temperature_in_range(cls, t: float) -> float:
        lo, hi = TEMPERATURE_RANGE
        if not lo <= t <= hi:
            raise InputError(f"temperature must be in [{lo:g}, {hi:g}] (the loss's exact range)")
        return t


class SoftTargetConfig(_Strict):
    """How teacher logits are cached on disk (raw logits: one cache serves every temperature)."""

    dtype: Literal["float32", "float16"] = "float32"
    top_k: int | None = Field(None, ge=1, le=MAX_CLASSES)


class ExperimentConfig(_Strict):
    """``darkknowledge run``: data -> teacher(s) -> soft targets -> students -> evaluation -> report."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    soft_targets: SoftTargetConfig = Field(default_factory=SoftTargetConfig)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    out_dir: str = "runs/digits"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    amp: bool = False

    @field_validator("out_dir")
    @classmethod
    def _out_dir_not_empty(cls, v: str) -> str:
        return _check_text("out_dir", v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _augmented_students_need_an_online_teacher(self) -> ExperimentConfig:
        if self.student.train.augment is not None and self.distill.teacher_mode == "cached":
            raise InputError(
                "student.train.augment needs distill.teacher_mode online (or auto): cached soft targets are the "
                "teacher's outputs for the unaugmented transfer set, not for the views the student sees"
            )
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise InputError("seeds must list at least one seed")
        if len(seeds) > MAX_SEEDS:
            raise InputError(f"seeds must list at most {MAX_SEEDS} seeds, got {len(seeds)} instead")
        for seed in seeds:
            _check_seed("every seed", seed)
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            raise InputError(
                f"seeds must be distinct, got {seeds} instead ({', '.join(map(str, twice))} more "
                "than once): a repeated seed repeats a run and understates the spread over seeds"
            )
        return seeds


class TrainRunConfig(_Strict):
    """``darkknowledge train``: fit one model and write its run folder."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    out_dir: str = "runs/train"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    amp: bool = False

    @field_validator("out_dir")
    @classmethod
    def _out_dir_not_empty(cls, v: str) -> str:
        return _check_text("out_dir", v)  # type: ignore[return-value]


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at ``loc`` (the parent of the offending key) in ``model``."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if current is None:
            return []
    return list(current.model_fields)


def _format_error(model: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        valid = _valid_keys(model, loc[:-1])
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = f" Valid keys here: {', '.join(valid)}." if valid else ""
        return f"Unknown config key {dotted!r}{hint}.{listing}"
    got = err.get("input")
    if not loc:
        return f"Config: {err['msg']}."
    if isinstance(got, dict):  # a check across keys: the message names them, the mapping is noise
        return f"Config key {dotted!r}: {err['msg']}."
    text = repr(got)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"Config key {dotted!r}: {err['msg']}; got {text}."


def parse_config(raw: Any, model: type[_Strict] = ExperimentConfig) -> Any:
    """Validate a mapping (e.g. from YAML) into ``model``; raise ``ConfigError`` naming every bad key.

    >>> parse_config({"distill": {"temperature": 2}}).distill.temperature
    2.0
    >>> parse_config({"distill": {"temprature": 2}})
    Traceback (most recent call last):
    ...
    darkknowledge.config.ConfigError: Unknown config key 'distill.temprature' (did you mean 'temperature'?)...
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"A config must be a mapping of keys to values, got {type(raw).__name__} instead.")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        messages = [_format_error(model, e) for e in exc.errors()]
        raise ConfigError(" ".join(messages)) from None


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` made strict: bounded alias expansion, no merge keys, no key twice, bounded depth.

    It builds what ``yaml.safe_load(text)`` would (plain dicts, lists and scalars; no tag runs code),
    or refuses. Anchors and aliases are allowed (``yaml.safe_dump`` writes them for shared
    values), but the size the document would have with every alias written out is counted as
    it is composed, without expanding anything, and over :data:`MAX_YAML_NODES` it is refused:
    a document of nested aliases ("billion laughs") costs nothing. A recursive alias is refused
    too, and a duplicated key with both line numbers.
    """

    def __init__(self, stream: str, label: str) -> None:
        super().__init__(stream)
        self._label = label
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded

    def _fail(self, mark: Any, what: str) -> ConfigError:
        line = f" line {mark.line + 1}" if mark is not None else ""
        return ConfigError(f"{self._label}{line}: {what}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # the anchored node itself, shared, not copied
            if id(node) not in self._sizes:
                raise self._fail(
                    event.start_mark,
                    f"the alias *{event.anchor} refers to a mapping or list that contains it: expected "
                    "a structure that is not recursive.",
                )
            return node
        nested = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if nested:
            self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise self._fail(
                    event.start_mark,
                    f"expected mappings and lists nested at most {MAX_YAML_DEPTH} deep, got deeper nesting instead.",
                )
            node = super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1
        # the size the document would have with every alias written out, without writing any out
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes.get(id(item), 1) for item in node.value)
        else:
            size = 1
        if size > MAX_YAML_NODES:
            raise self._fail(
                event.start_mark,
                f"expected at most {MAX_YAML_NODES} values with every alias written out, got {size} instead "
                "(nested aliases multiply a small file's size).",
            )
        self._sizes[id(node)] = size
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self._fail(
                        key_node.start_mark, "YAML merge keys (<<) are not allowed in a config; write the keys out."
                    )
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: the constructor refuses it
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                if first is not None:
                    raise self._fail(
                        key_node.start_mark,
                        f"the key {key!r} appears twice in one mapping (first on line {first}); "
                        "expected each key once (YAML would silently keep the last).",
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path, *, what: str = "Config file") -> Any:
    """Read one YAML document strictly (see :class:`_ConfigLoader`): the package's only YAML reader.

    Raises ``FileNotFoundError`` for a missing file, ``ConfigError`` (a ``ValueError``) for a
    folder, a FIFO or device, a file over :data:`MAX_CONFIG_BYTES`, text that is not UTF-8,
    invalid YAML, anchors / aliases, duplicated keys or too deep nesting; the message names the file.
    """
    path = Path(path)
    label = f"{what} {str(path)!r}"
    try:
        info = os.stat(path)  # stat, not open: opening a FIFO would block
    except FileNotFoundError:
        raise MissingFileError(f"{label} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"{label} cannot be read ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{label} is a folder: expected a YAML file.")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{label} is not a regular file (a FIFO, socket or device): expected a YAML file.")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{label} must be at most {MAX_CONFIG_BYTES} bytes, got {info.st_size} bytes instead."
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{label} cannot be read ({exc.strerror or exc}).") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{label} must be at most {MAX_CONFIG_BYTES} bytes, got more instead.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label} must be UTF-8 text, got a byte it cannot decode ({exc}).") from None
    loader = None
    try:
        loader = _ConfigLoader(text, label)  # the reader checks the characters here already
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{label} is nested too deeply to read.") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_config(path: str | Path, model: type[_Strict] = ExperimentConfig) -> Any:
    """Read a YAML file strictly (:func:`load_yaml`) and validate it (see ``parse_config``).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "c.yaml")
    >>> _ = open(path, "w").write("seed: 1\\nseed: 2\\n")
    >>> load_config(path, TrainRunConfig)
    Traceback (most recent call last):
    ...
    darkknowledge.config.ConfigError: Config file '...c.yaml' line 2: the key 'seed' appears twice in one mapping (first on line 1)...
    """
    return parse_config(load_yaml(path), model)


def _merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def with_overrides(cfg: _Strict, **updates: Any) -> Any:
    """A copy of ``cfg`` with ``updates`` applied (nested dicts merged), **validated again**.

    The command line's overrides go through here: ``cfg.model_copy(update=...)`` skips
    validation, so ``--seeds 0 0`` would pass.

    >>> with_overrides(ExperimentConfig(), seeds=[3, 4]).seeds
    [3, 4]
    >>> with_overrides(ExperimentConfig(), distill={"alpha": 0.5}).distill.temperature
    4.0
    >>> with_overrides(ExperimentConfig(), seeds=[0, 0])
    Traceback (most recent call last):
    ...
    darkknowledge.config.ConfigError: Config key 'seeds'... seeds must be distinct, got [0, 0] instead...
    """
    if not isinstance(cfg, _Strict):
        raise InputTypeError(f"cfg must be a config (ExperimentConfig, TrainRunConfig), got {type(cfg).__name__} instead.")
    # only what was set: a default written out would count as given (e.g. a teacher's model beside its run_dir)
    return parse_config(_merge(cfg.model_dump(exclude_unset=True), updates), type(cfg))


def check_config_against_data(cfg: _Strict, *, num_classes: int) -> None:
    """The checks that need the data: call right after loading it, before any model is trained.

    ``distill.omit_class`` must be a class of the data and ``soft_targets.top_k`` at most its
    number of classes; a ``ConfigError`` names the key.

    >>> check_config_against_data(parse_config({"distill": {"omit_class": 12}}), num_classes=10)
    Traceback (most recent call last):
    ...
    darkknowledge.config.ConfigError: Config key 'distill.omit_class' must be a class of the data, in [0, 9], got 12 instead.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be an integer >= 1, got {num_classes!r} instead.")
    if isinstance(cfg, ExperimentConfig):
        omit = cfg.distill.omit_class
        if omit is not None and omit >= num_classes:
            raise ConfigError(
                f"Config key 'distill.omit_class' must be a class of the data, in [0, {num_classes - 1}], "
                f"got {omit} instead."
            )
        keep = cfg.distill.transfer_classes
        if keep is not None and max(keep) >= num_classes:
            raise ConfigError(
                f"Config key 'distill.transfer_classes' must list classes of the data, in [0, {num_classes - 1}], "
                f"got {keep} instead."
            )
        if keep is not None and len(keep) == num_classes:
            raise ConfigError(
                f"Config key 'distill.transfer_classes' lists every one of the {num_classes} classes: drop it "
                "(the transfer set is then the whole training split)."
            )
        top_k = cfg.soft_targets.top_k
        if top_k is not None and top_k > num_classes:
            raise ConfigError(
                f"Config key 'soft_targets.top_k' must be at most the number of classes ({num_classes}), "
                f"got {top_k} instead."
            )
