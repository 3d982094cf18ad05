"""Data sources: QM9 units and known values, the split convention, readers and unit conversion."""

import numpy as np
import pytest
from ase import Atoms
from ase.units import Hartree, kcal, mol

from localframe.data import qm9, readers, sources, units
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError


@pytest.fixture(scope="module")
def qm9_data():
    return qm9.load()


def test_qm9_has_all_molecules_and_targets(qm9_data):
    assert len(qm9_data) == 130_831
    assert set(qm9_data.targets) == set(qm9.TARGETS)
    assert qm9_data.n_atoms.sum() == len(qm9_data.numbers) == len(qm9_data.positions)
    assert set(np.unique(qm9_data.numbers)) == {1, 6, 7, 8, 9}
    assert np.isfinite(qm9_data.positions).all()


def test_qm9_methane_and_ammonia_values_per_target_family(qm9_data):
    methane, ammonia = qm9_data.atoms(0), qm9_data.atoms(1)
    assert methane.get_chemical_formula() == "CH4" and methane.info["qm9_id"] == 1
    assert ammonia.get_chemical_formula() == "H3N"
    # energies in eV: total (from Hartree) and atomization (minus the atom references)
    assert methane.info["U0"] == pytest.approx(-40.47893 * Hartree, abs=1e-6)
    assert methane.info["U0_atom"] == pytest.approx(-17.17, abs=0.01)
    assert methane.info["U0_atom"] == pytest.approx((-40.47893 + 37.846772 + 4 * 0.500273) * Hartree, abs=1e-6)
    assert methane.info["G_atom"] == pytest.approx((-40.498597 + 37.861317 + 4 * 0.510927) * Hartree, abs=1e-6)
    # orbital energies in eV
    assert ammonia.info["homo"] == pytest.approx(-0.257 * Hartree, abs=1e-6)
    assert ammonia.info["gap"] == pytest.approx(0.3399 * Hartree, abs=1e-6)
    assert methane.info["zpve"] == pytest.approx(0.044749 * Hartree, abs=1e-6)
    # the remaining targets in their documented units
    assert ammonia.info["mu"] == pytest.approx(1.6256)  # Debye
    assert ammonia.info["alpha"] == pytest.approx(9.46)  # bohr^3
    assert methane.info["r2"] == pytest.approx(35.3641)  # bohr^2
    assert ammonia.info["Cv"] == pytest.approx(6.316)  # cal/(mol K)
    # geometry in Angstrom: C-H bonds of methane are about 1.09 A
    d = methane.get_distances(0, [1, 2, 3, 4])
    assert np.allclose(d, 1.09, atol=0.01)


def test_qm9_targets_are_not_shifted_between_columns(qm9_data):
    t = qm9_data.targets
    # the CSV gives orbital energies to 1e-4 Hartree, so the gap agrees to that rounding
    assert np.abs(t["gap"] - (t["lumo"] - t["homo"])).max() <= 1.01e-4 * Hartree
    assert (t["U"] > t["U0"]).all() and (t["H"] > t["U"]).all() and (t["G"] < t["H"]).all()
    assert 5 < t["Cv"].min() and t["Cv"].max() < 50  # cal/(mol K), not an energy


def test_qm9_split_convention():
    parts = qm9.split()
    assert [len(parts[k]) for k in ("train", "val", "test")] == [110_000, 10_000, 10_831]
    assert len(np.unique(np.concatenate(list(parts.values())))) == 130_831
    again = qm9.split(n_train=1000, n_val=100)
    assert np.array_equal(again["train"], parts["train"][:1000]) and len(again["val"]) == 100
    assert np.array_equal(again["test"], parts["test"])


def test_qm9_source_with_subset():
    data = sources.load("qm9", targets=["U0_atom", "gap"], n_train=500, n_val=50)
    assert data.labels == ("U0_atom", "gap")
    assert len(data.splits["train"]) == 500 and len(data.splits["val"]) == 50
    batch = AtomsBatch.from_atoms(data.atoms[:8], cutoff=5.0, labels=data.labels)
    assert batch.labels["U0_atom"].shape == (8,)


def test_qm9_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALFRAME_CACHE", str(tmp_path))
    first = qm9.load()
    assert (tmp_path / f"qm9_v{qm9.CACHE_VERSION}.npz").exists()
    second = qm9.load()
    assert np.array_equal(first.positions, second.positions)
    assert all(np.array_equal(first.targets[k], second.targets[k]) for k in qm9.TARGETS)


def test_unit_factors():
    assert units.factor("kcal/mol", "energy") == pytest.approx(kcal / mol)
    assert units.factor("Hartree/bohr", "forces") == pytest.approx(Hartree / 0.529177210903, rel=1e-6)
    assert units.factor("kcal/mol/Å", "forces") == pytest.approx(kcal / mol)
    assert units.factor("eV/Å^3", "stress") == 1.0
    assert units.factor("nm", "length") == 10.0
    # sGDML archives may state atomic units as 'au', and Å as 'Ang'
    assert units.factor("au", "energy") == pytest.approx(Hartree) and units.factor("au", "length") == pytest.approx(0.529177210903)
    assert units.factor("au/au", "forces") == pytest.approx(units.factor("Hartree/bohr", "forces"))
    assert units.same("Ang", "Å", "length") and units.same("Ha", "hartree", "energy")
    assert not units.same("kcal/mol", "kJ/mol", "energy")
    assert units.per_length("kcal/mol", "Ang") == "kcal/mol/Ang"


