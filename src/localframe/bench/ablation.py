"""Ablations: one config, several variants (sets of overrides), several seeds, every run made by
``localframe train``; the CPU seconds of each run, tables of mean ± standard deviation over the seeds,
and validation curves (mean ± std band per variant).

    python -m localframe.bench.ablation configs/qm9_U0.yaml --out runs/abl --seeds 0 1 2 --jobs 2 \\
        --set train.threads=1 data.n_train=2000 train.val_every=20 \\
        --variant schnet/unit  "model.preset=null model.name=schnet model.init=unit" \\
        --variant schnet/virgo "model.preset=null model.name=schnet model.init=virgo" \\
        --label U0_atom:1000:meV --plot docs/figures/x.png

A variant's name is ``panel/curve``: the plot has one panel per ``panel`` and one curve per ``curve``;
the table compares each variant with the first one of its panel. Every run is
``localframe train CONFIG [--set ...] [variant overrides] train.seed=S run_dir=OUT/<panel>__<curve>/seedS``
in a process of its own (its output in ``RUN/train.log``), at most ``jobs`` at a time; niceness and the
environment (``OMP_NUM_THREADS``) are inherited, the thread count of torch is the config's
``train.threads``. A run whose ``RUN/ablation_run.json`` exists is not run again (an interrupted ablation
continues where it stopped). ``OUT/results.json`` holds one record per run (command, CPU seconds = user +
system time of the process, steps, test metrics, validation curve); ``OUT/table.md`` the table.
``--summary-only`` makes the table and plots of the variants named from an existing ``results.json``;
``--label`` takes several labels (``U0_atom:1000:meV mu:1:D``): each variant is compared on the first
that its runs have.

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


def beyond_spread(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """True when the intervals mean ± std of ``a`` and ``b`` do not overlap; None when either has fewer
    than two values (no spread to compare with)."""
    if len(a) < 2 or len(b) < 2:
        return None
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
@dataclass(frozen=True)
class Metric:
    """A label compared (e.g. ``U0_atom``), the factor of its MAEs in tables and plots and their unit."""
    label: str
    scale: float = 1.0
    unit: str = ""


def parse_metric(text: str) -> Metric:
    """``LABEL[:SCALE[:UNIT]]``, e.g. ``U0_atom:1000:meV`` (eV -> meV) or ``mu:1:D``."""
    label, scale, unit = (text.split(":", 2) + ["1", ""])[:3]
    try:
        return Metric(label, float(scale), unit)
    except ValueError:
        raise InputError(f"ablation metric {text!r}: LABEL[:SCALE[:UNIT]] with a number as SCALE") from None


def _has(record: dict, label: str) -> bool:
    return label in record.get("test", {}) or any(f"val_{label}_mae" in row for row in record.get("curve", []))


def metric_of(results: Sequence[dict], variant: str, metrics: Sequence[Metric]) -> Metric:
    """The first of ``metrics`` whose label the runs of ``variant`` have (else the first)."""
    mine = [r for r in results if r["variant"] == variant]
    return next((m for m in metrics if any(_has(r, m.label) for r in mine)), metrics[0])


def _as_metrics(metrics) -> list[Metric]:
    if isinstance(metrics, (Metric, str)):
        metrics = [metrics]
    return [m if isinstance(m, Metric) else Metric(m) for m in metrics]


def _ok(results: Sequence[dict], variant: str) -> list[dict]:
    return [r for r in results if r["variant"] == variant and r.get("returncode") == 0]


def _test_mae(record: dict, label: str) -> float | None:
    entry = record.get("test", {}).get(label)
    return None if not entry else entry.get("mae")


def _final_val(record: dict, label: str) -> float | None:
    rows = [r for r in record.get("curve", []) if f"val_{label}_mae" in r]
    return rows[-1][f"val_{label}_mae"] if rows else None


def summary(results: Sequence[dict], variants: Sequence[Variant], metrics) -> list[dict]:
    """Per variant, for its metric (:func:`metric_of`): seeds, test MAE and final validation MAE (× scale)
    as (mean, std) with the values, steps, CPU seconds per run, and the comparison with the first variant
    of its panel."""
    metrics = _as_metrics(metrics)
    rows, first = [], {}
    for v in variants:
        mine, m = _ok(results, v.name), metric_of(results, v.name, metrics)
        test = [_test_mae(r, m.label) * m.scale for r in mine if _test_mae(r, m.label) is not None]
        val = [_final_val(r, m.label) * m.scale for r in mine if _final_val(r, m.label) is not None]
        row = {"variant": v.name, "panel": v.panel, "curve": v.curve, "label": m.label, "unit": m.unit,
               "seeds": [r["seed"] for r in mine], "test": test, "test_mean_std": mean_std(test), "val": val,
               "val_mean_std": mean_std(val), "steps": sorted({r["steps"] for r in mine}),
               "cpu_s": mean_std([r["cpu_s"] for r in mine])}
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


def _digits(row: dict) -> int:
    """Enough decimals for three significant figures of the row's mean test MAE (at least 1)."""
    mean = row["test_mean_std"][0]
    return 1 if math.isnan(mean) or mean <= 0 else max(1, 2 - int(math.floor(math.log10(mean))))


