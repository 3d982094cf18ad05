"""Training configuration: one YAML file validated by pydantic, with ``section.key=value`` overrides.

An unknown key or a bad value raises :class:`InputError` with one line naming the key and what is
allowed, before any work starts: types, ranges and finiteness of every value, then the model (its
name, ``model.preset``, each hyperparameter's type against the model's signature, and one forward
and backward pass of the model on a water molecule, so that a model that cannot be built or
trained is refused here rather than after the data is loaded). ``model.preset`` (e.g.
``leftnet-qm9``) selects the model and its base hyperparameters and cutoff; ``model.hparams`` and an
explicit ``model.cutoff`` override them. The resolved configuration (preset applied) is written to
the run directory as ``config.yaml``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from localframe.errors import InputError, one_line
from localframe.files import write_text

MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_MINUTES = 1e6  # ~2 years; Lightning keeps durations in a C int of seconds
MAX_CUTOFF = 50.0  # Å; beyond this a neighbour list of a condensed structure does not fit in memory
#: hyperparameters set elsewhere in the config
RESERVED_HPARAMS = {"cutoff": "model.cutoff", "preset": "model.preset", "dipole": "the data (a dipole label)",
                    "targets": "data.targets"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Section):
    source: str = Field(description="'qm9', an MD17-style .npz, or any ASE-readable file")
    targets: list[str] = Field(default_factory=list, description="QM9 targets or extra scalar labels to learn")
    keys: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    format: str | None = None
    n_train: int | None = Field(default=None, gt=0)
    n_val: int | None = Field(default=None, gt=0)
    n_test: int | None = Field(default=None, gt=0)
    split_seed: int = Field(default=42, ge=0, le=MAX_SEED)
    train_offset: int | None = Field(default=None, ge=0, description="QM9: training and validation molecules from the "
                                     "standard training split after its first train_offset (disjoint from a run "
                                     "with data.n_train <= train_offset and from the validation and test splits)")

    @model_validator(mode="after")
    def _check_offset(self) -> "DataConfig":
        if self.train_offset is not None and self.source.lower() != "qm9":
            raise ValueError(f"data.train_offset applies to data.source qm9 only, not {self.source!r}")
        return self


class ModelConfig(_Section):
    name: str = "leftnet"
    preset: str | None = Field(default=None, description="e.g. 'leftnet-qm9': model name, hparams and cutoff")
    cutoff: float = Field(default=5.0, gt=0.1, le=MAX_CUTOFF)
    hparams: dict[str, Any] = Field(default_factory=dict)
    spe: dict[str, Any] | None = Field(default=None, description="SPE of the bond graph as an extra node input "
                                       "(localframe.nn.spe; {} for the defaults)")
    init: str = Field(default="model", description="model, pytorch, unit, virgo (localframe.nn.init), or a "
                      "pretrained model file (.pt) whose representation is fine-tuned")

    @model_validator(mode="after")
    def _check_init(self) -> "ModelConfig":
        from localframe.nn.init import CHOICES

        if self.init not in CHOICES and not self.init.endswith(".pt"):
            raise ValueError(f"model.init must be one of {', '.join(CHOICES)} or a model file (.pt), got {self.init!r}")
        if self.init.endswith(".pt") and not Path(self.init).is_file():
            raise ValueError(f"model.init {self.init}: no such model file")
        return self


class LossWeights(_Section):
    energy: float = Field(default=1.0, ge=0)
    forces: float = Field(default=10.0, ge=0)
    stress: float = Field(default=0.0, ge=0)
    dipole: float = Field(default=0.0, ge=0)
    targets: float = Field(default=1.0, ge=0)
    denoise: float = Field(default=0.0, ge=0, description="Noisy-Nodes coordinate-denoising loss (train.denoise_sigma)")


class TrainConfig(_Section):
    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_epochs: int = Field(default=1000, gt=0)
    max_time: float | None = Field(default=None, gt=0, le=MAX_MINUTES, description="wall-clock budget in minutes")
    warmup_steps: int = Field(default=100, ge=0)
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    plateau_patience: int = Field(default=10, gt=0)
    plateau_factor: float = Field(default=0.5, gt=0, lt=1)
    min_lr: float = Field(default=1e-6, ge=0)
    clip_grad: float | None = Field(default=10.0, gt=0)
    ema_decay: float | None = Field(default=0.99, ge=0, lt=1)
    loss: Literal["mse", "l1", "huber"] = "mse"
    weights: LossWeights = Field(default_factory=LossWeights)
    denoise_sigma: float = Field(default=0.04, gt=0, le=1.0, description="Å, coordinate noise of denoising")
    denoise_fraction: float = Field(default=1.0, gt=0, le=1.0, description="fraction of atoms noised (at least "
                                    "one per structure; DeNS partial corruption below 1)")
    denoise_forces: bool = Field(default=False, description="DeNS: the clean frame's forces as an input of the "
                                 "noised atoms (data with forces, off equilibrium)")
    early_stopping: int | None = Field(default=None, gt=0, description="validations without improvement")
    val_every: int | None = Field(default=None, gt=0, description="validate every this many optimizer steps "
                                  "(default: at the end of every epoch)")
    checkpoint_minutes: float = Field(default=10.0, gt=0, le=MAX_MINUTES)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    dtype: Literal["float32", "float64"] = "float32"
    threads: int | None = Field(default=None, gt=0, description="torch threads (default: all cores)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.schedule != "constant" and self.min_lr > self.lr:
            raise ValueError(f"train.min_lr {self.min_lr:g} is above train.lr {self.lr:g}")
        return self


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
    run_dir: str = Field(default="runs/run", min_length=1)


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "config"
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"unknown key {key!r}"
    if kind == "missing":
        return f"missing required key {key!r}"
    if kind == "value_error":  # our own validators name the key themselves
        return message.removeprefix("Value error, ")
    return f"{key}: {message} (got {error['input']!r})" if _short(error.get("input")) else f"{key}: {message}"


def _short(value) -> bool:
    return isinstance(value, (int, float, str, type(None))) and len(repr(value)) <= 40


def validate(raw: dict, source: str = "config") -> RunConfig:
    """A checked :class:`RunConfig` from a dict (the preset applied); problems raise :class:`InputError`."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            section = _section_of(first["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            raise InputError(f"{_describe(first)}; allowed here: {allowed}", source) from None
        raise InputError(_describe(first), source) from None
    try:
        _resolve_model(cfg.model)
        _check_model(cfg.model, cfg.train.dtype)
        if cfg.model.spe is not None:  # its options (the encoding adds to the model's embedding)
            from localframe import models

            models.create(cfg.model.name, cutoff=cfg.model.cutoff, spe=cfg.model.spe, **cfg.model.hparams)
        if cfg.model.init.endswith(".pt"):  # a pretrained file of this architecture
            from localframe.train.finetune import check_file

            check_file(cfg.model, cfg.model.init)
    except InputError as err:
        raise err.located(source) from None
    return cfg


