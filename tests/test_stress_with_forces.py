"""One model call per NPT step: the calculator computes the stress with the forces once it has been asked for
(``Calculator(stress_with_forces=...)``), with the same numbers as separate calls."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule

from localframe.calculator import Calculator
from localframe.inference import Evaluator
from localframe.md import relax, run_md

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 6


@pytest.fixture
def calls(monkeypatch):
    """The stress flag of every model call (Evaluator.__call__), in order."""
    seen: list[bool] = []
    original = Evaluator.__call__

    def counted(self, atoms, stress=False, dipole=False):
        seen.append(bool(stress))
        return original(self, atoms, stress=stress, dipole=dipole)

    monkeypatch.setattr(Evaluator, "__call__", counted)
    return seen


def box():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.numbers[::3] = 6
    atoms.rattle(0.05, seed=2)
    return atoms


def npt(lf, calls, **options) -> tuple[dict, int]:
    calc = Calculator(lf.build_model("schnet"), dtype="float64", **options)
    before = len(calls)
    summary = run_md(calc, box(), "npt", 300.0, 1.0, STEPS, seed=1, pressure=1.0, taup=50.0, progress=False)
    return summary, len(calls) - before


def test_npt_one_model_call_per_step(lf, calls):
    summary, n = npt(lf, calls)
    assert n == STEPS + 1 and all(calls)  # the first call and one per step, each with the stress
    separate, n_separate = npt(lf, calls, stress_with_forces=False)  # forces and stress asked for separately
    assert n_separate >= 2 * STEPS
    final, ref = summary["atoms"], separate["atoms"]
    assert abs(final.get_volume() - box().get_volume()) > 1e-6  # the cell moved
    np.testing.assert_allclose(final.cell.array, ref.cell.array, rtol=0, atol=1e-10)
    np.testing.assert_allclose(final.positions, ref.positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(final.get_momenta(), ref.get_momenta(), rtol=0, atol=1e-10)
    assert summary["epot_mean"] == pytest.approx(separate["epot_mean"], abs=1e-10)


def test_results_equal_separate_calls(lf, calls):
    model = lf.build_model("schnet")
    atoms, reference = box(), box()
    atoms.calc, reference.calc = Calculator(model, dtype="float64"), Calculator(model, dtype="float64",
                                                                                 stress_with_forces=False)
    atoms.get_stress()  # asked once: from now on computed with the forces
    for step in (1, 2, 3):
        for a in (atoms, reference):
            a.positions = box().positions + 0.01 * step
            a.set_cell(box().cell.array * (1.0 + 0.01 * step), scale_atoms=False)
        del calls[:]
        forces = atoms.get_forces()
        stress = atoms.get_stress()
        assert calls == [True]  # one call for both
        np.testing.assert_allclose(forces, reference.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(stress, reference.get_stress(), rtol=0, atol=1e-10)
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    assert np.abs(stress).max() > 1e-4


def test_forces_only_stays_forces_only(lf, calls):
    model = lf.build_model("schnet")
    calc = Calculator(model, dtype="float64")
    run_md(calc, lf.ethanol(), "nvt", 300.0, 0.5, 3, progress=False)  # a molecule: never a stress
    periodic = box()
    periodic.calc = calc
    periodic.get_forces()  # periodic, stress never asked for: not computed
    assert calls and not any(calls) and "stress" not in calc.results
    periodic.get_stress()
    other = box()
    other.numbers[1] = 8  # other atoms than the ones the stress was asked for
    other.calc = calc
    del calls[:]
    other.get_forces()
    assert calls == [False]
    always = Calculator(model, dtype="float64", stress_with_forces=True)
    other.calc = always
    other.get_forces()
    assert calls[-1] and "stress" in always.results


def test_cell_relaxation_one_call_per_step(lf, calls):
    model = lf.build_model("schnet")
    summary = relax(Calculator(model, dtype="float64"), box(), fmax=1e-4, steps=4, progress=False)
    n = len(calls)
    separate = relax(Calculator(model, dtype="float64", stress_with_forces=False), box(), fmax=1e-4, steps=4,
                     progress=False)
    assert summary["steps"] == 4 and n <= summary["steps"] + 2 and all(calls)  # the cell filter asks stress first
    final, ref = summary["atoms"], separate["atoms"]
    np.testing.assert_allclose(final.cell.array, ref.cell.array, rtol=0, atol=1e-10)
    np.testing.assert_allclose(final.positions, ref.positions, rtol=0, atol=1e-10)


def test_npt_replicas_one_batched_call_per_step(lf):
    from localframe.md import run_replicas

    calc = Calculator(lf.build_model("schnet"), dtype="float64")
    result = run_replicas(calc, box(), 2, ensemble="npt", temperature=300.0, timestep=1.0, steps=STEPS, pressure=1.0,
                          progress=False)
    assert result["model_calls"] == STEPS + 1 and not result["stopped"]
