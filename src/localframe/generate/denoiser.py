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

Scalars s_i are invariant and v_i equivariant, so Δx rotates with the molecule and is unchanged by
a translation; the feature output is invariant.
"""

from __future__ import annotations

import torch
from torch import nn

from localframe import models
from localframe.errors import InputError
from localframe.nn.scatter import gather, scatter_mean, scatter_sum


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
        idx = torch.arange(n)
        i, j = torch.meshgrid(idx, idx, indexing="ij")
        mask = i != j
        rows.append(torch.stack([i[mask], j[mask]]) + o)
    return torch.cat(rows, dim=1) if rows else torch.zeros(2, 0, dtype=torch.long)


class Denoiser(nn.Module):
    def __init__(self, in_features: int, out_features: int, model: str = "egnn", hparams: dict | None = None):
        super().__init__()
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
            setattr(self.representation, name, _InjectedEmbedding(in_features + 1, dim))
        self.slots = slots
        f = self.representation.scalar_channels or self.representation.hidden_channels
        self.coord_net = nn.Sequential(nn.Linear(2 * f + 1, f), nn.SiLU(), nn.Linear(f, 1))
        self.vector_out = nn.Linear(self.representation.hidden_channels, 1, bias=False) if cls.has_vectors else None
        self.feature_net = nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, out_features))

    def forward(self, x: torch.Tensor, h: torch.Tensor, t: torch.Tensor, batch: torch.Tensor):
        """x (N, 3), h (N, in_features), t (B,) in [0, 1], batch (N,) → (Δx (N, 3) zero-mean per molecule, (N, out))."""
        n_mol = int(batch.max()) + 1 if len(batch) else 0
        inputs = torch.cat([h, t[batch].unsqueeze(-1).to(h.dtype)], dim=-1)
        for name in self.slots:
            getattr(self.representation, name).features = inputs
        edges = full_graph(batch)
        i, j = edges
        vectors = gather(x, j) - gather(x, i)
        numbers = torch.zeros(len(x), dtype=torch.long)
        s, v = self.representation(numbers, edges, vectors, batch, n_mol)
        d2 = vectors.pow(2).sum(-1, keepdim=True)
        w = self.coord_net(torch.cat([gather(s, i), gather(s, j), d2], dim=-1))
        dx = scatter_sum(-vectors / (d2.sqrt() + 1.0) * w, i, len(x))
        if self.vector_out is not None and v is not None:
            dx = dx + self.vector_out(v).squeeze(-1)
        dx = dx - gather(scatter_mean(dx, batch, n_mol), batch)
        return dx, self.feature_net(s)
