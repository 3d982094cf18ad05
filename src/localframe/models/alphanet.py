r"""AlphaNet: local frames with learnable frame transitions (Yin et al., 2025, arXiv:2501.07155).

Notation: centre atom i, neighbour j, r_ij = x_j − x_i (periodic image included), d_ij = |r_ij|,
ê_ij = r_ij / d_ij, u_ij = u(d_ij) the polynomial envelope, φ_ij ∈ ℝ^K a Bessel basis with trainable
frequencies, s_i ∈ ℝ^H invariant and v_i ∈ ℝ^{3×H} equivariant features; complex numbers are stored
as (re, im) pairs and n(z) = z / √(|z|² + ε²) is the safe unit-modulus map.

1. Edge frame from the envelope-weighted neighbour mean of the centre atom (image-corrected):

       m_i  = Σ_j u_ij r_ij / (1 + Σ_j u_ij)
       F_ij = [n(r_ij); n(r_ij × m_i); ·]     (r_ij × m_i = (x_i − c_i) × (x_j − c_i), c_i = x_i + m_i)

2. Embedding and LSE as in LEFTNet:  h_ij = u_ij · MLP_r(φ_ij),  s_i = LN(E z_i) + Σ_j h_ij ⊙ LN(E′ z_j),
   S_i = W_S Σ_j ê_ij ⊗ (h_ij ⊙ σ(LN(W s_j + b))) ∈ ℝ^{3×C},  t^u = [g(F_ij S_u) + (F_ij S_u)_{e₁}] / √C,
   A_ij = MLP_A([t^i, t^j, h_ij, φ_ij]) ∈ ℝ^{3H}.  Per-atom complex state q_i⁰ = n(E_q z_i) ∈ ℂ^χ.

3. Layer ℓ = 1..L:

   a. Phase rotation (learnable transition carried from the previous layer; ρ¹ = 1):
          s_i ← ρ_i ⊙ s_i          (s viewed as H/2 complex numbers)
   b. Messages:  [x, β, γ]_ij = MLP_x(LN s_j) ⊙ u_ij (W^ℓ_φ φ_ij + b^ℓ) ⊙ A_ij
   c. Edge phases:  ψ_ij = u_ij · n(W_κ x_ij) ∈ ℂ^χ
   d. Aggregate and normalise:  [Φ_i, Δs_i] = LN([Σ_j ψ_ij, Σ_j x_ij]),  s_i ← s_i + Δs_i,
          v_i ← v_i + Σ_j (v_j ⊙ β_ij + ê_ij ⊗ γ_ij) / √3
   e. Next phase:  ρ_i = exp(i W_θ Φ_i) ∈ ℂ^{H/2}
   f. State transition:  q_i[k] ← n(Σ_{h,l} K^ℓ_{hkl} s_i[h] q_i[l])   (K^ℓ complex, learned)
   g. FTE (frame-free update, L2 norms only):  [U, V] = W_uv v_i,  [a₁, a₂, a₃] = MLP([s_i, √(|U|² + ε²)]),
          s_i ← s_i + (a₁ + a₂ ⊙ ⟨U, V⟩/√H)/√2,  v_i ← v_i + a₃ ⊙ V

4. Output scalars s_i + W_q [Re q_i, Im q_i] (the shared energy head maps them to atomic energies).

Symmetry: E(3) by default (the pseudovector coefficients on e₂ go through the smooth even map
√(c² + ε²) − ε); ``symmetry="SE(3)"`` keeps their sign (chirality-aware).

What is implemented, and how it departs from the published code (and why):

* Frames use image-corrected r_ij for the neighbour mean and the cross product (the published code
  used raw positions, which breaks invariance under wrapping atoms into the cell); the mean is
  envelope-weighted, not a plain mean over a neighbour count, and the frame rows are safely
  normalised (the published b = r × m is left unnormalised) so coefficients stay O(1).
* Every per-edge message, phase and filter is multiplied by the envelope, the Bessel basis is only
  used through enveloped filters, and there is no top-k neighbour truncation: energy and forces are
  continuous at r_c (the published model jumps there).
* FTE uses L2 norms (the published L1 norm over x, y, z is not rotation invariant).
* Edge phases are the unit complex numbers n(κ) instead of angle(κ): the angle is discontinuous at
  its branch cut and undefined at κ = 0; the unit number carries the same phase smoothly.
* The complex edge convolution (a learned complex kernel mixing 16 heads with a distance-dependent
  kernel) is reduced to one complex linear map of the filtered message; the per-atom complex state
  keeps its learned bilinear transition and unit-modulus normalisation. No dropout; per-element
  energy scale/shift and references live in the shared energy head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from localframe.errors import InputError
from localframe.heads import N_ELEMENTS, columnwise, mlp
from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.frames import check_symmetry, build_frame, neighbour_centroid, normalize, safe_norm, scalarize
from localframe.nn.radial import BesselBasis
from localframe.nn.scatter import gather, scatter_sum


def rotate(s: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """ρ ⊙ s with s (N, H) read as H/2 complex numbers and ρ (N, H/2, 2) unit complex numbers."""
    a, b = s.unflatten(-1, (-1, 2)).unbind(-1)
    c, sn = rho.unbind(-1)
    return torch.stack([a * c - b * sn, a * sn + b * c], dim=-1).flatten(1)


def complex_matvec(T: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """T q for T (N, 2, χ, χ) and q (N, χ, 2), complex numbers stored as (re, im)."""
    tr, ti = T.unbind(1)
    qr, qi = q.unbind(-1)
    mv = lambda A, x: torch.einsum("nkl,nl->nk", A, x)  # noqa: E731
    return torch.stack([mv(tr, qr) - mv(ti, qi), mv(tr, qi) + mv(ti, qr)], dim=-1)


class AlphaLayer(nn.Module):
    """Steps 3a–3g."""

    def __init__(self, hidden: int, num_radial: int, phase: int):
        super().__init__()
        self.hidden, self.phase = hidden, phase
        self.norm_in = nn.LayerNorm(hidden, elementwise_affine=False)
        self.filter = nn.Linear(num_radial, 3 * hidden)
        self.node = mlp([hidden, hidden, 3 * hidden])
        self.kappa = nn.Linear(hidden, 2 * phase)
        self.norm_out = nn.LayerNorm(2 * phase + hidden)
        self.theta = nn.Linear(2 * phase, hidden // 2)
        self.transition = nn.Parameter(torch.randn(hidden, 2, phase, phase) / math.sqrt(hidden * phase))
        self.uv = nn.Linear(hidden, 2 * hidden, bias=False)
        self.update = mlp([2 * hidden, hidden, 3 * hidden])

    def forward(self, s, v, q, rho, edge_feat, phi, unit, u, edge_index):
        i, j = edge_index
        n, h = s.shape
        ue = u.unsqueeze(-1)
        if rho is not None:  # a. phase rotation from the previous layer
            s = rotate(s, rho)
        x, beta, gamma = (gather(self.node(self.norm_in(s)), j) * (self.filter(phi) * edge_feat)).split(h, dim=-1)  # b.
        psi = ue.unsqueeze(-1) * normalize(self.kappa(x).unflatten(-1, (self.phase, 2)))  # c.
        agg = self.norm_out(torch.cat([scatter_sum(psi.flatten(1), i, n), scatter_sum(x, i, n)], dim=-1))  # d.
        Phi, ds = agg.split([2 * self.phase, h], dim=-1)
        s = s + ds
        dv = gather(v, j) * beta.unsqueeze(1) + unit.unsqueeze(-1) * gamma.unsqueeze(1)
        v = v + scatter_sum(dv, i, n) / math.sqrt(3.0)
        theta = self.theta(Phi)  # e.
        rho = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
        q = normalize(complex_matvec(torch.einsum("nh,hrkl->nrkl", s, self.transition), q))  # f.
        U, V = self.uv(v).split(h, dim=-1)  # g.
        a1, a2, a3 = self.update(torch.cat([s, safe_norm(U, dim=1)], dim=-1)).split(h, dim=-1)
        s = s + (a1 + a2 * (U * V).sum(dim=1) / math.sqrt(h)) / math.sqrt(2.0)
        v = v + a3.unsqueeze(1) * V
        return s, v, q, rho


@register("alphanet")
class AlphaNet(Representation):
    """AlphaNet with smooth local frames, phase rotations and a learned per-atom complex state."""

    paper = "Yin et al., AlphaNet: Scaling Up Local-frame-based Neural Network Interatomic Potentials, 2025 (arXiv:2501.07155)"
    has_vectors = True

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_radial: int = 32,
        phase_channels: int = 16,
        lse_channels: int | None = None,
        lse_hidden: int = 8,
        symmetry: str = "E(3)",
    ):
        super().__init__()
        h = self.hidden_channels = int(hidden_channels)
        if h % 2:
            raise InputError(f"alphanet needs an even hidden_channels (complex pairs), got {h}")
        self.cutoff = float(cutoff)
        self.symmetry = check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        self.phase = int(phase_channels)
        self.envelope = PolynomialCutoff(cutoff)
        self.radial = BesselBasis(cutoff, num_radial, trainable=True)
        self.radial_mlp = mlp([num_radial, h, h])
        self.embedding = nn.Embedding(N_ELEMENTS, h)
        self.neighbour_embedding = nn.Embedding(N_ELEMENTS, h)
        self.embed_norm = nn.LayerNorm(h, elementwise_affine=False)
        self.state_embedding = nn.Embedding(N_ELEMENTS, 2 * self.phase)
        c = self.lse_channels = int(lse_channels) if lse_channels else max(h // 4, 1)
        self.lse_in = nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h))
        self.lse_mix = nn.Linear(h, c, bias=False)
        self.lse_g = mlp([3, lse_hidden, 1])
        self.lse_out = mlp([2 * c + h + num_radial, h, 3 * h])
        self.layers = nn.ModuleList(AlphaLayer(h, num_radial, self.phase) for _ in range(num_layers))
        self.state_out = nn.Linear(2 * self.phase, h, bias=False)

    def substructure(self, S, frame, endpoint):
        """t^u (E, C): endpoint u's neighbourhood summary S_u read in the edge frame (step 2)."""
        P = scalarize(gather(S, endpoint), frame, self.chiral)
        return (columnwise(self.lse_g, P).squeeze(-2) + P[:, 0, :]) / math.sqrt(self.lse_channels)

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i, j = edge_index
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        unit = vectors / d.unsqueeze(-1)
        u = self.envelope(d)
        # 1. edge frames from the image-corrected neighbour mean
        m = neighbour_centroid(vectors, u, i, n)
        frame = build_frame(vectors, gather(m, i))
        # 2. embedding, LSE, complex state
        phi = self.radial(d)
        hij = u.unsqueeze(-1) * self.radial_mlp(phi)
        neighbours = gather(self.embed_norm(self.neighbour_embedding(numbers)), j)
        s = self.embed_norm(self.embedding(numbers)) + scatter_sum(hij * neighbours, i, n)
        w = hij * gather(torch.nn.functional.silu(self.lse_in(s)), j)
        S = self.lse_mix(scatter_sum(unit.unsqueeze(-1) * w.unsqueeze(1), i, n))
        t_i, t_j = self.substructure(S, frame, i), self.substructure(S, frame, j)
        edge_feat = u.unsqueeze(-1) * self.lse_out(torch.cat([t_i, t_j, hij, phi], dim=-1))  # enveloped once
        q = normalize(self.state_embedding(numbers).unflatten(-1, (self.phase, 2)))
        v = s.new_zeros(n, 3, self.hidden_channels)
        rho = None
        # 3. layers
        for layer in self.layers:
            s, v, q, rho = layer(s, v, q, rho, edge_feat, phi, unit, u, edge_index)
        # 4. output scalars
        return s + self.state_out(q.flatten(1)), v
