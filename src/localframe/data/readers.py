"""Readers for user data: any ASE-readable file and MD17-style ``.npz`` archives.

Both return a :class:`StructureSet`: ``ase.Atoms`` whose labels sit under canonical names
(``energy``, ``stress``, ``dipole`` and extra scalars in ``info``; ``forces`` in ``arrays``), already
converted to eV and Å (see :mod:`localframe.data.units`). Every structure is checked on reading;
a problem raises :class:`InputError` naming the file, the structure index and the problem.

Two decisions are made here, once for every reader:

* **Which key holds a label** (:func:`choose_keys`): a key the user names, else the reader's
  default key, else the one key among those other programs use (``REF_energy``, ``DFT_forces``,
  …, see :data:`KEY_CANDIDATES`). A discovered key is reported in :attr:`StructureSet.notes`;
  several candidates stop the reader with the list and the ``--key`` that chooses.
* **Which unit a quantity is in** (:func:`resolve_unit`): a unit stored in the file wins (a
  contradicting ``--unit`` is an error), then the user's unit, then the unit documented for the
  file's layout (ASE files: eV and Å; rMD17: kcal/mol and Å). A labelled archive that states
  no unit and has no documented layout must be given ``--unit``: there is no silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from ase import Atoms

from localframe.data import units
from localframe.data.convert import check_structure
from localframe.errors import InputError

# The labels with a unit, each stored by default under its own name (its unit kind has the same name
# in localframe.data.units).
DEFAULT_KEYS = {label: label for label in ("energy", "forces", "stress", "dipole")}

# Keys other programs (MACE, NequIP, sGDML, ASE calculators, DFT converters) store labels under,
# searched in the file when the default key is absent.
KEY_CANDIDATES = {
    "energy": ("REF_energy", "energy", "DFT_energy", "free_energy", "total_energy", "E"),
    "forces": ("REF_forces", "forces", "force", "DFT_forces", "F"),
    "stress": ("REF_stress", "stress", "DFT_stress"),
    "dipole": ("REF_dipole", "dipole", "DFT_dipole"),
}
# Written next to the default key by ASE calculators (a different quantity, not a rival label).
COMPANIONS = ("free_energy",)
# A virial W = −σ·V (energy units) is read into the stress label as σ = −W / V.
VIRIAL = "virial"
VIRIAL_KEYS = ("REF_virial", "REF_virials", "virial", "virials", "DFT_virial")

# What ASE files are in unless the user says otherwise: ASE's own convention.
ASE_UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3", "dipole": "e*Å", "length": "Å"}


@dataclass
class StructureSet:
    """Structures with labels under canonical names, in eV and Å.

    ``units`` are the internal units of the labels; ``source_units`` the units the file was in
    (labels and ``length``); ``notes`` say what the reader decided on its own (a discovered key,
    units stored in the file or documented for its layout), one line each.
    """

    atoms: list[Atoms]
    labels: tuple[str, ...]
    units: dict[str, str]
    source: str
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    source_units: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.atoms)


# ------------------------------------------------------------------------------ keys and units
def choose_keys(
    present: Iterable[str],
    defaults: Mapping[str, str],
    explicit: Mapping[str, str] | None,
    source: str,
    index: int | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Which key of a file holds each label ``defaults`` names: ``({label: key}, notes)``.

    ``present`` are the keys the file has, ``defaults`` the reader's own key per label it can
    carry, ``explicit`` the user's choices (``--key LABEL=KEY``); ``stress`` may also be chosen as
    ``virial=KEY``, returned as ``{"virial": KEY}``. Labels with no key are left out.
    """
    present = set(present)
    explicit = dict(explicit or {})
    allowed = set(defaults) | ({VIRIAL} if "stress" in defaults else set())
    unknown = sorted(set(explicit) - allowed)
    if unknown:
        raise InputError(f"--key names unknown label(s) {unknown}; this file carries {', '.join(sorted(allowed))}"
                         f"{' (other per-structure scalars: --extra NAME=KEY)' if VIRIAL in allowed else ''}", source)
    if "stress" in explicit and VIRIAL in explicit:
        raise InputError("give either --key stress=KEY or --key virial=KEY, not both", source)
    for label, key in explicit.items():
        if key not in present:
            raise InputError(f"missing label key {key!r} (for {label}); keys found: {', '.join(sorted(present))}", source, index)
    chosen, notes = {}, []
    for label, default in defaults.items():
        if label in explicit or (label == "stress" and VIRIAL in explicit):
            name = label if label in explicit else VIRIAL
            chosen[name] = explicit[name]
            continue
        candidates = [key for key in KEY_CANDIDATES.get(label, ()) if key in present and key != default]
        virials = [key for key in VIRIAL_KEYS if key in present] if label == "stress" else []
        if default in present:
            chosen[label] = default
            others = [key for key in candidates if key not in COMPANIONS]
            if others:
                notes.append(f"{label} read from the default key {default!r}; the file also has "
                             f"{', '.join(map(repr, others))} (choose with --key {label}={others[0]})")
            continue
        found = candidates + virials
        if len(found) > 1:
            choices = " or ".join(f"--key {VIRIAL if key in virials else label}={key}" for key in found)
            raise InputError(f"no {label!r} key but several candidates {found}; choose one with {choices}", source)
        if found:
            key = found[0]
            chosen[VIRIAL if key in virials else label] = key
            notes.append(f"{label} read from key {key!r}" if key not in virials else
                         f"stress computed as −virial/volume from key {key!r} (the virial in the energy unit)")
    return chosen, notes


