"""Structure relaxation with any ASE calculator: FIRE or BFGS, with the cell too (FrechetCellFilter)."""

from __future__ import annotations

import io
import math
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from ase import Atoms, units

from localframe.errors import InputError
from localframe.md.checks import choice, count, finite, output_files, plain, positive
from localframe.progress import progress as progress_bar

OPTIMIZERS = ("fire", "bfgs")


def relax(
    calculator,
    atoms: Atoms,
    fmax: float = 0.05,
    optimizer: str = "fire",
    steps: int = 1000,
    cell: bool | None = None,
    pressure: float = 0.0,
    out: str | os.PathLike | None = None,
    traj: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Minimise the energy until every force is below ``fmax`` (eV/Å), at most ``steps`` steps.

    ``optimizer`` fire | bfgs. ``cell`` (default: True for structures periodic in all three
    directions) also relaxes the cell with ASE's FrechetCellFilter at ``pressure`` (GPa); the
    convergence test then includes the stress (times the volume). ``out`` receives the final
    structure (extended XYZ with energy, forces, stress), ``traj`` every step. Returns
    ``{"converged", "steps", "energy" (eV), "fmax" (eV/Å), "atoms"}``; a non-finite energy
    raises :class:`InputError`.
    """
    fmax = positive("fmax", fmax, "eV/Å")
    optimizer = choice("optimizer", optimizer, OPTIMIZERS)
    steps = count("steps", steps, allow_zero=True)
    pressure = finite("pressure", pressure, "GPa")
    periodic = bool(atoms.pbc.all())
    cell = periodic if cell is None else bool(cell)
    if cell and not periodic:
        raise InputError(f"cell relaxation needs a structure periodic in all three directions (pbc={atoms.pbc.tolist()})")
    output_files(out, traj)
    atoms = plain(atoms)
    atoms.calc = calculator
    from ase.optimize import BFGS, FIRE

    target = atoms
    if cell:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms, scalar_pressure=pressure * units.GPa)
    opt = (FIRE if optimizer == "fire" else BFGS)(target, logfile=None)

    def current_fmax() -> float:
        forces = target.get_forces()
        return float(np.sqrt((forces**2).sum(axis=1).max())) if len(forces) else 0.0

    with ExitStack() as stack:
        bar = stack.enter_context(progress_bar(steps, f"relax ({optimizer.upper()})", enabled=progress))
        handle = stack.enter_context(open(traj, "w", encoding="utf-8")) if traj is not None else None
        done, converged = 0, False
        for converged in opt.irun(fmax=fmax, steps=steps):
            energy = atoms.get_potential_energy()
            if not math.isfinite(energy) or not np.isfinite(atoms.get_forces()).all():
                raise InputError(f"relaxation step {opt.nsteps}: the energy or forces are not finite (NaN or inf)")
            if handle is not None:
                handle.write(_frame_text(atoms, cell))
                handle.flush()
            done = opt.nsteps
            if progress:
                bar.update(done, E=f"{energy:.5f} eV", fmax=f"{current_fmax():.4f} eV/Å")
    final = _labelled(atoms, cell)
    if out is not None:
        import ase.io

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(out, final, format="extxyz")
    return {"converged": bool(converged), "steps": done, "energy": float(atoms.get_potential_energy()),
            "fmax": current_fmax(), "atoms": final}


def _labelled(atoms: Atoms, with_stress: bool) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                  info=dict(atoms.info))
    labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if with_stress:
        labels["stress"] = atoms.get_stress()
    frame.calc = SinglePointCalculator(frame, **labels)
    return frame


def _frame_text(atoms: Atoms, with_stress: bool) -> str:
    import ase.io

    text = io.StringIO()
    ase.io.write(text, _labelled(atoms, with_stress), format="extxyz")
    return text.getvalue()
