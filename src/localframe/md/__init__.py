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
Defaults τ_T = 100 Δt and τ_P = 1000 Δt (ASE's recommendation). Under ``npt`` the stress is asked for
with the first evaluation, so that a :class:`localframe.Calculator` computes it with the forces: one model
call per step (``Calculator(stress_with_forces=...)``). Langevin, Bussi and Nosé–Hoover
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
``etot_std`` and ``ekin_std`` (eV), ``steps_per_second``, ``wall_seconds`` and ``cpu_seconds``
(processor time of the process over the steps; on a loaded machine the steadier cost), ``max_forces_std``
(committee) and ``atoms`` (the final structure, with momenta).

:func:`relax` minimises the energy with FIRE or BFGS, relaxing the cell too (ASE's
FrechetCellFilter at ``pressure``) for structures periodic in all three directions unless
``cell=False``.

:func:`run_replicas` runs many independent ``run_md`` trajectories (seeds seed, seed + 1, ...)
with one batched model call per step for all of them (:mod:`~localframe.md.replicas`). The MD
speed benchmark is :mod:`localframe.bench.md_speed`.

Layout: :mod:`~localframe.md.checks` (the structure file, numbers and choices),
:mod:`~localframe.md.guards` (the blow-up guards, shared with the xTB sampler),
:mod:`~localframe.md.driver` (:func:`run_md`: integrator and thermostat set-up, the loop),
:mod:`~localframe.md.output` (trajectory, CSV log, progress fields), :mod:`~localframe.md.replicas`
(lockstep replicas), :mod:`~localframe.md.relax`.
"""

from localframe.md.checks import read_structure, read_structures
from localframe.md.driver import ENSEMBLES, THERMOSTATS, MDStopped, run_md
from localframe.md.guards import Guards
from localframe.md.relax import OPTIMIZERS, relax

__all__ = ["run_md", "run_replicas", "relax", "MDStopped", "Guards", "read_structure", "read_structures", "ENSEMBLES",
           "THERMOSTATS", "OPTIMIZERS"]


def __getattr__(name: str):
    if name == "run_replicas":  # imported on first use: it needs torch, the rest of md does not
        from localframe.md.replicas import run_replicas

        return run_replicas
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
