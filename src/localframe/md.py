r"""Molecular dynamics and structure relaxation with any ASE calculator (normally a localframe model).

:func:`run_md` integrates Newton's equations with ASE's integrators:

==========  =====================  ==================================================================
ensemble    thermostat             integrator (ASE)
==========  =====================  ==================================================================
``nve``     --                     velocity Verlet
``nvt``     ``langevin`` (default) Langevin (BBK), friction γ in 1/fs
``nvt``     ``bussi``              stochastic velocity rescaling (Bussi, Donadio, Parrinello 2007), τ_T
``nvt``     ``nose-hoover``        Nosé–Hoover chain of 3 (Martyna, Klein, Tuckerman 1992), τ_T
``npt``     --                     MTK: Nosé–Hoover chains on particles and cell (isotropic or full
                                   cell), τ_T and τ_P; structures periodic in all three directions
==========  =====================  ==================================================================

Units: temperature K, time step and damping times fs, friction 1/fs, pressure GPa, energies eV.
Defaults τ_T = 100 Δt and τ_P = 1000 Δt (ASE's recommendation). Langevin, Bussi and Nosé–Hoover
chains sample the canonical ensemble; the Langevin thermostat also damps the dynamics (use Bussi
or Nosé–Hoover for dynamical properties).

Initial velocities are drawn from the Maxwell–Boltzmann distribution at ``temperature`` with
``seed``; the centre-of-mass momentum (and, for molecules, the angular momentum) is removed.

Output. Every ``interval`` steps, and after the last step, a frame is appended to the trajectory (extended XYZ: positions,
``momenta`` in ASE units, energy, forces, stress when computed, ``step``, ``time_fs``,
``temperature_K`` and, for a committee, ``energy_std`` (eV) and per-atom ``forces_std`` (eV/Å)),
and a line to the CSV log; both are flushed after every write, so a run that stops keeps every
frame written so far. ``restart=True`` continues from the last frame of the trajectory (positions,
momenta, cell, step count), appending to trajectory and log. The state of a Nosé–Hoover chain or
MTK barostat is not stored and restarts from zero; the random stream continues from a seed mixed
with the step number.

Guards. After every step the run stops with :class:`MDStopped` (an :class:`InputError`; the CLI
prints one line and exits 2), without writing the bad step, when

* the energy, a force or a position is not finite;
* two atoms are closer than ``min_distance`` (0.5 Å);
* the instantaneous temperature T = 2 E_kin / (N_dof k_B) (ASE's: N_dof = 3N less the degrees of
  freedom removed by constraints, 3 for the fixed centre of mass of the Langevin run) exceeds ``max_temperature``: by default
  10 × the target temperature for ``nvt``/``npt``, and for ``nve`` 10 × the larger of the initial
  and the requested temperature, or 5000 K when both are zero;
* ``max_uncertainty`` (eV/Å) is set and the largest per-atom committee force spread
  ``forces_std`` exceeds it (the calculator must be a committee).

The summary returned by :func:`run_md` holds ``steps``, ``time_ps``, ``frames``,
``temperature_mean``/``temperature_std`` (K), ``energy_drift`` (eV/atom/ps: the slope of a
least-squares line through the total energy per atom against time, NVE only, else None),
``etot_std`` and ``ekin_std`` (eV), ``steps_per_second`` and ``wall_seconds``, ``max_forces_std``
(committee) and ``atoms`` (the final structure, with momenta).

:func:`relax` minimises the energy with FIRE or BFGS, relaxing the cell too (ASE's
FrechetCellFilter at ``pressure``) for structures periodic in all three directions unless
``cell=False``. :func:`benchmark` times MD steps (this calculator against GFN2-xTB).
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from ase import Atoms, units

from localframe.errors import InputError, one_line
from localframe.progress import progress as progress_bar

__all__ = [
    "run_md", "relax", "MDStopped", "read_structure", "benchmark", "benchmark_neighbor_list", "benchmark_table",
    "water_box", "ENSEMBLES", "THERMOSTATS", "OPTIMIZERS",
]

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
NPT_CELL = ("isotropic", "full")
OPTIMIZERS = ("fire", "bfgs")
MIN_DISTANCE = 0.5  # Å
MAX_HEAT = 10.0  # stop when T exceeds this many times the reference temperature
MAX_TEMPERATURE_COLD = 5000.0  # K; the bound for NVE started at 0 K


class MDStopped(InputError):
    """A guard stopped the simulation; ``summary`` describes what was done, frames are kept."""

    def __init__(self, problem: str, summary: dict):
        super().__init__(problem)
        self.summary = summary


# ---------------------------------------------------------------------------------- inputs
def read_structure(path: str | os.PathLike, index: int | str = -1, format: str | None = None) -> Atoms:
    """One structure from any ASE-readable file (default: the last one), as plain ``Atoms``."""
    import ase.io

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError("structure file not found", source)
    if p.is_dir() or p.stat().st_size == 0:
        raise InputError("is a directory or empty, expected a structure file", source)
    if p.suffix == ".pt" and format is None:
        raise InputError("is a model file, not a structure (give the model files first, the structure last)", source)
    try:
        atoms = ase.io.read(p, index=index, format=format)
    except (StopIteration, IndexError):
        raise InputError(f"no structure at index {index}", source) from None
    except Exception as err:  # ase raises many types for files it cannot parse
        raise InputError(f"cannot read a structure ({type(err).__name__}: {one_line(err, 300)})", source) from None
    if isinstance(atoms, list):
        if not atoms:
            raise InputError("no structures in the file", source)
        atoms = atoms[-1]
    from localframe.data.convert import check_structure

    check_structure(atoms, source=source, index=None)
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if atoms.has("momenta"):
        out.set_momenta(atoms.get_momenta())
    out.info.update({k: v for k, v in atoms.info.items() if k in ("charge", "multiplicity", "step", "time_fs")})
    return out


def _positive(name: str, value, unit: str, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number ({unit}), got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise InputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number ({unit}), got {value!r}")
    return number


def _count(name: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise InputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return int(value)


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    text = str(value).lower()
    if text not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return text


# ---------------------------------------------------------------------------------- MD
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
) -> dict:
    """Run ``steps`` MD steps of ``atoms`` with ``calculator``; returns a summary dict.

    ``ensemble`` nve | nvt | npt, ``thermostat`` langevin | bussi | nose-hoover (nvt),
    ``temperature`` K, ``timestep`` fs, ``friction`` 1/fs (Langevin), ``taut``/``taup`` fs
    (default 100 and 1000 time steps), ``pressure`` GPa and ``npt_cell`` isotropic | full (npt).
    ``traj`` (extended XYZ) and ``log`` (CSV) receive a frame / line every ``interval`` steps.
    ``restart=True`` continues from the last frame of ``traj``. A guard raises :class:`MDStopped`
    after flushing what was written (see the module docstring). ``atoms`` is not modified.
    """
    ensemble = _choice("ensemble", ensemble, ENSEMBLES)
    thermostat = _choice("thermostat", thermostat, THERMOSTATS)
    npt_cell = _choice("npt_cell", npt_cell, NPT_CELL)
    temperature = _positive("temperature", temperature, "K", allow_zero=ensemble == "nve")
    timestep = _positive("timestep", timestep, "fs")
    steps = _count("steps", steps, allow_zero=True)
    interval = _count("interval", interval)
    friction = _positive("friction", friction, "1/fs", allow_zero=True)
    taut = _positive("taut", 100.0 * timestep if taut is None else taut, "fs")
    taup = _positive("taup", 1000.0 * timestep if taup is None else taup, "fs")
    min_distance = _positive("min_distance", min_distance, "Å", allow_zero=True)
    try:
        pressure = float(pressure)
    except (TypeError, ValueError):
        pressure = float("nan")
    if not math.isfinite(pressure):
        raise InputError(f"pressure must be a finite number (GPa), got {pressure!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if max_uncertainty is not None:
        max_uncertainty = _positive("max_uncertainty", max_uncertainty, "eV/Å")
        if "forces_std" not in getattr(calculator, "implemented_properties", ()):
            raise InputError("max_uncertainty needs a committee calculator (give several model files)")
    if restart and traj is None:
        raise InputError("restart needs the trajectory to continue from")
    if restart and not Path(traj).is_file():
        raise InputError("cannot restart: trajectory not found", str(traj))
    for path in (traj, log):
        if path is not None and Path(path).is_dir():
            raise InputError("is a directory, expected a file name", str(path))

    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                  info={k: v for k, v in atoms.info.items() if k in ("charge", "multiplicity")})
    if ensemble == "npt" and not atoms.pbc.all():
        raise InputError(f"npt needs a structure periodic in all three directions (pbc={atoms.pbc.tolist()})")
    first_step = 0
    if restart:
        last = read_structure(traj, index=-1, format="extxyz")
        if len(last) != len(atoms) or not np.array_equal(last.numbers, atoms.numbers):
            raise InputError("cannot restart: its last frame has other atoms than the structure", str(traj))
        if not last.has("momenta"):
            raise InputError("cannot restart: its last frame has no momenta", str(traj))
        atoms.positions, atoms.cell, atoms.pbc = last.positions, last.cell, last.pbc
        atoms.set_momenta(last.get_momenta())
        first_step = int(last.info.get("step", 0))
    rng = np.random.default_rng([int(seed), first_step])
    if not restart:
        _maxwell_boltzmann(atoms, temperature, rng)
    atoms.calc = calculator
    dynamics = _integrator(atoms, ensemble, thermostat, temperature, timestep, friction, taut, pressure, taup,
                           npt_cell, rng)

    n_atoms = len(atoms)
    t_initial = float(atoms.get_temperature()) if n_atoms else 0.0
    if max_temperature is None:
        reference = temperature if ensemble != "nve" else max(temperature, t_initial)
        max_temperature = MAX_HEAT * reference if reference > 0 else MAX_TEMPERATURE_COLD
    max_temperature = _positive("max_temperature", max_temperature, "K")

    state = _State(first_step=first_step, timestep=timestep)
    summary_of = lambda: _summary(state, atoms, ensemble, n_atoms)  # noqa: E731

    def stop(problem: str) -> MDStopped:
        summary = summary_of()
        summary["stopped"] = problem
        where = f"; {state.frames} frame(s) kept in {traj}" if traj is not None else ""
        step = first_step + state.done
        return MDStopped(f"MD stopped after {step} steps ({step * timestep:g} fs): {problem}{where}", summary)

    def check() -> dict:
        """Guards on the current state; returns the observables of the step."""
        results = atoms.calc.results
        energy = float(results.get("energy", np.nan))
        forces = results.get("forces")
        if not math.isfinite(energy) or forces is None or not np.isfinite(forces).all():
            raise stop("the energy or forces are not finite (NaN or inf); the simulation blew up "
                       "(try a smaller timestep, or check the model)")
        if not np.isfinite(atoms.positions).all() or not np.isfinite(atoms.get_momenta()).all():
            raise stop("non-finite positions or velocities; the simulation blew up (try a smaller timestep)")
        ekin = float(atoms.get_kinetic_energy())
        temp = float(atoms.get_temperature())
        if temp > max_temperature:
            raise stop(f"temperature {temp:.0f} K exceeds the limit {max_temperature:.0f} K; the simulation "
                       "ran away (try a smaller timestep)")
        if min_distance > 0 and n_atoms > 1:
            pair = _closest_pair(atoms, min_distance)
            if pair is not None:
                i, j, d = pair
                raise stop(f"atoms {i} and {j} came {d:.3g} Å apart (closer than {min_distance:g} Å); the "
                           "simulation blew up (try a smaller timestep or temperature, or check the model)")
        spread = None
        if "forces_std" in results:
            spread = float(np.max(results["forces_std"])) if n_atoms else 0.0
            state.max_forces_std = max(state.max_forces_std, spread)
            if max_uncertainty is not None and spread > max_uncertainty:
                raise stop(f"committee force uncertainty {spread:.3g} eV/Å exceeds max_uncertainty "
                           f"{max_uncertainty:g} eV/Å (the model is extrapolating)")
        return {"epot": energy, "ekin": ekin, "temperature": temp, "spread": spread}

    with ExitStack() as stack:
        writer = stack.enter_context(_Output(traj, log, append=restart, ensemble=ensemble,
                                             committee="forces_std" in getattr(calculator, "implemented_properties", ())))
        try:
            atoms.get_forces()
        except InputError as err:
            raise stop(f"the calculator refused the structure: {err.problem}") from None
        observed = check()
        state.record(observed)
        if not restart:
            state.frames += writer.write(atoms, first_step, timestep, observed)
        start = state.started = time.perf_counter()  # steps/s counts the steps, not the first evaluation
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
            observed = check()
            state.record(observed)
            if k % interval == 0 or k == steps:  # the last step too, so that a restart continues from it
                state.frames += writer.write(atoms, first_step + k, timestep, observed)
            if progress:
                bar.update(k, **_md_fields(observed))
        state.wall = time.perf_counter() - start
    summary = summary_of()
    summary["stopped"] = None
    return summary


class _State:
    """Per-step observables of one :func:`run_md` call."""

    def __init__(self, first_step: int, timestep: float):
        self.first_step, self.timestep = first_step, timestep
        self.done = 0
        self.frames = 0
        self.wall = 0.0
        self.started = time.perf_counter()
        self.epot: list[float] = []
        self.ekin: list[float] = []
        self.temperature: list[float] = []
        self.max_forces_std = 0.0

    def record(self, observed: dict) -> None:
        self.epot.append(observed["epot"])
        self.ekin.append(observed["ekin"])
        self.temperature.append(observed["temperature"])


def _summary(state: _State, atoms: Atoms, ensemble: str, n_atoms: int) -> dict:
    wall = state.wall or (time.perf_counter() - state.started)
    epot, ekin = np.array(state.epot), np.array(state.ekin)
    etot = epot + ekin
    times_ps = np.arange(len(etot)) * state.timestep * 1e-3
    drift = None
    if ensemble == "nve" and len(etot) > 2:
        drift = float(np.polyfit(times_ps, etot / max(n_atoms, 1), 1)[0])
    return {
        "steps": state.done,
        "first_step": state.first_step,
        "last_step": state.first_step + state.done,
        "time_ps": state.done * state.timestep * 1e-3,
        "frames": state.frames,
        "n_atoms": n_atoms,
        "temperature_mean": float(np.mean(state.temperature)) if state.temperature else None,
        "temperature_std": float(np.std(state.temperature)) if state.temperature else None,
        "epot_mean": float(np.mean(epot)) if len(epot) else None,
        "etot_std": float(np.std(etot)) if len(etot) else None,
        "ekin_std": float(np.std(ekin)) if len(ekin) else None,
        "etot_change": float(etot[-1] - etot[0]) if len(etot) else None,
        "energy_drift": drift,
        "steps_per_second": state.done / wall if wall > 0 else None,
        "wall_seconds": wall,
        "max_forces_std": state.max_forces_std if state.max_forces_std else None,
        "atoms": _plain_copy(atoms),
    }


def _plain_copy(atoms: Atoms) -> Atoms:
    """A copy with momenta but without calculator or constraints."""
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                info={k: v for k, v in atoms.info.items() if k in ("charge", "multiplicity")})
    out.set_momenta(atoms.get_momenta())
    return out


def _maxwell_boltzmann(atoms: Atoms, temperature: float, rng: np.random.Generator) -> None:
    """Momenta p ~ N(0, m k_B T) per Cartesian component, without net momentum (and rotation)."""
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * temperature))
    if len(atoms) > 1:
        Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            ZeroRotation(atoms)


def _integrator(atoms, ensemble, thermostat, temperature, timestep, friction, taut, pressure, taup, npt_cell, rng):
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
        from ase.md.langevin import Langevin

        if len(atoms) > 1:  # the centre of mass stays put (ASE's recommendation over fixcm=True)
            from ase.constraints import FixCom

            atoms.set_constraint(FixCom())
        return Langevin(atoms, timestep=dt, temperature_K=temperature, friction=friction / units.fs, fixcm=False,
                        rng=rng)
    if thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep=dt, temperature_K=temperature, taut=taut * units.fs, rng=rng)
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature, tdamp=taut * units.fs)


def _closest_pair(atoms: Atoms, radius: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than ``radius`` (Å), or None.

    A localframe calculator already knows it from its pair list (free); otherwise vesin is asked.
    """
    from localframe.calculator import Calculator
    from localframe.data.neighbors import neighbor_pairs

    calc = atoms.calc
    if isinstance(calc, Calculator) and calc.closest_pair is not None and radius <= calc.pair_cutoff:
        i, j, d = calc.closest_pair
        return (i, j, d) if d < radius else None
    cell = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    i, j, _, dist = neighbor_pairs(atoms.positions, cell, atoms.pbc, radius)
    if not len(dist):
        return None
    k = int(np.argmin(dist))
    return int(i[k]), int(j[k]), float(dist[k])


