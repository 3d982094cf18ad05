"""The benchmark report: markdown tables and PNG plots from the suites' JSON results.

:func:`write` regenerates only the region between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` of the report file (creating the file, or appending the region, when
missing), so that other sections of the same file — written by hand or by other tools — stay as
they are. Figures go to ``figures/`` next to the report.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from localframe.bench import peers
from localframe.files import write_text

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
SPEED_REFERENCES = ("schnet", "pyg_schnet")
TARGET_LINEAR = 1.1
TARGET_XTB_SPEEDUP = 100.0


# ---------------------------------------------------------------------- results on disk
def save(result: dict[str, Any], out: str | Path, name: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    write_text(path, json.dumps(result, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load(out: str | Path) -> dict[str, Any]:
    """All suite results found in ``out``: speed, scaling, accuracy-<task>, profile, peers."""
    out = Path(out)
    results: dict[str, Any] = {}
    for path in sorted(out.glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return results


# ---------------------------------------------------------------------- formatting helpers
def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _label(row: dict[str, Any]) -> str:
    return row.get("label") or row.get("model", "?")


def _load(env: dict[str, Any]) -> str:
    start, end = env.get("load_average_start"), env.get("load_average_end")
    fmt = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "?"  # noqa: E731
    return f"{fmt(start)} → {fmt(end)}"


def _figure_path(report: Path, name: str) -> tuple[Path, str]:
    folder = report.parent / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name, f"figures/{name}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------- sections
def _setup(results: dict[str, Any], command: str | None) -> list[str]:
    lines = ["## Benchmark setup", ""]
    suites = [(name, r) for name, r in results.items() if isinstance(r, dict) and "environment" in r]
    if not suites:
        return lines + ["No results yet: run `localframe bench`.", ""]
    env = suites[0][1]["environment"]
    lines += [f"- Machine: {env.get('cpu')}, {env.get('cores')} cores ({env.get('usable_cores')} usable), "
              f"{env.get('memory_gib')} GiB memory, {env.get('os')}; no GPU used.",
              "- Every figure on this page was taken with the thread count and dtype of its suite (table below), "
              "`torch.set_num_threads` set explicitly; GFN2-xTB ran with the same number of OpenMP threads.",
              "- Load average: 1/5/15-minute averages from `/proc/loadavg` at the start and end of each suite; "
              "other work shared this machine when they are well above 0."]
    if command:
        lines.append(f"- Last command: `{command}`")
    lines.append("")
    rows = []
    for name, r in suites:
        e, s = r["environment"], r.get("settings", {})
        what = _what_was_run(name, s)
        rows.append([name, e.get("date", "?"), str(e.get("threads")), e.get("dtype", "?"), _load(e), what])
    lines += _table(["suite", "date", "threads", "dtype", "load average (start → end)", "what was run"], rows)
    versions = env.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + "; not installed: "
              + (", ".join(k for k, v in versions.items() if not v) or "none") + ".", ""]
    lines += _peers_table(results)
    return lines


def _what_was_run(name: str, s: dict[str, Any]) -> str:
    quick = " (quick)" if s.get("quick") else ""
    models = ", ".join(s.get("models", []))
    if name == "speed":
        return f"{models}; warm-up {s.get('warmup')}, up to {s.get('repeats')} timed calls (≤ {s.get('max_seconds')} s){quick}"
    if name == "scaling":
        return (f"{models}; boxes up to {max(s.get('sizes', [0]))} atoms, caps {s.get('time_cap_s')} s / "
                f"{s.get('max_memory_gib')} GiB, xTB cap {s.get('xtb_cap_s')} s{quick}")
    if name.startswith("accuracy"):
        return (f"{models}; {s.get('budget_minutes')} min of training per model and seed, {s.get('seeds')} seed(s)"
                + (f", n_train {s['n_train']}" if s.get("n_train") else "")
                + (f", n_test {s['n_test']}" if s.get("n_test") else "") + quick)
    return models + quick


def _peers_table(results: dict[str, Any]) -> list[str]:
    state = results.get("peers", {}).get("peers") or {name: peers.status(name) for name in peers.names()}
    rows = []
    for name, st in state.items():
        spec = peers.PEERS.get(name)
        status = f"installed ({st.get('version')})" if st.get("available") else st.get("reason", "skipped")
        rows.append([spec.label if spec else name, f"`{name}`", status,
                     "yes" if spec and spec.periodic else "no (molecules only)"])
    return ["Peers (optional extra; missing ones are skipped):", ""] + _table(
        ["peer", "name", "status", "periodic"], rows) + [""]


def _speed(results: dict[str, Any], report: Path) -> list[str]:
    lines = ["## Speed", ""]
    speed = results.get("speed")
    if not speed:
        return lines + ["Not run.", ""]
    lines += ["Training: structures per second through one optimiser step (forward, backward, AdamW; forces by "
              "double backward where the workload trains on them). Inference: atoms × calls per second of one "
              "energy + forces call. Medians of the timed calls; ratios are this model's throughput over the "
              "reference's (> 1: faster). Neighbour lists are prebuilt and identical for all models.", ""]
    rows_all = speed["results"]
    for wname, w in speed["workloads"].items():
        rows = [r for r in rows_all if r["workload"] == wname]
        ref = {n: next((r for r in rows if r["model"] == n and "train" in r), None) for n in SPEED_REFERENCES}
        table = []
        for r in rows:
            if "train" not in r:
                table.append([_label(r), "–", r.get("skipped") or r.get("error", "?"), "", "", "", "", ""])
                continue
            ratios = []
            for mode, key in (("train", "structures_per_s"), ("infer", "atom_steps_per_s")):
                for n in SPEED_REFERENCES:
                    base = ref[n]
                    ratios.append(_num(r[mode][key] / base[mode][key], 2) if base else "–")
            table.append([_label(r), f"{r.get('parameters', 0):,}", _num(r["train"]["structures_per_s"]),
                          _num(r["infer"]["atom_steps_per_s"]), *ratios])
        lines += [f"### {wname}: {w['description']}", "",
                  f"Training batch: {w['train_structures']} structures, {w['train_atoms']} atoms, {w['train_pairs']} pairs; "
                  f"inference: {w['infer_structures']} structure(s), {w['infer_atoms']} atoms, {w['infer_pairs']} pairs "
                  f"(neighbour list {w['neighbor_list_s'] * 1000:.2f} ms). Source: {w['source']}.", ""]
        lines += _table(["model", "parameters", "train structures/s", "infer atoms·steps/s", "train × our SchNet",
                         "train × PyG SchNet", "infer × our SchNet", "infer × PyG SchNet"], table)
        lines.append("")
    figure = _speed_figure(speed, report)
    if figure:
        lines += [f"![training and inference throughput]({figure})", ""]
    return lines


def _speed_figure(speed: dict[str, Any], report: Path) -> str | None:
    plt = _pyplot()
    workloads_ = list(speed["workloads"])
    names = list(dict.fromkeys(r["model"] for r in speed["results"]))
    labels = {r["model"]: _label(r) for r in speed["results"]}
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 2.0))
    height = 0.8 / max(len(workloads_), 1)
    for ax, (mode, key, title) in zip(axes, (("train", "structures_per_s", "training: structures/s"),
                                             ("infer", "atom_steps_per_s", "inference: atoms·steps/s"))):
        for k, wname in enumerate(workloads_):
            values = []
            for n in names:
                row = next((r for r in speed["results"] if r["model"] == n and r["workload"] == wname), {})
                values.append(row.get(mode, {}).get(key, np.nan))
            ax.barh(np.arange(len(names)) + k * height, values, height=height, label=wname)
        ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2)
        ax.set_yticklabels([labels[n] for n in names])
        ax.set_xscale("log")
        ax.set_title(title)
        ax.invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path, rel = _figure_path(report, "bench_speed.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


def _scaling(results: dict[str, Any], report: Path) -> list[str]:
    lines = ["## Scaling", ""]
    scaling, tuned = results.get("scaling"), results.get("scaling-tuned")
    if not scaling and not tuned:
        return lines + ["Not run.", ""]
    main = scaling or tuned
    s = main["settings"]
    lines += [f"One energy + forces call on {main['boxes']['structure']}, from {min(s['sizes'])} to {max(s['sizes'])} "
              f"atoms (requested). Memory: {s['memory']}, on a first call. Time: median of three warm calls while calls "
              f"are short, one warm call otherwise, the first call alone beyond 10 s; wall time, and CPU time (user + "
              f"system, of the whole process: not inflated by other work on the machine; user CPU leaves out the system "
              f"time, mostly page faults of fresh allocations); the neighbour list is not included, except in the last α. Sizes predicted to exceed {s['time_cap_s']:.0f} s or "
              f"{s['max_memory_gib']} GiB (or 60 % of the free memory) are skipped. α: least-squares slope of log t "
              f"against log N between 10³ and 10⁵ atoms (the range actually measured in brackets).", ""]
    if scaling:
        lines += ["### glibc's default allocator", ""] + _scaling_table(scaling) + [""]
    if tuned:
        lines += ["### Allocator tuned", "",
                  "The same calls in a process where glibc serves every allocation from its heap and never returns "
                  "memory (`mallopt(M_MMAP_MAX, 0)`, `mallopt(M_TRIM_THRESHOLD, -1)`; see "
                  "`localframe.bench.common.tune_allocator`). By default every allocation above 32 MiB is mapped afresh "
                  "and page-faulted in on each call, which shows as system time growing faster than the atoms. Peak "
                  "memory is not reported here (reused heap memory hides it).", ""]
        lines += _scaling_table(tuned) + [""]
    figure = _scaling_figure(main, report, tuned if scaling else None)
    if figure:
        lines += [f"![time and memory against atoms]({figure})", ""]
    lines += _versus_xtb(main)
    return lines


def _scaling_table(scaling: dict[str, Any]) -> list[str]:
    table = []
    for row in scaling["boxes"]["rows"]:
        if "points" not in row:
            table.append([_label(row), row.get("skipped") or row.get("error", "?"), "", "", "", "", "", "", ""])
            continue
        measured = [p for p in row["points"] if "time_s" in p]
        at1000 = next((p for p in measured if p["atoms"] == 1000), None)
        largest = measured[-1] if measured else None
        skipped = [p for p in row["points"] if "time_s" not in p]
        fit, fit_cpu, fit_nl, fit_user = row.get("fit"), row.get("fit_cpu"), row.get("fit_with_neighbor_list"), _user_fit(row)
        memory = f", {_num(largest['peak_mib'])} MiB" if largest and largest.get("peak_mib") is not None else ""
        table.append([
            _label(row),
            f"{fit['exponent']:.2f} ({fit['range'][0]:,}–{fit['range'][1]:,})" if fit else "–",
            f"{fit_cpu['exponent']:.2f}" if fit_cpu else "–",
            f"{fit_user['exponent']:.2f}" if fit_user else "–",
            f"{fit_nl['exponent']:.2f}" if fit_nl else "–",
            f"{_num(at1000['time_s'])} / {_num(at1000.get('cpu_s'))}" if at1000 else "–",
            (f"{largest['atoms']:,} atoms: {_num(largest['time_s'])} s{memory}, system "
             f"{100 * largest.get('sys_s', 0) / max(largest.get('cpu_s') or 1e-12, 1e-12):.0f} % of CPU") if largest else "–",
            _num(largest["atoms"] / largest["time_s"]) if largest else "–",
            "; ".join(f"{p['atoms']:,}: {p.get('skipped') or p.get('error')}" for p in skipped[:1])
            + (f" (+{len(skipped) - 1} larger)" if len(skipped) > 1 else ""),
        ])
    return _table(["model", "α wall", "α CPU", "α user CPU", "α wall + neighbour list", "s at 1,000 atoms (wall / CPU)",
                   "largest size run", "atoms·steps/s there", "skipped"], table)


def _scaling_figure(scaling: dict[str, Any], report: Path, tuned: dict[str, Any] | None = None) -> str | None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    molecules = scaling.get("molecules", {}).get("rows", [])
    everyone = list(dict.fromkeys([*(r["model"] for r in scaling["boxes"]["rows"]),
                                   *(n for r in molecules for n in r["models"])]))
    colour = {name: f"C{k % 10}" for k, name in enumerate(everyone)}
    for row in scaling["boxes"]["rows"]:
        measured = [p for p in row.get("points", []) if "time_s" in p]
        if not measured:
            continue
        n = [p["atoms"] for p in measured]
        axes[0].plot(n, [p["time_s"] for p in measured], marker="o", ms=3, color=colour[row["model"]], label=_label(row))
        mem = [(p["atoms"], p["peak_mib"]) for p in measured if p.get("peak_mib")]
        if mem:
            axes[1].plot(*zip(*mem), marker="o", ms=3, color=colour[row["model"]], label=_label(row))
    for row in (tuned or {}).get("boxes", {}).get("rows", []):
        measured = [p for p in row.get("points", []) if "time_s" in p]
        if measured and row["model"] in colour:
            axes[0].plot([p["atoms"] for p in measured], [p["time_s"] for p in measured], ls="--", marker=".",
                         color=colour[row["model"]], label=f"{_label(row)}, allocator tuned")
    ref = np.array([1e2, 1e5])
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms (periodic Si)")
    lo = min((p["time_s"] / p["atoms"] for r in scaling["boxes"]["rows"] for p in r.get("points", []) if "time_s" in p),
             default=None)
    if lo:
        axes[0].plot(ref, lo * ref, color="0.6", ls="--", lw=1, label="∝ N")
    axes[0].set_ylabel("energy + forces call [s]")
    axes[1].set_ylabel("peak memory added [MiB]")
    for ax in axes[:2]:
        if ax.lines:
            ax.legend(fontsize=7)
    if molecules:
        names = list(dict.fromkeys(n for r in molecules for n in r["models"]))
        for name in names:
            pts = [(r["atoms"], r["models"][name]["time_s"]) for r in molecules if "time_s" in r["models"].get(name, {})]
            if pts:
                axes[2].plot(*zip(*pts), marker="o", ms=3, color=colour[name], label=_model_label(scaling, name))
        xtb = [(r["atoms"], r["xtb"]["time_s"]) for r in molecules if "time_s" in r.get("xtb", {})]
        if xtb:
            axes[2].plot(*zip(*xtb), marker="s", color="black", lw=2, label="GFN2-xTB (tblite)")
        axes[2].set_xscale("log")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("atoms (molecules, water clusters)")
        axes[2].set_ylabel("energy + forces call [s]")
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    path, rel = _figure_path(report, "bench_scaling.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


def _model_label(scaling: dict[str, Any], name: str) -> str:
    for row in scaling["boxes"]["rows"]:
        if row["model"] == name:
            return _label(row)
    return peers.label(name) if peers.is_peer(name) else f"localframe {name}"


def _versus_xtb(scaling: dict[str, Any]) -> list[str]:
    molecules = scaling.get("molecules", {})
    rows = molecules.get("rows", [])
    if not rows:
        return []
    names = list(dict.fromkeys(n for r in rows for n in r["models"]))
    lines = ["### Against GFN2-xTB", "",
             f"Non-periodic molecules and water clusters; seconds per energy + forces call, and in brackets the "
             f"speed-up over GFN2-xTB (tblite, GFN2, same thread count) on the same structure. xTB status: "
             f"{molecules.get('xtb')}.", ""]
    table = []
    for r in rows:
        xtb = r.get("xtb", {})
        cells = [r["system"], str(r["atoms"]), _num(xtb["time_s"]) if "time_s" in xtb else xtb.get("skipped") or xtb.get("error", "–")]
        for name in names:
            m = r["models"].get(name, {})
            if "time_s" not in m:
                cells.append("error" if "error" in m else "–")
                continue
            speedup = f" ({_num(xtb['time_s'] / m['time_s'], 3)}×)" if "time_s" in xtb else ""
            cells.append(_num(m["time_s"]) + speedup)
        table.append(cells)
    lines += _table(["system", "atoms", "GFN2-xTB s", *[_model_label(scaling, n) for n in names]], table)
    return lines + [""]


def _accuracy(results: dict[str, Any], report: Path) -> list[str]:
    from localframe.bench.accuracy import summarize

    lines = ["## Accuracy under a fixed training budget", ""]
    tasks = {k.split("-", 1)[1]: v for k, v in results.items() if k.startswith("accuracy-")}
    if not tasks:
        return lines + ["Not run.", ""]
    lines += ["Same data, split, loss, optimiser, schedule (warm-up, then cosine decay over the budget), EMA and "
              "budget for every model — peers included, trained by localframe's loop through the adapters of "
              "`localframe.bench.peers`. Every model at its default size (localframe models 128 channels; peers as "
              "listed in `localframe.bench.peers.PEERS`), cutoff 5 Å. The budget counts training steps only; "
              "validation (every tenth of the budget) is off the clock, and the EMA weights of the best validation "
              "point are tested. Mean ± standard deviation over seeds.", ""]
    for task_name, result in tasks.items():
        entry = result["tasks"].get(task_name, {})
        s = result["settings"]
        lines += [f"### {task_name}: {entry.get('description', '')}", ""]
        if entry.get("skipped"):
            lines += [entry["skipped"], ""]
            continue
        lines += [f"Data: {entry.get('source')}; {entry.get('n_train')} training / {entry.get('n_val')} validation / "
                  f"{entry.get('n_test')} test structures. Budget: {s['budget_minutes']} min of training steps per model "
                  f"and seed; {s['seeds']} seed(s); threads {result['environment']['threads']}, "
                  f"{result['environment']['dtype']}; training settings {json.dumps(entry.get('train_settings'))}.", ""]
        rows = entry.get("rows", [])
        keys = [k for k in ("U0_atom", "energy", "forces") if any(k in r.get("test", {}) for r in rows)]
        stats = {k: summarize(rows, k) for k in keys}
        table = []
        for name in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == name and "test" in r]
            errors = [r for r in rows if r["model"] == name and "error" in r]
            if not mine:
                table.append([_label(errors[0]) if errors else name, "–", "0", "–", "–", "–",
                              *[errors[0]["error"][:120] if errors else "–" for _ in keys]])
                continue
            cells = [_label(mine[0]), f"{mine[0].get('parameters', 0):,}", str(len(mine)), f"{np.mean([r['steps'] for r in mine]):.0f}",
                     _num(float(np.mean([r["structures_per_s"] for r in mine]))),
                     _num(float(np.mean([r["best_at_s"] for r in mine])))]
            for k in keys:
                st = stats[k].get(name)
                unit = mine[0]["test"][k]["unit"]
                if st is None:
                    cells.append("–")
                    continue
                spread = f" ± {st['std'] * 1000:.3g}" if math.isfinite(st["std"]) else ""
                cells.append(f"{st['mean'] * 1000:.4g}{spread} m{unit}")
            table.append(cells)
        lines += _table(["model", "parameters", "seeds", "steps", "structures/s", "best at (s)",
                         *[f"test MAE {'U0' if k == 'U0_atom' else k}" for k in keys]], table)
        lines.append("")
        figure = _accuracy_figure(task_name, rows, report)
        if figure:
            lines += [f"![validation error against training time, {task_name}]({figure})", ""]
    return lines


def _accuracy_figure(task_name: str, rows: list[dict[str, Any]], report: Path) -> str | None:
    curves = [r for r in rows if r.get("curve")]
    if not curves:
        return None
    key = "U0_atom" if any("U0_atom" in c for r in curves for c in r["curve"]) else "forces"
    unit = "meV" if key == "U0_atom" else "meV/Å"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours: dict[str, Any] = {}
    for r in curves:
        pts = [(c["train_s"] / 60.0, c[key] * 1000) for c in r["curve"] if key in c]
        if not pts:
            continue
        colour = colours.get(r["model"])
        (line,) = ax.plot(*zip(*pts), marker="o", ms=3, color=colour,
                          label=None if colour else _label(r))
        colours[r["model"]] = line.get_color()
    ax.set_yscale("log")
    ax.set_xlabel("training time [min]")
    ax.set_ylabel(f"validation MAE {'U0' if key == 'U0_atom' else 'forces'} [{unit}]")
    ax.set_title(f"{task_name}: error against training time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path, rel = _figure_path(report, f"bench_accuracy_{task_name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


# ---------------------------------------------------------------------- targets
def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets, each with the measured figure and whether it is met."""
    from localframe.bench.accuracy import summarize

    out = []
    speed, scaling = results.get("speed"), results.get("scaling")
    accuracy = {k.split("-", 1)[1]: v for k, v in results.items() if k.startswith("accuracy-")}

    def speed_row(workload: str, model: str) -> dict | None:
        if not speed:
            return None
        return next((r for r in speed["results"] if r["workload"] == workload and r["model"] == model and "train" in r), None)

    # 1. LEFTNet vs DimeNet++: training speed per structure, then error at equal budget
    ratios = []
    for wname in ("qm9", "ethanol"):
        a, b = speed_row(wname, "leftnet"), speed_row(wname, "pyg_dimenet++")
        if a and b:
            ratios.append((wname, a["train"]["structures_per_s"] / b["train"]["structures_per_s"]))
    out.append(_target("LEFTNet trains ≥ 2× faster than DimeNet++ per structure",
                       "; ".join(f"{w}: {r:.2f}×" for w, r in ratios), all(r >= 2.0 for _, r in ratios) if ratios else None))
    comparisons = []
    for task_name, result in accuracy.items():
        rows = result["tasks"].get(task_name, {}).get("rows", [])
        key = "U0_atom" if task_name == "qm9" else "forces"
        st = summarize(rows, key)
        if "leftnet" in st and "pyg_dimenet++" in st:
            comparisons.append((task_name, key, st["leftnet"]["mean"], st["pyg_dimenet++"]["mean"]))
    out.append(_target("LEFTNet reaches lower error than DimeNet++ at equal budget",
                       "; ".join(f"{t} {('U0' if k == 'U0_atom' else k)} MAE {a * 1000:.3g} vs {b * 1000:.3g} m"
                                 f"{'eV' if k == 'U0_atom' else 'eV/Å'}" for t, k, a, b in comparisons),
                       all(a < b for _, _, a, b in comparisons) if comparisons else None))
    # 2. our SchNet vs PyG SchNet; a slower median whose interquartile range overlaps the other's is a tie
    ratios = []
    if speed:
        for wname in speed["workloads"]:
            a, b = speed_row(wname, "schnet"), speed_row(wname, "pyg_schnet")
            if a and b:
                for mode, key in (("train", "structures_per_s"), ("infer", "atom_steps_per_s")):
                    tie = a[mode]["q25_s"] <= b[mode]["q75_s"] and b[mode]["q25_s"] <= a[mode]["q75_s"]
                    ratios.append((f"{wname} {mode}", a[mode][key] / b[mode][key], tie))
    slower = [(w, r) for w, r, tie in ratios if r < 1.0 and not tie]
    ties = [(w, r) for w, r, tie in ratios if r < 1.0 and tie]
    verdict: bool | str | None = None
    if ratios:
        verdict = False if slower else ("met (the slower medians are within the timings' interquartile ranges)"
                                        if ties else True)
    out.append(_target("our SchNet at least as fast as PyG's SchNet",
                       "; ".join(f"{w}: {r:.2f}×" + (" (tie)" if tie and r < 1.0 else "") for w, r, tie in ratios),
                       verdict))
    # 3. linear cost: α of wall time with the default allocator, of user CPU time (the computation without the
    # system time of page faults), and of wall time with the allocator tuned
    tuned = results.get("scaling-tuned")
    fits: dict[str, dict[str, Any]] = {}
    for key, result in (("wall", scaling), ("user", scaling), ("tuned wall", tuned)):
        for row in (result or {}).get("boxes", {}).get("rows", []):
            if peers.is_peer(row["model"]):  # targets are about localframe's models
                continue
            fit = row.get("fit") if key != "user" else _user_fit(row)
            if fit:
                fits.setdefault(row["model"], {})[key] = fit
    parts = []
    for model, f in fits.items():
        parts.append(f"{peers.label(model)}: " + ", ".join(f"{k} {v['exponent']:.2f}" for k, v in f.items())
                     + f" ({max(v['range'][0] for v in f.values()):,}–{max(v['range'][1] for v in f.values()):,} atoms)")
    wall_ok = [m for m, f in fits.items() if "wall" in f and f["wall"]["exponent"] <= TARGET_LINEAR]
    user_ok = [m for m, f in fits.items() if "user" in f and f["user"]["exponent"] <= TARGET_LINEAR]
    with_wall = [m for m, f in fits.items() if "wall" in f]
    verdict: bool | str | None = None
    if with_wall:
        if len(wall_ok) == len(with_wall):
            verdict = True
        else:
            verdict = (f"missed in wall time ({len(wall_ok)} of {len(with_wall)} models); the computation (user CPU) "
                       f"is linear for {len(user_ok)} of {len(with_wall)}")
    full_range = all(max(v["range"][1] for v in f.values()) >= 0.9e5 for f in fits.values())
    out.append(_target(f"energy + forces cost linear in atoms (α ≤ {TARGET_LINEAR} from 10³ to 10⁵)",
                       "; ".join(parts) + ("" if full_range or not fits else
                                           " — not the full range: larger sizes skipped by the memory cap (see Scaling)"),
                       verdict))
    # 4. faster than GFN2-xTB from aspirin up, ≥ 100x at 1,000 atoms
    if scaling:
        rows = [r for r in scaling.get("molecules", {}).get("rows", []) if "time_s" in r.get("xtb", {})]
        names = [n for n in dict.fromkeys(n for r in rows for n in r["models"]) if not peers.is_peer(n)]
        from_aspirin = [r for r in rows if r["atoms"] >= 21]
        big = [r for r in rows if 900 <= r["atoms"] <= 1100]
        faster, hundred = [], []
        for name in names:
            sp = [(r["atoms"], r["xtb"]["time_s"] / r["models"][name]["time_s"]) for r in from_aspirin
                  if "time_s" in r["models"].get(name, {})]
            if sp:
                faster.append((name, min(s for _, s in sp), all(s > 1.0 for _, s in sp)))
            sb = [r["xtb"]["time_s"] / r["models"][name]["time_s"] for r in big if "time_s" in r["models"].get(name, {})]
            if sb:
                hundred.append((name, sb[0]))
        out.append(_target("learned potential faster than GFN2-xTB from aspirin size up",
                           "; ".join(f"{peers.label(n)}: slowest {s:.3g}×" for n, s, _ in faster)
                           + (" (xTB: " + ", ".join(f"{r['atoms']} atoms {_num(r['xtb']['time_s'])} s" for r in from_aspirin)
                              + ")" if from_aspirin else ""),
                           _per_model([(n, ok) for n, _, ok in faster])))
        out.append(_target(f"≥ {TARGET_XTB_SPEEDUP:.0f}× faster than GFN2-xTB at 1,000 atoms",
                           "; ".join(f"{peers.label(n)}: {s:.3g}×" for n, s in hundred),
                           _per_model([(n, s >= TARGET_XTB_SPEEDUP) for n, s in hundred])))
    return out


