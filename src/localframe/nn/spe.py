r"""SPE: stable and expressive positional encodings of the 2D bond graph (Huang et al., ICLR 2024).

Bond graph. Atoms i, j are bonded when d_ij < ``BOND_FACTOR`` · (r_i + r_j), r the covalent radii of
ASE (Cordero et al. 2008), ``BOND_FACTOR`` = 1.2 (the common 20 % tolerance; on 3,000 random QM9 molecules every graph
is connected and every H has one bond, and 1.5 % have an atom with more bonds than its valence, close
contacts in strained rings). The
graph is computed from the positions without gradient: the encoding is a fixed, invariant input of a
structure (it does not change the forces, which stay −∂E/∂x at a fixed graph), and it changes only when
a bond is made or broken (see :meth:`localframe.models.AtomisticModel.fix_bond_graph` for MD).

Encoding (the paper's definitions; its code calls φ ``psi`` and ρ ``phi``). With the symmetric-normalised
Laplacian L = I − D^{−1/2} A D^{−1/2} = V Λ Vᵀ (an isolated atom: its row of L is that of I), keep the d
smallest eigenpairs (zero-padded when n < d: λ = 0 and zero columns, which contribute nothing), and

    W_ℓ = V diag(φ_ℓ(λ)) Vᵀ ∈ ℝ^{n×n},   ℓ = 1 … m,    φ_ℓ(λ)_k = MLP_ℓ(λ_k)  (1 → 16 → 16 → 1, ReLU)
    SPE_i = Σ_j ρ(W[:, j, :])_i ∈ ℝ^p,   ρ = a GIN on the bond graph over the first index, j a set axis:
            x_i ← MLP((1 + ε) x_i + Σ_{k bonded to i} x_k)   (per layer; the last MLP maps to p)

φ is elementwise, so equal eigenvalues get equal weights and W depends only on the eigenspaces, not on
the eigenvectors chosen inside them (basis and sign invariance), and nearby eigenvalues get nearby
weights (stability under eigenvalue crossings). Departure: no BatchNorm in φ and ρ (the released code's),
so that a structure's encoding does not depend on the rest of its batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BOND_FACTOR = 1.2


def bond_graph(numbers, positions, factor: float = BOND_FACTOR) -> np.ndarray:
    """Bonded pairs (2, B) with i < j of one structure, from covalent radii (no periodic images)."""
    from ase.data import covalent_radii

    z = np.asarray(numbers, dtype=int)
    x = np.asarray(positions, dtype=float)
    r = covalent_radii[z]
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    i, j = np.nonzero(np.triu(d < factor * (r[:, None] + r[None, :]), k=1))
    return np.stack([i, j]).astype(np.int64)


def adjacency(n: int, bonds, dtype=torch.float64) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=dtype)
    bonds = torch.as_tensor(np.asarray(bonds), dtype=torch.long).reshape(2, -1)
    a[bonds[0], bonds[1]] = 1.0
    a[bonds[1], bonds[0]] = 1.0
    return a


def laplacian_eigenpairs(a: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ (d,), V (n, d)): the d smallest eigenpairs of I − D^{−1/2} A D^{−1/2}, zero-padded if n < d."""
    n = a.shape[0]
    degree = a.sum(1)
    inv = torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))
    lap = torch.eye(n, dtype=a.dtype) - inv[:, None] * a * inv[None, :]
    lam, vec = torch.linalg.eigh(lap)
    k = min(d, n)
    lam_out = torch.zeros(d, dtype=a.dtype)
    vec_out = torch.zeros(n, d, dtype=a.dtype)
    lam_out[:k], vec_out[:, :k] = lam[:k], vec[:, :k]
    return lam_out, vec_out


class SPE(nn.Module):
    """The encoding of one bond graph at a time: ``forward(λ, V, A) -> (n, p)``; :meth:`of_structure`
    computes λ, V, A from a structure's bond graph."""

    def __init__(self, eigenpairs: int = 8, maps: int = 16, channels: int = 16, layers: int = 2, hidden: int = 32):
        super().__init__()
        if min(eigenpairs, maps, channels, layers, hidden) < 1:
            from localframe.errors import InputError

            raise InputError("model.spe: eigenpairs, maps, channels, layers and hidden must be positive")
        self.eigenpairs, self.maps, self.channels = int(eigenpairs), int(maps), int(channels)
        self.phi = nn.ModuleList(nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
                                 for _ in range(self.maps))
        sizes = [self.maps] + [hidden] * (layers - 1) + [self.channels]
        self.rho = nn.ModuleList(nn.Sequential(nn.Linear(a, hidden), nn.ReLU(), nn.Linear(hidden, b))
                                 for a, b in zip(sizes[:-1], sizes[1:]))
        self.eps = nn.Parameter(torch.zeros(layers))

    def forward(self, lam: torch.Tensor, vec: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        weights = torch.cat([phi(lam.unsqueeze(-1)) for phi in self.phi], dim=-1)  # (d, m)
        w = torch.einsum("ik,km,jk->ijm", vec, weights, vec)  # (n, n, m)
        x = w
        for k, mlp in enumerate(self.rho):
            x = mlp((1 + self.eps[k]) * x + torch.einsum("ik,kjc->ijc", a, x))
            if k < len(self.rho) - 1:
                x = torch.relu(x)
        return x.sum(1)  # Σ_j

    def of_structure(self, numbers, positions, bonds=None) -> torch.Tensor:
        """SPE (n, p) of one structure; ``bonds`` (2, B) default to :func:`bond_graph` of its positions."""
        dtype = self.eps.dtype
        n = len(numbers)
        if bonds is None:
            bonds = bond_graph(np.asarray(numbers), np.asarray(positions))
        a = adjacency(n, bonds, dtype)
        lam, vec = laplacian_eigenpairs(a.double(), self.eigenpairs)
        return self(lam.to(dtype), vec.to(dtype), a)
