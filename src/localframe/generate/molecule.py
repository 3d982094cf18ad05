"""One molecule of the generative pipeline, and its conversion to and from RDKit and SDF.

A :class:`Molecule` holds atomic numbers, positions (Å), formal charges and, when known, a bond
list ``(i, j, order)`` with Kekulé orders 1, 2, 3. Generated molecules without bonds get them from
the distance table of :mod:`localframe.generate.tables` before they are written, so an SDF file
written here always has a bond block. ``info["properties"]`` (name → number, e.g. the property a
molecule was generated for) is written as the record's data items and read back.

A **failed sample** (its sampler produced non-finite positions or features, or a coordinate beyond
:data:`MAX_COORDINATE`) is a :class:`Molecule` without atoms whose ``info["failed"]`` says why and
``info["n_atoms"]`` how many atoms it was sampled with (:func:`failed_molecule`, :func:`as_written`).
:func:`write_sdf` writes every such molecule as an SDF record with no atoms and the data items
``localframe_failed`` (the reason) and ``localframe_n_atoms``, and :func:`read_sdf` reads it back
as such, so that an evaluation counts it (as invalid and unstable) instead of losing it; no
non-finite or absurd coordinate is ever written as a molecule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from localframe.errors import InputError
from localframe.files import write_text

_BOND_TYPES = {1: "SINGLE", 2: "DOUBLE", 3: "TRIPLE"}
FAILED_ITEM, FAILED_ATOMS_ITEM = "localframe_failed", "localframe_n_atoms"
MAX_COORDINATE = 1.0e3  # Å: a coordinate beyond this (or a non-finite one) makes a sample a failed record


@dataclass
class Molecule:
    numbers: np.ndarray  # (n,) atomic numbers
    positions: np.ndarray  # (n, 3) Å
    charges: np.ndarray = None  # (n,) formal charges
    bonds: np.ndarray | None = None  # (m, 3) int: i, j, Kekulé order; None = unknown
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.charges = np.zeros(len(self.numbers), np.int64) if self.charges is None else np.asarray(self.charges, np.int64)
        if self.bonds is not None:
            self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def failed(self) -> str | None:
        """Why the sampler failed to produce this molecule (None for a molecule)."""
        return self.info.get("failed")


def failed_molecule(n_atoms: int, reason: str, info: dict | None = None) -> Molecule:
    """The record of a failed sample of ``n_atoms`` atoms: no atoms, ``info["failed"] = reason``."""
    return Molecule(np.zeros(0, np.int64), np.zeros((0, 3)), None, None,
                    dict(info or {}, failed=str(reason), n_atoms=int(n_atoms)))


def failure(mol: Molecule) -> str | None:
    """Why ``mol`` cannot be written as a molecule: non-finite positions, or a coordinate beyond
    :data:`MAX_COORDINATE` (None when it can; a failed record keeps its reason)."""
    if mol.failed:
        return mol.failed
    if not np.isfinite(mol.positions).all():
        return "non-finite positions or atom features"
    if len(mol) and np.abs(mol.positions).max() > MAX_COORDINATE:
        return f"a coordinate beyond {MAX_COORDINATE:g} Å"
    return None


def as_written(mol: Molecule) -> Molecule:
    """``mol``, or its failed record (same name and properties) when :func:`failure` gives a reason."""
    reason = failure(mol)
    if reason is None or mol.failed:
        return mol
    return failed_molecule(len(mol), reason, {k: v for k, v in mol.info.items() if k in ("name", "properties")})


def to_rdkit(mol: Molecule, sanitize: bool = False):
    """An RDKit molecule with explicit atoms, charges, the bond list and a 3D conformer (unsanitised by default)."""
    from rdkit import Chem

    rw = Chem.RWMol()
    for z, q in zip(mol.numbers, mol.charges):
        atom = Chem.Atom(int(z))
        atom.SetFormalCharge(int(q))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    for i, j, order in (mol.bonds if mol.bonds is not None else []):
        rw.AddBond(int(i), int(j), getattr(Chem.BondType, _BOND_TYPES[int(order)]))
    conf = Chem.Conformer(len(mol))
    for k, p in enumerate(mol.positions):
        conf.SetAtomPosition(k, [float(c) for c in p])
    rw.AddConformer(conf, assignId=True)
    out = rw.GetMol()
    if sanitize:
        Chem.SanitizeMol(out)
    else:
        out.UpdatePropertyCache(strict=False)
    return out


def from_rdkit(rdmol, info: dict | None = None) -> Molecule:
    """A :class:`Molecule` from an RDKit molecule with a conformer; aromatic bonds are kekulised."""
    from rdkit import Chem

    if rdmol.GetNumConformers() == 0:
        raise InputError("molecule has no 3D coordinates")
    if any(b.GetBondType() == Chem.BondType.AROMATIC for b in rdmol.GetBonds()):
        rdmol = Chem.Mol(rdmol)
        Chem.Kekulize(rdmol, clearAromaticFlags=True)
    bonds = []
    for b in rdmol.GetBonds():
        order = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}.get(b.GetBondType())
        if order is None:
            raise InputError(f"bond {b.GetBeginAtomIdx()}-{b.GetEndAtomIdx()} has the unsupported type {b.GetBondType()}")
        bonds.append((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), order))
    return Molecule(
        numbers=[a.GetAtomicNum() for a in rdmol.GetAtoms()],
        positions=rdmol.GetConformer().GetPositions(),
        charges=[a.GetFormalCharge() for a in rdmol.GetAtoms()],
        bonds=np.array(bonds, dtype=np.int64).reshape(-1, 3),
        info=dict(info or {}),
    )


def write_sdf(path: str | Path, molecules: list[Molecule]) -> Path:
    """Write molecules (3D coordinates, charges, bonds) to an SDF file atomically; a molecule with
    non-finite or out-of-bound positions is written as a failed record (:func:`as_written`)."""
    from rdkit import Chem

    from localframe.generate.tables import distance_bonds

    blocks = []
    for k, mol in enumerate(molecules):
        mol = as_written(mol)
        if mol.failed:
            rd = Chem.Mol()
            rd.SetProp("_Name", str(mol.info.get("name", f"molecule_{k}")))
            items = {FAILED_ITEM: mol.failed, FAILED_ATOMS_ITEM: int(mol.info.get("n_atoms", 0)),
                     **mol.info.get("properties", {})}
            blocks.append(Chem.MolToMolBlock(rd) + "".join(f">  <{key}>\n{value}\n\n" for key, value in items.items())
                          + "$$$$\n")
            continue
        if mol.bonds is None:
            mol = Molecule(mol.numbers, mol.positions, mol.charges, distance_bonds(mol.numbers, mol.positions), mol.info)
        rd = to_rdkit(mol)
        rd.SetProp("_Name", str(mol.info.get("name", f"molecule_{k}")))
        block = Chem.MolToMolBlock(rd, kekulize=False, forceV3000=False)
        items = "".join(f">  <{key}>\n{float(value)!r}\n\n" for key, value in mol.info.get("properties", {}).items())
        blocks.append(block + items + "$$$$\n")
    return write_text(path, "".join(blocks))


def read_sdf(path: str | Path) -> list[Molecule]:
    """Every record of an SDF file as a :class:`Molecule` (unsanitised: what the file says is kept)."""
    from rdkit import Chem, RDLogger

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    RDLogger.DisableLog("rdApp.*")
    supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False, strictParsing=True)
    out = []
    for k, rd in enumerate(supplier):
        if rd is None:
            raise InputError("record cannot be parsed as a mol block", str(path), k)
        try:
            info = {"name": rd.GetProp("_Name") if rd.HasProp("_Name") else f"molecule_{k}"}
            props = _numeric_items(rd)
            props.pop(FAILED_ATOMS_ITEM, None)
            if props:
                info["properties"] = props
            if rd.HasProp(FAILED_ITEM):
                out.append(failed_molecule(_failed_atoms(rd, str(path), k), rd.GetProp(FAILED_ITEM), info))
                continue
            out.append(from_rdkit(rd, info))
        except InputError as err:
            raise err.located(str(path), k) from None
    if not out:
        raise InputError("no molecules in the file", str(path))
    return out


def _failed_atoms(rd, source: str, index: int) -> int:
    try:
        n = int(rd.GetProp(FAILED_ATOMS_ITEM))
    except (KeyError, ValueError):
        raise InputError(f"failed-sample record without a whole {FAILED_ATOMS_ITEM} data item", source, index) from None
    if n < 0 or rd.GetNumAtoms():
        raise InputError(f"failed-sample record with {rd.GetNumAtoms()} atoms and {FAILED_ATOMS_ITEM} {n}", source, index)
    return n


def _numeric_items(rd) -> dict:
    """The record's data items that are numbers (name → float)."""
    out = {}
    for key in rd.GetPropNames():
        try:
            out[key] = float(rd.GetProp(key))
        except ValueError:
            continue
    return out
