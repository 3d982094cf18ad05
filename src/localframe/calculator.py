"""ASE calculator for any localframe model.

    from localframe import Calculator
    atoms.calc = Calculator("model.pt")            # a model file, or a model object
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

Properties: ``energy`` and ``free_energy`` (eV, equal), ``forces`` (eV/Å), ``stress`` (eV/Å³,
ASE Voigt order xx, yy, zz, yz, xz, xy; structures periodic in all three directions only) and
``dipole`` (e·Å) with the atomic ``charges`` (e) (models with a dipole head, non-periodic
structures only; the charges sum to ``atoms.info["charge"]`` when set, else to zero).
The calculator works on its own copy of the model, in eval mode, in the requested dtype and
on the requested device.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.io import DTYPES, load_model
from localframe.models.atomistic import AtomisticModel


class Calculator(_AseCalculator):
    """``Calculator(model_or_path, device="cpu", dtype="float32")``: an ASE calculator for one model."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "dipole", "charges"]
    _DIPOLE_PROPERTIES = ("dipole", "charges")

    def __init__(self, model_or_path, device: str | torch.device = "cpu", dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if str(dtype) not in DTYPES and dtype not in DTYPES.values():
            raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.device = torch.device(device)
        if isinstance(model_or_path, (list, tuple)):
            raise InputError("a list of models (a committee) is not supported; pass one model or one model file")
        if isinstance(model_or_path, (str, os.PathLike)):
            model = load_model(model_or_path, device=self.device, dtype=self.dtype)
        elif isinstance(model_or_path, AtomisticModel):
            model = copy.deepcopy(model_or_path).to(device=self.device, dtype=self.dtype)
        else:
            raise InputError(f"expected a localframe model or a model file path, got {type(model_or_path).__name__}")
        self.model = model.eval()
        self.implemented_properties = [
            p for p in type(self).implemented_properties if p not in self._DIPOLE_PROPERTIES or self.model.has_dipole
        ]

    def check_state(self, atoms, tol=1e-15):
        """ASE's system changes, plus a change of the total charge ``atoms.info["charge"]``."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and atoms.info.get("charge") != self.atoms.info.get("charge"):
            changes.append("charge")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic, fully_periodic = bool(atoms.pbc.any()), bool(atoms.pbc.all())
        if "stress" in properties and not fully_periodic:
            raise PropertyNotImplementedError("stress is only defined for structures periodic in all three directions")
        if any(p in self._DIPOLE_PROPERTIES for p in properties) and (periodic or not self.model.has_dipole):
            raise PropertyNotImplementedError(
                "dipole and charges need a model with a dipole head and a non-periodic structure"
            )
        labels = ("charge",) if "charge" in atoms.info else ()
        batch = AtomsBatch.from_atoms(atoms, cutoff=self.model.cutoff, labels=labels, dtype=self.dtype)
        batch = batch.to(device=self.device)
        out = self.model(batch, forces=True, stress=fully_periodic, dipole=self.model.has_dipole and not periodic)
        energy = float(out["energy"].detach().sum())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = _numpy(out["forces"])
        if fully_periodic:
            s = _numpy(out["stress"])[0]
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if "dipole" in out:
            self.results["dipole"] = _numpy(out["dipole"])[0]
            self.results["charges"] = _numpy(out["charges"])


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
