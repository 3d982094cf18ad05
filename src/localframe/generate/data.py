"""QM9 molecules for generation: explicit (or no) hydrogens, atom types, formal charges, bonds.

Atoms and positions come from :mod:`localframe.data.qm9` (qm9pack's CSVs, never importing the
package). Bonds and formal charges come from the molecule's QM9 SMILES through RDKit:

1. the SMILES is parsed and sanitised (``Chem.MolFromSmiles``), hydrogens made explicit and the
   aromatic bonds kekulised; a SMILES that fails is **dropped and counted** (``sanitisation``);
2. it is matched to the 3D atoms: a connectivity graph of the 3D structure from covalent radii
   (``rdDetermineBonds.DetermineConnectivity``) must be isomorphic, element by element, to the
   SMILES graph (bond orders ignored); the isomorphism maps the SMILES' bond orders and charges
   onto the 3D atoms. A molecule whose atom count, bond count or graph differs is **dropped and
   counted** (``matching``): its SMILES does not describe its relaxed geometry.

The standard split of :func:`localframe.data.qm9.split` (110,000 / 10,000 / rest, seed 42) is
applied to QM9 indices *before* dropping, so a molecule is in the same part whatever was dropped.
``half="first"`` / ``"second"`` keeps the first / second half of a part (55,000 + 55,000 QM9
indices of the training part, also before dropping): EDM's conditioning protocol trains the
property regressor on one half of the training set and the generator on the other.
The result for all of QM9 is cached (``qm9_bonds_v1.npz`` in the QM9 cache folder), and so is the
drop reason of each dropped molecule (``qm9_bonds_v1_dropped.npz``), which the drop counts of a
part are read from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from localframe.data import qm9
from localframe.errors import InputError
from localframe.files import atomic_open
from localframe.generate.molecule import Molecule

CACHE_VERSION = 1
ELEMENTS_H = (1, 6, 7, 8, 9)
ELEMENTS_NO_H = (6, 7, 8, 9)
CHARGES = (-1, 0, 1)
DROP_REASONS = ("sanitisation", "matching")
HALVES = ("first", "second")


@dataclass
class MoleculeSet:
    """Molecules as flat arrays (atoms and bonds concatenated, with per-molecule counts)."""

    qm9_index: np.ndarray  # (M,) row in localframe.data.qm9.load()
    n_atoms: np.ndarray  # (M,)
    numbers: np.ndarray  # (A,)
    charges: np.ndarray  # (A,)
    positions: np.ndarray  # (A, 3) Å
    n_bonds: np.ndarray  # (M,)
    bonds: np.ndarray  # (B, 3) i, j (within the molecule), Kekulé order
    smiles: np.ndarray  # (M,) canonical SMILES without stereo, heavy atoms only
    dropped: dict  # reason -> count, over the QM9 molecules asked for

    def __len__(self) -> int:
        return len(self.n_atoms)

    def molecule(self, k: int) -> Molecule:
        a0, a1 = self._atom_offsets[k], self._atom_offsets[k + 1]
        b0, b1 = self._bond_offsets[k], self._bond_offsets[k + 1]
        return Molecule(self.numbers[a0:a1], self.positions[a0:a1], self.charges[a0:a1], self.bonds[b0:b1],
                        {"name": f"qm9_{int(self.qm9_index[k])}", "smiles": str(self.smiles[k])})

    def molecules(self, indices=None) -> list[Molecule]:
        return [self.molecule(k) for k in (range(len(self)) if indices is None else indices)]

    @property
    def _atom_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_atoms)])

    @property
    def _bond_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_bonds)])

    def subset(self, keep: np.ndarray) -> "MoleculeSet":
        """The molecules at positions ``keep`` (the drop counts stay those of the parent)."""
        keep = np.asarray(keep, dtype=np.int64)
        ao, bo = self._atom_offsets, self._bond_offsets
        atoms = np.concatenate([np.arange(ao[k], ao[k + 1]) for k in keep]) if len(keep) else np.zeros(0, np.int64)
        bonds = np.concatenate([np.arange(bo[k], bo[k + 1]) for k in keep]) if len(keep) else np.zeros(0, np.int64)
        return MoleculeSet(self.qm9_index[keep], self.n_atoms[keep], self.numbers[atoms], self.charges[atoms],
                           self.positions[atoms], self.n_bonds[keep], self.bonds[bonds].reshape(-1, 3),
                           self.smiles[keep], dict(self.dropped))

    def without_hydrogens(self) -> "MoleculeSet":
        """The same molecules with their hydrogen atoms and bonds to them removed (heavy atoms renumbered)."""
        ao, bo = self._atom_offsets, self._bond_offsets
        numbers, charges, positions, bonds, n_atoms, n_bonds = [], [], [], [], [], []
        for k in range(len(self)):
            z = self.numbers[ao[k]:ao[k + 1]]
            heavy = z != 1
            new = np.cumsum(heavy) - 1
            b = self.bonds[bo[k]:bo[k + 1]]
            b = b[heavy[b[:, 0]] & heavy[b[:, 1]]]
            b = np.stack([new[b[:, 0]], new[b[:, 1]], b[:, 2]], axis=1) if len(b) else b
            numbers.append(z[heavy]); charges.append(self.charges[ao[k]:ao[k + 1]][heavy])
            positions.append(self.positions[ao[k]:ao[k + 1]][heavy]); bonds.append(b.reshape(-1, 3))
            n_atoms.append(int(heavy.sum())); n_bonds.append(len(b))
        return MoleculeSet(self.qm9_index.copy(), np.array(n_atoms), np.concatenate(numbers), np.concatenate(charges),
                           np.concatenate(positions), np.array(n_bonds), np.concatenate(bonds), self.smiles.copy(),
                           dict(self.dropped))

    def properties(self, names) -> np.ndarray:
        """(M, C) QM9 properties of the molecules, in :mod:`localframe.data.qm9`'s units."""
        targets = qm9.load().targets
        unknown = [name for name in names if name not in targets]
        if unknown:
            raise InputError(f"qm9: unknown property {unknown[0]!r}; choose from {', '.join(targets)}")
        return np.stack([targets[name][self.qm9_index] for name in names], axis=1).reshape(len(self), len(names))

    def atom_count_histogram(self) -> np.ndarray:
        """counts[n] = molecules with n atoms (the size distribution that sampling draws from)."""
        return np.bincount(self.n_atoms)


