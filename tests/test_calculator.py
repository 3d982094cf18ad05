"""The ASE calculator: same numbers as the model, ASE conventions, dtypes, model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import localframe
from localframe import models
from localframe.calculator import Calculator
from localframe.errors import InputError
from localframe.io import save_model


def test_lazy_exports():
    assert localframe.Calculator is Calculator
    assert localframe.load_model is __import__("localframe.io", fromlist=["load_model"]).load_model


def test_molecule_matches_model(lf):
    model = lf.build_model("painn", dipole=True)
    atoms = lf.ethanol()
    atoms.calc = Calculator(model, dtype="float64")
    direct = lf.predict(model, atoms)
    assert atoms.get_potential_energy() == pytest.approx(direct["energy"][0], rel=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(direct["energy"][0], rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), direct["forces"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_dipole_moment(), direct["dipole"][0], rtol=0, atol=1e-12)
    numeric = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numeric, rtol=0, atol=1e-6 * np.abs(numeric).max())
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_crystal_stress_in_ase_voigt_order(lf):
    model = lf.build_model("schnet", dipole=True)
    atoms = lf.triclinic()
    atoms.calc = Calculator(model, dtype="float64")
    direct = lf.predict(model, atoms, dipole=False)
    s = direct["stress"][0]
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], rtol=0, atol=1e-12)
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(stress, numeric, rtol=0, atol=1e-6 * np.abs(numeric).max())
    assert atoms.get_potential_energy() == pytest.approx(direct["energy"][0], rel=1e-12)
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("dipole", atoms)


def test_untrained_model_float32_and_float64(lf):
    model = models.create("schnet", hidden_channels=16, num_layers=2)  # float32, as created
    atoms = lf.ethanol()
    calc32, calc64 = Calculator(model), Calculator(model, dtype="float64")
    assert next(calc32.model.parameters()).dtype == torch.float32
    assert next(calc64.model.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left alone
    e32, e64 = calc32.get_potential_energy(atoms), calc64.get_potential_energy(atoms)
    assert e32 == pytest.approx(e64, rel=1e-5, abs=1e-6)
    f32, f64 = calc32.get_forces(atoms), calc64.get_forces(atoms)
    np.testing.assert_allclose(f32, f64, rtol=0, atol=1e-4 * max(np.abs(f64).max(), 1e-3))
    assert "dipole" not in calc32.implemented_properties


def test_model_file_path(lf, tmp_path):
    model = lf.build_model("egnn", targets={"gap": "mean"})
    path = save_model(model, tmp_path / "egnn.pt")
    atoms = lf.silicon()
    from_path = Calculator(str(path), dtype="float64")
    from_model = Calculator(model, dtype="float64")
    assert from_path.get_potential_energy(atoms) == pytest.approx(from_model.get_potential_energy(atoms), rel=1e-12)
    np.testing.assert_allclose(from_path.get_stress(atoms), from_model.get_stress(atoms), rtol=0, atol=1e-12)
    assert Calculator(path).get_potential_energy(atoms) == pytest.approx(
        from_model.get_potential_energy(atoms), rel=1e-5
    )


def test_charges_follow_total_charge(lf):
    model = lf.build_model("schnet", dipole=True)
    atoms = lf.ethanol()
    atoms.calc = Calculator(model, dtype="float64")
    assert atoms.get_charges().sum() == pytest.approx(0.0, abs=1e-12)
    neutral = atoms.get_dipole_moment()
    atoms.info["charge"] = 1.0
    assert atoms.get_charges().sum() == pytest.approx(1.0, abs=1e-12)
    # A uniform charge shift has no dipole about the centroid, the dipole's origin.
    np.testing.assert_allclose(atoms.get_dipole_moment(), neutral, rtol=0, atol=1e-12)


def test_bad_arguments(lf, tmp_path):
    model = lf.build_model("schnet")
    with pytest.raises(InputError, match="committee"):
        Calculator([])  # an empty committee
    with pytest.raises(InputError, match="dtype"):
        Calculator(model, dtype="float16")
    with pytest.raises(InputError, match="not found"):
        Calculator(tmp_path / "missing.pt")
    with pytest.raises(InputError):
        Calculator(42)
