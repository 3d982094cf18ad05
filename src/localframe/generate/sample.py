"""Sampling a trained generative model to an SDF file (``localframe generate sample MODEL``).

Molecule sizes are drawn from the training set's atom-count histogram. A model trained with
``bonds.enabled`` writes its generated bonds to the SDF; for a model without bonds they come from
EDM's distance table (:func:`localframe.generate.tables.distance_bonds`).

A conditioned model (config ``condition``) is sampled as EDM does: without ``condition``, (atom
count, property) pairs are drawn jointly from the training molecules; with ``condition``
(``{"alpha": 70.0}``) every molecule gets that value and its atom count is drawn from the training
molecules nearest to it (the 1 % closest in normalised property, at least 20). The property
of each molecule is written to its SDF record as a data item (``>  <alpha>``).

``fragment`` (an SDF or XYZ file), ``add``, ``resample`` and ``separation`` sample through
:mod:`localframe.generate.inpaint`: molecules that complete the fragment (its atoms first, exactly at
their input coordinates) and/or keep atoms apart.

A sample whose positions or features come out non-finite, or with a coordinate beyond 1000 Å
(:data:`localframe.generate.molecule.MAX_COORDINATE`; an untrained or diverged model can give NaN or
~1e45 Å), is never written as a molecule: it becomes an empty SDF record marked failed
(:func:`localframe.generate.molecule.failed_molecule`), counted in the result (``failed``), and
``generate evaluate`` counts it as invalid and unstable.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from localframe.generate.inpaint import guide
from localframe.generate.molecule import as_written, write_sdf
from localframe.generate.train import load


def sizes_and_conditions(process, histogram: np.ndarray, n: int, rng, condition: dict | None = None):
    """(atom counts (n,), properties (n, C) or None) to sample, as described above."""
    from localframe.errors import InputError

    names = process.conditions
    if condition and not names:
        raise InputError("the model is not conditioned on a property; drop --condition")
    if not names:
        return rng.choice(len(histogram), size=n, p=histogram / histogram.sum()), None
    pairs = process.condition_pairs
    if condition is None:
        pick = rng.integers(len(pairs), size=n)
        return pairs[pick, 0].astype(np.int64), pairs[pick, 1:]
    missing = [name for name in names if name not in condition]
    extra = [name for name in condition if name not in names]
    if missing or extra:
        raise InputError(f"--condition must give exactly {', '.join(names)} (the model's properties)")
    values = np.array([float(condition[name]) for name in names])
    distance = np.abs((pairs[:, 1:] - values) / process.condition_std.double().cpu().numpy()).sum(1)
    nearest = np.argsort(distance, kind="stable")[:max(20, len(pairs) // 100)]
    return pairs[rng.choice(nearest, size=n), 0].astype(np.int64), np.tile(values, (n, 1))


def sample(model: str, n: int, steps: int, out: str, seed: int = 0, batch_size: int = 100, threads: int = 1,
           progress: bool = True, condition: dict | None = None, fragment: str | None = None, add: int | None = None,
           resample: int = 1, separation: bool = False, device: str = "auto") -> dict:
    """``device``: auto | cpu | cuda | cuda:N (:func:`localframe.generate.train.resolve_device`); the draws are
    made on CPU from ``seed`` whatever the device (see :mod:`localframe.generate.train`)."""
    from localframe.errors import InputError
    from localframe.progress import Progress

    if n < 1 or steps < 1 or batch_size < 1:
        raise InputError("--n, --steps and --batch-size must be positive")
    torch.set_num_threads(threads)
    process, histogram = load(model, device)
    rng = np.random.default_rng(seed)
    sizes, values = sizes_and_conditions(process, histogram, n, rng, condition)
    guided = guide(process, histogram, n, rng, fragment, add, resample, separation)
    sizes = sizes if guided is None or guided.sizes is None else guided.sizes
    generator = torch.Generator(device="cpu").manual_seed(seed)  # CPU draws, moved to the device
    molecules, start = [], time.perf_counter()
    meter = Progress(n, "generate sample", enabled=progress, unit="molecules")
    meter.start()
    for k in range(0, n, batch_size):
        extra = {"condition": values[k:k + batch_size]} if values is not None else {}
        draw = guided.sample if guided is not None else process.sample
        molecules += draw(sizes[k:k + batch_size], steps, generator, **extra)
        meter.update(len(molecules))
    meter.close()
    seconds = time.perf_counter() - start
    for k, mol in enumerate(molecules):
        mol.info["name"] = f"sample_{k}"
        if values is not None:
            mol.info["properties"] = dict(zip(process.conditions, values[k].tolist()))
    molecules = [as_written(mol) for mol in molecules]
    write_sdf(out, molecules)
    failed = [mol.failed for mol in molecules if mol.failed]
    return {"n": n, "steps": steps, "seconds": seconds, "molecules_per_second": n / seconds, "out": str(out),
            "failed": len(failed), "failed_reasons": sorted(set(failed))}
