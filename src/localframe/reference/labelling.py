"""Labelling a structure file with xTB: written as it goes, resumable, in parallel.

:func:`label_file` appends each labelled structure to the output as one whole, synced
extended-XYZ frame (:mod:`localframe.reference.extxyz_frames`) that records its place in the input,
``info["source_index"]``, and the method, ``info["xtb_method"]``. A run that is killed keeps every
frame it wrote; the same command again checks that the output belongs to this input and these
settings, drops an unfinished last frame, and labels only what is missing. The structures are
computed in chunks, by this process, by ``workers`` processes of this machine, or by the workers
of a Dask cluster (``client``); this process alone writes. At the end the frames are put in input
order (an atomic rewrite, when they finished out of order), so a resumed or parallel run ends
with the same file as one uninterrupted serial run.
"""

from __future__ import annotations

import io
import multiprocessing
import numbers
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from ase import Atoms

from localframe.errors import InputError, one_line
from localframe.files import atomic_open
from localframe.md.checks import count as _count
from localframe.progress import progress as progress_bar
from localframe.reference.extxyz_frames import FrameAppender, frame_text, split_frames
from localframe.reference.xtb import (
    _check_method, _check_output, _label_one, _read_structures, _store_labels, _structure_charge,
    tblite_calculator_class, tblite_threads,
)

__all__ = ["label_file"]

MAX_CHUNK = 8  # structures per task: few enough to lose little to a kill, enough to amortise the overhead
POSITION_TOLERANCE = 1e-6  # Å; extended XYZ keeps positions to 1e-8 Å

Result = tuple[int, str]  # (index in the input, extended-XYZ frame)


def label_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    progress: bool = True,
    method: str = "GFN2-xTB",
    charge: int | None = None,
    format: str | None = None,
    workers: int = 1,
    client=None,
) -> list[Atoms]:
    """Label every structure of a file with xTB into an extended-XYZ file; resumable (see the module).

    ``in_path`` is any file ``ase.io.read`` understands (``format`` overrides the guess from the
    extension). Structures are checked first (unknown elements, NaN coordinates, atoms closer
    than 0.1 Å raise :class:`InputError` naming the file and structure). The output stores
    ``energy`` (eV), ``forces`` (eV/Å), for 3D-periodic structures ``stress`` (eV/Å³), and
    ``source_index`` and ``xtb_method``. An existing ``out_path`` is continued if it holds frames
    of this input labelled with this ``method`` and charge; otherwise it is refused with a one-line
    :class:`InputError`. ``workers`` processes label in parallel (one OpenMP thread each);
    ``client`` (a ``distributed.Client`` or a scheduler address such as ``"tcp://host:8786"``)
    sends the work to a Dask cluster instead. Returns the labelled structures in input order.
    """
    from localframe.data.convert import check_structure

    _check_method(method)
    workers = _count("workers", workers)
    if client is not None and workers != 1:
        raise InputError("give either workers or a Dask scheduler: on a cluster its workers do the work")
    out_path = _check_output(out_path)
    source = str(in_path)
    structures = _read_structures(in_path, ":", format)
    for k, atoms in enumerate(structures):
        check_structure(atoms, source=source, index=k)

    done, keep = _resume(out_path, structures, method, charge, source)
    todo = [i for i in range(len(structures)) if i not in done]
    if done and progress:
        print(f"{out_path}: {len(done)} of {len(structures)} structures already labelled", file=sys.stderr)
    task = partial(_label_chunk, method=method, charge=charge, source=source,
                   threads=1 if client is not None or workers > 1 else None)
    try:
        with FrameAppender(out_path, keep) as log, \
                progress_bar(len(todo), f"{method} labels", progress and bool(todo), unit="structures") as bar:
            for batch in _completed(task, structures, todo, workers, client):
                log.append([text for _, text in batch])
                done.update((index, text.encode("utf-8")) for index, text in batch)
                bar.advance(len(batch))
    except BaseException:
        if not done:
            out_path.unlink(missing_ok=True)
        raise
    in_order = b"".join(done[i] for i in range(len(structures)))
    if list(done) != sorted(done):
        with atomic_open(out_path, "wb") as handle:
            handle.write(in_order)
    return [_labelled(atoms, str(out_path), k) for k, atoms in enumerate(_parse(in_order))]


# ---------------------------------------------------------------------- resuming
def _resume(out_path: Path, structures: list[Atoms], method: str, charge, source: str) -> tuple[dict[int, bytes], int]:
    """The frames already in ``out_path`` by input index, in file order, and where the whole ones end."""
    if not out_path.exists():
        return {}, 0
    where = str(out_path)
    try:
        chunks, end = split_frames(out_path.read_bytes())
        frames = _parse(b"".join(chunks))
    except Exception as err:  # ase raises many types for text it cannot parse
        raise InputError(f"exists and is not an extended-XYZ file of labels ({one_line(err) or type(err).__name__}); "
                         "remove it or choose another output", where) from None
    done: dict[int, bytes] = {}
    for k, (chunk, frame) in enumerate(zip(chunks, frames)):
        problem = _mismatch(frame, structures, done, method, charge, source)
        if problem:
            raise InputError(f"exists and is not a labelling of {source} with {method}: frame {k} {problem}; "
                             "remove it or choose another output", where)
        done[int(frame.info["source_index"])] = chunk
    return done, end


