"""OpenMM through PythonForce: the calculator's energy and forces in OpenMM's units, and MD runs."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from localframe.calculator import Calculator

openmm = pytest.importorskip("openmm", reason="OpenMM not installed (pip install 'localframe[openmm]')")
if not hasattr(openmm, "PythonForce"):
    pytest.skip("OpenMM older than 8.4 has no PythonForce", allow_module_level=True)
from openmm import unit  # noqa: E402

from localframe.interop.openmm import EV_IN_KJ_PER_MOL, system_from_atoms  # noqa: E402


def _box():
    """A rattled 16-atom cubic box (orthorhombic: OpenMM's reduced form as it is)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.numbers[::3] = 6
    atoms.rattle(0.05, seed=2)
    return atoms


def _context(system, positions, integrator=None):
    integrator = integrator or openmm.VerletIntegrator(0.0002 * unit.picosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context, integrator


def test_unit_conversion():
    assert EV_IN_KJ_PER_MOL == pytest.approx(96.485332, rel=1e-7)


@pytest.mark.parametrize("kind", ["molecule", "periodic box"])
def test_energy_forces_equal_the_calculator(lf, kind, one_thread):
    model = lf.build_model("schnet")
    atoms = lf.ethanol() if kind == "molecule" else _box()
    system, positions = system_from_atoms(atoms, Calculator(model, dtype="float64"))
    context, _ = _context(system, positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / (10 * EV_IN_KJ_PER_MOL)
    same = Atoms(numbers=atoms.numbers, positions=10 * positions.value_in_unit(unit.nanometer),
                 cell=atoms.cell if atoms.pbc.all() else None, pbc=atoms.pbc)  # an orthorhombic box is not rotated
    same.calc = Calculator(model, dtype="float64")
    assert np.abs(same.get_forces()).max() > 1e-2
    assert energy == pytest.approx(same.get_potential_energy(), abs=1e-9)  # eV
    np.testing.assert_allclose(forces, same.get_forces(), rtol=0, atol=1e-9)  # eV/Å


def test_nve_conserves_energy_and_nvt_runs(lf, one_thread):
    model = lf.build_model("schnet")
    system, positions = system_from_atoms(lf.ethanol(), Calculator(model, dtype="float64"))
    context, integrator = _context(system, positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)

    def total():
        s = context.getState(getEnergy=True)
        return (s.getPotentialEnergy() + s.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)

    start = total()
    integrator.step(40)
    kinetic = context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(total() - start) < 1e-2 * kinetic
    langevin = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 10 / unit.picosecond, 0.0002 * unit.picosecond)
    context, langevin = _context(system, positions, langevin)
    langevin.step(40)
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert system.localframe_force.calls >= 80
