"""``localframe train``: from a config to a run directory.

RUN_DIR/
  config.yaml         the resolved configuration
  checkpoints/        last.ckpt (every ``checkpoint_minutes`` and at the end), best.ckpt (validation)
  metrics.csv         one row per validation (every epoch, or every ``train.val_every`` steps): step, time,
                      learning rate, training loss, validation metrics
  model.pt            the deployable model (EMA weights of the best validation epoch)
  test_metrics.json   MAE and RMSE per label on the test split
  learning_curve.png, parity.png
"""

from __future__ import annotations

import csv
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from localframe import models
from localframe.data import sources
from localframe.dtypes import torch_dtype
from localframe.errors import InputError
from localframe.io import save_model
from localframe.progress import Progress
from localframe.train import config as configuration
from localframe.train import outputs
from localframe.nn.elements import N_ELEMENTS
from localframe.train.data import GraphDataset, Normalization, loader, make_splits, normalization
from localframe.train.evaluate import ERROR_UNITS, learning_curve, metrics, parity_plots, predict, write_json
from localframe.train.module import AtomicCheckpointIO, Task
from localframe.train.rundir import writing
from localframe.train.trainer import build_trainer, quiet_lightning



class MetricsCSV(Callback):
    """Appends one row per epoch to RUN_DIR/metrics.csv (rank 0 only): time, learning rate, training
    loss, validation metric and the validation MAE of every learned label in its own unit.

    ``per_validation`` (``train.val_every``): one row per validation instead, written when it ends; its
    ``epoch`` is the epoch in progress and ``train_loss`` the mean over the steps since the last row."""

    def __init__(self, path: Path, labels, run: Path | None = None, denoise: bool = False, per_validation: bool = False):
        self.path, self.run, self.per_validation = path, run, per_validation
        self.columns = ["epoch", "step", "time_s", "lr", "train_loss", "val_metric", *(f"val_{k}_mae" for k in labels),
                        *(["train_denoise", "val_denoise"] if denoise else [])]
        self._losses: list[float] = []

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        if self.per_validation:
            loss = trainer.callback_metrics.get("train_loss_step")
            if loss is not None:
                self._losses.append(float(loss))

    def on_validation_end(self, trainer, task):
        if self.per_validation and not trainer.sanity_checking:
            mean = sum(self._losses) / len(self._losses) if self._losses else None
            self._losses = []
            self._write(trainer, task, mean)

    def on_train_epoch_end(self, trainer, task):
        if not self.per_validation:
            self._write(trainer, task, trainer.callback_metrics.get("train_loss_epoch"))

    def _write(self, trainer, task, train_loss):
        if trainer.global_rank != 0:
            return
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, "time_s": f"{task.elapsed:.1f}",
               "lr": f"{trainer.optimizers[0].param_groups[0]['lr']:.3e}", "train_loss": _value(train_loss)}
        row.update({key: _value(m.get(key)) for key in self.columns[5:]})
        new = not self.path.exists()
        with writing(self.path, self.run), open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)


class EpochProgress(Callback):
    """Progress of each epoch through :mod:`localframe.progress` (rank 0 only): batches done and the
    training loss; the epoch's last line adds the validation metric and MAEs. On a terminal a live
    bar per epoch, elsewhere one line per epoch (and one every ``interval`` seconds in long epochs)."""

    def __init__(self, labels, units: dict[str, str], interval: float = 30.0):
        self.labels, self.units, self.interval = list(labels), {**ERROR_UNITS, **units}, interval
        self.bar: Progress | None = None

    def on_train_epoch_start(self, trainer, task):
        if trainer.global_rank == 0:
            total = trainer.num_training_batches
            self.bar = Progress(None if total == float("inf") else total, f"epoch {trainer.current_epoch}",
                                interval=self.interval, unit="batches").start()

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        if self.bar is not None:
            self.bar.update(batch_idx + 1, loss=_float(trainer.callback_metrics.get("train_loss_step")))

    def on_train_epoch_end(self, trainer, task):
        if self.bar is None:
            return
        m = trainer.callback_metrics
        minutes = f"{task.elapsed / 60:.1f}" + (f"/{task.cfg.max_time:g}" if task.cfg.max_time else "") + " min"
        fields = {"loss": _float(m.get("train_loss_epoch")), "val": _float(m.get("val_metric")), "trained": minutes}
        for key in self.labels:
            if m.get(f"val_{key}_mae") is not None:
                fields[f"{key} MAE"] = f"{float(m[f'val_{key}_mae']):.4g} {self.units.get(key, '')}".strip()
        self.bar.update(self.bar.completed, **{k: v for k, v in fields.items() if v is not None})
        self.bar.close()
        self.bar = None

    def on_exception(self, trainer, task, exception):
        if self.bar is not None:
            self.bar.close(stopped=True)
            self.bar = None


