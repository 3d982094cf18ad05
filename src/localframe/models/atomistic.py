"""AtomisticModel: a representation plus the shared heads; the object users train, save and run.

Forces and stress are derivatives of the energy: F = −∂E/∂x, σ = (1/V) ∂E/∂ε, with the symmetric
strain ε applied to positions and cell by :func:`apply_strain` (x' = x (I + ε), cell' = cell (I + ε)).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from localframe.data.batch import AtomsBatch
from localframe.heads import DipoleHead, EnergyHead, ScalarHead, check_targets
from localframe.models.base import Representation


class AtomisticModel(nn.Module):
    """Energy, conservative forces, stress (periodic cells), dipole and scalar targets from any representation.

    ``forward(batch, forces=True, stress=None, dipole=None)`` returns a dict with

    * ``energy`` (B,) in eV;
    * ``forces`` (N, 3) in eV/Å = −∂E/∂x (when ``forces``);
    * ``stress`` (B, 3, 3) in eV/Å³ = (1/V) ∂E/∂ε (default: when every structure in the batch
      is periodic in all directions);
    * ``dipole`` (B, 3) in e·Å and the atomic ``charges`` (N,) in e, when the model has a dipole
      head (``dipole=True`` at construction) and ``dipole`` is not False. The total charge of a
      structure is ``batch.labels["charge"]`` if present, else 0. Periodic batches raise
      ``ValueError`` (a dipole is not defined there): pass ``dipole=False`` for them;
    * one (B,) tensor per configured scalar target (``targets={"gap": "mean", "U0": "sum"}``).

    ``config()`` holds everything needed to rebuild the model through the registry.
    """

    def __init__(
        self,
        representation: Representation,
        name: str,
        hparams: dict[str, Any],
        dipole: bool = False,
        targets: dict[str, str] | None = None,
    ):
        super().__init__()
        self.representation = representation
        self.name = name
        self.hparams = dict(hparams)
        self.metadata: dict[str, Any] = {}
        channels = representation.scalar_channels or representation.hidden_channels
        options = dict(representation.head_options)
        self.energy_head = EnergyHead(channels, **options)
        self.dipole_head = (
            DipoleHead(channels, bool(representation.has_vectors), representation.hidden_channels) if dipole else None
        )
        readout = options.get("readout", "mlp")
        self.target_heads = nn.ModuleDict(
            {key: ScalarHead(channels, agg, readout) for key, agg in check_targets(targets).items()}
        )

    @property
    def cutoff(self) -> float:
        return float(self.representation.cutoff)

    @property
    def symmetry(self) -> str:
        return self.representation.symmetry

    @property
    def has_dipole(self) -> bool:
        return self.dipole_head is not None

    @property
    def targets(self) -> dict[str, str]:
        return {key: head.aggregation for key, head in self.target_heads.items()}

    def config(self) -> dict[str, Any]:
        """Plain-Python description (name, hparams, dipole, targets) that rebuilds this model."""
        return {
            "name": self.name,
            "hparams": _plain(self.hparams),
            "dipole": self.has_dipole,
            "targets": self.targets,
        }

    def forward(
        self, batch: AtomsBatch, forces: bool = True, stress: bool | None = None, dipole: bool | None = None
    ) -> dict[str, torch.Tensor]:
        if stress is None:
            stress = bool(batch.pbc.all()) and batch.n_structures > 0
        if stress and not bool(batch.pbc.all()):
            raise ValueError("stress requested for a batch with structures that are not periodic in all directions")
        if dipole is None:
            dipole = self.has_dipole
        if dipole and not self.has_dipole:
            raise ValueError("dipole requested from a model built without a dipole head (create it with dipole=True)")
        if dipole and bool(batch.pbc.any()):
            raise ValueError(
                "the dipole moment is not defined for periodic structures; call the model with dipole=False "
                "for batches that contain them"
            )
        # Forces and stress are gradients: compute them even when called under torch.no_grad().
        with torch.enable_grad() if (forces or stress) else contextlib.nullcontext():
            return self._forward(batch, forces, stress, dipole)

    def _forward(self, batch: AtomsBatch, forces: bool, stress: bool, dipole: bool) -> dict[str, torch.Tensor]:
        positions = batch.positions
        inputs = []
        if forces or stress:
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        cell = batch.cell
        if stress:
            strain, positions, cell = apply_strain(batch, positions)
            inputs.append(strain)
        vectors = batch.edge_vectors(positions, cell)
        scalars, atom_vectors = self.representation(
            batch.numbers, batch.edge_index, vectors, batch.batch, batch.n_structures
        )
        energy = self.energy_head(scalars, batch.numbers, batch.batch, batch.n_structures)
        out = {"energy": energy}
        if dipole:
            out["dipole"], out["charges"] = self.dipole_head(
                scalars, atom_vectors, positions, batch.batch, batch.n_structures, batch.labels.get("charge")
            )
        for key, head in self.target_heads.items():
            out[key] = head(scalars, batch.numbers, batch.batch, batch.n_structures)
        if inputs:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=self.training, allow_unused=True,
            )
            if forces:
                out["forces"] = -_zeros_if_none(grads[0], inputs[0])
            if stress:
                out["stress"] = _zeros_if_none(grads[-1], inputs[-1]) / cell_volume(batch.cell).view(-1, 1, 1)
        return out


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, checked to hold only JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and np.ndim(value) == 0:  # numpy scalars
        return value.item()
    raise TypeError(f"hyperparameter value {value!r} of type {type(value).__name__} is not a plain JSON type")


def _zeros_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def apply_strain(batch: AtomsBatch, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions and cell under a zero symmetric strain ε (B, 3, 3) that autograd can differentiate.

    x' = x (I + ε_b), cell' = cell (I + ε_b). Returns (ε, x', cell').
    """
    strain = torch.zeros_like(batch.cell, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(1, 2))
    positions = positions + torch.einsum("na,nab->nb", positions, sym[batch.batch])
    cell = batch.cell + torch.bmm(batch.cell, sym)
    return strain, positions, cell


def cell_volume(cell: torch.Tensor) -> torch.Tensor:
    """|det(cell)| per structure, (B,)."""
    return torch.linalg.det(cell).abs()
