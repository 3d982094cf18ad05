"""Training configuration: one YAML file validated by pydantic, with ``section.key=value`` overrides.

An unknown key or a bad value raises :class:`InputError` with one line naming the key and what is
allowed. The resolved configuration is written to the run directory as ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from localframe.errors import InputError
from localframe.files import write_text


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    source: str = Field(description="'qm9', an MD17-style .npz, or any ASE-readable file")
    targets: list[str] = Field(default_factory=list, description="QM9 targets or extra scalar labels to learn")
    keys: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    format: str | None = None
    n_train: int | None = Field(default=None, gt=0)
    n_val: int | None = Field(default=None, gt=0)
    n_test: int | None = Field(default=None, gt=0)
    split_seed: int = 42


class ModelConfig(_Section):
    name: str = "leftnet"
    cutoff: float = Field(default=5.0, gt=0.1)
    hparams: dict[str, Any] = Field(default_factory=dict)


class LossWeights(_Section):
    energy: float = Field(default=1.0, ge=0)
    forces: float = Field(default=10.0, ge=0)
    stress: float = Field(default=0.0, ge=0)
    dipole: float = Field(default=0.0, ge=0)
    targets: float = Field(default=1.0, ge=0)


class TrainConfig(_Section):
    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_epochs: int = Field(default=1000, gt=0)
    max_time: float | None = Field(default=None, gt=0, description="wall-clock budget in minutes")
    warmup_steps: int = Field(default=100, ge=0)
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    plateau_patience: int = Field(default=10, gt=0)
    plateau_factor: float = Field(default=0.5, gt=0, lt=1)
    min_lr: float = Field(default=1e-6, ge=0)
    clip_grad: float | None = Field(default=10.0, gt=0)
    ema_decay: float | None = Field(default=0.99, ge=0, lt=1)
    loss: Literal["mse", "l1", "huber"] = "mse"
    weights: LossWeights = Field(default_factory=LossWeights)
    early_stopping: int | None = Field(default=None, gt=0, description="validations without improvement")
    checkpoint_minutes: float = Field(default=10.0, gt=0)
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    threads: int | None = Field(default=None, gt=0, description="torch threads (default: all cores)")


class TrainerConfig(_Section):
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(default=1, gt=0)
    strategy: str = "auto"


class RunConfig(_Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    run_dir: str = "runs/run"

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        from localframe import models

        if self.model.name not in models.available():
            raise ValueError(f"model.name {self.model.name!r} is not one of {', '.join(models.available())}")
        return self


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "config"
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"unknown key {key!r}"
    if kind == "missing":
        return f"missing required key {key!r}"
    return f"{key}: {message}"


def validate(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            section = _section_of(first["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            raise InputError(f"{_describe(first)}; allowed here: {allowed}", source) from None
        raise InputError(_describe(first), source) from None


def _section_of(loc) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    raw = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like section.key=value")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise InputError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = yaml.safe_load(value)
    return raw


def load(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (or start empty), apply overrides, validate."""
    raw: dict = {}
    source = str(path) if path else "config"
    if path:
        path = Path(path)
        if not path.exists():
            raise InputError("no such file", str(path))
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise InputError(f"invalid YAML: {str(err).splitlines()[0]}", str(path)) from None
        if not isinstance(raw, dict):
            raise InputError("a config must be a mapping of sections", str(path))
    return validate(apply_overrides(raw, list(overrides)), source)


def dump(config: RunConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
