"""The structures every benchmark runs on, built the same way for every model.

* QM9 molecules (the first molecules of the standard training split; a few small molecules from
  ASE's G2 set stand in when QM9 is not installed);
* ethanol frames: rattled copies of ethanol (for timing; the values of the labels do not change
  the cost) or a GFN2-xTB MD17-style trajectory made with :func:`localframe.reference.sample`;
* periodic boxes: diamond-silicon supercells (8 atoms per cubic cell, a = 5.43 Å), rattled;
* molecules and clusters for the comparison with GFN2-xTB: ethanol, aspirin (RDKit embedding)
  and spherical water clusters cut from a 1 g/cm³ lattice of randomly oriented molecules.

Labels are zeros where only timing matters; :func:`with_dummy_labels` adds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule

from localframe.errors import one_line

SI_LATTICE = 5.43  # Å
WATER_SPACING = 3.104  # Å between molecules: 1.0 g/cm³
ASPIRIN_SMILES = "CC(=O)Oc1ccccc1C(=O)O"
G2_FALLBACK = ("CH3CH2OH", "C6H6", "CH3COOH", "CH3CONH2", "C4H4O", "CH3CH2NH2", "C3H8", "CH3OCH3")


def with_dummy_labels(structures: list[Atoms], stress: bool = False) -> list[Atoms]:
    """Copies carrying zero energy and forces (and stress for periodic cells), for timing."""
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.info["energy"] = 0.0
        atoms.arrays["forces"] = np.zeros((len(atoms), 3))
        if stress and atoms.pbc.all():
            atoms.info["stress"] = np.zeros((3, 3))
        out.append(atoms)
    return out


def qm9_molecules(count: int) -> tuple[list[Atoms], str]:
    """``count`` QM9 molecules (and a description of where they come from)."""
    try:
        from localframe.data import qm9

        data = qm9.load()
        train = qm9.split(n_train=count)["train"][:count]
        return data.atoms_list(train), f"QM9 (first {count} molecules of the standard training split)"
    except Exception as err:  # qm9pack missing or unreadable: fall back, and say so
        reason = one_line(err, 80)
        molecules = [molecule(G2_FALLBACK[k % len(G2_FALLBACK)]) for k in range(count)]
        return molecules, f"G2 small molecules (QM9 not available: {reason})"


def ethanol_frames(count: int, seed: int = 0, stdev: float = 0.05) -> list[Atoms]:
    """``count`` copies of ethanol with Gaussian displacements of ``stdev`` Å."""
    rng = np.random.default_rng(seed)
    base = molecule("CH3CH2OH")
    frames = []
    for _ in range(count):
        atoms = base.copy()
        atoms.positions = atoms.positions + rng.normal(0.0, stdev, atoms.positions.shape)
        frames.append(atoms)
    return frames


def silicon_box(repeat: int, seed: int = 0, stdev: float = 0.05) -> Atoms:
    """Diamond silicon, ``repeat``³ cubic cells (8 repeat³ atoms), periodic, rattled."""
    atoms = bulk("Si", "diamond", a=SI_LATTICE, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.positions = atoms.positions + rng.normal(0.0, stdev, atoms.positions.shape)
    return atoms


def silicon_repeat_for(atoms: int) -> int:
    """The supercell repeat whose atom count is closest to ``atoms`` on a log scale."""
    return max(1, int(round((atoms / 8.0) ** (1.0 / 3.0))))


def water_cluster(n_molecules: int, seed: int = 0) -> Atoms:
    """A roughly spherical cluster of ``n_molecules`` randomly oriented waters at 1 g/cm³."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_molecules ** (1.0 / 3.0))) + 2
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3) * WATER_SPACING
    centre = grid.mean(axis=0)
    chosen = grid[np.argsort(np.linalg.norm(grid - centre, axis=1), kind="stable")[:n_molecules]]
    angle = np.deg2rad(104.5)
    local = 0.9572 * np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [np.cos(angle), np.sin(angle), 0.0]])
    positions = []
    for site in chosen:
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        positions.append(site + local @ rotation.T)
    return Atoms("OH2" * n_molecules, positions=np.concatenate(positions))


def aspirin(seed: int = 0) -> Atoms | None:
    """Aspirin (21 atoms) embedded by RDKit and relaxed with MMFF, or None without RDKit."""
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        return None
    mol = Chem.AddHs(Chem.MolFromSmiles(ASPIRIN_SMILES))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        return None
    AllChem.MMFFOptimizeMolecule(mol)
    positions = mol.GetConformer().GetPositions()
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions)


def xtb_ethanol(path: str | Path, frames: int, seed: int = 0, temperature: float = 500.0) -> Path:
    """A GFN2-xTB MD17-style ethanol trajectory at ``path`` (made once, then reused)."""
    path = Path(path)
    if path.exists():
        from ase.io import read

        if len(read(str(path), index=":")) == frames:
            return path
    from localframe.reference import sample

    path.parent.mkdir(parents=True, exist_ok=True)
    sample("CCO", path, temperature=temperature, frames=frames, seed=seed, progress=False)
    return path