# ---------------------------------------------------------------------------------- output
class _Output:
    """Trajectory (extended XYZ) and CSV log, written and flushed frame by frame."""

    def __init__(self, traj, log, append: bool, ensemble: str, committee: bool):
        self.traj_path, self.log_path = traj, log
        self.append, self.npt, self.committee = append, ensemble == "npt", committee
        self.traj = self.log = None
        self.csv = None

    def __enter__(self) -> "_Output":
        if self.traj_path is not None:
            Path(self.traj_path).parent.mkdir(parents=True, exist_ok=True)
            self.traj = open(self.traj_path, "a" if self.append else "w", encoding="utf-8")
        if self.log_path is not None:
            Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
            header = not (self.append and Path(self.log_path).is_file() and Path(self.log_path).stat().st_size)
            self.log = open(self.log_path, "a" if self.append else "w", encoding="utf-8", newline="")
            self.csv = csv.writer(self.log)
            if header:
                columns = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
                if self.npt:
                    columns += ["volume_A3", "pressure_GPa"]
                if self.committee:
                    columns += ["energy_std_eV", "max_forces_std_eV_per_A"]
                self.csv.writerow(columns)
                self.log.flush()
        return self

    def __exit__(self, *exc) -> None:
        for handle in (self.traj, self.log):
            if handle is not None:
                handle.close()

    def write(self, atoms: Atoms, step: int, timestep: float, observed: dict) -> int:
        """Write one frame and one log line; returns the number of frames written (0 or 1)."""
        results = atoms.calc.results
        if self.log is not None:
            row = [step, f"{step * timestep:.6g}", f"{observed['epot']:.10g}", f"{observed['ekin']:.10g}",
                   f"{observed['epot'] + observed['ekin']:.10g}", f"{observed['temperature']:.6g}"]
            if self.npt:
                volume = atoms.get_volume()
                stress = atoms.get_stress(include_ideal_gas=True)
                row += [f"{volume:.8g}", f"{-stress[:3].mean() / units.GPa:.6g}"]
            if self.committee:
                row += [f"{results.get('energy_std', float('nan')):.6g}", f"{observed['spread']:.6g}"]
            self.csv.writerow(row)
            self.log.flush()
        if self.traj is None:
            return 0
        import ase.io
        from ase.calculators.singlepoint import SinglePointCalculator

        frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.set_momenta(atoms.get_momenta())
        frame.info.update(step=int(step), time_fs=float(step * timestep), temperature_K=float(observed["temperature"]))
        frame.info.update({k: v for k, v in atoms.info.items() if k in ("charge", "multiplicity")})
        if "energy_std" in results:
            frame.info["energy_std"] = float(results["energy_std"])
        if "forces_std" in results:
            frame.arrays["forces_std"] = np.asarray(results["forces_std"], dtype=np.float64)
        labels = {k: results[k] for k in ("energy", "forces", "stress") if k in results}
        frame.calc = SinglePointCalculator(frame, **labels)
        text = io.StringIO()
        ase.io.write(text, frame, format="extxyz")
        self.traj.write(text.getvalue())  # one write per frame: a killed run leaves whole frames
        self.traj.flush()
        return 1


