r"""LAMMPS (the ``lammps`` Python module) driven by a localframe model through ``fix external``.

    from localframe import Calculator
    from localframe.interop.lammps import lammps_from_atoms, attach

    lmp = lammps_from_atoms(atoms)                  # units metal, atom_style atomic, one type per element
    attach(lmp, Calculator("model.pt", dtype="float64"), lmp.localframe_elements)
    lmp.command("velocity all create 300 1 mom yes rot yes")
    lmp.command("fix nvt all nvt temp 300 300 0.05")
    lmp.command("run 1000")

:func:`attach` defines ``fix <id> all external pf/callback 1 1`` with ``fix_modify <id> energy yes
virial yes`` and a callback that, at every force evaluation,

* reads the local atoms in the order of their LAMMPS tags (ids), their types mapped to atomic numbers
  by ``elements`` (type t is element ``elements[t - 1]``), and the current box: the LAMMPS cell rows
  a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz) and its periodic directions;
* calls the ASE calculator and writes back the forces (eV/Å), the energy (eV) and, for a box periodic
  in all three directions, the virial W = −σ V (eV, LAMMPS order xx, yy, zz, xy, xz, yz; σ the
  calculator's stress), which NPT (``fix npt``) and the pressure need.

Units: ``units metal`` (eV, Å, ps) is required, since the calculator speaks eV and Å; any other
``units`` raises :class:`~localframe.errors.InputError`. One MPI rank only: the callback sees the
local atoms, so a multi-rank run would miss the others (also an error).

The ``lammps`` wheel links the MPI library of the ``mpich`` wheel; :func:`load_lammps` preloads it
from the environment's ``lib`` folder, so ``LD_LIBRARY_PATH`` need not be set.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Sequence

import numpy as np
from ase import Atoms

from localframe.errors import InputError

__all__ = ["load_lammps", "lammps_from_atoms", "attach", "LammpsCallback"]


def load_lammps():
    """The ``lammps`` module, with the MPI library of the ``mpich`` wheel preloaded when present."""
    for name in ("libmpi.so.12", "libmpi.so"):
        lib = os.path.join(sys.prefix, "lib", name)
        if os.path.exists(lib):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            break
    try:
        import lammps
    except (ImportError, OSError) as err:
        raise InputError(f"LAMMPS is not available ({err}): pip install 'localframe[lammps]'") from err
    return lammps


def _lammps_frame(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Positions and cell rotated into LAMMPS's lower-triangular form (a along x, b in the xy plane)."""
    if not atoms.pbc.any():
        return atoms.positions.copy(), np.zeros((3, 3))
    cell, rotation = atoms.cell.standard_form()
    return atoms.positions @ rotation.T, np.asarray(cell)


def lammps_from_atoms(atoms: Atoms, cmdargs: Sequence[str] = ("-log", "none", "-screen", "none"), margin: float = 50.0):
    """A LAMMPS instance (``units metal``, ``atom_style atomic``) holding ``atoms``: one atom type per
    element, in order of increasing atomic number (``lmp.localframe_elements``), masses from ASE.

    A periodic cell is rotated into LAMMPS's form (energies unchanged, forces rotated with it); a
    structure periodic in all three directions or in none is accepted. A molecule gets a fixed box
    (``boundary f f f``) ``margin`` Å larger than the molecule on every side.
    """
    if atoms.pbc.any() and not atoms.pbc.all():
        raise InputError("LAMMPS through localframe: give a structure periodic in all three directions or in none")
    if len(atoms) == 0:
        raise InputError("LAMMPS through localframe: the structure has no atoms")
    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=list(cmdargs))
    elements = sorted({int(z) for z in atoms.numbers})
    positions, cell = _lammps_frame(atoms)
    lmp.command("units metal")
    lmp.command("atom_style atomic")
    lmp.command("atom_modify map array")
    if atoms.pbc.all():
        lmp.command("boundary p p p")
        lx, ly, lz, xy, xz, yz = (float(v) for v in (cell[0, 0], cell[1, 1], cell[2, 2], cell[1, 0], cell[2, 0], cell[2, 1]))
        lmp.command(f"region box prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r} units box")
    else:
        lmp.command("boundary f f f")
        lo, hi = (positions.min(axis=0) - margin).tolist(), (positions.max(axis=0) + margin).tolist()
        lmp.command(f"region box block {lo[0]!r} {hi[0]!r} {lo[1]!r} {hi[1]!r} {lo[2]!r} {hi[2]!r} units box")
    lmp.command(f"create_box {len(elements)} box")
    types = [elements.index(int(z)) + 1 for z in atoms.numbers]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.reshape(-1).tolist())
    if lmp.get_natoms() != len(atoms):
        raise InputError(f"LAMMPS kept {lmp.get_natoms()} of {len(atoms)} atoms (atoms outside the box?)")
    from ase.data import atomic_masses

    for t, z in enumerate(elements, start=1):
        lmp.command(f"mass {t} {float(atomic_masses[z])!r}")
    lmp.localframe_elements = elements
    return lmp


