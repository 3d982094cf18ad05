r"""Peers trained by their own trainers, with their own documented recipes, on the accuracy suite's data.

:mod:`.peers` puts peer bodies behind localframe's model interface so that one loop trains everyone;
that measures the architectures under *our* recipe. This module measures a peer as its authors
train it: the suite's train / validation / test structures are written to extended-XYZ files, the
peer's training program runs as a subprocess with its documented settings, and its final model
is evaluated on the suite's test structures with the suite's metric code
(:func:`localframe.train.evaluate.metrics`: energy MAE and RMSE per structure and per atom, force
MAE and RMSE per component), so the figures are comparable with the rows of localframe's models.

Recipes are data (:data:`RECIPES`); one runner per training program (:data:`RUNNERS`).

MACE (``mace_run_train`` of mace-torch)
---------------------------------------
Settings: the training example of the MACE README (mace-torch 0.3.16, "Training"): ``--model MACE``,
``--r_max 5.0``, ``--batch_size 10``, ``--ema --ema_decay 0.99``, ``--amsgrad``, ``--stage_two``
(energy weight raised for the last ~20 % of the epochs), MACE's default learning rate 0.01 and
ReduceLROnPlateau schedule, ``--E0s average`` (the README's choice when isolated-atom energies are not
known: a least-squares fit, as localframe's per-element references), with the force and energy
weights 1000 and 1 of MACE's molecular (rMD17) examples and the README's float32
(``--default_dtype float32``, "usually a factor of x2 in training"). Size: ``--num_channels 64
--max_L 1`` (64x0e + 64x1o) against the README's 128 channels, to match the CPU size of
localframe's models in this suite (``leftnet-cpu``: H = 64).

Units: MACE assumes eV and Å (its calculator's ``energy_units_to_eV``/``length_units_to_A`` default
to 1); localframe's data are in eV and Å, written under MACE's default keys ``REF_energy`` (eV, per
structure) and ``REF_forces`` (eV/Å, per atom), named explicitly on the command line.

Budget: ``mace_run_train`` has no time limit, and its schedule (stage two from an epoch) needs the
number of epochs. The runner therefore trains one epoch first, times the call (t₁) and the epoch in
it (t_e, from the time stamps of MACE's log), then restarts from that checkpoint
(``--restart_latest``) for N = max(1, ⌊(B − t₁ − (t₁ − t_e))/t_e⌋) more epochs with stage two from
epoch ⌈0.8 N⌉ of that call, B the budget (:func:`epochs_for`; the second call pays the start-up
and closing work t₁ − t_e again). The first call already sets up stage two (from epoch 1, its end), so
that its checkpoint's optimizer groups carry the stage-two learning rate the restart needs. The process is also killed at 1.1 B as a safety net; its best
checkpoint is then turned into a model by one more call that trains no epoch (off the clock).
Everything ``mace_run_train`` does is on the clock (start-up, data loading, its validation after
every epoch on the validation structures, saving and compiling the model), unlike localframe's
rows, whose budget counts training steps only; its closing error tables are skipped
(``--skip_evaluate_heads=Default``, ``--plot=False``): the suite evaluates the model itself.
MACE saves the EMA weights at its best validation point and, with stage two, a second model: both
are evaluated on the validation structures and the one with the lower error (the suite's
selection metric) is tested.

NequIP (``nequip-train`` of nequip, in its own environment)
-----------------------------------------------------------
nequip 0.19.1 needs e3nn >= 0.6 and mace-torch 0.3.16 pins e3nn 0.4.4, so the two cannot share a
Python environment. The programs are subprocesses anyway: ``nequip-train`` and the evaluation run
with the executables of the virtual environment named by ``LOCALFRAME_NEQUIP_ENV`` (created with
``python -m venv DIR && DIR/bin/pip install torch==2.13.0 nequip==0.19.1``).

Settings: NequIP's tutorial config (``configs/tutorial.yaml`` of the nequip repository, the config of
its "User Guide"), written by :func:`nequip_config` as a Hydra ``config.yaml``: ``NequIPGNNModel``
with 4 layers, ``l_max`` 1, 32 features, parity, 8 Bessel functions, polynomial cutoff p = 6, radial
MLP 2 x 64, r_max 5.0 Å, ZBL pair potential, per-type energy scales (force RMS) and shifts (mean
per-atom energy) from the training data, float32; ``EMALightningModule`` (decay 0.999), loss
``EnergyForceLoss`` per-atom energy : forces = 1 : 1, Adam lr 0.01, ReduceLROnPlateau (factor 0.6,
patience 5, threshold 0.2, min 1e-6) and EarlyStopping (patience 20, min_delta 1e-3) on the validation
weighted sum of energy MAE and force MAE, batch 5 (validation 10). For the CPU: ``compile_mode:
eager`` (the tutorial compiles on GPUs), ``num_workers: 0``, a CSV logger instead of wandb; elements
map to types one to one.

Budget: Lightning's ``trainer.max_time`` = B (NequIP's own time limit: it stops after the step at
which B of training time has passed, validation included). Lightning's timer starts with training,
so start-up, data loading and the data statistics are off that clock (the row's ``wall_s`` is the
whole call); the process is killed at 1.5 B + 300 s as a safety net. The best (``best.ckpt``,
lowest validation metric, EMA weights) and the last checkpoint are evaluated on the validation
structures by NequIP's ASE calculator in NequIP's environment (:data:`_NEQUIP_EVAL` writes energies
and forces to a file), and the one with the lower error is tested the same way; the metrics are
the suite's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms

#: Keys of the extended-XYZ files: MACE's defaults (mace.tools.default_keys).
ENERGY_KEY, FORCES_KEY = "REF_energy", "REF_forces"


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str  # as given to the accuracy suite (``--models``)
    label: str  # as shown in reports
    package: str  # distribution, for the version
    program: str  # console script of its trainer
    source: str  # where the settings come from
    settings: dict[str, Any]  # flags of the program (True: a switch)
    runner: str  # key of RUNNERS
    env: str | None = None  # variable naming the program's own virtual environment (None: this Python's)
    install: str = "pip install 'localframe[bench]'"  # how to get the program


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("mace-own", "MACE (own trainer)", "mace-torch", "mace_run_train",
               "MACE README, 'Training' (mace-torch 0.3.16); force/energy weights 1000/1 of MACE's rMD17 examples; "
               "64 channels, L = 1 for the CPU",
               {"model": "MACE", "num_channels": 64, "max_L": 1, "r_max": 5.0, "batch_size": 10,
                "valid_batch_size": 10, "lr": 0.01, "amsgrad": True, "ema": True, "ema_decay": 0.99,
                "stage_two": True, "forces_weight": 1000.0, "energy_weight": 1.0, "E0s": "average",
                "default_dtype": "float32", "device": "cpu"},
               "mace"),
        Recipe("nequip-own", "NequIP (own trainer)", "nequip", "nequip-train",
               "NequIP configs/tutorial.yaml (nequip 0.19.1, 'User Guide' tutorial config); CPU: eager mode, "
               "num_workers 0, CSV logger",
               {"cutoff_radius": 5.0, "num_layers": 4, "l_max": 1, "num_features": 32, "parity": True,
                "num_bessels": 8, "bessel_trainable": False, "polynomial_cutoff_p": 6, "radial_mlp_depth": 2,
                "radial_mlp_width": 64, "zbl": True, "batch_size": 5, "valid_batch_size": 10,
                "lr": 0.01, "ema_decay": 0.999, "energy_weight": 1.0, "forces_weight": 1.0,
                "per_atom_energy": True, "lr_factor": 0.6, "lr_patience": 5, "lr_threshold": 0.2,
                "min_lr": 1e-6, "early_stopping_patience": 20, "early_stopping_min_delta": 1e-3,
                "model_dtype": "float32", "max_epochs": 1000},
               "nequip", env="LOCALFRAME_NEQUIP_ENV",
               install="python -m venv /path/to/venv && /path/to/venv/bin/pip install torch==2.13.0 nequip==0.19.1, "
                       "then LOCALFRAME_NEQUIP_ENV=/path/to/venv"),
    )
}


def names() -> list[str]:
    return list(RECIPES)


def is_own(name: str) -> bool:
    return name in RECIPES


def label(name: str) -> str:
    return RECIPES[name].label


def env_dir(recipe: Recipe) -> Path | None:
    """The program's own virtual environment (``recipe.env`` set and non-empty), else None."""
    value = os.environ.get(recipe.env, "") if recipe.env else ""
    return Path(value).expanduser() if value else None