def _float(t) -> float | None:
    return None if t is None else float(t)


def _value(t) -> str:
    return "" if t is None else f"{float(t):.6g}"


def target_aggregations(cfg: configuration.RunConfig) -> dict[str, str]:
    """Scalar targets and how atoms add up to them (see :func:`localframe.data.sources.aggregation`)."""
    return {name: sources.aggregation(name) for name in cfg.data.targets}


def _trainer(cfg: configuration.RunConfig, probe: bool = False, **options) -> L.Trainer:
    """A Lightning Trainer on the config's hardware (see :func:`localframe.train.trainer.build_trainer`)."""
    t = cfg.trainer
    return build_trainer(cfg.train.dtype, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
                         strategy=t.strategy, probe=probe, **options)


def _check_weights(weights: configuration.LossWeights, labels, targets, source: str) -> None:
    """There is a label to learn, and at least one has a positive loss weight."""
    terms = {key: (weights.targets if key in targets else getattr(weights, key))
             for key in labels if key in targets or key in configuration.LossWeights.model_fields}
    if not terms:
        raise InputError(f"nothing to learn: no energy, forces, stress or dipole label, and data.targets is empty "
                         f"(labels of this source: {', '.join(labels) or 'none'})", source)
    if not any(w > 0 for w in terms.values()):
        raise InputError(f"train.weights: every label to learn has weight 0 ({', '.join(f'{k} {w:g}' for k, w in terms.items())}); "
                         "nothing would be learned")


