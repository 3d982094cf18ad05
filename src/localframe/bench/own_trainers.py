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
and closing work t₁ − t_e again). The process is also killed at 1.1 B as a safety net; its best
checkpoint is then turned into a model by one more call that trains no epoch (off the clock).
Everything ``mace_run_train`` does is on the clock (start-up, data loading, its validation after
every epoch on the validation structures, saving and compiling the model), unlike localframe's
rows, whose budget counts training steps only; its closing error tables are skipped
(``--skip_evaluate_heads=Default``, ``--plot=False``): the suite evaluates the model itself.
MACE saves the EMA weights at its best validation point and, with stage two, a second model: both
are evaluated on the validation structures and the one with the lower error (the suite's
selection metric) is tested.
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
    )
}


def names() -> list[str]:
    return list(RECIPES)


def is_own(name: str) -> bool:
    return name in RECIPES


def label(name: str) -> str:
    return RECIPES[name].label


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(RECIPES[name].package)
    except importlib.metadata.PackageNotFoundError:
        return None


def status(name: str) -> dict[str, Any]:
    """``{"available", "version", "reason"}``: the trainer program is on the PATH of this Python."""
    recipe = RECIPES[name]
    found = program_path(recipe.program)
    if found is None:
        return {"available": False, "version": version(name),
                "reason": f"skipped: {recipe.program} not found ({recipe.package} not installed: "
                          "pip install 'localframe[bench]')"}
    return {"available": True, "version": version(name), "reason": ""}


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
    program = program_path(recipe.program)
    if program is None:
        raise RuntimeError(status(recipe.name)["reason"])
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
    code, first = run_program(base + ["--max_num_epochs=1"], logfile, budget_s * 1.1, threads)
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
    e_pred, e_ref, n, f_pred, f_ref = [], [], [], [], []
    for atoms in structures:
        probe = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        probe.calc = calc
        e_pred.append(probe.get_potential_energy())
        f_pred.append(probe.get_forces().reshape(-1))
        e_ref.append(float(atoms.info["energy"]))
        f_ref.append(np.asarray(atoms.arrays["forces"], dtype=float).reshape(-1))
        n.append(len(atoms))
    e_pred, e_ref, n = np.array(e_pred), np.array(e_ref), np.array(n, dtype=float)
    return {"energy": (e_pred, e_ref), "energy_per_atom": (e_pred / n, e_ref / n),
            "forces": (np.concatenate(f_pred), np.concatenate(f_ref))}


RUNNERS = {"mace": (mace_train, mace_predict)}


def n_parameters(model_path: Path) -> int:
    """Trainable parameters of a model saved whole with ``torch.save``."""
    import torch

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.load(str(model_path), map_location="cpu", weights_only=False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
    train, predict = RUNNERS[recipe.runner]
    workdir = Path(workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)  # a fresh run: the program would otherwise restart from old checkpoints
    workdir.mkdir(parents=True)
    files = {split: write_extxyz(structures[split], workdir / f"{split}.xyz") for split in ("train", "val")}
    run = train(recipe, files, workdir, 60.0 * budget_minutes, seed, threads, epochs=epochs, log=log)
    dtype = recipe.settings.get("default_dtype", "float64")
    scored = [(select(metrics(predict(p, structures["val"], dtype))), p) for p in run["models"]]
    chosen = min(scored, key=lambda s: s[0])[1]
    batch = int(recipe.settings.get("batch_size", 1))
    steps = run["epochs"] * math.ceil(len(structures["train"]) / batch)
    row: dict[str, Any] = {
        "model": name, "label": f"{recipe.label}, {recipe.package} {version(name)}", "seed": seed,
        "parameters": n_parameters(chosen), "steps": steps,
        "structures_per_s": run["epochs"] * len(structures["train"]) / max(run["wall_s"], 1e-9),
        "best_at_s": None,
        "trainer": {"program": recipe.program, "package": recipe.package, "version": version(name),
                    "recipe": recipe.source, "settings": recipe.settings, "model_tested": chosen.name,
                    **{k: v for k, v in run.items() if k != "models"}},
        "wall_s": run["wall_s"], "train_s": run["wall_s"], "epochs": run["epochs"],
    }
    if structures.get("test"):
        errors = metrics(predict(chosen, structures["test"], dtype), units)
        row["test"] = {k: {"mae": v["mae"], "rmse": v["rmse"], "unit": v["unit"], "count": v["count"]}
                       for k, v in errors.items()}
    return row
