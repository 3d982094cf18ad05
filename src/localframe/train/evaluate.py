"""Predictions, error metrics and plots — shared by the end of training and ``localframe evaluate``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from localframe.data.batch import AtomsBatch
from localframe.files import write_text
from localframe.models import AtomisticModel
from localframe.train import outputs

# label -> unit of its error, for reports
ERROR_UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³", "dipole": "e·Å"}


def predict(model: AtomisticModel, batches, labels: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(predicted, reference) arrays per label over all batches; energies also per atom."""
    model.eval()
    wants = outputs.requested(labels, model.has_dipole)
    wants_forces, wants_stress, wants_dipole = wants["forces"], wants["stress"], wants["dipole"]
    pairs: dict[str, tuple[list, list]] = {}

    def add(key, pred, ref):
        p, r = pairs.setdefault(key, ([], []))
        p.append(pred.detach().cpu().double().numpy())
        r.append(ref.detach().cpu().double().numpy())

    for batch in batches:
        batch: AtomsBatch
        out = model(batch, forces=wants_forces, stress=wants_stress, dipole=wants_dipole)
        n = batch.n_atoms.to(out["energy"].dtype)
        if "energy" in labels:
            add("energy", out["energy"], batch.labels["energy"])
            add("energy_per_atom", out["energy"] / n, batch.labels["energy"] / n)
        if wants_forces:
            add("forces", out["forces"].reshape(-1), batch.atom_labels["forces"].reshape(-1))
        if wants_stress:
            add("stress", out["stress"].reshape(-1), batch.labels["stress"].reshape(-1))
        if wants_dipole:
            add("dipole", out["dipole"].reshape(-1), batch.labels["dipole"].reshape(-1))
        for name in model.targets:
            if name in labels:
                add(name, out[name], batch.labels[name])
    return {k: (np.concatenate(p), np.concatenate(r)) for k, (p, r) in pairs.items()}


def metrics(pairs: dict[str, tuple[np.ndarray, np.ndarray]], units: dict[str, str] | None = None) -> dict[str, dict]:
    """MAE and RMSE per label, with its unit and the number of values."""
    units = {**ERROR_UNITS, **(units or {})}
    out = {}
    for key, (pred, ref) in pairs.items():
        err = pred - ref
        out[key] = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
                    "unit": units.get(key, ""), "count": int(err.size)}
    return out


def write_json(data: dict, path: str | Path) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def parity_plots(pairs: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "",
                 units: dict[str, str] | None = None) -> Path:
    """One parity panel per label (predicted vs reference, MAE in the corner), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {**ERROR_UNITS, **(units or {})}
    keys = [k for k in pairs if k != "energy_per_atom"] or list(pairs)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pred, ref = pairs[key]
        name = key
        if key == "energy":  # total energies carry a large offset; show them relative to the mean reference
            offset = float(ref.mean())
            pred, ref, name = pred - offset, ref - offset, f"energy − {offset:.6g}"
        lo, hi = float(min(pred.min(), ref.min())), float(max(pred.max(), ref.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5, rasterized=True)
        unit = units.get(key, "")
        ax.set_xlabel(f"reference {name} [{unit}]" if unit else f"reference {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.locator_params(nbins=5)
        mae = np.abs(pred - ref).mean()
        ax.text(0.04, 0.93, f"MAE {mae:.4g} {unit}", transform=ax.transAxes)
        ax.set_aspect("equal", adjustable="datalim")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def learning_curve(metrics_csv: str | Path, path: str | Path, units: dict[str, str] | None = None) -> Path | None:
    """From ``metrics.csv``: the training loss and validation metric (normalised), and beside them the
    validation MAE of each label in its own unit (``units`` adds the data's own), against the optimizer
    step (one point per row: per epoch, or per validation with ``train.val_every``), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {**ERROR_UNITS, **(units or {})}
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None

    def series(column):
        return [(float(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]

    mae_columns = [c for c in rows[0] if c.startswith("val_") and c.endswith("_mae") and series(c)]
    fig, axes = plt.subplots(1, 1 + len(mae_columns), figsize=(5.5 * (1 + len(mae_columns)), 4), squeeze=False)
    ax = axes[0][0]
    for column, label in (("train_loss", "training loss"), ("val_metric", "validation metric (L1)")):
        if series(column):
            ax.plot(*zip(*series(column)), marker="o", ms=3, label=label)
    ax.set_title("loss (normalised units)")
    ax.legend()
    for ax, column in zip(axes[0][1:], mae_columns):
        label = column[len("val_"):-len("_mae")]
        ax.plot(*zip(*series(column)), marker="o", ms=3, color="C2")
        unit = units.get(label, "")
        ax.set_title(f"validation {label} MAE" + (f" [{unit}]" if unit else ""))
    for ax in axes[0]:
        ax.set_yscale("log")
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
