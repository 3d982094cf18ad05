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

- **Failed samples** (``failed``) — records of samples whose sampler produced non-finite or
  out-of-bound positions (:func:`~localframe.generate.molecule.failed_molecule`): they stay in every
  denominator of a per-molecule or per-atom metric, as invalid, unconnected, with all their atoms unstable
  and as a molecule with a pair too close (``mol_too_close``); ``pairs_too_close`` counts atom pairs, of
  which a failed record has none.

Costly, on a capped number of RDKit-valid molecules (the first N of the file, ``strain`` and
``posebusters``; 0 = off), each beside the same rows of as many QM9 training molecules:

- **Strain** (:mod:`localframe.generate.strain`) — GFN2-xTB relaxation: ΔE = E(generated) −
  E(relaxed) and the RMSD to the relaxed geometry (heavy atoms, all atoms), medians over molecules;
- **PoseBusters** (:mod:`localframe.generate.geometry_checks`) — pass fraction of bond lengths, bond
  angles, internal steric clash, aromatic ring flatness, double bond flatness, internal energy, and
  of all six.

A file without any hydrogen atom is read as heavy atoms only: RDKit adds implicit hydrogens for
validity, and the stability rows (which need every hydrogen) are not defined (``None``), nor is
the strain (xTB needs every atom).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from localframe.generate.molecule import Molecule, failure, to_rdkit
from localframe.generate.separation import too_close
from localframe.generate.tables import (
    AROMATIC_WEIGHT, atom_stable_edm, atom_stable_table, distance_bonds, valences,
)

METRICS = (
    "atom_stable_edm", "mol_stable_edm", "atom_stable_corrected", "mol_stable_corrected",
    "atom_stable_midi", "mol_stable_midi", "valid", "connected", "valid_connected", "unique", "novel",
    "pairs_too_close", "mol_too_close", "failed",
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
    failed: bool = False  # a failed sample (no geometry)


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


def with_bonds(mol: Molecule) -> Molecule:
    """``mol``, or without a bond list, ``mol`` with the bonds of EDM's distance table (how every metric
    reads a molecule that has no bonds of its own)."""
    if mol.bonds is not None:
        return mol
    return Molecule(mol.numbers, mol.positions, mol.charges, distance_bonds(mol.numbers, mol.positions), mol.info)


def score_molecule(mol: Molecule, heavy_only: bool = False) -> MoleculeScore:
    if failure(mol):  # a failed record, or a molecule with non-finite / out-of-bound positions
        n = int(mol.info.get("n_atoms", len(mol)))
        unstable = None if heavy_only else np.zeros(n, bool)
        return MoleculeScore(n_atoms=n, stable_edm=unstable, stable_corrected=unstable, stable_midi=unstable,
                             valid=False, connected=False, smiles=None, failed=True)
    mol = with_bonds(mol)
    bonds = mol.bonds
    rd = _sanitised(mol, implicit_h=heavy_only)
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
    out["mol_too_close"] = float(np.mean([s.close_pairs > 0 or s.failed for s in scores])) if n else 0.0
    out["failed"] = float(np.mean([s.failed for s in scores])) if n else 0.0
    out["n_failed"] = sum(s.failed for s in scores)
    return out


def evaluate_molecules(molecules: list[Molecule], training_smiles: set[str] | None = None, strain: int = 0,
                       posebusters: int = 0, progress: bool = False, label: str = "samples",
                       source: str | None = None) -> dict:
    """:func:`summarize` of the molecules, plus the strain and PoseBusters rows of the first ``strain`` /
    ``posebusters`` RDKit-valid molecules (0: not computed); ``source`` (the file) names them in errors."""
    formed = [m for m in molecules if not failure(m)]
    heavy_only = bool(formed) and not any((m.numbers == 1).any() for m in formed)
    scores = [score_molecule(m, heavy_only) for m in molecules]
    result = summarize(scores, training_smiles)
    result["hydrogens"] = not heavy_only
    valid = [k for k, s in enumerate(scores) if s.valid]
    if strain:
        result["strain"] = _strain_row(molecules, valid[:strain], heavy_only, progress, label, source)
    if posebusters:
        result["posebusters"] = _posebusters_row(molecules, valid[:posebusters], heavy_only, progress, label)
    return result


def _strain_row(molecules, picked, heavy_only, progress, label, source=None) -> dict:
    from localframe.generate import strain

    if heavy_only:
        return {"n_molecules": 0, "note": "no hydrogens: xTB strain needs every atom"}
    per = strain.strain_many([with_bonds(molecules[k]) for k in picked], progress, f"xTB strain, {label}",
                             source=source, indices=picked)
    row = strain.summarize(per)
    row["molecules"] = [dict(r, index=k, name=molecules[k].info.get("name")) for k, r in zip(picked, per)]
    return row


def _posebusters_row(molecules, picked, heavy_only, progress, label) -> dict:
    from localframe.generate import geometry_checks

    per = geometry_checks.check([with_bonds(molecules[k]) for k in picked], progress, f"PoseBusters, {label}",
                                implicit_h=heavy_only, indices=picked)
    return geometry_checks.summarize(per)


def reference_row(n: int = 1000, hydrogens: bool = True, bonds: str = "smiles", strain: int = 0,
                  posebusters: int = 0, progress: bool = False) -> dict:
    """The metrics of the first ``n`` QM9 training molecules (their DFT geometry and charges).

    ``bonds="smiles"``: the bonds of their SMILES; ``"distance"``: bonds from EDM's distance table and
    zero charges, the path a model that generates no bonds goes through. Novelty against the
    training set itself is 0 by construction. ``strain`` / ``posebusters``: those rows on the first
    so many of the (valid) molecules."""
    from localframe.generate.data import load_split

    train = load_split("train", hydrogens=hydrogens)
    molecules = train.molecules(range(min(max(n, strain, posebusters), len(train))))
    if bonds == "distance":
        molecules = [Molecule(m.numbers, m.positions, None, distance_bonds(m.numbers, m.positions), m.info) for m in molecules]
    result = evaluate_molecules(molecules[:n], set(train.smiles.tolist()))
    if strain or posebusters:
        costly = evaluate_molecules(molecules, None, strain, posebusters, progress, "QM9 train")
        result.update({key: costly[key] for key in ("strain", "posebusters") if key in costly})
    return result


def training_smiles(hydrogens: bool = True) -> set[str]:
    from localframe.generate.data import load_split

    return set(load_split("train", hydrogens=hydrogens).smiles.tolist())


def evaluate_file(path: str, reference: int = 1000, novelty: bool = True, strain: int = 0, posebusters: int = 0,
                  progress: bool = True) -> dict:
    """Metrics of an SDF file and the data's reference row: ``{"samples": {...}, "reference": {...}}``;
    ``strain`` / ``posebusters``: those rows on the first so many RDKit-valid molecules (0: off), the
    reference's on as many QM9 training molecules."""
    from localframe.errors import InputError
    from localframe.generate.molecule import read_sdf

    for name, value in (("--strain", strain), ("--posebusters", posebusters), ("--reference", reference)):
        if int(value) < 0:
            raise InputError(f"{name} must be 0 (off) or a positive number of molecules, got {value}")
    if posebusters:
        from localframe.generate.geometry_checks import require

        require()
    molecules = read_sdf(path)
    samples = evaluate_molecules(molecules, training_smiles() if novelty else None, strain, posebusters, progress,
                                 source=str(path))
    out = {"file": str(path), "samples": samples}
    if reference:
        out["reference"] = reference_row(reference, hydrogens=samples["hydrogens"], strain=min(strain, reference),
                                         posebusters=min(posebusters, reference), progress=progress)
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
    blocks = [_table(rows)]
    costly = [("samples", result["samples"]), ("QM9 train", result.get("reference"))]
    strain = [(name, col["strain"]) for name, col in costly if col and "strain" in col]
    if strain:
        blocks.append(_table(_strain_rows(strain)))
    checks = [(name, col["posebusters"]) for name, col in costly if col and "posebusters" in col]
    if checks:
        blocks.append(_table(_posebusters_rows(checks)))
    return "\n\n".join(blocks)


def _table(rows) -> str:
    width = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(f"{cell:<{w}}" if c == 0 else f"{cell:>{w}}" for c, (cell, w) in enumerate(zip(r, width)))
                     for r in rows)


