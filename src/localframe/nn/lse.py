r"""Local substructure encoding (LSE): the neighbourhood of each endpoint of an edge, read in the edge frame.

The building block of LEFTNet (step 3) and AlphaNet (step 2). Notation as in the models: centre atom i,
neighbour j, ê_ij the unit pair vector, u_ij the envelope, h_ij ∈ ℝ^H the enveloped radial filter,
s_i ∈ ℝ^H the embedded atoms, F_ij the edge frame, scalarize of :mod:`localframe.nn.frames`, σ = SiLU:

    w_ij   = h_ij ⊙ σ(N(W s_j + b))                                   N: LayerNorm without affine, or none
    S_i    = W_S Σ_j ê_ij ⊗ w_ij                                        ∈ ℝ^{3×C}
    P^u_ij = scalarize(S_u, F_ij),  u ∈ {i, j}                          ∈ ℝ^{3×C}
    t^u_ij = c_ij (g(P^u_{:,c}) + P^u_{1,c})                            ∈ ℝ^C    (g: ℝ³ → ℝ^G → ℝ, shared over c)
    output   [t^a, t^b] ∈ ℝ^{2C},  (a, b) = (j, i) or (i, j)

W_S: H → C only when C < H (it is linear, so it acts on w_ij inside the sum); c_ij = 1, or u_ij / √H.
LEFTNet: no N, C ≤ H, c = 1, (j, i). AlphaNet: N, C = H, c = u_ij / √H, (i, j).

Computation (the same function): the edges go in chunks of about ``CHUNK_ELEMENTS`` of g's hidden
activations; g's hidden activations for all edges, (E, G, 2C), would be hundreds of MB, and tensors that
large are page-faulted in afresh by every operation, while chunks of ~8 MB are reused from the heap
(2–4× faster forward + backward on a CPU, QM9 batch, H = 128). Within a chunk g acts on the columns as
one (4, e·2C) matrix with a row of ones, so that W₁ and b₁ are one matrix product.
"""

from __future__ import annotations

import math

import torch
import torch.utils.checkpoint
from torch import nn

from localframe.errors import InputError
from localframe.nn.frames import scalarize
from localframe.nn.mlp import mlp
from localframe.nn.scatter import gather, scatter_sum

#: Elements of g's hidden activations per chunk of edges (8 MB in float32); read at every call.
CHUNK_ELEMENTS = 2**21

#: Output orders: "ji" gives [t^j, t^i] (LEFTNet), "ij" [t^i, t^j] (AlphaNet).
ORDERS = ("ji", "ij")


class LocalSubstructure(nn.Module):
    """[t^a, t^b] (E, 2C) from s (N, H), h (E, H), ê (E, 3), F (E, 3, 3), the edges and u (E,).

    ``channels``: C (default H; C < H adds W_S); ``g_hidden``: G; ``layer_norm``: N; ``envelope``: c = u/√H
    instead of 1; ``order``: "ji" or "ij"; ``chiral``: scalarize keeps the sign on e₂ (SE(3))."""

    def __init__(self, hidden: int, g_hidden: int, channels: int | None = None, chiral: bool = False,
                 layer_norm: bool = False, envelope: bool = False, order: str = "ji"):
        super().__init__()
        c = channels or hidden
        if order not in ORDERS:
            raise InputError(f"lse: order must be one of {ORDERS}, got {order!r}")
        self.chiral, self.first = chiral, ORDERS.index(order) == 0  # first: j before i
        self.channels = c
        self.input = nn.Linear(hidden, hidden)  # W, b
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False) if layer_norm else None
        self.mix = nn.Linear(hidden, c, bias=False) if c < hidden else None  # W_S
        self.g = mlp([3, g_hidden, 1])
        self.scale = 1.0 / math.sqrt(hidden) if envelope else None

    def summaries(self, s, hij, unit, edge_index):
        """S_i (N, 3, C): the neighbourhood of every atom."""
        i, j = edge_index
        return scatter_sum(self.summand(hij, unit, gather(self.neighbour_input(s), j)), i, s.shape[0])

    def neighbour_input(self, s):
        """σ(N(W s + b)) (N, H), the per-atom factor of w_ij."""
        x = self.input(s)
        return torch.nn.functional.silu(x if self.norm is None else self.norm(x))

    def summand(self, hij, unit, x_j):
        """ê_ij ⊗ W_S (h_ij ⊙ x_j) (E, 3, C): the terms of S_i (x_j: :meth:`neighbour_input` read at j)."""
        w = hij * x_j
        if self.mix is not None:
            w = self.mix(w)  # W_S moved inside the sum (linear)
        return unit.unsqueeze(-1) * w.unsqueeze(1)

    def forward(self, s, hij, unit, frame, edge_index, u):
        S = self.summaries(s, hij, unit, edge_index)
        i, j = edge_index
        return self.read(lambda rows: (gather(S, i[rows]), gather(S, j[rows])), frame, u)

    def read(self, ends, frame, u, recompute: bool = False):
        """[t^a, t^b] (E, 2C) for the pairs of ``frame`` (E, 3, 3) and ``u`` (E,); ``ends(rows)`` gives
        (S_i, S_j) of those rows (a slice of the pairs): S read at the centre and at the neighbour.

        ``recompute``: each chunk of edges through ``torch.utils.checkpoint`` when autograd records, so
        that a backward pass keeps only the chunk's inputs and output, not g's (e, G, 2C) activations
        of every chunk (G = 32, C = 128: 16,384 floats, 64 KiB in float32, per edge)."""
        c = None if self.scale is None else (u * self.scale).unsqueeze(-1)
        size = max(32, CHUNK_ELEMENTS // (self.g[0].out_features * 2 * self.channels))
        lean = recompute and torch.is_grad_enabled()
        out = []
        for k in range(0, max(frame.shape[0], 1), size):  # one (empty) chunk when there are no edges
            rows = slice(k, k + size)
            pieces = (*ends(rows), frame[rows])
            t = torch.utils.checkpoint.checkpoint(self.encode, *pieces, use_reentrant=False) if lean \
                else self.encode(*pieces)
            out.append(t if c is None else t * c[rows])
        return torch.cat(out) if len(out) > 1 else out[0]

    def encode(self, S_i, S_j, frame):
        """[g(P^a) + P^a_1, g(P^b) + P^b_1] (e, 2C) from S at both ends (e, 3, C) and the edge frames (e, 3, 3)."""
        P = scalarize(torch.cat([S_j, S_i] if self.first else [S_i, S_j], dim=-1), frame, self.chiral)
        return self.columns(P) + P[:, 0, :]  # (e, 3, 2C) -> (e, 2C)

    def columns(self, P):
        """g (3 → G → 1) on every column of P (e, 3, C), (e, C): the columns as one (4, e·C) matrix with a row
        of ones, so that W₁ and b₁ are one matrix product and the (G, e·C) activations stay contiguous."""
        first, last = self.g[0], self.g[-1]
        e, a, c = P.shape
        X = torch.cat([P, P.new_ones(e, 1, c)], dim=1).transpose(0, 1).reshape(a + 1, e * c)
        hidden = self.g[1](torch.cat([first.weight, first.bias.unsqueeze(-1)], dim=1) @ X)
        return torch.addmm(last.bias.unsqueeze(-1), last.weight, hidden).view(e, c)
