"""ASE calculator for any localframe model, or a committee of models.

    from localframe import Calculator
    atoms.calc = Calculator("model.pt")                        # a model file, or a model object
    atoms.calc = Calculator(["a.pt", "b.pt", "c.pt"])          # a committee: mean and spread
    atoms.calc = Calculator("model.pt", compile=True)          # compiled: slow first call, then faster
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

Properties: ``energy`` and ``free_energy`` (eV, equal), ``forces`` (eV/Å), ``stress`` (eV/Å³,
ASE Voigt order xx, yy, zz, yz, xz, xy; structures periodic in all three directions only) and
``dipole`` (e·Å) with the atomic ``charges`` (e) (models with a dipole head, non-periodic
structures only; the charges sum to ``atoms.info["charge"]`` when set, else to zero).

A model file records the elements it was trained on; a structure with any other element raises
:class:`~localframe.errors.InputError` naming them (``allow_unseen_elements=True`` evaluates it anyway).

A committee of M models returns the mean of the members' energy, forces, stress and dipole, and
the spread across members (population standard deviation, see :mod:`localframe.inference`):

=================  ========  ======  =================================================================
result key         shape     unit    meaning
=================  ========  ======  =================================================================
``energy_std``     scalar    eV      √((1/M) Σ_m (E_m − Ē)²)
``forces_std``     (N,)      eV/Å    per atom, √((1/M) Σ_m |F_m,i − F̄_i|²)
``stress_std``     (6,)      eV/Å³   per Voigt component, when stress is computed
``energies``       (M,)      eV      the members' energies
=================  ========  ======  =================================================================

They are in ``calc.results`` after any calculation, and ``calc.get_property("forces_std", atoms)``
works as for the standard properties.

Options: ``skin`` (Å) reuses the neighbour list between calls while no atom has moved more than
skin/2 (exactly the same pairs as a fresh list; ``skin=0``, the default, builds a fresh list every
call, which with vesin on a CPU measured as fast); ``compile=True`` evaluates energy and forces of one structure through a compiled fixed graph
(:mod:`localframe.fast`; the first call compiles for about a minute, or loads the library compiled
before from the cache; later calls are several times faster; same results to round-off) and the rest through ``torch.compile``. :meth:`Calculator.evaluate_many` evaluates many
structures in batches. ``stress_with_forces`` (see :class:`Calculator`): once the stress has been asked for
a periodic structure, every later energy or forces call for the same atoms computes it in the same pass, so
that NPT dynamics and cell relaxation, which ask for forces and then stress at every step, make one model
call per step, not two. The calculator works on its own copies of the models, in eval mode, in the
requested dtype and on the requested device.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from localframe.inference import Evaluator, evaluate_many

COMMITTEE_PROPERTIES = ["energy_std", "forces_std", "stress_std", "energies"]


class Calculator(_AseCalculator):
    """``Calculator(model_or_paths, device="cpu", dtype="float32", skin=0.0, compile=False,
    allow_unseen_elements=False)``.

    ``model_or_paths``: a model, a model file, or a list of them (a committee), or an
    :class:`~localframe.inference.Evaluator` used as it is (the other options are then its own). A structure with an
    element the model was not trained on raises :class:`~localframe.errors.InputError` naming it,
    unless ``allow_unseen_elements=True`` (model files without a record of their elements are not
    checked).

    ``stress_with_forces``: when a call for a structure periodic in all three directions also computes the
    stress (the same forward and backward pass, so a later ``get_stress`` at the same positions is free):
    None (default) from the first time the stress is asked for atoms with these atomic numbers and
    periodicity on (a barostat or a cell filter asks for forces and stress at every step); True always;
    False only when asked. Non-periodic structures never compute it.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "dipole", "charges"]
    _DIPOLE_PROPERTIES = ("dipole", "charges")

    def __init__(self, model_or_path, device: str | torch.device = "cpu", dtype: str = "float32",
                 skin: float = 0.0, compile: bool = False, allow_unseen_elements: bool = False,
                 stress_with_forces: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stress_with_forces = stress_with_forces
        self._stress_asked: tuple[np.ndarray, np.ndarray] | None = None  # (numbers, pbc) stress was last asked for
        self.evaluator = model_or_path if isinstance(model_or_path, Evaluator) else Evaluator(
            model_or_path, device=device, dtype=dtype, skin=skin, compile=compile,
            allow_unseen_elements=allow_unseen_elements)
        self.dtype, self.device = self.evaluator.dtype, self.evaluator.device
        self.models = self.evaluator.models
        self.model = self.models[0]
        self.implemented_properties = [
            p for p in type(self).implemented_properties
            if p not in self._DIPOLE_PROPERTIES or self.evaluator.has_dipole
        ] + (COMMITTEE_PROPERTIES if self.committee else [])

    @property
    def committee(self) -> bool:
        """True for a committee of several models."""
        return self.evaluator.committee

    @property
    def elements(self) -> tuple[int, ...] | None:
        """Atomic numbers every model was trained on; None when not recorded or unseen elements are allowed."""
        return self.evaluator.elements

    def check_elements(self, atoms: Atoms, source: str | None = None, index: int | None = None) -> None:
        """Raise :class:`~localframe.errors.InputError` if ``atoms`` hold an element the models were not trained on."""
        self.evaluator.check_elements(atoms.numbers, source, index)

    @property
    def neighbor_builds(self) -> int:
        """How many times the neighbour list was built from scratch."""
        return self.evaluator.neighbors.builds

    @property
    def closest_pair(self) -> tuple[int, int, float] | None:
        """(i, j, distance Å) of the closest pair at the last calculation; (-1, -1, inf) if no pair
        is within :attr:`pair_cutoff`; None before the first calculation."""
        return self.evaluator.closest

    @property
    def pair_cutoff(self) -> float:
        """The radius (Å) of the pair list: the largest cutoff of the models."""
        return self.evaluator.neighbors.cutoff

    def fix_bond_graph(self, atoms: Atoms | None) -> None:
        """Models with SPE (:mod:`localframe.nn.spe`) use the covalent-radius bond graph of ``atoms`` in every
        later call instead of each call's own (MD: the first frame, which :func:`localframe.md.run_md` does),
        so the energy is smooth where a bond would be made or broken; None: each call's own graph again.
        The graph travels with this calculator's batches (``Evaluator.bonds``), so replicas that share the
        models (``localframe md --replicas``) each keep their own."""
        from localframe.nn.spe import bond_graph

        self.evaluator.bonds = None if atoms is None else bond_graph(atoms.numbers, atoms.positions)

    def check_state(self, atoms, tol=1e-15):
        """ASE's system changes (those of ``ase.calculators.calculator.compare_atoms``, found without
        its per-call cost, which is a large part of an MD step of a small molecule), plus a change
        of the total charge ``atoms.info["charge"]``."""
        changes = atoms_changes(self.atoms, atoms, tol, self.ignored_changes)
        if self.atoms is not None and atoms.info.get("charge") != self.atoms.info.get("charge"):
            changes.append("charge")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if atoms is not None and (self.atoms is None or self.check_state(atoms)):
            super().calculate(atoms, properties, system_changes)  # a copy; get_property has usually just made one
        atoms = self.atoms
        periodic, fully_periodic = bool(atoms.pbc.any()), bool(atoms.pbc.all())
        if any(p in ("stress", "stress_std") for p in properties) and not fully_periodic:
            raise PropertyNotImplementedError("stress is only defined for structures periodic in all three directions")
        if any(p in self._DIPOLE_PROPERTIES for p in properties) and (periodic or not self.evaluator.has_dipole):
            raise PropertyNotImplementedError(
                "dipole and charges need a model with a dipole head and a non-periodic structure"
            )
        want_stress = fully_periodic and self._with_stress(atoms, properties)
        out = self.evaluator(atoms, stress=want_stress, dipole=self.evaluator.has_dipole and not periodic)
        energy = float(out["energy"])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out["forces"]
        if "stress" in out:
            self.results["stress"] = _voigt(out["stress"])
        for key in ("dipole", "charges", "forces_std", "energies"):
            if key in out:
                self.results[key] = out[key]
        if "energy_std" in out:
            self.results["energy_std"] = float(out["energy_std"])
        if "stress_std" in out:
            self.results["stress_std"] = _voigt(out["stress_std"])

    def _with_stress(self, atoms: Atoms, properties) -> bool:
        """Whether this call (for a structure periodic in all three directions) computes the stress too
        (``stress_with_forces``)."""
        if any(p in ("stress", "stress_std") for p in properties):
            self._stress_asked = (atoms.numbers.copy(), atoms.pbc.copy())
            return True
        if self.stress_with_forces is not None:
            return bool(self.stress_with_forces)
        asked = self._stress_asked
        return asked is not None and np.array_equal(asked[0], atoms.numbers) and np.array_equal(asked[1], atoms.pbc)

    def evaluate_many(self, atoms_list: Iterable[Atoms], batch_size: int = 32, stress: bool | None = None) -> dict:
        """Energies (n,) eV and forces (list of (N_k, 3) eV/Å) of many structures, in batches.

        See :func:`localframe.inference.evaluate_many` for all keys (stress, committee spreads).
        """
        return evaluate_many(self.evaluator, atoms_list, batch_size=batch_size, stress=stress)


def atoms_changes(old: Atoms | None, new: Atoms, tol: float = 1e-15, ignored=()) -> list[str]:
    """The properties of ``all_changes`` that differ between ``old`` and ``new`` by more than ``tol``
    (absolute; arrays of another shape, or present in one only, differ): ASE's ``compare_atoms``."""
    if old is None:
        return list(all_changes)
    changes = [name for name, a, b in (("cell", old.cell.array, new.cell.array), ("pbc", old.pbc, new.pbc))
               if name not in ignored and not _close(a, b, tol)]
    for name in all_changes:
        if name in ("cell", "pbc") or name in ignored:
            continue
        a, b = old.arrays.get(name), new.arrays.get(name)
        if (a is None) != (b is None) or (a is not None and not _close(a, b, tol)):
            changes.append(name)
    return changes


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    if a.shape != b.shape:
        return False
    if np.array_equal(a, b):
        return True
    return a.dtype != bool and bool(np.abs(a - b).max() <= tol)


def _voigt(s: np.ndarray) -> np.ndarray:
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
