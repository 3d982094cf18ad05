"""From a data source to batches: splits, precomputed graphs, and normalization from the training split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from localframe.data.batch import AtomsBatch
from localframe.data.convert import AtomsConverter
from localframe.data.readers import StructureSet
from localframe.errors import InputError
from localframe.nn.elements import N_ELEMENTS


class GraphDataset(Dataset):
    """Structures with their neighbor lists built once; items are single-structure batches.

    ``bonds=True`` (models with SPE) also fixes each structure's bond graph (``AtomsBatch.bonds``): from its
    SMILES (``info["smiles"]``, QM9's) through RDKit where it matches the 3D atoms (:func:`smiles_bonds`),
    else from covalent radii (:func:`localframe.nn.spe.bond_graph`); ``unmatched`` counts the structures
    with a SMILES that did not match."""

    def __init__(self, data: StructureSet, indices, cutoff: float, dtype: torch.dtype = torch.float32,
                 bonds: bool = False):
        convert = AtomsConverter(cutoff, dtype)
        self.graphs = [convert(data.atoms[k], data.labels, source=data.source, first_index=int(k)) for k in indices]
        self.unmatched = 0
        if bonds:
            for graph, k in zip(self.graphs, indices):
                graph.bonds = [self._bonds(data.atoms[k], data.source)]

    def _bonds(self, atoms, source: str) -> np.ndarray:
        from localframe.nn.spe import bond_graph

        found = smiles_bonds(atoms, source)
        self.unmatched += found is None and "smiles" in atoms.info
        return bond_graph(atoms.numbers, atoms.positions) if found is None else found

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, k: int) -> AtomsBatch:
        return self.graphs[k]


def smiles_bonds(atoms, source: str | None = None) -> np.ndarray | None:
    """Bonds (2, B) of a structure from its SMILES (``atoms.info["smiles"]``) through RDKit, matched to
    its atoms as the generation data does (:func:`localframe.generate.data.match_smiles`); None without a
    SMILES or when the SMILES graph is not the 3D structure's (another atom or bond count, another graph)."""
    smiles = atoms.info.get("smiles")
    if not smiles:
        return None
    try:
        from rdkit import RDLogger
    except ImportError:
        raise InputError("the structures have SMILES: SPE takes their bonds through RDKit, which is not installed "
                         "(pip install 'localframe[chem]')", source) from None
    from localframe.generate.data import match_smiles

    RDLogger.DisableLog("rdApp.*")
    found = match_smiles(str(smiles), atoms.numbers, atoms.positions)
    return None if isinstance(found, str) else np.ascontiguousarray(found[0][:, :2].T)


def loader(dataset: GraphDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=AtomsBatch.collate, generator=generator)


def make_splits(data: StructureSet, n_train: int | None, n_val: int | None, n_test: int | None, seed: int) -> dict[str, np.ndarray]:
    """Split indices. A source with its own split (QM9) keeps it; otherwise one permutation with
    ``seed``: n_train, then n_val, then n_test (default: 80 % / 10 % (at least 1) / the rest).
    Sizes that do not fit the data raise :class:`InputError` saying how many structures there are."""
    total = len(data)
    if data.splits:
        parts = dict(data.splits)
        if n_test is not None:
            if n_test > len(parts["test"]):
                raise InputError(f"data.n_test {n_test} is more than the {len(parts['test'])} structures of the "
                                 "source's test split", data.source)
            parts["test"] = parts["test"][:n_test]
        return parts
    if total < 2:
        raise InputError(f"{total} structure(s): training needs at least 2 (one to train on, one to validate)",
                         data.source)
    n_train = n_train if n_train is not None else max(1, int(0.8 * total))
    if n_train >= total:
        raise InputError(f"data.n_train {n_train} leaves nothing to validate on: the source has {total} structures "
                         f"(at most data.n_train={total - 1})", data.source)
    n_val = n_val if n_val is not None else min(max(1, int(0.1 * total)), total - n_train)
    asked = n_train + n_val + (n_test or 0)
    if asked > total:
        terms = f"data.n_train {n_train} + data.n_val {n_val}" + (f" + data.n_test {n_test}" if n_test else "")
        raise InputError(f"{terms} = {asked} structures, but the source has {total}", data.source)
    n_test = n_test if n_test is not None else total - n_train - n_val
    perm = np.random.default_rng(seed).permutation(total)
    return {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val : n_train + n_val + n_test]}


@dataclass
class Normalization:
    """Statistics of the training split that set the heads' reference values, scales and shifts."""

    atom_ref: list[float]  # (119,) eV, least-squares per-element energies
    energy_scale: float  # eV: force RMS (eV/Å × 1 Å) when forces are labelled, else residual std per atom
    target_stats: dict[str, dict]  # name -> {"atom_ref": (119,), "shift": ..., "scale": ...} in the target's unit

    def to_dict(self) -> dict:
        return {"atom_ref": self.atom_ref, "energy_scale": self.energy_scale, "target_stats": self.target_stats}

    @property
    def target_scales(self) -> dict[str, float]:
        return {name: st["scale"] for name, st in self.target_stats.items()}

    def apply(self, model) -> None:
        """Set the model's energy head and target heads from these statistics (in the model's dtype)."""
        dtype = model.energy_head.atom_ref.dtype
        with torch.no_grad():
            model.energy_head.atom_ref.copy_(torch.tensor(self.atom_ref, dtype=dtype))
            model.energy_head.scale.fill_(self.energy_scale)
            for name, st in self.target_stats.items():
                head = model.target_heads[name]
                head.atom_ref.copy_(torch.tensor(st["atom_ref"], dtype=dtype))
                head.shift.fill_(st["shift"])
                head.scale.fill_(st["scale"])


def composition_fit(atoms, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-element references (119,) by least squares, and the residual per atom of each structure."""
    counts = np.zeros((len(atoms), N_ELEMENTS))
    for row, a in enumerate(atoms):
        np.add.at(counts[row], a.numbers, 1.0)
    present = counts.any(axis=0)
    solution, *_ = np.linalg.lstsq(counts[:, present], values, rcond=None)
    refs = np.zeros(N_ELEMENTS)
    refs[present] = solution
    return refs, (values - counts @ refs) / counts.sum(axis=1)


def normalization(data: StructureSet, train: np.ndarray, targets: dict[str, str]) -> Normalization:
    atoms = [data.atoms[k] for k in train]
    atom_ref = np.zeros(N_ELEMENTS)
    energy_scale = 1.0
    if "energy" in data.labels:
        atom_ref, residual_per_atom = composition_fit(atoms, np.array([a.info["energy"] for a in atoms]))
        if "forces" in data.labels:
            forces = np.concatenate([a.arrays["forces"].reshape(-1) for a in atoms])
            energy_scale = float(np.sqrt(np.mean(forces**2)))
        else:
            energy_scale = float(residual_per_atom.std())
        energy_scale = energy_scale if energy_scale > 1e-8 else 1.0
    stats = {}
    for name, aggregation in targets.items():
        values = np.array([a.info[name] for a in atoms], dtype=np.float64)
        if aggregation == "sum":  # extensive: element references, then the spread of the per-atom residual
            refs, residual = composition_fit(atoms, values)
            stats[name] = {"atom_ref": refs.tolist(), "shift": float(residual.mean()), "scale": float(residual.std() or 1.0)}
        else:
            stats[name] = {"atom_ref": [0.0] * N_ELEMENTS, "shift": float(values.mean()), "scale": float(values.std() or 1.0)}
    return Normalization(atom_ref.tolist(), energy_scale, stats)