def _mismatch(frame: Atoms, structures: list[Atoms], done: dict, method: str, charge, source: str) -> str | None:
    """Why ``frame`` cannot be a labelled structure of ``structures``, or None."""
    index = frame.info.get("source_index")
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        return "has no source_index"
    index = int(index)
    if not 0 <= index < len(structures):
        return f"is structure {index}, but the input has {len(structures)} structures"
    if index in done:
        return f"repeats structure {index}"
    if frame.info.get("xtb_method") != method:
        return f"was labelled with {frame.info.get('xtb_method', 'an unknown method')}"
    atoms = structures[index]
    same = (
        len(frame) == len(atoms) and np.array_equal(frame.numbers, atoms.numbers)
        and np.array_equal(frame.pbc, atoms.pbc)
        and np.allclose(frame.cell.array, atoms.cell.array, rtol=0, atol=POSITION_TOLERANCE)
        and np.allclose(frame.positions, atoms.positions, rtol=0, atol=POSITION_TOLERANCE)
    )
    if not same:
        return f"(structure {index}) has other atoms, positions or cell than the input"
    used, wanted = frame.info.get("charge", 0), _structure_charge(atoms, charge, source, index)
    if used != wanted:
        return f"(structure {index}) has total charge {used}, not {wanted}"
    return None


def _parse(data: bytes) -> list[Atoms]:
    import ase.io

    return list(ase.io.read(io.StringIO(data.decode("utf-8")), ":", format="extxyz")) if data else []


def _labelled(atoms: Atoms, source: str, index: int) -> Atoms:
    """A frame read back, with its labels in ``info``/``arrays`` like :func:`label` returns them."""
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    atoms.calc = None
    _store_labels(atoms, results, source, index)
    return atoms


# ---------------------------------------------------------------------- computing
def _label_chunk(items: list[tuple[int, Atoms]], *, method: str, charge, source: str,
                 threads: int | None) -> list[Result]:
    """Label ``(index, atoms)`` pairs; runs in this process, a worker process or a Dask worker."""
    TBLite = tblite_calculator_class()
    results = []
    with tblite_threads(threads):
        for index, atoms in items:
            labelled = _label_one(atoms, TBLite, method, charge, 1.0, source, index)
            labelled.info["source_index"] = index
            labelled.info["xtb_method"] = method
            results.append((index, frame_text(labelled)))
    return results


def _completed(task: Callable, structures: list[Atoms], todo: list[int], workers: int,
               client) -> Iterator[list[Result]]:
    """Results of ``task`` over chunks of ``todo``, in batches as they complete."""
    if not todo:
        return
    if client is not None:
        with _dask_client(client) as dask:
            slots = max(1, sum(dask.nthreads().values()))
            yield from _on_dask(dask, task, _chunks(structures, todo, slots))
    elif workers > 1:
        yield from _in_processes(workers, task, _chunks(structures, todo, workers))
    else:
        for chunk in _chunks(structures, todo, 1):
            yield task(chunk)


def _chunks(structures: list[Atoms], todo: list[int], slots: int) -> list[list[tuple[int, Atoms]]]:
    size = max(1, min(MAX_CHUNK, len(todo) // (4 * slots)))
    return [[(i, structures[i]) for i in todo[s:s + size]] for s in range(0, len(todo), size)]


def _in_processes(workers: int, task: Callable, chunks: list) -> Iterator[list[Result]]:
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(task, chunk) for chunk in chunks}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [result for future in finished for result in future.result()]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _worker_start(parent: int) -> None:
    """Leave Ctrl-C to the parent (it stops the pool; workers finish their chunk), and end with the parent.

    A killed parent would otherwise leave its workers waiting for work forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="localframe-parent-watch", daemon=True).start()


def _on_dask(client, task: Callable, chunks: list) -> Iterator[list[Result]]:
    from distributed import as_completed

    futures = client.map(task, chunks, pure=False)
    try:
        for batch in as_completed(futures, with_results=True).batches():
            yield [result for _, results in batch for result in results]
    finally:
        client.cancel(futures)


def _dask_client(client):
    """``client`` itself, or a new client of the scheduler at address ``client`` (closed afterwards)."""
    if not isinstance(client, str):
        return nullcontext(client)
    try:
        from distributed import Client
    except ImportError:
        raise InputError("a Dask scheduler needs dask.distributed: pip install 'localframe[distributed]'") from None
    try:
        return Client(client)
    except (OSError, TimeoutError, ValueError) as err:
        raise InputError(f"cannot reach the Dask scheduler {client}: {one_line(err)}") from None
