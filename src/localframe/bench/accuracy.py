"""Accuracy under a budget: every model trained by the same loop, on the same data and split, for
the same training time, then tested with the same metrics.

Tasks:

* ``qm9``  — U0 (learned as its atomization energy ``U0_atom``; the two differ by a constant per
  composition, so their errors are equal), 10,000 training and 1,000 validation molecules of the
  standard split, tested on the standard test molecules (all 10,831 unless ``n_test`` is given);
  the training settings of ``configs/qm9_U0.yaml``.
* ``md17`` — an MD17-style GFN2-xTB ethanol trajectory at 500 K (made with
  :func:`localframe.reference.sample`, seed 0, cached), 950 training / 50 validation frames, tested
  on an independent trajectory (seed 1, 500 frames; ``test_frames``); energies and forces, the
  training settings of ``configs/md17_ethanol.yaml``.

Both tasks read their split sizes and their ``train`` section from those example configs
(:func:`task_spec`); the benchmark overrides only the budget, the seed and the dtype.

The loop is localframe's own Lightning task (:class:`localframe.train.module.Task`: loss in
normalised units, AdamW, warm-up then cosine decay over the budget, gradient clipping, EMA of the
weights), with the normalisation of :func:`localframe.train.data.normalization` — for localframe
models and peers alike (peers enter through :mod:`.peers`). The budget counts training steps only
(``Task.elapsed``: forward, backward, optimiser and EMA updates); validation runs every tenth of
the budget, outside it, and the EMA weights of the best validation point are tested. A model
stops at the first step that ends past the budget.

Peers trained by their own programs with their own recipes (:mod:`.own_trainers`, e.g.
``mace-own``) get the same structures and the same test metrics; their budget is the wall time of
the program.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from localframe import dtypes
from localframe.bench import common, own_trainers, workloads
from localframe.progress import Progress


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    train: dict[str, Any]
    n_train: int
    n_val: int
    n_test: int | None
    target: str | None = None  # a QM9 scalar target; None: energies and forces
    frames: int = 0  # frames of the generated trajectory (md17)
    test_frames: int = 0  # > 0: tested on an independent trajectory (seed 1) of this many frames
    extra: dict[str, Any] = field(default_factory=dict)


#: The example config each task takes its split and training settings from (``configs/`` of the source
#: tree); the benchmark overrides only the budget (``max_time``, ``max_epochs``), the seed and the dtype.
CONFIGS = {"qm9": "qm9_U0.yaml", "md17": "md17_ethanol.yaml"}
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
#: What the tasks state themselves: the description, the evaluation batch size (off the clock), the
#: trajectory length of the generated md17 data.
_TASK_FACTS = {
    "qm9": dict(description="QM9 U0 (as U0_atom), standard split", eval_batch_size=128, n_test=None, target="U0_atom"),
    "md17": dict(description="GFN2-xTB ethanol at 500 K (MD17-style), energies + forces, tested on an independent "
                 "trajectory", eval_batch_size=64, n_test=None, frames=1000, test_frames=500),
}
_BUDGET_KEYS = ("max_time", "max_epochs", "seed", "dtype", "threads")


def task_spec(name: str, config_dir: Path | None = None) -> TaskSpec:
    """Task ``name`` with the split and ``train`` section of its example config (:data:`CONFIGS`)."""
    from localframe.errors import InputError
    from localframe.train import config as configuration

    path = Path(config_dir or CONFIG_DIR) / CONFIGS[name]
    if not path.is_file():
        raise InputError(f"the accuracy task {name!r} takes its settings from the example config, which is "
                         "missing (run the benchmark from a source checkout)", str(path))
    cfg = configuration.load(path)
    train = {k: v for k, v in cfg.train.model_dump().items() if k not in _BUDGET_KEYS}
    facts = dict(_TASK_FACTS[name])
    train["eval_batch_size"] = facts.pop("eval_batch_size")
    return TaskSpec(name, facts.pop("description"), train, n_train=cfg.data.n_train, n_val=cfg.data.n_val, **facts)


QUICK = {"md17": dict(n_train=40, n_val=10, n_test=10, frames=50, test_frames=10, warmup_steps=5)}


@dataclass
class Prepared:
    spec: TaskSpec
    data: Any
    splits: dict[str, np.ndarray]
    datasets: dict[str, Any]
    targets: dict[str, str]
    norm: Any
    avg_neighbors: float
    source: str
    test_data: Any = None  # the test structures' StructureSet when they are not part of ``data``

    def structures(self, split: str) -> list:
        """The Atoms of ``split`` (train, val, test), with their labels."""
        if split == "test" and self.test_data is not None:
            return list(self.test_data.atoms)
        return [self.data.atoms[i] for i in self.splits.get(split, [])]


def prepare(spec: TaskSpec, cutoff: float, dtype: torch.dtype, data_dir: Path, log: Callable[[str], None]) -> Prepared:
    """Load the task's data, split it and build every graph once (shared by all models)."""
    from localframe.data import qm9, sources
    from localframe.train.data import GraphDataset, make_splits, normalization

    start = time.perf_counter()
    test_data = None
    if spec.target:
        data = sources.load("qm9", targets=[spec.target], n_train=spec.n_train, n_val=spec.n_val)
        targets = {spec.target: qm9.AGGREGATION[spec.target]}
        source = "QM9 (qm9pack)"
    else:
        path = workloads.xtb_ethanol(Path(data_dir) / f"ethanol_xtb_{spec.frames}.extxyz", spec.frames, seed=0)
        data = sources.load(str(path))
        targets = {}
        source = f"{path.name}: GFN2-xTB Langevin MD of ethanol, 500 K, {spec.frames} frames, seed 0"
        if spec.test_frames:
            frames = spec.n_test or spec.test_frames
            test_path = workloads.xtb_ethanol(Path(data_dir) / f"ethanol_xtb_{frames}_seed1.extxyz", frames, seed=1)
            test_data = sources.load(str(test_path))
            source += f"; test: {test_path.name}, an independent trajectory (seed 1, {frames} frames)"
    splits = make_splits(data, None if spec.target else spec.n_train, None if spec.target else spec.n_val,
                         0 if test_data is not None else spec.n_test, 42)
    datasets = {name: GraphDataset(data, idx, cutoff, dtype) for name, idx in splits.items() if len(idx)}
    if test_data is not None:
        splits["test"] = np.arange(len(test_data))
        datasets["test"] = GraphDataset(test_data, splits["test"], cutoff, dtype)
    train = datasets["train"]
    pairs = sum(g.edge_index.shape[1] for g in train.graphs)
    atoms = sum(int(g.n_atoms.sum()) for g in train.graphs)
    log(f"accuracy {spec.name}: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} "
        f"({time.perf_counter() - start:.0f} s to load and build graphs)")
    return Prepared(spec, data, splits, datasets, targets, normalization(data, splits["train"], targets),
                    pairs / max(atoms, 1), source, test_data)