def version(name: str) -> str | None:
    """Version of the recipe's package in the environment its program runs in."""
    recipe = RECIPES[name]
    env = env_dir(recipe)
    if env is None and recipe.env is None:
        try:
            return importlib.metadata.version(recipe.package)
        except importlib.metadata.PackageNotFoundError:
            return None
    if env is None:
        return None
    found = sorted(env.glob(f"lib/python*/site-packages/{recipe.package}-*.dist-info"))
    return found[-1].name[len(recipe.package) + 1:-len(".dist-info")] if found else None


def status(name: str) -> dict[str, Any]:
    """``{"available", "version", "reason"}``: the trainer program is found (:func:`find_program`)."""
    recipe = RECIPES[name]
    if find_program(recipe) is None:
        return {"available": False, "version": version(name), "reason": f"skipped: {missing(recipe)}"}
    return {"available": True, "version": version(name), "reason": ""}


def missing(recipe: Recipe) -> str:
    """One line: where the program was looked for and how to install it."""
    if recipe.env is None:
        where = f"{recipe.package} not installed"
    elif env_dir(recipe) is None:
        where = f"{recipe.env} not set"
    else:
        where = f"not in {recipe.env}={env_dir(recipe)}"
    return f"{recipe.program} not found ({where}; {recipe.install})"


