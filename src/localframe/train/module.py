r"""The Lightning module: losses, EMA of the weights, learning-rate schedule, atomic checkpoints.

Loss (each term averaged over a batch, in normalised units so the weights are comparable):

    L = w_E ℓ((E − Ê)/(N σ)) + w_F ℓ((F − F̂)/σ) + w_S ℓ((S − Ŝ)/σ) + w_μ ℓ(μ − μ̂) + w_t Σ_t ℓ((y_t − ŷ_t)/σ_t)

with σ the energy scale of the training split (force RMS, or per-atom energy spread), σ_t the
target's spread (times N for extensive targets) and ℓ the squared, absolute or Huber error.

Learning rate: linear warm-up, then either cosine decay to ``min_lr`` over whichever budget ends
first (``max_epochs`` or the wall-clock ``max_time``), a plateau schedule on the validation
metric, or constant. Validation, testing and export use the exponential moving average of the
weights when ``ema_decay`` is set.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from localframe.data.batch import AtomsBatch
from localframe.files import atomic_open
from localframe.models import AtomisticModel
from localframe.train import outputs
from localframe.train.config import LossWeights, TrainConfig
from localframe.train.denoise import DenoiseHead, denoising_error
from localframe.train.rundir import writing

LOSSES = {
    "mse": lambda x: x.pow(2).mean(),
    "l1": lambda x: x.abs().mean(),
    "huber": lambda x: torch.nn.functional.huber_loss(x, torch.zeros_like(x), delta=0.01),
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed, so a kill never leaves half a file; a
    failed write (disk full, no permission) is a one-line :class:`InputError` naming the kept one."""

    def __init__(self, run: str | os.PathLike | None = None):
        super().__init__()
        self.run = run

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with writing(path, self.run):
            os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
            with atomic_open(path) as handle:
                torch.save(checkpoint, handle)


