r"""SchNet: continuous-filter convolutions on pair distances (invariant baseline, E(3)).

Schütt et al., "SchNet – A deep learning architecture for molecules and materials",
J. Chem. Phys. 148, 241722 (2018).

With d_ij = |r_ij|, Gaussian features g(d_ij) ∈ R^K, envelope u(d) (polynomial, p = 6) and the
shifted softplus ssp(x) = ln(½ eˣ + ½):

    h_i^0       = Embedding(z_i)
    W^l(d_ij)   = u(d_ij) · Dense(ssp(Dense(g(d_ij))))              (continuous filter, F_f)
    m_i^l       = Σ_j  W^l(d_ij) ⊙ Lin_in(h_j^l)                    (cfconv)
    h_i^{l+1}   = h_i^l + Lin_2(ssp(Lin_1(m_i^l)))                  (interaction block, l < L)

and the representation returns s_i = h_i^L. The envelope multiplies the final filter, so a
neighbour at the cutoff contributes nothing and energy and forces are continuous there.

Linear layers start with weights N(0, 1/fan_in) and zero biases
(:func:`localframe.nn.init.unit_variance_init`, close to the Xavier initialisation of PyG's SchNet):
with PyTorch's default the validation MAE on QM9 U0 after 626 steps was 0.33 eV, with this 0.22 eV.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.chunking import Pairs, pairs_of
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.elements import N_ELEMENTS
from localframe.nn.init import unit_variance_init
from localframe.nn.radial import GaussianBasis



class ShiftedSoftplus(nn.Module):
    """ssp(x) = softplus(x) − ln 2, so that ssp(0) = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


class Interaction(nn.Module):
    def __init__(self, channels: int, filters: int, num_radial: int):
        super().__init__()
        self.filter_net = nn.Sequential(nn.Linear(num_radial, filters), ShiftedSoftplus(), nn.Linear(filters, filters))
        self.lin_in = nn.Linear(channels, filters, bias=False)
        self.update = nn.Sequential(nn.Linear(filters, channels), ShiftedSoftplus(), nn.Linear(channels, channels))

    def message(self, features, centre, neighbour):
        """W^l(d_ij) ⊙ Lin_in(h_j) for the pairs of ``features`` = (g(d_ij), u(d_ij))."""
        rbf, envelope = features
        return (self.filter_net(rbf) * envelope.unsqueeze(-1) * neighbour[0],)

    def forward(self, h: torch.Tensor, pairs: Pairs) -> torch.Tensor:
        (m,) = pairs.sum(self.message, neighbour=(self.lin_in(h),))
        return h + self.update(m)


@register("schnet")
class SchNet(Representation):
    symmetry = "E(3)"
    paper = "Schütt et al., J. Chem. Phys. 148, 241722 (2018)"
    has_vectors = False

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_channels: int = 128,
        num_filters: int | None = None,
        num_layers: int = 6,
        num_radial: int = 50,
    ):
        super().__init__()
        self.cutoff = float(cutoff)
        self.hidden_channels = int(hidden_channels)
        filters = int(num_filters or hidden_channels)
        self.embedding = nn.Embedding(N_ELEMENTS, self.hidden_channels)
        self.rbf = GaussianBasis(self.cutoff, num_radial)
        self.envelope = PolynomialCutoff(self.cutoff)
        self.interactions = nn.ModuleList(
            [Interaction(self.hidden_channels, filters, num_radial) for _ in range(num_layers)]
        )
        unit_variance_init(self)

    def geometry(self, previous, edges, centre, neighbour):
        """(g(d_ij), u(d_ij)) from the pair vectors."""
        d = edges[0].norm(dim=-1)  # pairs are never closer than 0.1 Å, so the norm is smooth
        return self.rbf(d), self.envelope(d)

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        pairs = pairs_of(self, edge_index, numbers.shape[0]).features(self.geometry, edges=(vectors,))
        h = self.embedding(numbers)
        for interaction in self.interactions:
            h = interaction(h, pairs)
        return h, None