def find_program(recipe: Recipe, program: str | None = None) -> str | None:
    """``program`` (default: the recipe's trainer) in ``$env/bin`` when the recipe has its own
    environment, else next to this interpreter or on PATH."""
    program = program or recipe.program
    env = env_dir(recipe)
    if recipe.env is not None:
        path = env / "bin" / program if env is not None else None
        return str(path) if path is not None and path.is_file() else None
    return program_path(program)


def program_path(program: str) -> str | None:
    """The console script next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.is_file() else shutil.which(program)


# ---------------------------------------------------------------------- data files
def write_extxyz(structures: list[Atoms], path: str | Path) -> Path:
    """Write structures with their labels (eV, eV/Å) under :data:`ENERGY_KEY` and :data:`FORCES_KEY`.

    Only positions, numbers, cell, pbc and the two labels are written; the keys are not ASE's
    calculator names, so ASE writes them as plain info and array columns.
    """
    from ase.io import write

    frames = []
    for atoms in structures:
        out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        out.info[ENERGY_KEY] = float(atoms.info["energy"])
        out.arrays[FORCES_KEY] = np.asarray(atoms.arrays["forces"], dtype=float).copy()
        frames.append(out)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), frames, format="extxyz")
    return path


def flags(settings: dict[str, Any]) -> list[str]:
    """``{"lr": 0.01, "ema": True}`` → ``["--lr=0.01", "--ema"]``."""
    out = []
    for key, value in settings.items():
        if value is True:
            out.append(f"--{key}")
        elif value is not False and value is not None:
            out.append(f"--{key}={value}")
    return out


# ---------------------------------------------------------------------- running a program
def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def run_program(argv: list[str], log_path: Path, timeout_s: float | None, threads: int) -> tuple[int | None, float]:
    """Run ``argv`` in its own process group, output appended to ``log_path``; (exit code or None
    when killed at ``timeout_s``, wall seconds)."""
    start = time.perf_counter()
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_environment(threads),
                                cwd=log_path.parent, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
    return code, time.perf_counter() - start


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(text[-lines:])


# ---------------------------------------------------------------------- MACE
def epochs_for(budget_s: float, first_call_s: float, epoch_s: float) -> tuple[int, int]:
    """(epochs after the timed first call, epoch where stage two starts).

    The first call took t₁ = o + t_e (o: start-up and final evaluation, t_e: one epoch with its
    validation); the second pays o again, so N = max(1, ⌊(B − t₁ − o)/t_e⌋), stage two from ⌈0.8 N⌉
    (the last ~20 %)."""
    overhead = max(first_call_s - epoch_s, 0.0)
    n = max(1, int((budget_s - first_call_s - overhead) // max(epoch_s, 1e-9)))
    return n, max(1, math.ceil(0.8 * n))


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: (.*)$")


def epochs_done(log_path: Path) -> int:
    """Epochs MACE finished in all calls logged to ``log_path`` (its "Epoch N:" lines)."""
    text = log_path.read_text(errors="replace")
    return len(re.findall(r"^\S+ \S+ INFO: Epoch \d+:", text, flags=re.M))


def epoch_seconds(log_path: Path) -> float | None:
    """Seconds from "Started training" to the first "Epoch" line of the last call in MACE's log."""
    from datetime import datetime

    text = log_path.read_text(errors="replace").split("\n$ ")[-1]
    start = end = None
    for line in text.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        if m.group(2).startswith("Started training"):
            start = stamp
        elif m.group(2).startswith("Epoch ") and start is not None and end is None:
            end = stamp
    return (end - start).total_seconds() if start and end else None