def _md_fields(observed: dict) -> dict[str, str]:
    """What the progress bar shows of an MD step."""
    fields = {"T": f"{observed['temperature']:.0f} K", "Epot": f"{observed['epot']:.4f} eV",
              "Etot": f"{observed['epot'] + observed['ekin']:.4f} eV"}
    if observed.get("spread") is not None:
        fields["σF"] = f"{observed['spread']:.3f} eV/Å"
    return fields


# ---------------------------------------------------------------------------------- relax
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
    fmax = _positive("fmax", fmax, "eV/Å")
    optimizer = _choice("optimizer", optimizer, OPTIMIZERS)
    steps = _count("steps", steps, allow_zero=True)
    pressure = float(pressure)
    if not math.isfinite(pressure):
        raise InputError(f"pressure must be a finite number (GPa), got {pressure!r}")
    periodic = bool(atoms.pbc.all())
    cell = periodic if cell is None else bool(cell)
    if cell and not periodic:
        raise InputError(f"cell relaxation needs a structure periodic in all three directions (pbc={atoms.pbc.tolist()})")
    for path in (out, traj):
        if path is not None and Path(path).is_dir():
            raise InputError("is a directory, expected a file name", str(path))
    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                  info={k: v for k, v in atoms.info.items() if k in ("charge", "multiplicity")})
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


