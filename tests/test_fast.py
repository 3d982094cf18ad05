"""The fixed-graph fast path (localframe.fast): the eager calculator's energies and forces over MD,
pair-list rebuilds and padding included, and a clean fall-back where it does not apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.calculator import compare_atoms
from ase.md.verlet import VelocityVerlet

from localframe import fast
from localframe.calculator import Calculator, atoms_changes
from localframe.errors import InputError
from localframe.models.atomistic import AtomisticModel
from localframe.models.base import Representation
from localframe.nn.scatter import scatter_sum

pytestmark = pytest.mark.usefixtures("one_thread")


def md_against_eager(calc: Calculator, model, atoms, steps: int, skin: float) -> float:
    """Largest |ΔE| and |ΔF| between ``calc`` and the eager calculator along NVE MD driven by ``calc``."""
    eager = Calculator(model, dtype="float64", skin=skin)
    atoms = atoms.copy()
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses()[:, None] * units.kB * 3000.0))
    atoms.calc = calc
    dynamics = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    worst = 0.0
    for _ in range(steps):
        dynamics.run(1)
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        worst = max(worst, abs(energy - eager.get_potential_energy(atoms)), np.abs(forces - eager.get_forces(atoms)).max())
        assert calc.closest_pair[:2] == eager.closest_pair[:2]
        assert calc.closest_pair[2] == pytest.approx(eager.closest_pair[2], abs=1e-12)
    return worst


@pytest.mark.parametrize("name", ["leftnet", "painn"])
def test_fixed_graph_equals_eager_over_md(lf, name):
    """Candidates between r_c and r_c + δ, padding pairs and rebuilds: the eager numbers to 1e-10 (float64)."""
    model = lf.build_model(name, cutoff=2.5)
    calc = lf.traced(model, skin=0.5)
    worst = md_against_eager(calc, model, lf.ethanol(), steps=25, skin=0.5)
    path = calc.evaluator.fast
    assert path.available and path.graphs is not None  # served by the fast path throughout
    assert calc.neighbor_builds >= 2  # the list was rebuilt during the run
    distances = path.graphs[0](path._positions, path._cell_t, path._edges, path._shifts)[2].numpy()
    n_real = path._raw[0].shape[1]
    assert (distances[:n_real] >= model.cutoff).any()  # candidates beyond the cutoff are in the graph
    assert path._pairs > n_real and (distances[n_real:] >= 2 * model.cutoff).all()  # padding pairs, far away
    assert worst < 1e-10


def test_fixed_graph_periodic(lf):
    """A periodic crystal (image pairs, fixed cell): the eager numbers to 1e-10."""
    model = lf.build_model("leftnet", cutoff=3.0)
    atoms = lf.rattled(bulk("Si", "diamond", a=5.43), 0.05, seed=2)
    assert md_against_eager(lf.traced(model, skin=0.5), model, atoms, steps=5, skin=0.5) < 1e-10


def test_padded_pairs_by_hand():
    edges, shifts = np.array([[0, 1], [1, 0]]), np.array([[0.0, 0, 0], [1, 0, 0]])
    e, s = fast.padded_pairs(edges, shifts, 4, np.array([3.0, 0, 0]))
    np.testing.assert_array_equal(e, [[0, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(s, [[0, 0, 0], [1, 0, 0], [3, 0, 0], [3, 0, 0]])
    with pytest.raises(ValueError, match="capacity"):
        fast.padded_pairs(edges, shifts, 1, np.zeros(3))


def test_new_molecule_gets_a_new_graph(lf):
    model = lf.build_model("painn", cutoff=3.0)
    calc, eager = lf.traced(model, 0.0), Calculator(model, dtype="float64")
    for atoms in (lf.ethanol(), lf.sf6()):
        np.testing.assert_allclose(calc.get_forces(atoms), eager.get_forces(atoms), rtol=0, atol=1e-10)
        assert calc.evaluator.fast._positions.shape == (len(atoms), 3)


def test_fast_path_rejects_bad_structures(lf):
    calc = lf.traced(lf.build_model("painn", cutoff=3.0), 0.0)
    atoms = lf.ethanol()
    calc.get_forces(atoms)
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.05, 0, 0]
    with pytest.raises(InputError, match="apart"):
        calc.get_forces(close)
    broken = atoms.copy()
    broken.positions[2, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        calc.get_forces(broken)


class _EdgeCounter(Representation):
    """Scalars that count every pair, near or far: no envelope, so padding changes the energy."""

    hidden_channels, cutoff = 4, 3.0

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(4))

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        d = torch.linalg.vector_norm(vectors, dim=-1)
        return scatter_sum(d.unsqueeze(-1) * self.weight, edge_index[0], numbers.shape[0]), None


def test_falls_back_without_an_envelope(lf):
    model = AtomisticModel(_EdgeCounter(), "edge-counter", {}).double()
    calc, eager = lf.traced(model, 0.0), Calculator(model, dtype="float64")
    atoms = lf.ethanol()
    with pytest.warns(UserWarning, match="general path"):
        energy = calc.get_potential_energy(atoms)
    assert energy == pytest.approx(eager.get_potential_energy(atoms), abs=1e-10)
    assert not calc.evaluator.fast.available and "beyond the cutoff" in calc.evaluator.fast.reason


def test_falls_back_when_compiling_fails(lf, monkeypatch):
    """No compiler (or any failure to trace): a warning, then the general path's numbers."""
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(fast, "FixedGraph", broken)
    model = lf.build_model("painn", cutoff=3.0)
    calc, eager = Calculator(model, dtype="float64"), Calculator(model, dtype="float64")
    calc.evaluator.fast = fast.FastPath(calc.evaluator)  # as compile=True sets it, without compiling the fall-back
    atoms = lf.ethanol()
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        forces = calc.get_forces(atoms)
    np.testing.assert_allclose(forces, eager.get_forces(atoms), rtol=0, atol=1e-10)
    assert calc.evaluator.fast.reason.startswith("RuntimeError")


