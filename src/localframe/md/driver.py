"""The MD driver: :func:`run_md`, a short loop of integrator step, guards and output.

See :mod:`localframe.md` for the ensembles, units, guards and the summary it returns.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError

from localframe.errors import InputError, one_line
from localframe.md import checks
from localframe.md.checks import plain
from localframe.md.guards import MIN_DISTANCE, Guards, temperature_bound
from localframe.md.output import Output, progress_fields
from localframe.progress import progress as progress_bar

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
NPT_CELL = ("isotropic", "full")


class MDStopped(InputError):
    """A guard stopped the simulation; ``summary`` describes what was done, frames are kept."""

    def __init__(self, problem: str, summary: dict):
        super().__init__(problem)
        self.summary = summary


def run_md(
    calculator,
    atoms: Atoms,
    ensemble: str = "nvt",
    temperature: float = 300.0,
    timestep: float = 0.5,
    steps: int = 1000,
    traj: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    max_uncertainty: float | None = None,
    *,
    thermostat: str = "langevin",
    friction: float = 0.01,
    taut: float | None = None,
    pressure: float = 0.0,
    taup: float | None = None,
    npt_cell: str = "isotropic",
    interval: int = 10,
    restart: bool = False,
    max_temperature: float | None = None,
    min_distance: float = MIN_DISTANCE,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Run ``steps`` MD steps of ``atoms`` with ``calculator``; returns a summary dict.

    ``ensemble`` nve | nvt | npt, ``thermostat`` langevin | bussi | nose-hoover (nvt),
    ``temperature`` K, ``timestep`` fs, ``friction`` 1/fs (Langevin), ``taut``/``taup`` fs
    (default 100 and 1000 time steps), ``pressure`` GPa and ``npt_cell`` isotropic | full (npt).
    ``traj`` (extended XYZ) and ``log`` (CSV) receive a frame / line every ``interval`` steps.
    ``restart=True`` continues from the last frame of ``traj``. A guard raises :class:`MDStopped`
    after flushing what was written (see :mod:`localframe.md`). ``atoms`` is not modified.
    ``on_step(k)``, when given, is called after step k is done and written. A calculator with
    ``fix_bond_graph`` (:class:`localframe.Calculator`) has its SPE models use the bond graph of the first
    frame (a restart's: the last frame of ``traj``) in every step, so the energy stays smooth where a bond
    would be made or broken; the calculator computes its graphs per call again afterwards.
    """
    ensemble = checks.choice("ensemble", ensemble, ENSEMBLES)
    thermostat = checks.choice("thermostat", thermostat, THERMOSTATS)
    npt_cell = checks.choice("npt_cell", npt_cell, NPT_CELL)
    temperature = checks.positive("temperature", temperature, "K", allow_zero=ensemble == "nve")
    timestep = checks.positive("timestep", timestep, "fs")
    steps = checks.count("steps", steps, allow_zero=True)
    interval = checks.count("interval", interval)
    friction = checks.positive("friction", friction, "1/fs", allow_zero=True)
    taut = checks.positive("taut", 100.0 * timestep if taut is None else taut, "fs")
    taup = checks.positive("taup", 1000.0 * timestep if taup is None else taup, "fs")
    min_distance = checks.positive("min_distance", min_distance, "Å", allow_zero=True)
    pressure = checks.finite("pressure", pressure, "GPa")
    seed = checks.seed(seed)
    committee = "forces_std" in getattr(calculator, "implemented_properties", ())
    if max_uncertainty is not None:
        max_uncertainty = checks.positive("max_uncertainty", max_uncertainty, "eV/Å")
        if not committee:
            raise InputError("max_uncertainty needs a committee calculator (give several model files)")
    if restart and traj is None:
        raise InputError("restart needs the trajectory to continue from")
    if restart and not Path(traj).is_file():
        raise InputError("cannot restart: trajectory not found", str(traj))
    checks.output_files(traj, log)

    atoms = plain(atoms)
    if ensemble == "npt" and not atoms.pbc.all():
        raise InputError(f"npt needs a structure periodic in all three directions (pbc={atoms.pbc.tolist()})")
    first_step = _restart(atoms, traj) if restart else 0
    rng = np.random.default_rng([seed, first_step])
    if not restart:
        maxwell_boltzmann(atoms, temperature, rng)
    atoms.calc = calculator
    dynamics = integrator(atoms, ensemble, thermostat, temperature, timestep, friction, taut, pressure, taup, npt_cell, rng)
    if max_temperature is None:
        t_initial = float(atoms.get_temperature()) if len(atoms) else 0.0
        max_temperature = temperature_bound(temperature if ensemble != "nve" else max(temperature, t_initial))
    guards = Guards(checks.positive("max_temperature", max_temperature, "K"), min_distance, max_uncertainty)

    state = _State(first_step, timestep, ensemble, atoms, guards)

    def stop(problem: str) -> MDStopped:
        summary = {**state.summary(), "stopped": problem}
        where = f"; {state.frames} frame(s) kept in {traj}" if traj is not None else ""
        step = first_step + state.done
        return MDStopped(f"MD stopped after {step} steps ({step * timestep:g} fs): {problem}{where}", summary)

    with ExitStack() as stack:
        fix = getattr(calculator, "fix_bond_graph", None)
        if fix is not None:  # SPE models: the bond graph of the first frame for the whole run, then as before
            fix(atoms)
            stack.callback(fix, None)
        writer = stack.enter_context(Output(traj, log, append=restart, ensemble=ensemble, committee=committee))
        try:
            if ensemble == "npt":  # the barostat's first step needs it; asked first, a localframe Calculator
                atoms.get_stress()  # computes it with the forces in one call here and at every step after
            atoms.get_forces()
        except InputError as err:
            raise stop(f"the calculator refused the structure: {err.problem}") from None
        except PropertyNotImplementedError as err:  # a third-party ASE calculator without stress (npt) or forces
            raise stop(f"{type(calculator).__name__} cannot compute a property this run needs ({err or 'not given'}); "
                       f"{ensemble} needs energy, forces{' and stress' if ensemble == 'npt' else ''}") from None
        observed = state.record(guards.check(atoms, stop))
        if not restart:
            state.frames += writer.write(atoms, first_step, timestep, observed)
        state.started, state.cpu_started = time.perf_counter(), time.process_time()  # the steps, not the first call
        bar = stack.enter_context(progress_bar(steps, "MD", enabled=progress))
        for k in range(1, steps + 1):
            try:
                dynamics.step()
            except InputError as err:  # e.g. atoms closer than 0.1 Å, non-finite coordinates
                raise stop(f"the calculator refused the structure: {err.problem}") from None
            except (RuntimeError, ValueError, FloatingPointError) as err:  # e.g. an SCF that fails to converge
                raise stop(f"the calculation failed ({one_line(err, 300)}); the simulation probably blew up") from None
            dynamics.nsteps += 1
            state.done = k
            observed = state.record(guards.check(atoms, stop))
            if k % interval == 0 or k == steps:  # the last step too, so that a restart continues from it
                state.frames += writer.write(atoms, first_step + k, timestep, observed)
            if progress:
                bar.update(k, **progress_fields(observed))
            if on_step is not None:
                on_step(k)
        state.wall, state.cpu = time.perf_counter() - state.started, time.process_time() - state.cpu_started
    return {**state.summary(), "stopped": None}


