"""What every suite shares: building any model by name, timing, peak memory, and the environment.

Timing: ``warmup`` untimed calls, then ``repeats`` timed ones (``time.perf_counter``), reported as
the median with the 25th–75th percentiles. Peak memory: the process's peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs`` before the call) minus the resident set size
just before it — i.e. what the call added at its peak, as the operating system sees it (torch's
allocations are invisible to ``tracemalloc``).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import datetime
import importlib.metadata
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from localframe import models
from localframe.errors import one_line
from localframe.bench import peers

VERSION_PACKAGES = ("localframe", "torch", "numpy", "ase", "vesin", "lightning", "tblite", "torch_geometric",
                    "mace-torch", "e3nn")


def failure(err: BaseException, limit: int = 200) -> str:
    """What a failed run records: the exception type and its message on one line (``errors.one_line``)."""
    return f"{type(err).__name__}: {one_line(err, limit)}"


# ---------------------------------------------------------------------- models
_BUILT: dict[str, torch.nn.Module] = {}


def is_model_file(name: str) -> bool:
    """Whether ``name`` is a trained model file (benchmarked as it was trained) rather than a model's name."""
    return os.path.isfile(name)


def build(name: str, cutoff: float = 5.0, dtype: torch.dtype = torch.float32, seed: int = 0,
          targets: dict[str, str] | None = None, **hparams: Any):
    """Any benchmarked model by name: a localframe model, a model preset (``"leftnet-lite"``, with the
    benchmark's ``cutoff``), a peer (see :mod:`.peers`), or a trained model file (its own cutoff and
    weights; ``cutoff``, ``seed`` and ``hparams`` do not apply).

    Models are initialised from ``seed``. A freshly built model is kept and later requests for the
    same arguments get a copy of it (DimeNet++ and MACE take seconds to construct)."""
    key = repr((name, float(cutoff), str(dtype), seed, sorted((targets or {}).items()), sorted(hparams.items())))
    if key not in _BUILT:
        torch.manual_seed(seed)
        if is_model_file(name):
            from localframe.io import load_model

            model = load_model(name)
        elif peers.is_peer(name):
            model = peers.create(name, cutoff=cutoff, targets=targets, **hparams)
        elif name in models.presets():
            base, preset = models.resolve_preset(name)
            model = models.create(base, targets=targets, **{**preset, "cutoff": cutoff, **hparams})
        else:
            model = models.create(name, cutoff=cutoff, targets=targets, **hparams)
        _BUILT[key] = model.to(dtype)
    return copy.deepcopy(_BUILT[key])


def label(name: str) -> str:
    """Display name: peers by their label, ours as ``localframe <name>``, model files by their path."""
    if is_model_file(name):
        return name
    return peers.label(name) if peers.is_peer(name) else f"localframe {name}"


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def supports(name: str, periodic: bool) -> bool:
    """Whether model ``name`` handles the structures (all ours do; some peers are molecules only)."""
    return not periodic or not peers.is_peer(name) or peers.periodic(name)


# ---------------------------------------------------------------------- timing and memory
def timings(call: Callable[[], Any], warmup: int, repeats: int, max_seconds: float | None = None) -> dict:
    """Median and quartiles (s) of ``repeats`` timed calls after ``warmup`` untimed ones.

    With ``max_seconds``, stops repeating once that much time has been spent timing (at least one
    timed call is always made)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if max_seconds is not None and spent >= max_seconds:
            break
    q = np.percentile(times, [25, 75]) if len(times) > 1 else (times[0], times[0])
    return {"median_s": statistics.median(times), "q25_s": float(q[0]), "q75_s": float(q[1]), "n": len(times)}


def _status_kb(key: str) -> int | None:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    return None


def peak_memory(call: Callable[[], Any]) -> tuple[Any, float | None]:
    """(result of ``call()``, peak resident memory it added in MiB, or None where not measurable).

    Free heap memory is first handed back to the system (glibc ``malloc_trim``), so that memory
    left over from earlier calls does not hide what this one needs."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
    except OSError:
        before = None
    result = call()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return result, None
    return result, max(0.0, (peak - before) / 1024.0)


def available_memory_mib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    return None


@contextlib.contextmanager
def clock():
    """Measures the block: yields a dict filled on exit with ``wall``, ``cpu`` (user + system time
    of the whole process) and ``sys`` seconds."""
    spent: dict[str, float] = {}
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        yield spent
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF)
        spent["wall"] = time.perf_counter() - start
        spent["sys"] = after.ru_stime - before.ru_stime
        spent["cpu"] = after.ru_utime - before.ru_utime + spent["sys"]


def tune_allocator() -> bool:
    """glibc's malloc serving everything from a heap that is never trimmed, for the rest of the process
    (:func:`localframe.allocator.tune`, policy ``heap``; the commands use ``bounded``)."""
    from localframe.allocator import tune

    return tune("heap")


@contextlib.contextmanager
def threads(count: int):
    """Run torch with ``count`` intra-op threads, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------- environment
def load_average() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [float(x) for x in os.getloadavg()]
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def environment(threads_used: int, dtype: str) -> dict[str, Any]:
    """Machine, versions, threads, dtype, date and load average, recorded with every suite."""
    memory = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as handle:
            memory = round(int(handle.readline().split()[1]) / 1024**2, 1)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": memory,
        "os": platform.platform(terse=True), "threads": threads_used, "dtype": dtype,
        "load_average_start": load_average(), "versions": versions(),
    }
