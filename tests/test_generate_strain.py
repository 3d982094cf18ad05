"""GFN2-xTB strain of a molecule (tblite): hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("tblite")

from localframe.errors import InputError  # noqa: E402
from localframe.generate import metrics, strain  # noqa: E402
from localframe.generate.molecule import Molecule  # noqa: E402

# formaldehyde H2C=O, a rough hand-built geometry (C–O along z)
NUMBERS = [6, 8, 1, 1]
ROUGH = [[0, 0, 0], [0, 0, 1.22], [0.94, 0, -0.55], [-0.94, 0, -0.55]]
BONDS = [(0, 1, 2), (0, 2, 1), (0, 3, 1)]


def xtb_energy(positions) -> float:
    from ase import Atoms

    from localframe.reference.xtb import label

    return label([Atoms(NUMBERS, positions)], progress=False)[0].info["energy"]


@pytest.fixture(scope="module")
def minimum():
    """Formaldehyde relaxed with GFN2-xTB to forces below 1e-4 eV/Å."""
    from ase import Atoms

    from localframe.md.relax import relax
    from localframe.reference.xtb import tblite_calculator_class, tblite_threads

    with tblite_threads(1):
        result = relax(tblite_calculator_class()(method="GFN2-xTB", verbosity=0), Atoms(NUMBERS, ROUGH), fmax=1e-4,
                       optimizer="bfgs", steps=500, progress=False)
    assert result["converged"]
    return result["atoms"].positions


def test_aligned_rmsd_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation
    assert strain.aligned_rmsd(a, a @ q.T + [3.0, -1.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    # two atoms 1.0 Å apart against 1.2 Å: each end moves 0.1 Å after alignment
    assert strain.aligned_rmsd([[0, 0, 0], [0, 0, 1.0]], [[5, 5, 5], [5, 6.2, 5]]) == pytest.approx(0.1, abs=1e-12)


def test_molecule_at_its_xtb_minimum_has_no_strain(minimum):
    r = strain.strain(Molecule(NUMBERS, minimum, None, BONDS))
    assert r["converged"] and r["steps"] <= 2
    assert abs(r["delta_e"]) < 1e-5  # eV
    assert r["rmsd_heavy"] < 1e-3 and r["rmsd_all"] < 1e-3


def test_stretched_bond_has_positive_strain_and_rmsd(minimum):
    stretched = minimum.copy()
    axis = (stretched[1] - stretched[0]) / np.linalg.norm(stretched[1] - stretched[0])
    stretched[1] += 0.10 * axis  # C=O 0.10 Å too long
    r = strain.strain(Molecule(NUMBERS, stretched, None, BONDS))
    assert r["converged"]
    # the relaxation comes back to the same minimum: ΔE is the single-point energy difference
    assert r["delta_e"] > 0.05
    assert r["delta_e"] == pytest.approx(xtb_energy(stretched) - xtb_energy(minimum), abs=2e-4)
    assert r["rmsd_heavy"] == pytest.approx(0.05, abs=2e-3)  # two heavy atoms, 0.10 Å apart: 0.05 Å each
    assert r["rmsd_all"] > 0.0
    summary = strain.summarize([r, {"error": "structure 1: strain: positions are not finite (NaN or inf)"}])
    assert summary["n_relaxed"] == 1 and summary["n_failed"] == 1
    assert summary["delta_e_kcal_mol"] == pytest.approx(r["delta_e"] * 23.0605, rel=1e-4)


def test_bad_input_is_a_one_line_error():
    nan = np.array(ROUGH, float)
    nan[2, 0] = np.nan
    with pytest.raises(InputError, match=r"^m\.sdf: structure 3: strain: positions are not finite") as err:
        strain.strain(Molecule(NUMBERS, nan, None, BONDS), source="m.sdf", index=3)
    assert "\n" not in str(err.value)
    overlap = np.array(ROUGH, float)
    overlap[3] = overlap[2] + [0.01, 0.0, 0.0]
    with pytest.raises(InputError, match="two atoms are 0.010 Å apart"):
        strain.strain(Molecule(NUMBERS, overlap, None, BONDS))
    # in a file-level run a failing molecule is counted, not dropped and not fatal
    rows = strain.strain_many([Molecule(NUMBERS, nan, None, BONDS)], progress=False)
    assert "positions are not finite" in rows[0]["error"]


def test_evaluate_reports_strain_of_valid_molecules_only(minimum):
    good = Molecule(NUMBERS, minimum, None, BONDS)
    pentavalent = Molecule([6, 1, 1, 1, 1, 1], [[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0],
                                                [0, 0, 1.09]], None, [(0, k, 1) for k in range(1, 6)])
    result = metrics.evaluate_molecules([pentavalent, good], strain=5)
    row = result["strain"]
    assert row["n_molecules"] == 1 and row["n_relaxed"] == 1 and row["molecules"][0]["index"] == 1
    assert abs(row["delta_e_ev"]) < 1e-5
    assert "ΔE" in metrics.render({"samples": result})


def test_a_failing_relaxation_names_the_file(minimum, monkeypatch):
    def refuse(mol, source=None, index=None, **kwargs):
        raise InputError("strain: refused", source, index)

    monkeypatch.setattr(strain, "strain", refuse)
    result = metrics.evaluate_molecules([Molecule(NUMBERS, minimum, None, BONDS)], strain=1, source="gen.sdf")
    assert result["strain"]["molecules"][0]["error"].startswith("gen.sdf: structure 0: strain: refused")