@dataclass(frozen=True)
class Unit:
    """A quantity's unit in a file and where that unit came from."""

    name: str | None  # None: nobody said
    origin: str  # "stored", "given", "documented" or "missing"


def resolve_unit(quantity: str, stored: str | None, given: str | None, documented: str | None, source: str) -> Unit:
    """The unit a file's ``quantity`` (``energy``, ``forces``, ``length``, …) is in.

    A unit stored in the file wins; a ``given`` (user) unit must then mean the same unit, or this
    raises. Otherwise the given unit, then the layout's ``documented`` unit; else ``missing``.
    Every name is checked against the unit table.
    """
    kind = quantity
    for name, what in ((stored, "stored in the file"), (given, "given"), (documented, "documented")):
        if name is not None:
            try:
                units.factor(name, kind)
            except InputError as err:
                raise InputError(f"{quantity} unit {what}: {err.problem}", source) from None
    if stored is not None:
        if given is not None and not units.same(given, stored, kind):
            raise InputError(f"--unit {quantity}={given} contradicts the unit stored in the file ({stored!r})", source)
        return Unit(stored, "stored")
    if given is not None:
        return Unit(given, "given")
    if documented is not None:
        return Unit(documented, "documented")
    return Unit(None, "missing")


def _check_unit_names(given: Mapping[str, str], quantities: Iterable[str], source: str) -> None:
    """A ``--unit`` must name a quantity the file has (a label it carries, or ``length``)."""
    quantities = set(quantities)
    wrong = sorted(set(given) - quantities)
    if wrong:
        raise InputError(f"--unit names {wrong}, which this file does not carry; it has {', '.join(sorted(quantities))}", source)