def _latest_epoch(checkpoints: Path) -> int | None:
    found = [int(m.group(1)) for p in checkpoints.glob("*.pt") if (m := re.search(r"_epoch-(\d+)", p.name))]
    return max(found) if found else None


def mace_train(recipe: Recipe, files: dict[str, Path], workdir: Path, budget_s: float, seed: int, threads: int,
               epochs: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train with ``mace_run_train`` in ``workdir``; returns the model files, epochs and wall time.

    ``epochs`` given: exactly that many epochs (no timing run, no kill). Otherwise the budget rule of
    the module docstring."""
    program = find_program(recipe)
    if program is None:
        raise RuntimeError(missing(recipe))
    base = [program, f"--name=model", f"--seed={seed}", f"--train_file={files['train']}",
            f"--valid_file={files['val']}", f"--energy_key={ENERGY_KEY}", f"--forces_key={FORCES_KEY}",
            "--model_dir=.", "--checkpoints_dir=checkpoints", "--log_dir=logs", "--results_dir=results",
            "--plot=False", "--skip_evaluate_heads=Default", *flags({k: v for k, v in recipe.settings.items() if k != "stage_two"})]
    logfile = workdir / "train.log"
    if epochs is not None:
        code, wall = run_program(base + [f"--max_num_epochs={epochs}"], logfile, None, threads)
        if code != 0:
            raise RuntimeError(f"{recipe.program} exited with {code}: {_tail(logfile)}")
        return {"epochs": epochs, "wall_s": wall, "killed": False, "models": _models(workdir)}
    # The first call sets up stage two too, from epoch 1 = its end, so it trains stage one only: MACE builds
    # its stage-two scheduler before restoring a checkpoint, and restoring the optimizer replaces the parameter
    # groups with the saved ones, which must therefore already carry the scheduler's ``swa_lr`` (a start
    # beyond max_num_epochs would switch stage two off and save groups without it).
    later = ["--stage_two", "--start_stage_two=1"] if recipe.settings.get("stage_two") else []
    code, first = run_program(base + later + ["--max_num_epochs=1"], logfile, budget_s * 1.1, threads)
    if code != 0:
        raise RuntimeError(f"{recipe.program} (first epoch) exited with {code}: {_tail(logfile)}")
    epoch = epoch_seconds(logfile) or first
    more, stage_two = epochs_for(budget_s, first, epoch)
    log(f"accuracy {recipe.name}: first call {first:.0f} s (epoch {epoch:.0f} s); {more} more epochs, "
        f"stage two from {stage_two}")
    two = [f"--stage_two", f"--start_stage_two={stage_two}"] if recipe.settings.get("stage_two") else []
    code, wall = run_program(base + two + [f"--max_num_epochs={more}", "--restart_latest"], logfile,
                             max(budget_s * 1.1 - first, 1.0), threads)
    killed = code is None
    if killed:  # the best checkpoint becomes a model: a call that trains no epoch
        latest = _latest_epoch(workdir / "checkpoints")
        code, _ = run_program(base + two + [f"--max_num_epochs={latest}", "--restart_latest"], logfile, None, threads)
    if code != 0:
        raise RuntimeError(f"{recipe.program} exited with {code}: {_tail(logfile)}")
    return {"epochs": epochs_done(logfile), "epochs_planned": 1 + more, "stage_two_from": stage_two, "first_call_s": round(first, 1), "epoch_s": round(epoch, 1),
            "wall_s": round(first + wall, 1), "killed": killed, "models": _models(workdir)}


def _models(workdir: Path) -> list[Path]:
    found = [workdir / n for n in ("model.model", "model_stagetwo.model") if (workdir / n).is_file()]
    if not found:
        raise RuntimeError(f"no model written in {workdir}: {_tail(workdir / 'train.log')}")
    return found


def mace_predict(model_path: Path, structures: list[Atoms], dtype: str = "float32") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(predicted, reference) pairs of ``energy``, ``energy_per_atom`` and ``forces`` (as
    :func:`localframe.train.evaluate.predict` returns them), from MACE's ASE calculator."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mace.calculators import MACECalculator

        calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype=dtype)
    e_pred, f_pred = [], []
    for atoms in structures:
        probe = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        probe.calc = calc
        e_pred.append(probe.get_potential_energy())
        f_pred.append(probe.get_forces().reshape(-1))
    return _pairs(np.array(e_pred), np.concatenate(f_pred), structures)


def n_parameters(model_path: Path) -> int:
    """Trainable parameters of a model saved whole with ``torch.save``."""
    import torch

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.load(str(model_path), map_location="cpu", weights_only=False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- NequIP
def chemical_symbols(structures: list[Atoms]) -> list[str]:
    """The elements of ``structures``, by atomic number (NequIP's ``chemical_symbols`` / ``type_names``)."""
    from ase.data import chemical_symbols as symbols

    return [symbols[z] for z in sorted({int(z) for atoms in structures for z in atoms.numbers})]


def max_time(seconds: float) -> str:
    """Lightning's ``max_time`` string ``DD:HH:MM:SS`` for ``seconds`` (rounded down, at least 1 s)."""
    s = max(int(seconds), 1)
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def nequip_config(settings: dict[str, Any], files: dict[str, Path], symbols: list[str], seed: int,
                  budget_s: float | None, epochs: int | None = None) -> dict[str, Any]:
    """The ``nequip-train`` config (Hydra) of NequIP's tutorial (configs/tutorial.yaml) with ``settings``.

    Data: the suite's train and validation files (extended XYZ, :data:`ENERGY_KEY` → ``total_energy``,
    :data:`FORCES_KEY` → ``forces``, eV and Å). Stops after ``epochs`` epochs if given, else after
    ``budget_s`` seconds of Lightning's timer (``trainer.max_time``) or ``max_epochs``."""
    s = settings
    interval = "${monitored_metric}"
    loader = {"_target_": "torch.utils.data.DataLoader", "num_workers": 0}
    model = {
        "_target_": "nequip.model.NequIPGNNModel", "compile_mode": "eager", "seed": seed,
        "model_dtype": s["model_dtype"], "type_names": "${model_type_names}", "r_max": "${cutoff_radius}",
        "num_bessels": s["num_bessels"], "bessel_trainable": s["bessel_trainable"],
        "polynomial_cutoff_p": s["polynomial_cutoff_p"], "num_layers": s["num_layers"], "l_max": s["l_max"],
        "parity": s["parity"], "num_features": s["num_features"], "radial_mlp_depth": s["radial_mlp_depth"],
        "radial_mlp_width": s["radial_mlp_width"],
        "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
        "per_type_energy_scales": "${training_data_stats:per_type_forces_rms}",
        "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
        "per_type_energy_scales_trainable": False, "per_type_energy_shifts_trainable": False,
    }
    if s["zbl"]:
        model["pair_potential"] = {"_target_": "nequip.nn.pair_potential.ZBL", "units": "metal",
                                   "chemical_species": "${chemical_symbols}"}
    metrics = {"_target_": "nequip.train.EnergyForceMetrics",
               "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0}}
    trainer = {
        "_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "enable_checkpointing": True,
        "max_epochs": epochs if epochs is not None else s["max_epochs"], "check_val_every_n_epoch": 1,
        "log_every_n_steps": 20, "enable_progress_bar": False,
        "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": "${hydra:runtime.output_dir}"},
        "callbacks": [
            {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": interval,
             "min_delta": s["early_stopping_min_delta"], "patience": s["early_stopping_patience"]},
            {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": interval,
             "dirpath": "${hydra:runtime.output_dir}", "filename": "best", "save_last": True},
        ],
    }
    if epochs is None and budget_s is not None:
        trainer["max_time"] = max_time(budget_s)
    return {
        "run": ["train"], "cutoff_radius": s["cutoff_radius"], "chemical_symbols": symbols,
        "model_type_names": "${chemical_symbols}", "monitored_metric": "val0_epoch/weighted_sum",
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule", "seed": seed,
            "train_file_path": str(files["train"]), "val_file_path": str(files["val"]),
            "key_mapping": {ENERGY_KEY: "total_energy", FORCES_KEY: "forces"},
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": "${model_type_names}"},  # identity map: types = elements
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {**loader, "batch_size": s["batch_size"], "shuffle": True},
            "val_dataloader": {**loader, "batch_size": s["valid_batch_size"]},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "dataloader_kwargs": {"batch_size": s["valid_batch_size"]},
                              "type_names": "${model_type_names}"},
        },
        "trainer": trainer,
        "training_module": {
            "_target_": "nequip.train.EMALightningModule", "ema_decay": s["ema_decay"],
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": s["per_atom_energy"],
                     "coeffs": {"total_energy": s["energy_weight"], "forces": s["forces_weight"]}},
            "val_metrics": metrics, "train_metrics": "${training_module.val_metrics}",
            "test_metrics": "${training_module.val_metrics}",
            "optimizer": {"_target_": "torch.optim.Adam", "lr": s["lr"]},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "factor": s["lr_factor"],
                              "patience": s["lr_patience"], "threshold": s["lr_threshold"], "min_lr": s["min_lr"]},
                "monitor": interval, "interval": "epoch", "frequency": 1},
            "model": model,
        },
        "global_options": {"allow_tf32": False},
    }


