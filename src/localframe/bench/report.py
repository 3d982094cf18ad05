"""The benchmark report: markdown tables from the suites' JSON results (:mod:`.results`), with the
figures of :mod:`.figures` and the target verdicts of :mod:`.verdicts`.

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

from localframe.bench import own_trainers, peers
from localframe.bench.figures import accuracy_figure, md_figure, scaling_figure, speed_figure
from localframe.bench.results import load, md_run_label, model_label, number, row_label, save, user_fit  # noqa: F401 - save/load re-exported
from localframe.bench.verdicts import SPEED_REFERENCES, targets
from localframe.files import write_text

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


# ---------------------------------------------------------------------- formatting helpers
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _load(env: dict[str, Any]) -> str:
    start, end = env.get("load_average_start"), env.get("load_average_end")
    fmt = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "?"  # noqa: E731
    return f"{fmt(start)} → {fmt(end)}"


# ---------------------------------------------------------------------- sections
def _setup(results: dict[str, Any], command: str | None) -> list[str]:
    lines = ["## Benchmark setup", ""]
    suites = [(name, r) for name, r in results.items() if isinstance(r, dict) and "environment" in r]
    if not suites:
        return lines + ["No results yet: run `localframe bench`.", ""]
    env = suites[0][1]["environment"]
    devices = sorted({str(r.get("settings", {}).get("device", "cpu")) for _, r in suites} - {"cpu"})
    lines += [f"- Machine: {env.get('cpu')}, {env.get('cores')} cores ({env.get('usable_cores')} usable), "
              f"{env.get('memory_gib')} GiB memory, {env.get('os')}; "
              + (f"the md suite's models on {', '.join(devices)}." if devices else "no GPU used."),
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
    if name == "md":
        return (f"{models}; {', '.join(s.get('systems', []))}; one trajectory and {s.get('replicas')} replicas, "
                f"{'eager and compiled' if s.get('compiled') else 'eager'}, {s.get('rounds')} rounds")
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
        if own_trainers.is_own(name):
            rows.append([own_trainers.label(name), f"`{name}`", status, "its own trainer (accuracy suite only)"])
            continue
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
        ref = {n: next((r for r in rows if r["model"] == n and "train" in r), None) for n, _ in SPEED_REFERENCES}
        table = []
        for r in rows:
            if "train" not in r:
                table.append([row_label(r), "–", r.get("skipped") or r.get("error", "?"), "", *[""] * (2 * len(SPEED_REFERENCES))])
                continue
            ratios = []
            for mode, key in (("train", "structures_per_s"), ("infer", "atom_steps_per_s")):
                for n, _ in SPEED_REFERENCES:
                    base = ref[n]
                    ratios.append(number(r[mode][key] / base[mode][key], 2) if base else "–")
            table.append([row_label(r), f"{r.get('parameters', 0):,}", number(r["train"]["structures_per_s"]),
                          number(r["infer"]["atom_steps_per_s"]), *ratios])
        lines += [f"### {wname}: {w['description']}", "",
                  f"Training batch: {w['train_structures']} structures, {w['train_atoms']} atoms, {w['train_pairs']} pairs; "
                  f"inference: {w['infer_structures']} structure(s), {w['infer_atoms']} atoms, {w['infer_pairs']} pairs "
                  f"(neighbour list {w['neighbor_list_s'] * 1000:.2f} ms). Source: {w['source']}.", ""]
        lines += _table(["model", "parameters", "train structures/s", "infer atoms·steps/s",
                         *[f"{mode} × {label}" for mode in ("train", "infer") for _, label in SPEED_REFERENCES]], table)
        lines.append("")
    figure = speed_figure(speed, report)
    if figure:
        lines += [f"![training and inference throughput]({figure})", ""]
    return lines


def _md(results: dict[str, Any], report: Path) -> list[str]:
    lines = ["## MD steps per second", ""]
    md = results.get("md")
    if not md:
        return lines + ["Not run (`localframe bench --suite md`).", ""]
    s = md["settings"]
    device = s.get("device", "cpu")
    lines += [(f"Models on **{device}** (GFN2-xTB on the CPU). " if device != "cpu" else "") +
              f"{s['ensemble'].upper()} MD at {s['temperature_K']:g} K, {s['timestep_fs']:g} fs, through `run_md` as "
              f"`localframe md` runs it: each model as one trajectory and as {s['replicas']} replicas (`run_replicas`, one "
              "batched model call per step for all of them), eager and compiled (the fixed graph of `--compile`), and "
              "one GFN2-xTB trajectory (tblite, one OpenMP thread), all in one process and interleaved over "
              f"{s['rounds']} rounds of about {s['seconds']:g} s per run. Models given by name have their seed-0 weights "
              "(speed does not depend on them) with energies × 0.1, so that the molecules hold together; model files "
              "run as trained; guards are off. Rates are "
              "replica-steps per second of processor time (steadier than wall time on a shared machine; wall time in "
              "the last column); ratios are medians of each round's ratio to the same round's reference (paired).", ""]
    for system, data in md["systems"].items():
        table = []
        for r in data["rows"]:
            run = md_run_label(r)
            if "failure" in r:
                table.append([r["label"], run, "–", r["failure"], "", "", ""])
                continue
            ratio = lambda key: f"{r[key]:.2f}×" if r.get(key) is not None else ""  # noqa: E731
            steps = str(r["steps"]) + (f" ({r['stopped']} runs stopped early)" if r.get("stopped") else "")
            table.append([r["label"], run, steps, number(r["steps_per_cpu_second"]), ratio("vs_eager_cpu"),
                          ratio("vs_xtb_cpu"), number(r["steps_per_second"])])
        lines += [f"### {system} ({data['atoms']} atoms)", ""]
        lines += _table(["model", "run", "steps per run", "replica-steps per CPU s", "× one eager trajectory",
                         "× GFN2-xTB", "replica-steps/s (wall)"], table)
        lines.append("")
    figure = md_figure(md, report)
    if figure:
        lines += [f"![MD throughput against GFN2-xTB]({figure})", ""]
    return lines


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
    figure = scaling_figure(main, report, tuned if scaling else None)
    if figure:
        lines += [f"![time and memory against atoms]({figure})", ""]
    lines += _versus_xtb(main)
    return lines


def _scaling_table(scaling: dict[str, Any]) -> list[str]:
    table = []
    for row in scaling["boxes"]["rows"]:
        if "points" not in row:
            table.append([row_label(row), row.get("skipped") or row.get("error", "?"), "", "", "", "", "", "", ""])
            continue
        measured = [p for p in row["points"] if "time_s" in p]
        at1000 = next((p for p in measured if p["atoms"] == 1000), None)
        largest = measured[-1] if measured else None
        skipped = [p for p in row["points"] if "time_s" not in p]
        fit, fit_cpu, fit_nl, fit_user = row.get("fit"), row.get("fit_cpu"), row.get("fit_with_neighbor_list"), user_fit(row)
        memory = f", {number(largest['peak_mib'])} MiB" if largest and largest.get("peak_mib") is not None else ""
        table.append([
            row_label(row),
            f"{fit['exponent']:.2f} ({fit['range'][0]:,}–{fit['range'][1]:,})" if fit else "–",
            f"{fit_cpu['exponent']:.2f}" if fit_cpu else "–",
            f"{fit_user['exponent']:.2f}" if fit_user else "–",
            f"{fit_nl['exponent']:.2f}" if fit_nl else "–",
            f"{number(at1000['time_s'])} / {number(at1000.get('cpu_s'))}" if at1000 else "–",
            (f"{largest['atoms']:,} atoms: {number(largest['time_s'])} s{memory}, system "
             f"{100 * largest.get('sys_s', 0) / max(largest.get('cpu_s') or 1e-12, 1e-12):.0f} % of CPU") if largest else "–",
            number(largest["atoms"] / largest["time_s"]) if largest else "–",
            "; ".join(f"{p['atoms']:,}: {p.get('skipped') or p.get('error')}" for p in skipped[:1])
            + (f" (+{len(skipped) - 1} larger)" if len(skipped) > 1 else ""),
        ])
    return _table(["model", "α wall", "α CPU", "α user CPU", "α wall + neighbour list", "s at 1,000 atoms (wall / CPU)",
                   "largest size run", "atoms·steps/s there", "skipped"], table)


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
        cells = [r["system"], str(r["atoms"]), number(xtb["time_s"]) if "time_s" in xtb else xtb.get("skipped") or xtb.get("error", "–")]
        for name in names:
            m = r["models"].get(name, {})
            if "time_s" not in m:
                cells.append("error" if "error" in m else "–")
                continue
            speedup = f" ({number(xtb['time_s'] / m['time_s'], 3)}×)" if "time_s" in xtb else ""
            cells.append(number(m["time_s"]) + speedup)
        table.append(cells)
    lines += _table(["system", "atoms", "GFN2-xTB s", *[model_label(scaling, n) for n in names]], table)
    return lines + [""]


def _accuracy(results: dict[str, Any], report: Path) -> list[str]:
    from localframe.bench.accuracy import summarize

    lines = ["## Accuracy under a fixed training budget", ""]
    tasks = {k.split("-", 1)[1]: v for k, v in results.items() if k.startswith("accuracy-")}
    if not tasks:
        return lines + ["Not run.", ""]
    lines += ["Same data, split, loss, optimiser, schedule (warm-up, then cosine decay over the budget), EMA and "
              "budget for every model — peers included, trained by localframe's loop through the adapters of "
              "`localframe.bench.peers`, except the rows trained by their own programs (listed below each table). Every model at its default size (localframe models 128 channels; peers as "
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
                table.append([row_label(errors[0]) if errors else name, "–", "0", "–", "–", "–",
                              *[errors[0]["error"][:120] if errors else "–" for _ in keys]])
                continue
            cells = [row_label(mine[0]), f"{mine[0].get('parameters', 0):,}", str(len(mine)), f"{np.mean([r['steps'] for r in mine]):.0f}",
                     number(float(np.mean([r["structures_per_s"] for r in mine]))),
                     _mean_or_dash([r.get("best_at_s") for r in mine])]
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
        lines += _own_trainers(rows)
        figure = accuracy_figure(task_name, rows, report)
        if figure:
            lines += [f"![validation error against training time, {task_name}]({figure})", ""]
    return lines


def _mean_or_dash(values: list) -> str:
    known = [v for v in values if v is not None]
    return number(float(np.mean(known))) if known else "–"


#: What an own-trainer row may say about its timing: (key, label, unit); absent keys are left out.
OWN_TRAINER_TIMING = (("first_call_s", "first call", " s"), ("epoch_s", "epoch", " s"),
                      ("stage_two_from", "stage two from epoch", " of the second call"), ("steps", "steps", ""))


def _own_trainers(rows: list[dict[str, Any]]) -> list[str]:
    """The recipe of every row trained by its own program."""
    lines = []
    for r in {r["model"]: r for r in rows if "trainer" in r}.values():
        t = r["trainer"]
        settings = ", ".join(f"{k}={v}" for k, v in t["settings"].items())
        timing = [f"{label} {t[key]}{unit}" for key, label, unit in OWN_TRAINER_TIMING if t.get(key) is not None]
        lines.append(f"- {row_label(r)}: `{t['program']}` ({t['package']} {t['version']}), {t['recipe']}; settings `{settings}`; "
                     f"{t.get('epochs')} epochs in {t.get('wall_s')} s of wall time"
                     f"{' (' + ', '.join(timing) + ')' if timing else ''}"
                     f"{'; killed at the budget' if t.get('killed') else ''}; tested: {t.get('model_tested')}.")
    if not lines:
        return []
    return ["Trained by their own programs and recipes (`localframe.bench.own_trainers`; same split and test metrics; "
            "each program's budget rule is in docs/benchmarks.md):", "", *lines, ""]


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
    lines += _md(results, report)
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
