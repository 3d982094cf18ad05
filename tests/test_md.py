"""MD and relaxation: energy conservation, output files, restart, the guards, and the CLI."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator as AseCalculator
from ase.calculators.calculator import all_changes

from localframe import models
from localframe.calculator import Calculator
from localframe.cli import main
from localframe.errors import InputError
from localframe.io import save_model
from localframe.md import MDStopped, relax, run_md


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return models.create("schnet", hidden_channels=16, num_layers=2)


@pytest.fixture
def model_file(tmp_path):
    return str(save_model(tiny_model(), tmp_path / "tiny.pt"))


@pytest.fixture
def structure_file(lf, tmp_path):
    path = tmp_path / "ethanol.xyz"
    ase.io.write(path, lf.ethanol())
    return str(path)


class PairSpring(AseCalculator):
    """E = ½ k (|x_1 − x_0| − r0)² between atoms 0 and 1; NaN energies from call ``nan_after`` on."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k: float = 1.0, r0: float = 1.0, nan_after: int | None = None):
        super().__init__()
        self.k, self.r0, self.nan_after, self.calls = k, r0, nan_after, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        r = self.atoms.positions[1] - self.atoms.positions[0]
        d = np.linalg.norm(r)
        forces = np.zeros((len(self.atoms), 3))
        forces[1] = -self.k * (d - self.r0) * r / d
        forces[0] = -forces[1]
        energy = 0.5 * self.k * (d - self.r0) ** 2
        if self.nan_after is not None and self.calls > self.nan_after:
            energy = float("nan")
        self.results = {"energy": energy, "forces": forces}


def two_atoms(d: float = 1.0) -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [d, 0, 0]])


# ------------------------------------------------------------------------------------------ physics
def test_nve_conserves_energy(lf):
    """Short NVE run in float64: the total energy drift is tiny against the kinetic-energy fluctuation."""
    calc = Calculator(lf.build_model("painn"), dtype="float64", skin=0.5)
    summary = run_md(calc, lf.ethanol(), "nve", 300.0, 0.25, 400, progress=False)
    assert summary["steps"] == 400 and summary["stopped"] is None
    drift_over_run = abs(summary["energy_drift"]) * summary["time_ps"] * summary["n_atoms"]
    assert summary["ekin_std"] > 1e-3
    assert drift_over_run < 0.01 * summary["ekin_std"], summary
    assert summary["etot_std"] < 0.05 * summary["ekin_std"], summary


@pytest.mark.parametrize("thermostat", ["langevin", "bussi", "nose-hoover"])
def test_nvt_thermostats_run(lf, thermostat):
    calc = Calculator(tiny_model(), skin=0.5)
    summary = run_md(calc, lf.ethanol(), "nvt", 300.0, 0.5, 40, thermostat=thermostat, progress=False)
    assert summary["steps"] == 40 and summary["energy_drift"] is None
    assert 30.0 < summary["temperature_mean"] < 1000.0


def test_npt_changes_the_cell(tmp_path):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.02, seed=1)
    log = tmp_path / "npt.csv"
    summary = run_md(Calculator(tiny_model(), skin=0.5), atoms, "npt", 300.0, 1.0, 20, log=log, pressure=1.0,
                     taup=50.0, interval=5, progress=False)
    assert summary["steps"] == 20
    assert not np.allclose(summary["atoms"].cell.array, atoms.cell.array)
    header = log.read_text().splitlines()[0]
    assert "volume_A3" in header and "pressure_GPa" in header
    with pytest.raises(InputError, match="periodic"):
        run_md(Calculator(tiny_model()), two_atoms(), "npt", 300.0, 1.0, 2, progress=False)