def _selection_metric(errors: dict[str, dict], spec: TaskSpec, energy_scale: float) -> float:
    """The validation number that picks the best point: the target MAE (QM9), or the task's
    weighted L1 in normalised units (energies and forces)."""
    if spec.target:
        return errors[spec.target]["mae"]
    w = spec.train["weights"]
    return (w.get("energy", 1.0) * errors["energy_per_atom"]["mae"] + w.get("forces", 0.0) * errors["forces"]["mae"]) / energy_scale


def _errors(model, dataset, batch_size: int, labels, units: dict[str, str] | None = None) -> dict[str, dict]:
    from localframe.train.data import loader
    from localframe.train.evaluate import metrics, predict

    was_training = model.training
    pairs = predict(model, loader(dataset, batch_size, shuffle=False), labels)
    model.train(was_training)
    return metrics(pairs, units)


def _budget_callback(task_module, budget_s: float, evaluate: Callable[[], dict], record: list, bar=None):
    from lightning.pytorch.callbacks import Callback

    class Budget(Callback):
        """Stops training at the budget; evaluates the EMA weights every tenth of it (off the clock)."""

        def __init__(self):
            self.next_eval = budget_s / 10.0
            self.best: tuple[float, dict] | None = None

        def check(self, trainer) -> None:
            entry = {"train_s": round(task_module.elapsed, 2), "steps": trainer.global_step, **evaluate()}
            record.append(entry)
            if self.best is None or entry["metric"] < self.best[0]:
                self.best = (entry["metric"], copy.deepcopy(task_module.eval_model.state_dict()))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if task_module.elapsed >= self.next_eval:
                self.check(trainer)
                self.next_eval += budget_s / 10.0
            if task_module.elapsed >= budget_s:
                trainer.should_stop = True
            if bar is not None:
                bar.update(trainer.global_step, trained=f"{task_module.elapsed / 60:.1f}/{budget_s / 60:g} min")

    return Budget()


