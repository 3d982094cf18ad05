"""Ablations: one config, several variants (sets of overrides), several seeds, every run made by
``localframe train``; the CPU seconds of each run, tables of mean ± standard deviation over the seeds,
and validation curves (mean ± std band per variant).

    python -m localframe.bench.ablation configs/qm9_U0.yaml --out runs/abl --seeds 0 1 2 --jobs 2 \\
        --set train.threads=1 data.n_train=2000 train.val_every=20 \\
        --variant schnet/unit  "model.preset=null model.name=schnet model.init=unit" \\
        --variant schnet/virgo "model.preset=null model.name=schnet model.init=virgo" \\
        --label U0_atom --scale 1000 --unit meV --plot docs/figures/x.png

A variant's name is ``panel/curve``: the plot has one panel per ``panel`` and one curve per ``curve``;
the table compares each variant with the first one of its panel. Every run is
``localframe train CONFIG [--set ...] [variant overrides] train.seed=S run_dir=OUT/<panel>__<curve>/seedS``
in a process of its own (its output in ``RUN/train.log``), at most ``jobs`` at a time; niceness and the
environment (``OMP_NUM_THREADS``) are inherited, the thread count of torch is the config's
``train.threads``. A run whose ``RUN/ablation_run.json`` exists is not run again (an interrupted ablation
continues where it stopped). ``OUT/results.json`` holds one record per run (command, CPU seconds = user +
system time of the process, steps, test metrics, validation curve); ``OUT/table.md`` the table.

"Beyond the seeds' spread" in the table means that the intervals mean ± std of the two variants do not
overlap: |Δ mean| > std_a + std_b (std: the sample standard deviation over the seeds).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from localframe.errors import InputError
from localframe.files import write_text


@dataclass(frozen=True)
class Variant:
    name: str  # "panel/curve"
    overrides: tuple[str, ...]

    @property
    def panel(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def curve(self) -> str:
        return self.name.split("/", 1)[-1]

    @property
    def folder(self) -> str:
        return self.name.replace("/", "__")


def parse_variant(name: str, overrides: str) -> Variant:
    if not name or any(c in name for c in " \\") or name.count("/") > 1:
        raise InputError(f"ablation variant {name!r}: a name is 'panel/curve' (or one word), without spaces")
    return Variant(name, tuple(shlex.split(overrides)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def beyond_spread(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when the intervals mean ± std of ``a`` and ``b`` do not overlap."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return abs(ma - mb) > sa + sb


# ---------------------------------------------------------------------------------------------- running
def command(config: str, base: Sequence[str], variant: Variant, seed: int, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "localframe.cli", "train", config, *base, *variant.overrides,
            f"train.seed={seed}", f"run_dir={run_dir}"]


def read_curve(metrics_csv: Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` with numbers (empty cells left out)."""
    if not metrics_csv.exists():
        return []
    with open(metrics_csv, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]


def _record(variant: Variant, seed: int, run_dir: Path, cmd: list[str], rc: int, cpu_s: float, wall_s: float) -> dict:
    test = {}
    path = run_dir / "test_metrics.json"
    if path.exists():
        test = json.loads(path.read_text())
    return {"variant": variant.name, "seed": seed, "run_dir": str(run_dir), "command": shlex.join(cmd[2:]),
            "returncode": rc, "cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1), "steps": test.get("steps"),
            "train_seconds": test.get("train_seconds"), "test": test.get("test", {}),
            "curve": read_curve(run_dir / "metrics.csv")}


def run(config: str, variants: Sequence[Variant], seeds: Sequence[int], out: str | Path, base: Sequence[str] = (),
        jobs: int = 1, echo=print) -> list[dict]:
    """Run every (variant, seed) not yet done, seed by seed, at most ``jobs`` at a time; return every
    run's record, variant by variant (also written to ``OUT/results.json``)."""
    out = Path(out)
    # seed by seed, so that an ablation stopped early has every variant on the same seeds
    todo = [(v, s) for s in seeds for v in variants]
    records: dict[tuple[str, int], dict] = {}
    pending = []
    for v, s in todo:
        done = out / v.folder / f"seed{s}" / "ablation_run.json"
        if done.exists():
            records[(v.name, s)] = json.loads(done.read_text())
        else:
            pending.append((v, s))
    active: dict[int, tuple] = {}
    while pending or active:
        while pending and len(active) < max(1, jobs):
            v, s = pending.pop(0)
            run_dir = out / v.folder / f"seed{s}"
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = command(config, base, v, s, run_dir)
            log = open(run_dir / "train.log", "w")
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            active[process.pid] = (v, s, run_dir, cmd, time.perf_counter(), log, process)
            echo(f"started {v.name} seed {s}: {shlex.join(cmd[2:])}")
        time.sleep(0.5)
        for pid in list(active):
            finished, status, usage = os.wait4(pid, os.WNOHANG)
            if finished == 0:
                continue
            v, s, run_dir, cmd, start, log, process = active.pop(pid)
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            log.close()
            record = _record(v, s, run_dir, cmd, process.returncode, usage.ru_utime + usage.ru_stime,
                             time.perf_counter() - start)
            if process.returncode == 0:
                write_text(run_dir / "ablation_run.json", json.dumps(record, indent=1))
            records[(v.name, s)] = record
            _save(out, records, variants, seeds)
            echo(f"finished {v.name} seed {s}: rc {process.returncode}, {record['cpu_s']} CPU s, {record['steps']} steps")
    return _save(out, records, variants, seeds)


def _save(out: Path, records: dict, variants: Sequence[Variant], seeds: Sequence[int]) -> list[dict]:
    """``OUT/results.json``: the records so far, variant by variant (written after every run)."""
    results = [records[(v.name, s)] for v in variants for s in seeds if (v.name, s) in records]
    write_text(out / "results.json", json.dumps(results, indent=1))
    return results