def train(cfg: configuration.RunConfig, resume: bool = False, progress: bool = True, pretrain: bool = False) -> dict:
    """Train, test and export. Returns the contents of test_metrics.json plus ``model_object``,
    the exported model in memory (rank 0; other ranks of a distributed run return ``{}``).

    ``pretrain``: coordinate-denoising pretraining (:mod:`localframe.train.denoise`) instead: the labels of the
    data are not used (none are needed), nothing is tested, and ``model.pt`` records
    ``metadata["pretraining"]``; fine-tune it with ``model.init=RUN_DIR/model.pt``."""
    run = Path(cfg.run_dir)
    last = run / "checkpoints" / "last.ckpt"
    if resume and not last.exists():
        raise InputError("nothing to resume: no checkpoints/last.ckpt", str(run))
    if not resume and last.exists():
        raise InputError("already holds a run; resume it with --resume or choose another run_dir", str(run))
    quiet_lightning()
    _trainer(cfg, probe=True)  # the hardware settings, before any work
    with writing(run / "config.yaml", run):
        run.mkdir(parents=True, exist_ok=True)
        configuration.dump(cfg, run / "config.yaml")
    tc = cfg.train
    L.seed_everything(tc.seed, workers=True, verbose=False)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    dtype = torch_dtype(tc.dtype)

    # data: splits, graphs, statistics of the training split
    data = sources.load(cfg.data.source, keys=cfg.data.keys, units=cfg.data.units, format=cfg.data.format,
                        selection=dict(targets=cfg.data.targets, n_train=cfg.data.n_train, n_val=cfg.data.n_val,
                                       seed=cfg.data.split_seed, train_offset=cfg.data.train_offset))
    targets = {} if pretrain else target_aggregations(cfg)
    missing = [t for t in targets if t not in data.labels]
    if missing:
        raise InputError(f"data.targets {missing} are not labels of this source (labels: {list(data.labels)})", data.source)
    if not pretrain:
        _check_weights(tc.weights, data.labels, targets, data.source)
    splits = make_splits(data, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test, cfg.data.split_seed)
    cutoff = cfg.model.cutoff
    spe = cfg.model.spe is not None
    datasets = {name: GraphDataset(data, idx, cutoff, dtype, bonds=spe) for name, idx in splits.items() if len(idx)}
    _note_unmatched(datasets.values(), data.source)
    norm = Normalization([0.0] * N_ELEMENTS, 1.0, {}) if pretrain else normalization(data, splits["train"], targets)

    # model with its normalisation
    model = models.create(cfg.model.name, cutoff=cutoff, dipole="dipole" in data.labels and not pretrain, targets=targets, spe=cfg.model.spe,
                          **cfg.model.hparams)
    model = model.to(dtype)
    provenance = initialize(model, cfg.model.init, datasets["train"], tc.seed)
    norm.apply(model)
    task = Task(model, tc, () if pretrain else data.labels, norm.energy_scale, norm.target_scales, pretrain=pretrain,
                force_scale=_denoise_force_scale(tc, data, splits["train"], pretrain))

    learned = [] if pretrain else outputs.learned(data.labels, targets)
    callbacks = [
        ModelCheckpoint(dirpath=run / "checkpoints", filename="last", train_time_interval=timedelta(minutes=tc.checkpoint_minutes),
                        save_top_k=1, enable_version_counter=False),
        ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val_metric", mode="min", save_top_k=1,
                        enable_version_counter=False),
        MetricsCSV(run / "metrics.csv", learned, run, denoise=task.denoise_head is not None,
                   per_validation=tc.val_every is not None),
    ]
    if progress:
        callbacks.append(EpochProgress(learned, data.units))
    # validation at the end of every epoch, or every train.val_every optimizer steps across epochs
    every = dict(val_check_interval=tc.val_every, check_val_every_n_epoch=None) if tc.val_every else {}
    trainer = _trainer(
        cfg, max_epochs=tc.max_epochs, max_time=timedelta(minutes=tc.max_time) if tc.max_time else None,
        gradient_clip_val=tc.clip_grad, callbacks=callbacks, plugins=[AtomicCheckpointIO(run)],
        default_root_dir=run, inference_mode=False, num_sanity_val_steps=0, **every,
    )
    start = time.perf_counter()
    trainer.fit(
        task, loader(datasets["train"], tc.batch_size, shuffle=True, seed=tc.seed),
        loader(datasets["val"], tc.eval_batch_size, shuffle=False), ckpt_path=str(last) if resume else None,
    )
    trainer.save_checkpoint(last)
    if trainer.global_rank != 0:
        return {}

    # export the EMA weights of the best validation epoch, then test them
    best = run / "checkpoints" / "best.ckpt"
    if best.exists():
        task.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    elif tc.val_every:
        import sys

        print(f"localframe train: {run}: no validation ran (train.val_every={tc.val_every} > the "
              f"{trainer.global_step} steps trained); model.pt holds the last weights, not a validated best",
              file=sys.stderr)
    final = task.eval_model
    elements = sorted({int(z) for k in splits["train"] for z in data.atoms[k].numbers})
    final.metadata = {
        "units": {"energy": "eV", "length": "Å", **{t: data.units.get(t, "") for t in targets}},
        "elements": elements, "normalization": norm.to_dict(), "labels": list(data.labels),
        "data": cfg.data.source, "model": cfg.model.name, "train_seconds": round(task.elapsed, 1),
        "init": provenance,
    }
    if pretrain:
        final.metadata["pretraining"] = {
            "task": "force-aware coordinate denoising (DeNS)" if tc.denoise_forces else "coordinate denoising",
            "sigma": tc.denoise_sigma, "fraction": tc.denoise_fraction, "data": cfg.data.source,
            "structures": int(len(splits["train"])), "steps": int(trainer.global_step),
            "seconds": round(task.elapsed, 1), "val_denoise": round(float(task.best_metric), 6),
            **({"train_offset": cfg.data.train_offset} if cfg.data.train_offset is not None else {}),
        }
    with writing(run / "model.pt", run):
        save_model(final, run / "model.pt")
    result = {"wall_seconds": round(time.perf_counter() - start, 1), "train_seconds": round(task.elapsed, 1),
              "epochs": trainer.current_epoch, "steps": trainer.global_step, "model": cfg.model.name,
              "world_size": trainer.world_size, "validated": best.exists()}
    if task.ranks_identical is not None:
        result["ranks_identical"] = task.ranks_identical
    if "test" in datasets and not pretrain:
        pairs = predict(final, loader(datasets["test"], tc.eval_batch_size, shuffle=False), data.labels)
        result["test"] = metrics(pairs, data.units)
        result["n_test"] = len(datasets["test"])
        with writing(run / "parity.png", run):
            parity_plots(pairs, run / "parity.png", title=f"{cfg.model.name} on the test split", units=data.units)
    with writing(run / "test_metrics.json", run):
        write_json(result, run / "test_metrics.json")
    if (run / "metrics.csv").exists():
        with writing(run / "learning_curve.png", run):
            learning_curve(run / "metrics.csv", run / "learning_curve.png", data.units)
    return {**result, "model_object": final}