def nequip_train(recipe: Recipe, files: dict[str, Path], workdir: Path, budget_s: float, seed: int, threads: int,
                 epochs: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train with ``nequip-train`` in ``workdir`` (config: :func:`nequip_config`, written as
    ``config.yaml``); returns the checkpoints (best and last), epochs, steps and wall time."""
    import yaml

    program = find_program(recipe)
    if program is None:
        raise RuntimeError(missing(recipe))
    from ase.io import read

    symbols = chemical_symbols(read(str(files["train"]), index=":"))
    config = nequip_config(recipe.settings, files, symbols, seed, budget_s, epochs)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = workdir / "outputs"
    argv = [program, "-cp", str(workdir), "-cn", "config", f"hydra.run.dir={out}"]
    logfile = workdir / "train.log"
    code, wall = run_program(argv, logfile, None if epochs is not None else 1.5 * budget_s + 300.0, threads)
    checkpoints = [out / n for n in ("best.ckpt", "last.ckpt") if (out / n).is_file()]
    if code != 0 and not (code is None and checkpoints):
        raise RuntimeError(f"{recipe.program} exited with {code}: {_tail(logfile)}")
    if not checkpoints:
        raise RuntimeError(f"no checkpoint written in {out}: {_tail(logfile)}")
    done = _nequip_eval(recipe, checkpoints[-1], [])  # last.ckpt: epochs begun and optimizer steps
    return {"epochs": int(done["epochs"]), "steps": int(done["global_step"]), "wall_s": round(wall, 1),
            "killed": code is None, "models": checkpoints}


#: Run in NequIP's environment: ``script MODEL IN.xyz OUT.npz``. Predictions of its ASE calculator
#: (eV, eV/Å) for the structures of IN.xyz (may be absent: parameters and checkpoint counters only).
_NEQUIP_EVAL = r"""
import sys, warnings
import numpy as np, torch
warnings.simplefilter("ignore")
from ase.io import read
from nequip.integrations.ase import NequIPCalculator
model, src, dst = sys.argv[1:4]
calc = NequIPCalculator._from_saved_model(model, device="cpu")
frames = read(src, index=":") if src != "-" else []
energies, forces = [], []
for atoms in frames:
    atoms.calc = calc
    energies.append(atoms.get_potential_energy())
    forces.append(atoms.get_forces().reshape(-1))
state = torch.load(model, map_location="cpu", weights_only=False) if model.endswith(".ckpt") else {}
np.savez(dst, energy=np.array(energies, dtype=float),
         forces=np.concatenate(forces) if forces else np.zeros(0),
         parameters=sum(p.numel() for p in calc.model.parameters() if p.requires_grad),
         epochs=state.get("epoch", -1) + 1, global_step=state.get("global_step", 0))
"""


def _nequip_eval(recipe: Recipe, model_path: Path, structures: list[Atoms]) -> dict[str, np.ndarray]:
    """Run :data:`_NEQUIP_EVAL` with the Python of NequIP's environment."""
    import tempfile

    python = find_program(recipe, "python")
    if python is None:
        raise RuntimeError(missing(recipe))
    with tempfile.TemporaryDirectory(prefix="nequip_eval_") as tmp:
        source = write_extxyz(structures, Path(tmp) / "in.xyz") if structures else "-"
        target, logfile = Path(tmp) / "out.npz", Path(tmp) / "eval.log"
        code, _ = run_program([python, "-c", _NEQUIP_EVAL, str(model_path), str(source), str(target)],
                              logfile, None, 1)
        if code != 0:
            raise RuntimeError(f"NequIP evaluation of {model_path} exited with {code}: {_tail(logfile)}")
        with np.load(target) as data:
            return {k: data[k] for k in data.files}


def nequip_predict(model_path: Path, structures: list[Atoms], dtype: str = "float32") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(predicted, reference) pairs of ``energy``, ``energy_per_atom`` and ``forces``, from NequIP's ASE
    calculator on the checkpoint, run in NequIP's environment (``dtype``: the checkpoint's own)."""
    out = _nequip_eval(RECIPES["nequip-own"], model_path, structures)
    return _pairs(out["energy"], out["forces"], structures)


def nequip_parameters(model_path: Path) -> int:
    """Trainable parameters of the checkpoint's model (EMA model when present)."""
    return int(_nequip_eval(RECIPES["nequip-own"], model_path, [])["parameters"])