def table(rows: Sequence[dict]) -> str:
    """Markdown: variant, label, seeds, steps, test MAE, final validation MAE, CPU s per run, Δ to the panel's first."""
    lines = ["| variant | label (unit) | seeds | steps | test MAE | final validation MAE | CPU s per run | Δ test vs first of panel |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = _digits(r)
        spread = {True: "beyond the spread", False: "within the spread", None: "too few seeds"}
        delta = f"{r['delta_test']:+.{d}f} ({spread[r['beyond_spread']]})" if "delta_test" in r else "reference"
        steps = ", ".join(str(s) for s in r["steps"])
        label = r["label"] + (f" ({r['unit']})" if r["unit"] else "")
        lines.append(f"| {r['variant']} | {label} | {len(r['seeds'])} | {steps} | {_pm(r['test_mean_std'], d)} | "
                     f"{_pm(r['val_mean_std'], d)} | {_pm(r['cpu_s'], 0)} | {delta} |")
    return "\n".join(lines) + "\n"


def curves(results: Sequence[dict], variant: str, label: str, scale: float = 1.0):
    """(steps, mean, std) of the validation MAE over the seeds of ``variant``, at the steps every seed has."""
    per_seed = [{row["step"]: row[f"val_{label}_mae"] * scale for row in r.get("curve", []) if f"val_{label}_mae" in row}
                for r in _ok(results, variant)]
    if not per_seed:
        return [], [], []
    steps = sorted(set.intersection(*(set(c) for c in per_seed)))
    stats = [mean_std([c[s] for c in per_seed]) for s in steps]
    return steps, [m for m, _ in stats], [sd for _, sd in stats]


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
    return plt, fig, axes[0]


def _save_figure(plt, fig, path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _unit(m: Metric) -> str:
    return f" ({m.unit})" if m.unit else ""


def _panels(results: Sequence[dict], variants: Sequence[Variant], metrics):
    """A figure with one axis per variant panel: (plt, fig, [(axis, panel, its variants, its metric), ...])."""
    metrics = _as_metrics(metrics)
    panels = list(dict.fromkeys(v.panel for v in variants))
    plt, fig, axes = _figure(len(panels))
    rows = []
    for ax, panel in zip(axes, panels):
        mine = [v for v in variants if v.panel == panel]
        rows.append((ax, panel, mine, metric_of(results, mine[0].name, metrics)))
    return plt, fig, rows


def plot(results: Sequence[dict], variants: Sequence[Variant], metrics, path: str | Path, title: str = "") -> Path:
    """Validation curves: one panel per variant panel, mean validation MAE vs step per curve, ± std band, log y."""
    plt, fig, panels = _panels(results, variants, metrics)
    for ax, panel, mine, m in panels:
        for i, v in enumerate(mine):
            steps, mean, std = curves(results, v.name, m.label, m.scale)
            if not steps:
                continue
            n = len(_ok(results, v.name))
            ax.plot(steps, mean, marker="o", ms=2.5, color=f"C{i}", label=f"{v.curve} ({n} seed{'' if n == 1 else 's'})")
            ax.fill_between(steps, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                            color=f"C{i}", alpha=0.25, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"validation {m.label} MAE{_unit(m)}")
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save_figure(plt, fig, path, title)


def plot_test(results: Sequence[dict], variants: Sequence[Variant], metrics, path: str | Path, title: str = "") -> Path:
    """Test MAE: one panel per variant panel, each seed a dot and the mean ± std as a bar with error bar."""
    plt, fig, panels = _panels(results, variants, metrics)
    for ax, panel, mine, m in panels:
        for i, v in enumerate(mine):
            values = [_test_mae(r, m.label) * m.scale for r in _ok(results, v.name) if _test_mae(r, m.label) is not None]
            if not values:
                continue
            mean, std = mean_std(values)
            ax.bar(i, mean, yerr=std, color=f"C{i}", alpha=0.5, capsize=6, width=0.6)
            ax.plot([i + 0.12 * (k - (len(values) - 1) / 2) for k in range(len(values))], values, "k.", ms=6)
        ax.set_xticks(range(len(mine)), [f"{v.curve}\n({len(_ok(results, v.name))} seed(s))" for v in mine])
        ax.set_ylabel(f"test {m.label} MAE{_unit(m)}")
        ax.set_title(panel)
        ax.grid(True, axis="y", alpha=0.3)
    return _save_figure(plt, fig, path, title)


# ---------------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localframe.bench.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True, help="folder of the runs, results.json and table.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every run")
    parser.add_argument("--variant", nargs=2, action="append", required=True, metavar=("NAME", "OVERRIDES"))
    parser.add_argument("--label", nargs="+", required=True, metavar="LABEL[:SCALE[:UNIT]]",
                        help="the labels compared, e.g. U0_atom:1000:meV mu:1:D; each variant uses the first its runs have")
    parser.add_argument("--plot", help="PNG of the validation curves")
    parser.add_argument("--test-plot", help="PNG of the test MAEs (seeds and mean ± std)")
    parser.add_argument("--title", default="")
    parser.add_argument("--summary-only", action="store_true",
                        help="table and plots of the given variants from OUT/results.json, no runs")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(name, overrides) for name, overrides in args.variant]
        metrics = [parse_metric(text) for text in args.label]
        if args.summary_only:
            saved = Path(args.out) / "results.json"
            if not saved.is_file():
                raise InputError(f"{saved}: no results to summarise (run the ablation first, without --summary-only)")
            results = json.loads(saved.read_text())
        else:
            results = run(args.config, variants, args.seeds, args.out, base=args.set, jobs=args.jobs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = table(summary(results, variants, metrics))
    if not args.summary_only:
        write_text(Path(args.out) / "table.md", text)
    print(text, end="")
    if args.plot:
        print(f"plot: {plot(results, variants, metrics, args.plot, args.title)}")
    if args.test_plot:
        print(f"test plot: {plot_test(results, variants, metrics, args.test_plot, args.title)}")
    names = {v.name for v in variants}
    failed = [r for r in results if r["variant"] in names and r.get("returncode") != 0]
    for r in failed:
        print(f"failed: {r['variant']} seed {r['seed']} (rc {r['returncode']}): see {r['run_dir']}/train.log", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
