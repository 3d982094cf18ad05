"""One entry point for every data source: ``load(spec)``.

``spec`` is ``"qm9"`` (offline QM9 from qm9pack), a path to an ``.npz`` archive (MD17 style), or a
path to any file ASE can read. The dispatch is a table from the kind of source to its reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from localframe.data import qm9, readers
from localframe.data.readers import StructureSet
from localframe.errors import InputError


def _load_qm9(spec: str, targets=None, n_train: int | None = None, n_val: int | None = None, seed: int = qm9.SPLIT_SEED, **_) -> StructureSet:
    data = qm9.load()
    parts = qm9.split(n_train=n_train, n_val=n_val, seed=seed)
    unknown = [t for t in (targets or ()) if t not in qm9.TARGETS]
    if unknown:
        raise InputError(f"qm9: unknown targets {unknown}; known: {', '.join(qm9.TARGETS)}")
    indices = np.concatenate([parts["train"], parts["val"], parts["test"]])
    atoms = data.atoms_list(indices)
    starts = np.cumsum([0, len(parts["train"]), len(parts["val"])])
    splits = {name: np.arange(start, start + len(parts[name])) for name, start in zip(("train", "val", "test"), starts)}
    labels = tuple(targets) if targets else qm9.TARGETS
    return StructureSet(atoms, labels, {t: qm9.UNITS[t] for t in labels}, "qm9", splits)


def _load_npz(spec: str, units: dict | None = None, **_) -> StructureSet:
    units = units or {}
    return readers.read_npz(
        spec, energy_unit=units.get("energy", "eV"), length_unit=units.get("length", "Å"), force_unit=units.get("forces"),
    )


def _load_ase(spec: str, keys: dict | None = None, units: dict | None = None, extra: dict | None = None, format: str | None = None, **_) -> StructureSet:
    return readers.read_ase(spec, keys=keys, units_in=units, extra=extra, format=format)


def _kind(spec: str) -> str:
    if spec.lower() == "qm9":
        return "qm9"
    return "npz" if Path(spec).suffix.lower() == ".npz" else "ase"


LOADERS: dict[str, Callable[..., StructureSet]] = {"qm9": _load_qm9, "npz": _load_npz, "ase": _load_ase}


def load(spec: str | Path, **options: Any) -> StructureSet:
    """Load a data source. Options: ``keys``, ``units``, ``extra``, ``format`` (files);
    ``targets``, ``n_train``, ``n_val``, ``seed`` (QM9)."""
    spec = str(spec)
    return LOADERS[_kind(spec)](spec, **options)
