"""``localframe quickstart``: from a SMILES to a trained, tested potential running MD — no download.

1. Reference data: a GFN2-xTB Langevin trajectory of ethanol at 500 K (MD17 style) in ``OUT/``.
2. Training: LEFTNet on energies and forces for a few minutes on the CPU.
3. Evaluation on held-out frames: MAE of energies and forces, parity plot.
4. Molecular dynamics with the trained model (NVT, then the energy conservation of NVE).
5. A result table and where the files are.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

#: The size of the quickstart's model, any model (for LEFTNet: the preset ``leftnet-quickstart``).
HPARAMS = {"hidden_channels": 64, "num_layers": 3}


def run(out: str | Path = "quickstart", frames: int = 500, seed: int = 0, minutes: float = 4.0,
        model: str = "leftnet", md_steps: int = 1000) -> int:
    from localframe.reference import sample
    from localframe.train import config as configuration
    from localframe.train.run import train

    console = Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "ethanol_xtb.extxyz"
    run_dir = out / f"ethanol_{model}"
    rows: list[tuple[str, str]] = []

    console.rule("1. Reference data: ethanol, GFN2-xTB Langevin MD at 500 K")
    start = time.perf_counter()
    if data.exists():
        console.print(f"using the existing {data}")
    else:
        sample("CCO", data, temperature=500.0, frames=frames, seed=seed)
    rows.append(("reference data", f"{frames} frames of GFN2-xTB ethanol at 500 K ({time.perf_counter() - start:.0f} s)"))

    console.rule(f"2. Training {model} on energies and forces ({minutes:g} minutes)")
    n_test = max(1, frames // 10)
    cfg = configuration.validate({
        "data": {"source": str(data), "n_train": frames - 2 * n_test, "n_val": n_test, "n_test": n_test},
        "model": {"name": model, "cutoff": 5.0, "hparams": dict(HPARAMS)},
        "train": {"batch_size": 8, "lr": 2e-3, "max_time": minutes, "warmup_steps": 50, "ema_decay": 0.99,
                  "weights": {"energy": 1.0, "forces": 100.0}, "seed": seed, "checkpoint_minutes": 2.0},
        "run_dir": str(run_dir),
    }, source="quickstart")
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        console.print(f"{run_dir} already holds a run; remove it to train again")
        return 2
    result = train(cfg, progress=True)
    test = result["test"]
    rows.append(("training", f"{model}, {result['epochs']} epochs in {result['train_seconds']:.0f} s"))
    rows.append(("test energy MAE", f"{1000 * test['energy']['mae']:.1f} meV ({1000 * test['energy_per_atom']['mae']:.2f} meV/atom), "
                                    f"{result['n_test']} unseen frames"))
    rows.append(("test force MAE", f"{1000 * test['forces']['mae']:.1f} meV/Å"))

    rows.extend(_molecular_dynamics(console, run_dir, data, md_steps, seed))

    console.rule("Result")
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    console.print(f"files: {data}, {run_dir}/model.pt, {run_dir}/parity.png, {run_dir}/learning_curve.png"
                  + f", {out}/md.extxyz, {out}/md.csv")
    return 0


def _molecular_dynamics(console: Console, run_dir: Path, data: Path, steps: int, seed: int) -> list[tuple[str, str]]:
    """Short NVT, then NVE from where it ended, with the trained model; returns result rows."""
    import torch

    console.rule("4. Molecular dynamics with the trained model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 9-atom molecule gains nothing from more threads, and loses a lot when cores are shared
    try:
        return _nvt_then_nve(run_dir, data, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _nvt_then_nve(run_dir: Path, data: Path, steps: int, seed: int) -> list[tuple[str, str]]:
    import ase.io

    from localframe.calculator import Calculator
    from localframe.errors import InputError
    from localframe.md import run_md

    atoms = ase.io.read(data, index=-1)
    atoms.calc = Calculator(str(run_dir / "model.pt"))
    rows = []
    try:
        nvt = run_md(atoms.calc, atoms, ensemble="nvt", temperature=300.0, timestep=0.5, steps=steps,
                     traj=run_dir.parent / "md.extxyz", log=run_dir.parent / "md.csv", seed=seed)
        rows.append(("MD (NVT, 300 K)", f"{steps} steps of 0.5 fs at {nvt['steps_per_second']:.0f} steps/s, "
                                        f"mean temperature {nvt['temperature_mean']:.0f} K"))
        nve = run_md(atoms.calc, nvt["atoms"], ensemble="nve", temperature=300.0, timestep=0.5, steps=steps, seed=seed)
        rows.append(("MD (NVE)", f"total-energy drift {1000 * nve['energy_drift']:.3f} meV/atom/ps over "
                                 f"{steps * 0.5 / 1000:g} ps"))
    except InputError as stop:  # the MD guards stopped a run: report it, keep what was written
        rows.append(("MD stopped", str(stop)))
    return rows
