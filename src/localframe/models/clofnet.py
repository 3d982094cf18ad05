r"""ClofNet: message passing with a complete local frame on every edge (Du et al., ICML 2022).

Notation: centre atom i, neighbour j, r_ij = x_j − x_i (periodic image included), d_ij = |r_ij|,
u_ij = u(d_ij) the polynomial envelope (1 for the fully connected N-body graph), h_i ∈ ℝ^H.
Frames, scalarize and tensorize: :mod:`localframe.nn.frames`; n(·) its safe normalisation.

Virtual coordinates. Every atom carries a virtual displacement Δx̃_i (Δx̃⁰ = 0); the model sees
virtual relative vectors r̃_ij = r_ij + Δx̃_j − Δx̃_i (the image shift stays inside r_ij), so
x̃_i = x_i + Δx̃_i starts at the real geometry and is updated by every layer, as in the paper.

1. Complete local frame of an edge from (virtual) relative vectors, recomputed in every layer:

       m_i  = Σ_j u_ij r̃_ij / (1 + Σ_j u_ij)                    (local centroid, relative to x̃_i)
       F_ij = [e₁; e₂; e₃],  e₁ = n(r̃_ij),  e₂ = n(r̃_ij × (m_i + m_j)),  e₃ = e₁ × e₂

   The paper crosses globally centred positions, x̄_i × x̄_j. On a fully connected graph with
   u = 1, m_i = −x̄_i and r_ij × (m_i + m_j) = 2 x̄_i × x̄_j: the same frame, without centring.

2. Edge features from the scalarised geometry of the input (once, as in the paper):

       g_ij = [sin²θ_ij, cos θ_ij, F_ij m_i, F_ij m_j],   cos θ_ij = n(m_i)·n(m_j)
       e_ij = MLP_e([φ(d_ij), g_ij])   ∈ ℝ^{H/2}               (φ: Bessel basis)

   (N-body: [q_i q_j, d_ij², g_ij, F_ij v_i, F_ij v_j] instead of φ; 16 numbers, as the paper.)

3. Layer ℓ = 1..L (the paper's order: message, coordinates, features):

       c̃_ij  = [F_ij Δx̃_i, F_ij Δx̃_j] / δ,  δ = 0.1 Å          (energy model; N-body: none)
       μ_ij  = MLP₃([h_i, h_j, |r̃_ij|²/r_c², e_ij, c̃_ij])          three Linear + SiLU
       α_ij  = u_ij · W₂ σ(W₁ μ_ij)  ∈ ℝ³                          (W₂ bias-free)
       Δx̃_i ← Δx̃_i + Σ_j Σ_k α_ij,k e_k,ij / (1 + Σ_j u_ij)  [+ φ_v(h_i) v_i for N-body]
       h_i   ← LayerNorm(h_i + MLP_h([h_i, Σ_j u_ij μ_ij]))

   h⁰_i = E(z_i) (N-body: Linear(|v_i|)). Every per-edge term carries u_ij, so energies, forces,
   and Δx̃ are continuous as neighbours cross the cutoff. The energy heads read h^L (invariant);
   forces are −∂E/∂x through the whole virtual-coordinate path, hence conservative.

   c̃_ij is the energy model's counterpart of the paper's velocity coefficients F_ij v_i: on a
   (nearly) complete graph the centroid coefficients on e₂ vanish (r_ij, m_i, m_j are coplanar),
   so without it an SE(3) energy would hardly tell enantiomers apart. Initialisation: the N-body
   model keeps PyTorch's default and the paper's gain 10⁻³ on W₂ (start at x̃ = x); the energy
   model starts every Linear at N(0, 1/fan_in) (:func:`localframe.nn.init.unit_variance_init`)
   and W₂ at gain 1 (``coord_gain``), so that Δx̃ is ~0.05 Å and the signals reach the energy.

Symmetry. e₂ is a pseudovector. ``symmetry="E(3)"`` (default): coefficients on e₂ pass through the
smooth even map and tensorize skips e₂, so energies are mirror-invariant (mirror images have the
same Born–Oppenheimer energy) and Δx̃ is a polar vector. ``symmetry="SE(3)"`` (the paper) keeps
the sign: chirality-aware. The representation returns (h^L, Δx̃ ⊗ h^L): v_i ∈ ℝ^{3×H} equivariant.
:class:`ClofNetDynamics` (the paper's N-body model, ``ClofNet_vel``) predicts x̃^L = x + Δx̃^L.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from localframe.models import register
from localframe.models.base import Representation
from localframe.nn import frames
from localframe.nn.chunking import Pairs, given, pairs_of
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.elements import N_ELEMENTS
from localframe.nn.init import unit_variance_init
from localframe.nn.mlp import mlp
from localframe.nn.radial import BesselBasis
from localframe.nn.scatter import gather, scatter_sum

#: Å; the energy model reads the frame coefficients of Δx̃ in this unit.
DISPLACEMENT_SCALE = 0.1


def scalarized_geometry(m: torch.Tensor, frame: torch.Tensor, edge_index: torch.Tensor, chiral: bool,
                        extra: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """g_ij (E, 8 + 6·len(extra)): pseudo-angle of m_i, m_j and the frame coefficients of m and ``extra``."""
    i, j = edge_index
    return pair_geometry([(gather(w, i), gather(w, j)) for w in (m, *extra)], frame, chiral)


def pair_geometry(ends: list[tuple[torch.Tensor, torch.Tensor]], frame: torch.Tensor, chiral: bool) -> torch.Tensor:
    """g_ij from the per-atom vectors read at both ends, ``[(m_i, m_j), (extra_i, extra_j), ...]``."""
    a, b = (frames.normalize(w, frames.FRAME_EPS) for w in ends[0])
    angle = [torch.linalg.cross(a, b).pow(2).sum(-1, keepdim=True), (a * b).sum(-1, keepdim=True)]
    coeffs = [frames.scalarize(w.unsqueeze(-1), frame, chiral).squeeze(-1) for pair in ends for w in pair]
    return torch.cat(angle + coeffs, dim=-1)



class ClofLayer(nn.Module):
    """One ClofNet layer: edge message, virtual-coordinate update in the recomputed frames, node update."""

    def __init__(self, hidden: int, edge_dim: int, chiral: bool, velocity: bool = False, displacement: bool = False,
                 coord_gain: float = 0.001):
        super().__init__()
        self.chiral, self.displacement = chiral, displacement
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden + 1 + edge_dim + (6 if displacement else 0), hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
        )
        last = nn.Linear(hidden, 3, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=coord_gain)
        self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.velocity_mlp = mlp([hidden, hidden, 1]) if velocity else None
        self.node_mlp = mlp([2 * hidden, hidden, hidden])
        self.norm = nn.LayerNorm(hidden)
        #: False: Δx̃ is left unchanged (ablation: frames and distances then stay those of the input).
        self.update_coordinates = True

    def message(self, features, centre, neighbour, length_scale: float = 1.0):
        """(Σ_k α_ij,k e_k,ij, u_ij μ_ij) (or only the latter without coordinate updates) for the pairs of
        ``features`` = (r_ij, u_ij, e_ij), with (h, Δx̃, m̃) read at both ends."""
        r, u, edge_attr = features
        (h_i, dx_i, mt_i), (h_j, dx_j, mt_j) = centre, neighbour
        rt = r + dx_j - dx_i  # virtual relative vectors r̃_ij
        frame = frames.build_frame(rt, mt_i + mt_j)
        d2 = rt.pow(2).sum(-1, keepdim=True) / length_scale**2
        inputs = [h_i, h_j, d2, edge_attr]
        if self.displacement:  # frame coefficients of Δx̃_i, Δx̃_j (the N-body model has velocities instead)
            inputs += [frames.scalarize(w.unsqueeze(-1) / DISPLACEMENT_SCALE, frame, self.chiral).squeeze(-1)
                       for w in (dx_i, dx_j)]  # dimensionless before the even map
        msg = self.edge_mlp(torch.cat(inputs, dim=-1))
        weighted = u.unsqueeze(-1) * msg
        if not self.update_coordinates:
            return (weighted,)
        alpha = u.unsqueeze(-1) * self.coord_mlp(msg)  # (E, 3) frame coefficients
        return frames.tensorize(alpha.unsqueeze(-1), frame, self.chiral).squeeze(-1), weighted

    def forward(self, h, dx, r, u, pairs: Pairs, mass, length_scale: float = 1.0, velocity=None):
        """One layer; ``r`` (E, 3) and ``u`` (E,) the pair vectors and envelopes of ``pairs`` (whose features are
        (r, u, e_ij)), ``mass`` = 1 + Σ_j u_ij (N,)."""
        i, j = pairs.edge_index
        rt = r + gather(dx, j) - gather(dx, i)  # r̃_ij, for the centroids (3 numbers per pair)
        mt = frames.neighbour_centroid(rt, u, i, h.shape[0])
        sums = pairs.sum(functools.partial(self.message, length_scale=length_scale),
                         centre=(h, dx, mt), neighbour=(h, dx, mt))
        if self.update_coordinates:
            dx = dx + sums[0] / mass.unsqueeze(-1)
            if self.velocity_mlp is not None:
                dx = dx + self.velocity_mlp(h) * velocity
        h = self.norm(h + self.node_mlp(torch.cat([h, sums[-1]], dim=-1)))
        return h, dx


@register("clofnet")
class ClofNet(Representation):
    """ClofNet energy model with virtual-coordinate updates; E(3) by default, SE(3) (the paper's) on request."""

    paper = "Du et al., SE(3) Equivariant Graph Neural Networks with Complete Local Frames, ICML 2022 (arXiv:2110.14811)"
    has_vectors = True
    #: "nbody": the paper's width and depth (nf 64, 4 layers); "cpu": a width for CPU training.
    presets = {
        "nbody": {"hidden_channels": 64, "num_layers": 4},
        "cpu": {"hidden_channels": 96, "num_layers": 3, "num_radial": 16},
    }

    def __init__(self, cutoff: float = 5.0, hidden_channels: int = 128, num_layers: int = 4, num_radial: int = 32,
                 symmetry: str = "E(3)", coord_gain: float = 1.0):
        super().__init__()
        self.cutoff = float(cutoff)
        self.hidden_channels = hidden = int(hidden_channels)
        self.symmetry = frames.check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        self.envelope = PolynomialCutoff(cutoff)
        self.radial = BesselBasis(cutoff, num_radial)
        self.embedding = nn.Embedding(N_ELEMENTS, hidden)
        edge_dim = max(hidden // 2, 1)
        self.edge_embedding = nn.Sequential(
            nn.Linear(num_radial + 8, edge_dim), nn.SiLU(), nn.Linear(edge_dim, edge_dim), nn.SiLU())
        self.layers = nn.ModuleList(ClofLayer(hidden, edge_dim, self.chiral, displacement=True, coord_gain=coord_gain)
                                    for _ in range(num_layers))
        unit_variance_init(self)
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.coord_mlp[-1].weight, gain=coord_gain)

    def geometry(self, previous, edges, centre, neighbour):
        """(r_ij, u_ij, e_ij): the pair vectors, envelopes and edge features (step 2), with m read at both ends."""
        vectors, u = edges
        m_i, m_j = centre[0], neighbour[0]
        frame = frames.build_frame(vectors, m_i + m_j)
        geometry = pair_geometry([(m_i, m_j)], frame, self.chiral)
        d = torch.linalg.vector_norm(vectors, dim=-1)
        return vectors, u, self.edge_embedding(torch.cat([self.radial(d), geometry], dim=-1))

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i = edge_index[0]
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        u = self.envelope(d)
        m = frames.neighbour_centroid(vectors, u, i, n)
        mass = 1.0 + scatter_sum(u, i, n)
        pairs = pairs_of(self, edge_index, n).features(self.geometry, edges=(vectors, u), centre=(m,), neighbour=(m,))
        h = self.embedding(numbers)
        dx = vectors.new_zeros(n, 3)
        for layer in self.layers:
            h, dx = layer(h, dx, vectors, u, pairs, mass, self.cutoff)
        return h, dx.unsqueeze(-1) * h.unsqueeze(-2)


class ClofNetDynamics(nn.Module):
    """The paper's N-body model (``ClofNet_vel``): positions, velocities and charges in, positions out.

    A thin wrapper around :class:`ClofLayer`: h⁰ = Linear(|v_i|), N-body edge features (module
    docstring, step 2), and the velocity term φ_v(h_i) v_i in every coordinate update. The graph is
    fully connected within each system (``edge_index``), u = 1, no cutoff. At nf 64 and 4 layers it
    has 160,964 trainable parameters, as the released ``ClofNet_vel`` (the paper: 161 k).
    """

    paper = ClofNet.paper

    def __init__(self, hidden_channels: int = 64, num_layers: int = 4, symmetry: str = "E(3)"):
        super().__init__()
        self.symmetry = frames.check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        hidden, edge_dim = int(hidden_channels), max(int(hidden_channels) // 2, 1)
        self.embedding = nn.Linear(1, hidden)
        self.edge_embedding = nn.Sequential(
            nn.Linear(16, edge_dim), nn.SiLU(), nn.Linear(edge_dim, edge_dim), nn.SiLU())
        self.layers = nn.ModuleList(ClofLayer(hidden, edge_dim, self.chiral, velocity=True) for _ in range(num_layers))

    def forward(self, positions, velocities, charges, edge_index):
        i, j = edge_index
        n = positions.shape[0]
        r = gather(positions, j) - gather(positions, i)
        u = r.new_ones(r.shape[0])
        m = frames.neighbour_centroid(r, u, i, n)
        geometry = scalarized_geometry(m, frames.edge_frame(r, m, edge_index), edge_index, self.chiral, (velocities,))
        qq = (gather(charges, i) * gather(charges, j)).unsqueeze(-1)
        edge_attr = self.edge_embedding(torch.cat([qq, r.pow(2).sum(-1, keepdim=True), geometry], dim=-1))
        h = self.embedding(torch.linalg.vector_norm(velocities, dim=-1, keepdim=True))
        pairs = Pairs(edge_index, n).features(given, edges=(r, u, edge_attr))
        mass = 1.0 + scatter_sum(u, i, n)
        dx = torch.zeros_like(positions)
        for layer in self.layers:
            h, dx = layer(h, dx, r, u, pairs, mass, velocity=velocities)
        return positions + dx


__all__ = ["ClofLayer", "ClofNet", "ClofNetDynamics", "scalarized_geometry"]
