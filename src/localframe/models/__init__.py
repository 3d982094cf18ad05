"""Model registry: ``available()`` lists the model names, ``create(name, **hparams)`` builds one.

Each model lives in its own module of this package and registers its representation class with
``@register("name")``. Modules are discovered automatically, so adding a model is adding a file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable

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
        cls.registry_name = name
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


def create(
    name: str, dipole: bool = False, targets: dict[str, str] | None = None, **hparams: Any
) -> AtomisticModel:
    """Build model ``name`` with its default hyperparameters, overridden by ``hparams``.

    Every model takes ``cutoff`` (Å). Unknown hyperparameters raise :class:`InputError`.
    ``dipole=True`` adds the dipole head; ``targets`` maps scalar target names to their
    aggregation, ``"sum"`` (extensive) or ``"mean"`` (intensive). See :mod:`localframe.heads`.
    """
    cls = representation_class(name)
    try:
        representation = cls(**hparams)
    except TypeError as err:
        raise InputError(f"model {name!r}: {err}") from None
    return AtomisticModel(representation, name, hparams, dipole=dipole, targets=targets)


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
            "name": name, "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "symmetry": model.symmetry,
            "vectors": bool(cls.has_vectors), "defaults": defaults, "paper": cls.paper,
        })
    return rows


__all__ = ["AtomisticModel", "Representation", "available", "create", "describe", "register"]
