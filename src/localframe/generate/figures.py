"""A figure of generated vs data distributions: atoms per molecule, bonded distances, atom types."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localframe.generate.molecule import Molecule
from localframe.generate.tables import SYMBOLS, distance_bonds


def _bond_lengths(molecules: list[Molecule]) -> np.ndarray:
    out = []
    for m in molecules:
        b = m.bonds if m.bonds is not None else distance_bonds(m.numbers, m.positions)
        if len(b):
            out.append(np.linalg.norm(m.positions[b[:, 0]] - m.positions[b[:, 1]], axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def distributions(samples: list[Molecule], data: list[Molecule], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from localframe.files import atomic_open

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for mols, label in ((data, "QM9 train"), (samples, "generated")):
        mols = [m for m in mols if not m.failed]  # failed samples have no atoms to plot
        n = np.array([len(m) for m in mols])
        axes[0].hist(n, bins=np.arange(n.min() if len(n) else 0, 31) - 0.5, density=True, alpha=0.5, label=label)
        axes[1].hist(_bond_lengths(mols), bins=np.linspace(0.8, 1.8, 81), density=True, alpha=0.5, label=label)
        z = np.concatenate([m.numbers for m in mols])
        symbols = sorted(SYMBOLS)
        offset = -0.2 if label == "QM9 train" else 0.2
        axes[2].bar(np.arange(len(symbols)) + offset, [(z == s).mean() for s in symbols], width=0.4, label=label)
    axes[0].set(xlabel="atoms per molecule", ylabel="density")
    axes[1].set(xlabel="bonded distance (EDM table or file bonds), Å")
    axes[2].set(xticks=range(5), xticklabels=[SYMBOLS[s] for s in sorted(SYMBOLS)], ylabel="fraction of atoms")
    axes[0].legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path
