"""The interface both noise processes share, and the batch they work on.

A process owns a :class:`~localframe.generate.denoiser.Denoiser` and implements

- ``loss(batch, t=None, noise=None)`` — the training loss of a :class:`Batch` (``t`` and ``noise``
  may be given, e.g. to test invariance; otherwise drawn);
- ``start``, ``grid``, ``step``, ``finish`` — the reverse process on a state (a dict of tensors):
  the prior draw, the time grid, one update t → s, and the final (x, types, charges, bonds);
  :meth:`Process.sample` and the guided sampler (:mod:`localframe.generate.inpaint`) both run them,
  so each update is written once;
- ``sample(sizes, steps, generator)`` — new molecules with the given atom counts, in ``steps`` steps.

Positions live in the zero-centre-of-mass subspace (the mean over a molecule's atoms is removed,
all atoms weighted equally, as EDM does); atom types and formal charges are categorical.

Optional, per process: **bonds** — the Kekulé bond order of every unordered atom pair i < j of a
molecule, one of :data:`BOND_ORDERS` (0 = no bond, 1, 2, 3; aromatic bonds are kekulised, as the
data and the corrected valency table are), on the pairs of
:func:`~localframe.generate.denoiser.pair_index`; **conditions** — molecular properties (e.g.
QM9's ``alpha``) read from ``Molecule.info["properties"]`` and normalised,
c̃ = (c − mean) / std, with the training set's mean and std (buffers of the process).
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


def _source(generator) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def randn(shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Random draws follow one rule: they are made on the generator's device (CPU for the global generator
    and for the ``torch.Generator()`` that sampling seeds), then moved to ``device``, the device of the state.
    A seed gives the same noise on every device (and on CPU the same molecules as a CPU-only run)."""
    return torch.randn(shape, generator=generator, dtype=dtype, device=_source(generator)).to(device)


def rand(shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype, device=_source(generator)).to(device)


def randint(high: int, shape, generator=None, device=None) -> torch.Tensor:
    return torch.randint(high, shape, generator=generator, device=_source(generator)).to(device)


def multinomial(probs: torch.Tensor, n: int, replacement: bool = False, generator=None) -> torch.Tensor:
    """Categorical draws from the rows of ``probs``, on the generator's device, returned on ``probs``'s."""
    return torch.multinomial(probs.to(_source(generator)), n, replacement, generator=generator).to(probs.device)


def centred_noise(shape, batch: torch.Tensor, n_mol: int, generator=None, dtype=torch.float32) -> torch.Tensor:
    """Standard Gaussian noise projected onto the zero-centre-of-mass subspace (on ``batch``'s device)."""
    return remove_mean(randn(shape, generator, dtype, batch.device), batch, n_mol)


@dataclass
class Batch:
    x: torch.Tensor  # (N, 3) positions, Å, zero mean per molecule
    types: torch.Tensor  # (N,) index into the process's elements
    charges: torch.Tensor  # (N,) index into the process's charges
    batch: torch.Tensor  # (N,) molecule of each atom
    n_mol: int
    bonds: torch.Tensor | None = None  # (P,) bond order of each pair of pair_index(batch)
    condition: torch.Tensor | None = None  # (B, C) normalised properties

    def to(self, device) -> "Batch":
        move = lambda v: None if v is None else v.to(device)  # noqa: E731
        return Batch(move(self.x), move(self.types), move(self.charges), move(self.batch), self.n_mol,
                     move(self.bonds), move(self.condition))


