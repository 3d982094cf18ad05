"""The report's figures (matplotlib, PNG in ``figures/`` next to the report): throughput, scaling,
accuracy against training time, MD steps per second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from localframe.bench.results import md_run_label, model_label, row_label


def figure_path(report: Path, name: str) -> tuple[Path, str]:
    folder = report.parent / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name, f"figures/{name}"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def speed_figure(speed: dict[str, Any], report: Path) -> str | None:
    plt = pyplot()
    workloads_ = list(speed["workloads"])
    names = list(dict.fromkeys(r["model"] for r in speed["results"]))
    labels = {r["model"]: row_label(r) for r in speed["results"]}
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
    path, rel = figure_path(report, "bench_speed.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


def scaling_figure(scaling: dict[str, Any], report: Path, tuned: dict[str, Any] | None = None) -> str | None:
    plt = pyplot()
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
        axes[0].plot(n, [p["time_s"] for p in measured], marker="o", ms=3, color=colour[row["model"]], label=row_label(row))
        mem = [(p["atoms"], p["peak_mib"]) for p in measured if p.get("peak_mib")]
        if mem:
            axes[1].plot(*zip(*mem), marker="o", ms=3, color=colour[row["model"]], label=row_label(row))
    for row in (tuned or {}).get("boxes", {}).get("rows", []):
        measured = [p for p in row.get("points", []) if "time_s" in p]
        if measured and row["model"] in colour:
            axes[0].plot([p["atoms"] for p in measured], [p["time_s"] for p in measured], ls="--", marker=".",
                         color=colour[row["model"]], label=f"{row_label(row)}, allocator tuned")
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
                axes[2].plot(*zip(*pts), marker="o", ms=3, color=colour[name], label=model_label(scaling, name))
        xtb = [(r["atoms"], r["xtb"]["time_s"]) for r in molecules if "time_s" in r.get("xtb", {})]
        if xtb:
            axes[2].plot(*zip(*xtb), marker="s", color="black", lw=2, label="GFN2-xTB (tblite)")
        axes[2].set_xscale("log")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("atoms (molecules, water clusters)")
        axes[2].set_ylabel("energy + forces call [s]")
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    path, rel = figure_path(report, "bench_scaling.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


def accuracy_figure(task_name: str, rows: list[dict[str, Any]], report: Path) -> str | None:
    curves = [r for r in rows if r.get("curve")]
    if not curves:
        return None
    key = "U0_atom" if any("U0_atom" in c for r in curves for c in r["curve"]) else "forces"
    unit = "meV" if key == "U0_atom" else "meV/Å"
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours: dict[str, Any] = {}
    for r in curves:
        pts = [(c["train_s"] / 60.0, c[key] * 1000) for c in r["curve"] if key in c]
        if not pts:
            continue
        colour = colours.get(r["model"])
        (line,) = ax.plot(*zip(*pts), marker="o", ms=3, color=colour,
                          label=None if colour else row_label(r))
        colours[r["model"]] = line.get_color()
    ax.set_yscale("log")
    ax.set_xlabel("training time [min]")
    ax.set_ylabel(f"validation MAE {'U0' if key == 'U0_atom' else 'forces'} [{unit}]")
    ax.set_title(f"{task_name}: error against training time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path, rel = figure_path(report, f"bench_accuracy_{task_name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel


def md_figure(md: dict[str, Any], report: Path) -> str | None:
    """Replica-steps per CPU second of every engine, one panel per system, with GFN2-xTB's rate marked."""
    systems = [(name, data) for name, data in md["systems"].items() if any("failure" not in r for r in data["rows"])]
    if not systems:
        return None
    plt = pyplot()
    height = max(len(data["rows"]) for _, data in systems)
    fig, axes = plt.subplots(1, len(systems), figsize=(6.5 * len(systems), 0.32 * height + 1.6), squeeze=False)
    colours = {(False, False): "C0", (False, True): "C1", (True, False): "C2", (True, True): "C3"}  # (compiled, replicas)
    for ax, (name, data) in zip(axes[0], systems):
        rows = [r for r in data["rows"] if "failure" not in r and r["engine"] != "GFN2-xTB"]
        labels = [f"{r['label'].removeprefix('localframe ')}, {md_run_label(r)}" for r in rows]
        ax.barh(np.arange(len(rows)), [r["steps_per_cpu_second"] for r in rows],
                color=[colours[r["compiled"], bool(r["replicas"])] for r in rows])
        ax.set_yticks(np.arange(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        xtb = next((r for r in data["rows"] if r["engine"] == "GFN2-xTB" and "failure" not in r), None)
        if xtb:
            ax.axvline(xtb["steps_per_cpu_second"], color="black", lw=1.5, label="GFN2-xTB, one trajectory")
            ax.axvline(3 * xtb["steps_per_cpu_second"], color="black", lw=1, ls="--", label="3× GFN2-xTB")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # a narrow decade's minor labels overlap
        ax.set_xlabel("replica-steps per CPU second")
        ax.set_title(f"{name} ({data['atoms']} atoms)")
    fig.tight_layout()
    path, rel = figure_path(report, "bench_md.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rel
