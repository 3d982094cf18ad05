r"""Any representation of :mod:`localframe.models` as a time-conditioned, E(3)-equivariant denoiser.

The representation stays as it is in ``localframe.models``; this head wraps it:

- **Inputs.** Each ``nn.Embedding`` of the representation (its atom-type lookup, and a neighbour
  embedding where it has one) is replaced by a linear map of the continuous per-atom input
  h_i = [atom-type features, charge features, t]: noisy one-hot vectors in diffusion, the current
  one-hot state in flow matching. The representation runs on the fully connected graph of each
  molecule (pairs i ≠ j; its cutoff, default 10 Å, bounds what it sees).
- **Coordinate head** (equivariant):

      Δx_i = Σ_j (x_i − x_j) / (d_ij + 1) · φ_x(s_i, s_j, d_ij²)  +  W v_i,    Δx_i ← Δx_i − mean_i Δx_i

  the EGNN coordinate update of EDM (for every representation), plus a bias-free linear map of the
  vector features v_i (N, 3, F) → (N, 3) where the representation returns them (PaiNN, LEFTNet, …).
  The mean is removed per molecule, so the output lives in the zero-centre-of-mass subspace.
- **Feature head** (invariant): an MLP of s_i to the per-atom outputs (ε of the features, or logits).
- **Bond head** (invariant, optional: ``bond_classes`` > 0) on every unordered pair i < j of a
  molecule (:func:`pair_index`), given the pair's current bond state e_ij (one-hot):

      ℓ_ij = φ_e(s_i + s_j, s_i ⊙ s_j, RBF(d_ij), onehot(e_ij))

  symmetric in i and j by construction. The representation takes no edge input, so the bond state
  reaches it through the atoms: each atom's input gets its counts of single / double / triple
  (… every non-"none" class) bonds, Σ_j onehot(e_ij)[1:].
- **Condition** (optional: ``conditions`` > 0): a normalised molecular property c (B, C) joins
  every atom's input as c_{batch(i)}, the way EDM feeds its context; it is a scalar, so the
  outputs keep their symmetry.

Scalars s_i are invariant and v_i equivariant, so Δx rotates with the molecule and is unchanged by
a translation; the feature output is invariant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from localframe import models
from localframe.errors import InputError
from localframe.nn.mlp import mlp
from localframe.nn.radial import GaussianBasis
from localframe.nn.scatter import gather, scatter_mean, scatter_sum

BOND_RBF = (5.0, 20)  # bond head's distance basis: Gaussians on [0, 5] Å, 20 of them


class _InjectedEmbedding(nn.Module):
    """Stands in for an ``nn.Embedding``: returns a linear map of the features set before the call."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.features: torch.Tensor | None = None

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features)


def full_graph(batch: torch.Tensor) -> torch.Tensor:
    """Every ordered pair (i, j), i ≠ j, within each molecule; ``batch`` sorted."""
    counts = torch.bincount(batch)
    offsets = torch.cumsum(counts, 0) - counts
    rows = []
    for n, o in zip(counts.tolist(), offsets.tolist()):
        idx = torch.arange(n, device=batch.device)
        i, j = torch.meshgrid(idx, idx, indexing="ij")
        mask = i != j
        rows.append(torch.stack([i[mask], j[mask]]) + o)
    return torch.cat(rows, dim=1) if rows else torch.zeros(2, 0, dtype=torch.long, device=batch.device)


def pair_index(batch: torch.Tensor) -> torch.Tensor:
    """Every unordered pair (i, j), i < j, within each molecule, sorted by (i, j): (2, P)."""
    edges = full_graph(batch)
    return edges[:, edges[0] < edges[1]]