def _per_model(checks: list[tuple[str, bool]]) -> bool | str | None:
    """True if every model passes, else a verdict naming who passes and who does not."""
    if not checks:
        return None
    if all(ok for _, ok in checks):
        return True
    passed = [peers.label(n) for n, ok in checks if ok]
    failed = [peers.label(n) for n, ok in checks if not ok]
    return f"missed for {', '.join(failed)}" + (f"; met for {', '.join(passed)}" if passed else "")


def _user_fit(row: dict[str, Any]) -> dict[str, Any] | None:
    """α of user CPU time (CPU minus system time) over a model's box sizes."""
    from localframe.bench.scaling import fit_exponent

    measured = [p for p in row.get("points", []) if "cpu_s" in p and "sys_s" in p]
    return fit_exponent([p["atoms"] for p in measured], [max(p["cpu_s"] - p["sys_s"], 1e-9) for p in measured])


def _target(name: str, measured: str, met: bool | str | None) -> dict[str, str]:
    verdict = met if isinstance(met, str) else "not measured" if met is None else ("met" if met else "missed")
    return {"target": name, "measured": measured or "–", "verdict": verdict}


def _targets_section(results: dict[str, Any], notes: str | None) -> list[str]:
    lines = ["## Targets", "", "Goals set for this release, checked against the figures above (they are not tests); "
             "the model targets are checked on localframe's models (peers are in the tables above).", ""]
    lines += _table(["target", "measured", "verdict"], [[t["target"], t["measured"], t["verdict"]] for t in targets(results)])
    lines.append("")
    profile = results.get("profile")
    if profile and profile.get("profiles"):
        lines += ["### Where the time goes", "",
                  "Top operators (with their input shapes) by self CPU time, from torch.profiler, whose overhead "
                  "inflates absolute times: read the shares. For the model owners.", ""]
        for p in profile["profiles"]:
            lines += [f"**{p['label']}**, {p['mode']} on {p['workload']} ({p['threads']} thread(s)):", ""]
            lines += _table(["operator", "input shapes", "ms per step", "share", "calls per step"],
                            [[f"`{e['op']}`", f"`{e.get('shapes', '')}`", f"{e['self_ms_per_step']:.2f}",
                              f"{100 * e['share']:.0f} %", f"{e['calls_per_step']:.0f}"] for e in p["ops"]])
            lines.append("")
    if notes:
        lines += [notes.strip(), ""]
    return lines


# ---------------------------------------------------------------------- the report
def render(results: dict[str, Any], report: str | Path, command: str | None = None, notes: str | None = None) -> str:
    """The markdown of the benchmark region (figures are written as a side effect)."""
    report = Path(report)
    lines = [START, "<!-- Generated by `localframe bench`; edits between these markers are overwritten. -->", ""]
    lines += _setup(results, command)
    lines += _speed(results, report)
    lines += _scaling(results, report)
    lines += _accuracy(results, report)
    lines += _targets_section(results, notes)
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], report: str | Path, command: str | None = None, notes: str | None = None) -> Path:
    """Regenerate the benchmark region of ``report``, keeping everything outside it."""
    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    region = render(results, report, command, notes)
    if report.exists():
        text = report.read_text()
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END) + r"\n?", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: region, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + region
    else:
        text = "# Benchmarks\n\n" + region
    write_text(report, text)
    return report
