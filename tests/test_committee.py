"""Committees: the mean and spread of several models, as ASE results and in MD trajectories."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch

from localframe.calculator import Calculator
from localframe.io import save_model
from localframe.md import run_md


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def members(lf):
    return [lf.build_model("schnet", seed=0), lf.build_model("schnet", seed=1), lf.build_model("painn", seed=2)]


def test_mean_and_spread(lf, members):
    atoms = lf.ethanol()
    singles = [Calculator(m, dtype="float64") for m in members]
    energies = np.array([c.get_potential_energy(atoms) for c in singles])
    forces = np.stack([c.get_forces(atoms) for c in singles])
    atoms.calc = Calculator(members, dtype="float64")
    assert atoms.calc.committee and len(atoms.calc.models) == 3
    assert atoms.get_potential_energy() == pytest.approx(energies.mean(), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(axis=0), rtol=0, atol=1e-12)
    calc = atoms.calc
    assert calc.get_property("energy_std", atoms) == pytest.approx(energies.std(), abs=1e-12)
    expected = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
    np.testing.assert_allclose(calc.get_property("forces_std", atoms), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(calc.results["energies"], energies, rtol=0, atol=1e-12)
    assert "forces_std" not in singles[0].implemented_properties


def test_stress_spread_and_identical_members(lf, members):
    atoms = lf.triclinic()
    atoms.calc = Calculator(members[:2], dtype="float64")
    stresses = np.stack([Calculator(m, dtype="float64").get_stress(atoms) for m in members[:2]])
    np.testing.assert_allclose(atoms.get_stress(), stresses.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.calc.results["stress_std"], stresses.std(axis=0), rtol=0, atol=1e-12)
    same = Calculator([members[0], members[0]], dtype="float64")
    same.get_forces(atoms)
    assert same.results["energy_std"] == pytest.approx(0.0, abs=1e-12)
    assert np.abs(same.results["forces_std"]).max() < 1e-12


def test_members_with_different_cutoffs(lf):
    small, large = lf.build_model("schnet", seed=0, cutoff=3.0), lf.build_model("schnet", seed=1, cutoff=5.0)
    atoms = lf.rattled(lf.ethanol(), 0.1, seed=4)
    expected = np.mean([Calculator(m, dtype="float64").get_forces(atoms) for m in (small, large)], axis=0)
    calc = Calculator([small, large], dtype="float64", skin=0.5)
    np.testing.assert_allclose(calc.get_forces(atoms), expected, rtol=0, atol=1e-12)


def test_model_files_and_batched_evaluation(lf, members, tmp_path):
    paths = [save_model(m, tmp_path / f"m{k}.pt") for k, m in enumerate(members[:2])]
    calc = Calculator([str(p) for p in paths], dtype="float64")
    structures = [lf.ethanol(), lf.chiral()]
    result = calc.evaluate_many(structures, batch_size=2)
    for k, atoms in enumerate(structures):
        assert result["energy"][k] == pytest.approx(calc.get_potential_energy(atoms), abs=1e-12)
        np.testing.assert_allclose(result["forces_std"][k], calc.results["forces_std"], rtol=0, atol=1e-12)
        assert result["energy_std"][k] == pytest.approx(calc.results["energy_std"], abs=1e-12)


def test_spread_is_written_to_the_trajectory(lf, members, tmp_path):
    traj, log = tmp_path / "md.extxyz", tmp_path / "md.csv"
    calc = Calculator(members[:2], dtype="float64", skin=0.5)
    summary = run_md(calc, lf.ethanol(), "nvt", 300.0, 0.5, 20, traj=traj, log=log, interval=10, progress=False)
    frames = ase.io.read(traj, ":")
    assert len(frames) == summary["frames"] == 3
    for frame in frames:
        assert frame.arrays["forces_std"].shape == (len(frame),)
        assert frame.info["energy_std"] >= 0
    assert summary["max_forces_std"] >= max(f.arrays["forces_std"].max() for f in frames) - 1e-7  # over all steps
    header = log.read_text().splitlines()[0].split(",")
    assert header[-2:] == ["energy_std_eV", "max_forces_std_eV_per_A"]
