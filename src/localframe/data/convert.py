"""The one way from ``ase.Atoms`` to an :class:`~localframe.data.batch.AtomsBatch`.

Training, the calculator (and through it MD and relaxation), ``localframe evaluate``, the
benchmarks and xTB labelling all go through here::

    atoms  --check_structure-->  checked arrays  --pair list-->  AtomsBatch

:func:`check_structure` validates one structure without any neighbour list: atomic numbers
(1 to 118, and the elements a model was trained on when given), finite coordinates, a usable cell
(finite; non-degenerate along its periodic directions) and the requested labels (present, numeric,
finite, of the right shape; a stress only on fully periodic structures). Atoms closer than
:data:`MIN_DISTANCE` are found on the pairs the batch is built from (no second list); a structure
checked on its own (file readers, labelling input) is searched for them within that radius only.

:class:`AtomsConverter` builds batches. Its ``pairs`` option takes the pair search, so a reused
(Verlet) list plugs in: ``pairs(positions, cell, pbc) -> (edge_index (2, E), shifts (E, 3),
distances (E,))``, numpy arrays or torch tensors (default: a fresh list from
:func:`localframe.data.neighbors.neighbor_pairs`). After each call, ``distances`` holds the pair
distances (float64, Å) of the batch and ``closest`` the closest pair ``(i, j, d)`` of each
structure (``(-1, -1, inf)`` without pairs).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from ase import Atoms

from localframe.data.batch import AtomsBatch
from localframe.data.neighbors import closest_pair, neighbor_pairs
from localframe.errors import InputError

MIN_DISTANCE = 0.1  # Å; closer pairs are treated as corrupt input
MAX_Z = 118

# Labels with a fixed meaning and shape; anything else is a per-structure scalar (info) or a
# per-atom array (arrays) of the user's choosing.
PER_ATOM_LABELS = ("forces",)
STRUCTURE_SHAPES = {"energy": (), "stress": (3, 3), "dipole": (3,)}

Pairs = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple]


# ---------------------------------------------------------------------- one structure, no pairs
def check_structure(atoms: Atoms, labels: Sequence[str] = (), source: str | None = None, index: int | None = 0,
                    elements: Sequence[int] | None = None, optional: Sequence[str] = (),
                    close: bool = True) -> dict:
    """Raise :class:`InputError` (naming ``source`` and structure ``index``) if ``atoms`` or one of
    its ``labels`` is unusable; ``elements``: the atomic numbers allowed (None: any of 1 to 118).

    Returns the checked arrays (``numbers``, ``positions`` float64, ``cell`` (zeros when not
    periodic), ``pbc``, ``labels``, ``atom_labels``); ``optional`` labels are carried when present.
    ``close=True`` also looks for atoms closer than :data:`MIN_DISTANCE` (a search within that
    radius only); the converter passes ``close=False`` and checks the pairs it builds instead.
    """
    from localframe.io import check_elements

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
    check_elements(elements, numbers, source, index)
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
    checked = dict(numbers=numbers, positions=positions, cell=cell, pbc=pbc, labels={}, atom_labels={})
    wanted = list(labels) + [key for key in optional if key not in labels and _present(atoms, key)]
    for key in wanted:
        per_atom, value = _read_label(atoms, key, fail)
        checked["atom_labels" if per_atom else "labels"][key] = value
    if close:
        pair = closest_pair(positions, cell, pbc, MIN_DISTANCE)
        if pair is not None:
            _check_distances([pair[0]], [pair[1]], np.array([pair[2]]), fail)
    return checked


def _check_distances(i, j, dist, fail) -> None:
    if len(dist) and float(dist.min()) < MIN_DISTANCE:
        k = int(dist.argmin())
        raise fail(f"atoms {int(i[k])} and {int(j[k])} are {float(dist[k]):.3g} Å apart (closer than {MIN_DISTANCE} Å)")


def _present(atoms: Atoms, key: str) -> bool:
    return key in atoms.arrays or atoms.info.get(key) is not None or _calc_result(atoms, key) is not None


def _calc_result(atoms: Atoms, key: str):
    results = getattr(atoms.calc, "results", None) or {}
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


# ---------------------------------------------------------------------- many structures, with pairs
def _fresh_pairs(cutoff: float) -> Pairs:
    def pairs(positions, cell, pbc):
        i, j, shifts, dist = neighbor_pairs(positions, cell, pbc, cutoff)
        return np.stack([i, j]), shifts, dist

    return pairs


class AtomsConverter:
    """``AtomsConverter(cutoff, dtype=torch.float32, device=None, pairs=None, elements=None)``:
    ``converter(atoms_or_list, labels=(), optional=(), source=None, first_index=0)`` -> AtomsBatch.

    ``cutoff`` (Å) is the radius of the pairs; ``pairs`` a pair search for one structure at a time
    (see the module docstring; a stateful one such as a Verlet list belongs to one structure);
    ``elements`` the atomic numbers allowed (a model's training elements). ``first_index=None``
    names no structure index in errors (a calculator's single structure).
    """

    def __init__(self, cutoff: float, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 pairs: Pairs | None = None, elements: Sequence[int] | None = None):
        cutoff = float(cutoff)
        if not np.isfinite(cutoff) or cutoff <= MIN_DISTANCE:
            raise InputError(f"cutoff must exceed {MIN_DISTANCE} Å, got {cutoff}")
        self.cutoff, self.dtype, self.device, self.elements = cutoff, dtype, device, elements
        self.pairs = pairs or _fresh_pairs(cutoff)
        self.distances: torch.Tensor | None = None
        self.closest: list[tuple[int, int, float]] = []

    def __call__(self, atoms: Atoms | Iterable[Atoms], labels: Sequence[str] = (), optional: Sequence[str] = (),
                 source: str | None = None, first_index: int | None = 0) -> AtomsBatch:
        structures = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not structures:
            raise InputError("no structures", source)
        graphs, distances, self.closest = [], [], []
        for k, one in enumerate(structures):
            index = None if first_index is None else first_index + k
            graph = check_structure(one, labels, source, index, self.elements, optional, close=False)
            edges, shifts, dist = (np.asarray(t) for t in self.pairs(graph["positions"], graph["cell"], graph["pbc"]))
            k_min = int(dist.argmin()) if len(dist) else -1
            self.closest.append((int(edges[0, k_min]), int(edges[1, k_min]), float(dist[k_min])) if len(dist)
                                else (-1, -1, float("inf")))
            _check_distances(edges[0], edges[1], dist, lambda problem: InputError(problem, source, index))
            graph.update(edges=edges.astype(np.int64).reshape(2, -1), shifts=shifts.reshape(-1, 3))
            graphs.append(graph)
            distances.append(dist.astype(np.float64))
        self.distances = torch.from_numpy(np.concatenate(distances))
        return _graphs_to_batch(graphs, self.cutoff, self.dtype, self.device)


def _graphs_to_batch(graphs: list[dict], cutoff: float, dtype: torch.dtype, device) -> AtomsBatch:
    counts = np.array([len(g["numbers"]) for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    edge_index = np.concatenate([g["edges"] + o for g, o in zip(graphs, offsets)], axis=1)
    structure_keys, atom_keys = set(graphs[0]["labels"]), set(graphs[0]["atom_labels"])
    for k, g in enumerate(graphs[1:], 1):
        if set(g["atom_labels"]) != atom_keys:  # a key per-atom in one structure, per-structure in another
            raise InputError(f"label kinds differ between structures 0 and {k}: {sorted(atom_keys)} vs {sorted(g['atom_labels'])}")
        if set(g["labels"]) != structure_keys:  # an optional label on some structures only
            raise InputError(f"labels differ between structures 0 and {k}: {sorted(structure_keys)} vs {sorted(g['labels'])}")

    def floats(array) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=device)

    return AtomsBatch(
        numbers=torch.as_tensor(np.concatenate([g["numbers"] for g in graphs]), device=device),
        positions=floats(np.concatenate([g["positions"] for g in graphs])),
        cell=floats(np.stack([g["cell"] for g in graphs])),
        pbc=torch.as_tensor(np.stack([g["pbc"] for g in graphs]), device=device),
        batch=torch.as_tensor(np.repeat(np.arange(len(graphs)), counts), device=device),
        n_atoms=torch.as_tensor(counts, device=device),
        edge_index=torch.as_tensor(edge_index, dtype=torch.long, device=device),
        cell_shifts=floats(np.concatenate([g["shifts"] for g in graphs])),
        cutoff=float(cutoff),
        labels={k: floats(np.stack([g["labels"][k] for g in graphs])) for k in sorted(structure_keys)},
        atom_labels={k: floats(np.concatenate([g["atom_labels"][k] for g in graphs])) for k in sorted(atom_keys)},
    )


def restrict(batch: AtomsBatch, distances: torch.Tensor, cutoff: float) -> AtomsBatch:
    """``batch`` with only the pairs closer than ``cutoff`` (Å), for a committee member with a smaller
    cutoff than the pair list (``distances``: the pair distances of ``batch``)."""
    if cutoff >= batch.cutoff:
        return batch
    keep = (distances < cutoff).to(batch.device)
    return AtomsBatch(
        numbers=batch.numbers, positions=batch.positions, cell=batch.cell, pbc=batch.pbc, batch=batch.batch,
        n_atoms=batch.n_atoms, edge_index=batch.edge_index[:, keep], cell_shifts=batch.cell_shifts[keep],
        cutoff=cutoff, labels=batch.labels, atom_labels=batch.atom_labels, bonds=batch.bonds,
    )
