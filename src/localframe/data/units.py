"""The one unit table of the package.

Internally everything is eV and Å: energies in eV, lengths in Å, forces in eV/Å, stress in eV/Å³
(ASE sign convention, stress = (1/V) ∂E/∂ε), dipoles in e·Å. Readers convert user data with
:func:`factor`, which parses names such as ``"kcal/mol"``, ``"kcal/mol/Å"`` or ``"Hartree/bohr"``.
"""

from __future__ import annotations

import math

from ase import units as _u

from localframe.errors import InputError

ENERGY = {
    "ev": 1.0,
    "mev": 1e-3,
    "hartree": _u.Hartree,
    "ha": _u.Hartree,
    "eh": _u.Hartree,
    "au": _u.Hartree,  # atomic unit of energy, as sGDML archives may state it
    "kcal/mol": _u.kcal / _u.mol,
    "kj/mol": _u.kJ / _u.mol,
    "ry": _u.Ry,
    "rydberg": _u.Ry,
}
LENGTH = {"å": 1.0, "a": 1.0, "ang": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "bohr": _u.Bohr,
          "au": _u.Bohr}  # atomic unit of length, as sGDML archives may state it
DIPOLE = {"e*å": 1.0, "eå": 1.0, "e*a": 1.0, "e*ang": 1.0, "debye": _u.Debye, "d": _u.Debye,
          "e*bohr": _u.Bohr, "au": _u.Bohr}

# What each kind of label is measured in internally, for messages and docs.
INTERNAL = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å³", "dipole": "e·Å"}

KINDS = ("energy", "length", "forces", "stress", "dipole", "none")


def _lookup(table: dict[str, float], name: str, what: str) -> float:
    key = name.strip().lower().replace(" ", "")
    if key not in table:
        raise InputError(f"unknown {what} unit {name!r}; known: {', '.join(sorted(table))}")
    return table[key]


def factor(unit: str | None, kind: str) -> float:
    """Multiplier that converts a value given in ``unit`` to the internal unit of ``kind``.

    ``kind`` is one of ``energy``, ``length``, ``forces`` (energy/length), ``stress``
    (energy/length³), ``dipole`` or ``none`` (no conversion; ``unit`` is only recorded).
    ``unit=None`` means the value is already internal.
    """
    if kind not in KINDS:
        raise InputError(f"unknown label kind {kind!r}; known: {', '.join(KINDS)}")
    if unit is None or kind == "none":
        return 1.0
    text = unit.strip()
    if kind == "energy":
        return _lookup(ENERGY, text, "energy")
    if kind == "length":
        return _lookup(LENGTH, text, "length")
    if kind == "dipole":
        return _lookup(DIPOLE, text, "dipole")
    # forces and stress: "<energy>/<length>" or "<energy>/<length>^3"; the energy may itself contain "/".
    lowered = text.lower().replace(" ", "").replace("³", "^3")
    power = 3 if kind == "stress" else 1
    suffix = "^3" if power == 3 else ""
    if not lowered.endswith(suffix):
        raise InputError(f"{kind} unit {unit!r} must look like 'eV/Å{'^3' if power == 3 else ''}'")
    body = lowered[: len(lowered) - len(suffix)]
    if "/" not in body:
        raise InputError(f"{kind} unit {unit!r} must look like 'eV/Å{'^3' if power == 3 else ''}'")
    energy, length = body.rsplit("/", 1)
    return _lookup(ENERGY, energy, "energy") / _lookup(LENGTH, length, "length") ** power


def same(first: str, second: str, kind: str) -> bool:
    """Whether two unit names of ``kind`` mean the same unit (``"Ang"`` and ``"Å"``, ``"Ha"`` and ``"Hartree"``)."""
    return math.isclose(factor(first, kind), factor(second, kind), rel_tol=1e-9)


def per_length(energy: str, length: str) -> str:
    """The force unit that an energy unit and a length unit imply, e.g. ``"kcal/mol/Å"``."""
    return f"{energy}/{length}"
