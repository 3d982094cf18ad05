r"""ClofNet: message passing with a complete local frame on every edge (Du et al., ICML 2022).

Notation: centre atom i, neighbour j, r_ij = x_j − x_i (periodic image included), d_ij = |r_ij|,
u_ij = u(d_ij) the polynomial envelope, φ_ij ∈ ℝ^K a Bessel radial basis, s_i ∈ ℝ^H invariant
and v_i ∈ ℝ^{3×H} equivariant features. Frames, scalarize and tensorize: :mod:`localframe.nn.frames`.

1. Complete local frame per edge, from relative vectors only (no centring):

       m_i  = Σ_j u_ij r_ij / (1 + Σ_j u_ij)
       F_ij = [e₁; e₂; e₃],  e₁ = n(r_ij),  e₂ = n(e₁ × (m_i + m_j)),  e₃ = e₁ × e₂

   The paper crosses the centred positions x_i × x_j; relative to the local centroid x_i + m_i
   that cross product is r_ij × m_i, and adding m_j makes the reference symmetric in i and j.

2. Scalarization of the geometry into the frame (6 coefficients) and an edge embedding:

       g_ij = [F_ij m_i, F_ij m_j],     ε_ij = MLP_e([φ_ij, g_ij])

3. Layer ℓ = 1..L. Scalarize the neighbour vector features (after a channel mix W_v ∈ ℝ^{H×C}),
   form an invariant message, update the scalars, and tensorize the message into a vector update:

       c_ij = [F_ij W_v v_i, F_ij W_v v_j]                         ∈ ℝ^{6C}
       μ_ij = u_ij · σ(W₂ σ(W_a s_i + W_b s_j + W_c ε_ij + W_d c_ij + b))
       s_i ← s_i + MLP_h([s_i, Σ_j μ_ij])
       α_ij = W_α μ_ij ∈ ℝ^{3×C}  (no bias, so α_ij → 0 at r_c)
       v_i ← v_i + W_o Σ_j Σ_k α_ij,k ⊗ e_k,ij                    (tensorize; W_o: C → H channels)

   s⁰_i = E(z_i), v⁰_i = 0. Every per-edge term carries u_ij, so energy and forces are continuous
   when neighbours cross the cutoff.

Symmetry. e₂ is a pseudovector, so the coefficients on it are pseudoscalars: with
``symmetry="SE(3)"`` (default, as in the paper) the model distinguishes enantiomers; with
``symmetry="E(3)"`` those coefficients pass through a smooth even function and tensorize skips e₂,
which makes the model E(3)-invariant. The model returns (s, v) with v equivariant.
"""

from __future__ import annotations

import torch
from torch import nn

from localframe.heads import N_ELEMENTS, mlp
from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.frames import check_symmetry, edge_frame, neighbour_centroid, scalarize, tensorize
from localframe.nn.radial import BesselBasis
from localframe.nn.scatter import gather, scatter_sum


class FrameMessageLayer(nn.Module):
    """One ClofNet layer: scalarize → invariant message → scalar update and tensorized vector update."""

    def __init__(self, hidden: int, vector_mix: int, chiral: bool):
        super().__init__()
        self.hidden, self.chiral = hidden, chiral
        self.centre = nn.Linear(hidden, hidden)
        self.neighbour = nn.Linear(hidden, hidden, bias=False)
        self.edge = nn.Linear(hidden, hidden, bias=False)
        self.vector_mix = nn.Linear(hidden, vector_mix, bias=False)
        self.vector_coeff = nn.Linear(6 * vector_mix, hidden, bias=False)
        self.message = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.update = mlp([2 * hidden, hidden, hidden])
        self.coeff = nn.Linear(hidden, 3 * vector_mix, bias=False)
        self.vector_out = nn.Linear(vector_mix, hidden, bias=False)

    def forward(self, s, v, edge_emb, frame, u, edge_index):
        i, j = edge_index
        n = s.shape[0]
        w = self.vector_mix(v)  # (N, 3, C): a channel mix keeps equivariance
        c = torch.cat([scalarize(gather(w, i), frame, self.chiral), scalarize(gather(w, j), frame, self.chiral)], dim=-2)
        pre = gather(self.centre(s), i) + gather(self.neighbour(s), j) + self.edge(edge_emb) + self.vector_coeff(c.flatten(1))
        mu = u.unsqueeze(-1) * self.message(pre)
        s = s + self.update(torch.cat([s, scatter_sum(mu, i, n)], dim=-1))
        alpha = self.coeff(mu).unflatten(-1, (3, -1))
        v = v + self.vector_out(scatter_sum(tensorize(alpha, frame, self.chiral), i, n))
        return s, v


@register("clofnet")
class ClofNet(Representation):
    """ClofNet energy model; SE(3) and chirality-aware by default, E(3) with ``symmetry="E(3)"``."""

    paper = "Du et al., SE(3) Equivariant Graph Neural Networks with Complete Local Frames, ICML 2022 (arXiv:2110.14811)"
    has_vectors = True

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_radial: int = 32,
        vector_mix: int | None = None,
        symmetry: str = "SE(3)",
    ):
        super().__init__()
        self.cutoff = float(cutoff)
        self.hidden_channels = int(hidden_channels)
        self.symmetry = check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        mix = int(vector_mix) if vector_mix else max(self.hidden_channels // 4, 1)
        self.envelope = PolynomialCutoff(cutoff)
        self.radial = BesselBasis(cutoff, num_radial)
        self.embedding = nn.Embedding(N_ELEMENTS, self.hidden_channels)
        self.edge_embedding = mlp([num_radial + 6, self.hidden_channels, self.hidden_channels])
        self.layers = nn.ModuleList(
            FrameMessageLayer(self.hidden_channels, mix, self.chiral) for _ in range(num_layers)
        )

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i, j = edge_index
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        u = self.envelope(d)
        # 1. local frames from relative vectors
        m = neighbour_centroid(vectors, u, i, n)
        frame = edge_frame(vectors, m, edge_index)
        # 2. scalarized geometry → edge embedding
        geometry = torch.cat(
            [scalarize(gather(m, i).unsqueeze(-1), frame, self.chiral), scalarize(gather(m, j).unsqueeze(-1), frame, self.chiral)],
            dim=-2,
        ).flatten(1)
        edge_emb = self.edge_embedding(torch.cat([self.radial(d), geometry], dim=-1))
        # 3. message passing with tensorized vector updates
        s = self.embedding(numbers)
        v = s.new_zeros(n, 3, self.hidden_channels)
        for layer in self.layers:
            s, v = layer(s, v, edge_emb, frame, u, edge_index)
        return s, v
