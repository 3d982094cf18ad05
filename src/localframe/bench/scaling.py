"""Scaling suite: cost of one energy + forces call from 10² to 10⁵ atoms, and GFN2-xTB beside it.

Part 1, periodic boxes: rattled diamond-silicon supercells (8 n³ atoms, 28 neighbours per atom
within 5 Å). For every model and size: peak memory of a first energy + forces call (resident set
size added at the peak, see :mod:`.common`), then the wall time of warm calls (median of three
while calls are short, one when they are long, the first call's alone beyond 10 s); the
neighbour-list time is reported separately. A size is skipped when the previous size predicts (linearly in atoms) more than the
time cap or the memory cap. The exponent α of t ∝ N^α is fitted by least squares in log-log over
the sizes measured between 10³ and 10⁵ atoms.

Part 2, molecules and clusters: ethanol (9 atoms), aspirin (21) and water clusters (about 100,
300 and 1,000 atoms), non-periodic, with every model and with GFN2-xTB (tblite, the same thread
count) on the sizes it can do within its time cap (the next size is skipped when the last one's
time, scaled as N³, exceeds the cap); speed-ups are xTB time / model time on
identical structures.

Part 3, one call in a fresh process (``python -m localframe.bench.scaling MODEL ATOMS``, e.g. under
``/usr/bin/time -v`` for the process's peak resident set): :func:`single` builds one box, times the
pair list, and measures one model's energy + forces on it as in part 1, with the allocator policy of
the compute commands (:func:`localframe.allocator.apply_default`) and the model's ``edge_chunk``
setting (:mod:`localframe.nn.chunking`; default: chunked above one chunk of pairs). Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

import numpy as np

from localframe import dtypes
from localframe.bench import common, workloads
from localframe.data.batch import AtomsBatch

#: Default box sizes (atoms, approximately: 8 n³ for the nearest n).
BOX_SIZES = (64, 216, 512, 1000, 2744, 8000, 21952, 54872, 97336)
QUICK_BOX_SIZES = (64, 216)
#: Water clusters for the comparison with GFN2-xTB (molecules).
CLUSTERS = (33, 100, 333)


def _call(model, batch: AtomsBatch) -> Callable[[], dict[str, float]]:
    def timed() -> dict[str, float]:
        with common.clock() as spent:
            out = model(batch, forces=True, stress=False)
            out["forces"].detach()
        return spent

    return timed


def _measure(timed: Callable[[], dict[str, float]], short_s: float = 2.0, long_s: float = 10.0) -> dict[str, Any]:
    """Peak memory of a first (cold) call, then the median times of warm calls: three when calls
    are short, one otherwise; beyond ``long_s`` the cold call's times are used alone.

    ``time_s`` is wall time; ``cpu_s`` the process's CPU time (user + system), which other work on
    the machine does not inflate; ``sys_s`` its system part (page faults of fresh allocations)."""
    cold, memory = common.peak_memory(timed)
    calls = [cold] if cold["wall"] >= long_s else [timed()]
    if calls[0]["wall"] < short_s:
        calls += [timed(), timed()]
    median = {key: float(np.median([c[key] for c in calls])) for key in ("wall", "cpu", "sys")}
    return {"time_s": median["wall"], "cpu_s": median["cpu"], "sys_s": median["sys"], "calls": len(calls),
            "peak_mib": memory}


def fit_exponent(atoms: list[float], times: list[float], lo: float = 1e3, hi: float = 1e5) -> dict[str, Any] | None:
    """Least-squares α in t = c N^α over the points with lo ≤ N ≤ hi (None with fewer than two)."""
    points = [(n, t) for n, t in zip(atoms, times) if lo <= n <= hi * 1.01 and t > 0]
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    return {"exponent": float(slope), "range": [int(min(p[0] for p in points)), int(max(p[0] for p in points))],
            "points": len(points)}


def _boxes(names, sizes, cutoff, torch_dtype, time_cap_s, max_memory_mib, log) -> dict[str, Any]:
    batches: dict[int, tuple[AtomsBatch, float]] = {}

    def box(size: int) -> tuple[AtomsBatch, float]:
        if size not in batches:
            atoms = workloads.silicon_box(workloads.silicon_repeat_for(size), seed=0)
            start = time.perf_counter()
            batch = AtomsBatch.from_atoms(atoms, cutoff, dtype=torch_dtype)
            batches[size] = (batch, time.perf_counter() - start)
        return batches[size]

    rows = []
    for name in names:
        if not common.supports(name, periodic=True):
            rows.append({"model": name, "label": common.label(name), "skipped": "n/a: no periodic boundary conditions"})
            continue
        try:
            model = common.build(name, cutoff=cutoff, dtype=torch_dtype).eval()
        except Exception as err:
            rows.append({"model": name, "label": common.label(name), "error": f"{type(err).__name__}: {err}"})
            continue
        points: list[dict[str, Any]] = []
        for size in sizes:
            n_atoms = 8 * workloads.silicon_repeat_for(size) ** 3
            point: dict[str, Any] = {"atoms": n_atoms}
            last = next((p for p in reversed(points) if "time_s" in p), None)
            if last is not None:
                factor = n_atoms / last["atoms"]
                predicted_t = last["time_s"] * factor
                predicted_m = (last["peak_mib"] or 0.0) * factor
                available = common.available_memory_mib()
                limit = min(max_memory_mib, 0.6 * available) if available else max_memory_mib
                if predicted_t > time_cap_s:
                    point["skipped"] = f"predicted {predicted_t:.0f} s > cap {time_cap_s:.0f} s"
                elif predicted_m > limit:
                    point["skipped"] = f"predicted {predicted_m / 1024:.1f} GiB > limit {limit / 1024:.1f} GiB"
            if any("skipped" in p or "error" in p for p in points):
                point.setdefault("skipped", "a smaller size was skipped")
            if "skipped" not in point:
                batch, nl_time = box(size)
                point.update({"pairs": int(batch.edge_index.shape[1]), "neighbor_list_s": nl_time})
                try:
                    point.update(_measure(_call(model, batch)))
                except (RuntimeError, MemoryError) as err:
                    point["error"] = common.failure(err, 200)
            points.append(point)
            log(f"scaling box {name:14s} {n_atoms:7d} atoms  " + (
                f"{point['time_s']:8.3f} s (CPU {point['cpu_s']:.3f} s, system {point['sys_s']:.3f} s)  "
                f"{point['peak_mib'] or 0:8.0f} MiB" if "time_s" in point
                else point.get("skipped", point.get("error", ""))))
        measured = [p for p in points if "time_s" in p]
        rows.append({
            "model": name, "label": common.label(name), "points": points,
            "fit": fit_exponent([p["atoms"] for p in measured], [p["time_s"] for p in measured]),
            "fit_cpu": fit_exponent([p["atoms"] for p in measured], [p["cpu_s"] for p in measured]),
            "fit_with_neighbor_list": fit_exponent([p["atoms"] for p in measured],
                                                   [p["time_s"] + p["neighbor_list_s"] for p in measured]),
        })
        del model
    return {"structure": "diamond Si supercells, periodic, rattled (σ = 0.05 Å)", "rows": rows}


@contextlib.contextmanager
def _omp_threads(count: int):
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(count)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def _molecules(quick: bool) -> list[tuple[str, Any]]:
    systems = [("ethanol", workloads.ethanol_frames(1, seed=0, stdev=0.0)[0])]
    aspirin = workloads.aspirin()
    if aspirin is not None:
        systems.append(("aspirin", aspirin))
    for n in () if quick else CLUSTERS:
        systems.append((f"water cluster ({n} H₂O)", workloads.water_cluster(n, seed=0)))
    return systems


def _xtb_time(atoms, threads: int) -> dict[str, Any]:
    from localframe.reference import label

    def timed() -> dict[str, float]:
        with common.clock() as spent:
            label([atoms], progress=False)
        return spent

    with _omp_threads(threads):
        return _measure(timed, short_s=1.0)


def _xtb_child(atoms, threads: int, queue) -> None:
    try:
        queue.put(_xtb_time(atoms, threads))
    except Exception as err:  # reported by the parent
        queue.put({"error": common.failure(err, 200)})


def _xtb_time_capped(atoms, threads: int, cap_s: float) -> dict[str, Any]:
    """:func:`_xtb_time` in a child process that is stopped once it runs past ``cap_s`` (tblite
    cannot be interrupted in-process, and an SCF that converges slowly can run far past the
    time predicted from smaller systems)."""
    import multiprocessing
    import queue as queues

    context = multiprocessing.get_context("spawn")
    channel = context.Queue()
    child = context.Process(target=_xtb_child, args=(atoms, threads, channel), daemon=True)
    child.start()
    try:
        return channel.get(timeout=cap_s + 60.0)  # + start-up of the child
    except queues.Empty:
        return {"skipped": f"stopped after running past the cap of {cap_s:.0f} s"}
    finally:
        if child.is_alive():
            child.terminate()
        child.join(10)


def _versus_xtb(names, cutoff, torch_dtype, threads, xtb: bool, xtb_cap_s, quick, log) -> dict[str, Any]:
    systems = _molecules(quick)
    rows = []
    xtb_rows: list[dict[str, Any]] = []
    xtb_state = "not requested"
    if xtb:
        try:
            import tblite.ase  # noqa: F401

            xtb_state = "ok"
        except ImportError:
            xtb_state = "skipped: tblite not installed"
    built: dict[str, Any] = {}
    for name in names:
        try:
            built[name] = common.build(name, cutoff=cutoff, dtype=torch_dtype).eval()
        except Exception as err:
            built[name] = common.failure(err, 200)
    for label_, atoms in systems:
        batch = AtomsBatch.from_atoms(atoms, cutoff, dtype=torch_dtype)
        row: dict[str, Any] = {"system": label_, "atoms": len(atoms), "models": {}}
        for name, model in built.items():
            try:
                if isinstance(model, str):
                    raise RuntimeError(model)
                row["models"][name] = _measure(_call(model, batch))
            except Exception as err:
                row["models"][name] = {"error": common.failure(err, 200)}
        if xtb_state == "ok":
            last = xtb_rows[-1] if xtb_rows else None
            predicted = last["time_s"] * (len(atoms) / last["atoms"]) ** 3 if last and "time_s" in last else 0.0
            if last is not None and "time_s" not in last:
                row["xtb"] = {"skipped": "a smaller system was skipped"}
            elif predicted > xtb_cap_s:
                row["xtb"] = {"skipped": f"predicted {predicted:.0f} s > cap {xtb_cap_s:.0f} s"}
            else:
                try:
                    # small systems in this process; larger ones where they can be stopped at the cap
                    row["xtb"] = (_xtb_time(atoms, threads) if last is None or predicted < 5.0
                                  else _xtb_time_capped(atoms, threads, xtb_cap_s))
                except Exception as err:
                    row["xtb"] = {"error": common.failure(err, 200)}
            xtb_rows.append({"atoms": len(atoms), **row["xtb"]})
        else:
            row["xtb"] = {"skipped": xtb_state}
        rows.append(row)
        log(f"scaling molecule {label_:24s} {len(atoms):5d} atoms  xTB " + (
            f"{row['xtb']['time_s']:.3f} s" if "time_s" in row["xtb"] else row["xtb"].get("skipped", row["xtb"].get("error", ""))))
    return {"xtb": xtb_state, "rows": rows}


def single(name: str, atoms: int, threads: int = 1, dtype: str = "float32", cutoff: float = 5.0,
           edge_chunk: int | None = None, allocator: bool = True) -> dict[str, Any]:
    """One model, one rattled silicon box of about ``atoms`` atoms: pair-list time, energy + forces
    (peak added, wall, CPU and system time, as :func:`_measure`) and the process's peak resident set."""
    import resource

    from localframe import allocator as allocation

    tuned = allocation.apply_default() if allocator else False
    torch_dtype = dtypes.torch_dtype(dtype)
    with common.threads(threads):
        box = workloads.silicon_box(workloads.silicon_repeat_for(atoms), seed=0)
        with common.clock() as listed:
            batch = AtomsBatch.from_atoms(box, cutoff, dtype=torch_dtype)
        model = common.build(name, cutoff=cutoff, dtype=torch_dtype).eval()
        model.edge_chunk = edge_chunk
        point = _measure(_call(model, batch))
    return {"model": name, "atoms": len(box), "pairs": int(batch.edge_index.shape[1]), "threads": threads,
            "dtype": dtype, "edge_chunk": edge_chunk, "allocator": "tuned" if tuned else "default",
            "neighbor_list_s": listed["wall"], **point,
            "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run(names: list[str], threads: int = 1, dtype: str = "float32", sizes: tuple[int, ...] | None = None,
        quick: bool = False, cutoff: float = 5.0, time_cap_s: float = 180.0, max_memory_gib: float = 6.0,
        xtb: bool = True, xtb_cap_s: float = 300.0, allocator: str = "default", molecules: bool = True,
        log: Callable[[str], None] = print, save: Callable[[dict], Any] | None = None) -> dict[str, Any]:
    """Both parts for the models in ``names``; returns a JSON-ready dict.

    ``allocator="tuned"`` first makes glibc serve every allocation from its heap and never trim
    it (:func:`localframe.bench.common.tune_allocator`, for the rest of the process), so large
    tensors reuse memory instead of faulting in fresh pages on every call; peak memory is then
    not meaningful (memory from earlier calls is reused) and is not reported."""
    torch_dtype = dtypes.torch_dtype(dtype)
    tuned = allocator == "tuned" and common.tune_allocator()
    if allocator == "tuned" and not tuned:
        log("scaling: could not tune the allocator (not glibc?); measuring with the default one")
    sizes = tuple(sizes or (QUICK_BOX_SIZES if quick else BOX_SIZES))
    result: dict[str, Any] = {
        "suite": "scaling", "environment": common.environment(threads, dtype),
        "settings": {"sizes": list(sizes), "time_cap_s": time_cap_s, "max_memory_gib": max_memory_gib,
                     "xtb_cap_s": xtb_cap_s, "cutoff": cutoff, "quick": quick, "models": list(names),
                     "memory": "peak resident set size added by the call (VmHWM after reset − VmRSS before)",
                     "allocator": "tuned" if tuned else "default"},
    }
    with common.threads(threads):
        result["boxes"] = _boxes(names, sizes, cutoff, torch_dtype, time_cap_s, max_memory_gib * 1024.0, log)
        if tuned:
            for row in result["boxes"]["rows"]:
                for point in row.get("points", []):
                    point.pop("peak_mib", None)
        if save:
            save(result)  # the boxes are done: keep them if the rest is interrupted
        if molecules:
            result["molecules"] = _versus_xtb(names, cutoff, torch_dtype, threads, xtb, xtb_cap_s, quick, log)
    result["environment"]["load_average_end"] = common.load_average()
    return result


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="one energy + forces call on a silicon box, in this process")
    parser.add_argument("model")
    parser.add_argument("atoms", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--edge-chunk", type=int, default=None, help="pairs per chunk (0: off; default: automatic)")
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's malloc as it is")
    args = parser.parse_args()
    print(json.dumps(single(args.model, args.atoms, args.threads, args.dtype, edge_chunk=args.edge_chunk,
                            allocator=not args.default_allocator)), flush=True)
