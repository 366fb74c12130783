"""Validated configurations for ``darkknowledge train`` and ``darkknowledge run``: the one place for defaults.

A config is YAML read with ``yaml.safe_load`` (never a tag that runs code) into pydantic models that
reject unknown keys and wrong types with a message naming the key, e.g.::

    Unknown config key 'student.modle' (did you mean 'model'?)
    Config key 'distill.temperature' must be > 0, got -1.

Every field has its default here and nowhere else; the resolved config (defaults filled in) is
saved beside the results so a run can be repeated exactly.

Example (the embedded default, digits)::

    >>> cfg = ExperimentConfig()
    >>> cfg.dataset.name, cfg.distill.temperature
    ('digits', 4.0)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    "parse_config",
]


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=False)


class DatasetConfig(_Strict):
    """Which data, and how it is split and standardised (statistics from the training split only)."""

    name: str = "digits"
    data_dir: str | None = None
    download: bool | None = None
    label_column: str | None = None
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0
    standardize: bool = True


class ModelConfig(_Strict):
    """A model by registry name and options, as ``darkknowledge.models.build_model`` takes them."""

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)


class AugmentConfig(_Strict):
    """Random flips and shifts of training images (``darkknowledge.augment.ImageAugment``)."""

    hflip: bool = False
    shift: int = Field(0, ge=0)
    fill: float = Field(0.0, allow_inf_nan=False)


class TrainConfig(_Strict):
    """Hyperparameters of ``darkknowledge.train.fit`` (minibatch SGD of the notes)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    lr_schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    early_stopping_patience: int | None = Field(None, ge=1)
    max_grad_norm: float | None = Field(None, gt=0.0)
    augment: AugmentConfig | None = None

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``fit``."""
        return self.model_dump()


class TeacherConfig(_Strict):
    """The teacher: trained here (one model or an ensemble of ``members``), or loaded from ``run_dir``."""

    run_dir: str | None = None
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(name="mlp", options={"hidden": [256, 256], "dropout": 0.2})
    )
    members: int = Field(1, ge=1)
    bagging: bool = False
    combine: Literal["prob", "logprob"] = "prob"
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=40, weight_decay=1e-4))


class StudentConfig(_Strict):
    """The small model, trained alone and by distillation with the same recipe and epochs."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="mlp", options={"hidden": [16]}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=40))

    @model_validator(mode="after")
    def _no_augment(self) -> StudentConfig:
        if self.train.augment is not None:
            raise ValueError(
                "student.train.augment must be null: the cached soft targets are the teacher's outputs for "
                "the unaugmented transfer set, so the distilled student cannot see augmented images "
                "(and the student alone keeps the same recipe)"
            )
        return self


class SweepConfig(_Strict):
    """Grid of (temperature, alpha) tried on the validation split; empty lists switch the sweep off."""

    temperatures: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.5])
    lrs: list[float] = Field(default_factory=list)
    epochs: int | None = Field(None, ge=1)

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, v: list[float]) -> list[float]:
        if any(not (t > 0) for t in v):
            raise ValueError(f"every temperature must be > 0, got {v}")
        return v

    @field_validator("alphas")
    @classmethod
    def _alphas_in_unit_interval(cls, v: list[float]) -> list[float]:
        if any(not (0.0 <= a <= 1.0) for a in v):
            raise ValueError(f"every alpha must be in [0, 1], got {v}")
        return v

    @field_validator("lrs")
    @classmethod
    def _positive_lrs(cls, v: list[float]) -> list[float]:
        if any(not (lr > 0) for lr in v):
            raise ValueError(f"every learning rate must be > 0, got {v}")
        return v


class DistillConfig(_Strict):
    """Hinton et al.'s loss: alpha * CE(hard labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""

    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.1, ge=0.0, le=1.0)
    divergence: Literal["kl", "reverse_kl", "js"] = "kl"
    lr: float | None = Field(None, gt=0.0)
    max_grad_norm: float | None = Field(5.0, gt=0.0, allow_inf_nan=False)
    transfer: Literal["train", "unlabelled"] = "train"
    transfer_fraction: float = Field(1.0, gt=0.0, le=1.0)
    omit_class: int | None = Field(None, ge=0)
    sweep: SweepConfig = Field(default_factory=SweepConfig)


class SoftTargetConfig(_Strict):
    """How teacher logits are cached on disk (raw logits: one cache serves every temperature)."""

    dtype: Literal["float32", "float16"] = "float32"
    top_k: int | None = Field(None, ge=1)


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

    @model_validator(mode="after")
    def _non_empty_seeds(self) -> ExperimentConfig:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        return self


class TrainRunConfig(_Strict):
    """``darkknowledge train``: fit one model and write its run folder."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0
    out_dir: str = "runs/train"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    amp: bool = False


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
    return f"Config key {dotted!r}: {err['msg']}; got {got!r}."


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


def load_config(path: str | Path, model: type[_Strict] = ExperimentConfig) -> Any:
    """Read a YAML file with ``yaml.safe_load`` and validate it (see ``parse_config``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {exc}") from None
    return parse_config(raw, model)
