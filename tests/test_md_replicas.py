"""Replicas: lockstep trajectories equal separate run_md runs; guards stop one replica only; the CLI."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch

from localframe import fast, models
from localframe.calculator import Calculator
from localframe.cli import main
from localframe.io import save_model
from localframe.md import run_md, run_replicas
from localframe.md.replicas import replica_path

pytestmark = pytest.mark.usefixtures("one_thread")

GENTLE = {"temperature": 100.0, "timestep": 0.25}  # the random tiny model stays stable for 50 steps


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return models.create("schnet", hidden_channels=16, num_layers=2)


def squeezed(atoms):
    """``atoms`` with hydrogen 3 moved 0.3 Å from carbon 0: the 0.5 Å guard trips at once."""
    atoms = atoms.copy()
    atoms.positions[3] = atoms.positions[0] + [0.3, 0.0, 0.0]
    return atoms


@pytest.mark.parametrize("ensemble", ["nvt", "nve"])
def test_replicas_equal_separate_runs(lf, ensemble):
    """float64, 50 steps: every replica's positions, velocities and recorded energies equal those of a
    single run_md from the same structure with seed + r; one model call per step for all replicas."""
    model = tiny_model()
    starts = [lf.ethanol(), lf.rattled(lf.ethanol(), 0.03, seed=7)]
    steps, seed = 50, 11
    result = run_replicas(Calculator(model, dtype="float64"), starts, 3, ensemble=ensemble, steps=steps, seed=seed,
                          progress=False, **GENTLE)
    assert result["stopped"] == [] and result["model_calls"] == steps + 1
    assert result["replica_steps"] == 3 * steps
    assert 0 < result["cpu_seconds"] and result["steps_per_cpu_second"] == pytest.approx(3 * steps / result["cpu_seconds"])
    for r, got in enumerate(result["replicas"]):
        assert got["stopped"] is None and got["seed"] == seed + r and got["steps"] == steps
        want = run_md(Calculator(model, dtype="float64"), starts[r % 2], ensemble=ensemble, steps=steps,
                      seed=seed + r, progress=False, **GENTLE)
        a, b = got["atoms"], want["atoms"]
        assert np.abs(a.positions - starts[r % 2].positions).max() > 1e-3  # the atoms did move
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.get_velocities(), b.get_velocities(), rtol=0, atol=1e-10)
        for key in ("epot_mean", "temperature_mean", "etot_std"):
            assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-12)
    # replicas 0 and 2 start alike but draw other velocities and noise
    assert np.abs(result["replicas"][0]["atoms"].positions - result["replicas"][2]["atoms"].positions).max() > 1e-3


def test_fixed_graph_replicas_equal_separate_eager_runs(lf, monkeypatch):
    """Replicas through one fixed graph of two structures (max_pairs: two ethanols' 72 pairs each;
    three replicas, so the second graph call of a step is filled up with a copy): every replica
    equals a separate eager run_md to 1e-10 (float64, 50 steps), with two graph calls per step."""
    calls = []
    call = fast.FixedGraph.__call__
    monkeypatch.setattr(fast.FixedGraph, "__call__", lambda self, *args: (calls.append(self.structures), call(self, *args))[1])
    model = tiny_model()
    starts = [lf.ethanol(), lf.rattled(lf.ethanol(), 0.03, seed=7)]
    steps, seed = 50, 5
    result = run_replicas(lf.traced(model), starts, 3, ensemble="nvt", steps=steps, seed=seed, progress=False,
                          max_pairs=150, **GENTLE)
    assert result["stopped"] == [] and result["model_calls"] == steps + 1
    assert calls == [2] * (2 * (steps + 1))  # every evaluation: two calls of the two-structure graph
    for r, got in enumerate(result["replicas"]):
        want = run_md(Calculator(model, dtype="float64"), starts[r % 2], ensemble="nvt", steps=steps, seed=seed + r,
                      progress=False, **GENTLE)
        assert np.abs(got["atoms"].positions - starts[r % 2].positions).max() > 1e-3
        np.testing.assert_allclose(got["atoms"].positions, want["atoms"].positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got["atoms"].get_velocities(), want["atoms"].get_velocities(), rtol=0, atol=1e-10)


def test_a_second_run_reuses_the_fixed_graph(lf, monkeypatch):
    """The calculator keeps the replicas' graph: a second run of as many replicas traces nothing and,
    with the same seed, repeats the first run exactly; another replica count builds its own graph."""
    built = []
    init = fast.FixedGraph.__init__
    monkeypatch.setattr(fast.FixedGraph, "__init__", lambda self, *a, **k: (built.append(k.get("structures", 1)), init(self, *a, **k))[1])
    calc = lf.traced(tiny_model())
    first, second = (run_replicas(calc, lf.ethanol(), 3, steps=10, seed=2, progress=False, **GENTLE) for _ in range(2))
    assert built == [3] and first["fixed_graph"] and second["fixed_graph"]
    for x, y in zip(first["replicas"], second["replicas"]):
        np.testing.assert_array_equal(x["atoms"].positions, y["atoms"].positions)
    run_replicas(calc, lf.ethanol(), 2, steps=2, progress=False, **GENTLE)
    assert built == [3, 2]


def test_fixed_graph_replicas_keep_guards_and_fall_back(lf):
    """A replica that trips the close-contact guard stops alone on the fixed-graph path too; replicas
    of different molecules take the general path (same numbers as without the fixed graph)."""
    from ase.build import molecule

    model = tiny_model()
    result = run_replicas(lf.traced(model), [lf.ethanol(), squeezed(lf.ethanol())], 3, steps=10, progress=False, **GENTLE)
    assert [s["replica"] for s in result["replicas"] if s["stopped"]] == [1]
    assert "0.3 Å apart" in result["stopped"][0]
    mixed = [lf.ethanol(), molecule("CH3OH")]
    a = run_replicas(lf.traced(model), mixed, 2, steps=10, progress=False, **GENTLE)
    b = run_replicas(Calculator(model, dtype="float64"), mixed, 2, steps=10, progress=False, **GENTLE)
    for x, y in zip(a["replicas"], b["replicas"]):
        np.testing.assert_allclose(x["atoms"].positions, y["atoms"].positions, rtol=0, atol=1e-12)


def test_a_guard_stops_one_replica_only(lf, tmp_path):
    starts = [lf.ethanol(), squeezed(lf.ethanol())]
    result = run_replicas(Calculator(tiny_model()), starts, 3, steps=20, interval=5, traj=tmp_path / "md.extxyz",
                          log=tmp_path / "md.csv", progress=False, **GENTLE)
    stopped = [s for s in result["replicas"] if s["stopped"]]
    assert [s["replica"] for s in stopped] == [1] and stopped[0]["steps"] == 0
    assert result["stopped"] == [stopped[0]["stopped"]]
    message = stopped[0]["stopped"]
    assert message.startswith("replica 1: MD stopped after 0 steps") and "0.3 Å apart" in message and "\n" not in message
    for r in (0, 2):
        assert result["replicas"][r]["steps"] == 20
        assert len(ase.io.read(tmp_path / f"md_r00{r}.extxyz", index=":")) == 5  # steps 0, 5, ..., 20
        assert (tmp_path / f"md_r00{r}.csv").read_text().count("\n") == 6
    assert result["replica_steps"] == 40


def test_replica_path():
    assert str(replica_path("out/md.extxyz", 7, 8)) == "out/md_r007.extxyz"
    assert str(replica_path("md.csv", 12, 1500)) == "md_r0012.csv"
    assert replica_path(None, 0, 2) is None


def test_cli_replicas(capsys, tmp_path, lf):
    model = str(save_model(tiny_model(), tmp_path / "tiny.pt"))
    frames = tmp_path / "frames.extxyz"
    ase.io.write(frames, [lf.ethanol(), lf.rattled(lf.ethanol(), 0.03, seed=7)])
    traj = tmp_path / "md.extxyz"
    common = ["--steps", "4", "--interval", "2", "--traj", str(traj), "--quiet", "--temperature", "100"]
    assert main(["md", model, str(frames), "--replicas", "3", "--index", ":", *common]) == 0
    assert "3 replicas from 2 structure(s), 12 steps in all" in capsys.readouterr().out
    first = [ase.io.read(tmp_path / f"md_r00{r}.extxyz", index=0) for r in range(3)]
    np.testing.assert_allclose(first[1].positions, lf.rattled(lf.ethanol(), 0.03, seed=7).positions, atol=1e-7)
    np.testing.assert_allclose(first[2].positions, first[0].positions, atol=0)
    assert not np.allclose(first[2].get_momenta(), first[0].get_momenta())  # seed + 2, not seed
    ase.io.write(frames, [lf.ethanol(), squeezed(lf.ethanol())])
    assert main(["md", model, str(frames), "--replicas", "2", "--index", ":", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("localframe md: error: replica 1: MD stopped after 0 steps")
    assert len(ase.io.read(tmp_path / "md_r000.extxyz", index=":")) == 3


def test_benchmark_replicas_rows(lf):
    from localframe.bench.md_speed import benchmark_replicas

    rows = benchmark_replicas(tiny_model(), systems={"ethanol": lf.ethanol()}, replicas=(2,), steps=3, repeats=2,
                              warmup=1, threads=1, progress=False, **GENTLE)
    assert [(r["system"], r["atoms"], r["replicas"], len(r["runs"])) for r in rows] == [("ethanol", 9, 0, 2),
                                                                                      ("ethanol", 9, 2, 2)]
    assert rows[0]["vs_single"] == 1.0 and rows[0]["model_share"] is None
    assert [r["compiled"] for r in rows] == [False, False]
    assert 0 < rows[1]["model_share"] <= 1
    assert rows[1]["vs_single"] == pytest.approx(rows[1]["steps_per_second"] / rows[0]["steps_per_second"])
    assert rows[1]["vs_single_cpu"] == pytest.approx(rows[1]["steps_per_cpu_second"] / rows[0]["steps_per_cpu_second"])


def test_replicas_restart_from_their_own_files(lf, tmp_path):
    calc, traj = Calculator(tiny_model()), tmp_path / "md.extxyz"
    run_replicas(calc, lf.ethanol(), 2, steps=4, interval=2, traj=traj, progress=False, **GENTLE)
    ends = [ase.io.read(replica_path(traj, r, 2), index=-1) for r in range(2)]
    result = run_replicas(calc, lf.ethanol(), 2, steps=2, interval=2, traj=traj, restart=True, progress=False,
                          **GENTLE)
    for r in range(2):
        frames = ase.io.read(replica_path(traj, r, 2), index=":")
        assert [f.info["step"] for f in frames] == [0, 2, 4, 6]
        assert result["replicas"][r]["first_step"] == 4
        np.testing.assert_allclose(frames[2].positions, ends[r].positions)
    assert not np.allclose(ends[0].positions, ends[1].positions)


def test_pair_budget_splits_the_pass_not_the_results(lf):
    """max_pairs smaller than the replicas' pairs: several model passes per step, the same trajectories."""
    model, steps = tiny_model(), 10
    runs = [run_replicas(Calculator(model, dtype="float64"), lf.ethanol(), 3, steps=steps, progress=False,
                         max_pairs=budget, **GENTLE) for budget in (None, 100)]
    for a, b in zip(*(run["replicas"] for run in runs)):
        np.testing.assert_allclose(a["atoms"].positions, b["atoms"].positions, rtol=0, atol=1e-10)
    assert runs[0]["model_calls"] == runs[1]["model_calls"] == steps + 1


def test_evaluate_together_groups_and_failures(lf):
    from localframe.errors import InputError
    from localframe.inference import Evaluator, evaluate_together

    evaluator = Evaluator(tiny_model(), dtype="float64")
    good, bad = lf.ethanol(), squeezed(lf.ethanol())
    bad.positions[3] = bad.positions[0] + [0.05, 0.0, 0.0]  # closer than 0.1 Å: the converter refuses it
    alone = evaluator(good)
    for budget in (None, 50, 10_000):
        results = evaluate_together([evaluator.fork() for _ in range(3)], [good, bad, good], max_pairs=budget)
        assert isinstance(results[1], InputError) and "0.05 Å apart" in str(results[1])
        for k in (0, 2):
            np.testing.assert_allclose(results[k]["forces"], alone["forces"], rtol=0, atol=1e-12)
            assert results[k]["energy"] == pytest.approx(alone["energy"], abs=1e-12)
