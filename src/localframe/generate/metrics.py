r"""Metrics of generated molecules (``localframe generate evaluate``), always beside the data's own score.

For each molecule (3D atoms, formal charges and the bond list of its SDF record):

- **EDM stability** — bonds re-derived from distances with EDM's table; an atom is stable when its
  bond-order sum is its one valence (H 1, C 4, N 3, O 2, F 1, charges ignored); a molecule when all
  its atoms are (Hoogeboom et al. 2022).
- **Valency-table stability** with the molecule's own bonds and charges, under the *corrected*
  table (Kekulé bond orders) and under the *MiDi* table it replaces, with aromatic bonds (perceived
  by RDKit where the molecule sanitises) cast to single as its users do (see
  :mod:`localframe.generate.tables`).
- **Validity** — ``Chem.SanitizeMol`` succeeds on the whole molecule (all fragments).
- **Connectivity** — the bond graph is one fragment.
- **Uniqueness** — distinct canonical SMILES (no stereo, hydrogens implicit, largest fragment as EDM
  does) among the valid molecules, divided by the number of valid molecules.
- **Novelty** — of the distinct valid SMILES, the fraction absent from the training SMILES.
- **Separation violations** — pairs of atoms closer than the bonded minimum 0.75 · (r_i + r_j)
  (covalent radii, :mod:`localframe.generate.separation`): the fraction of all atom pairs
  (``pairs_too_close``) and of molecules with at least one such pair (``mol_too_close``).

A file without any hydrogen atom is read as heavy atoms only: RDKit adds implicit hydrogens for
validity, and the stability rows (which need every hydrogen) are not defined (``None``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from localframe.generate.molecule import Molecule, to_rdkit
from localframe.generate.separation import too_close
from localframe.generate.tables import (
    AROMATIC_WEIGHT, atom_stable_edm, atom_stable_table, distance_bonds, valences,
)

METRICS = (
    "atom_stable_edm", "mol_stable_edm", "atom_stable_corrected", "mol_stable_corrected",
    "atom_stable_midi", "mol_stable_midi", "valid", "connected", "valid_connected", "unique", "novel",
    "pairs_too_close", "mol_too_close",
)


@dataclass
class MoleculeScore:
    n_atoms: int
    stable_edm: np.ndarray | None  # per atom
    stable_corrected: np.ndarray | None
    stable_midi: np.ndarray | None
    valid: bool
    connected: bool
    smiles: str | None  # canonical SMILES of the largest fragment, when valid
    close_pairs: int = 0  # pairs closer than the bonded minimum
    n_pairs: int = 0


def _sanitised(mol: Molecule, implicit_h: bool):
    from rdkit import Chem

    rd = Chem.RWMol(to_rdkit(mol))
    if implicit_h:
        for atom in rd.GetAtoms():
            atom.SetNoImplicit(False)
    rd = rd.GetMol()
    try:
        Chem.SanitizeMol(rd)
    except Exception:  # RDKit raises several types (valence, kekulisation, ...)
        return None
    return rd


def canonical_smiles(rdmol) -> str:
    """Canonical SMILES without stereo, hydrogens implicit, of the largest fragment."""
    from rdkit import Chem

    frags = Chem.GetMolFrags(rdmol, asMols=True, sanitizeFrags=False)
    largest = max(frags, key=lambda m: m.GetNumAtoms())
    return Chem.MolToSmiles(Chem.RemoveHs(largest, sanitize=False), isomericSmiles=False)


def n_fragments(n_atoms: int, bonds: np.ndarray) -> int:
    parent = list(range(n_atoms))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, _ in bonds:
        parent[find(int(i))] = find(int(j))
    return len({find(a) for a in range(n_atoms)})


def score_molecule(mol: Molecule, heavy_only: bool = False) -> MoleculeScore:
    bonds = mol.bonds if mol.bonds is not None else distance_bonds(mol.numbers, mol.positions)
    rd = _sanitised(Molecule(mol.numbers, mol.positions, mol.charges, bonds), implicit_h=heavy_only)
    stable = {"edm": None, "corrected": None, "midi": None}
    if not heavy_only:
        edm_bonds = distance_bonds(mol.numbers, mol.positions)
        stable["edm"] = atom_stable_edm(mol.numbers, valences(len(mol), edm_bonds))
        aromatic = None
        if rd is not None and len(bonds):
            flags = {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))): b.GetIsAromatic() for b in rd.GetBonds()}
            aromatic = np.array([flags[tuple(sorted((int(i), int(j))))] for i, j, _ in bonds])
        for table in ("corrected", "midi"):
            v = valences(len(mol), bonds, aromatic, AROMATIC_WEIGHT[table])
            stable[table] = atom_stable_table(mol.numbers, mol.charges, v, table)
    close, n_pairs = too_close(mol.numbers, mol.positions)
    return MoleculeScore(
        n_atoms=len(mol), stable_edm=stable["edm"], stable_corrected=stable["corrected"], stable_midi=stable["midi"],
        valid=rd is not None, connected=n_fragments(len(mol), bonds) == 1,
        smiles=canonical_smiles(rd) if rd is not None else None,
        close_pairs=close, n_pairs=n_pairs,
    )


def summarize(scores: list[MoleculeScore], training_smiles: set[str] | None = None) -> dict:
    """Fractions (0–1) of every metric over the molecules; novelty is ``None`` without training SMILES."""
    n = len(scores)
    out = {"n_molecules": n}
    for table in ("edm", "corrected", "midi"):
        per = [getattr(s, f"stable_{table}") for s in scores]
        if n and all(p is not None for p in per):
            atoms = np.concatenate(per) if per else np.zeros(0, bool)
            out[f"atom_stable_{table}"] = float(atoms.mean()) if len(atoms) else 0.0
            out[f"mol_stable_{table}"] = float(np.mean([p.all() for p in per]))
        else:
            out[f"atom_stable_{table}"] = out[f"mol_stable_{table}"] = None
    out["valid"] = float(np.mean([s.valid for s in scores])) if n else 0.0
    out["connected"] = float(np.mean([s.connected for s in scores])) if n else 0.0
    out["valid_connected"] = float(np.mean([s.valid and s.connected for s in scores])) if n else 0.0
    smiles = [s.smiles for s in scores if s.smiles is not None]
    distinct = set(smiles)
    out["unique"] = len(distinct) / len(smiles) if smiles else 0.0
    out["novel"] = (len(distinct - training_smiles) / len(distinct) if distinct else 0.0) if training_smiles is not None else None
    n_pairs = sum(s.n_pairs for s in scores)
    out["pairs_too_close"] = sum(s.close_pairs for s in scores) / n_pairs if n_pairs else 0.0
    out["mol_too_close"] = float(np.mean([s.close_pairs > 0 for s in scores])) if n else 0.0
    return out


def evaluate_molecules(molecules: list[Molecule], training_smiles: set[str] | None = None) -> dict:
    heavy_only = not any((m.numbers == 1).any() for m in molecules)
    result = summarize([score_molecule(m, heavy_only) for m in molecules], training_smiles)
    result["hydrogens"] = not heavy_only
    return result


def reference_row(n: int = 1000, hydrogens: bool = True, bonds: str = "smiles") -> dict:
    """The metrics of the first ``n`` QM9 training molecules (their DFT geometry and charges).

    ``bonds="smiles"``: the bonds of their SMILES; ``"distance"``: bonds from EDM's distance table and
    zero charges, the path a model that generates no bonds goes through. Novelty against the
    training set itself is 0 by construction."""
    from localframe.generate.data import load_split

    train = load_split("train", hydrogens=hydrogens)
    molecules = train.molecules(range(min(n, len(train))))
    if bonds == "distance":
        molecules = [Molecule(m.numbers, m.positions, None, distance_bonds(m.numbers, m.positions), m.info) for m in molecules]
    return evaluate_molecules(molecules, set(train.smiles.tolist()))


def training_smiles(hydrogens: bool = True) -> set[str]:
    from localframe.generate.data import load_split

    return set(load_split("train", hydrogens=hydrogens).smiles.tolist())


def evaluate_file(path: str, reference: int = 1000, novelty: bool = True) -> dict:
    """Metrics of an SDF file and the data's reference row: ``{"samples": {...}, "reference": {...}}``."""
    from localframe.generate.molecule import read_sdf

    molecules = read_sdf(path)
    samples = evaluate_molecules(molecules, training_smiles() if novelty else None)
    out = {"file": str(path), "samples": samples}
    if reference:
        out["reference"] = reference_row(reference, hydrogens=samples["hydrogens"])
        out["reference_distance_bonds"] = reference_row(reference, hydrogens=samples["hydrogens"], bonds="distance")
    return out


def render(result: dict) -> str:
    """A plain-text table of the metrics (percent): samples beside the QM9 training reference rows, with
    their SMILES bonds and with bonds from EDM's distance table."""
    columns = [("samples", result["samples"]), ("QM9 train, SMILES bonds", result.get("reference")),
               ("QM9 train, distance bonds", result.get("reference_distance_bonds"))]
    columns = [(name, col) for name, col in columns if col]

    def fmt(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    rows = [["metric (%)"] + [name for name, _ in columns]]
    rows += [[key] + [fmt(col.get(key)) for _, col in columns] for key in METRICS]
    rows.append(["molecules"] + [str(col["n_molecules"]) for _, col in columns])
    width = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(f"{cell:<{w}}" if c == 0 else f"{cell:>{w}}" for c, (cell, w) in enumerate(zip(r, width)))
                     for r in rows)
