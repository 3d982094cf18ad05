"""Summary of a data source: structures, elements, atoms per structure, label statistics, units (internal and
as in the file), and the reader's notes (discovered keys, where units came from)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from ase.data import chemical_symbols

from localframe.data.readers import StructureSet


def summarize(data: StructureSet) -> dict:
    """Plain-dict summary (JSON-able) of a structure set."""
    counts = np.array([len(a) for a in data.atoms])
    elements = Counter()
    for a in data.atoms:
        elements.update(a.numbers.tolist())
    periodic = sum(bool(a.pbc.any()) for a in data.atoms)
    labels = {}
    for label in data.labels:
        per_atom = label in data.atoms[0].arrays
        values = [np.asarray(a.arrays[label] if per_atom else a.info[label], dtype=float) for a in data.atoms]
        flat = np.concatenate([v.reshape(-1) for v in values])
        stats = {
            "unit": data.units.get(label, ""), "file_unit": data.source_units.get(label, ""), "per_atom": per_atom,
            "shape": list(values[0].shape[1:] if per_atom else values[0].shape),
            "mean": float(flat.mean()), "std": float(flat.std()), "min": float(flat.min()), "max": float(flat.max()),
        }
        if label == "energy":
            per = np.array([float(v) for v in values]) / counts
            stats["mean_per_atom"] = float(per.mean())
        if per_atom and flat.size:
            stats["rms"] = float(np.sqrt((flat**2).mean()))
        labels[label] = stats
    return {
        "source": data.source,
        "structures": len(data),
        "periodic_structures": periodic,
        "elements": {chemical_symbols[z]: int(n) for z, n in sorted(elements.items())},
        "atoms_per_structure": {"min": int(counts.min()), "mean": float(counts.mean()), "max": int(counts.max()),
                                "total": int(counts.sum())},
        "splits": {name: int(len(idx)) for name, idx in data.splits.items()},
        "labels": labels,
        "length_unit_in_file": data.source_units.get("length", ""),
        "notes": list(data.notes),
    }


def render(summary: dict, console=None) -> None:
    """Print a summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    apc = summary["atoms_per_structure"]
    console.print(f"[bold]{summary['source']}[/bold]: {summary['structures']:,} structures "
                  f"({summary['periodic_structures']:,} periodic), {apc['total']:,} atoms, "
                  f"{apc['min']}–{apc['max']} atoms per structure (mean {apc['mean']:.1f})")
    console.print("elements: " + ", ".join(f"{el} {n:,}" for el, n in summary["elements"].items()))
    if summary.get("length_unit_in_file"):
        console.print(f"positions in the file: {summary['length_unit_in_file']} (converted to Å)")
    if summary["splits"]:
        console.print("split: " + " / ".join(f"{name} {n:,}" for name, n in summary["splits"].items()))
    table = Table(title="labels")
    text_columns = ("label", "unit", "in file", "shape")
    for col in (*text_columns, "mean", "std", "min", "max"):
        text = col in text_columns  # numbers never wrap or truncate; text columns wrap when the terminal is narrow
        table.add_column(col, justify="left" if text else "right", no_wrap=not text, overflow="fold")
    for name, s in summary["labels"].items():
        dims = (["N"] if s["per_atom"] else []) + [str(n) for n in s["shape"]]  # N: per atom
        shape = f"({', '.join(dims)})" if dims else "scalar"
        table.add_row(name, s["unit"], s.get("file_unit", ""), shape, *(f"{s[k]:.6g}" for k in ("mean", "std", "min", "max")))
    console.print(table)
