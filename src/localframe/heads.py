r"""Output heads shared by every model. Heads see per-atom features, never which model made them.

Energy:  e_i = MLP(s_i);  E = Σ_i (scale · e_i + shift + E0[z_i])
         (E0: per-element reference energies; scale, shift: from the training split)
"""

from __future__ import annotations

import torch
from torch import nn

from localframe.nn.scatter import scatter_sum

N_ELEMENTS = 119  # index = atomic number


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers with an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class EnergyHead(nn.Module):
    """Total energy as a sum of atomic terms with per-element references and a scale and shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = mlp([channels, max(channels // 2, 1), 1])
        self.register_buffer("atom_ref", torch.zeros(N_ELEMENTS))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    def atomic(self, scalars: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        e = self.net(scalars).squeeze(-1)
        return self.scale * e + self.shift + self.atom_ref[numbers]

    def forward(self, scalars: torch.Tensor, numbers: torch.Tensor, batch: torch.Tensor, n_structures: int) -> torch.Tensor:
        return scatter_sum(self.atomic(scalars, numbers), batch, n_structures)
