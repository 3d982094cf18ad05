"""AtomisticModel: a representation plus the shared heads; the object users train, save and run.

Forces and stress are derivatives of the energy: F = −∂E/∂x, σ = (1/V) ∂E/∂ε, with the symmetric
strain ε applied to positions and cell by :func:`apply_strain` (x' = x (I + ε), cell' = cell (I + ε)).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from localframe.data.batch import AtomsBatch
from localframe.heads import DipoleHead, EnergyHead, ScalarHead, check_targets
from localframe.models.base import Representation


class AtomisticModel(nn.Module):
    """Energy, conservative forces, stress (periodic cells), dipole and scalar targets from any representation.

    ``forward(batch, forces=True, stress=None, dipole=None)`` returns a dict with

    * ``energy`` (B,) in eV;
    * ``forces`` (N, 3) in eV/Å = −∂E/∂x (when ``forces``);
    * ``stress`` (B, 3, 3) in eV/Å³ = (1/V) ∂E/∂ε (default: when every structure in the batch
      is periodic in all directions);
    * ``dipole`` (B, 3) in e·Å and the atomic ``charges`` (N,) in e, when the model has a dipole
      head (``dipole=True`` at construction) and ``dipole`` is not False. The total charge of a
      structure is ``batch.labels["charge"]`` if present, else 0. Periodic batches raise
      ``ValueError`` (a dipole is not defined there): pass ``dipole=False`` for them;
    * one (B,) tensor per configured scalar target (``targets={"gap": "mean", "U0": "sum"}``).

    ``config()`` holds everything needed to rebuild the model through the registry.
    """

    def __init__(
        self,
        representation: Representation,
        name: str,
        hparams: dict[str, Any],
        dipole: bool = False,
        targets: dict[str, str] | None = None,
        spe: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.representation = representation
        self.name = name
        self.hparams = dict(hparams)
        self.metadata: dict[str, Any] = {}
        self.spe_options = None if spe is None else dict(spe)
        self.spe = self.spe_in = None
        self.fixed_bonds: list | None = None
        if spe is not None:
            self._add_spe(dict(spe))
        channels = representation.scalar_channels or representation.hidden_channels
        options = dict(representation.head_options)
        self.energy_head = EnergyHead(channels, **options)
        self.dipole_head = (
            DipoleHead(channels, bool(representation.has_vectors), representation.hidden_channels) if dipole else None
        )
        readout = options.get("readout", "mlp")
        self.target_heads = nn.ModuleDict(
            {key: ScalarHead(channels, agg, readout) for key, agg in check_targets(targets).items()}
        )

    @property
    def cutoff(self) -> float:
        return float(self.representation.cutoff)

    @property
    def edge_chunk(self) -> int | None:
        """Pairs per chunk of the memory-lean evaluation (:mod:`localframe.nn.chunking`): None (default)
        chunks calls with more pairs than 2²⁰ / hidden_channels in eval mode, a positive number sets the
        chunk, 0 turns it off. Same results; training mode never chunks."""
        return self.representation.edge_chunk

    @edge_chunk.setter
    def edge_chunk(self, value: int | None) -> None:
        from localframe.nn.chunking import chunk_size

        chunk_size(value, 0, 1, False)  # checks the value
        self.representation.edge_chunk = value

    @property
    def symmetry(self) -> str:
        return self.representation.symmetry

    @property
    def has_dipole(self) -> bool:
        return self.dipole_head is not None

    @property
    def targets(self) -> dict[str, str]:
        return {key: head.aggregation for key, head in self.target_heads.items()}

    def config(self) -> dict[str, Any]:
        """Plain-Python description (name, hparams, dipole, targets, spe) that rebuilds this model."""
        out = {
            "name": self.name,
            "hparams": _plain(self.hparams),
            "dipole": self.has_dipole,
            "targets": self.targets,
        }
        if self.spe_options is not None:
            out["spe"] = _plain(self.spe_options)
        return out

    # ------------------------------------------------------------------ SPE (localframe.nn.spe)
    def _add_spe(self, options: dict[str, Any]) -> None:
        """SPE of the bond graph as an extra invariant node input: Linear(SPE_i) (zero at the start) is
        added to the representation's element embedding, so the model starts as it would without it."""
        from localframe.errors import InputError
        from localframe.nn.spe import SPE

        inner = getattr(self.representation, "embedding", None)
        if not isinstance(inner, nn.Embedding) or inner.embedding_dim != self.representation.hidden_channels:
            raise InputError(f"model.spe: {self.name} has no element embedding of width hidden_channels to add it to")
        allowed = {"eigenpairs", "maps", "channels", "layers", "hidden"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputError(f"unknown key 'model.spe.{unknown[0]}'; allowed here: {', '.join(sorted(allowed))}")
        self.spe = SPE(**options)
        self.spe_in = nn.Linear(self.spe.channels, inner.embedding_dim, bias=False)
        nn.init.zeros_(self.spe_in.weight)
        self.representation.embedding = _EmbeddingPlus(inner)

    def fix_bond_graph(self, bonds: list | None) -> None:
        """Use these bond graphs (one (2, B) array per structure of every later batch, in order) instead
        of computing them from each call's positions: for MD, fix them from the first frame
        (:func:`localframe.nn.spe.bond_graph`); None goes back to computing them."""
        self.fixed_bonds = None if bonds is None else [np.asarray(b) for b in bonds]

    def features(self, batch: AtomsBatch, positions: torch.Tensor | None = None,
                 cell: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The representation's (scalars, vectors) of ``batch`` at ``positions`` and ``cell`` (default: the
        batch's), with the SPE input set. SPE's bond graph, in this order: :meth:`fix_bond_graph`'s,
        ``batch.bonds``, or the covalent-radius graph of the batch's own positions."""
        vectors = batch.edge_vectors(positions, cell)
        if self.spe is not None:
            self.representation.embedding.extra = self._spe_features(batch)
        try:
            return self.representation(batch.numbers, batch.edge_index, vectors, batch.batch, batch.n_structures)
        finally:
            if self.spe is not None:
                self.representation.embedding.extra = None  # no tensor of a call outlives it (copies, pickling)

    def _spe_features(self, batch: AtomsBatch) -> torch.Tensor:
        from localframe.nn.spe import bond_graph

        numbers = batch.numbers.detach().cpu().numpy()
        positions = batch.positions.detach().cpu().numpy()
        counts = batch.n_atoms.tolist()
        if self.fixed_bonds is not None and len(self.fixed_bonds) != len(counts):
            raise ValueError(f"fix_bond_graph holds {len(self.fixed_bonds)} bond graphs for a batch of {len(counts)} structures")
        out, start = [], 0
        for k, n in enumerate(counts):
            part = slice(start, start + n)
            if self.fixed_bonds is not None:
                bonds = self.fixed_bonds[k]
            else:
                bonds = batch.bonds[k] if batch.bonds is not None else bond_graph(numbers[part], positions[part])
            out.append(self.spe.of_structure(numbers[part], positions[part], bonds))
            start += n
        features = torch.cat(out) if out else batch.positions.new_zeros(0, self.spe.channels)
        return self.spe_in(features.to(batch.positions.device))

    def forward(
        self, batch: AtomsBatch, forces: bool = True, stress: bool | None = None, dipole: bool | None = None
    ) -> dict[str, torch.Tensor]:
        if stress is None:
            stress = bool(batch.pbc.all()) and batch.n_structures > 0
        if stress and not bool(batch.pbc.all()):
            raise ValueError("stress requested for a batch with structures that are not periodic in all directions")
        if dipole is None:
            dipole = self.has_dipole
        if dipole and not self.has_dipole:
            raise ValueError("dipole requested from a model built without a dipole head (create it with dipole=True)")
        if dipole and bool(batch.pbc.any()):
            raise ValueError(
                "the dipole moment is not defined for periodic structures; call the model with dipole=False "
                "for batches that contain them"
            )
        # Forces and stress are gradients: compute them even when called under torch.no_grad().
        with torch.enable_grad() if (forces or stress) else contextlib.nullcontext():
            return self._forward(batch, forces, stress, dipole)

    def _forward(self, batch: AtomsBatch, forces: bool, stress: bool, dipole: bool) -> dict[str, torch.Tensor]:
        positions = batch.positions
        inputs = []
        if forces or stress:
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        cell = batch.cell
        if stress:
            strain, positions, cell = apply_strain(batch, positions)
            inputs.append(strain)
        scalars, atom_vectors = self.features(batch, positions, cell)
        energy = self.energy_head(scalars, batch.numbers, batch.batch, batch.n_structures)
        out = {"energy": energy}
        if dipole:
            out["dipole"], out["charges"] = self.dipole_head(
                scalars, atom_vectors, positions, batch.batch, batch.n_structures, batch.labels.get("charge")
            )
        for key, head in self.target_heads.items():
            out[key] = head(scalars, batch.numbers, batch.batch, batch.n_structures)
        if inputs:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=self.training, allow_unused=True,
            )
            if forces:
                out["forces"] = -_zeros_if_none(grads[0], inputs[0])
            if stress:
                out["stress"] = _zeros_if_none(grads[-1], inputs[-1]) / cell_volume(batch.cell).view(-1, 1, 1)
        return out


class _EmbeddingPlus(nn.Module):
    """An element embedding plus per-atom features set before each call (``extra``, (N, H))."""

    def __init__(self, inner: nn.Embedding):
        super().__init__()
        self.inner = inner
        self.embedding_dim = inner.embedding_dim
        self.extra: torch.Tensor | None = None

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        out = self.inner(numbers)
        return out if self.extra is None else out + self.extra


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, checked to hold only JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and np.ndim(value) == 0:  # numpy scalars
        return value.item()
    raise TypeError(f"hyperparameter value {value!r} of type {type(value).__name__} is not a plain JSON type")


def _zeros_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def apply_strain(batch: AtomsBatch, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions and cell under a zero symmetric strain ε (B, 3, 3) that autograd can differentiate.

    x' = x (I + ε_b), cell' = cell (I + ε_b). Returns (ε, x', cell').
    """
    strain = torch.zeros_like(batch.cell, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(1, 2))
    positions = positions + torch.einsum("na,nab->nb", positions, sym[batch.batch])
    cell = batch.cell + torch.bmm(batch.cell, sym)
    return strain, positions, cell


def cell_volume(cell: torch.Tensor) -> torch.Tensor:
    """|det(cell)| per structure, (B,)."""
    return torch.linalg.det(cell).abs()