def test_stress_uses_the_general_path(lf):
    model = lf.build_model("painn", cutoff=3.0)
    calc, eager = lf.traced(model, 0.0), Calculator(model, dtype="float64")
    atoms = lf.rattled(bulk("Si", "diamond", a=5.43), 0.05, seed=2)
    np.testing.assert_allclose(calc.get_stress(atoms), eager.get_stress(atoms), rtol=0, atol=1e-12)
    assert calc.evaluator.fast.graphs is None  # not built: stress is never served by the fast path


def test_committee(lf):
    members = [lf.build_model("painn", seed=s, cutoff=3.0) for s in (0, 1)]
    calc, eager = lf.traced(members, 0.0), Calculator(members, dtype="float64")
    atoms = lf.ethanol()
    calc.get_forces(atoms)
    for key in ("energy", "forces", "energy_std", "forces_std", "energies"):
        np.testing.assert_allclose(calc.get_property(key, atoms), eager.get_property(key, atoms), rtol=0, atol=1e-10)


def test_compiled_graphs_are_kept_in_the_cache(lf, monkeypatch, tmp_path):
    """AOTInductor's library is built once per graph and kept: the same architecture and sizes load it
    (other weights too: they are inputs), other constants or sizes get their own, and a failed
    compilation leaves nothing behind. (The compiler itself is replaced: the real one takes a minute.)"""
    monkeypatch.setenv("LOCALFRAME_CACHE", str(tmp_path))
    built = []

    def compile_and_package(program, package_path):
        built.append(package_path)
        Path(package_path).write_bytes(b"library")
        return package_path

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", compile_and_package)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path: (lambda *args: programs[path](*args)))
    programs = {}
    record = fast.ahead_of_time

    def ahead_of_time(traced, example):
        programs[str(tmp_path / "graphs" / f"{fast.graph_key(traced, example)}.pt2")] = traced
        return record(traced, example)

    monkeypatch.setattr(fast, "ahead_of_time", ahead_of_time)
    atoms = lf.ethanol()

    def forces(model):
        calc = Calculator(model, dtype="float64")
        calc.evaluator.fast = fast.FastPath(calc.evaluator)  # as compile=True sets it
        return calc.get_forces(atoms)

    a, b = lf.build_model("schnet", cutoff=3.0, seed=0), lf.build_model("schnet", cutoff=3.0, seed=1)
    np.testing.assert_allclose(forces(a), Calculator(a, dtype="float64").get_forces(atoms), rtol=0, atol=1e-10)
    forces(b)
    assert len(built) == 1 and len(list((tmp_path / "graphs").glob("*.pt2"))) == 1
    forces(lf.build_model("schnet", cutoff=3.5))  # other settings: another graph
    assert len(built) == 2 and not list((tmp_path / "graphs").glob("*partial*"))

    def broken(program, package_path):
        Path(package_path).write_bytes(b"half")
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        forces(lf.build_model("schnet", cutoff=4.0))
    assert len(list((tmp_path / "graphs").iterdir())) == 2  # no partial library left


@pytest.mark.slow
def test_compiled_fixed_graph_equals_eager(lf):
    """Inductor-compiled (minutes on a loaded CPU): the eager numbers to 1e-10 in float64 over MD with rebuilds."""
    model = lf.build_model("leftnet", cutoff=2.5)
    calc = Calculator(model, dtype="float64", skin=0.5, compile=True)
    assert md_against_eager(calc, model, lf.ethanol(), steps=20, skin=0.5) < 1e-10
    assert calc.evaluator.fast.available and calc.neighbor_builds >= 2


def test_atoms_changes_equal_ase_compare_atoms(lf):
    """The calculator's cheap change detection lists what ASE's compare_atoms lists."""
    base = lf.ethanol()
    variants = [base.copy() for _ in range(7)]
    variants[1].positions[0, 0] += 0.01
    variants[2].positions[0, 0] += 1e-16  # within ASE's tolerance
    variants[3].set_initial_charges(np.ones(len(base)))
    variants[4].pbc = [True, False, False]
    variants[5].cell = np.eye(3)
    variants[6].set_initial_magnetic_moments(np.zeros(len(base)))
    others = [*variants, bulk("Si"), lf.sf6()]
    for old in (base, variants[3]):
        for new in others:
            assert sorted(atoms_changes(old, new)) == sorted(compare_atoms(old, new))
    assert atoms_changes(base, variants[1], ignored=("positions",)) == []
    assert sorted(atoms_changes(None, base)) == sorted(compare_atoms(None, base))