class Process(nn.Module):
    """Base class: the categories, the denoiser, and the conversion to molecules."""

    name = ""
    generates_bonds = False  # whether the process can co-generate bonds (``bonds=True``)

    def __init__(self, network: nn.Module, elements: tuple[int, ...], charges: tuple[int, ...],
                 bonds: bool = False, conditions: tuple[str, ...] = (), bond_weight: float = 1.0):
        super().__init__()
        from localframe.errors import InputError

        if bonds and not self.generates_bonds:
            raise InputError(f"process {self.name!r} does not generate bonds (use process: flow)")
        self.network = network
        self.elements = tuple(int(z) for z in elements)
        self.charges = tuple(int(q) for q in charges)
        self.bonds = bool(bonds)
        self.bond_weight = float(bond_weight)
        self.conditions = tuple(conditions)
        self.register_buffer("condition_mean", torch.zeros(len(self.conditions)))
        self.register_buffer("condition_std", torch.ones(len(self.conditions)))

    def set_condition_stats(self, values: np.ndarray) -> None:
        """Mean and std (over molecules) of the training properties (M, C), for the normalisation."""
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(self.conditions))
        self.condition_mean.copy_(torch.tensor(values.mean(0)))
        self.condition_std.copy_(torch.tensor(np.maximum(values.std(0), 1e-12)))

    def normalise(self, values, dtype=torch.float32) -> torch.Tensor:
        """(B, C) properties in their units → (c − mean) / std."""
        values = torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(-1, len(self.conditions)), dtype=dtype,
                                 device=self.device)
        return (values - self.condition_mean.to(dtype)) / self.condition_std.to(dtype)

    separation_weight = 0.0  # w of the separation penalty in the loss (config train.separation_weight)

    def separation_loss(self, x_scaled: torch.Tensor, batch: Batch, scale: torch.Tensor):
        """w · L_sep (:mod:`localframe.generate.separation`) of the clean estimate scaled by λ_t (B,); 0 when w = 0."""
        if not self.separation_weight:
            return 0.0
        from localframe.generate.separation import penalty

        numbers = torch.as_tensor(self.elements, device=batch.types.device)[batch.types]
        return self.separation_weight * penalty(x_scaled, numbers, batch.batch, scale)

    @property
    def device(self) -> torch.device:
        """The device of the module (its buffers and weights); states and batches live there."""
        return self.condition_mean.device

    @property
    def n_features(self) -> int:
        return len(self.elements) + len(self.charges)

    def make_batch(self, molecules: list[Molecule], dtype=torch.float32) -> Batch:
        """The batch, built on CPU and moved to the module's device."""
        cpu = torch.device("cpu")
        z_index = {z: k for k, z in enumerate(self.elements)}
        q_index = {q: k for k, q in enumerate(self.charges)}
        x = torch.tensor(np.concatenate([m.positions for m in molecules]), dtype=dtype, device=cpu)
        batch = torch.repeat_interleave(torch.arange(len(molecules), device=cpu),
                                        torch.tensor([len(m) for m in molecules], device=cpu))
        types = torch.tensor([z_index[int(z)] for m in molecules for z in m.numbers], device=cpu)
        charges = torch.tensor([q_index[int(q)] for m in molecules for q in m.charges], device=cpu)
        bonds = pair_orders(molecules, batch) if self.bonds else None
        condition = None
        if self.conditions:
            condition = self.normalise([[m.info["properties"][c] for c in self.conditions] for m in molecules], dtype)
        out = Batch(remove_mean(x, batch, len(molecules)), types, charges, batch, len(molecules), bonds, condition)
        return out.to(self.device)

    def to_molecules(self, x: torch.Tensor, types: torch.Tensor, charges: torch.Tensor, batch: torch.Tensor,
                     bonds: torch.Tensor | None = None) -> list[Molecule]:
        """Molecules from the final state; ``bonds`` (P,) orders on pair_index(batch), else no bond list.
        Positions are returned as sampled, non-finite or huge ones too (a process gives the atoms whose
        features went non-finite NaN positions); :func:`~localframe.generate.molecule.write_sdf` turns
        such molecules into failed records."""
        from localframe.generate.denoiser import pair_index

        x, types, charges, batch = x.cpu(), types.cpu(), charges.cpu(), batch.cpu()
        bonds = None if bonds is None else bonds.cpu()
        out = []
        z = np.array(self.elements)[types.numpy()]
        q = np.array(self.charges)[charges.numpy()]
        starts = np.concatenate([[0], np.cumsum(np.bincount(batch.numpy()))])
        if bonds is not None:
            pairs, orders = pair_index(batch).numpy(), bonds.numpy()
            keep = orders > 0
            pairs, orders = pairs[:, keep], orders[keep]
            owner = batch.numpy()[pairs[0]]
        for k in range(int(batch.max()) + 1 if len(batch) else 0):
            mask = (batch == k).numpy()
            b = None
            if bonds is not None:
                sel = owner == k
                b = np.stack([pairs[0, sel] - starts[k], pairs[1, sel] - starts[k], orders[sel]], axis=1)
            out.append(Molecule(z[mask], x[mask].detach().double().numpy(), q[mask], b))
        return out

    def loss(self, batch: Batch, t=None, noise=None) -> torch.Tensor:
        raise NotImplementedError

    def start(self, b: torch.Tensor, n: int, generator, dtype) -> dict:
        """The state drawn from the prior, for atoms of molecules ``b`` (N,)."""
        raise NotImplementedError

    def grid(self, steps: int, dtype) -> torch.Tensor:
        """The ``steps`` + 1 times the reverse process visits, from noise to data."""
        raise NotImplementedError

    def step(self, state: dict, t, s, b: torch.Tensor, n: int, generator, condition=None) -> dict:
        """One reverse update of the state from time t to the next grid time s."""
        raise NotImplementedError

    def finish(self, state: dict, b: torch.Tensor, n: int, condition=None) -> tuple:
        """(x, types, charges, bonds or None) of the final state."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, sizes, steps: int, generator=None, dtype=torch.float32, condition=None,
               trajectory=None) -> list[Molecule]:
        """Molecules of the given sizes; ``condition`` (B, C) properties in their units for a conditioned
        model; ``trajectory``, a list, gets the positions after every step."""
        if steps < 1:
            raise ValueError("steps must be at least 1")
        b, n = size_batch(sizes, self.device)
        state = self.start(b, n, generator, dtype)
        c = self.normalise(condition, dtype) if self.conditions else None
        grid = self.grid(steps, dtype).to(self.device)
        for t, s in zip(grid[:-1], grid[1:]):
            state = self.step(state, t, s, b, n, generator, c)
            if trajectory is not None:
                trajectory.append(state["x"].clone())
        x, types, charges, bonds = self.finish(state, b, n, c)
        return self.to_molecules(x, types, charges, b, bonds)


def size_batch(sizes, device=None) -> tuple[torch.Tensor, int]:
    sizes = [int(n) for n in sizes]
    cpu = torch.device("cpu")
    b = torch.repeat_interleave(torch.arange(len(sizes), device=cpu), torch.tensor(sizes, dtype=torch.long, device=cpu))
    return b.to(device), len(sizes)


BOND_ORDERS = (0, 1, 2, 3)  # none, single, double, triple (Kekulé)


def pair_orders(molecules: list[Molecule], batch: torch.Tensor) -> torch.Tensor:
    """(P,) bond order of each pair of pair_index(batch), from the molecules' bond lists (0: none)."""
    from localframe.generate.denoiser import pair_index

    pairs = pair_index(batch)
    n_total = len(batch)
    keys = pairs[0] * n_total + pairs[1]  # sorted, as pair_index is
    starts = np.concatenate([[0], np.cumsum([len(m) for m in molecules])])
    rows = [np.sort(m.bonds[:, :2], axis=1) + o for m, o in zip(molecules, starts) if m.bonds is not None and len(m.bonds)]
    orders = torch.zeros(len(keys), dtype=torch.long, device=keys.device)
    if rows:
        ij = torch.as_tensor(np.concatenate(rows), device=keys.device)
        value = torch.as_tensor(np.concatenate([m.bonds[:, 2] for m in molecules if m.bonds is not None and len(m.bonds)]),
                                device=keys.device)
        orders[torch.searchsorted(keys, ij[:, 0] * n_total + ij[:, 1])] = value
    return orders
