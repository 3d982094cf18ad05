"""Model registry: ``available()`` lists the model names, ``create(name, **hparams)`` builds one.

Each model lives in its own module of this package and registers its representation class with
``@register("name")``. Modules are discovered automatically, so adding a model is adding a file.

Presets: a representation class may declare ``presets = {"qm9": {...hparams...}, ...}``; the preset
``"<model>-<key>"`` (e.g. ``"leftnet-qm9"``) names that model with those hyperparameters.
``resolve_preset(name)`` resolves it, ``create(name, preset="qm9")`` builds it (explicit hparams override).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable

from torch import nn

from localframe.errors import InputError
from localframe.models.atomistic import AtomisticModel
from localframe.models.base import Representation

_REGISTRY: dict[str, type[Representation]] = {}
_INFRASTRUCTURE = {"base", "atomistic"}


def register(name: str) -> Callable[[type[Representation]], type[Representation]]:
    """Class decorator that makes a representation available as ``create(name)``."""

    def decorate(cls: type[Representation]) -> type[Representation]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"model name {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def available() -> list[str]:
    """Names of all registered models, sorted."""
    _discover()
    return sorted(_REGISTRY)


def representation_class(name: str) -> type[Representation]:
    _discover()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def presets() -> list[str]:
    """Every preset name, ``"<model>-<key>"``, sorted."""
    return sorted(f"{name}-{key}" for name in available() for key in representation_class(name).presets)


def resolve_preset(full_name: str) -> tuple[str, dict[str, Any]]:
    """``"leftnet-qm9"`` → (``"leftnet"``, its hyperparameters). Unknown names raise :class:`InputError`."""
    name, _, key = str(full_name).partition("-")
    table = representation_class(name).presets if name in available() else {}
    if key not in table:
        raise InputError(f"unknown model preset {full_name!r}; available: {', '.join(presets())}")
    return name, dict(table[key])


def create(
    name: str, dipole: bool = False, targets: dict[str, str] | None = None, preset: str | None = None,
    spe: dict[str, Any] | None = None, **hparams: Any,
) -> AtomisticModel:
    """Build model ``name`` with its default hyperparameters, overridden by ``hparams``.

    Every model takes ``cutoff`` (Å). Unknown hyperparameters raise :class:`InputError`.
    ``preset`` (a key of the model's ``presets``, e.g. ``"qm9"``) starts from that preset's
    hyperparameters instead of the defaults; ``hparams`` still override them.
    ``dipole=True`` adds the dipole head; ``targets`` maps scalar target names to their
    aggregation, ``"sum"`` (extensive) or ``"mean"`` (intensive). See :mod:`localframe.heads`.
    ``spe`` (options of :class:`localframe.nn.spe.SPE`, ``{}`` for its defaults) adds the positional
    encoding of the bond graph as an extra invariant node input.
    """
    cls = representation_class(name)
    if preset is not None:
        hparams = {**resolve_preset(f"{name}-{preset}")[1], **hparams}
    try:
        representation = cls(**hparams)
    except TypeError as err:
        raise InputError(f"model {name!r}: {err}") from None
    return AtomisticModel(representation, name, hparams, dipole=dipole, targets=targets, spe=spe)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe_presets() -> list[dict[str, Any]]:
    """One row per preset: its name, trainable parameters (with the energy head) and hyperparameters."""
    rows = []
    for full in presets():
        name, hparams = resolve_preset(full)
        rows.append({"preset": full, "name": name, "parameters": count_parameters(create(name, **hparams)), "hparams": hparams})
    return rows


def describe() -> list[dict[str, Any]]:
    """One row per model at its defaults: trainable parameters, symmetry, vector features, hyperparameters, paper."""
    rows = []
    for name in available():
        cls = representation_class(name)
        model = create(name)
        defaults = {
            key: p.default for key, p in inspect.signature(cls.__init__).parameters.items()
            if key != "self" and p.default is not inspect.Parameter.empty
        }
        rows.append({
            "name": name, "parameters": count_parameters(model),
            "symmetry": model.symmetry,
            "vectors": bool(cls.has_vectors), "defaults": defaults, "paper": cls.paper,
        })
    return rows


__all__ = [
    "AtomisticModel", "Representation", "available", "count_parameters", "create", "describe", "describe_presets", "resolve_preset",
    "presets", "register",
]
