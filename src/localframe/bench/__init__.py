"""Benchmarks: speed, scaling and accuracy under a budget, for localframe models and peers side by side.

``localframe bench`` (or :func:`run`) runs the suites, saves each one's results as JSON in ``out``
(``speed.json``, ``scaling.json``, ``scaling-tuned.json``, ``accuracy-<task>.json``, ``profile.json``,
``peers.json``, and ``notes.md`` when notes are given) and regenerates the benchmark region of the
report from everything found there, so suites run at different times end up in one report.

Suites: :mod:`.speed`, :mod:`.scaling`, :mod:`.accuracy`, :mod:`.nbody` (the charged N-body task ES(5):
EGNN against ClofNet, ``nbody.json``), ``md`` (MD steps per second: one trajectory and replicas, eager
and compiled, against GFN2-xTB, ``md.json``; :func:`.md_speed.run`); peers: :mod:`.peers`; structures:
:mod:`.workloads`; results on disk: :mod:`.results`; report: :mod:`.report`
(markdown), with :mod:`.figures` (plots) and :mod:`.verdicts` (the targets, as data). Peers (PyTorch Geometric, MACE) are optional: a peer
that is not installed is reported as skipped.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from localframe.errors import InputError
from localframe.files import write_text

SUITES = ("speed", "scaling", "accuracy", "nbody", "md")
#: Models of a quick run unless ``models`` is given (a peer that is not installed is skipped).
QUICK_MODELS = ("schnet", "leftnet", "pyg_schnet")
TASKS = ("qm9", "md17")


@dataclass
class Options:
    suites: tuple[str, ...] = SUITES
    models: tuple[str, ...] | None = None  # None: every localframe model and every peer
    quick: bool = False
    threads: int = 1
    dtype: str = "float32"
    cutoff: float = 5.0
    out: str = "runs/bench"
    report: str | None = None
    # speed
    warmup: int = 3
    repeats: int = 10
    # scaling
    sizes: tuple[int, ...] | None = None
    time_cap_s: float = 180.0
    max_memory_gib: float = 6.0
    xtb: bool = True
    xtb_cap_s: float = 300.0
    allocator: str = "default"  # "tuned": see localframe.bench.common.tune_allocator
    # accuracy
    tasks: tuple[str, ...] = TASKS
    budget_minutes: float = 30.0
    seeds: int = 3
    n_train: int | None = None
    n_test: int | None = None
    # md (default models: md_speed.MODELS)
    md_replicas: int = 64
    md_rounds: int = 5
    md_seconds: float = 2.0
    md_compile: bool = True
    md_device: str = "cpu"
    # profiles of the hot spots: model names
    profile: tuple[str, ...] = ()
    notes: str | None = None
    command: str | None = field(default=None)


def _check(options: Options) -> None:
    unknown = set(options.suites) - set(SUITES)
    if unknown:
        raise InputError(f"unknown suite(s) {sorted(unknown)}; suites: {', '.join(SUITES)}")
    unknown = set(options.tasks) - set(TASKS)
    if unknown:
        raise InputError(f"unknown task(s) {sorted(unknown)}; tasks: {', '.join(TASKS)}")
    if options.threads < 1:
        raise InputError(f"--threads must be at least 1, got {options.threads}")
    if options.allocator not in ("default", "tuned"):
        raise InputError(f"--allocator must be default or tuned, got {options.allocator!r}")
    if options.dtype not in ("float32", "float64"):
        raise InputError(f"--dtype must be float32 or float64, got {options.dtype!r}")
    from localframe.bench.common import is_model_file

    files = [n for n in options.models or () if is_model_file(n)]
    if files and {"accuracy", "nbody"} & set(options.suites):
        raise InputError(f"model file(s) {files}: the accuracy and nbody suites train models from scratch; "
                         "give model files to the speed, scaling and md suites (--suite md,...)")
    if options.md_replicas < 1 or options.md_rounds < 1 or options.md_seconds <= 0:
        raise InputError("--md-replicas and --md-rounds must be at least 1, --md-seconds positive")
    if options.budget_minutes <= 0 or options.seeds < 1 or options.repeats < 1 or options.warmup < 0:
        raise InputError("--budget-minutes must be positive, --seeds and --repeats at least 1, --warmup at least 0")


def model_names(options: Options) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(models to run, peer status for every peer). Requested peers that are not installed are
    dropped from the run and reported as skipped."""
    from localframe import models
    from localframe.bench import common, own_trainers, peers

    ours = [*models.available(), *models.presets()]
    requested = list(options.models) if options.models else (
        list(QUICK_MODELS) if options.quick else [*models.available(), *peers.names()])
    unknown = [n for n in requested if n not in ours and not peers.is_peer(n) and not own_trainers.is_own(n)
               and not common.is_model_file(n)]
    if unknown:
        raise InputError(f"unknown model(s) {unknown} (neither a name nor a model file); localframe models and presets: {', '.join(ours)}; peers: "
                         f"{', '.join(peers.names())}; peers by their own trainers (accuracy suite): "
                         f"{', '.join(own_trainers.names())}")
    status = {name: peers.status(name) for name in peers.names()}
    for name in peers.names():
        if name not in requested and status[name]["available"]:
            status[name] = {**status[name], "reason": "installed, not in this run"}
    for name in own_trainers.names():
        status[name] = own_trainers.status(name) if name in requested else {
            "available": False, "version": own_trainers.version(name), "reason": "not in this run"}
    names = [n for n in requested if not (peers.is_peer(n) or own_trainers.is_own(n)) or status[n]["available"]]
    return names, status


