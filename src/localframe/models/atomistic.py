"""AtomisticModel: a representation plus the shared heads; the object users train, save and run."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from localframe.data.batch import AtomsBatch
from localframe.heads import EnergyHead
from localframe.models.base import Representation, apply_strain, cell_volume


class AtomisticModel(nn.Module):
    """Energy, conservative forces and stress (periodic cells) from any representation.

    ``forward(batch, forces=True, stress=None)`` returns a dict with ``energy`` (B,) in eV,
    ``forces`` (N, 3) in eV/Å = −∂E/∂x, and ``stress`` (B, 3, 3) in eV/Å³ = (1/V) ∂E/∂ε when
    requested (default: when every structure in the batch is periodic in all directions).
    ``name`` and ``hparams`` rebuild the model through the registry.
    """

    def __init__(self, representation: Representation, name: str, hparams: dict[str, Any]):
        super().__init__()
        self.representation = representation
        self.name = name
        self.hparams = dict(hparams)
        self.energy_head = EnergyHead(representation.hidden_channels)

    @property
    def cutoff(self) -> float:
        return float(self.representation.cutoff)

    @property
    def symmetry(self) -> str:
        return self.representation.symmetry

    def forward(self, batch: AtomsBatch, forces: bool = True, stress: bool | None = None) -> dict[str, torch.Tensor]:
        if stress is None:
            stress = bool(batch.pbc.all()) and batch.n_structures > 0
        if stress and not bool(batch.pbc.all()):
            raise ValueError("stress requested for a batch with structures that are not periodic in all directions")
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
        scalars, _ = self.representation(batch.numbers, batch.edge_index, vectors, batch.batch, batch.n_structures)
        energy = self.energy_head(scalars, batch.numbers, batch.batch, batch.n_structures)
        out = {"energy": energy}
        if inputs:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=self.training, allow_unused=True,
            )
            if forces:
                out["forces"] = -_zeros_if_none(grads[0], inputs[0])
            if stress:
                out["stress"] = _zeros_if_none(grads[-1], inputs[-1]) / cell_volume(batch.cell).view(-1, 1, 1)
        return out


def _zeros_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad
