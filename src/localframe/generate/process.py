"""The interface both noise processes share, and the batch they work on.

A process owns a :class:`~localframe.generate.denoiser.Denoiser` and implements

- ``loss(batch, t=None, noise=None)`` — the training loss of a :class:`Batch` (``t`` and ``noise``
  may be given, e.g. to test invariance; otherwise drawn);
- ``sample(sizes, steps, generator)`` — new molecules with the given atom counts, in ``steps`` steps.

Positions live in the zero-centre-of-mass subspace (the mean over a molecule's atoms is removed,
all atoms weighted equally, as EDM does); atom types and formal charges are categorical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from localframe.generate.molecule import Molecule
from localframe.nn.scatter import gather, scatter_mean


def remove_mean(x: torch.Tensor, batch: torch.Tensor, n_mol: int) -> torch.Tensor:
    return x - gather(scatter_mean(x, batch, n_mol), batch)


def centred_noise(shape, batch: torch.Tensor, n_mol: int, generator=None, dtype=torch.float32) -> torch.Tensor:
    """Standard Gaussian noise projected onto the zero-centre-of-mass subspace."""
    return remove_mean(torch.randn(shape, generator=generator, dtype=dtype), batch, n_mol)


@dataclass
class Batch:
    x: torch.Tensor  # (N, 3) positions, Å, zero mean per molecule
    types: torch.Tensor  # (N,) index into the process's elements
    charges: torch.Tensor  # (N,) index into the process's charges
    batch: torch.Tensor  # (N,) molecule of each atom
    n_mol: int


class Process(nn.Module):
    """Base class: the categories, the denoiser, and the conversion to molecules."""

    name = ""

    def __init__(self, network: nn.Module, elements: tuple[int, ...], charges: tuple[int, ...]):
        super().__init__()
        self.network = network
        self.elements = tuple(int(z) for z in elements)
        self.charges = tuple(int(q) for q in charges)

    @property
    def n_features(self) -> int:
        return len(self.elements) + len(self.charges)

    def make_batch(self, molecules: list[Molecule], dtype=torch.float32) -> Batch:
        z_index = {z: k for k, z in enumerate(self.elements)}
        q_index = {q: k for k, q in enumerate(self.charges)}
        x = torch.tensor(np.concatenate([m.positions for m in molecules]), dtype=dtype)
        batch = torch.repeat_interleave(torch.arange(len(molecules)), torch.tensor([len(m) for m in molecules]))
        types = torch.tensor([z_index[int(z)] for m in molecules for z in m.numbers])
        charges = torch.tensor([q_index[int(q)] for m in molecules for q in m.charges])
        return Batch(remove_mean(x, batch, len(molecules)), types, charges, batch, len(molecules))

    def to_molecules(self, x: torch.Tensor, types: torch.Tensor, charges: torch.Tensor, batch: torch.Tensor) -> list[Molecule]:
        out = []
        z = np.array(self.elements)[types.numpy()]
        q = np.array(self.charges)[charges.numpy()]
        for k in range(int(batch.max()) + 1 if len(batch) else 0):
            mask = (batch == k).numpy()
            out.append(Molecule(z[mask], x[mask].detach().double().numpy(), q[mask]))
        return out

    def loss(self, batch: Batch, t=None, noise=None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, sizes, steps: int, generator=None, dtype=torch.float32) -> list[Molecule]:
        raise NotImplementedError


def size_batch(sizes) -> tuple[torch.Tensor, int]:
    sizes = [int(n) for n in sizes]
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)), len(sizes)
