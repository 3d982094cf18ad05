r"""EGNN: E(n)-equivariant graph neural network, invariant variant for energies (E(3)).

Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021.

Features are updated from squared distances; the coordinate update of the original is left out,
since an energy only needs invariant features (forces come from its gradient). The original is
fully connected; here messages run over the cutoff graph and each one is multiplied by a smooth
envelope u(d) (polynomial, p = 6) so that energy and forces are continuous at the cutoff:

    h_i^0      = Embedding(z_i)
    m_ij       = φ_e(h_i^l, h_j^l, d_ij² / r_c²)               (MLP, SiLU after each layer)
    m_i        = Σ_j u(d_ij) · m_ij
    h_i^{l+1}  = h_i^l + φ_h(h_i^l, m_i)                       (MLP, residual)

and the representation returns s_i = h_i^L. Sums are plain (no division by neighbour counts),
so a neighbour entering the cutoff sphere changes nothing discontinuously.
"""

from __future__ import annotations

import torch
from torch import nn

from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.chunking import Pairs, pairs_of
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.elements import N_ELEMENTS



class EGNNLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.edge_net = nn.Sequential(
            nn.Linear(2 * channels + 1, channels), nn.SiLU(), nn.Linear(channels, channels), nn.SiLU()
        )
        self.node_net = nn.Sequential(nn.Linear(2 * channels, channels), nn.SiLU(), nn.Linear(channels, channels))

    def message(self, features, centre, neighbour):
        """u(d_ij) · φ_e(h_i, h_j, d_ij² / r_c²) for the pairs of ``features`` = (d²/r_c², u)."""
        scaled, envelope = features
        return (self.edge_net(torch.cat([centre[0], neighbour[0], scaled.unsqueeze(-1)], dim=-1)) * envelope.unsqueeze(-1),)

    def forward(self, h: torch.Tensor, pairs: Pairs) -> torch.Tensor:
        (m,) = pairs.sum(self.message, centre=(h,), neighbour=(h,))
        return h + self.node_net(torch.cat([h, m], dim=-1))


@register("egnn")
class EGNN(Representation):
    symmetry = "E(3)"
    paper = "Satorras, Hoogeboom, Welling, ICML 2021 (arXiv:2102.09844)"
    has_vectors = False

    def __init__(self, cutoff: float = 5.0, hidden_channels: int = 128, num_layers: int = 4):
        super().__init__()
        self.cutoff = float(cutoff)
        self.hidden_channels = int(hidden_channels)
        self.embedding = nn.Embedding(N_ELEMENTS, self.hidden_channels)
        self.envelope = PolynomialCutoff(self.cutoff)
        self.layers = nn.ModuleList([EGNNLayer(self.hidden_channels) for _ in range(num_layers)])

    def geometry(self, previous, edges, centre, neighbour):
        """(d_ij² / r_c², u(d_ij)) from the pair vectors."""
        dist2 = edges[0].pow(2).sum(dim=-1)  # smooth everywhere, no square root needed
        return dist2 / self.cutoff**2, self.envelope(dist2.sqrt())

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        pairs = pairs_of(self, edge_index, numbers.shape[0]).features(self.geometry, edges=(vectors,))
        h = self.embedding(numbers)
        for layer in self.layers:
            h = layer(h, pairs)
        return h, None
