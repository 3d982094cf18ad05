"""Metrics of generated molecules against hand-built molecules with known answers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from conftest import kekule_benzene  # noqa: E402
from localframe.errors import InputError  # noqa: E402
from localframe.generate import metrics, tables  # noqa: E402
from localframe.generate.molecule import Molecule, read_sdf, write_sdf  # noqa: E402


benzene = kekule_benzene


def star(center, n, d, charge=0, planar=False):
    """An atom ``center`` with ``n`` hydrogens at distance ``d`` (tetrahedral, planar or trigonal bipyramid)."""
    dirs = {
        3: [[1, 0, 0], [-0.5, 0.866, 0], [-0.5, -0.866, 0]],
        4: [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
        5: [[1, 0, 0], [-0.5, 0.866, 0], [-0.5, -0.866, 0], [0, 0, 1], [0, 0, -1]],
        2: [[0.8, 0.6, 0], [-0.8, 0.6, 0]],
    }[n]
    dirs = np.array(dirs, float)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pos = np.concatenate([[[0, 0, 0]], d * dirs])
    charges = [charge] + [0] * n
    return Molecule([center] + [1] * n, pos, charges, [(0, k + 1, 1) for k in range(n)])


def shifted(mol, shift):
    return Molecule(mol.numbers, mol.positions + np.asarray(shift), mol.charges, mol.bonds)


def combine(a, b):
    n = len(a)
    bonds = np.concatenate([a.bonds, b.bonds + np.array([n, n, 0])])
    return Molecule(np.concatenate([a.numbers, b.numbers]), np.concatenate([a.positions, b.positions]),
                    np.concatenate([a.charges, b.charges]), bonds)


def test_edm_bond_orders_follow_the_table_and_margins():
    assert tables.bond_order(6, 6, 1.63) == 1 and tables.bond_order(6, 6, 1.64) == 0  # 154 + 10 pm
    assert tables.bond_order(6, 6, 1.385) == 2 and tables.bond_order(6, 6, 1.39) == 1  # 134 + 5 pm
    assert tables.bond_order(6, 6, 1.22) == 3 and tables.bond_order(6, 6, 1.23) == 2  # 120 + 3 pm
    assert tables.bond_order(1, 8, 0.96) == 1 and tables.bond_order(1, 1, 0.83) == 1 and tables.bond_order(1, 1, 0.84) == 0
    assert tables.bond_order(9, 9, 1.60) == 0


def test_valid_benzene():
    s = metrics.score_molecule(benzene())
    assert s.valid and s.connected and s.smiles == "c1ccccc1"
    assert s.stable_corrected.all() and s.stable_midi.all()
    # EDM's table reads a 1.40 Å aromatic C–C as single: every ring carbon has valence 3
    assert not s.stable_edm[:6].any() and s.stable_edm[6:].all()


def test_neutral_three_valent_carbon_is_stable_only_under_the_flawed_table():
    s = metrics.score_molecule(star(6, 3, 1.08))  # methyl radical
    assert not s.stable_corrected[0] and s.stable_midi[0] and not s.stable_edm[0]
    assert s.stable_corrected[1:].all()
    summary = metrics.summarize([s])
    assert summary["mol_stable_corrected"] == 0.0 and summary["mol_stable_midi"] == 1.0
    assert summary["atom_stable_corrected"] == pytest.approx(3 / 4)


def test_pentavalent_carbon_is_unstable_and_invalid():
    s = metrics.score_molecule(star(6, 5, 1.09))
    assert not s.valid and s.smiles is None
    assert not s.stable_corrected[0] and not s.stable_midi[0] and not s.stable_edm[0]


def test_charged_ammonium_needs_its_charge():
    s = metrics.score_molecule(star(7, 4, 1.02, charge=1))
    assert s.valid and s.smiles == "[NH4+]"
    assert s.stable_corrected.all() and s.stable_midi.all()
    assert not s.stable_edm[0]  # EDM ignores charges: N must have valence 3
    neutral = metrics.score_molecule(star(7, 4, 1.02, charge=0))
    assert not neutral.valid and not neutral.stable_corrected[0]


def test_disconnected_pair_duplicates_and_novelty():
    methane, water = star(6, 4, 1.09), star(8, 2, 0.96)
    pair = combine(methane, shifted(water, [5.0, 0, 0]))
    s = metrics.score_molecule(pair)
    assert s.valid and not s.connected and s.smiles == "C"  # the largest fragment
    scores = [metrics.score_molecule(m) for m in (methane, methane, water, star(6, 5, 1.09))]
    out = metrics.summarize(scores, training_smiles={"C"})
    assert out["valid"] == pytest.approx(3 / 4)
    assert out["unique"] == pytest.approx(2 / 3)  # C, C, O among the valid
    assert out["novel"] == pytest.approx(1 / 2)  # O is new, C is not
    assert out["connected"] == 1.0
    assert metrics.summarize(scores)["novel"] is None


def test_heavy_atom_only_files_use_implicit_hydrogens():
    ethane = Molecule([6, 6], [[0, 0, 0], [1.53, 0, 0]], None, [(0, 1, 1)])
    out = metrics.evaluate_molecules([ethane])
    assert not out["hydrogens"] and out["valid"] == 1.0 and out["mol_stable_edm"] is None


def test_sdf_round_trip_keeps_atoms_charges_and_bonds(tmp_path):
    mols = [benzene(), star(7, 4, 1.02, charge=1), Molecule([8, 1, 1], star(8, 2, 0.96).positions)]
    path = write_sdf(tmp_path / "m.sdf", mols)
    back = read_sdf(path)
    assert len(back) == 3
    for a, b in zip(mols[:2], back[:2]):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.charges, b.charges)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
        assert sorted(map(tuple, a.bonds.tolist())) == sorted(map(tuple, b.bonds.tolist()))
    assert len(back[2].bonds) == 2  # a molecule without bonds gets EDM's distance bonds


def test_bad_sdf_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.sdf"
    bad.write_text("nothing here\n")
    with pytest.raises(InputError, match="bad.sdf"):
        read_sdf(bad)
    with pytest.raises(FileNotFoundError):
        read_sdf(tmp_path / "missing.sdf")
    with pytest.raises(InputError, match="outside the bond table"):
        tables.distance_bonds(np.array([6, 16]), np.zeros((2, 3)))
