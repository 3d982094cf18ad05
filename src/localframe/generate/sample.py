"""Sampling a trained generative model to an SDF file (``localframe generate sample MODEL``).

Molecule sizes are drawn from the training set's atom-count histogram. The processes generate
atoms, positions and charges but no bonds: the SDF's bonds come from EDM's distance table
(:func:`localframe.generate.tables.distance_bonds`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from localframe.generate.molecule import write_sdf
from localframe.generate.train import load


def sample(model: str, n: int, steps: int, out: str, seed: int = 0, batch_size: int = 100, threads: int = 1,
           progress: bool = True) -> dict:
    from localframe.errors import InputError
    from localframe.progress import Progress

    if n < 1 or steps < 1 or batch_size < 1:
        raise InputError("--n, --steps and --batch-size must be positive")
    torch.set_num_threads(threads)
    process, histogram = load(model)
    rng = np.random.default_rng(seed)
    sizes = rng.choice(len(histogram), size=n, p=histogram / histogram.sum())
    generator = torch.Generator().manual_seed(seed)
    molecules, start = [], time.perf_counter()
    meter = Progress(n, "generate sample", enabled=progress, unit="molecules")
    meter.start()
    for k in range(0, n, batch_size):
        molecules += process.sample(sizes[k:k + batch_size], steps, generator)
        meter.update(len(molecules))
    meter.close()
    seconds = time.perf_counter() - start
    for k, mol in enumerate(molecules):
        mol.info["name"] = f"sample_{k}"
    write_sdf(out, molecules)
    return {"n": n, "steps": steps, "seconds": seconds, "molecules_per_second": n / seconds, "out": str(out)}
