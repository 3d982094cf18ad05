r"""The three scorers' tables: EDM's bond-length table, the MiDi-derived valency table and a corrected one.

**EDM** (Hoogeboom et al. 2022, ``bond_analyze.py``): a bond order from the distance alone,

    order(a, b, d) = 3 if d < b3(a,b) + 3 pm,  2 if d < b2(a,b) + 5 pm,  1 if d < b1(a,b) + 10 pm,  else 0

(each test applies only where the table has an entry and the previous one held); an atom is stable
when the sum of its bond orders equals the one valence ``H 1, C 4, N 3, O 2, F 1``. Charges are
ignored, so a charged ammonium N⁺ (valence 4) is unstable under it.

**MiDi table** (``allowed_bonds`` of MiDi, inherited by EQGAT-diff, SemlaFlow and FlowMol): valences
allowed per element and formal charge. It accepts a *neutral* carbon of valence 3 and a neutral
nitrogen of valence 2 (radicals), and its users sum aromatic bonds as 1. Kept here only to show how
much it flatters a model: it is never reported alone.

**Corrected table** (the fix proposed in isayevlab/geom-drugs-3dgen-evaluation): neutral atoms have
their one closed-shell valence; a charge moves it by one (C⁻/C⁺ 3, N⁺ 4, N⁻ 2, O⁺ 3, O⁻ 1);
valences are sums of Kekulé bond orders (an aromatic ring counts its alternating 1s and 2s, as
RDKit's total valence does; a uniform 1.5 would make the N–H of a pyrrole 4-valent).
"""

from __future__ import annotations

import numpy as np

SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}

# EDM's tables (pm), restricted to H, C, N, O, F (identical entries to EDM's bond_analyze.py)
BONDS1 = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142},
}
BONDS2 = {"C": {"C": 134, "N": 129, "O": 120}, "N": {"C": 129, "N": 125, "O": 121}, "O": {"C": 120, "N": 121, "O": 121}}
BONDS3 = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"C": 116, "N": 110}, "O": {"C": 113}}
MARGINS = (10, 5, 3)  # pm, for orders 1, 2, 3
EDM_VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}

# (element, formal charge) -> allowed valences
MIDI_VALENCE = {
    "H": {0: (1,)},
    "C": {0: (3, 4), 1: (3,), -1: (3,)},
    "N": {0: (2, 3), 1: (2, 3, 4), -1: (2,)},
    "O": {0: (2,), 1: (3,), -1: (1,)},
    "F": {0: (1,)},
}
CORRECTED_VALENCE = {
    "H": {0: (1,)},
    "C": {0: (4,), 1: (3,), -1: (3,)},
    "N": {0: (3,), 1: (4,), -1: (2,)},
    "O": {0: (2,), 1: (3,), -1: (1,)},
    "F": {0: (1,)},
}
VALENCY_TABLES = {"midi": MIDI_VALENCE, "corrected": CORRECTED_VALENCE}
AROMATIC_WEIGHT = {"midi": 1.0, "corrected": None}  # None: the Kekulé order


def bond_order(z1: int, z2: int, distance: float) -> int:
    """EDM's bond order (0–3) of two elements at ``distance`` Å."""
    a, b = SYMBOLS[int(z1)], SYMBOLS[int(z2)]
    d = 100.0 * distance
    if d >= BONDS1[a][b] + MARGINS[0]:
        return 0
    if b in BONDS2.get(a, {}) and d < BONDS2[a][b] + MARGINS[1]:
        if b in BONDS3.get(a, {}) and d < BONDS3[a][b] + MARGINS[2]:
            return 3
        return 2
    return 1


def distance_bonds(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """All EDM bonds of a molecule as (m, 3) rows ``i, j, order`` with i < j."""
    numbers = np.asarray(numbers)
    unknown = sorted(set(int(z) for z in numbers) - set(SYMBOLS))
    if unknown:
        from localframe.errors import InputError

        raise InputError(f"elements {unknown} are outside the bond table (H, C, N, O, F)")
    diff = positions[:, None, :] - positions[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    rows = []
    n = len(numbers)
    for i in range(n):
        for j in range(i + 1, n):
            order = bond_order(numbers[i], numbers[j], dist[i, j])
            if order:
                rows.append((i, j, order))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def valences(n_atoms: int, bonds: np.ndarray, aromatic: np.ndarray | None = None, aromatic_weight: float | None = None) -> np.ndarray:
    """Sum of Kekulé bond orders per atom; bonds flagged ``aromatic`` count ``aromatic_weight`` instead
    where it is given (rounded sum)."""
    total = np.zeros(n_atoms)
    weights = bonds[:, 2].astype(float) if len(bonds) else np.zeros(0)
    if aromatic is not None and aromatic_weight is not None and len(bonds):
        weights = np.where(aromatic, aromatic_weight, weights)
    np.add.at(total, bonds[:, 0], weights)
    np.add.at(total, bonds[:, 1], weights)
    return np.rint(total).astype(np.int64)


def atom_stable_edm(numbers: np.ndarray, valence: np.ndarray) -> np.ndarray:
    """Per-atom stability under EDM's single-valence rule (charges ignored)."""
    return np.array([EDM_VALENCE[SYMBOLS[int(z)]] == v for z, v in zip(numbers, valence)], dtype=bool)


def atom_stable_table(numbers: np.ndarray, charges: np.ndarray, valence: np.ndarray, table: str) -> np.ndarray:
    """Per-atom stability under a (element, charge) -> valences table: ``"midi"`` or ``"corrected"``."""
    allowed = VALENCY_TABLES[table]
    return np.array([
        v in allowed[SYMBOLS[int(z)]].get(int(q), ()) for z, q, v in zip(numbers, charges, valence)
    ], dtype=bool)