# ---------------------------------------------------------------------------------------------- summaries
def _test_mae(record: dict, label: str) -> float | None:
    entry = record.get("test", {}).get(label)
    return None if not entry else entry.get("mae")


def _final_val(record: dict, label: str) -> float | None:
    rows = [r for r in record.get("curve", []) if f"val_{label}_mae" in r]
    return rows[-1][f"val_{label}_mae"] if rows else None


def summary(results: Sequence[dict], variants: Sequence[Variant], label: str, scale: float = 1.0) -> list[dict]:
    """Per variant: seeds, test MAE and final validation MAE (× ``scale``) as (mean, std) with the values,
    steps, CPU seconds per run, and the comparison with the first variant of its panel."""
    rows, first = [], {}
    for v in variants:
        mine = [r for r in results if r["variant"] == v.name and r.get("returncode") == 0]
        test = [_test_mae(r, label) * scale for r in mine if _test_mae(r, label) is not None]
        val = [_final_val(r, label) * scale for r in mine if _final_val(r, label) is not None]
        row = {"variant": v.name, "panel": v.panel, "curve": v.curve, "seeds": [r["seed"] for r in mine],
               "test": test, "test_mean_std": mean_std(test), "val": val, "val_mean_std": mean_std(val),
               "steps": sorted({r["steps"] for r in mine}), "cpu_s": mean_std([r["cpu_s"] for r in mine])}
        reference = first.setdefault(v.panel, row)
        if reference is not row and test and reference["test"]:
            row["vs"] = reference["variant"]
            row["delta_test"] = row["test_mean_std"][0] - reference["test_mean_std"][0]
            row["beyond_spread"] = beyond_spread(test, reference["test"])
        rows.append(row)
    return rows


def _pm(pair: tuple[float, float], digits: int = 1) -> str:
    mean, std = pair
    return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(rows: Sequence[dict], unit: str = "", digits: int = 1) -> str:
    """Markdown: variant, seeds, steps, test MAE, final validation MAE, CPU s per run, Δ to the panel's first."""
    u = f" ({unit})" if unit else ""
    lines = [f"| variant | seeds | steps | test MAE{u} | final validation MAE{u} | CPU s per run | Δ test vs first of panel |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = (f"{r['delta_test']:+.{digits}f} ({'beyond' if r['beyond_spread'] else 'within'} the spread)"
                 if "delta_test" in r else "reference")
        steps = ", ".join(str(s) for s in r["steps"])
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | {steps} | {_pm(r['test_mean_std'], digits)} | "
                     f"{_pm(r['val_mean_std'], digits)} | {_pm(r['cpu_s'], 0)} | {delta} |")
    return "\n".join(lines) + "\n"


def curves(results: Sequence[dict], variant: str, label: str, scale: float = 1.0):
    """(steps, mean, std) of the validation MAE over the seeds of ``variant``, at the steps every seed has."""
    per_seed = [{row["step"]: row[f"val_{label}_mae"] * scale for row in r.get("curve", []) if f"val_{label}_mae" in row}
                for r in results if r["variant"] == variant and r.get("returncode") == 0]
    if not per_seed:
        return [], [], []
    steps = sorted(set.intersection(*(set(c) for c in per_seed)))
    stats = [mean_std([c[s] for c in per_seed]) for s in steps]
    return steps, [m for m, _ in stats], [sd for _, sd in stats]


def plot(results: Sequence[dict], variants: Sequence[Variant], label: str, path: str | Path, scale: float = 1.0,
         unit: str = "", title: str = "") -> Path:
    """One panel per variant panel: mean validation MAE vs step per curve, ± std band, log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(v.panel for v in variants))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for i, v in enumerate(v for v in variants if v.panel == panel):
            steps, mean, std = curves(results, v.name, label, scale)
            if not steps:
                continue
            n = sum(1 for r in results if r["variant"] == v.name and r.get("returncode") == 0)
            ax.plot(steps, mean, marker="o", ms=2.5, color=f"C{i}", label=f"{v.curve} ({n} seeds)")
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=f"C{i}", alpha=0.25, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"validation {label} MAE" + (f" ({unit})" if unit else ""))
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localframe.bench.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True, help="folder of the runs, results.json and table.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every run")
    parser.add_argument("--variant", nargs=2, action="append", required=True, metavar=("NAME", "OVERRIDES"))
    parser.add_argument("--label", required=True, help="the label compared, e.g. U0_atom")
    parser.add_argument("--scale", type=float, default=1.0, help="factor of the MAEs in the table and plot (eV -> meV: 1000)")
    parser.add_argument("--unit", default="")
    parser.add_argument("--plot", help="PNG of the validation curves")
    parser.add_argument("--title", default="")
    parser.add_argument("--summary-only", action="store_true", help="tables and plot from OUT/results.json, no runs")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(name, overrides) for name, overrides in args.variant]
        if args.summary_only:
            results = json.loads((Path(args.out) / "results.json").read_text())
        else:
            results = run(args.config, variants, args.seeds, args.out, base=args.set, jobs=args.jobs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = table(summary(results, variants, args.label, args.scale), args.unit)
    write_text(Path(args.out) / "table.md", text)
    print(text, end="")
    if args.plot:
        print(f"plot: {plot(results, variants, args.label, args.plot, args.scale, args.unit, args.title)}")
    failed = [r for r in results if r.get("returncode") != 0]
    for r in failed:
        print(f"failed: {r['variant']} seed {r['seed']} (rc {r['returncode']}): see {r['run_dir']}/train.log", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
