r"""Coordinate denoising: pretraining (``localframe pretrain``) and the Noisy-Nodes auxiliary loss,
plain (equilibrium structures) or force-aware (DeNS, off-equilibrium frames with forces).

Noise. A mask m_i ∈ {0, 1} picks the noised atoms: each atom with probability r = ``train.denoise_fraction``
(1 by default: all of them; DeNS's partial corruption for r < 1), at least one per structure. The noised
atoms are displaced, x̃_i = x_i + σ ε_i with ε_i = m_i z_i, z_i ~ N(0, I); in a structure whose atoms are all
noised the mean of ε is removed (a model of relative vectors cannot see a common translation, so that part
of the noise is not predictable), otherwise the atoms left in place anchor it. σ is ``train.denoise_sigma``
(0.04 Å by default, for equilibrium geometries such as QM9's). The neighbour pairs are those of the clean
structure: a pair that enters the cutoff under the noise is missed, but its envelope weight there is ≈ 0 (the
envelope and its first derivatives vanish at the cutoff), and no pair leaves the list.

Prediction ε̂ (N, 3) through the model's equivariant output (:class:`DenoiseHead`), s_i and v_i the
representation's scalars and vectors (C channels) of the noisy structure:

    representations with vectors:  ε̂_i = Σ_c v_{i,:,c} g_c(s_i),      g = MLP(s_i) ∈ ℝ^C (invariant gates)
    scalar-only representations:   ε̂_i = ∂Ẽ/∂x̃_i,   Ẽ = Σ_i MLP(s_i)   (the gradient of an invariant)

Force-aware denoising (DeNS, Liao et al. 2024; ``train.denoise_forces``). Off equilibrium the clean
structure is not a minimum, so ε is not predictable from x̃ alone; near x, σε ≈ H⁻¹ (F(x) − F(x̃)) with
H the Hessian, so the forces of the clean frame F(x) make it predictable. They are given to the noised
atoms, f̃_i = m_i F_i / σ_F (σ_F the force RMS of the training split), and enter the prediction through
invariants of f̃_i with the atom's vectors, p_{ic} = f̃_i · v_{i,:,c} and |f̃_i|:

    ε̂_i += Σ_c v_{i,:,c} w_c + f̃_i w_0,      (w, w_0) = MLP_F(s_i, p_i, |f̃_i|) ∈ ℝ^{C+1}

To first order in f̃ the first term is the learned symmetric map Σ_c a_c v_c v_cᵀ f̃_i, a local stand-in
for the H⁻¹ above built from the representation's vectors; scalar-only representations have the second
term only. Both terms rotate and reflect with the structure and the forces (equivariant) and are unchanged
by a translation. Departure from DeNS: the forces are encoded at the readout of the noised atoms, not as
an input to the message passing (a representation's input is the pair vectors only, and the fine-tuned
model has no force input), and the atoms left in place have no force target.

Loss over the noised atoms:  L_dn = Σ_i m_i |ε̂_i − ε_i|² / (3 Σ_i m_i),  zero for a perfect predictor,
1 for ε̂ = 0 (less the removed mean).

Pretraining minimises L_dn alone on unlabelled structures (with forces for DeNS); the Noisy-Nodes loss adds
``train.weights.denoise`` · L_dn (one extra forward pass on the noisy copy of the batch, without forces)
to the supervised loss of the clean batch. Fine-tuning from a pretrained file: :mod:`localframe.train.finetune`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from localframe.nn.mlp import mlp
from localframe.nn.scatter import scatter_mean, scatter_sum


def corruption_mask(batch, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """m (N,) bool: each atom with probability ``fraction``, and at least one per structure (the atom
    with the smallest draw)."""
    u = torch.rand(batch.positions.shape[0], dtype=batch.positions.dtype, device=batch.positions.device,
                   generator=generator)
    smallest = torch.full((batch.n_structures,), 2.0, dtype=u.dtype, device=u.device)
    smallest = smallest.scatter_reduce(0, batch.batch, u, reduce="amin")
    return (u < fraction) | (u == smallest[batch.batch])


def noise(batch, sigma: float, generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ε (N, 3): standard normal on the masked atoms (all by default), zero elsewhere, with the mean
    removed in each structure whose atoms are all noised (positions get σ ε)."""
    eps = torch.randn(batch.positions.shape, dtype=batch.positions.dtype, device=batch.positions.device,
                      generator=generator)
    if mask is None:
        return eps - scatter_mean(eps, batch.batch, batch.n_structures)[batch.batch]
    eps = eps * mask.unsqueeze(-1)
    whole = scatter_sum((~mask).to(eps.dtype), batch.batch, batch.n_structures) == 0
    centred = eps - scatter_mean(eps, batch.batch, batch.n_structures)[batch.batch]
    return torch.where(whole[batch.batch].unsqueeze(-1), centred, eps)


