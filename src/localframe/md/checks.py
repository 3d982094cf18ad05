"""Checks of what an MD or relaxation run is given: the structure file and the numbers.

Shared by :mod:`localframe.md` and the xTB sampler (:mod:`localframe.reference.xtb`); every
problem is a one-line :class:`~localframe.errors.InputError`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from localframe.errors import InputError, one_line

#: ``atoms.info`` keys an MD run carries along (total charge, spin multiplicity).
CARRIED_INFO = ("charge", "multiplicity")


def read_structure(path: str | os.PathLike, index: int | str = -1, format: str | None = None) -> Atoms:
    """One structure from any ASE-readable file (default: the last one), as plain ``Atoms``."""
    frames = _read(path, index, format)
    return _checked(frames[-1], str(path), None)


def read_structures(path: str | os.PathLike, index: int | str = -1, format: str | None = None) -> list[Atoms]:
    """The structures ``index`` selects (an ASE index: ``-1`` the last, ``":"`` all, ``"-8:"`` the
    last eight), as plain ``Atoms``; errors name the position k in the selection."""
    frames = _read(path, index, format)
    return [_checked(atoms, str(path), k if len(frames) > 1 else None) for k, atoms in enumerate(frames)]


def _read(path, index, format) -> list[Atoms]:
    import ase.io

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError("structure file not found", source)
    if p.is_dir() or p.stat().st_size == 0:
        raise InputError("is a directory or empty, expected a structure file", source)
    if p.suffix == ".pt" and format is None:
        raise InputError("is a model file, not a structure (give the model files first, the structure last)", source)
    try:
        atoms = ase.io.read(p, index=index, format=format)
    except (StopIteration, IndexError):
        raise InputError(f"no structure at index {index}", source) from None
    except Exception as err:  # ase raises many types for files it cannot parse
        raise InputError(f"cannot read a structure ({type(err).__name__}: {one_line(err, 300)})", source) from None
    frames = atoms if isinstance(atoms, list) else [atoms]
    if not frames:
        raise InputError("no structures in the file", source)
    return frames


def _checked(atoms: Atoms, source: str, index: int | None) -> Atoms:
    from localframe.data.convert import check_structure

    check_structure(atoms, source=source, index=index)
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if atoms.has("momenta"):
        out.set_momenta(atoms.get_momenta())
    out.info.update({k: v for k, v in atoms.info.items() if k in (*CARRIED_INFO, "step", "time_fs")})
    return out


def plain(atoms: Atoms, momenta: bool = False) -> Atoms:
    """A copy without calculator or constraints, with charge and multiplicity (and momenta if asked)."""
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                info={k: v for k, v in atoms.info.items() if k in CARRIED_INFO})
    if momenta:
        out.set_momenta(atoms.get_momenta())
    return out


def positive(name: str, value, unit: str, allow_zero: bool = False) -> float:
    """``value`` as a finite positive (or, with ``allow_zero``, non-negative) number in ``unit``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number ({unit}), got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise InputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number ({unit}), got {value!r}")
    return number


def count(name: str, value, allow_zero: bool = False) -> int:
    """``value`` as a positive (or non-negative) integer; a float or bool is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise InputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return int(value)


def finite(name: str, value, unit: str) -> float:
    """``value`` as a finite number in ``unit``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number ({unit}), got {value!r}")
    return number


def seed(value) -> int:
    """A random seed: a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


def choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """``value`` lower-cased, one of ``allowed``."""
    text = str(value).lower()
    if text not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return text


def output_files(*paths) -> None:
    """Output paths that are given must not be directories."""
    for path in paths:
        if path is not None and Path(path).is_dir():
            raise InputError("is a directory, expected a file name", str(path))