class Denoiser(nn.Module):
    def __init__(self, in_features: int, out_features: int, model: str = "egnn", hparams: dict | None = None,
                 bond_classes: int = 0, conditions: int = 0):
        super().__init__()
        self.bond_classes, self.conditions = int(bond_classes), int(conditions)
        extra = 1 + max(self.bond_classes - 1, 0) + self.conditions  # t, bond counts, condition
        hparams = {"cutoff": 10.0, **(hparams or {})}
        cls = models.representation_class(model)
        try:
            self.representation = cls(**hparams)
        except TypeError as err:
            raise InputError(f"model {model!r}: {err}") from None
        slots = [name for name, child in self.representation.named_children() if isinstance(child, nn.Embedding)]
        if not slots:
            raise InputError(f"model {model!r} has no atom embedding to feed the denoiser's inputs through")
        for name in slots:
            dim = getattr(self.representation, name).embedding_dim
            setattr(self.representation, name, _InjectedEmbedding(in_features + extra, dim))
        self.slots = slots
        f = self.representation.scalar_channels or self.representation.hidden_channels
        self.coord_net = nn.Sequential(nn.Linear(2 * f + 1, f), nn.SiLU(), nn.Linear(f, 1))
        self.vector_out = nn.Linear(self.representation.hidden_channels, 1, bias=False) if cls.has_vectors else None
        self.feature_net = nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, out_features))
        if self.bond_classes:
            self.bond_rbf = GaussianBasis(*BOND_RBF)
            self.bond_net = mlp([2 * f + BOND_RBF[1] + self.bond_classes, f, f, self.bond_classes])

    def forward(self, x: torch.Tensor, h: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                bonds: torch.Tensor | None = None, condition: torch.Tensor | None = None):
        """x (N, 3), h (N, in_features), t (B,) in [0, 1], batch (N,) sorted; with a bond head ``bonds``
        (P,) the bond state of the pairs of :func:`pair_index`; with conditions ``condition`` (B, C).

        Returns (Δx (N, 3) zero-mean per molecule, (N, out)), and (P, bond_classes) bond logits
        third when the denoiser has a bond head."""
        n_mol = int(batch.max()) + 1 if len(batch) else 0
        inputs = [h, t[batch].unsqueeze(-1).to(h.dtype)]
        edges = full_graph(batch)
        pairs = edges[:, edges[0] < edges[1]]  # = pair_index(batch)
        if self.bond_classes:
            state = F.one_hot(bonds, self.bond_classes).to(h.dtype)
            counts = scatter_sum(state[:, 1:], pairs[0], len(x)) + scatter_sum(state[:, 1:], pairs[1], len(x))
            inputs.append(counts)
        if self.conditions:
            inputs.append(condition.to(h.dtype)[batch])
        inputs = torch.cat(inputs, dim=-1)
        for name in self.slots:
            getattr(self.representation, name).features = inputs
        i, j = edges
        vectors = gather(x, j) - gather(x, i)
        numbers = torch.zeros(len(x), dtype=torch.long, device=x.device)
        s, v = self.representation(numbers, edges, vectors, batch, n_mol)
        d2 = vectors.pow(2).sum(-1, keepdim=True)
        w = self.coord_net(torch.cat([gather(s, i), gather(s, j), d2], dim=-1))
        dx = scatter_sum(-vectors / (d2.sqrt() + 1.0) * w, i, len(x))
        if self.vector_out is not None and v is not None:
            dx = dx + self.vector_out(v).squeeze(-1)
        dx = dx - gather(scatter_mean(dx, batch, n_mol), batch)
        if not self.bond_classes:
            return dx, self.feature_net(s)
        return dx, self.feature_net(s), self.bond_logits(s, x, pairs, state)

    def bond_logits(self, s: torch.Tensor, x: torch.Tensor, pairs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """φ_e(s_i + s_j, s_i ⊙ s_j, RBF(d_ij), e_ij) for the pairs (2, P); symmetric in i, j."""
        si, sj = gather(s, pairs[0]), gather(s, pairs[1])
        d = (gather(x, pairs[0]) - gather(x, pairs[1])).norm(dim=-1)
        return self.bond_net(torch.cat([si + sj, si * sj, self.bond_rbf(d).to(s.dtype), state], dim=-1))
