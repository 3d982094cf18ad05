"""MD speed: steps per second of :func:`localframe.md.run_md` with the localframe calculator (eager or
compiled, with or without a Verlet skin) against GFN2-xTB, the aggregate throughput of batched
replicas (:func:`benchmark_replicas`), the cost of one pair-list call, and the ``md`` suite of
``localframe bench`` (:func:`run`): all of it for several models, side by side in one run.

    from localframe.bench.md_speed import benchmark, benchmark_table
    print(benchmark_table(benchmark("model.pt", systems=("ethanol", "aspirin"))))
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import Sequence

import numpy as np
from ase import Atoms

from localframe.errors import InputError
from localframe.md import MDStopped, run_md

__all__ = ["benchmark", "benchmark_replicas", "benchmark_neighbor_list", "benchmark_table", "benchmark_systems",
           "water_box", "run", "MODELS", "SYSTEMS"]

#: Models of the ``md`` suite unless told: the quickstart's LEFTNet, SchNet and MACE (where installed).
MODELS = ("leftnet-quickstart", "schnet", "mace")
SYSTEMS = ("ethanol", "aspirin")
#: Steps of one timed run at most (100 fs at 0.5 fs): models of random weights hold a molecule together that long.
MAX_STEPS = 200


def water_box(repeats: int, spacing: float = 3.104) -> Atoms:
    """A periodic box of 3·repeats³ atoms: one water molecule per cubic cell of ``spacing`` Å (≈1 g/cm³)."""
    from ase.build import molecule

    water = molecule("H2O")
    water.center()
    water.positions += 0.5 * spacing - water.positions.mean(axis=0)
    water.cell = np.eye(3) * spacing
    water.pbc = True
    return water.repeat((repeats, repeats, repeats))


def benchmark_systems(
    names: Sequence[str] = ("ethanol", "aspirin", "water-1k", "water-10k"), seed: int = 0
) -> dict[str, Atoms]:
    """The benchmark structures: molecules from SMILES (RDKit + MMFF) and water boxes."""
    from localframe.reference.xtb import embed_smiles

    smiles = {"ethanol": "CCO", "aspirin": "CC(=O)Oc1ccccc1C(=O)O"}
    boxes = {"water-1k": 7, "water-10k": 15}
    out = {}
    for name in names:
        if name in smiles:
            out[name] = embed_smiles(smiles[name], seed)[0]
        elif name in boxes:
            out[name] = water_box(boxes[name])
        else:
            raise InputError(f"unknown benchmark system {name!r}; known: {', '.join([*smiles, *boxes])}")
    return out


def benchmark(
    models,
    systems: dict[str, Atoms] | Sequence[str] = ("ethanol", "aspirin", "water-1k", "water-10k"),
    steps: dict[str, int] | int = 50,
    repeats: dict[str, int] | int = 3,
    warmup: dict[str, int] | int = 5,
    variants: Sequence[tuple[bool, float]] = ((False, 0.0), (False, 1.0), (True, 0.0), (True, 1.0)),
    xtb: Sequence[str] | bool = ("ethanol", "aspirin"),
    xtb_steps: dict[str, int] | int | None = None,
    xtb_repeats: dict[str, int] | int | None = None,
    dtype: str = "float32",
    timestep: float = 0.5,
    temperature: float = 300.0,
    threads: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """MD steps per second (median of repeated runs) of NVE velocity Verlet through :func:`run_md`.

    ``models``: model file(s) or objects (a list is a committee). ``systems``: names for
    :func:`benchmark_systems` or a dict of structures. ``variants`` are (compile, skin Å) pairs of the
    localframe calculator. ``xtb`` lists the systems (True: all) also run with GFN2-xTB (tblite, one
    OpenMP thread) through the same driver and settings. ``steps``, ``repeats`` and ``warmup`` may
    be per system (dicts; missing systems get 50, 3 and 5); ``xtb_steps``/``xtb_repeats`` default to
    them, and xTB gets one warm-up step. Each timed run starts from the same structure after the
    warm-up run (compilation happens there) and counts only its steps, not the first force call;
    the runs of the localframe variants and of GFN2-xTB are interleaved (variant 1, 2, ..., xTB, 1, 2,
    ..., xTB, ...), so that a change in machine load biases none of them.
    ``threads`` sets ``torch.set_num_threads`` (default: unchanged). Guards are off (benchmark
    structures and an off-domain model may heat up). Returns one row per (system, engine) with
    ``system``, ``atoms``, ``engine``, ``compile``, ``skin``, ``steps``, ``steps_per_second``
    (median), ``runs`` (each run's steps/s) and ``threads``.
    """
    import torch

    from localframe.calculator import Calculator

    threads = torch.get_num_threads() if threads is None else int(threads)
    structures = systems if isinstance(systems, dict) else benchmark_systems(systems)
    xtb_names = list(structures) if xtb is True else list(xtb or ())
    torch.set_num_threads(threads)  # explicitly, after anything that may have touched OMP_NUM_THREADS
    unguarded = {"progress": False, "max_temperature": 1e12, "min_distance": 0}

    def per(value, name: str, default: int) -> int:
        return int(value.get(name, default)) if isinstance(value, dict) else int(value)

    rows = []

    def record(name: str, atoms: Atoms, engine: str, compiled: bool, skin: float, n: int, runs: list[float]) -> None:
        row = {"system": name, "atoms": len(atoms), "engine": engine, "compile": compiled, "skin": skin,
               "steps": n, "steps_per_second": statistics.median(runs), "runs": runs,
               "threads": 1 if engine == "GFN2-xTB" else torch.get_num_threads()}
        rows.append(row)
        if progress:
            print(f"{name:>10s} {len(atoms):6d} atoms  {engine:<30s} {row['steps_per_second']:10.4g} steps/s  "
                  f"(runs {', '.join(f'{x:.4g}' for x in runs)})", flush=True)

    for name, atoms in structures.items():
        n, r, w = per(steps, name, 50), per(repeats, name, 3), per(warmup, name, 5)
        torch._dynamo.reset()  # every system compiles afresh: no cache limit can fall back to eager silently
        engines = []
        for compiled, skin in variants:
            calc = Calculator(models, dtype=dtype, skin=skin, compile=compiled)
            run_md(calc, atoms, "nve", temperature, timestep, w, **unguarded)  # warm-up; compiles
            engines.append((f"localframe {'compiled' if compiled else 'eager'}, skin {skin:g} Å", compiled, skin, calc, []))
        n_xtb = per(steps if xtb_steps is None else xtb_steps, name, 50)
        r_xtb = per(repeats if xtb_repeats is None else xtb_repeats, name, 3) if name in xtb_names else 0
        if r_xtb:
            from localframe.reference.xtb import tblite_threads

            xtb_calc = _xtb_calculator(atoms)
            with tblite_threads():
                run_md(xtb_calc, atoms, "nve", temperature, timestep, 1, **unguarded)
        xtb_runs: list[float] = []
        for k in range(max(r, r_xtb)):  # interleaved: a change of machine load affects every engine alike
            for _, _, _, calc, runs in engines if k < r else ():
                runs.append(run_md(calc, atoms, "nve", temperature, timestep, n, seed=k, **unguarded)["steps_per_second"])
            if k < r_xtb:
                with tblite_threads():
                    xtb_runs.append(run_md(xtb_calc, atoms, "nve", temperature, timestep, n_xtb, seed=k,
                                           **unguarded)["steps_per_second"])
        for label, compiled, skin, _, runs in engines:
            record(name, atoms, label, compiled, skin, n, runs)
        if r_xtb:
            record(name, atoms, "GFN2-xTB", False, 0.0, n_xtb, xtb_runs)
    return rows


def benchmark_replicas(
    models,
    systems: dict[str, Atoms] | Sequence[str] = ("ethanol", "aspirin"),
    replicas: Sequence[int] = (8, 64),
    steps: dict[int, int] | int = 50,
    repeats: int = 3,
    warmup: int = 3,
    dtype: str = "float32",
    ensemble: str = "nvt",
    timestep: float = 0.5,
    temperature: float = 300.0,
    threads: int | None = None,
    progress: bool = True,
    compiled: Sequence[int] = (),
) -> list[dict]:
    """Aggregate throughput of :func:`~localframe.md.replicas.run_replicas` (one batched model call
    per step for R trajectories) against one trajectory of :func:`run_md`, eager, no skin.
    ``compiled``: replica counts that also run with a compiled calculator (``compile=True``: one
    fixed graph for the replicas, :class:`localframe.fast.FastBatch`; Inductor compiles it in the
    warm-up run, minutes per count the first time).

    Per system, a single ``run_md`` and ``run_replicas`` with each count in ``replicas`` run in
    turn, repeat by repeat (single, R1, R2, ..., single, ...), each after its own warm-up run, each
    timed run from the same structure with seeds ``k``, ``k + 1``, ... ``steps`` may be keyed by
    the replica count (0: the single run; missing counts get 50). Guards are off, as in
    :func:`benchmark`. Returns one row per (system, count): ``system``, ``atoms``, ``replicas`` (0
    for the single ``run_md``), ``steps``, ``steps_per_second`` (replica-steps per second,
    median), ``runs``, ``model_share`` (median share of the loop in the batched model calls;
    None for the single run), ``vs_single`` (median steps/s over that of the single run), and the
    same per second of processor time, steadier on a loaded machine: ``steps_per_cpu_second``,
    ``cpu_runs``, ``vs_single_cpu``.
    """
    import torch

    from localframe.calculator import Calculator
    from localframe.md.replicas import run_replicas

    threads = torch.get_num_threads() if threads is None else int(threads)
    structures = systems if isinstance(systems, dict) else benchmark_systems(systems)
    torch.set_num_threads(threads)
    unguarded = {"progress": False, "max_temperature": 1e12, "min_distance": 0, "ensemble": ensemble,
                 "timestep": timestep, "temperature": temperature}
    counts = [(0, False), *((r, False) for r in replicas), *((r, True) for r in compiled)]

    def per(count: int) -> int:
        return int(steps.get(count, 50)) if isinstance(steps, dict) else int(steps)

    def once(calc, atoms, count: int, n: int, seed: int) -> tuple[float, float, float | None]:
        if count == 0:
            result = run_md(calc, atoms, steps=n, seed=seed, **unguarded)
            return result["steps_per_second"], n / result["cpu_seconds"], None
        result = run_replicas(calc, atoms, count, steps=n, seed=seed, **unguarded)
        share = result["model_seconds"] / result["wall_seconds"]
        return result["steps_per_second"], result["steps_per_cpu_second"], share

    rows = []
    for name, atoms in structures.items():
        calcs = {False: Calculator(models, dtype=dtype), True: Calculator(models, dtype=dtype, compile=True) if compiled else None}
        runs: dict[tuple, list] = {key: [] for key in counts}
        for count, fixed in counts:
            once(calcs[fixed], atoms, count, warmup, 0)
        for k in range(repeats):
            for count, fixed in counts:
                runs[count, fixed].append(once(calcs[fixed], atoms, count, per(count), k))
        single = [statistics.median(run[k] for run in runs[0, False]) for k in (0, 1)]
        for count, fixed in counts:
            rate, cpu_rate = (statistics.median(run[k] for run in runs[count, fixed]) for k in (0, 1))
            share = None if count == 0 else statistics.median(run[2] for run in runs[count, fixed])
            row = {"system": name, "atoms": len(atoms), "replicas": count, "compiled": fixed, "steps": per(count),
                   "steps_per_second": rate, "runs": [run[0] for run in runs[count, fixed]], "model_share": share,
                   "vs_single": rate / single[0], "steps_per_cpu_second": cpu_rate,
                   "cpu_runs": [run[1] for run in runs[count, fixed]], "vs_single_cpu": cpu_rate / single[1],
                   "threads": torch.get_num_threads()}
            rows.append(row)
            if progress:
                label = ("run_md" if count == 0 else f"{count} replicas") + (", compiled" if fixed else "")
                print(f"{name:>10s} {len(atoms):4d} atoms  {label:>22s}  "
                      f"{rate:9.4g} replica-steps/s {row['vs_single']:6.2f}x, per CPU second {cpu_rate:9.4g} "
                      f"{row['vs_single_cpu']:6.2f}x  (runs {', '.join(f'{r:.4g}' for r in row['runs'])})", flush=True)
    return rows


def benchmark_neighbor_list(
    systems: dict[str, Atoms] | Sequence[str] = ("ethanol", "aspirin", "water-1k", "water-10k"),
    cutoff: float = 5.0,
    skin: float = 1.0,
    displacement: float = 0.02,
    repeats: dict[str, int] | int = 20,
    seed: int = 0,
) -> list[dict]:
    """Time of one pair-list call (ms, median): a fresh list against reuse of a skin list.

    The structures are displaced by ``displacement`` Å (normal, per component) from where the skin
    list was built, as after a few MD steps. Returns rows with ``system``, ``atoms``, ``pairs``,
    ``candidates`` (pairs within cutoff + skin), ``fresh_ms`` and ``reuse_ms``.
    """
    from localframe.inference import VerletNeighborList

    structures = systems if isinstance(systems, dict) else benchmark_systems(systems)
    rng = np.random.default_rng(seed)
    rows = []
    for name, atoms in structures.items():
        n = int(repeats.get(name, 20)) if isinstance(repeats, dict) else int(repeats)
        cell = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
        fresh, reuse = VerletNeighborList(cutoff, 0.0), VerletNeighborList(cutoff, skin)
        reuse.pairs(atoms.positions, cell, atoms.pbc)
        moved = atoms.positions + rng.normal(scale=displacement, size=atoms.positions.shape)
        times = {}
        for label, nl in (("fresh_ms", fresh), ("reuse_ms", reuse)):
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                edges, _, _ = nl.pairs(moved, cell, atoms.pbc)
                samples.append(time.perf_counter() - start)
            times[label] = 1e3 * statistics.median(samples)
        rows.append({"system": name, "atoms": len(atoms), "pairs": int(edges.shape[1]),
                     "candidates": int(reuse._edges.shape[1]), **times, "rebuilds": reuse.builds - 1})
    return rows


def run(names: Sequence[str], systems: Sequence[str] = SYSTEMS, replicas: int = 64, rounds: int = 5,
        seconds: float = 2.0, compiled: bool = True, xtb: bool = True, threads: int = 1, dtype: str = "float32",
        cutoff: float = 5.0, ensemble: str = "nvt", timestep: float = 0.5, temperature: float = 300.0,
        device: str = "cpu", log=None, save=None) -> dict:
    """The ``md`` suite: per system, every model as one :func:`run_md` trajectory and as ``replicas``
    replicas (:func:`~localframe.md.replicas.run_replicas`), eager and (``compiled``) through the
    compiled fixed graph, against one GFN2-xTB trajectory (tblite, one OpenMP thread), all in one
    process and interleaved round by round (every engine once per round), so that a change of machine
    load affects all of them alike. ``device``: where the models run (GFN2-xTB runs on the CPU).

    Models given by name are built with the seed-0 weights of :func:`localframe.bench.common.build`
    (speed does not depend on them) and their energy scaled by 0.1, so that the molecules hold
    together over the timed steps; model files run as trained. Guards are off. Each engine's first run is its warm-up (compilation happens there);
    a second one of 3 steps sets its steps per timed run so that a run lasts about ``seconds`` (5 to
    :data:`MAX_STEPS` steps). A run that the calculator stops (two atoms closer than 0.1 Å) is timed
    over the steps it made and counted in ``stopped``. A model that fails (or a compiled run that the
    fixed graph does not serve, which would time the eager path twice) is recorded with the reason
    and not timed.

    Returns ``{"environment", "settings", "systems": {name: {"atoms", "rows"}}}``; a row per engine:
    ``model``, ``label``, ``engine`` ("localframe"/"GFN2-xTB"), ``compiled``, ``replicas`` (0: one
    ``run_md`` trajectory), ``steps``, ``runs`` (replica-steps per second of each round),
    ``cpu_runs`` (the same per second of processor time, steadier on a shared machine), medians
    ``steps_per_second``/``steps_per_cpu_second``, and the paired ratios, medians over the rounds of
    each round's ratio: ``vs_eager_cpu`` (to the model's eager trajectory) and ``vs_xtb_cpu`` (to
    GFN2-xTB), with their wall-clock twins ``vs_eager``/``vs_xtb``; or ``failure``.
    ``save(partial)`` is called after each system.
    """
    import torch

    from localframe import dtypes
    from localframe.bench import common
    from localframe.calculator import Calculator
    from localframe.md.replicas import run_replicas
    from localframe.reference.xtb import tblite_threads

    log = log or (lambda message: print(message, flush=True))
    torch.set_num_threads(threads)
    options = {"progress": False, "max_temperature": 1e12, "min_distance": 0, "ensemble": ensemble,
               "timestep": timestep, "temperature": temperature}
    result = {"environment": common.environment(threads, dtype),
              "settings": {"models": list(names), "systems": list(systems), "replicas": replicas, "rounds": rounds,
                           "seconds": seconds, "compiled": compiled, "xtb": xtb, "ensemble": ensemble,
                           "timestep_fs": timestep, "temperature_K": temperature, "cutoff": cutoff, "device": device},
              "systems": {}}

    def once(engine: dict, atoms: Atoms, steps: int, seed: int) -> tuple[float, float]:
        if engine["replicas"]:
            out = run_replicas(engine["calc"], atoms, engine["replicas"], steps=steps, seed=seed, **options)
            if engine["compiled"] and not out["fixed_graph"]:
                raise RuntimeError("the compiled fixed graph does not serve these replicas")
            return out["steps_per_second"], out["steps_per_cpu_second"]
        context = tblite_threads() if engine["engine"] == "GFN2-xTB" else nullcontext()
        with context:
            try:
                out = run_md(engine["calc"], atoms, steps=steps, seed=seed, **options)
            except MDStopped as stop:  # a model of random weights may bring two atoms too close: time the steps done
                out = stop.summary
                engine["stopped"] = engine.get("stopped", 0) + 1  # (the timed runs' count is reset after the warm-up)
        if engine["compiled"]:
            _check_served(engine["calc"].evaluator.fast)
        return out["steps_per_second"], out["steps"] / out["cpu_seconds"]

    for system, atoms in benchmark_systems(systems).items():
        torch._dynamo.reset()
        engines = []
        for name in names:
            try:
                model = common.build(name, cutoff=cutoff, dtype=dtypes.torch_dtype(dtype))
                if not common.is_model_file(name):
                    model.energy_head.scale.mul_(0.1)
                calcs = {False: Calculator(model, device=device, dtype=dtype)}
                if compiled:
                    calcs[True] = Calculator(model, device=device, dtype=dtype, compile=True)
            except Exception as err:  # noqa: BLE001 - a model that cannot be built is a row with its reason
                engines.append(_engine(name, common.label(name), failure=common.failure(err)))
                continue
            engines += [_engine(name, common.label(name), compiled=fixed, replicas=count, calc=calc)
                        for fixed, calc in calcs.items() for count in (0, replicas)]
        if xtb:
            try:
                engines.append(_engine("gfn2-xtb", "GFN2-xTB (tblite)", "GFN2-xTB", calc=_xtb_calculator(atoms)))
            except Exception as err:  # noqa: BLE001 - tblite missing: a row with the reason
                engines.append(_engine("gfn2-xtb", "GFN2-xTB (tblite)", "GFN2-xTB", failure=common.failure(err)))
        for engine in engines:  # warm-up (compiles), then the steps that make a run last about `seconds`
            if "failure" in engine:
                continue
            try:
                if engine["compiled"]:
                    _check_fixed_graph(engine, engines, atoms)
                once(engine, atoms, 3, 0)
                started = time.perf_counter()
                once(engine, atoms, 3, 0)
                per_step = (time.perf_counter() - started) / 3
                engine["steps"] = int(min(MAX_STEPS, max(5, round(seconds / max(per_step, 1e-6)))))
                engine["runs"], engine["cpu_runs"], engine["stopped"] = [], [], 0
            except Exception as err:  # noqa: BLE001 - recorded with its reason, not timed
                engine["failure"] = common.failure(err)
            log(f"md {system}: {_engine_label(engine)} "
                + (engine["failure"] if "failure" in engine else f"{engine['steps']} steps per run"))
        timed = [e for e in engines if "failure" not in e]
        for k in range(rounds):
            for engine in timed:
                if "failure" in engine:
                    continue
                try:
                    wall, cpu = once(engine, atoms, engine["steps"], k)
                    engine["runs"].append(wall)
                    engine["cpu_runs"].append(cpu)
                except Exception as err:  # noqa: BLE001
                    engine["failure"] = common.failure(err)
            log(f"md {system}: round {k + 1}/{rounds} done")
        rows = [_md_row(engine, engines) for engine in engines]
        for row in rows:
            if "failure" not in row:
                log(f"md {system}: {_engine_label(row)}: {row['steps_per_cpu_second']:.4g} replica-steps per CPU s"
                    + (f", {row['vs_eager_cpu']:.2f}x one eager trajectory" if row.get("vs_eager_cpu") else "")
                    + (f", {row['vs_xtb_cpu']:.2f}x GFN2-xTB" if row.get("vs_xtb_cpu") else ""))
        result["systems"][system] = {"atoms": len(atoms), "rows": rows}
        if save is not None:
            save(result)
    return result


def _engine(model: str, label: str, engine: str = "localframe", compiled: bool = False, replicas: int = 0, **extra) -> dict:
    """One engine of the ``md`` suite: what it runs (``calc``) or why it does not (``failure``)."""
    return {"model": model, "label": label, "engine": engine, "compiled": compiled, "replicas": replicas, **extra}


def _check_fixed_graph(engine: dict, engines: list[dict], atoms: Atoms) -> None:
    """RuntimeError unless the compiled fixed graph serves ``engine``'s model: its one-trajectory engine
    builds the graph first (without the minutes a compiled general path would take to warm up); the
    replicas engine of a model whose graph could not be traced is not tried (the same trace)."""
    if engine["replicas"]:
        single = next((e for e in engines if e["model"] == engine["model"] and e["compiled"] and not e["replicas"]), None)
        if single is not None and "failure" in single:
            raise RuntimeError("the compiled fixed graph does not serve this model (see its one-trajectory row)")
        return
    fast = engine["calc"].evaluator.fast
    fast(atoms)
    _check_served(fast)


def _check_served(fast) -> None:
    """RuntimeError unless the fixed graph of ``fast`` (a :class:`localframe.fast.FastPath`) is built and serves."""
    if fast.reason is not None or fast.graphs is None:
        raise RuntimeError(f"the compiled fixed graph does not serve this model ({str(fast.reason).split(' - ')[0]})")


def _engine_label(engine: dict) -> str:
    from localframe.bench.results import md_run_label

    return engine["label"] if engine["engine"] == "GFN2-xTB" else f"{engine['label']}, {md_run_label(engine)}"


def _md_row(engine: dict, engines: list[dict]) -> dict:
    """An engine's results with its paired ratios (each round against the same round of the reference)."""
    keys = ("model", "label", "engine", "compiled", "replicas", "steps", "runs", "cpu_runs", "stopped", "failure")
    row = {k: engine[k] for k in keys if k in engine}
    if "failure" in engine or not engine["runs"]:
        row.setdefault("failure", "no timed run")
        return row
    row["steps_per_second"] = statistics.median(engine["runs"])
    row["steps_per_cpu_second"] = statistics.median(engine["cpu_runs"])
    eager = next((e for e in engines if e["model"] == engine["model"] and e["engine"] == engine["engine"]
                  and not e["compiled"] and not e["replicas"] and e is not engine), None)
    xtb = next((e for e in engines if e["engine"] == "GFN2-xTB" and e is not engine), None)
    for suffix, key in (("", "runs"), ("_cpu", "cpu_runs")):
        for name, reference in (("vs_eager", eager), ("vs_xtb", xtb)):
            paired = [a / b for a, b in zip(engine[key], reference.get(key, []))] if reference else []
            if paired and "failure" not in reference and engine["engine"] != "GFN2-xTB":
                row[name + suffix] = statistics.median(paired)
    return row