def _pairs(energy: np.ndarray, forces: np.ndarray, structures: list[Atoms]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Predictions with the references of ``structures`` as :func:`localframe.train.evaluate.predict` pairs them."""
    e_ref = np.array([float(a.info["energy"]) for a in structures])
    f_ref = np.concatenate([np.asarray(a.arrays["forces"], dtype=float).reshape(-1) for a in structures])
    n = np.array([len(a) for a in structures], dtype=float)
    energy = np.asarray(energy, dtype=float)
    return {"energy": (energy, e_ref), "energy_per_atom": (energy / n, e_ref / n),
            "forces": (np.asarray(forces, dtype=float).reshape(-1), f_ref)}


@dataclasses.dataclass(frozen=True)
class Runner:
    train: Callable[..., dict[str, Any]]  # (recipe, files, workdir, budget_s, seed, threads, epochs, log)
    predict: Callable[..., dict[str, tuple[np.ndarray, np.ndarray]]]  # (model file, structures, dtype)
    parameters: Callable[[Path], int]  # model file -> trainable parameters


RUNNERS = {"mace": Runner(mace_train, mace_predict, n_parameters),
           "nequip": Runner(nequip_train, nequip_predict, nequip_parameters)}


# ---------------------------------------------------------------------- the suite's entry point
def train_one(name: str, structures: dict[str, list[Atoms]], seed: int, budget_minutes: float, threads: int,
              workdir: Path, select: Callable[[dict[str, dict]], float], units: dict[str, str] | None = None,
              epochs: int | None = None, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train peer ``name`` by its own program on ``structures["train"]`` (validated on
    ``structures["val"]``) for ``budget_minutes`` of wall time; test on ``structures["test"]``.

    ``select`` maps validation errors (:func:`~localframe.train.evaluate.metrics`) to the number that
    picks the model to test; ``epochs`` trains exactly that many epochs instead of the budget;
    ``overrides`` replace settings of the recipe (recorded in the row). Returns a row of the
    accuracy suite."""
    from localframe.train.evaluate import metrics

    recipe = RECIPES[name]
    if overrides:
        recipe = dataclasses.replace(recipe, settings={**recipe.settings, **overrides})
    runner = RUNNERS[recipe.runner]
    predict = runner.predict
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)  # a fresh run: the program would otherwise restart from old checkpoints
    workdir.mkdir(parents=True)
    files = {split: write_extxyz(structures[split], workdir / f"{split}.xyz") for split in ("train", "val")}
    run = runner.train(recipe, files, workdir, 60.0 * budget_minutes, seed, threads, epochs=epochs, log=log)
    dtype = recipe.settings.get("default_dtype", "float64")
    scored = [(select(metrics(predict(p, structures["val"], dtype))), p) for p in run["models"]]
    chosen = min(scored, key=lambda s: s[0])[1]
    batch = int(recipe.settings.get("batch_size", 1))
    steps = run.get("steps", run["epochs"] * math.ceil(len(structures["train"]) / batch))
    row: dict[str, Any] = {
        "model": name, "label": f"{recipe.label}, {recipe.package} {version(name)}", "seed": seed,
        "parameters": runner.parameters(chosen), "steps": steps,
        "structures_per_s": run["epochs"] * len(structures["train"]) / max(run["wall_s"], 1e-9),
        "best_at_s": None,
        "trainer": {"program": recipe.program, "package": recipe.package, "version": version(name),
                    "recipe": recipe.source, "settings": recipe.settings, "model_tested": chosen.name,
                    **{k: v for k, v in run.items() if k not in ("models", "steps")}},
        "wall_s": run["wall_s"], "train_s": run["wall_s"], "epochs": run["epochs"],
    }
    if structures.get("test"):
        errors = metrics(predict(chosen, structures["test"], dtype), units)
        row["test"] = {k: {"mae": v["mae"], "rmse": v["rmse"], "unit": v["unit"], "count": v["count"]}
                       for k, v in errors.items()}
    return row