# ------------------------------------------------------------------------------------------ files
def test_trajectory_log_and_restart(lf, tmp_path):
    """NVE is deterministic: 20 + 20 steps through a restart match 40 steps in one go."""
    calc = Calculator(tiny_model(), dtype="float64", skin=0.5)
    straight = run_md(calc, lf.ethanol(), "nve", 300.0, 0.5, 40, progress=False)
    traj, log = tmp_path / "md.extxyz", tmp_path / "md.csv"
    first = run_md(calc, lf.ethanol(), "nve", 300.0, 0.5, 20, traj=traj, log=log, interval=10, progress=False)
    assert first["frames"] == 3
    second = run_md(calc, lf.ethanol(), "nve", 300.0, 0.5, 20, traj=traj, log=log, interval=10, restart=True,
                    progress=False)
    assert (second["first_step"], second["last_step"], second["frames"]) == (20, 40, 2)
    frames = ase.io.read(traj, ":")
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40]
    assert all(f.has("momenta") for f in frames)
    assert frames[-1].get_potential_energy() == pytest.approx(second["epot_mean"], abs=1.0)
    # extxyz stores 8 decimals: the restarted run follows the uninterrupted one closely
    np.testing.assert_allclose(frames[-1].positions, straight["atoms"].positions, rtol=0, atol=1e-5)
    rows = log.read_text().splitlines()
    assert rows[0].startswith("step,time_fs,epot_eV") and len(rows) == 1 + 5
    with pytest.raises(InputError, match="other atoms"):
        run_md(calc, Atoms("H2O", positions=np.eye(3)), "nve", 300.0, 0.5, 2, traj=traj, restart=True, progress=False)
    with pytest.raises(InputError, match="not found"):
        run_md(calc, lf.ethanol(), "nve", 300.0, 0.5, 2, traj=tmp_path / "none.extxyz", restart=True, progress=False)


# ------------------------------------------------------------------------------------------ guards
def test_uncertainty_stop_keeps_the_frames(lf, tmp_path):
    """Two differently initialised models: stop when their force spread exceeds the limit."""
    atoms = lf.ethanol()
    committee = Calculator([tiny_model(0), tiny_model(1)], dtype="float64", skin=0.5)
    probe = run_md(committee, atoms, "nve", 1000.0, 0.5, 60, traj=tmp_path / "probe.extxyz", interval=1,
                   progress=False)
    spreads = [f.arrays["forces_std"].max() for f in ase.io.read(tmp_path / "probe.extxyz", ":")]
    assert probe["max_forces_std"] > spreads[0]
    limit = 0.5 * (spreads[0] + max(spreads))  # crossed during the run, not at the start
    traj = tmp_path / "md.extxyz"
    with pytest.raises(MDStopped, match="uncertainty") as info:
        run_md(committee, atoms, "nve", 1000.0, 0.5, 60, traj=traj, interval=1, max_uncertainty=limit, progress=False)
    kept = ase.io.read(traj, ":")
    assert len(kept) == info.value.summary["frames"] >= 1
    assert all(f.arrays["forces_std"].max() <= limit for f in kept)
    assert "frame(s) kept" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="committee"):
        run_md(Calculator(tiny_model()), atoms, "nve", 300.0, 0.5, 2, max_uncertainty=0.1, progress=False)


def test_npt_with_a_calculator_without_stress_is_one_line():
    # third-party ASE calculators without stress: a clear stop, not a traceback
    from ase.calculators.lj import LennardJones

    class NoStress(LennardJones):
        implemented_properties = ["energy", "forces"]

    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    with pytest.raises(MDStopped, match="NoStress cannot compute a property this run needs.*npt needs energy, "
                                        "forces and stress"):
        run_md(NoStress(sigma=3.4, epsilon=0.0104, rc=8.0), atoms, "npt", 100.0, 1.0, 2, pressure=1.0,
               progress=False)


def test_overlap_guard(tmp_path):
    """A strongly attractive spring pulls two atoms together: stop below 0.5 Å, frames kept."""
    traj = tmp_path / "md.extxyz"
    with pytest.raises(MDStopped, match="closer than 0.5") as info:
        run_md(PairSpring(k=1.0, r0=0.0), two_atoms(1.2), "nve", 0.0, 0.5, 200, traj=traj, interval=1,
               progress=False)
    frames = ase.io.read(traj, ":")
    assert len(frames) == info.value.summary["frames"] >= 2
    assert all(f.get_distance(0, 1) >= 0.5 for f in frames)


def test_overlap_guard_with_a_localframe_calculator(lf):
    """The localframe calculator's own pair list gives the closest pair (no extra neighbour search)."""
    atoms = lf.ethanol()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    with pytest.raises(MDStopped, match="after 0 steps .* atoms [01] and [01] came 0.3"):
        run_md(Calculator(tiny_model(), skin=0.5), atoms, "nve", 0.0, 0.5, 5, progress=False)


def test_nan_guard(tmp_path):
    traj = tmp_path / "md.extxyz"
    with pytest.raises(MDStopped, match="not finite") as info:
        run_md(PairSpring(nan_after=25), two_atoms(), "nvt", 300.0, 0.5, 100, traj=traj, interval=5, progress=False)
    assert "after 25 steps" in str(info.value)  # step 25 gave the NaN
    assert [f.info["step"] for f in ase.io.read(traj, ":")] == [0, 5, 10, 15, 20]