# ---------------------------------------------------------------------------------- benchmark
def water_box(repeats: int, spacing: float = 3.104) -> Atoms:
    """A periodic box of 3·repeats³ atoms: one water molecule per cubic cell of ``spacing`` Å (≈1 g/cm³)."""
    from ase.build import molecule

    water = molecule("H2O")
    water.center()
    water.positions += 0.5 * spacing - water.positions.mean(axis=0)
    water.cell = np.eye(3) * spacing
    water.pbc = True
    return water.repeat((repeats, repeats, repeats))


def benchmark_systems(
    names: Sequence[str] = ("ethanol", "aspirin", "water-1k", "water-10k"), seed: int = 0
) -> dict[str, Atoms]:
    """The benchmark structures: molecules from SMILES (RDKit + MMFF) and water boxes."""
    from localframe.reference.xtb import embed_smiles

    smiles = {"ethanol": "CCO", "aspirin": "CC(=O)Oc1ccccc1C(=O)O"}
    boxes = {"water-1k": 7, "water-10k": 15}
    out = {}
    for name in names:
        if name in smiles:
            out[name] = embed_smiles(smiles[name], seed)[0]
        elif name in boxes:
            out[name] = water_box(boxes[name])
        else:
            raise InputError(f"unknown benchmark system {name!r}; known: {', '.join([*smiles, *boxes])}")
    return out


