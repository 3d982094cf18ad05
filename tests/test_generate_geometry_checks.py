"""PoseBusters geometry checks (posebusters, "mol" config) on hand-built molecules with known answers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("posebusters", reason="PoseBusters checks need the posebusters package (localframe[chem])")

from conftest import kekule_benzene  # noqa: E402
from localframe.errors import InputError  # noqa: E402
from localframe.generate import geometry_checks, metrics  # noqa: E402
from localframe.generate.molecule import Molecule  # noqa: E402


def benzene():
    return kekule_benzene(1.39)


def squeezed(mol, i=0, j=1, length=1.0):
    """``mol`` with the bond i–j set to ``length`` Å (both ends moved along the bond, in the ring's plane)."""
    pos = mol.positions.copy()
    mid, axis = (pos[i] + pos[j]) / 2, (pos[j] - pos[i]) / np.linalg.norm(pos[j] - pos[i])
    pos[i], pos[j] = mid - 0.5 * length * axis, mid + 0.5 * length * axis
    return Molecule(mol.numbers, pos, mol.charges, mol.bonds)


def test_good_benzene_passes_every_check_and_a_squeezed_bond_fails_bond_lengths():
    good, bad = geometry_checks.check([benzene(), squeezed(benzene())], progress=False)
    assert all(good[name] is True for name in geometry_checks.CHECKS)
    assert bad["bond_lengths"] is False
    assert bad["aromatic_ring_flatness"] is True  # still planar
    summary = geometry_checks.summarize([good, bad])
    assert summary["n_molecules"] == 2 and summary["bond_lengths"] == 0.5 and summary["all"] == 0.5
    assert summary["aromatic_ring_flatness"] == 1.0


def test_a_ring_atom_out_of_plane_fails_aromatic_flatness():
    mol = benzene()
    pos = mol.positions.copy()
    pos[0, 2] += 0.6  # one ring carbon 0.6 Å above the plane
    (row,) = geometry_checks.check([Molecule(mol.numbers, pos, None, mol.bonds)], progress=False)
    assert row["aromatic_ring_flatness"] is False


def test_evaluate_runs_the_checks_on_valid_molecules_only():
    pentavalent = Molecule([6, 1, 1, 1, 1, 1], [[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0],
                                                [0, 0, 1.09]], None, [(0, k, 1) for k in range(1, 6)])
    result = metrics.evaluate_molecules([pentavalent, benzene(), squeezed(benzene())], posebusters=10)
    row = result["posebusters"]
    assert row["n_molecules"] == 2 and row["bond_lengths"] == 0.5 and row["all"] == 0.5
    assert "bond_lengths" in metrics.render({"samples": result})
    with pytest.raises(InputError, match="RDKit sanitises"):
        geometry_checks.check([pentavalent], progress=False)


def test_molecules_without_a_bond_list_are_checked_with_the_bonds_they_were_scored_with():
    """A bondless molecule (bonds from the distance table, as validity reads it) is checked, not refused;
    a refusal names the molecule's index in the file, not in the checked subset."""
    water = Molecule([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], None, None)
    result = metrics.evaluate_molecules([water], posebusters=1)
    assert result["valid"] == 1.0 and result["posebusters"]["n_molecules"] == 1
    assert result["posebusters"]["bond_lengths"] == 1.0
    pentavalent = Molecule([6, 1, 1, 1, 1, 1], [[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0],
                                                [0, 0, 1.09]], None, [(0, k, 1) for k in range(1, 6)])
    with pytest.raises(InputError, match="structure 7"):
        geometry_checks.check([benzene(), pentavalent], progress=False, indices=[3, 7])
