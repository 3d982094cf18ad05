"""Fast inference: the Verlet-skin pair list equals a fresh list, batched and compiled evaluation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from localframe import models
from localframe.calculator import Calculator
from localframe.data.batch import AtomsBatch
from localframe.data.neighbors import neighbor_pairs
from localframe.errors import InputError
from localframe.inference import PER_ATOM, Evaluator, VerletNeighborList, evaluate_many, evaluate_together, split


pytestmark = pytest.mark.usefixtures("one_thread")


def pair_set(edges, shifts) -> set:
    edges, shifts = np.asarray(edges), np.rint(np.asarray(shifts)).astype(int)
    return {(int(i), int(j), *map(int, s)) for i, j, s in zip(edges[0], edges[1], shifts)}


def fresh(model, atoms) -> dict:
    batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64)
    out = model(batch, forces=True, stress=bool(atoms.pbc.all()))
    return {k: v.detach().numpy() for k, v in out.items()}


def random_walk(atoms: Atoms, steps: int, size: float, seed: int, strain: float = 0.0):
    """Structures along a random walk of the positions (and of the cell, with ``strain``)."""
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    for _ in range(steps):
        atoms.positions = atoms.positions + rng.normal(scale=size, size=atoms.positions.shape)
        if strain:
            deformation = np.eye(3) + rng.normal(scale=strain, size=(3, 3))
            atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
        yield atoms.copy()


@pytest.mark.parametrize("system", ["molecule", "crystal", "triclinic", "slab"])
def test_skin_list_equals_fresh_list(lf, system):
    """Same pairs and the same energy, forces and stress as a fresh list, while the list is reused."""
    if system == "molecule":
        atoms, strain = lf.ethanol(), 0.0
    elif system == "crystal":
        atoms, strain = lf.rattled(bulk("Si", "diamond", a=5.43).repeat(2), 0.05, seed=2), 0.004
    elif system == "triclinic":
        atoms, strain = lf.triclinic(), 0.004
    else:  # periodic in two directions: a cell change rebuilds
        atoms = lf.rattled(bulk("Si", "diamond", a=5.43), 0.05, seed=4)
        atoms.pbc = [True, True, False]
        strain = 0.0
    model = lf.build_model("painn", cutoff=4.0)
    calc = Calculator(model, dtype="float64", skin=0.6)
    nl = VerletNeighborList(4.0, skin=0.6)
    calls = 0
    for current in random_walk(atoms, 40, 0.03, seed=7, strain=strain):
        cell = current.cell.array if current.pbc.any() else np.zeros((3, 3))
        i, j, s, _ = neighbor_pairs(current.positions, cell, current.pbc, 4.0)
        edges, shifts, distances = nl.pairs(current.positions, cell, current.pbc)
        assert pair_set(edges, shifts) == pair_set(np.stack([i, j]), s)
        expected = fresh(model, current)
        current.calc = calc
        assert current.get_potential_energy() == pytest.approx(float(expected["energy"][0]), rel=0, abs=1e-12)
        np.testing.assert_allclose(current.get_forces(), expected["forces"], rtol=0, atol=1e-12)
        if current.pbc.all():
            s_ = expected["stress"][0]
            np.testing.assert_allclose(current.get_stress(), [s_[0, 0], s_[1, 1], s_[2, 2], s_[1, 2], s_[0, 2], s_[0, 1]],
                                       rtol=0, atol=1e-12)
        calls += 1
    assert 1 < nl.builds < calls, f"{nl.builds} builds in {calls} calls: the list was not reused or never rebuilt"
    assert calc.neighbor_builds == nl.builds


def test_rebuild_rule():
    positions = np.zeros((2, 3))
    positions[1, 0] = 2.0
    nl = VerletNeighborList(3.0, skin=1.0)
    nl.pairs(positions, np.zeros((3, 3)), np.zeros(3, bool))
    moved = positions.copy()
    moved[0, 1] = 0.49  # less than skin/2: reuse
    nl.pairs(moved, np.zeros((3, 3)), np.zeros(3, bool))
    assert nl.builds == 1
    moved[0, 1] = 0.51  # more than skin/2: rebuild
    nl.pairs(moved, np.zeros((3, 3)), np.zeros(3, bool))
    assert nl.builds == 2
    zero_skin = VerletNeighborList(3.0, skin=0.0)
    for _ in range(3):
        zero_skin.pairs(positions, np.zeros((3, 3)), np.zeros(3, bool))
    assert zero_skin.builds == 3
    with pytest.raises(InputError, match="skin"):
        VerletNeighborList(3.0, skin=-1.0)


def test_evaluate_many_matches_single_calls(lf):
    model = lf.build_model("schnet")
    structures = [lf.rattled(lf.ethanol(), 0.05, seed=k) for k in range(5)] + [lf.chiral()]
    calc = Calculator(model, dtype="float64")
    for batch_size in (1, 4, 32):
        result = calc.evaluate_many(structures, batch_size=batch_size)
        assert result["energy"].shape == (len(structures),)
        for k, atoms in enumerate(structures):
            single = fresh(model, atoms)
            assert result["energy"][k] == pytest.approx(float(single["energy"][0]), abs=1e-12)
            np.testing.assert_allclose(result["forces"][k], single["forces"], rtol=0, atol=1e-12)
    crystals = [lf.silicon(), lf.triclinic()]
    result = evaluate_many(model, crystals, batch_size=2, dtype="float64")
    for k, atoms in enumerate(crystals):
        np.testing.assert_allclose(result["stress"][k], fresh(model, atoms)["stress"][0], rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="batch_size"):
        calc.evaluate_many(structures, batch_size=0)



def test_split_per_structure():
    """A batch's results split per structure (hand-built: 3 structures of 1, 3 and 2 atoms)."""
    result = {"energy": np.array([1.0, 2.0, 3.0]), "forces": np.arange(18.0).reshape(6, 3),
              "stress": np.arange(27.0).reshape(3, 3, 3), "forces_std": np.arange(6.0), "energies": np.eye(3)[:, :2]}
    parts = split(result, np.array([1, 3, 2]))
    assert len(parts) == 3
    assert parts[1]["energy"] == 2.0 and parts[2]["energies"].tolist() == [0.0, 0.0]
    assert parts[1]["forces"].tolist() == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert parts[2]["forces_std"].tolist() == [4.0, 5.0]
    assert parts[0]["stress"].tolist() == np.arange(9.0).reshape(3, 3).tolist()