def test_temperature_guard():
    with pytest.raises(MDStopped, match="temperature .* exceeds the limit 3000 K"):
        run_md(PairSpring(k=50.0, r0=3.0), two_atoms(1.0), "nvt", 300.0, 0.5, 200, progress=False, min_distance=0)


def test_bad_arguments(lf):
    calc = Calculator(tiny_model())
    for kwargs, fragment in [({"ensemble": "nph"}, "ensemble"), ({"timestep": -1}, "timestep"),
                             ({"steps": 1.5}, "steps"), ({"thermostat": "andersen"}, "thermostat"),
                             ({"temperature": 0.0}, "temperature")]:
        with pytest.raises(InputError, match=fragment):
            run_md(calc, lf.ethanol(), **{"progress": False, **kwargs})


# ------------------------------------------------------------------------------------------ relax
def test_relax_molecule_and_cell(lf, tmp_path):
    calc = Calculator(tiny_model(), dtype="float64")
    result = relax(calc, lf.rattled(lf.ethanol(), 0.1), fmax=0.01, optimizer="bfgs", out=tmp_path / "r.extxyz",
                   progress=False)
    assert result["converged"] and result["fmax"] < 0.01
    assert ase.io.read(tmp_path / "r.extxyz").get_potential_energy() == pytest.approx(result["energy"], abs=1e-6)
    crystal = bulk("Si", "diamond", a=5.0)
    result = relax(calc, crystal, fmax=1e-3, steps=5, progress=False)
    assert result["steps"] > 0
    assert not np.allclose(result["atoms"].cell.array, crystal.cell.array)  # the cell relaxed too
    fixed = relax(calc, crystal, fmax=1e-3, steps=3, cell=False, progress=False)
    np.testing.assert_allclose(fixed["atoms"].cell.array, crystal.cell.array)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_md_and_relax(capsys, tmp_path, model_file, structure_file):
    traj, log = tmp_path / "md.extxyz", tmp_path / "md.csv"
    code = main(["md", model_file, structure_file, "--steps", "20", "--interval", "10", "--traj", str(traj),
                 "--log", str(log), "--quiet", "--ensemble", "nvt", "--thermostat", "bussi"])
    assert code == 0
    assert len(ase.io.read(traj, ":")) == 3 and log.exists()
    code = main(["md", model_file, structure_file, "--steps", "10", "--traj", str(traj), "--restart", "--quiet"])
    assert code == 0 and len(ase.io.read(traj, ":")) == 4
    code = main(["md", model_file, model_file, structure_file, "--steps", "5", "--traj", str(tmp_path / "c.extxyz"),
                 "--quiet", "--ensemble", "nve"])
    assert code == 0 and "forces_std" in ase.io.read(tmp_path / "c.extxyz").arrays
    out = tmp_path / "relaxed.extxyz"
    assert main(["relax", model_file, structure_file, "--out", str(out), "--quiet", "--fmax", "0.05"]) == 0
    assert out.exists()
    capsys.readouterr()


def test_cli_uncertainty_stop_is_one_line(capsys, tmp_path, structure_file):
    a = str(save_model(tiny_model(0), tmp_path / "a.pt"))
    b = str(save_model(tiny_model(1), tmp_path / "b.pt"))
    code = main(["md", a, b, structure_file, "--steps", "5", "--traj", str(tmp_path / "md.extxyz"),
                 "--max-uncertainty", "1e-6", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "uncertainty" in err and "Traceback" not in err


@pytest.mark.parametrize("case", ["missing model", "missing structure", "bad structure", "bad value"])
def test_cli_bad_inputs(capsys, tmp_path, model_file, structure_file, case):
    broken = tmp_path / "broken.xyz"
    broken.write_text("not a structure\n")
    argv = {
        "missing model": ["md", str(tmp_path / "none.pt"), structure_file],
        "missing structure": ["relax", model_file, str(tmp_path / "none.xyz")],
        "bad structure": ["md", model_file, str(broken)],
        "bad value": ["md", model_file, structure_file, "--timestep", "-1"],
    }[case]
    code = main([*argv, "--quiet", "--traj", str(tmp_path / "x.extxyz")] if argv[0] == "md" else [*argv, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err and err.startswith(f"localframe {argv[0]}: error:")