def train_one(prepared: Prepared, name: str, seed: int, budget_minutes: float, dtype: str,
              cutoff: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Train model ``name`` for ``budget_minutes`` of training steps; test the best EMA weights."""
    import lightning as L

    from localframe.train.config import TrainConfig
    from localframe.train.trainer import build_trainer
    from localframe.train.data import loader
    from localframe.train.module import Task

    spec, norm = prepared.spec, prepared.norm
    torch_dtype = dtypes.torch_dtype(dtype)
    hparams = {"avg_num_neighbors": prepared.avg_neighbors} if name == "mace" else {}
    model = common.build(name, cutoff=cutoff, dtype=torch_dtype, seed=seed, targets=prepared.targets, **hparams)
    norm.apply(model)
    tc = TrainConfig(**spec.train, max_time=budget_minutes, max_epochs=1_000_000, seed=seed, dtype=dtype)
    labels = prepared.data.labels
    task_module = Task(model, tc, labels, norm.energy_scale, norm.target_scales)
    val = prepared.datasets["val"]

    def evaluate() -> dict:
        errors = _errors(task_module.eval_model, val, tc.eval_batch_size, labels)
        return {"metric": _selection_metric(errors, spec, norm.energy_scale),
                **{k: v["mae"] for k, v in errors.items()}}

    record: list[dict] = []
    bar = Progress(None, f"accuracy {spec.name} {name} seed {seed}").start()
    budget = _budget_callback(task_module, 60.0 * budget_minutes, evaluate, record, bar)
    L.seed_everything(seed, workers=True, verbose=False)
    trainer = build_trainer(
        dtype, accelerator="cpu", devices=1, max_epochs=tc.max_epochs, gradient_clip_val=tc.clip_grad,
        callbacks=[budget], enable_checkpointing=False, inference_mode=False, num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    wall = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on the disabled validation loop and the like
        try:
            trainer.fit(task_module, loader(prepared.datasets["train"], tc.batch_size, shuffle=True, seed=seed))
        except BaseException:
            bar.close(stopped=True)
            raise
    bar.update(trainer.global_step)
    bar.close()
    wall = time.perf_counter() - wall
    budget.check(trainer)  # the final weights
    task_module.eval_model.load_state_dict(budget.best[1])
    best = min(record, key=lambda r: r["metric"])
    row: dict[str, Any] = {
        "model": name, "label": common.label(name), "seed": seed, "parameters": common.n_parameters(model),
        "train_s": round(task_module.elapsed, 1), "wall_s": round(wall, 1), "steps": trainer.global_step,
        "epochs": trainer.current_epoch, "structures_per_s": trainer.global_step * tc.batch_size / max(task_module.elapsed, 1e-9),
        "best_at_s": best["train_s"], "curve": record,
    }
    if "test" in prepared.datasets:
        errors = _errors(task_module.eval_model, prepared.datasets["test"], tc.eval_batch_size, labels,
                         prepared.data.units)
        row["test"] = {k: {"mae": v["mae"], "rmse": v["rmse"], "unit": v["unit"], "count": v["count"]}
                       for k, v in errors.items()}
    summary = ", ".join(f"{k} {v['mae'] * 1000:.1f} m{v['unit']}" for k, v in row.get("test", {}).items()
                        if k in ("energy", "forces", spec.target))
    log(f"accuracy {spec.name:5s} {name:14s} seed {seed}: {row['steps']} steps in {row['train_s']:.0f} s "
        f"(wall {row['wall_s']:.0f} s) test MAE {summary}")
    return row


def train_own(prepared: Prepared, name: str, seed: int, budget_minutes: float, threads: int, workdir: Path,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Train peer ``name`` by its own program (:mod:`.own_trainers`) on the prepared split; test it
    with the same metrics as :func:`train_one`."""
    from localframe.bench import own_trainers

    spec, norm = prepared.spec, prepared.norm
    structures = {split: prepared.structures(split) for split in ("train", "val", "test")}
    row = own_trainers.train_one(name, structures, seed, budget_minutes, threads, workdir,
                                 lambda errors: _selection_metric(errors, spec, norm.energy_scale),
                                 prepared.data.units, log=log)
    summary = ", ".join(f"{k} {v['mae'] * 1000:.1f} m{v['unit']}" for k, v in row.get("test", {}).items()
                        if k in ("energy", "forces"))
    log(f"accuracy {spec.name:5s} {name:14s} seed {seed}: {row['epochs']} epochs in {row['wall_s']:.0f} s "
        f"(own trainer) test MAE {summary}")
    return row


def run(names: list[str], task_names: list[str], budget_minutes: float, seeds: int = 1, threads: int = 1,
        dtype: str = "float32", cutoff: float = 5.0, n_train: int | None = None, n_test: int | None = None,
        quick: bool = False, data_dir: str | Path = "runs/bench/data", log: Callable[[str], None] = print,
        save: Callable[[dict], Any] | None = None) -> dict[str, Any]:
    """Train every model on every task for ``seeds`` seeds; returns a JSON-ready dict."""
    from localframe.train.trainer import quiet_lightning

    quiet_lightning(logging.ERROR)
    result: dict[str, Any] = {
        "suite": "accuracy", "environment": common.environment(threads, dtype),
        "settings": {"budget_minutes": budget_minutes, "seeds": seeds, "models": list(names), "tasks": list(task_names),
                     "cutoff": cutoff, "quick": quick, "n_train": n_train, "n_test": n_test,
                     "budget": "training steps only (forward, backward, optimiser, EMA); validation off the clock"},
        "tasks": {},
    }
    with common.threads(threads):
        for task_name in task_names:
            spec = task_spec(task_name)
            changes: dict[str, Any] = {}
            if quick and task_name in QUICK:
                q = dict(QUICK[task_name])
                changes.update({k: q.pop(k) for k in ("n_train", "n_val", "n_test", "frames", "test_frames") if k in q})
                changes["train"] = {**spec.train, **q}
            if n_train is not None:
                changes["n_train"] = n_train
            if n_test is not None:
                changes["n_test"] = n_test
            if spec.frames and "n_train" in changes and "frames" not in changes:
                # keep the validation and test sizes when the training set shrinks or grows
                rest = 0 if spec.test_frames else (changes.get("n_test") or spec.frames - spec.n_train - spec.n_val)
                changes["frames"] = changes["n_train"] + spec.n_val + rest
            spec = TaskSpec(**{**spec.__dict__, **changes})
            entry: dict[str, Any] = {"description": spec.description, "train_settings": spec.train,
                                     "n_train": spec.n_train, "n_val": spec.n_val, "rows": []}
            result["tasks"][task_name] = entry
            try:
                prepared = prepare(spec, cutoff, dtypes.torch_dtype(dtype), Path(data_dir), log)
            except Exception as err:
                entry["skipped"] = f"data not available: {common.failure(err, 200)}"
                log(f"accuracy {task_name}: {entry['skipped']}")
                continue
            entry.update({"source": prepared.source, "n_test": len(prepared.splits.get("test", [])),
                          "energy_scale": prepared.norm.energy_scale, "avg_neighbors": prepared.avg_neighbors})
            for name in names:
                for seed in range(seeds):
                    try:
                        if own_trainers.is_own(name):
                            work = Path(data_dir).parent / "own" / f"{task_name}-{name}-seed{seed}"
                            entry["rows"].append(train_own(prepared, name, seed, budget_minutes, threads, work, log))
                        else:
                            entry["rows"].append(train_one(prepared, name, seed, budget_minutes, dtype, cutoff, log))
                    except Exception as err:
                        message = common.failure(err, 300)
                        entry["rows"].append({"model": name, "label": label(name), "seed": seed, "error": message})
                        log(f"accuracy {task_name} {name} seed {seed}: {message}")
                    if save:
                        save(result)  # after every model and seed
    result["environment"]["load_average_end"] = common.load_average()
    return result


def label(name: str) -> str:
    return own_trainers.label(name) if own_trainers.is_own(name) else common.label(name)


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds of the test MAE of ``key``, per model."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        values = [r["test"][key]["mae"] for r in rows if r["model"] == name and key in r.get("test", {})]
        if values:
            out[name] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                         "n": len(values)}
    return out