def test_extxyz_with_custom_keys_and_units(tmp_path):
    import ase.io

    frames = []
    rng = np.random.default_rng(0)
    for k in range(3):
        a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        a.info["REF_energy"] = -10.0 - k  # kcal/mol
        a.arrays["REF_forces"] = rng.normal(size=(3, 3))  # kcal/mol/A
        a.info["gap"] = 1.5
        frames.append(a)
    path = tmp_path / "water.extxyz"
    ase.io.write(path, frames)
    data = readers.read_ase(
        path, keys={"energy": "REF_energy", "forces": "REF_forces"}, units_in={"energy": "kcal/mol", "forces": "kcal/mol/Å"},
        extra={"gap": "gap"},
    )
    assert data.labels == ("energy", "forces", "gap")
    assert data.atoms[1].info["energy"] == pytest.approx(-11.0 * kcal / mol)
    assert np.allclose(data.atoms[2].arrays["forces"], frames[2].arrays["REF_forces"] * kcal / mol)
    batch = AtomsBatch.from_atoms(data.atoms, cutoff=3.0, labels=data.labels)
    assert batch.atom_labels["forces"].shape == (9, 3) and batch.labels["gap"].shape == (3,)


def test_extxyz_written_by_ase_with_calculator_results(tmp_path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    a = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    a.calc = SinglePointCalculator(a, energy=-1.5, forces=np.array([[0.1, 0, 0], [-0.1, 0, 0]]))
    path = tmp_path / "h2.extxyz"
    ase.io.write(path, [a])
    data = readers.read_ase(path)
    assert data.labels == ("energy", "forces")
    assert data.atoms[0].info["energy"] == pytest.approx(-1.5)


def test_length_unit_conversion(tmp_path):
    import ase.io

    a = Atoms("H2", positions=[[0, 0, 0], [1.4, 0, 0]])  # bohr
    path = tmp_path / "h2.xyz"
    ase.io.write(path, [a])
    data = readers.read_ase(path, units_in={"length": "bohr"})
    assert data.atoms[0].get_distance(0, 1) == pytest.approx(1.4 * 0.529177, rel=1e-5)


def test_md17_npz_with_units_given_by_the_user(tmp_path):
    """An archive that states no units is read in the units the caller gives (see test_archives.py)."""
    rng = np.random.default_rng(1)
    base = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    R = base + 0.01 * rng.normal(size=(5, 3, 3))
    path = tmp_path / "water.npz"
    np.savez(path, R=R, z=np.array([8, 1, 1]), E=rng.normal(size=(5, 1)), F=rng.normal(size=(5, 3, 3)))
    data = sources.load(path, units={"energy": "kcal/mol"})
    assert len(data) == 5 and data.labels == ("energy", "forces")
    raw = np.load(path)
    assert data.atoms[3].info["energy"] == pytest.approx(raw["E"][3, 0] * kcal / mol)
    assert np.allclose(data.atoms[3].arrays["forces"], raw["F"][3] * kcal / mol)


def test_periodic_stress_label_voigt(tmp_path):
    import ase.build
    import ase.io

    a = ase.build.bulk("Cu", "fcc", a=3.6)
    a.info["stress"] = np.array([1.0, 2.0, 3.0, 0.4, 0.5, 0.6])
    a.info["energy"] = -3.0
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, [a])
    data = readers.read_ase(path)
    batch = AtomsBatch.from_atoms(data.atoms, cutoff=3.0, labels=data.labels)
    s = batch.labels["stress"][0].numpy()
    assert np.allclose(s, s.T) and s[1, 2] == pytest.approx(0.4) and s[0, 1] == pytest.approx(0.6)


def test_float64_on_request():
    a = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    assert AtomsBatch.from_atoms(a, 2.0).positions.dtype.is_floating_point
    import torch

    assert AtomsBatch.from_atoms(a, 2.0).positions.dtype == torch.float32
    assert AtomsBatch.from_atoms(a, 2.0, dtype=torch.float64).positions.dtype == torch.float64


def test_options_a_source_does_not_take_are_errors_and_a_training_selection_is_not():
    with pytest.raises(InputError, match=r"--key \(keys=\) does not apply to QM9"):
        sources.load("qm9", keys={"energy": "E"})
    with pytest.raises(InputError, match=r"'n_train' does not apply to an ASE file"):
        sources.load("water.xyz", n_train=10)
    assert sources.aggregation("gap") == "mean" and sources.aggregation("U0_atom") == "sum"
    assert sources.aggregation("my_label") == "sum"
