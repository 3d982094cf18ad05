"""Per-layer forward and backward variance at initialisation for each ``model.init`` choice.

``python -m localframe.bench.init_variance --out docs/figures/init_variance.png`` measures, on a batch
of QM9 training molecules (the Virgo statistics from another sample of them), the mean square of the
invariant features after every message-passing layer and of ∂E/∂(features), for LEFTNet (leftnet-cpu),
PaiNN and SchNet at their defaults under ``pytorch``, ``unit`` and ``virgo``, averaged over seeds
(:func:`localframe.nn.init.layer_variances`). Writes the plot and a JSON of the numbers next to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.nn import init

MODELS = {"LEFTNet (leftnet-cpu)": ("leftnet", "cpu"), "PaiNN": ("painn", None), "SchNet": ("schnet", None)}
CHOICES = ("pytorch", "unit", "virgo")


def measure(n_molecules: int = 32, seeds: int = 3) -> dict:
    from localframe.data import qm9

    data = qm9.load()
    train = qm9.split()["train"]
    rng = np.random.default_rng(0)
    picked = rng.permutation(train)[: n_molecules + init.VIRGO_SAMPLE]
    result: dict = {}
    for label, (name, preset) in MODELS.items():
        model = models.create(name, preset=preset)
        cutoff = model.cutoff
        graphs = [AtomsBatch.from_atoms(data.atoms(int(k)), cutoff) for k in picked]
        batch, sample = AtomsBatch.collate(graphs[:n_molecules]), graphs[n_molecules:]
        result[label] = {}
        for choice in CHOICES:
            forward, backward = [], []
            for seed in range(seeds):
                torch.manual_seed(seed)
                model = models.create(name, preset=preset)
                init.initialize(model.representation, choice, sample)
                f, b = init.layer_variances(model, batch)
                forward.append(f)
                backward.append(b)
            result[label][choice] = {"forward": np.mean(forward, 0).tolist(), "backward": np.mean(backward, 0).tolist()}
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(result), figsize=(4 * len(result), 6.5), squeeze=False)
    for col, (label, per_choice) in enumerate(result.items()):
        for row, kind in enumerate(("forward", "backward")):
            ax = axes[row][col]
            for choice, values in per_choice.items():
                ax.semilogy(range(1, len(values[kind]) + 1), values[kind], "o-", label=choice)
            ax.set_title(f"{label}: {kind}")
            ax.set_xlabel("message-passing layer")
            ax.set_ylabel("mean square of s" if kind == "forward" else "mean square of ∂E/∂s")
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("Per-layer variance at initialisation, 32 QM9 molecules, mean of 3 seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/figures/init_variance.png")
    parser.add_argument("--molecules", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = measure(args.molecules, args.seeds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(result, out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    for label, per_choice in result.items():
        for choice, v in per_choice.items():
            print(f"{label:22s} {choice:8s} forward " + " ".join(f"{x:.3g}" for x in v["forward"])
                  + " | backward " + " ".join(f"{x:.3g}" for x in v["backward"]))


if __name__ == "__main__":
    main()
