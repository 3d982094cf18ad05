r"""Coordinate denoising: pretraining (``localframe pretrain``) and the Noisy-Nodes auxiliary loss.

Noise. Each structure's positions are displaced, x̃_i = x_i + σ ε_i with ε_i ~ N(0, I) and the
per-structure mean of ε removed (a model of relative vectors cannot see a common translation, so that part
of the noise is not predictable); σ is ``train.denoise_sigma`` (0.04 Å by default, for equilibrium
geometries such as QM9's). The neighbour pairs are those of the clean structure: a pair that enters the
cutoff under the noise is missed, but its envelope weight there is ≈ 0 (the envelope and its first
derivatives vanish at the cutoff), and no pair leaves the list.

Prediction ε̂ (N, 3) through the model's equivariant output (:class:`DenoiseHead`):

    representations with vectors:  ε̂_i = Σ_c v_{i,:,c} g_c(s_i),      g = MLP(s_i) ∈ ℝ^C (invariant gates)
    scalar-only representations:   ε̂_i = ∂Ẽ/∂x̃_i,   Ẽ = Σ_i MLP(s_i)   (the gradient of an invariant)

Both rotate and reflect with the structure (equivariant) and are unchanged by a translation.

Loss:  L_dn = (1/3N) Σ_i |ε̂_i − ε_i|²,  zero for a perfect predictor, 1 for ε̂ = 0.

Pretraining minimises L_dn alone on unlabelled structures; the Noisy-Nodes loss adds
``train.weights.denoise`` · L_dn (one extra forward pass on the noisy copy of the batch, without forces)
to the supervised loss of the clean batch. Fine-tuning from a pretrained file: :mod:`localframe.train.finetune`.
"""

from __future__ import annotations

import torch
from torch import nn

from localframe.nn.mlp import mlp
from localframe.nn.scatter import scatter_mean, scatter_sum


def noise(batch, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """ε (N, 3): standard normal with each structure's mean removed (positions get σ ε)."""
    eps = torch.randn(batch.positions.shape, dtype=batch.positions.dtype, device=batch.positions.device,
                      generator=generator)
    return eps - scatter_mean(eps, batch.batch, batch.n_structures)[batch.batch]


def denoise_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1/3N) Σ_i |ε̂_i − ε_i|²."""
    return (prediction - target).pow(2).mean()


class DenoiseHead(nn.Module):
    """The noise prediction ε̂ from a representation's output (see the module docstring)."""

    def __init__(self, representation: nn.Module):
        super().__init__()
        scalars = representation.scalar_channels or representation.hidden_channels
        self.vectors = bool(representation.has_vectors)
        out = representation.hidden_channels if self.vectors else 1
        self.net = mlp([scalars, max(scalars // 2, 1), out])

    def forward(self, representation: nn.Module, batch, positions: torch.Tensor) -> torch.Tensor:
        """ε̂ (N, 3) of ``batch`` at ``positions`` (its noisy positions)."""
        with torch.enable_grad():
            if not self.vectors and not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            edges = batch.edge_vectors(positions, batch.cell)
            s, v = representation(batch.numbers, batch.edge_index, edges, batch.batch, batch.n_structures)
            if self.vectors:
                return torch.einsum("nac,nc->na", v, self.net(s))
            energy = scatter_sum(self.net(s).squeeze(-1), batch.batch, batch.n_structures)
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
            return grad


def denoising_error(head: DenoiseHead, representation: nn.Module, batch, sigma: float) -> torch.Tensor:
    """L_dn of one noisy copy of ``batch``."""
    eps = noise(batch, sigma)
    return denoise_loss(head(representation, batch, batch.positions + sigma * eps), eps)