def denoise_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i m_i |ε̂_i − ε_i|² / (3 Σ_i m_i) (all atoms without a mask)."""
    if mask is None:
        return (prediction - target).pow(2).mean()
    return (prediction - target)[mask].pow(2).mean()


def force_scale(atoms) -> float:
    """σ_F: the RMS force component of ``atoms`` (ase.Atoms with a ``forces`` array), 1 if all are zero."""
    values = np.concatenate([np.asarray(a.arrays["forces"], dtype=float).reshape(-1) for a in atoms])
    rms = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
    return rms if rms > 1e-8 else 1.0


class DenoiseHead(nn.Module):
    """The noise prediction ε̂ from a model's representation (see the module docstring);
    ``force_scale`` (σ_F) makes it force-aware."""

    def __init__(self, representation: nn.Module, force_scale: float | None = None):
        super().__init__()
        scalars = representation.scalar_channels or representation.hidden_channels
        self.vectors = bool(representation.has_vectors)
        out = representation.hidden_channels if self.vectors else 1
        self.net = mlp([scalars, max(scalars // 2, 1), out])
        self.force_net = None
        if force_scale is not None:
            gates = representation.hidden_channels if self.vectors else 0
            self.force_net = mlp([scalars + gates + 1, max(scalars // 2, 1), gates + 1])
            self.register_buffer("force_scale", torch.tensor(float(force_scale)))

    def forward(self, model: nn.Module, batch, positions: torch.Tensor, forces: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂ (N, 3) of ``batch`` at ``positions`` (its noisy positions); ``forces`` (N, 3): the clean
        frame's forces on the noised atoms, zero on the others (force-aware heads only)."""
        with torch.enable_grad():
            if not self.vectors and not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            s, v = model.features(batch, positions)
            if self.vectors:
                out = torch.einsum("nac,nc->na", v, self.net(s))
            else:
                energy = scatter_sum(self.net(s).squeeze(-1), batch.batch, batch.n_structures)
                (out,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
        if self.force_net is None:
            return out
        f = forces / self.force_scale
        invariants = [s, torch.einsum("na,nac->nc", f, v)] if self.vectors else [s]
        w = self.force_net(torch.cat([*invariants, f.norm(dim=-1, keepdim=True)], dim=-1))
        out = out + f * w[:, -1:]
        return out + torch.einsum("nac,nc->na", v, w[:, :-1]) if self.vectors else out


def denoising_error(head: DenoiseHead, model: nn.Module, batch, sigma: float, fraction: float = 1.0) -> torch.Tensor:
    """L_dn of one noisy copy of ``batch`` (force-aware heads read ``batch.atom_labels["forces"]``)."""
    mask = None if fraction >= 1.0 and head.force_net is None else corruption_mask(batch, fraction)
    eps = noise(batch, sigma, mask=mask)
    forces = None
    if head.force_net is not None:
        forces = batch.atom_labels["forces"] * mask.unsqueeze(-1)
    return denoise_loss(head(model, batch, batch.positions + sigma * eps, forces), eps, mask)