def _restart(atoms: Atoms, traj) -> int:
    """Positions, cell and momenta of the last frame of ``traj`` into ``atoms``; returns its step."""
    last = checks.read_structure(traj, index=-1, format="extxyz")
    if len(last) != len(atoms) or not np.array_equal(last.numbers, atoms.numbers):
        raise InputError("cannot restart: its last frame has other atoms than the structure", str(traj))
    if not last.has("momenta"):
        raise InputError("cannot restart: its last frame has no momenta", str(traj))
    atoms.positions, atoms.cell, atoms.pbc = last.positions, last.cell, last.pbc
    atoms.set_momenta(last.get_momenta())
    return int(last.info.get("step", 0))


class _State:
    """Per-step observables of one :func:`run_md` call, and its summary."""

    def __init__(self, first_step: int, timestep: float, ensemble: str, atoms: Atoms, guards: Guards):
        self.first_step, self.timestep, self.ensemble, self.atoms = first_step, timestep, ensemble, atoms
        self.guards = guards
        self.done = 0
        self.frames = 0
        self.wall = self.cpu = 0.0
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.epot: list[float] = []
        self.ekin: list[float] = []
        self.temperature: list[float] = []

    def record(self, observed: dict) -> dict:
        self.epot.append(observed["epot"])
        self.ekin.append(observed["ekin"])
        self.temperature.append(observed["temperature"])
        return observed

    def summary(self) -> dict:
        n_atoms = len(self.atoms)
        wall = self.wall or (time.perf_counter() - self.started)
        epot, ekin = np.array(self.epot), np.array(self.ekin)
        etot = epot + ekin
        times_ps = np.arange(len(etot)) * self.timestep * 1e-3
        drift = None
        if self.ensemble == "nve" and len(etot) > 2:
            drift = float(np.polyfit(times_ps, etot / max(n_atoms, 1), 1)[0])
        return {
            "steps": self.done,
            "first_step": self.first_step,
            "last_step": self.first_step + self.done,
            "time_ps": self.done * self.timestep * 1e-3,
            "frames": self.frames,
            "n_atoms": n_atoms,
            "temperature_mean": float(np.mean(self.temperature)) if self.temperature else None,
            "temperature_std": float(np.std(self.temperature)) if self.temperature else None,
            "epot_mean": float(np.mean(epot)) if len(epot) else None,
            "etot_std": float(np.std(etot)) if len(etot) else None,
            "ekin_std": float(np.std(ekin)) if len(ekin) else None,
            "etot_change": float(etot[-1] - etot[0]) if len(etot) else None,
            "energy_drift": drift,
            "steps_per_second": self.done / wall if wall > 0 else None,
            "wall_seconds": wall,
            "cpu_seconds": self.cpu or (time.process_time() - self.cpu_started),
            "max_forces_std": self.guards.max_spread or None,
            "atoms": plain(self.atoms, momenta=True),
        }


