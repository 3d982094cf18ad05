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
==============  =========  ==========================================================

The pair vector is ``r_ij = x_j - x_i + S_ij @ cell`` (see :mod:`localframe.data.neighbors`);
:meth:`AtomsBatch.edge_vectors` computes it differentiably from positions and cell, which is what
conservative forces and stress need. Floating tensors are float32 unless float64 is requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms

from localframe.data.neighbors import neighbor_pairs
from localframe.errors import InputError
from localframe.nn.scatter import gather

MIN_DISTANCE = 0.1  # Å; closer pairs are treated as corrupt input
MAX_Z = 118

# Labels with a fixed meaning and shape; anything else is a per-structure scalar (info) or a
# per-atom array (arrays) of the user's choosing.
PER_ATOM_LABELS = ("forces",)
STRUCTURE_SHAPES = {"energy": (), "stress": (3, 3), "dipole": (3,)}


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

    @property
    def periodic(self) -> torch.Tensor:
        """(B,) True for structures periodic in at least one direction."""
        return self.pbc.any(dim=1)

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

    def structure(self, index: int) -> "AtomsBatch":
        """Structure ``index`` as a batch of one."""
        return self.split()[index]

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
        """Build a batch from one or more ``ase.Atoms``.

        ``labels`` names the labels to carry. Per-atom labels (``forces`` and any key of
        ``atoms.arrays``) come from ``atoms.arrays``, per-structure labels from ``atoms.info``;
        ``energy``, ``forces``, ``stress`` and ``dipole`` also come from an attached
        single-point calculator (as ASE's extxyz reader leaves them). Every structure is checked;
        problems raise :class:`InputError` naming ``source`` and the structure index
        (``first_index`` + position in the list).
        """
        if isinstance(atoms, Atoms):
            atoms = [atoms]
        graphs = [
            _structure_graph(a, cutoff, labels, source, first_index + k) for k, a in enumerate(atoms)
        ]
        if not graphs:
            raise InputError("no structures", source)
        return _graphs_to_batch(graphs, cutoff, dtype)

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


# ---------------------------------------------------------------------- building from ase.Atoms
def _structure_graph(atoms: Atoms, cutoff: float, labels: Sequence[str], source: str | None, index: int) -> dict:
    def fail(problem: str) -> InputError:
        return InputError(problem, source, index)

    n = len(atoms)
    if n == 0:
        raise fail("structure has no atoms")
    numbers = atoms.numbers.astype(np.int64)
    bad = (numbers < 1) | (numbers > MAX_Z)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise fail(f"unknown element at atom {k} (atomic number {numbers[k]}; expected 1 to {MAX_Z})")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.isfinite(positions).all():
        k = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise fail(f"non-finite coordinates (NaN or inf) at atom {k}")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not np.isfinite(cell).all():
        raise fail("non-finite cell")
    if pbc.any():
        periodic_vectors = cell[pbc]
        if np.linalg.matrix_rank(periodic_vectors, tol=1e-8) < int(pbc.sum()):
            raise fail(f"periodic structure (pbc={pbc.tolist()}) has a degenerate cell {cell.tolist()}")
    else:
        cell = np.zeros((3, 3))
    if cutoff <= MIN_DISTANCE:
        raise InputError(f"cutoff must exceed {MIN_DISTANCE} Å, got {cutoff}")
    i, j, shifts, dist = neighbor_pairs(positions, cell, pbc, cutoff)
    if len(dist) and dist.min() < MIN_DISTANCE:
        k = int(np.argmin(dist))
        raise fail(f"atoms {i[k]} and {j[k]} are {dist[k]:.3g} Å apart (closer than {MIN_DISTANCE} Å)")
    graph = dict(numbers=numbers, positions=positions, cell=cell, pbc=pbc, i=i, j=j, shifts=shifts,
                 labels={}, atom_labels={})
    for key in labels:
        per_atom, value = _read_label(atoms, key, fail)
        graph["atom_labels" if per_atom else "labels"][key] = value
    return graph