def match_smiles(smiles: str, numbers: np.ndarray, positions: np.ndarray):
    """(bonds (m, 3), charges (n,), canonical SMILES) for the 3D atoms, or a drop reason string."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return "sanitisation"
    canonical = Chem.MolToSmiles(mol, isomericSmiles=False)
    mol = Chem.AddHs(mol)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    if mol.GetNumAtoms() != len(numbers):
        return "matching"
    rw = Chem.RWMol()
    for z in numbers:
        rw.AddAtom(Chem.Atom(int(z)))
    conf = Chem.Conformer(len(numbers))
    for k, p in enumerate(positions):
        conf.SetAtomPosition(k, [float(c) for c in p])
    rw.AddConformer(conf)
    graph = rw.GetMol()
    rdDetermineBonds.DetermineConnectivity(graph)
    query = Chem.RWMol(mol)
    for bond in query.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
    for atom in query.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
    query = query.GetMol()
    query.UpdatePropertyCache(strict=False)
    graph.UpdatePropertyCache(strict=False)
    if graph.GetNumBonds() != query.GetNumBonds():
        return "matching"
    match = graph.GetSubstructMatch(query)  # match[smiles atom] = 3D atom
    if not match:
        return "matching"
    order = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
    bonds = []
    for bond in mol.GetBonds():
        i, j = sorted((match[bond.GetBeginAtomIdx()], match[bond.GetEndAtomIdx()]))
        bonds.append((i, j, order[bond.GetBondType()]))
    charges = np.zeros(len(numbers), np.int64)
    for atom in mol.GetAtoms():
        charges[match[atom.GetIdx()]] = atom.GetFormalCharge()
    return np.array(sorted(bonds), dtype=np.int64).reshape(-1, 3), charges, canonical


def _build(data: qm9.QM9, indices: np.ndarray) -> MoleculeSet:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    offsets = data.offsets
    kept, n_atoms, numbers, charges, positions, n_bonds, bonds, smiles = [], [], [], [], [], [], [], []
    dropped = {reason: 0 for reason in DROP_REASONS}
    for k in indices:
        z, x = data.numbers[offsets[k]:offsets[k + 1]], data.positions[offsets[k]:offsets[k + 1]]
        result = match_smiles(str(data.smiles[k]), z, x)
        if isinstance(result, str):
            dropped[result] += 1
            continue
        b, q, smi = result
        kept.append(k); n_atoms.append(len(z)); numbers.append(z); charges.append(q); positions.append(x)
        n_bonds.append(len(b)); bonds.append(b); smiles.append(smi)
    return MoleculeSet(np.array(kept, np.int64), np.array(n_atoms, np.int64), np.concatenate(numbers),
                       np.concatenate(charges), np.concatenate(positions), np.array(n_bonds, np.int64),
                       np.concatenate(bonds), np.array(smiles), dropped)


def load_all(cache: bool = True) -> MoleculeSet:
    """Every QM9 molecule that survives sanitisation and matching (cached after the first call, ~1 min)."""
    path = qm9.cache_dir() / f"qm9_bonds_v{CACHE_VERSION}.npz"
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as z:
            return MoleculeSet(z["qm9_index"], z["n_atoms"], z["numbers"], z["charges"], z["positions"], z["n_bonds"],
                               z["bonds"], z["smiles"], dict(zip(DROP_REASONS, z["dropped"].tolist())))
    data = qm9.load()
    result = _build(data, np.arange(len(data)))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as handle:
            np.savez(handle, qm9_index=result.qm9_index, n_atoms=result.n_atoms, numbers=result.numbers,
                     charges=result.charges, positions=result.positions, n_bonds=result.n_bonds, bonds=result.bonds,
                     smiles=result.smiles, dropped=np.array([result.dropped[r] for r in DROP_REASONS]))
    return result


def load_split(part: str = "train", hydrogens: bool = True, n: int | None = None, cache: bool = True,
               half: str | None = None) -> MoleculeSet:
    """One part (``train``, ``val``, ``test``) of the standard QM9 split, with bonds and charges.

    ``half`` (``first``, ``second``) keeps that half of the part's QM9 indices; ``n`` keeps the
    first ``n`` surviving molecules; ``dropped`` counts the molecules of the whole part (or half)
    that sanitisation and matching removed.
    """
    parts = qm9.split()
    if part not in parts:
        raise InputError(f"qm9: unknown split part {part!r}; choose train, val or test")
    if half is not None and half not in HALVES:
        raise InputError(f"qm9: unknown half {half!r}; choose first or second")
    every = load_all(cache=cache)
    wanted = parts[part]
    if half is not None:
        middle = len(wanted) // 2
        wanted = wanted[:middle] if half == "first" else wanted[middle:]
    position = {int(q): k for k, q in enumerate(every.qm9_index)}
    keep = np.array([position[int(q)] for q in wanted if int(q) in position], dtype=np.int64)
    n_dropped = len(wanted) - len(keep)
    out = every.subset(keep[:n] if n else keep)
    # per-reason counts for this part: recount the dropped ones of this part only
    missing = np.array([int(q) for q in wanted if int(q) not in position], dtype=np.int64)
    out.dropped = _drop_reasons(missing, cache) if n_dropped else {r: 0 for r in DROP_REASONS}
    return out.without_hydrogens() if not hydrogens else out


def _drop_reasons(indices: np.ndarray, cache: bool = True) -> dict:
    """Counts per reason of the dropped QM9 molecules ``indices``, from :func:`dropped_table` (cached)."""
    if not cache:
        return _build_reasons(qm9.load(), indices)
    index, reason = dropped_table()
    where = np.searchsorted(index, indices)
    if len(indices) and (where.max() >= len(index) or not np.array_equal(index[where], indices)):
        raise InputError("qm9: a dropped-molecule index is missing from the drop table; delete the QM9 cache folder")
    codes = np.bincount(reason[where], minlength=len(DROP_REASONS))
    return {r: int(codes[k]) for k, r in enumerate(DROP_REASONS)}


def dropped_table(cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(QM9 indices, reason codes into DROP_REASONS) of every molecule :func:`load_all` dropped, sorted by
    index; computed once (SMILES matching of the dropped molecules only) and cached beside the bond cache
    (``qm9_bonds_v1_dropped.npz``), so that counting a part's drops does not match SMILES again."""
    path = qm9.cache_dir() / f"qm9_bonds_v{CACHE_VERSION}_dropped.npz"
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as z:
            return z["index"], z["reason"]
    data = qm9.load()
    kept = np.zeros(len(data), bool)
    kept[load_all(cache=cache).qm9_index] = True
    index = np.flatnonzero(~kept)
    reason = np.array([DROP_REASONS.index(_reason(data, k)) for k in index], dtype=np.int64)
    if cache:
        with atomic_open(path) as handle:
            np.savez(handle, index=index, reason=reason)
    return index, reason


def _reason(data: qm9.QM9, k: int) -> str:
    result = match_smiles(str(data.smiles[k]), data.numbers[data.offsets[k]:data.offsets[k + 1]],
                          data.positions[data.offsets[k]:data.offsets[k + 1]])
    if not isinstance(result, str):
        raise InputError(f"qm9: molecule {k} matches its SMILES but is not in the bond cache; delete the QM9 cache folder")
    return result


def _build_reasons(data: qm9.QM9, indices: np.ndarray) -> dict:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    offsets = data.offsets
    counts = {reason: 0 for reason in DROP_REASONS}
    for k in indices:
        result = match_smiles(str(data.smiles[k]), data.numbers[offsets[k]:offsets[k + 1]], data.positions[offsets[k]:offsets[k + 1]])
        counts[result] += 1
    return counts