def test_evaluate_many_as_evaluate_together(lf):
    """evaluate_many's arrays (one row per structure) and per-atom lists are the per-structure results of
    evaluate_together, for a committee, over batches that end mid-way (float64)."""
    members = [lf.build_model("schnet", seed=seed) for seed in (0, 1)]
    crystals = [lf.rattled(lf.silicon(), 0.05, seed=k) for k in range(2)] + [lf.triclinic()]
    evaluator = Evaluator(members, dtype="float64")
    together = evaluate_together([evaluator.fork() for _ in crystals], crystals, stress=True)
    many = evaluate_many(evaluator, crystals, batch_size=2)
    assert sorted(many) == sorted(together[0])
    for key, value in many.items():
        if key in PER_ATOM:
            assert isinstance(value, list) and [len(v) for v in value] == [len(a) for a in crystals]
        else:
            assert value.shape == (len(crystals),) + together[0][key].shape
        for k, ref in enumerate(together):
            np.testing.assert_allclose(value[k], ref[key], rtol=0, atol=1e-10, err_msg=key)
    assert many["forces_std"][0].max() > 0

def test_calculator_rejects_overlapping_atoms():
    model = models.create("schnet", hidden_channels=8, num_layers=1)
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.05, 0, 0]])
    atoms.calc = Calculator(model, skin=0.5)
    with pytest.raises(InputError, match="apart"):
        atoms.get_potential_energy()


@pytest.mark.slow
def test_compiled_equals_eager(lf):
    """torch.compile (inductor, CPU) gives the eager numbers to float32 round-off (compiles for ~1 min)."""
    compiled_agrees_with_eager(lf, "painn")


def compiled_agrees_with_eager(lf, name: str) -> float:
    torch.manual_seed(0)
    model = models.create(name, hidden_channels=16, num_layers=2)
    eager, compiled = Calculator(model, skin=0.5), Calculator(model, skin=0.5, compile=True)
    start = time.perf_counter()
    for atoms in list(random_walk(lf.ethanol(), 4, 0.05, seed=3)) + [lf.rattled(lf.ethanol(), 0.1, seed=9)]:
        e_ref, f_ref = eager.get_potential_energy(atoms), eager.get_forces(atoms)
        e, f = compiled.get_potential_energy(atoms), compiled.get_forces(atoms)
        assert e == pytest.approx(e_ref, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-5 * max(1.0, np.abs(f_ref).max()))
    return time.perf_counter() - start