def _calc_result(atoms: Atoms, key: str):
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    return results.get(key)


def _read_label(atoms: Atoms, key: str, fail) -> tuple[bool, np.ndarray]:
    """(per_atom, value) of label ``key``, checked for presence, shape and finiteness."""
    n = len(atoms)
    per_atom = key in PER_ATOM_LABELS or key in atoms.arrays
    if per_atom:
        value = atoms.arrays.get(key)
        if value is None:
            value = _calc_result(atoms, key)
        if value is None:
            raise fail(f"missing per-atom label {key!r}")
        value = np.asarray(value, dtype=np.float64)
        if key == "forces" and value.shape != (n, 3):
            raise fail(f"label 'forces' has shape {value.shape}, expected ({n}, 3)")
        if value.shape[:1] != (n,):
            raise fail(f"per-atom label {key!r} has shape {value.shape}, expected ({n}, ...)")
    else:
        value = atoms.info.get(key)
        if value is None:
            value = _calc_result(atoms, key)
        if value is None:
            raise fail(f"missing label {key!r}")
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail(f"label {key!r} is not numeric: {value!r}") from None
        if key == "stress":
            if not atoms.pbc.all():
                raise fail(f"stress label given for a structure that is not periodic in all directions (pbc={atoms.pbc.tolist()})")
            if value.shape == (6,):
                xx, yy, zz, yz, xz, xy = value
                value = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        expected = STRUCTURE_SHAPES.get(key, ())
        if value.shape != expected and not (expected == () and value.shape == (1,)):
            raise fail(f"label {key!r} has shape {value.shape}, expected {expected or 'a scalar'}")
        value = value.reshape(expected)
    if not np.isfinite(value).all():
        raise fail(f"label {key!r} contains NaN or inf")
    return per_atom, value


def _graphs_to_batch(graphs: list[dict], cutoff: float, dtype: torch.dtype) -> AtomsBatch:
    counts = np.array([len(g["numbers"]) for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    edge_index = np.concatenate(
        [np.stack([g["i"] + o, g["j"] + o]) for g, o in zip(graphs, offsets)], axis=1
    )
    structure_keys, atom_keys = set(graphs[0]["labels"]), set(graphs[0]["atom_labels"])
    for k, g in enumerate(graphs[1:], 1):
        if set(g["atom_labels"]) != atom_keys:  # a key per-atom in one structure, per-structure in another
            raise InputError(f"label kinds differ between structures 0 and {k}: {sorted(atom_keys)} vs {sorted(g['atom_labels'])}")
    return AtomsBatch(
        numbers=torch.as_tensor(np.concatenate([g["numbers"] for g in graphs])),
        positions=torch.as_tensor(np.concatenate([g["positions"] for g in graphs]), dtype=dtype),
        cell=torch.as_tensor(np.stack([g["cell"] for g in graphs]), dtype=dtype),
        pbc=torch.as_tensor(np.stack([g["pbc"] for g in graphs])),
        batch=torch.as_tensor(np.repeat(np.arange(len(graphs)), counts)),
        n_atoms=torch.as_tensor(counts),
        edge_index=torch.as_tensor(edge_index, dtype=torch.long),
        cell_shifts=torch.as_tensor(np.concatenate([g["shifts"] for g in graphs]), dtype=dtype),
        cutoff=float(cutoff),
        labels={k: torch.as_tensor(np.stack([g["labels"][k] for g in graphs]), dtype=dtype) for k in sorted(structure_keys)},
        atom_labels={k: torch.as_tensor(np.concatenate([g["atom_labels"][k] for g in graphs]), dtype=dtype) for k in sorted(atom_keys)},
    )


def check_structure(atoms: Atoms, labels: Sequence[str] = (), source: str | None = None, index: int = 0) -> None:
    """Raise :class:`InputError` if a structure or one of its labels is unusable (see ``from_atoms``)."""
    _structure_graph(atoms, 2 * MIN_DISTANCE, labels, source, index)
