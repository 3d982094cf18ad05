"""The one converter from ase.Atoms to AtomsBatch: validation without pairs, a pair list that plugs in,
and the calculator building exactly the batch that training builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.data.convert import AtomsConverter, check_structure
from localframe.errors import InputError
from localframe.inference import Evaluator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_structure_needs_no_pairs_and_finds_close_atoms_only_when_asked():
    close = Atoms("H2", positions=[[0, 0, 0], [0.05, 0, 0]])
    checked = check_structure(close, close=False)  # elements, coordinates, cell, labels: fine
    assert checked["numbers"].tolist() == [1, 1] and checked["cell"].tolist() == np.zeros((3, 3)).tolist()
    with pytest.raises(InputError, match=r"^f.xyz: structure 4: atoms 0 and 1 are 0.05 Å apart \(closer than 0.1 Å\)$"):
        check_structure(close, source="f.xyz", index=4)
    with pytest.raises(InputError, match="has F, but the model was trained on H, O only"):
        check_structure(Atoms("HF", positions=[[0, 0, 0], [1, 0, 0]]), elements=(1, 8))


def test_a_given_pair_list_is_used_as_is_with_its_distances():
    atoms = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])

    def only_first_pair(positions, cell, pbc):
        return np.array([[0, 1], [1, 0]]), np.zeros((2, 3)), np.array([1.0, 1.0])

    convert = AtomsConverter(5.0, torch.float64, pairs=only_first_pair)
    batch = convert(atoms)
    assert batch.edge_index.tolist() == [[0, 1], [1, 0]]
    assert convert.closest == [(0, 1, 1.0)] and convert.distances.tolist() == [1.0, 1.0]
    fresh = AtomsConverter(5.0, torch.float64)
    assert len(fresh(atoms).edge_index[0]) == 6 and fresh.closest[0][2] == pytest.approx(1.0)


def test_optional_labels_are_carried_when_present_on_every_structure():
    a = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]], info={"charge": 1.0})
    b = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]])
    convert = AtomsConverter(3.0, torch.float64)
    assert convert(a, optional=("charge",)).labels["charge"].tolist() == [1.0]
    assert "charge" not in convert(b, optional=("charge",)).labels
    with pytest.raises(InputError, match="labels differ between structures 0 and 1"):
        convert([a, b], optional=("charge",))
    with pytest.raises(InputError, match="label 'charge' contains NaN or inf"):
        convert(Atoms("H", info={"charge": float("nan")}), optional=("charge",))


def test_calculator_builds_the_batch_training_builds_and_checks_the_cell():
    torch.manual_seed(0)
    model = models.create("schnet", cutoff=3.0, hidden_channels=8, num_layers=1).double()
    evaluator = Evaluator(model, dtype="float64", skin=0.5)
    crystal = bulk("Si", "diamond", a=5.43)
    crystal.rattle(0.05, seed=1)
    batch, distances = evaluator.batch(crystal)
    reference = AtomsBatch.from_atoms(crystal, 3.0, dtype=torch.float64)

    def pairs(b):
        return sorted(zip(*b.edge_index.tolist(), *b.cell_shifts.round().long().T.tolist()))

    assert pairs(batch) == pairs(reference)
    assert torch.allclose(distances.sort().values, reference.edge_vectors().norm(dim=1).sort().values)
    flat = crystal.copy()
    flat.cell[2] = flat.cell[0]
    with pytest.raises(InputError, match="degenerate cell"):
        evaluator(flat)