def _note_unmatched(datasets, source: str) -> None:
    """One stderr line when SMILES bonds fell back to covalent radii (:class:`GraphDataset`)."""
    unmatched = sum(d.unmatched for d in datasets)
    if unmatched:
        sources._stderr(f"{source}: SPE bonds: {unmatched} structures have a SMILES that does not match their "
                        "atoms; their bonds come from covalent radii")


def _denoise_force_scale(tc: configuration.TrainConfig, data, train: np.ndarray, pretrain: bool) -> float | None:
    """σ_F of force-aware denoising (``train.denoise_forces``; :mod:`localframe.train.denoise`), else None."""
    if not tc.denoise_forces:
        return None
    if not pretrain and tc.weights.denoise == 0:
        raise InputError("train.denoise_forces is set but nothing is denoised: set train.weights.denoise > 0 "
                         "(Noisy Nodes) or run localframe pretrain")
    if "forces" not in data.labels:
        raise InputError(f"train.denoise_forces needs forces in the data (labels: {', '.join(data.labels) or 'none'})",
                         data.source)
    from localframe.train.denoise import force_scale

    return force_scale([data.atoms[k] for k in train])


def initialize(model: models.AtomisticModel, choice: str, train: GraphDataset, seed: int) -> dict:
    """``model.init``: an initialisation of :mod:`localframe.nn.init` (Virgo from up to
    :data:`~localframe.nn.init.VIRGO_SAMPLE` training graphs drawn with ``seed``) or, for a model file,
    its pretrained representation (:func:`localframe.train.finetune.load_representation`).
    Returns what the model file records of it."""
    from localframe.nn import init

    if choice.endswith(".pt"):
        from localframe.train.finetune import load_representation

        return load_representation(model, choice)
    sample = None
    if choice == "virgo":
        picked = np.random.default_rng(seed).permutation(len(train))[: init.VIRGO_SAMPLE]
        sample = [train[int(k)] for k in picked]
    factors = init.initialize(model.representation, choice, sample)
    return {"choice": choice, **({"virgo_factors": [round(f, 6) for f in factors]} if factors else {})}


def evaluate(model_path: str | Path, source: str, out: str | Path | None = None, batch_size: int = 64,
             allow_unseen_elements: bool = False, **options) -> dict:
    """MAE and RMSE per label of a model file on any data source; JSON and a parity plot in ``out``.

    A structure with an element the model was not trained on stops it with :class:`InputError`
    unless ``allow_unseen_elements``."""
    from localframe.io import check_elements, load_model, trained_elements

    model = load_model(model_path)
    data = sources.load(source, **options)
    known = None if allow_unseen_elements else trained_elements(model)
    for k, atoms in enumerate(data.atoms):
        check_elements(known, atoms.numbers, data.source, k)
    graphs = GraphDataset(data, np.arange(len(data)), model.cutoff, next(model.parameters()).dtype,
                          bonds=model.spe is not None)
    _note_unmatched([graphs], data.source)
    pairs = predict(model, loader(graphs, batch_size, shuffle=False), data.labels)
    if not pairs:
        raise InputError(f"the data has none of the labels the model predicts (data labels: {list(data.labels)})", source)
    result = {"model": str(model_path), "data": str(source), "structures": len(data), "metrics": metrics(pairs, data.units)}
    if out:
        out = Path(out)
        with writing(out / "metrics.json"):
            out.mkdir(parents=True, exist_ok=True)
            write_json(result, out / "metrics.json")
        with writing(out / "parity.png"):
            parity_plots(pairs, out / "parity.png", title=f"{Path(model_path).name} on {Path(source).name}",
                         units=data.units)
    return result
