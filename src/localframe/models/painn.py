r"""PaiNN: polarizable atom interaction network with scalar and vector features (E(3)).

Schütt, Unke, Gastegger, "Equivariant message passing for the prediction of tensorial
properties and molecular spectra", ICML 2021.

Each atom carries scalars s_i ∈ R^F and vectors v_i ∈ R^{3×F}; s_i^0 = Embedding(z_i), v_i^0 = 0.
With d_ij = |r_ij|, r̂_ij = r_ij / d_ij, Bessel features φ(d_ij), envelope u(d) (polynomial, p = 6),
‖·‖_ε = √(|·|² + ε²) a norm that is smooth at zero (ε = 0.1, see below), and ∘ the channel-wise product:

Message (per layer):
    (a_ij, b_ij, c_ij) = MLP(s_j) ∘ u(d_ij) · Lin(φ(d_ij))                 (three F-blocks)
    s_i += Σ_j a_ij
    v_i += Σ_j ( b_ij ∘ v_j + c_ij ∘ r̂_ij )
Update:
    U v_i, V v_i                                     (bias-free linear maps over channels)
    (α_i, β_i, γ_i) = MLP([s_i, ‖V v_i‖_ε])
    v_i += α_i ∘ U v_i
    s_i += β_i ∘ ⟨U v_i, V v_i⟩ + γ_i

Vectors are built from r̂_ij only, so they are polar: they rotate and mirror with the structure,
and s_i is invariant under rotations and reflections. Returns (s_i, v_i).

Departure from the reference implementation: its norm √(|v|² + 10⁻⁸) is smooth only on a scale of
10⁻⁴ in |v|. Where symmetry cancels the vector features (the carbon of CO₂, the centre of a linear
or centrosymmetric molecule) |v| grows linearly with the distortion, so that norm behaves like |v|
and the energy has a kink: at random weights, the CO₂ bending curvature at 10⁻³ rad was 4–70× its
value at 0.05 rad. ε = 0.1 (:data:`localframe.nn.frames.VECTOR_EPS`, the scale of O(1) features)
makes the norm quadratic for small vectors and linear for large ones.
"""

from __future__ import annotations

import torch
from torch import nn

from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.chunking import Pairs, pairs_of
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.elements import N_ELEMENTS
from localframe.nn.frames import safe_norm
from localframe.nn.radial import BesselBasis

class Message(nn.Module):
    def __init__(self, channels: int, num_radial: int):
        super().__init__()
        self.channels = channels
        self.scalar_net = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, 3 * channels))
        self.filter = nn.Linear(num_radial, 3 * channels)

    def message(self, features, centre, neighbour):
        """(a_ij, b_ij ∘ v_j + c_ij ∘ r̂_ij) for the pairs of ``features`` = (φ, u, r̂)."""
        rbf, envelope, unit = features
        x_j, v_j = neighbour
        a, b, c = torch.split(x_j * self.filter(rbf) * envelope.unsqueeze(-1), self.channels, dim=-1)
        return a, b.unsqueeze(1) * v_j + c.unsqueeze(1) * unit.unsqueeze(-1)

    def forward(self, s, v, pairs: Pairs):
        ds, dv = pairs.sum(self.message, neighbour=(self.scalar_net(s), v))
        return s + ds, v + dv


class Update(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.lin_u = nn.Linear(channels, channels, bias=False)
        self.lin_v = nn.Linear(channels, channels, bias=False)
        self.net = nn.Sequential(nn.Linear(2 * channels, channels), nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, s, v):
        uv, vv = self.lin_u(v), self.lin_v(v)
        alpha, beta, gamma = torch.split(self.net(torch.cat([s, safe_norm(vv, dim=1)], dim=-1)), self.channels, dim=-1)
        v = v + alpha.unsqueeze(1) * uv
        s = s + beta * (uv * vv).sum(dim=1) + gamma
        return s, v


@register("painn")
class PaiNN(Representation):
    symmetry = "E(3)"
    paper = "Schütt, Unke, Gastegger, ICML 2021 (arXiv:2102.03150)"
    has_vectors = True

    def __init__(self, cutoff: float = 5.0, hidden_channels: int = 128, num_layers: int = 3, num_radial: int = 20):
        super().__init__()
        self.cutoff = float(cutoff)
        self.hidden_channels = int(hidden_channels)
        self.embedding = nn.Embedding(N_ELEMENTS, self.hidden_channels)
        self.rbf = BesselBasis(self.cutoff, num_radial)
        self.envelope = PolynomialCutoff(self.cutoff)
        self.messages = nn.ModuleList([Message(self.hidden_channels, num_radial) for _ in range(num_layers)])
        self.updates = nn.ModuleList([Update(self.hidden_channels) for _ in range(num_layers)])

    def geometry(self, previous, edges, centre, neighbour):
        """(φ(d_ij), u(d_ij), r̂_ij) from the pair vectors."""
        d = edges[0].norm(dim=-1)  # pairs are never closer than 0.1 Å, so d > 0
        return self.rbf(d), self.envelope(d), edges[0] / d.unsqueeze(-1)

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        pairs = pairs_of(self, edge_index, numbers.shape[0]).features(self.geometry, edges=(vectors,))
        s = self.embedding(numbers)
        v = s.new_zeros(s.shape[0], 3, self.hidden_channels)
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, pairs)
            s, v = update(s, v)
        return s, v
