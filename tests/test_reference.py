"""GFN2-xTB reference labels: label, label_file and sample."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from localframe.errors import InputError  # noqa: E402
from localframe.reference import label, label_file, sample  # noqa: E402
from localframe.reference import xtb  # noqa: E402


# ---------------------------------------------------------------------- helpers
def energies(structures: list[Atoms]) -> np.ndarray:
    return np.array([a.info["energy"] for a in label(structures, progress=False)])


def finite_difference_forces(atoms: Atoms, h: float = 1e-3) -> np.ndarray:
    """-dE/dx by central differences of GFN2-xTB energies, (N, 3) eV/Å."""
    displaced = []
    for i in range(len(atoms)):
        for k in range(3):
            for sign in (1.0, -1.0):
                a = atoms.copy()
                a.positions[i, k] += sign * h
                displaced.append(a)
    e = energies(displaced).reshape(len(atoms), 3, 2)
    return -(e[..., 0] - e[..., 1]) / (2 * h)


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    a = atoms.copy()
    a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return a


def read_frames(path) -> list[Atoms]:
    return ase.io.read(path, ":")


def rattled_ethanol(seed: int = 0) -> Atoms:
    a = molecule("CH3CH2OH")
    a.rattle(0.05, seed=seed)
    return a


# ---------------------------------------------------------------------- label
def test_label_molecules_finite_and_calculator_free():
    water, ethanol = molecule("H2O"), rattled_ethanol()
    water.info["tag"] = "keep me"
    out = label([water, ethanol], progress=False)
    assert len(out) == 2
    for src, a in zip([water, ethanol], out):
        assert a.calc is None
        assert np.isfinite(a.info["energy"])
        assert a.arrays["forces"].shape == (len(src), 3)
        assert np.isfinite(a.arrays["forces"]).all()
        assert "stress" not in a.info
        np.testing.assert_array_equal(a.positions, src.positions)
    assert out[0].info["tag"] == "keep me"
    assert "energy" not in water.info  # inputs untouched
    # a molecule's total force vanishes
    np.testing.assert_allclose(out[1].arrays["forces"].sum(axis=0), 0.0, atol=1e-6)


def test_label_forces_match_finite_differences():
    atoms = rattled_ethanol(seed=3)
    forces = label(atoms, progress=False)[0].arrays["forces"]
    np.testing.assert_allclose(finite_difference_forces(atoms, h=1e-3), forces, atol=1e-3)


def test_label_charge_from_info_and_argument():
    hydroxide = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    hydroxide.info["charge"] = -1
    from_info = label(hydroxide, progress=False)[0].info["energy"]
    from_argument = label(Atoms("OH", positions=hydroxide.positions), charge=-1, progress=False)[0].info["energy"]
    assert from_info == pytest.approx(from_argument, abs=1e-8)
    neutral_radical = label(Atoms("OH", positions=hydroxide.positions), progress=False)[0].info["energy"]
    assert abs(from_info - neutral_radical) > 0.1


def test_label_failure_names_structure():
    bad = molecule("H2O")
    bad.info["multiplicity"] = 2  # 10 electrons cannot have one unpaired electron
    with pytest.raises(InputError) as err:
        label([molecule("H2O"), bad], progress=False, source="waters.xyz")
    assert err.value.index == 1 and err.value.source == "waters.xyz"
    message = str(err.value)
    assert "waters.xyz" in message and "structure 1" in message and "\n" not in message


def test_label_rejects_unknown_method():
    with pytest.raises(InputError, match="unknown xTB method"):
        label(molecule("H2O"), method="GFN9-xTB", progress=False)


def test_openmp_threads_follow_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with xtb.tblite_threads():
        runtimes = xtb._openmp_runtimes()
        assert runtimes, "no OpenMP runtime found in the process"
        assert all(lib.omp_get_max_threads() == 1 for lib in runtimes)


# ---------------------------------------------------------------------- label_file
def test_label_file_round_trip_and_periodic_stress(tmp_path):
    silicon = bulk("Si", cubic=True)
    silicon.rattle(0.05, seed=1)
    water = rattled_ethanol(seed=2)
    src = tmp_path / "mixed.extxyz"
    ase.io.write(src, [water, silicon], format="extxyz")
    out = tmp_path / "labelled.extxyz"
    labelled = label_file(src, out, progress=False)

    back = read_frames(out)
    assert len(back) == 2
    for a, b in zip(labelled, back):
        assert b.get_potential_energy() == pytest.approx(a.info["energy"], abs=1e-6)
        np.testing.assert_allclose(b.get_forces(), a.arrays["forces"], atol=1e-7)
    assert "stress" not in labelled[0].info
    stress = labelled[1].info["stress"]
    assert stress.shape == (3, 3)
    np.testing.assert_allclose(stress, stress.T, atol=1e-10)
    np.testing.assert_allclose(back[1].get_stress(voigt=False), stress, atol=1e-7)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    # stress = (1/V) dE/d(strain), checked on a diagonal and an off-diagonal component
    crystal = back[1]
    crystal.calc = None
    volume = crystal.get_volume()
    h = 1e-4
    for a, b in [(0, 0), (0, 1)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h
        e_plus, e_minus = energies([strained(crystal, eps), strained(crystal, -eps)])
        derivative = (e_plus - e_minus) / (2 * h) / volume  # d/dh counts an off-diagonal twice
        expected = stress[a, b] * (1 if a == b else 2)
        assert derivative == pytest.approx(expected, rel=0.02, abs=2e-4)


def test_label_file_bad_inputs(tmp_path):
    out = tmp_path / "out.extxyz"
    missing = tmp_path / "missing.xyz"
    with pytest.raises(InputError) as err:
        label_file(missing, out, progress=False)
    assert "missing.xyz" in str(err.value) and "not found" in str(err.value)

    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(InputError) as err:
        label_file(empty, out, progress=False)
    assert "empty.xyz" in str(err.value) and "empty" in err.value.problem

    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is\nnot a structure\nfile at all\n")
    with pytest.raises(InputError) as err:
        label_file(garbage, out, progress=False)
    assert "garbage.xyz" in str(err.value) and "\n" not in str(err.value)

    clash = molecule("H2O")
    clash.positions[1] = clash.positions[0] + [0.05, 0, 0]
    clashing = tmp_path / "clash.extxyz"
    ase.io.write(clashing, [molecule("H2O"), clash], format="extxyz")
    with pytest.raises(InputError) as err:
        label_file(clashing, out, progress=False)
    assert "clash.extxyz" in str(err.value) and "structure 1" in str(err.value)

    with pytest.raises(InputError, match="does not exist"):
        label_file(clashing, tmp_path / "no" / "such" / "dir.extxyz", progress=False)
    assert not out.exists()


# ---------------------------------------------------------------------- sample
FAST = dict(frames=20, interval=10, equilibration=50.0, progress=False)


def test_sample_writes_labelled_frames(tmp_path):
    out = tmp_path / "ethanol.extxyz"
    frames = sample("CCO", out, seed=1, **FAST)
    assert len(frames) == 20
    back = read_frames(out)
    assert len(back) == 20
    assert not xtb.partial_path(out).exists()  # renamed to out at the end
    for a, b in zip(frames, back):
        assert a.calc is None
        assert a.get_chemical_formula() == "C2H6O"
        assert np.isfinite(b.get_potential_energy())
        assert b.get_forces().shape == (9, 3)
        assert b.get_potential_energy() == pytest.approx(a.info["energy"], abs=1e-6)
    # consecutive frames differ: the system moves
    assert np.abs(frames[0].positions - frames[1].positions).max() > 1e-3
    # the recorded forces are the xTB gradient of the recorded energies
    frame = frames[7]
    plain = Atoms(numbers=frame.numbers, positions=frame.positions)
    assert energies([plain])[0] == pytest.approx(frame.info["energy"], abs=1e-4)
    np.testing.assert_allclose(finite_difference_forces(plain, h=1e-3), frame.arrays["forces"], atol=2e-3)


def test_sample_is_seeded(tmp_path):
    a, b, c = tmp_path / "a.extxyz", tmp_path / "b.extxyz", tmp_path / "c.extxyz"
    small = dict(FAST, frames=5)
    sample("CCO", a, seed=3, **small)
    sample("CCO", b, seed=3, **small)
    sample("CCO", c, seed=4, **small)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_sample_from_file_and_charged_smiles(tmp_path):
    start = tmp_path / "start.xyz"
    ase.io.write(start, [molecule("H2O"), molecule("CH4")])
    frames = sample(str(start), tmp_path / "w.extxyz", frames=3, interval=2, equilibration=0.0, progress=False)
    assert [f.get_chemical_formula() for f in frames] == ["H2O"] * 3  # the first structure

    ion = sample("[OH-]", tmp_path / "oh.extxyz", frames=2, interval=2, equilibration=0.0, progress=False)
    assert ion[0].info["charge"] == -1
    assert read_frames(tmp_path / "oh.extxyz")[0].info["charge"] == -1


def test_sample_bad_inputs(tmp_path):
    out = tmp_path / "out.extxyz"
    with pytest.raises(InputError) as err:
        sample("missing_file.xyz", out, **FAST)
    assert "not a file and not a valid SMILES" in str(err.value) and "missing_file.xyz" in str(err.value)
    with pytest.raises(InputError, match="not a valid SMILES"):
        sample("C1CC(", out, **FAST)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(InputError) as err:
        sample(str(empty), out, **FAST)
    assert "empty.xyz" in str(err.value)
    with pytest.raises(InputError, match="frames"):
        sample("CCO", out, frames=0, progress=False)
    with pytest.raises(InputError, match="timestep"):
        sample("CCO", out, timestep=-1.0, progress=False)
    assert not out.exists()


def test_sample_blow_up_is_reported(tmp_path):
    out = tmp_path / "out.extxyz"
    with pytest.raises(InputError) as err:
        sample("CCO", out, timestep=10.0, frames=5, interval=5, equilibration=0.0, progress=False)
    assert "blew up" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and not xtb.partial_path(out).exists()
    # frames computed before a blow-up are kept in the partial file, and the message says where
    with pytest.raises(InputError) as err:
        sample("CCO", out, temperature=1500.0, timestep=3.0, frames=200, interval=2, equilibration=0.0,
               progress=False)
    assert str(err.value).endswith(f"; 2 frames kept in {xtb.partial_path(out)}")
    assert not out.exists() and len(read_frames(xtb.partial_path(out))) == 2


def test_md_guard_catches_close_atoms_and_overheating():
    def failed(problem):
        return InputError(problem)

    close = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.3]])
    with pytest.raises(InputError, match="closer than 0.5"):
        xtb._check_md_state(close, 300.0, failed)
    hot = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
    hot.set_velocities([[0, 0, -1.0], [0, 0, 1.0]])  # Å/(ASE time): ~10^5 K
    with pytest.raises(InputError, match="temperature"):
        xtb._check_md_state(hot, 300.0, failed)
    fine = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
    xtb._check_md_state(fine, 300.0, failed)


@pytest.mark.slow
def test_sample_default_ethanol_within_budget(tmp_path):
    import time

    start = time.perf_counter()
    frames = sample("CCO", tmp_path / "ethanol.extxyz", progress=False)
    assert len(frames) == 200
    assert time.perf_counter() - start < 60.0
