"""The one neighbor list of the package: all pairs within a cutoff, with periodic images (vesin).

Convention, used everywhere in localframe: a pair ``(i, j)`` with integer lattice shift ``S``
(a row vector) has the vector ``r_ij = x_j - x_i + S @ cell`` pointing from the centre atom ``i``
to its neighbour ``j``. Lists are full: ``(j, i, -S)`` is present whenever ``(i, j, S)`` is.
An atom is never its own neighbour in the same image, but may neighbour its own periodic images.
"""

from __future__ import annotations

import numpy as np
import vesin


def neighbor_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs within ``cutoff`` (Å): ``(i, j, shifts, distances)``.

    ``positions`` (N, 3), ``cell`` (3, 3) with lattice vectors as rows, ``pbc`` three booleans.
    ``shifts`` are integer lattice shifts (E, 3) and ``distances`` the pair distances (E,).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    box = cell if pbc.any() else np.zeros((3, 3))
    if pbc.any() and not pbc.all():
        # Non-periodic directions may carry a zero lattice vector; give them a harmless one
        # orthogonal to the others so vesin sees a valid box (no images are made along them).
        box = _complete_box(cell, pbc, positions, cutoff)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, dist = nl.compute(
        points=positions, box=box, periodic=[bool(p) for p in pbc] if pbc.any() else False,
        quantities="ijSd",
    )
    return i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64), dist


def _complete_box(cell: np.ndarray, pbc: np.ndarray, positions: np.ndarray, cutoff: float) -> np.ndarray:
    box = cell.copy()
    extent = float(np.ptp(positions, axis=0).max()) + 2.0 * cutoff + 1.0
    for axis in np.flatnonzero(~pbc):
        if np.linalg.norm(box[axis]) > 1e-12:
            continue
        others = [box[k] for k in range(3) if k != axis]
        normal = np.cross(others[0], others[1])
        if np.linalg.norm(normal) < 1e-12:
            normal = np.eye(3)[axis]
        box[axis] = normal / np.linalg.norm(normal) * extent
    return box


def closest_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, radius: float) -> tuple[int, int, float] | None:
    """The closest pair ``(i, j, distance Å)`` nearer than ``radius``, or None: a search within
    ``radius`` only (cheap for the small radii of the input checks and MD guards)."""
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    i, j, _, dist = neighbor_pairs(positions, cell if pbc.any() else np.zeros((3, 3)), pbc, radius)
    if not len(dist):
        return None
    k = int(np.argmin(dist))
    return int(i[k]), int(j[k]), float(dist[k])