class Task(L.LightningModule):
    def __init__(self, model: AtomisticModel, cfg: TrainConfig, labels: tuple[str, ...], energy_scale: float,
                 target_scales: dict[str, float], pretrain: bool = False, force_scale: float | None = None):
        super().__init__()
        self.model = model
        # coordinate denoising (localframe.train.denoise): the whole loss when pretraining, else Noisy Nodes;
        # force-aware (DeNS) with the force scale σ_F of the training split
        self.pretrain = pretrain
        self.denoise_head = (DenoiseHead(model.representation, force_scale).to(next(model.parameters()).dtype)
                             if pretrain or cfg.weights.denoise > 0 else None)
        self.cfg = cfg
        self.labels = tuple(labels)
        self.energy_scale = float(energy_scale)
        self.target_scales = dict(target_scales)
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay else None
        )
        if self.ema is not None:  # the average is not trained: keep it out of the optimiser and of DDP
            self.ema.requires_grad_(False)
        self.elapsed = 0.0  # seconds of training, kept across resumes
        self.plateau_scale = 1.0
        self.best_metric = math.inf
        self.stale = 0
        self._step_start = 0.0
        self.ranks_identical: bool | None = None  # set after distributed training

    def transfer_batch_to_device(self, batch: AtomsBatch, device, dataloader_idx: int) -> AtomsBatch:
        return batch.to(device)

    # ------------------------------------------------------------------ what to compute
    @property
    def eval_model(self) -> AtomisticModel:
        return self.ema.module if self.ema is not None else self.model

    def _wants(self) -> dict[str, bool]:
        return outputs.requested(self.labels, self.model.has_dipole, self.cfg.weights)

    def _errors(self, model: AtomisticModel, batch: AtomsBatch) -> dict[str, tuple[torch.Tensor, torch.Tensor | float]]:
        """Per label: the errors in physical units (flattened) and the scale that normalises them."""
        wants = self._wants()
        out = model(batch, forces=wants["forces"], stress=wants["stress"], dipole=wants["dipole"])
        n = batch.n_atoms.to(batch.dtype)
        sigma = self.energy_scale
        errors = {}
        if "energy" in self.labels:
            errors["energy"] = (out["energy"] - batch.labels["energy"], n * sigma)
        if wants["forces"]:
            errors["forces"] = ((out["forces"] - batch.atom_labels["forces"]).reshape(-1), sigma)
        if wants["stress"]:
            errors["stress"] = ((out["stress"] - batch.labels["stress"]).reshape(-1), sigma)
        if wants["dipole"]:
            errors["dipole"] = ((out["dipole"] - batch.labels["dipole"]).reshape(-1), 1.0)
        for name, aggregation in model.targets.items():
            scale = self.target_scales[name] * (n if aggregation == "sum" else 1.0)
            errors[name] = (out[name] - batch.labels[name], scale)
        return errors

    def _weighted(self, errors: dict, loss) -> torch.Tensor:
        """Σ_label w_label · loss(error / scale)."""
        w = self.cfg.weights
        total = 0.0
        for key, (err, scale) in errors.items():
            weight = getattr(w, key) if key in LossWeights.model_fields else w.targets
            total = total + weight * loss(err / scale)
        return total

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch, batch_idx):
        self._step_start = time.perf_counter()
        self._set_lr()

    def _denoising(self, model: AtomisticModel, batch: AtomsBatch) -> torch.Tensor:
        return denoising_error(self.denoise_head, model, batch, self.cfg.denoise_sigma, self.cfg.denoise_fraction)

    def training_step(self, batch: AtomsBatch, batch_idx: int):
        errors = {} if self.pretrain else self._errors(self.model, batch)
        loss = self._weighted(errors, LOSSES[self.cfg.loss])
        if self.denoise_head is not None:
            denoise = self._denoising(self.model, batch)
            self.log("train_denoise", denoise.detach(), batch_size=batch.n_structures, on_step=False, on_epoch=True)
            loss = loss + (1.0 if self.pretrain else self.cfg.weights.denoise) * denoise
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.n_structures, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.elapsed += time.perf_counter() - self._step_start
        if self.trainer.world_size > 1:  # the schedule follows the clock: every rank takes rank 0's, or their lr drift apart
            clock = torch.tensor([self.elapsed], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(clock, src=0)
            self.elapsed = float(clock)
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=False, on_step=True, on_epoch=False)

    def _progress(self) -> float:
        """Fraction of the training budget used: steps or wall-clock, whichever is further."""
        trainer = self.trainer
        total_steps = max(1, trainer.num_training_batches * self.cfg.max_epochs) if trainer.num_training_batches != math.inf else 1
        fraction = self.global_step / total_steps
        if self.cfg.max_time:
            fraction = max(fraction, self.elapsed / (60.0 * self.cfg.max_time))
        return min(fraction, 1.0)

    def _set_lr(self) -> None:
        cfg = self.cfg
        warm = min(1.0, (self.global_step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "cosine":
            decay = cfg.min_lr / cfg.lr + (1 - cfg.min_lr / cfg.lr) * 0.5 * (1 + math.cos(math.pi * self._progress()))
        elif cfg.schedule == "plateau":
            decay = max(self.plateau_scale, cfg.min_lr / cfg.lr)
        else:
            decay = 1.0
        for group in self.optimizers().param_groups:
            group["lr"] = cfg.lr * warm * decay

    def configure_optimizers(self):
        parameters = list(self.model.parameters())
        if self.denoise_head is not None:
            parameters += list(self.denoise_head.parameters())
        return torch.optim.AdamW(parameters, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: AtomsBatch, batch_idx: int):
        size = batch.n_structures
        if self.denoise_head is not None:
            denoise = self._denoising(self.eval_model, batch).detach()
            self.log("val_denoise", denoise, batch_size=size, sync_dist=True)
        if self.pretrain:
            self.log("val_metric", denoise, prog_bar=True, batch_size=size, sync_dist=True)
            return
        errors = {k: (err.detach(), scale) for k, (err, scale) in self._errors(self.eval_model, batch).items()}
        self.log("val_metric", self._weighted(errors, LOSSES["l1"]), prog_bar=True, batch_size=size, sync_dist=True)
        for key, (err, _) in errors.items():  # MAE in the label's own unit
            self.log(f"val_{key}_mae", err.abs().mean(), batch_size=size, sync_dist=True)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        metric = float(self.trainer.callback_metrics.get("val_metric", math.inf))
        if metric < self.best_metric:
            self.best_metric, self.stale = metric, 0
        else:
            self.stale += 1
            if self.cfg.schedule == "plateau" and self.stale % self.cfg.plateau_patience == 0:
                self.plateau_scale *= self.cfg.plateau_factor
        if self.cfg.early_stopping and self.stale >= self.cfg.early_stopping:
            self.trainer.should_stop = True

    def on_train_end(self):
        """Under DDP, check that every rank ends with the same weights (they must, bit for bit)."""
        if self.trainer.world_size > 1:
            flat = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
            gathered = self.all_gather(flat)
            self.ranks_identical = bool((gathered - gathered[0]).abs().max() == 0)
            if not self.ranks_identical:
                raise RuntimeError("distributed training ended with different weights on different ranks")

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["localframe_state"] = {"elapsed": self.elapsed, "plateau_scale": self.plateau_scale,
                                          "best_metric": self.best_metric, "stale": self.stale}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("localframe_state", {})
        self.elapsed = state.get("elapsed", 0.0)
        self.plateau_scale = state.get("plateau_scale", 1.0)
        self.best_metric = state.get("best_metric", math.inf)
        self.stale = state.get("stale", 0)
