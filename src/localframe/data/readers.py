"""Readers for user data: any ASE-readable file and MD17-style ``.npz`` archives.

Both return a :class:`StructureSet`: ``ase.Atoms`` whose labels sit under canonical names
(``energy``, ``stress``, ``dipole`` and extra scalars in ``info``; ``forces`` in ``arrays``), already
converted to eV and Å (see :mod:`localframe.data.units`). Every structure is checked on reading;
a problem raises :class:`InputError` naming the file, the structure index and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from ase import Atoms

from localframe.data import units
from localframe.data.batch import check_structure
from localframe.errors import InputError

# Canonical label -> kind of unit it carries.
LABEL_KINDS = {"energy": "energy", "forces": "forces", "stress": "stress", "dipole": "dipole"}
DEFAULT_KEYS = {"energy": "energy", "forces": "forces", "stress": "stress", "dipole": "dipole"}


@dataclass
class StructureSet:
    """Structures with labels under canonical names, in eV and Å."""

    atoms: list[Atoms]
    labels: tuple[str, ...]
    units: dict[str, str]
    source: str
    splits: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.atoms)


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a directory, expected a file", str(path))
    if path.stat().st_size == 0:
        raise InputError("file is empty", str(path))
    return path


def read_ase(
    path: str | Path,
    keys: Mapping[str, str] | None = None,
    units_in: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    index: str = ":",
    format: str | None = None,
) -> StructureSet:
    """Read any ASE-readable file (extxyz, ASE .db, …).

    ``keys`` maps canonical labels to the file's keys (default: the same names); only labels found
    in the first structure are carried, and then every structure must have them. ``units_in``
    gives the file's units, e.g. ``{"energy": "kcal/mol", "forces": "kcal/mol/Å", "length": "Å"}``;
    missing entries mean eV and Å. ``extra`` maps further per-structure scalar labels to file keys
    (kept unconverted).
    """
    import ase.io

    path = _existing_file(path)
    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except Exception as err:  # ASE raises many types for malformed files
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read as {format or 'an ASE-readable file'}: {message}", str(path)) from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError("file contains no structures", str(path))
    keys = {**DEFAULT_KEYS, **(keys or {})}
    units_in = dict(units_in or {})
    extra = dict(extra or {})
    wanted = {label: key for label, key in keys.items() if _find(frames[0], key) is not None}
    for label, key in keys.items():  # a key the user named explicitly must exist
        if label not in wanted and key != DEFAULT_KEYS.get(label):
            raise InputError(f"missing label key {key!r} (for {label})", str(path), 0)
    length = units.factor(units_in.get("length"), "length")
    out = []
    for k, frame in enumerate(frames):
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions * length, cell=frame.cell.array * length, pbc=frame.pbc)
        atoms.info["charge"] = float(frame.info.get("charge", 0.0))
        for label, key in wanted.items():
            value = _find(frame, key)
            if value is None:
                raise InputError(f"missing label key {key!r} (for {label})", str(path), k)
            value = _as_array(value, key, str(path), k) * units.factor(units_in.get(label), LABEL_KINDS[label])
            (atoms.arrays if label == "forces" else atoms.info)[label] = value
        for label, key in extra.items():
            value = _find(frame, key)
            if value is None:
                raise InputError(f"missing label key {key!r}", str(path), k)
            atoms.info[label] = _as_array(value, key, str(path), k)
        out.append(atoms)
    labels = tuple(wanted) + tuple(extra)
    for k, atoms in enumerate(out):
        check_structure(atoms, labels, str(path), k)
    return StructureSet(out, labels, _unit_names(labels), str(path))


def read_npz(
    path: str | Path,
    energy_unit: str = "eV",
    length_unit: str = "Å",
    force_unit: str | None = None,
) -> StructureSet:
    """Read an MD17-style archive: ``R`` (M, N, 3) positions, ``z`` (N,) atomic numbers,
    ``E`` (M,) or (M, 1) energies and ``F`` (M, N, 3) forces, in the units the user states.

    ``force_unit`` defaults to ``energy_unit/length_unit``.
    """
    path = _existing_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
        content = {key: archive[key] for key in archive.files}
    except Exception as err:
        raise InputError(f"cannot read as an .npz archive: {str(err).splitlines()[0]}", str(path)) from None
    missing = [key for key in ("R", "z") if key not in content]
    if missing:
        raise InputError(f"missing npz keys {missing}; found {sorted(content)} (expected R, z and optionally E, F)", str(path))
    R, z = content["R"], np.asarray(content["z"]).reshape(-1)
    if R.ndim != 3 or R.shape[1:] != (len(z), 3):
        raise InputError(f"R has shape {R.shape}, expected (frames, {len(z)}, 3) to match z", str(path))
    labels = [label for label, key in (("energy", "E"), ("forces", "F")) if key in content]
    e_factor = units.factor(energy_unit, "energy")
    l_factor = units.factor(length_unit, "length")
    f_factor = units.factor(force_unit or f"{energy_unit}/{length_unit}", "forces")
    if "E" in content and content["E"].reshape(len(R), -1).shape[1] != 1:
        raise InputError(f"E has shape {content['E'].shape}, expected ({len(R)},) or ({len(R)}, 1)", str(path))
    if "F" in content and content["F"].shape != R.shape:
        raise InputError(f"F has shape {content['F'].shape}, expected {R.shape} like R", str(path))
    out = []
    for k in range(len(R)):
        atoms = Atoms(numbers=z.astype(np.int64), positions=R[k] * l_factor)
        atoms.info["charge"] = 0.0
        if "E" in content:
            atoms.info["energy"] = float(content["E"].reshape(len(R))[k]) * e_factor
        if "F" in content:
            atoms.arrays["forces"] = np.asarray(content["F"][k], dtype=np.float64) * f_factor
        check_structure(atoms, labels, str(path), k)
        out.append(atoms)
    if not out:
        raise InputError("archive contains no frames", str(path))
    return StructureSet(out, tuple(labels), _unit_names(labels), str(path))


def _find(frame: Atoms, key: str):
    if key in frame.arrays:
        return frame.arrays[key]
    if key in frame.info:
        return frame.info[key]
    results = getattr(frame.calc, "results", None) or {}
    return results.get(key)


def _as_array(value, key: str, source: str, index: int) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"label {key!r} is not numeric: {value!r}", source, index) from None


def _unit_names(labels) -> dict[str, str]:
    return {label: units.INTERNAL.get(label, "as given") for label in labels}