def _xtb_calculator(atoms: Atoms):
    """tblite's GFN2-xTB calculator for ``atoms`` (run it inside ``tblite_threads()``: one OpenMP thread)."""
    from localframe.reference.xtb import tblite_calculator_class, tblite_threads

    TBLite = tblite_calculator_class()
    with tblite_threads():
        return TBLite(method="GFN2-xTB", charge=int(atoms.info.get("charge", 0)), verbosity=0)


def benchmark_table(rows: list[dict]) -> str:
    """Markdown table of :func:`benchmark` rows, with each engine's ratio to GFN2-xTB and to eager/no skin."""
    lines = ["| system | atoms | engine | threads | steps timed | steps/s (median) | vs eager, no skin | vs GFN2-xTB |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        same = [r for r in rows if r["system"] == row["system"]]
        base = next((r for r in same if r["engine"] != "GFN2-xTB" and not r["compile"] and r["skin"] == 0), None)
        xtb = next((r for r in same if r["engine"] == "GFN2-xTB"), None)
        rate = row["steps_per_second"]
        vs_base = f"{rate / base['steps_per_second']:.2f}×" if base and row["engine"] != "GFN2-xTB" else ""
        vs_xtb = "1×" if row is xtb else (f"{rate / xtb['steps_per_second']:.1f}×" if xtb else "not run")
        lines.append(f"| {row['system']} | {row['atoms']} | {row['engine']} | {row['threads']} | {row['steps']} | "
                     f"{row['steps_per_second']:.3g} | {vs_base} | {vs_xtb} |")
    return "\n".join(lines)
