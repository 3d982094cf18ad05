"""Neighbor lists and the batch structure: pairs agree with ASE, collate/split, pair vectors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

from localframe.data.batch import AtomsBatch


def random_triclinic(seed: int, n_atoms: int = 6) -> Atoms:
    """Random skewed cell (lengths 3–5 Å) with atoms at least 0.8 Å apart, images included."""
    rng = np.random.default_rng(seed)
    while True:
        cell = np.diag(rng.uniform(3.0, 5.0, 3)) + np.tril(rng.uniform(-1.5, 1.5, (3, 3)), -1)
        cell = cell @ np.linalg.qr(rng.normal(size=(3, 3)))[0]  # arbitrary orientation
        atoms = Atoms(numbers=rng.integers(1, 10, n_atoms), scaled_positions=rng.uniform(size=(n_atoms, 3)), cell=cell, pbc=True)
        if len(neighbor_list("i", atoms, 0.8)) == 0:
            return atoms


def half_width(atoms: Atoms) -> float:
    """Half the smallest distance between opposite cell faces."""
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    return 0.5 * min(volume / np.linalg.norm(np.cross(cell[a], cell[b])) for a, b in ((1, 2), (2, 0), (0, 1)))


def pair_keys(batch: AtomsBatch) -> list[tuple[int, int, int, int, int]]:
    i, j = batch.edge_index.tolist()
    shifts = batch.cell_shifts.round().long().tolist()
    return [(a, b, *s) for a, b, s in zip(i, j, shifts)]


def pair_set(batch: AtomsBatch) -> set[tuple[int, int, int, int, int]]:
    return set(pair_keys(batch))


def ase_pair_set(atoms: Atoms, cutoff: float) -> set[tuple[int, int, int, int, int]]:
    i, j, s = neighbor_list("ijS", atoms, cutoff, self_interaction=False)
    return {(a, b, *t) for a, b, t in zip(i.tolist(), j.tolist(), s.tolist())}


def brute_force_pairs(atoms: Atoms, cutoff: float, reach: int = 4) -> set[tuple[int, int, int, int, int]]:
    """All (i, j, S) with |x_j − x_i + S·cell| < cutoff, S ranging over periodic directions only."""
    ranges = [range(-reach, reach + 1) if p else range(1) for p in atoms.pbc]
    pos, cell = atoms.positions, atoms.cell.array
    out = set()
    for shift in itertools.product(*ranges):
        d = np.linalg.norm(pos[None, :, :] - pos[:, None, :] + np.array(shift) @ cell, axis=-1)
        for a, b in zip(*np.nonzero(d < cutoff)):
            if a != b or any(shift):
                out.add((int(a), int(b), *shift))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", ["small", "large"])
def test_periodic_pairs_match_ase(seed, size):
    atoms = random_triclinic(seed)
    cutoff = 0.9 * half_width(atoms) if size == "small" else 3.0 * atoms.cell.lengths().max()
    batch = AtomsBatch.from_atoms(atoms, cutoff, dtype=torch.float64)
    expected = ase_pair_set(atoms, cutoff)
    assert pair_set(batch) == expected
    assert len(expected) == batch.edge_index.shape[1]  # no duplicates
    if size == "large":
        assert any(a == b for a, b, *_ in expected)  # atoms see their own images
    ours = dict(zip(pair_keys(batch), batch.edge_vectors().numpy()))
    for a, b, shift, vector in zip(*neighbor_list("ijSD", atoms, cutoff)):
        np.testing.assert_allclose(ours[(a, b, *shift)], vector, atol=1e-10)


@pytest.mark.parametrize("cutoff", [2.5, 9.0])
def test_slab_pairs(cutoff):
    """pbc = (T, T, F): with a real third vector (compared with ASE) and with a zero one."""
    atoms = random_triclinic(7)
    atoms.pbc = [True, True, False]
    batch = AtomsBatch.from_atoms(atoms, cutoff, dtype=torch.float64)
    assert pair_set(batch) == ase_pair_set(atoms, cutoff)
    assert all(s[2] == 0 for s in batch.cell_shifts.tolist())
    flat = atoms.copy()
    cell = flat.cell.array.copy()
    cell[2] = 0.0
    flat.set_cell(cell, scale_atoms=False)
    flat_batch = AtomsBatch.from_atoms(flat, cutoff, dtype=torch.float64)
    assert pair_set(flat_batch) == brute_force_pairs(flat, cutoff)


def test_molecule_pairs_and_images_of_nothing():
    atoms = molecule("CH3CH2OH")
    batch = AtomsBatch.from_atoms(atoms, 2.0, dtype=torch.float64)
    assert pair_set(batch) == brute_force_pairs(atoms, 2.0)
    assert not batch.cell_shifts.any() and not batch.cell.any()


def test_edge_vectors_are_differentiable_pair_vectors():
    atoms = random_triclinic(3)
    batch = AtomsBatch.from_atoms(atoms, 6.0, dtype=torch.float64)
    i, j = batch.edge_index.numpy()
    expected = atoms.positions[j] - atoms.positions[i] + batch.cell_shifts.numpy() @ atoms.cell.array
    np.testing.assert_allclose(batch.edge_vectors().numpy(), expected, atol=1e-12)
    positions = batch.positions.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)
    batch.edge_vectors(positions, cell).pow(2).sum().backward()
    assert positions.grad is not None and cell.grad is not None and cell.grad.abs().sum() > 0


def labelled(atoms: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    stress = rng.normal(size=6) if atoms.pbc.all() else None
    atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)), stress=stress)
    atoms.info["gap"] = float(rng.normal())
    return atoms


def assert_same(a: AtomsBatch, b: AtomsBatch) -> None:
    for key in ("numbers", "positions", "cell", "pbc", "batch", "n_atoms", "edge_index", "cell_shifts"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.cutoff == b.cutoff
    assert a.labels.keys() == b.labels.keys() and a.atom_labels.keys() == b.atom_labels.keys()
    for key in a.labels:
        assert torch.equal(a.labels[key], b.labels[key]), key
    for key in a.atom_labels:
        assert torch.equal(a.atom_labels[key], b.atom_labels[key]), key


def test_collate_split_round_trip():
    structures = [labelled(random_triclinic(s, 3 + s), s) for s in range(3)] + [labelled(molecule("H2O"), 9)]
    keys = ("energy", "forces", "gap")
    whole = AtomsBatch.from_atoms(structures, 4.0, labels=keys, dtype=torch.float64)
    singles = [AtomsBatch.from_atoms(a, 4.0, labels=keys, dtype=torch.float64) for a in structures]
    assert_same(AtomsBatch.collate(singles), whole)
    parts = whole.split()
    assert len(parts) == len(structures) == whole.n_structures
    for part, single in zip(parts, singles):
        assert_same(part, single)
    assert_same(AtomsBatch.collate(parts), whole)
    assert whole.labels["energy"].shape == (4,) and whole.atom_labels["forces"].shape == (len(whole.numbers), 3)
    for part, atoms in zip(whole.split(), structures):
        assert part.labels["energy"].item() == pytest.approx(atoms.get_potential_energy())
        np.testing.assert_allclose(part.atom_labels["forces"].numpy(), atoms.get_forces())
    back = whole.to_atoms()
    for a, b in zip(back, structures):
        np.testing.assert_allclose(a.positions, b.positions)
        assert (a.pbc == b.pbc).all()
