r"""LEFTNet: local substructure encoding (LSE) and frame transition encoding (FTE) (Du et al., NeurIPS 2023).

Notation: centre atom i, neighbour j, r_ij = x_j − x_i (periodic image included), d_ij = |r_ij|,
ê_ij = r_ij / d_ij, u_ij = u(d_ij) the polynomial envelope, φ_ij ∈ ℝ^K an exp-normal radial basis,
s_i ∈ ℝ^H invariant and v_i ∈ ℝ^{3×H} equivariant features. Frames and scalarize: see
:mod:`localframe.nn.frames`.

1. Frames from relative vectors only (no centring; smooth in the neighbour set):

       m_i = Σ_j u_ij r_ij / (1 + Σ_j u_ij),    p_i = Σ_j u_ij m_j / (1 + Σ_j u_ij)
       edge frame F_ij = [n(r_ij); n(r_ij × (m_i + m_j)); ·],   node frame F_i = [n(m_i); n(m_i × p_i); ·]

2. Radial filter and embedding:  h_ij = u_ij · MLP_r(φ_ij),   s_i = E(z_i) + Σ_j h_ij ⊙ E′(z_j),  v_i = 0.

3. LSE — the neighbourhood of each endpoint seen in the edge frame (computed once):

       S_i   = W_S Σ_j ê_ij ⊗ (h_ij ⊙ σ(W s_j + b))                  ∈ ℝ^{3×C}  (W_S: H → C channels)
       P^u   = scalarize(S_u, F_ij),  u ∈ {i, j}                      ∈ ℝ^{3×C}
       t^u_c = g(P^u_{:,c}) + P^u_{e₁,c}   (g: ℝ³ → ℝ shared over channels c)
       A_ij  = MLP_A([t^j, t^i, h_ij, φ_ij])                          ∈ ℝ^{3H}

4. Layer ℓ = 1..L, equivariant message passing (PaiNN-like) with the paper's filter
   (W_φ φ + b) ⊙ MLP_A(A), here with MLP_A shared by the layers and the envelope applied last:

       [α, β, γ]_ij = MLP_x(s_j) ⊙ u_ij (W^ℓ_φ φ_ij + b^ℓ) ⊙ A_ij
       s_i ← s_i + Σ_j α_ij,     v_i ← v_i + Σ_j (v_j ⊙ β_ij + ê_ij ⊗ γ_ij) / √3

5. FTE — the equivariant features are expressed in the node frame and the invariant coefficients
   drive the scalar update (this is the frame transition: messages gathered in the global basis are
   read in atom i's own frame):

       [U, V] = W_uv v_i  (no bias),   c_i = scalarize(U, F_i) ∈ ℝ^{3×H},   n_i = √(|U|² + ε²)
       [a₁, a₂, a₃] = MLP_u([s_i, n_i, c_i]),     q_i = ⟨U, V⟩ / √H
       s_i ← s_i + (a₁ + a₂ ⊙ q_i) / √2,           v_i ← v_i + a₃ ⊙ V

   ``fte_node_frame=False`` drops c_i from the input of MLP_u (ablation).

Symmetry. As in the paper the model is E(3)-invariant by default: coefficients on the pseudovector
axis e₂ pass through the smooth even function √(c² + ε²) − ε (not |c|, whose kink at 0 breaks smooth
forces). ``symmetry="SE(3)"`` keeps their sign and gives a chirality-aware model.

Initialisation. Every linear layer starts with weights N(0, 1/fan_in) and zero biases
(:func:`localframe.nn.init.unit_variance_init`). A message is the product of three learned factors
(neighbour MLP, radial filter, LSE feature); with PyTorch's default initialisation each shrinks the
signal and the messages start at ~1 % of s_i with v_i ≈ 0, which halves the progress of the first
epochs (QM9 U0, 626 steps: validation MAE 0.39 eV with the default, 0.20 eV with this one).

Departures from the released code: frames are local (neighbour centroids from image-corrected r_ij,
no pre-centring, no global origin), safely normalised so that degenerate frames (linear molecules,
centrosymmetric sites) give zero components and finite gradients, the final filters are enveloped
(no energy jump at r_c), and FTE really uses the node frame. No direct force head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from localframe.heads import N_ELEMENTS, columnwise, mlp
from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.frames import check_symmetry, edge_frame, local_centroids, node_frame, safe_norm, scalarize
from localframe.nn.init import unit_variance_init
from localframe.nn.radial import ExpNormalBasis
from localframe.nn.scatter import gather, scatter_sum


class LEFTLayer(nn.Module):
    """Message passing (step 4) followed by frame transition encoding (step 5)."""

    def __init__(self, hidden: int, num_radial: int, chiral: bool, fte_node_frame: bool):
        super().__init__()
        self.hidden, self.chiral, self.fte_node_frame = hidden, chiral, fte_node_frame
        self.filter = nn.Linear(num_radial, 3 * hidden)
        self.node = mlp([hidden, hidden, 3 * hidden])
        self.uv = nn.Linear(hidden, 2 * hidden, bias=False)
        self.update = mlp([(5 if fte_node_frame else 2) * hidden, hidden, 3 * hidden])

    def forward(self, s, v, edge_feat, phi, unit, u, node_fr, edge_index):
        i, j = edge_index
        n, h = s.shape
        # 4. message passing
        filt = self.filter(phi) * edge_feat  # edge_feat carries the envelope u_ij
        alpha, beta, gamma = (gather(self.node(s), j) * filt).split(h, dim=-1)
        s = s + scatter_sum(alpha, i, n)
        dv = unit.unsqueeze(-1) * gamma.unsqueeze(1)
        if v is None:  # first layer: v = 0, so v_j ⊙ β_ij vanishes
            v = scatter_sum(dv, i, n) / math.sqrt(3.0)
        else:
            v = v + scatter_sum(gather(v, j) * beta.unsqueeze(1) + dv, i, n) / math.sqrt(3.0)
        # 5. frame transition encoding
        U, V = self.uv(v).split(h, dim=-1)
        inputs = [s, safe_norm(U, dim=1)]
        if self.fte_node_frame:
            inputs.append(scalarize(U, node_fr, self.chiral).flatten(1))
        a1, a2, a3 = self.update(torch.cat(inputs, dim=-1)).split(h, dim=-1)
        q = (U * V).sum(dim=1) / math.sqrt(h)
        s = s + (a1 + a2 * q) / math.sqrt(2.0)
        v = v + a3.unsqueeze(1) * V
        return s, v


@register("leftnet")
class LEFTNet(Representation):
    """LEFTNet with a frame transition encoding that uses the node frame (switch: ``fte_node_frame``)."""

    paper = (
        "Du et al., A new perspective on building efficient and expressive 3D equivariant graph neural "
        "networks, NeurIPS 2023 (arXiv:2304.04757)"
    )
    has_vectors = True

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_radial: int = 32,
        lse_channels: int | None = None,
        lse_hidden: int = 8,
        symmetry: str = "E(3)",
        fte_node_frame: bool = True,
    ):
        super().__init__()
        h = self.hidden_channels = int(hidden_channels)
        self.cutoff = float(cutoff)
        self.symmetry = check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        self.fte_node_frame = bool(fte_node_frame)
        self.envelope = PolynomialCutoff(cutoff)
        self.radial = ExpNormalBasis(cutoff, num_radial)
        self.radial_mlp = mlp([num_radial, h, h])
        self.embedding = nn.Embedding(N_ELEMENTS, h)
        self.neighbour_embedding = nn.Embedding(N_ELEMENTS, h)
        c = int(lse_channels) if lse_channels else max(h // 4, 1)
        self.lse_in = nn.Linear(h, h)
        self.lse_mix = nn.Linear(h, c, bias=False)
        self.lse_g = mlp([3, lse_hidden, 1])
        self.lse_out = mlp([2 * c + h + num_radial, h, 3 * h])
        self.layers = nn.ModuleList(
            LEFTLayer(h, num_radial, self.chiral, self.fte_node_frame) for _ in range(num_layers)
        )
        unit_variance_init(self)

    def frames(self, vectors, u, edge_index, n):
        """Edge frames F_ij (E, 3, 3) and node frames F_i (N, 3, 3) (step 1)."""
        m, p = local_centroids(vectors, u, edge_index, n)
        return edge_frame(vectors, m, edge_index), node_frame(m, p)

    def substructure(self, S, frame, endpoint):
        """t^u (E, C): the LSE summary of endpoint u's neighbourhood in the edge frame (step 3)."""
        P = scalarize(gather(S, endpoint), frame, self.chiral)  # (E, 3, C)
        return columnwise(self.lse_g, P).squeeze(-2) + P[:, 0, :]

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i, j = edge_index
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        unit = vectors / d.unsqueeze(-1)
        u = self.envelope(d)
        edge_fr, node_fr = self.frames(vectors, u, edge_index, n)
        # 2. radial filter and embedding
        phi = self.radial(d)
        hij = u.unsqueeze(-1) * self.radial_mlp(phi)
        s = self.embedding(numbers) + scatter_sum(hij * gather(self.neighbour_embedding(numbers), j), i, n)
        v = None  # v = 0 before the first layer
        # 3. local substructure encoding
        w = hij * gather(torch.nn.functional.silu(self.lse_in(s)), j)
        S = scatter_sum(unit.unsqueeze(-1) * self.lse_mix(w).unsqueeze(1), i, n)  # W_S moved inside the sum (linear)
        t_i, t_j = self.substructure(S, edge_fr, i), self.substructure(S, edge_fr, j)
        edge_feat = u.unsqueeze(-1) * self.lse_out(torch.cat([t_j, t_i, hij, phi], dim=-1))
        # 4–5. layers
        for layer in self.layers:
            s, v = layer(s, v, edge_feat, phi, unit, u, node_fr, edge_index)
        return s, (v if v is not None else s.new_zeros(n, 3, self.hidden_channels))