def benchmark(
    models,
    systems: dict[str, Atoms] | Sequence[str] = ("ethanol", "aspirin", "water-1k", "water-10k"),
    steps: dict[str, int] | int = 50,
    repeats: dict[str, int] | int = 3,
    warmup: dict[str, int] | int = 5,
    variants: Sequence[tuple[bool, float]] = ((False, 0.0), (False, 1.0), (True, 0.0), (True, 1.0)),
    xtb: Sequence[str] | bool = ("ethanol", "aspirin"),
    xtb_steps: dict[str, int] | int | None = None,
    xtb_repeats: dict[str, int] | int | None = None,
    dtype: str = "float32",
    timestep: float = 0.5,
    temperature: float = 300.0,
    threads: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """MD steps per second (median of repeated runs) of NVE velocity Verlet through :func:`run_md`.

    ``models``: model file(s) or objects (a list is a committee). ``systems``: names for
    :func:`benchmark_systems` or a dict of structures. ``variants`` are (compile, skin Å) pairs of the
    localframe calculator. ``xtb`` lists the systems (True: all) also run with GFN2-xTB (tblite, one
    OpenMP thread) through the same driver and settings. ``steps``, ``repeats`` and ``warmup`` may
    be per system (dicts; missing systems get 50, 3 and 5); ``xtb_steps``/``xtb_repeats`` default to
    them, and xTB gets one warm-up step. Each timed run starts from the same structure after the
    warm-up run (compilation happens there) and counts only its steps, not the first force call;
    the runs of the localframe variants are interleaved (variant 1, 2, ..., 1, 2, ...), so that a
    change in machine load biases none of them.
    ``threads`` sets ``torch.set_num_threads`` (default: unchanged). Guards are off (benchmark
    structures and an off-domain model may heat up). Returns one row per (system, engine) with
    ``system``, ``atoms``, ``engine``, ``compile``, ``skin``, ``steps``, ``steps_per_second``
    (median), ``runs`` (each run's steps/s) and ``threads``.
    """
    import torch

    from localframe.calculator import Calculator

    threads = torch.get_num_threads() if threads is None else int(threads)
    structures = systems if isinstance(systems, dict) else benchmark_systems(systems)
    xtb_names = list(structures) if xtb is True else list(xtb or ())
    torch.set_num_threads(threads)  # explicitly, after anything that may have touched OMP_NUM_THREADS
    unguarded = {"progress": False, "max_temperature": 1e12, "min_distance": 0}

    def per(value, name: str, default: int) -> int:
        return int(value.get(name, default)) if isinstance(value, dict) else int(value)

    rows = []

    def record(name: str, atoms: Atoms, engine: str, compiled: bool, skin: float, n: int, runs: list[float]) -> None:
        row = {"system": name, "atoms": len(atoms), "engine": engine, "compile": compiled, "skin": skin,
               "steps": n, "steps_per_second": statistics.median(runs), "runs": runs,
               "threads": 1 if engine == "GFN2-xTB" else torch.get_num_threads()}
        rows.append(row)
        if progress:
            print(f"{name:>10s} {len(atoms):6d} atoms  {engine:<30s} {row['steps_per_second']:10.4g} steps/s  "
                  f"(runs {', '.join(f'{x:.4g}' for x in runs)})", flush=True)

    for name, atoms in structures.items():
        n, r, w = per(steps, name, 50), per(repeats, name, 3), per(warmup, name, 5)
        torch._dynamo.reset()  # every system compiles afresh: no cache limit can fall back to eager silently
        engines = []
        for compiled, skin in variants:
            calc = Calculator(models, dtype=dtype, skin=skin, compile=compiled)
            run_md(calc, atoms, "nve", temperature, timestep, w, **unguarded)  # warm-up; compiles
            engines.append((f"localframe {'compiled' if compiled else 'eager'}, skin {skin:g} Å", compiled, skin, calc, []))
        for k in range(r):  # interleaved: a change of machine load affects every variant alike
            for _, _, _, calc, runs in engines:
                runs.append(run_md(calc, atoms, "nve", temperature, timestep, n, seed=k, **unguarded)["steps_per_second"])
        for label, compiled, skin, _, runs in engines:
            record(name, atoms, label, compiled, skin, n, runs)
        if name in xtb_names:
            n_xtb = per(steps if xtb_steps is None else xtb_steps, name, 50)
            with _xtb_calculator(atoms) as calc:
                run_md(calc, atoms, "nve", temperature, timestep, 1, **unguarded)
                runs = [run_md(calc, atoms, "nve", temperature, timestep, n_xtb, seed=k, **unguarded)["steps_per_second"]
                        for k in range(per(repeats if xtb_repeats is None else xtb_repeats, name, 3))]
            record(name, atoms, "GFN2-xTB", False, 0.0, n_xtb, runs)
    return rows


def benchmark_neighbor_list(
    systems: dict[str, Atoms] | Sequence[str] = ("ethanol", "aspirin", "water-1k", "water-10k"),
    cutoff: float = 5.0,
    skin: float = 1.0,
    displacement: float = 0.02,
    repeats: dict[str, int] | int = 20,
    seed: int = 0,
) -> list[dict]:
    """Time of one pair-list call (ms, median): a fresh list against reuse of a skin list.

    The structures are displaced by ``displacement`` Å (normal, per component) from where the skin
    list was built, as after a few MD steps. Returns rows with ``system``, ``atoms``, ``pairs``,
    ``candidates`` (pairs within cutoff + skin), ``fresh_ms`` and ``reuse_ms``.
    """
    from localframe.inference import VerletNeighborList

    structures = systems if isinstance(systems, dict) else benchmark_systems(systems)
    rng = np.random.default_rng(seed)
    rows = []
    for name, atoms in structures.items():
        n = int(repeats.get(name, 20)) if isinstance(repeats, dict) else int(repeats)
        cell = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
        fresh, reuse = VerletNeighborList(cutoff, 0.0), VerletNeighborList(cutoff, skin)
        reuse.pairs(atoms.positions, cell, atoms.pbc)
        moved = atoms.positions + rng.normal(scale=displacement, size=atoms.positions.shape)
        times = {}
        for label, nl in (("fresh_ms", fresh), ("reuse_ms", reuse)):
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                edges, _, _ = nl.pairs(moved, cell, atoms.pbc)
                samples.append(time.perf_counter() - start)
            times[label] = 1e3 * statistics.median(samples)
        rows.append({"system": name, "atoms": len(atoms), "pairs": int(edges.shape[1]),
                     "candidates": int(reuse._edges.shape[1]), **times, "rebuilds": reuse.builds - 1})
    return rows


@contextmanager
def _xtb_calculator(atoms: Atoms) -> Iterator:
    from localframe.reference.xtb import tblite_calculator_class, tblite_threads

    TBLite = tblite_calculator_class()
    with tblite_threads():
        yield TBLite(method="GFN2-xTB", charge=int(atoms.info.get("charge", 0)), verbosity=0)


def benchmark_table(rows: list[dict]) -> str:
    """Markdown table of :func:`benchmark` rows, with each engine's ratio to GFN2-xTB and to eager/no skin."""
    lines = ["| system | atoms | engine | threads | steps timed | steps/s (median) | vs eager, no skin | vs GFN2-xTB |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        same = [r for r in rows if r["system"] == row["system"]]
        base = next((r for r in same if r["engine"] != "GFN2-xTB" and not r["compile"] and r["skin"] == 0), None)
        xtb = next((r for r in same if r["engine"] == "GFN2-xTB"), None)
        rate = row["steps_per_second"]
        vs_base = f"{rate / base['steps_per_second']:.2f}×" if base and row["engine"] != "GFN2-xTB" else ""
        vs_xtb = "1×" if row is xtb else (f"{rate / xtb['steps_per_second']:.1f}×" if xtb else "not run")
        lines.append(f"| {row['system']} | {row['atoms']} | {row['engine']} | {row['threads']} | {row['steps']} | "
                     f"{row['steps_per_second']:.3g} | {vs_base} | {vs_xtb} |")
    return "\n".join(lines)
