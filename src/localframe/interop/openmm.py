r"""OpenMM driven by a localframe model through ``openmm.PythonForce`` (OpenMM ≥ 8.4).

    import openmm, openmm.unit as u
    from localframe import Calculator
    from localframe.interop.openmm import system_from_atoms

    system, positions = system_from_atoms(atoms, Calculator("model.pt", dtype="float64"))
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.5 * u.femtosecond)
    simulation = openmm.app.Simulation(openmm.app.Topology(), system, integrator)
    simulation.context.setPositions(positions)
    simulation.step(1000)

:class:`LocalframeForce` is the computation OpenMM calls: it receives the State (positions in nm and,
for a periodic system, the box vectors), builds an ``ase.Atoms`` with the atomic numbers given at
construction, calls the ASE calculator and returns the energy in kJ/mol and the forces in kJ/mol/nm:

    E [kJ/mol] = E [eV] · 96.485 332 1,     F [kJ/mol/nm] = F [eV/Å] · 964.853 321.

No virial is needed: OpenMM's Monte Carlo barostat works from energies. OpenMM requires periodic
boxes in its reduced form (a along x, b in the xy plane, a_x ≥ 2|b_x|, a_x ≥ 2|c_x|, b_y ≥ 2|c_y|);
:func:`system_from_atoms` rotates the cell into lower-triangular form and raises
:class:`~localframe.errors.InputError` when that is not reduced. A structure must be periodic in all
three directions or in none.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units

from localframe.errors import InputError

__all__ = ["LocalframeForce", "system_from_atoms", "EV_IN_KJ_PER_MOL"]

EV_IN_KJ_PER_MOL = 1.0 / (units.kJ / units.mol)  # 96.485 332 1...


def _openmm():
    try:
        import openmm
    except ImportError as err:
        raise InputError(f"OpenMM is not available ({err}): pip install 'localframe[openmm]'") from err
    return openmm


class LocalframeForce:
    """``compute(state) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)`` for ``openmm.PythonForce``."""

    def __init__(self, calculator, numbers, periodic: bool):
        self.calculator = calculator
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.periodic = bool(periodic)
        self.calls = 0

    def atoms(self, state) -> Atoms:
        positions = 10.0 * np.asarray(state.getPositions(asNumpy=True)._value)  # nm -> Å
        if self.periodic:
            cell = 10.0 * np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value)
            return Atoms(numbers=self.numbers, positions=positions, cell=cell, pbc=True)
        return Atoms(numbers=self.numbers, positions=positions)

    def __call__(self, state):
        atoms = self.atoms(state)
        self.calculator.calculate(atoms, ["energy", "forces"])
        self.calls += 1
        energy = float(self.calculator.results["energy"]) * EV_IN_KJ_PER_MOL
        return energy, np.asarray(self.calculator.results["forces"]) * (10.0 * EV_IN_KJ_PER_MOL)


def _reduced_box(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    cell, rotation = atoms.cell.standard_form()
    cell = np.asarray(cell)
    (ax, _, _), (bx, by, _), (cx, cy, _) = cell
    tol = 1e-9
    if ax + tol < 2 * abs(bx) or ax + tol < 2 * abs(cx) or by + tol < 2 * abs(cy):
        raise InputError("OpenMM needs a reduced periodic box (a_x ≥ 2|b_x|, a_x ≥ 2|c_x|, b_y ≥ 2|c_y|); "
                         "reduce the cell first (e.g. ase.build.niggli_reduce)")
    return atoms.positions @ rotation.T, cell


def system_from_atoms(atoms: Atoms, calculator):
    """``(openmm.System, positions)`` for ``atoms`` driven by ``calculator``: one particle per atom with
    its ASE mass, the :class:`LocalframeForce` as a ``PythonForce`` and, for a periodic structure, the
    box in OpenMM's form. ``positions`` (nm, an OpenMM Quantity) are in the frame of that box."""
    openmm = _openmm()
    from openmm import unit

    if atoms.pbc.any() and not atoms.pbc.all():
        raise InputError("OpenMM through localframe: give a structure periodic in all three directions or in none")
    periodic = bool(atoms.pbc.all())
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    if periodic:
        positions, cell = _reduced_box(atoms)
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*(0.1 * row)) for row in cell])
    else:
        positions = atoms.positions.copy()
    compute = LocalframeForce(calculator, atoms.numbers, periodic)
    force = openmm.PythonForce(compute)
    force.setUsesPeriodicBoundaryConditions(periodic)
    system.addForce(force)
    system.localframe_force = compute  # keep the callable reachable for callers (e.g. its call count)
    return system, unit.Quantity(0.1 * positions, unit.nanometer)
