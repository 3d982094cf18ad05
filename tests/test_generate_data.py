"""QM9 molecules with bonds: SMILES matched to 3D atoms, drops counted, hydrogens removable."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")
from ase.build import molecule  # noqa: E402

from localframe.generate import data  # noqa: E402


def ethanol(order):
    atoms = molecule("CH3CH2OH")
    return atoms.numbers[order], atoms.positions[order]


def test_smiles_bonds_land_on_the_shuffled_3d_atoms():
    order = np.random.default_rng(0).permutation(9)
    z, x = ethanol(order)
    bonds, charges, smiles = data.match_smiles("OCC", z, x)
    assert smiles == "CCO" and not charges.any()
    assert len(bonds) == 8 and (bonds[:, 2] == 1).all()
    for i, j, _ in bonds:  # every bond joins atoms at bonding distance, with the right elements
        assert np.linalg.norm(x[i] - x[j]) < 1.6
    heavy = {tuple(sorted((z[i], z[j]))) for i, j, _ in bonds if z[i] > 1 and z[j] > 1}
    assert heavy == {(6, 6), (6, 8)}


def test_charges_and_double_bonds_are_carried():
    # formate anion: planar HCOO-, one C=O and one C-O(-) after kekulisation
    z = np.array([6, 8, 8, 1])
    x = np.array([[0, 0, 0], [1.25, 0, 0], [-0.625, 1.08, 0], [-0.55, -0.95, 0]])
    bonds, charges, smiles = data.match_smiles("[O-]C=O", z, x)
    assert sorted(charges.tolist()) == [-1, 0, 0, 0] and z[charges == -1][0] == 8
    assert sorted(bonds[:, 2].tolist()) == [1, 1, 2]


def test_failures_are_reasons_not_silence():
    z, x = ethanol(np.arange(9))
    assert data.match_smiles("C(C)(C)(C)(C)C", z, x) == "sanitisation"  # pentavalent carbon
    assert data.match_smiles("CCC", z, x) == "matching"  # wrong atoms
    far = x.copy()
    far[np.flatnonzero(z == 8)[0]] += 3.0  # O pulled away: the geometry's graph differs from the SMILES
    assert data.match_smiles("CCO", z, far) == "matching"


def test_without_hydrogens_renumbers_heavy_atoms_and_keeps_their_bonds():
    z, x = ethanol(np.arange(9))
    bonds, charges, smiles = data.match_smiles("CCO", z, x)
    s = data.MoleculeSet(np.array([0]), np.array([9]), z, charges, x, np.array([len(bonds)]), bonds,
                         np.array([smiles]), {"sanitisation": 0, "matching": 0})
    heavy = s.without_hydrogens()
    m = heavy.molecule(0)
    assert sorted(m.numbers.tolist()) == [6, 6, 8] and len(m.bonds) == 2
    np.testing.assert_allclose(m.positions, x[z > 1])
    assert heavy.atom_count_histogram()[3] == 1


@pytest.mark.slow
def test_qm9_split_counts_what_it_drops():
    train = data.load_split("train", n=200)
    assert len(train) == 200 and sum(train.dropped.values()) > 0
    full = data.load_split("train")
    assert len(full) + sum(full.dropped.values()) == 110_000
    assert set(np.unique(full.charges)) <= {-1, 0, 1}


@pytest.mark.slow
def test_cached_drop_reasons_equal_matching_again():
    """The drop counts read from the cached drop table equal those of matching every SMILES again."""
    from localframe.data import qm9

    index, reason = data.dropped_table()
    assert np.all(np.diff(index) > 0) and len(index) + len(data.load_all()) == len(qm9.load())
    part = data.load_split("val", half="first")
    wanted = qm9.split()["val"][: len(qm9.split()["val"]) // 2]
    kept = set(part.qm9_index.tolist())
    missing = np.array([q for q in wanted if q not in kept])
    assert part.dropped == data._build_reasons(qm9.load(), missing)
    assert sum(part.dropped.values()) == len(missing) > 0
    sample = index[:: max(1, len(index) // 40)]
    assert data._drop_reasons(sample) == data._build_reasons(qm9.load(), sample)