def _strain_rows(columns) -> list[list[str]]:
    from localframe.generate.strain import FMAX, METHOD

    def fmt(v, digits):
        return "n/a" if v is None else f"{v:.{digits}f}"

    rows = [[f"{METHOD} strain (RDKit-valid molecules, BFGS to {FMAX} eV/Å), median"] + [n for n, _ in columns],
            ["ΔE = E(generated) - E(relaxed), kcal/mol"] + [fmt(c.get("delta_e_kcal_mol"), 2) for _, c in columns],
            ["ΔE, eV"] + [fmt(c.get("delta_e_ev"), 4) for _, c in columns],
            ["RMSD heavy atoms, Å"] + [fmt(c.get("rmsd_heavy"), 3) for _, c in columns],
            ["RMSD all atoms, Å"] + [fmt(c.get("rmsd_all"), 3) for _, c in columns],
            ["molecules relaxed / xTB failed / not converged"]
            + [f"{c.get('n_relaxed', 0)} / {c.get('n_failed', 0)} / {c.get('n_not_converged', 0)}" for _, c in columns]]
    notes = [f"{name}: {c['note'] if 'note' in c else 'first failure: ' + str(c['first_error'])}"
             for name, c in columns if c.get("note") or c.get("first_error")]
    return rows + [[note] + [""] * len(columns) for note in notes]


def _posebusters_rows(columns) -> list[list[str]]:
    from localframe.generate.geometry_checks import CHECKS

    def fmt(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    rows = [["PoseBusters, mol config (% of RDKit-valid molecules)"] + [n for n, _ in columns]]
    rows += [[name] + [fmt(c.get(name)) for _, c in columns] for name in CHECKS]
    rows.append(["all six"] + [fmt(c.get("all")) for _, c in columns])
    rows.append(["molecules checked"] + [str(c["n_molecules"]) for _, c in columns])
    return rows