# ---------------------------------------------------------------------------------- the model section
def _resolve_model(m: ModelConfig) -> None:
    """Check ``model.name``; apply ``model.preset`` (name, base hparams, cutoff unless set) in place."""
    from localframe import models

    if m.preset is not None:
        name, base = models.resolve_preset(m.preset)  # an unknown preset lists the known ones
        if "name" in m.model_fields_set and m.name != name:
            raise InputError(f"model.name {m.name!r} disagrees with model.preset {m.preset!r} (a {name} preset); "
                             "drop one of them")
        cutoff = base.pop("cutoff", None)
        if cutoff is not None and "cutoff" not in m.model_fields_set:
            m.cutoff = float(cutoff)
        m.name, m.hparams = name, {**base, **m.hparams}
    if m.name not in models.available():
        raise InputError(f"model.name {m.name!r} is not one of {', '.join(models.available())}")


def _check_model(m: ModelConfig, dtype: str) -> None:
    """Each hyperparameter against the model's signature, then one forward and backward pass."""
    import inspect

    from localframe import models

    parameters = inspect.signature(models.representation_class(m.name).__init__).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    allowed = [k for k, p in parameters.items() if k != "self" and k not in RESERVED_HPARAMS
               and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    for key, value in m.hparams.items():
        if key in RESERVED_HPARAMS:
            raise InputError(f"model.hparams.{key}: set {RESERVED_HPARAMS[key]} instead")
        if key not in parameters and not open_ended:
            raise InputError(f"unknown key 'model.hparams.{key}' for {m.name}; allowed here: {', '.join(allowed)}")
        if key in parameters:
            _check_type(m.name, key, value, parameters[key].default)
    try:
        _dry_run(m.name, m.cutoff, m.hparams, dtype)
    except Exception as err:  # noqa: BLE001 - whatever a model raises on hyperparameters it cannot take
        culprit = next((k for k, v in m.hparams.items() if not _dry_run_passes(m.name, m.cutoff, {k: v}, dtype)), None)
        key = f"model.hparams.{culprit}={m.hparams[culprit]!r}" if culprit else f"model.hparams {m.hparams}"
        raise InputError(f"{key}: {m.name} cannot be built or trained with it "
                         f"({err.problem if isinstance(err, InputError) else one_line(err, 200)})") from None


def _check_type(name: str, key: str, value: Any, default: Any) -> None:
    """``value`` of the kind of the model's ``default``: an integer (positive), a number, a flag or a text."""
    import inspect

    where = f"model.hparams.{key}"
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        if ok and value < 0:
            raise InputError(f"{where} must not be negative, got {value}")
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        if ok and not math.isfinite(value):
            raise InputError(f"{where} must be a finite number, got {value!r}")
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a text"
    else:
        return
    if not ok:
        raise InputError(f"{where} must be {kind} ({name}'s default is {default!r}), got {value!r}")


def _water():
    from ase import Atoms

    return Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def _dry_run(name: str, cutoff: float, hparams: dict, dtype: str) -> None:
    """Build the model, take one gradient of energy and forces of a water molecule, then predict its
    forces with frozen weights (as validation and inference do); raises what the model raises."""
    import torch

    from localframe import dtypes, models
    from localframe.data.batch import AtomsBatch

    torch_dtype = dtypes.torch_dtype(dtype)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # leaves the caller's random state
        warnings.simplefilter("ignore")  # e.g. zero-element tensors: the failure below says it better
        model = models.create(name, cutoff=cutoff, **hparams).to(torch_dtype)
        batch = AtomsBatch.from_atoms(_water(), cutoff, dtype=torch_dtype)
        out = model(batch, forces=True)
        loss = out["energy"].sum() + out["forces"].pow(2).sum()
        if not torch.isfinite(loss):
            raise ValueError("the energy or forces of a water molecule are not finite")
        loss.backward()
        model.eval().requires_grad_(False)
        model(batch, forces=True)


def _dry_run_passes(name: str, cutoff: float, hparams: dict, dtype: str) -> bool:
    try:
        _dry_run(name, cutoff, hparams, dtype)
    except Exception:  # noqa: BLE001
        return False
    return True


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
        try:
            node[keys[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise InputError(f"override {item!r}: the value is not valid YAML ({one_line(err, 120)})") from None
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