class LammpsCallback:
    """The ``fix external`` callback: LAMMPS state → ``ase.Atoms`` → calculator → forces, energy, virial."""

    def __init__(self, lmp, calculator, elements: Sequence[int], fix_id: str):
        self.lmp, self.calculator, self.fix_id = lmp, calculator, fix_id
        self.type_to_z = np.array([0, *[int(z) for z in elements]], dtype=np.int64)
        self.calls = 0

    def atoms(self, tag: np.ndarray, x: np.ndarray) -> tuple[Atoms, np.ndarray]:
        lmp = self.lmp
        nlocal = len(tag)
        types = np.asarray(lmp.numpy.extract_atom("type"))[:nlocal]
        if types.max() >= len(self.type_to_z):
            raise InputError(f"LAMMPS atom type {int(types.max())} has no element (elements has {len(self.type_to_z) - 1})")
        order = np.argsort(tag, kind="stable")
        boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
        lengths = np.asarray(boxhi) - np.asarray(boxlo)
        cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
        pbc = np.asarray(periodicity, dtype=bool)
        atoms = Atoms(numbers=self.type_to_z[types[order]], positions=np.asarray(x)[order] - np.asarray(boxlo),
                      cell=cell if pbc.any() else None, pbc=pbc)
        return atoms, order

    def __call__(self, caller, ntimestep, nlocal, tag, x, f):
        atoms, order = self.atoms(np.asarray(tag)[:nlocal], np.asarray(x)[:nlocal])
        properties = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
        self.calculator.calculate(atoms, properties)
        results = self.calculator.results
        forces = np.empty((nlocal, 3))
        forces[order] = results["forces"]
        f[:nlocal] = forces
        self.lmp.fix_external_set_energy_global(self.fix_id, float(results["energy"]))
        if "stress" in properties:
            s = results["stress"] * atoms.get_volume()  # ASE Voigt xx yy zz yz xz xy, eV
            self.lmp.fix_external_set_virial_global(self.fix_id, [-s[0], -s[1], -s[2], -s[5], -s[4], -s[3]])
        self.calls += 1


def attach(lmp, calculator, elements: Sequence[int], fix_id: str = "localframe", group: str = "all") -> LammpsCallback:
    """Drive ``lmp`` with ``calculator`` (an ASE calculator, e.g. :class:`localframe.Calculator`) through
    ``fix external``; ``elements[t - 1]`` is the atomic number of LAMMPS type t. Returns the callback."""
    units = lmp.extract_global("units")
    if units != "metal":
        raise InputError(f"LAMMPS through localframe needs 'units metal' (eV, Å), the instance has units {units!r}")
    if lmp.extract_setting("world_size") != 1:
        raise InputError("LAMMPS through localframe runs on one MPI rank (the callback sees only local atoms)")
    callback = LammpsCallback(lmp, calculator, elements, fix_id)
    lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
    lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    lmp.set_fix_external_callback(fix_id, callback, lmp)
    lmp.localframe_callback = callback  # keep it alive as long as the instance
    return callback
