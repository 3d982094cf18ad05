"""Speed suite: training and inference throughput of every model on the same batches.

Workloads (the same structures, dtype and thread count for every model):

==========  =========================================  ========================================
workload    training step (forward + backward + AdamW)  inference call (energy + forces)
==========  =========================================  ========================================
qm9         32 QM9 molecules, energy loss               the same 32 molecules
ethanol     8 rattled ethanol frames, energy + forces   one ethanol molecule (an MD step)
silicon     2 periodic Si cells of 64 atoms, E + F      one periodic Si box of 216 atoms
==========  =========================================  ========================================

Training throughput is structures per second; inference throughput is atoms × calls per second.
Neighbour lists are built once per batch, outside the timed calls, and are the same for every
model (peers included, see :mod:`.peers`); the time to build them is reported per workload.
Peers without periodic boundary conditions are marked "n/a" on the silicon workload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from localframe import dtypes
from localframe.bench import common, workloads
from localframe.data.batch import AtomsBatch
from localframe.errors import one_line


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    periodic: bool
    forces_in_training: bool
    make: Callable[[bool], tuple[list, list, str]]  # quick -> (training structures, inference structures, source)


def _qm9(quick: bool):
    count = 8 if quick else 32
    molecules, source = workloads.qm9_molecules(count)
    return molecules, molecules, source


def _ethanol(quick: bool):
    frames = workloads.ethanol_frames(4 if quick else 8, seed=0)
    return frames, frames[:1], "rattled ethanol (σ = 0.05 Å)"


def _silicon(quick: bool):
    train = [workloads.silicon_box(2, seed=k) for k in range(1 if quick else 2)]
    infer = [workloads.silicon_box(2 if quick else 3, seed=10)]
    return train, infer, "rattled diamond Si supercells (σ = 0.05 Å), periodic"


WORKLOADS = {
    w.name: w
    for w in (
        Workload("qm9", "QM9 molecules: train on energies; infer energy + forces", False, False, _qm9),
        Workload("ethanol", "ethanol: train on energies + forces; infer one molecule (MD step)", False, True, _ethanol),
        Workload("silicon", "periodic Si: train on energies + forces; infer one box", True, True, _silicon),
    )
}


def _train_step(model, batch: AtomsBatch, forces: bool) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    energy = batch.labels["energy"]
    reference_forces = batch.atom_labels.get("forces")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(batch, forces=forces, stress=False)
        loss = (out["energy"] - energy).pow(2).mean()
        if forces:
            loss = loss + (out["forces"] - reference_forces).pow(2).mean()
        loss.backward()
        optimizer.step()

    return step


def _infer_call(model, batch: AtomsBatch) -> Callable[[], None]:
    def call() -> None:
        out = model(batch, forces=True, stress=False)
        out["forces"].detach()

    return call


def run(names: list[str], threads: int = 1, dtype: str = "float32", warmup: int = 3, repeats: int = 10,
        quick: bool = False, cutoff: float = 5.0, max_seconds: float = 20.0, workload_names: list[str] | None = None,
        log: Callable[[str], None] = print, save: Callable[[dict], Any] | None = None) -> dict[str, Any]:
    """Time every model in ``names`` on every workload; returns a JSON-ready dict."""
    torch_dtype = dtypes.torch_dtype(dtype)
    result: dict[str, Any] = {"suite": "speed", "environment": common.environment(threads, dtype),
                              "settings": {"warmup": warmup, "repeats": repeats, "max_seconds": max_seconds,
                                           "cutoff": cutoff, "quick": quick, "models": list(names)},
                              "workloads": {}, "results": []}
    with common.threads(threads):
        for wname in workload_names or list(WORKLOADS):
            workload = WORKLOADS[wname]
            train_structures, infer_structures, source = workload.make(quick)
            train_structures = workloads.with_dummy_labels(train_structures)
            labels = ("energy", "forces")
            train_batch = AtomsBatch.from_atoms(train_structures, cutoff, labels=labels, dtype=torch_dtype)
            infer_batch = AtomsBatch.from_atoms(infer_structures, cutoff, dtype=torch_dtype)
            graph_time = common.timings(lambda: AtomsBatch.from_atoms(infer_structures, cutoff, dtype=torch_dtype),
                                        1, 5)
            result["workloads"][wname] = {
                "description": workload.description, "source": source, "periodic": workload.periodic,
                "train_structures": train_batch.n_structures, "train_atoms": int(train_batch.n_atoms.sum()),
                "train_pairs": int(train_batch.edge_index.shape[1]), "infer_structures": infer_batch.n_structures,
                "infer_atoms": int(infer_batch.n_atoms.sum()), "infer_pairs": int(infer_batch.edge_index.shape[1]),
                "forces_in_training": workload.forces_in_training, "neighbor_list_s": graph_time["median_s"],
            }
            for name in names:
                row: dict[str, Any] = {"workload": wname, "model": name, "label": common.label(name)}
                result["results"].append(row)
                if not common.supports(name, workload.periodic):
                    row["skipped"] = "n/a: no periodic boundary conditions"
                    continue
                start = time.perf_counter()
                try:
                    model = common.build(name, cutoff=cutoff, dtype=torch_dtype)
                    row["parameters"] = common.n_parameters(model)
                    model.train()
                    t = common.timings(_train_step(model, train_batch, workload.forces_in_training), warmup, repeats,
                                       max_seconds)
                    row["train"] = {**t, "structures_per_s": train_batch.n_structures / t["median_s"]}
                    model.eval()
                    t = common.timings(_infer_call(model, infer_batch), warmup, repeats, max_seconds)
                    row["infer"] = {**t, "atom_steps_per_s": int(infer_batch.n_atoms.sum()) / t["median_s"]}
                except Exception as err:  # a model that fails is reported, the suite goes on
                    row["error"] = common.failure(err, 300)
                log(f"speed  {wname:8s} {name:14s} " + (
                    f"train {row['train']['structures_per_s']:9.1f} structures/s  infer "
                    f"{row['infer']['atom_steps_per_s']:10.0f} atoms·steps/s" if "infer" in row else row.get("error", ""))
                    + f"  ({time.perf_counter() - start:.0f} s)")
            if save:
                save(result)  # after every workload: partial results survive an interruption
    result["environment"]["load_average_end"] = common.load_average()
    return result


def profile(name: str, workload: str = "qm9", mode: str = "train", threads: int = 1, dtype: str = "float32",
            steps: int = 3, cutoff: float = 5.0, top: int = 12) -> list[dict[str, Any]]:
    """The ``top`` (operator, input shapes) pairs by self CPU time over ``steps`` calls
    (torch.profiler; the profiler's own overhead inflates the absolute times), for model owners."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch_dtype = dtypes.torch_dtype(dtype)
    spec = WORKLOADS[workload]
    train_structures, infer_structures, _ = spec.make(False)
    with common.threads(threads):
        model = common.build(name, cutoff=cutoff, dtype=torch_dtype)
        if mode == "train":
            batch = AtomsBatch.from_atoms(workloads.with_dummy_labels(train_structures), cutoff,
                                          labels=("energy", "forces"), dtype=torch_dtype)
            model.train()
            call = _train_step(model, batch, spec.forces_in_training)
        else:
            batch = AtomsBatch.from_atoms(infer_structures, cutoff, dtype=torch_dtype)
            model.eval()
            call = _infer_call(model, batch)
        call()
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                call()
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "shapes": one_line(e.input_shapes, 80),
             "self_ms_per_step": e.self_cpu_time_total / 1000.0 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:top]]