def maxwell_boltzmann(atoms: Atoms, temperature: float, rng: np.random.Generator, zero_rotation: bool = True) -> None:
    """Momenta p ~ N(0, m k_B T) per Cartesian component, without net momentum (and, for molecules
    of three atoms or more with ``zero_rotation``, without net rotation)."""
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * temperature))
    if len(atoms) > 1:
        Stationary(atoms)
        if zero_rotation and not atoms.pbc.any() and len(atoms) > 2:
            ZeroRotation(atoms)


def integrator(atoms, ensemble, thermostat, temperature, timestep, friction, taut, pressure, taup, npt_cell, rng):
    """The ASE integrator of an ensemble and thermostat (units as for :func:`run_md`)."""
    dt = timestep * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "npt":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT, MTKNPT

        cls = IsotropicMTKNPT if npt_cell == "isotropic" else MTKNPT
        return cls(atoms, timestep=dt, temperature_K=temperature, pressure_au=pressure * units.GPa,
                   tdamp=taut * units.fs, pdamp=taup * units.fs)
    if thermostat == "langevin":
        return langevin(atoms, timestep, temperature, friction, rng)
    if thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep=dt, temperature_K=temperature, taut=taut * units.fs, rng=rng)
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature, tdamp=taut * units.fs)


def langevin(atoms: Atoms, timestep: float, temperature: float, friction: float, rng: np.random.Generator):
    """ASE's Langevin (BBK) integrator, Δt in fs and γ in 1/fs, with the centre of mass held fixed
    (a FixCom constraint, ASE's recommendation over ``fixcm=True``). Also the xTB sampler's."""
    from ase.md.langevin import Langevin

    if len(atoms) > 1:
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())
    return Langevin(atoms, timestep=timestep * units.fs, temperature_K=temperature, friction=friction / units.fs,
                    fixcm=False, rng=rng)