# ------------------------------------------------------------------------------ ASE files
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

    ``keys`` maps canonical labels to the file's keys (see :func:`choose_keys`; ``virial=KEY``
    reads a virial into ``stress``); only labels found in the first structure are carried, and then
    every structure must have them. ``units_in`` gives the file's units, e.g.
    ``{"energy": "kcal/mol", "forces": "kcal/mol/Å", "length": "Å"}``; missing entries mean eV and
    Å (ASE's convention). ``extra`` maps further per-structure scalar labels to file keys (kept
    unconverted).
    """
    import ase.io

    path = _existing_file(path)
    source = str(path)
    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except Exception as err:  # ASE raises many types for malformed files
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read as {format or 'an ASE-readable file'}: {message}", source) from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError("file contains no structures", source)
    units_in = dict(units_in or {})
    extra = dict(extra or {})
    wanted, notes = choose_keys(_frame_keys(frames[0]), DEFAULT_KEYS, keys, source, 0)
    labels = tuple("stress" if label == VIRIAL else label for label in wanted)
    _check_unit_names(units_in, (*labels, "length", *(("energy",) if VIRIAL in wanted else ())), source)
    if VIRIAL in wanted and "stress" in units_in:
        raise InputError(f"stress is computed from the virial key {wanted[VIRIAL]!r}, which is in the energy unit: "
                         "give --unit energy=UNIT instead of --unit stress", source)
    found = {q: resolve_unit(q, None, units_in.get(q), ASE_UNITS[q], source) for q in ("length", *labels)}
    length = units.factor(found["length"].name, "length")
    factors = {label: units.factor(found[label].name, label) for label in labels}
    virial_factor = units.factor(units_in.get("energy"), "energy")
    out = []
    for k, frame in enumerate(frames):
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions * length, cell=frame.cell.array * length, pbc=frame.pbc)
        atoms.info["charge"] = float(frame.info.get("charge", 0.0))
        for label, key in wanted.items():
            value = _find(frame, key)
            if value is None:
                raise InputError(f"missing label key {key!r} (for {label})", source, k)
            value = _as_array(value, key, source, k)
            if label == VIRIAL:
                atoms.info["stress"] = _stress_from_virial(value * virial_factor, atoms, key, source, k)
            else:
                (atoms.arrays if label == "forces" else atoms.info)[label] = value * factors[label]
        for label, key in extra.items():
            value = _find(frame, key)
            if value is None:
                raise InputError(f"missing label key {key!r}", source, k)
            atoms.info[label] = _as_array(value, key, source, k)
        out.append(atoms)
    labels = labels + tuple(extra)
    for k, atoms in enumerate(out):
        check_structure(atoms, labels, source, k)
    source_units = {q: u.name for q, u in found.items()} | {label: "as given" for label in extra}
    if VIRIAL in wanted:
        source_units["stress"] = f"−virial/V, virial in {units_in.get('energy', 'eV')}"
    return StructureSet(out, labels, _unit_names(labels), source, source_units=source_units, notes=notes)


def _frame_keys(frame: Atoms) -> set[str]:
    results = getattr(frame.calc, "results", None) or {}
    return (set(frame.arrays) - {"numbers", "positions"}) | set(frame.info) | set(results)


def _find(frame: Atoms, key: str):
    if key in frame.arrays:
        return frame.arrays[key]
    if key in frame.info:
        return frame.info[key]
    results = getattr(frame.calc, "results", None) or {}
    return results.get(key)


def _stress_from_virial(virial: np.ndarray, atoms: Atoms, key: str, source: str, index: int) -> np.ndarray:
    if not atoms.pbc.all():
        raise InputError(f"virial {key!r} given for a structure that is not periodic in all directions "
                         f"(pbc={atoms.pbc.tolist()}); a stress needs a cell volume", source, index)
    if virial.size == 9:
        virial = virial.reshape(3, 3)
    return 0.0 - virial / atoms.get_volume()  # 0.0 - x: no negative zeros


def _as_array(value, key: str, source: str, index: int) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"label {key!r} is not numeric: {value!r}", source, index) from None


def _unit_names(labels) -> dict[str, str]:
    return {label: units.INTERNAL.get(label, "as given") for label in labels}


# ------------------------------------------------------------------------------ npz archives
@dataclass(frozen=True)
class NpzLayout:
    """Where an archive keeps atomic numbers, positions and labels, and the units its data set documents."""

    name: str
    numbers: str
    positions: str
    labels: dict[str, str]
    documented: dict[str, str] = field(default_factory=dict)
    unused: tuple[str, ...] = ()  # keys with known content that is not read


NPZ_LAYOUTS = (
    # sGDML (and the MD17 archives it distributes): units, where known, stored as strings in the file.
    NpzLayout("sGDML/MD17", "z", "R", {"energy": "E", "forces": "F"}),
    # Revised MD17 (Christensen & von Lilienfeld 2020): no units stored; its documentation gives them.
    NpzLayout("rMD17", "nuclear_charges", "coords", {"energy": "energies", "forces": "forces"},
              {"energy": "kcal/mol", "forces": "kcal/mol/Å", "length": "Å"}, ("old_indices", "old_energies", "old_forces")),
)
# Keys under which sGDML stores the units of an archive (forces: energy/length when absent).
STORED_UNIT_KEYS = {"energy": "e_unit", "length": "r_unit", "forces": "f_unit"}
NPZ_CELL_KEY = "lattice"  # sGDML: lattice vectors (rows) of a periodic data set, in the length unit


def read_npz(
    path: str | Path,
    keys: Mapping[str, str] | None = None,
    units_in: Mapping[str, str] | None = None,
) -> StructureSet:
    """Read an MD17-style archive, in the sGDML layout (``R`` (M, N, 3), ``z`` (N,), ``E`` (M,) or
    (M, 1), ``F`` (M, N, 3), units in ``e_unit`` / ``r_unit`` / ``f_unit``, optional ``lattice``)
    or the rMD17 layout (``nuclear_charges``, ``coords``, ``energies``, ``forces``; kcal/mol,
    kcal/mol/Å and Å by its documentation).

    ``keys`` chooses other label keys (``{"energy": "E_ccsd"}``); ``units_in`` gives units the
    file does not state (``{"energy": "kcal/mol"}``; forces default to energy/length). An archive
    with labels and no stated or documented energy unit raises, asking for it.
    """
    path = _existing_file(path)
    source = str(path)
    try:
        archive = np.load(path, allow_pickle=False)
        content = {key: archive[key] for key in archive.files}
    except Exception as err:
        raise InputError(f"cannot read as an .npz archive: {str(err).splitlines()[0]}", source) from None
    layout = _npz_layout(content, source)
    units_in = dict(units_in or {})
    data_keys = set(content) - set(STORED_UNIT_KEYS.values()) - {layout.numbers, layout.positions}
    wanted, notes = choose_keys(data_keys, layout.labels, keys, source)
    labels = tuple(wanted)
    R, z = np.asarray(content[layout.positions]), np.asarray(content[layout.numbers]).reshape(-1)
    keyname = layout.positions
    if R.ndim != 3 or R.shape[1:] != (len(z), 3):
        raise InputError(f"{keyname} has shape {R.shape}, expected (frames, {len(z)}, 3) to match {layout.numbers}", source)
    if len(R) == 0:
        raise InputError("archive contains no frames", source)
    values = {label: np.asarray(content[key], dtype=np.float64) for label, key in wanted.items()}
    if "energy" in values:
        if values["energy"].size != len(R):
            raise InputError(f"{wanted['energy']} has shape {values['energy'].shape}, expected ({len(R)},) or ({len(R)}, 1)", source)
        values["energy"] = values["energy"].reshape(len(R))
    if "forces" in values and values["forces"].shape != R.shape:
        raise InputError(f"{wanted['forces']} has shape {values['forces'].shape}, expected {R.shape} like {keyname}", source)

    _check_unit_names(units_in, {"length", *labels, *(("energy",) if labels else ())}, source)
    found, unit_notes = _npz_units(content, layout, units_in, labels, source)
    length = units.factor(found["length"].name, "length")
    cell = np.asarray(content[NPZ_CELL_KEY], dtype=np.float64) * length if NPZ_CELL_KEY in content else None
    if cell is not None and cell.shape != (3, 3):
        raise InputError(f"{NPZ_CELL_KEY} has shape {cell.shape}, expected (3, 3)", source)
    out = []
    for k in range(len(R)):  # labels still in the file's units: checked before asking for a missing unit
        atoms = Atoms(numbers=z.astype(np.int64), positions=R[k] * length,
                      cell=cell, pbc=cell is not None)
        atoms.info["charge"] = 0.0
        if "energy" in values:
            atoms.info["energy"] = float(values["energy"][k])
        if "forces" in values:
            atoms.arrays["forces"] = values["forces"][k].copy()
        check_structure(atoms, labels, source, k)
        out.append(atoms)
    missing = [label for label in labels if found[label].origin == "missing"]
    if missing:
        flag = "--unit energy=UNIT" if "energy" in missing else "--unit forces=UNIT (or --unit energy=UNIT)"
        raise InputError(f"the archive states no {missing[0]} unit (no {STORED_UNIT_KEYS[missing[0]]} key) and "
                         f"{layout.name} archives have no documented one: give it with {flag}, e.g. --unit energy=kcal/mol "
                         "(forces then in energy/length, lengths in Å unless --unit length=UNIT)", source)
    factors = {label: units.factor(found[label].name, label) for label in labels}
    for atoms in out:
        if "energy" in factors:
            atoms.info["energy"] *= factors["energy"]
        if "forces" in factors:
            atoms.arrays["forces"] *= factors["forces"]
    unused = [key for key in layout.unused if key in content]
    if unused:
        unit_notes.append(f"{layout.name} keys {', '.join(unused)} (the original MD17 labels and indices) are not read")
    source_units = {q: found[q].name for q in ("length", *labels)}
    return StructureSet(out, labels, _unit_names(labels), source, source_units=source_units, notes=notes + unit_notes)


def _npz_layout(content: Mapping[str, np.ndarray], source: str) -> NpzLayout:
    for layout in NPZ_LAYOUTS:
        if layout.numbers in content and layout.positions in content:
            return layout
    first = NPZ_LAYOUTS[0]
    expected = " or ".join(f"the {lay.name} layout {', '.join([lay.positions, lay.numbers, *lay.labels.values()])}"
                           for lay in NPZ_LAYOUTS)
    raise InputError(f"missing npz keys {[first.positions, first.numbers]}; found {sorted(content)} (expected {expected})", source)


def _stored_text(content: Mapping[str, np.ndarray], key: str, source: str) -> str | None:
    """A unit string stored in an archive (a 0-d or 1-element string array), or None if absent or 'unknown'."""
    if key not in content:
        return None
    value = np.asarray(content[key])
    if value.size != 1 or value.dtype.kind not in "US":
        raise InputError(f"{key} is a {value.dtype} array of shape {value.shape}, expected a unit string", source)
    text = value.reshape(()).item()
    text = (text.decode() if isinstance(text, bytes) else str(text)).strip()
    return None if text.lower() in ("", "unknown", "none") else text


def _npz_units(content, layout: NpzLayout, given: Mapping[str, str], labels: tuple[str, ...], source: str):
    """``{quantity: Unit}`` for length and each label of an archive, and notes on where they came from."""
    stored = {q: _stored_text(content, key, source) for q, key in STORED_UNIT_KEYS.items()}
    found = {"length": resolve_unit("length", stored["length"], given.get("length"), layout.documented.get("length"), source)}
    notes = []
    if found["length"].origin == "missing":
        found["length"] = Unit("Å", "assumed")
        notes.append(f"positions read as Å (the MD17 convention; the archive states no {STORED_UNIT_KEYS['length']}; "
                     "otherwise give --unit length=UNIT)")
    energy = resolve_unit("energy", stored["energy"], given.get("energy"), layout.documented.get("energy"), source)
    if "energy" in labels:
        found["energy"] = energy
    if "forces" in labels:
        implied = units.per_length(energy.name, found["length"].name) if energy.name else None
        if stored["forces"] is not None or energy.origin == "stored":  # f_unit, or sGDML's e_unit per length unit
            found["forces"] = resolve_unit("forces", stored["forces"] or implied, given.get("forces"), None, source)
        else:
            from_energy = implied if energy.origin == "given" else None
            found["forces"] = resolve_unit("forces", None, given.get("forces") or from_energy,
                                           layout.documented.get("forces") or implied, source)
    origins = {"stored": "stored in the file", "documented": f"documented for the {layout.name} layout"}
    for origin, why in origins.items():
        named = [f"{q} {u.name}" for q, u in found.items() if u.origin == origin]
        if named:
            notes.append(f"units {why}: {', '.join(named)}; converted to eV and Å")
    overridden = [f"{q} {given[q]} (documented: {layout.documented[q]})" for q in given
                  if q in layout.documented and not units.same(given[q], layout.documented[q], q)]
    if overridden:
        notes.append(f"--unit overrides the {layout.name} documentation: {', '.join(overridden)}")
    return found, notes
