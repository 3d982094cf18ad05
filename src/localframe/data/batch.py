"""The one batch structure: many atomic structures, their neighbor pairs and their labels.

An :class:`AtomsBatch` holds B structures with N atoms in total and E neighbor pairs:

==============  =========  ==========================================================
field           shape      meaning
==============  =========  ==========================================================
numbers         (N,)       atomic numbers (int64)
positions       (N, 3)     Cartesian positions, Å
cell            (B, 3, 3)  lattice vectors as rows, Å (zeros for a non-periodic structure)
pbc             (B, 3)     periodic directions (bool)
batch           (N,)       index of the structure each atom belongs to (int64)
n_atoms         (B,)       atoms per structure (int64)
edge_index      (2, E)     pairs (i, j): row 0 the centre atom i, row 1 its neighbour j
cell_shifts     (E, 3)     integer lattice shifts S of j, stored in the float dtype
labels          dict       per-structure labels: "energy" (B,), "stress" (B, 3, 3), "dipole" (B, 3),
                           any other per-structure scalar (B,)
atom_labels     dict       per-atom labels: "forces" (N, 3), any other per-atom array (N, ...)
bonds           list/None  optional bond graph per structure, (2, B_b) numpy arrays of atom indices
                           within it (what SPE encodes; None: computed from the positions)
==============  =========  ==========================================================

The pair vector is ``r_ij = x_j - x_i + S_ij @ cell`` (see :mod:`localframe.data.neighbors`);
:meth:`AtomsBatch.edge_vectors` computes it differentiably from positions and cell, which is what
conservative forces and stress need. Floating tensors are float32 unless float64 is requested.
Batches are built from ``ase.Atoms`` by :mod:`localframe.data.convert` (``AtomsBatch.from_atoms``
is a thin call to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import torch
from ase import Atoms

from localframe.errors import InputError
from localframe.nn.scatter import gather


@dataclass
class AtomsBatch:
    numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    edge_index: torch.Tensor
    cell_shifts: torch.Tensor
    cutoff: float
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    atom_labels: dict[str, torch.Tensor] = field(default_factory=dict)
    bonds: list | None = None

    # ------------------------------------------------------------------ basic facts
    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    def __len__(self) -> int:
        return self.n_structures

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        return self.positions.device

    # ------------------------------------------------------------------ geometry
    def edge_vectors(self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Pair vectors r_ij = x_j - x_i + S_ij @ cell, (E, 3), differentiable in positions and cell."""
        pos = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        i, j = self.edge_index
        vec = gather(pos, j) - gather(pos, i)
        if self.cell_shifts.numel() and bool(self.pbc.any()):
            vec = vec + torch.einsum("ea,eab->eb", self.cell_shifts, cell[self.batch[i]])
        return vec

    # ------------------------------------------------------------------ conversion
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AtomsBatch":
        """Move to a device and/or cast floating tensors (positions, cell, shifts, labels) to ``dtype``."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            return t.to(device) if device is not None else t

        return replace(
            self,
            numbers=move(self.numbers), positions=move(self.positions), cell=move(self.cell),
            pbc=move(self.pbc), batch=move(self.batch), n_atoms=move(self.n_atoms),
            edge_index=move(self.edge_index), cell_shifts=move(self.cell_shifts),
            labels={k: move(v) for k, v in self.labels.items()},
            atom_labels={k: move(v) for k, v in self.atom_labels.items()},
        )

    def split(self) -> list["AtomsBatch"]:
        """One batch per structure (inverse of :meth:`collate`)."""
        atom_ptr = torch.cat([self.n_atoms.new_zeros(1), self.n_atoms.cumsum(0)]).tolist()
        edge_owner = self.batch[self.edge_index[0]]
        edge_counts = torch.bincount(edge_owner, minlength=self.n_structures)
        edge_ptr = torch.cat([edge_counts.new_zeros(1), edge_counts.cumsum(0)]).tolist()
        order = torch.argsort(edge_owner, stable=True)
        edges, shifts = self.edge_index[:, order], self.cell_shifts[order]
        out = []
        for b in range(self.n_structures):
            a0, a1, e0, e1 = atom_ptr[b], atom_ptr[b + 1], edge_ptr[b], edge_ptr[b + 1]
            out.append(
                AtomsBatch(
                    numbers=self.numbers[a0:a1], positions=self.positions[a0:a1], cell=self.cell[b : b + 1],
                    pbc=self.pbc[b : b + 1], batch=torch.zeros(a1 - a0, dtype=torch.long, device=self.device),
                    n_atoms=self.n_atoms[b : b + 1], edge_index=edges[:, e0:e1] - a0, cell_shifts=shifts[e0:e1],
                    cutoff=self.cutoff, labels={k: v[b : b + 1] for k, v in self.labels.items()},
                    atom_labels={k: v[a0:a1] for k, v in self.atom_labels.items()},
                    bonds=None if self.bonds is None else [self.bonds[b]],
                )
            )
        return out

    @classmethod
    def collate(cls, items: Sequence["AtomsBatch"]) -> "AtomsBatch":
        """Concatenate batches (typically single structures) into one batch."""
        if not items:
            raise InputError("cannot collate an empty list of structures")
        cutoffs = {it.cutoff for it in items}
        if len(cutoffs) != 1:
            raise InputError(f"cannot collate structures built with different cutoffs {sorted(cutoffs)}")
        offsets = torch.cumsum(torch.tensor([0] + [len(it.numbers) for it in items[:-1]]), 0).tolist()
        struct_offsets = torch.cumsum(torch.tensor([0] + [it.n_structures for it in items[:-1]]), 0).tolist()
        keys, atom_keys = set(items[0].labels), set(items[0].atom_labels)
        for it in items[1:]:
            if set(it.labels) != keys or set(it.atom_labels) != atom_keys:
                raise InputError(
                    f"cannot collate structures with different labels {sorted(keys | atom_keys)} "
                    f"and {sorted(set(it.labels) | set(it.atom_labels))}"
                )
        return cls(
            numbers=torch.cat([it.numbers for it in items]),
            positions=torch.cat([it.positions for it in items]),
            cell=torch.cat([it.cell for it in items]),
            pbc=torch.cat([it.pbc for it in items]),
            batch=torch.cat([it.batch + o for it, o in zip(items, struct_offsets)]),
            n_atoms=torch.cat([it.n_atoms for it in items]),
            edge_index=torch.cat([it.edge_index + o for it, o in zip(items, offsets)], dim=1),
            cell_shifts=torch.cat([it.cell_shifts for it in items]),
            cutoff=items[0].cutoff,
            labels={k: torch.cat([it.labels[k] for it in items]) for k in sorted(keys)},
            atom_labels={k: torch.cat([it.atom_labels[k] for it in items]) for k in sorted(atom_keys)},
            bonds=None if any(it.bonds is None for it in items) else [b for it in items for b in it.bonds],
        )

    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms | Iterable[Atoms],
        cutoff: float,
        labels: Sequence[str] = (),
        dtype: torch.dtype = torch.float32,
        source: str | None = None,
        first_index: int = 0,
    ) -> "AtomsBatch":
        """Build a batch from one or more ``ase.Atoms`` with a fresh pair list: a thin call to
        :class:`localframe.data.convert.AtomsConverter`, where the checks and the label reading live.

        ``labels`` names the labels to carry. Per-atom labels (``forces`` and any key of
        ``atoms.arrays``) come from ``atoms.arrays``, per-structure labels from ``atoms.info``;
        ``energy``, ``forces``, ``stress`` and ``dipole`` also come from an attached
        single-point calculator (as ASE's extxyz reader leaves them). Every structure is checked;
        problems raise :class:`InputError` naming ``source`` and the structure index
        (``first_index`` + position in the list).
        """
        from localframe.data.convert import AtomsConverter

        return AtomsConverter(cutoff, dtype)(atoms, labels, source=source, first_index=first_index)

    def to_atoms(self) -> list[Atoms]:
        """The structures as ``ase.Atoms`` (labels are not attached)."""
        out = []
        for one in self.split():
            out.append(
                Atoms(
                    numbers=one.numbers.cpu().numpy(), positions=one.positions.detach().cpu().double().numpy(),
                    cell=one.cell[0].detach().cpu().double().numpy(), pbc=one.pbc[0].cpu().numpy(),
                )
            )
        return out
