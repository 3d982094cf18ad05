r"""Guards of a molecular-dynamics run: the one object that decides a simulation has blown up.

Used after every step by :func:`localframe.md.run_md` (any calculator) and by the xTB sampler
(:func:`localframe.reference.xtb.sample`). A guard that trips calls ``stop(problem)`` and raises
what it returns (an :class:`~localframe.errors.InputError`), so each driver words where it stopped.

* the energy, a force (:meth:`Guards.results`), a position or a velocity is not finite;
* the instantaneous temperature T = 2 E_kin / (N_dof k_B) (ASE's, constraints counted) exceeds
  ``max_temperature`` (K);
* two atoms are closer than ``min_distance`` (Å; 0 turns the check off). A localframe calculator
  already knows its closest pair from its pair list (no extra search); otherwise the search runs
  within ``min_distance`` only;
* ``max_uncertainty`` (eV/Å) is set and the largest per-atom committee force spread
  ``forces_std`` exceeds it.
"""

from __future__ import annotations

import math
import sys
from typing import Callable

import numpy as np
from ase import Atoms

MIN_DISTANCE = 0.5  # Å; closer atoms during MD mean the simulation has blown up
MAX_HEAT = 10.0  # the temperature bound is this many times the reference temperature
MAX_TEMPERATURE_COLD = 5000.0  # K; the bound when the reference temperature is 0 K (NVE from rest)

Stop = Callable[[str], Exception]


def temperature_bound(reference: float) -> float:
    """The default temperature bound (K): :data:`MAX_HEAT` × ``reference``, or
    :data:`MAX_TEMPERATURE_COLD` for a reference of 0 K."""
    return MAX_HEAT * reference if reference > 0 else MAX_TEMPERATURE_COLD


class Guards:
    """``Guards(max_temperature, min_distance=0.5, max_uncertainty=None, advice=...)``; ``advice``
    ends the message of a blow-up (what to try)."""

    def __init__(self, max_temperature: float, min_distance: float = MIN_DISTANCE, max_uncertainty: float | None = None,
                 advice: str = "try a smaller timestep or temperature, or check the model"):
        self.max_temperature, self.min_distance, self.max_uncertainty = max_temperature, min_distance, max_uncertainty
        self.advice = advice
        #: the largest committee force spread seen (eV/Å), the step that tripped the guard included
        self.max_spread = 0.0

    def results(self, results: dict, stop: Stop) -> None:
        """The calculator's energy and forces are there and finite."""
        energy = float(results.get("energy", np.nan))
        forces = results.get("forces")
        if not math.isfinite(energy) or forces is None or not np.isfinite(forces).all():
            raise stop("the energy or forces are not finite (NaN or inf); the simulation blew up "
                       "(try a smaller timestep, or check the model)")

    def state(self, atoms: Atoms, stop: Stop) -> float:
        """Positions, velocities, temperature and distances of ``atoms``; returns the temperature (K)."""
        if not np.isfinite(atoms.positions).all() or not np.isfinite(atoms.get_momenta()).all():
            raise stop("non-finite positions or velocities; the simulation blew up (try a smaller timestep)")
        temperature = float(atoms.get_temperature()) if len(atoms) else 0.0
        if temperature > self.max_temperature:
            raise stop(f"temperature {temperature:.0f} K exceeds the limit {self.max_temperature:.0f} K; the "
                       "simulation ran away (try a smaller timestep)")
        if self.min_distance > 0 and len(atoms) > 1:
            pair = closest_pair(atoms, self.min_distance)
            if pair is not None:
                i, j, d = pair
                raise stop(f"atoms {i} and {j} came {d:.3g} Å apart (closer than {self.min_distance:g} Å); the "
                           f"simulation blew up ({self.advice})")
        return temperature

    def spread(self, results: dict, n_atoms: int, stop: Stop) -> float | None:
        """The largest per-atom committee force spread (eV/Å), None without a committee; checked
        against ``max_uncertainty``."""
        if "forces_std" not in results:
            return None
        spread = float(np.max(results["forces_std"])) if n_atoms else 0.0
        self.max_spread = max(self.max_spread, spread)
        if self.max_uncertainty is not None and spread > self.max_uncertainty:
            raise stop(f"committee force uncertainty {spread:.3g} eV/Å exceeds max_uncertainty "
                       f"{self.max_uncertainty:g} eV/Å (the model is extrapolating)")
        return spread

    def check(self, atoms: Atoms, stop: Stop) -> dict:
        """Every guard on ``atoms`` after a step; returns the step's observables: ``epot``, ``ekin``
        (eV), ``temperature`` (K) and ``spread`` (eV/Å, None without a committee)."""
        results = atoms.calc.results
        self.results(results, stop)
        temperature = self.state(atoms, stop)
        spread = self.spread(results, len(atoms), stop)
        return {"epot": float(results["energy"]), "ekin": float(atoms.get_kinetic_energy()),
                "temperature": temperature, "spread": spread}


def closest_pair(atoms: Atoms, radius: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than ``radius`` (Å), or None: from a localframe
    calculator's own pair list when it has one that reaches ``radius``, else a search within ``radius``."""
    from localframe.data import neighbors

    calc = atoms.calc
    module = sys.modules.get("localframe.calculator")  # not loaded: not a localframe calculator (no torch import)
    if (module is not None and isinstance(calc, module.Calculator) and calc.closest_pair is not None
            and radius <= calc.pair_cutoff):
        i, j, d = calc.closest_pair
        return (i, j, d) if d < radius else None
    return neighbors.closest_pair(atoms.positions, atoms.cell.array, atoms.pbc, radius)