def run(options: Options, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the requested suites, save their results, regenerate the report; returns paths written."""
    from localframe.bench import report, results

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    _check(options)
    os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))
    names, status = model_names(options)
    from localframe.bench import own_trainers

    built = [n for n in names if not own_trainers.is_own(n)]  # own-trainer peers: accuracy suite only
    out = Path(options.out)
    written: dict[str, Any] = {"results": []}
    results.save({"peers": status}, out, "peers")
    quick = options.quick
    if "speed" in options.suites:
        from localframe.bench import speed

        result = speed.run(built, threads=options.threads, dtype=options.dtype, warmup=1 if quick else options.warmup,
                           repeats=2 if quick else options.repeats, quick=quick, cutoff=options.cutoff,
                           max_seconds=5.0 if quick else 20.0, log=log,
                           save=lambda partial: results.save(partial, out, "speed"))
        written["results"].append(str(results.save(result, out, "speed")))
    if "scaling" in options.suites:
        from localframe.bench import scaling

        result = scaling.run(built, threads=options.threads, dtype=options.dtype, sizes=options.sizes, quick=quick,
                             cutoff=options.cutoff, time_cap_s=10.0 if quick else options.time_cap_s,
                             max_memory_gib=options.max_memory_gib, xtb=options.xtb,
                             xtb_cap_s=10.0 if quick else options.xtb_cap_s, allocator=options.allocator, log=log,
                             save=lambda partial: results.save(partial, out, _scaling_name(partial)))
        name = _scaling_name(result)
        written["results"].append(str(results.save(result, out, name)))
    if "accuracy" in options.suites:
        written["results"] += _accuracy(options, names, out, log)
    if "nbody" in options.suites:
        from localframe.bench import nbody

        chosen = [n for n in (options.models or ()) if n in nbody.MODELS] or None
        result = nbody.run(chosen, seeds=1 if quick else options.seeds, threads=options.threads, quick=quick,
                           n_train=options.n_train, n_test=options.n_test, data_dir=out / "data", log=log,
                           save=lambda partial: results.save(partial, out, "nbody"))
        written["results"].append(str(results.save(result, out, "nbody")))
    if "md" in options.suites:
        from localframe.bench import md_speed

        chosen = built if options.models or quick else [  # peers only where installed
            n for n in md_speed.MODELS if status.get(n, {"available": True})["available"]]
        result = md_speed.run(chosen, systems=("ethanol",) if quick else md_speed.SYSTEMS,
                              replicas=4 if quick else options.md_replicas, rounds=1 if quick else options.md_rounds,
                              seconds=0.2 if quick else options.md_seconds, compiled=options.md_compile and not quick,
                              xtb=options.xtb, threads=options.threads, dtype=options.dtype, cutoff=options.cutoff,
                              device=options.md_device, log=log,
                              save=lambda partial: results.save(partial, out, "md"))
        written["results"].append(str(results.save(result, out, "md")))
    if options.profile:
        from localframe.bench import common, speed

        profiles = []
        for name in options.profile:
            for workload, mode in (("qm9", "train"), ("ethanol", "infer"), ("silicon", "infer")):
                if not common.supports(name, periodic=workload == "silicon"):
                    continue
                try:
                    ops = speed.profile(name, workload, mode, threads=options.threads, dtype=options.dtype)
                except Exception as err:
                    log(f"profile {name} {workload}: {type(err).__name__}: {err}")
                    continue
                profiles.append({"model": name, "label": common.label(name), "workload": workload, "mode": mode,
                                 "threads": options.threads, "ops": ops})
        written["results"].append(str(results.save({"profiles": profiles}, out, "profile")))
    notes_file = out / "notes.md"
    if options.notes:  # kept with the results, so that later reports include them
        write_text(notes_file, options.notes)
    if options.report:
        notes = notes_file.read_text() if notes_file.exists() else None
        written["report"] = str(report.write(results.load(out), options.report, options.command, notes))
    return written


def _scaling_name(result: dict[str, Any]) -> str:
    return "scaling-tuned" if result["settings"]["allocator"] == "tuned" else "scaling"


def _accuracy(options: Options, names: list[str], out: Path, log) -> list[str]:
    from localframe.bench import accuracy, results

    paths = []
    for task in options.tasks:
        if options.quick and task == "qm9":
            continue  # quick runs train on a small generated set only
        earlier = results.load(out).get(f"accuracy-{task}")

        def save(partial: dict[str, Any], task: str = task, earlier: dict | None = earlier) -> None:
            results.save(_merge_accuracy(copy.deepcopy(partial), copy.deepcopy(earlier), task), out, f"accuracy-{task}")

        result = accuracy.run(names, [task], budget_minutes=0.08 if options.quick else options.budget_minutes,
                              seeds=1 if options.quick else options.seeds, threads=options.threads, dtype=options.dtype,
                              cutoff=options.cutoff, n_train=options.n_train, n_test=options.n_test, quick=options.quick,
                              data_dir=out / "data", log=log, save=save)
        result = _merge_accuracy(result, earlier, task)
        paths.append(str(results.save(result, out, f"accuracy-{task}")))
    return paths


def _merge_accuracy(new: dict[str, Any], old: dict[str, Any] | None, task: str) -> dict[str, Any]:
    """Keep earlier rows of models not re-run, when they were trained with the same settings."""
    if not old or task not in old.get("tasks", {}) or task not in new.get("tasks", {}):
        return new
    same = ("budget_minutes", "n_train", "n_test", "quick", "cutoff")
    if any(old["settings"].get(k) != new["settings"].get(k) for k in same) or \
            old["environment"].get("dtype") != new["environment"].get("dtype"):
        return new
    fresh = {(r["model"], r["seed"]) for r in new["tasks"][task]["rows"]}
    kept = [r for r in old["tasks"][task]["rows"] if (r["model"], r["seed"]) not in fresh]
    for r in kept:
        r.setdefault("run", {"date": old["environment"].get("date"), "load_average": old["environment"].get("load_average_start")})
    for r in new["tasks"][task]["rows"]:
        r.setdefault("run", {"date": new["environment"].get("date"), "load_average": new["environment"].get("load_average_start")})
    new["tasks"][task]["rows"] = kept + new["tasks"][task]["rows"]
    new["settings"]["models"] = list(dict.fromkeys([*(r["model"] for r in kept), *new["settings"]["models"]]))
    new["settings"]["seeds"] = max(old["settings"].get("seeds", 1), new["settings"]["seeds"])
    return new


__all__ = ["Options", "SUITES", "TASKS", "model_names", "run"]
