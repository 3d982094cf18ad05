r"""Many independent MD trajectories with one batched model call per step: :func:`run_replicas`.

Replica r is a whole :func:`~localframe.md.run_md` — ASE's integrator with its own thermostat
state, its own random stream (seed + r), its own guards, trajectory and log — running in a thread
of its own. Its calculator does not call the model: a call waits until every running replica has
asked for its forces, and the last one to ask evaluates all of them in one forward and backward
pass (:func:`localframe.inference.evaluate_together`, each structure on its own pair list; more
than :data:`MAX_PAIRS` pairs in all go in several passes, as larger ones run slower per pair on a
CPU). So
every replica does exactly the arithmetic of a single ``run_md`` with its seed; only the round-off
of the batched model sums can differ (tested: float64, 50 steps, positions and velocities equal
separate runs to 1e-10, Langevin NVT and NVE). With a compiled calculator (``compile=True``,
``localframe md --replicas N --compile``) replicas of the same atoms go through one fixed graph
for G of them (:class:`localframe.fast.FastBatch`: forward and backward traced and compiled once,
kept by the calculator for later runs of as many replicas; each replica on its own Verlet list,
padded to the same pair count; G from ``max_pairs``).

Starting structures: replica r starts from ``structures[r % M]`` (M structures given), and draws
its velocities and noise with ``seed + r``. Files: ``traj="md.extxyz"`` becomes ``md_r000.extxyz``,
``md_r001.extxyz``, ... (:func:`replica_path`), the log likewise. A replica that trips a guard
stops with its one-line message (its frames are kept); the others go on. A replica whose
structure the calculator refuses (e.g. atoms closer than 0.1 Å) stops alone as well.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Sequence

from ase import Atoms

from localframe.calculator import Calculator
from localframe.errors import InputError
from localframe.inference import Evaluator, evaluate_together
from localframe.md import checks
from localframe.md.driver import MDStopped, run_md
from localframe.progress import progress as progress_bar


def replica_path(path: str | os.PathLike | None, replica: int, replicas: int) -> Path | None:
    """``md.extxyz`` → ``md_r007.extxyz`` for replica 7 (three digits, more for 1,000 replicas or more)."""
    if path is None:
        return None
    path = Path(path)
    return path.with_name(f"{path.stem}_r{replica:0{max(3, len(str(replicas - 1)))}d}{path.suffix}")


#: pairs per model pass (LEFTNet, one CPU thread: cost per structure flat up to ~10k pairs, 2.5x at 20k)
MAX_PAIRS = 8192


def run_replicas(calculator, structures: Atoms | Sequence[Atoms], replicas: int, traj=None, log=None,
                 seed: int = 0, progress: bool = True, max_pairs: int | None = MAX_PAIRS, **options) -> dict:
    """Run ``replicas`` independent trajectories of :func:`~localframe.md.run_md` in lockstep, one
    batched model call for all of them per force evaluation (see the module).

    ``calculator``: a :class:`localframe.Calculator` (its models and options are shared);
    ``structures``: one structure or several (replica r starts from ``structures[r % M]``);
    ``traj``/``log``: file names that get the replica number (:func:`replica_path`); ``max_pairs``:
    the pairs of one model pass (more replicas than fit go in several passes; None: always one);
    ``options``:
    those of ``run_md`` (ensemble, temperature, timestep, steps, ...). Returns ``replicas`` (each
    replica's ``run_md`` summary with ``replica``, ``seed``, ``traj``, ``log``, and ``stopped``: its
    one-line message or None), ``stopped`` (the messages), ``replica_steps`` (steps of all
    replicas), ``steps_per_second`` (replica-steps per second of the step loop), ``wall_seconds``,
    ``steps_per_cpu_second`` and ``cpu_seconds`` (the same per second of processor time: all replicas
    share one process)
    ``model_calls`` (the batched evaluations of all replicas, the first included; each in passes of
    at most ``max_pairs`` pairs) and ``model_seconds`` (the
    time of those after the first: pair lists, conversion, the model's forward and backward pass),
    ``fixed_graph`` (whether a compiled calculator's fixed graph served the replicas).
    """
    if not isinstance(calculator, Calculator):
        raise InputError("replicas need a localframe Calculator (one batched model call for all of them)")
    replicas = checks.count("replicas", replicas)
    seed = checks.seed(seed)
    starts = [structures] if isinstance(structures, Atoms) else list(structures)
    if not starts:
        raise InputError("no starting structure for the replicas")
    if max_pairs is not None:
        max_pairs = checks.count("max_pairs", max_pairs)
    lockstep = Lockstep(calculator.evaluator, replicas, max_pairs)
    done = [0] * replicas
    summaries: list[dict | None] = [None] * replicas
    errors: list[BaseException] = []

    def one(r: int) -> None:
        files = {"traj": replica_path(traj, r, replicas), "log": replica_path(log, r, replicas)}
        about = {"replica": r, "seed": seed + r, **files}
        try:
            summary = run_md(lockstep.calculator(r), starts[r % len(starts)], **options, **files, seed=seed + r,
                             progress=False, on_step=lambda k: done.__setitem__(r, k))
            summaries[r] = {**summary, **about}
        except MDStopped as stop:
            summaries[r] = {**stop.summary, **about, "stopped": f"replica {r}: {stop}"}
        except BaseException as err:  # bad input or a bug: every replica ends, the first real error is raised
            errors.append(err)
            lockstep.abort()
        finally:
            lockstep.leave()

    threads = [threading.Thread(target=one, args=(r,), name=f"replica-{r}", daemon=True) for r in range(replicas)]
    with progress_bar(options.get("steps", 1000), f"MD, {replicas} replicas", enabled=progress) as bar:
        try:
            for thread in threads:
                thread.start()
            while alive := [r for r in range(replicas) if threads[r].is_alive()]:
                bar.update(min(done[r] for r in alive), running=f"{len(alive)}/{replicas}")
                threads[alive[0]].join(0.2)
            bar.update(max(done), running=f"0/{replicas}")
        except KeyboardInterrupt:
            lockstep.abort()
            raise
    real = [err for err in errors if not isinstance(err, Aborted)]
    if real or errors:
        raise (real or errors)[0]
    stopped = [s["stopped"] for s in summaries if s["stopped"] is not None]
    total = sum(s["steps"] for s in summaries)
    wall, cpu = max(s["wall_seconds"] for s in summaries), max(s["cpu_seconds"] for s in summaries)
    return {"replicas": summaries, "stopped": stopped, "replica_steps": total,
            "steps_per_second": total / wall if wall > 0 else None, "wall_seconds": wall,
            "steps_per_cpu_second": total / cpu if cpu > 0 else None, "cpu_seconds": cpu,
            "model_calls": lockstep.calls, "model_seconds": lockstep.seconds,
            "fixed_graph": lockstep.fast is not None and lockstep.fast.reason is None and lockstep.fast.graphs is not None}


class Aborted(Exception):
    """Another replica failed (not a guard) or the run was interrupted: every replica ends."""


class Lockstep:
    """Calculators for ``n`` replicas whose model calls are gathered into one batched call.

    A call waits until every replica still running has called (or ended); the last caller runs
    :func:`~localframe.inference.evaluate_together` for all waiting ones, in replica order, in
    passes of at most ``max_pairs`` pairs.
    """

    def __init__(self, evaluator, n: int, max_pairs: int | None = None):
        self.evaluator, self.max_pairs = evaluator, max_pairs
        #: a compiled calculator: replicas of the same atoms through one fixed graph (localframe.fast)
        self.fast = None if evaluator.fast is None else evaluator.fast.batch(n, max_pairs)
        self.turns = [_Turn(self, r) for r in range(n)]
        self.running = n
        self.calls = 0
        self.seconds = 0.0  # in the batched calls after the first (pair lists, conversion, model)
        self._waiting: dict[int, tuple] = {}
        self._answers: dict[int, object] = {}
        self._aborted = False
        self._lock = threading.Condition()

    def calculator(self, r: int):
        """The ASE calculator of replica ``r``."""
        return Calculator(self.turns[r])

    def evaluate(self, r: int, atoms: Atoms, stress: bool, dipole: bool) -> dict:
        """Replica ``r``'s results, from the batched call that includes it."""
        with self._lock:
            if self._aborted:
                raise Aborted("another replica failed")
            self._waiting[r] = (atoms, stress, dipole)
            if len(self._waiting) >= self.running:
                self._evaluate_waiting()
            self._lock.wait_for(lambda: r in self._answers or self._aborted)
            if r not in self._answers:
                raise Aborted("another replica failed")
            answer = self._answers.pop(r)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def leave(self) -> None:
        """A replica has ended; the others no longer wait for it."""
        with self._lock:
            self.running -= 1
            if self._waiting and len(self._waiting) >= self.running:
                self._evaluate_waiting()

    def abort(self) -> None:
        """End every replica at its next model call."""
        with self._lock:
            self._aborted = True
            self._lock.notify_all()

    def _evaluate_waiting(self) -> None:
        order = sorted(self._waiting)
        calls = [self._waiting.pop(r) for r in order]
        stress, dipole = any(c[1] for c in calls), any(c[2] for c in calls)
        started = time.perf_counter()
        turns, structures = [self.turns[r] for r in order], [c[0] for c in calls]
        try:
            answers = self.fast(turns, structures) if self.fast is not None and not stress and not dipole else None
            if answers is None:
                answers = evaluate_together(turns, structures, stress, dipole, self.max_pairs)
        except Exception as err:  # the model failed (e.g. a non-finite input); each replica words it
            answers = [err] * len(order)
        if self.calls:  # the step loop's calls: the first evaluation is not timed, as in run_md's wall_seconds
            self.seconds += time.perf_counter() - started
        self._answers.update(zip(order, answers))
        self.calls += 1
        self._lock.notify_all()


class _Turn(Evaluator):
    """Replica r's evaluator: a fork of the shared one (same models, own pair list) whose calls go
    through the lockstep."""

    def __init__(self, lockstep: Lockstep, r: int):  # no Evaluator.__init__: the models are shared
        vars(self).update(vars(lockstep.evaluator.fork()))
        self.lockstep, self.r = lockstep, r

    def __call__(self, atoms: Atoms, stress: bool = False, dipole: bool = False) -> dict:
        return self.lockstep.evaluate(self.r, atoms, stress, dipole)
