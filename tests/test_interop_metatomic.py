"""The metatomic export: one TorchScript file that gives the calculator's energy, forces and stress.

The export traces the energy core on a small cluster; these tests evaluate it through metatomic's
own ASE calculator on structures of other sizes (a molecule, periodic boxes), in float64.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk, molecule

from localframe.calculator import Calculator
from localframe.cli import main
from localframe.errors import InputError
from localframe.io import save_model

metatomic_ase = pytest.importorskip("metatomic_ase", reason="metatomic-ase not installed (pip install 'localframe[metatomic]')")
from localframe.interop.metatomic import export_metatomic  # noqa: E402

MODELS = ["schnet", "painn", "egnn", "clofnet", "leftnet", "alphanet"]
ELEMENTS = (1, 6, 8, 14)


def _box(repeat=(2, 2, 1)):
    """A rattled, mixed-species diamond box (16 atoms for the default repeat), another size than the tracing cluster."""
    atoms = bulk("Si", "diamond", a=5.43).repeat(repeat)
    atoms.numbers[::3], atoms.numbers[1::5] = 6, 8
    atoms.rattle(0.05, seed=2)
    return atoms


def _benzene():
    atoms = molecule("C6H6")
    atoms.rattle(0.05, seed=1)
    return atoms


def _compare(model, path, atoms):
    ours, theirs = atoms.copy(), atoms.copy()
    ours.calc = Calculator(model, dtype="float64")
    theirs.calc = metatomic_ase.MetatomicCalculator(str(path))
    out = {
        "energy": abs(ours.get_potential_energy() - theirs.get_potential_energy()),
        "forces": float(np.abs(ours.get_forces() - theirs.get_forces()).max()),
    }
    assert np.abs(ours.get_forces()).max() > 1e-3  # a real comparison, not of zeros
    if atoms.pbc.all():
        out["stress"] = float(np.abs(ours.get_stress() - theirs.get_stress()).max())
    return out


@pytest.mark.parametrize("name", MODELS)
def test_export_matches_calculator_on_other_sizes(lf, tmp_path, name, one_thread):
    model = lf.build_model(name)
    path = export_metatomic(model, tmp_path / f"{name}.pt", dtype="float64", elements=ELEMENTS)
    for atoms in (_benzene(), _box()):
        diffs = _compare(model, path, atoms)
        assert max(diffs.values()) < 1e-9, (name, len(atoms), diffs)  # eV, eV/Å, eV/Å³


@pytest.mark.parametrize("name", ["leftnet", "alphanet"])
def test_chunked_body_is_traced_as_one_chunk(lf, tmp_path, one_thread, name):
    """LEFTNet and AlphaNet evaluate their LSE (localframe.nn.lse) in chunks of edges; with lse_hidden=512
    a chunk holds at most 128 edges, far fewer than the 32-atom box has, so a trace with the tracing
    cluster's chunk count would fail."""
    model = lf.build_model(name, lse_hidden=512)
    path = export_metatomic(model, tmp_path / f"{name}.pt", elements=ELEMENTS)
    diffs = _compare(model, path, _box((2, 2, 2)))
    assert max(diffs.values()) < 1e-9, diffs


def test_cli_export_loads_without_localframe(lf, tmp_path, one_thread):
    model = lf.build_model("schnet")
    model.metadata["elements"] = [1, 6, 8]
    save_model(model, tmp_path / "model.pt")
    out = tmp_path / "exported.pt"
    assert main(["export", str(tmp_path / "model.pt"), str(out)]) == 0
    atoms = lf.ethanol()
    atoms.calc = Calculator(model, dtype="float64")
    expected = atoms.get_potential_energy()
    # a fresh interpreter where importing localframe fails
    code = (
        "import sys; sys.modules['localframe'] = None\n"
        "from ase.build import molecule; from metatomic_ase import MetatomicCalculator\n"
        "a = molecule('CH3CH2OH'); a.rattle(0.05, seed=3); a.calc = MetatomicCalculator(sys.argv[1])\n"
        "print(repr(float(a.get_potential_energy())))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-9)


def test_export_needs_elements(lf, tmp_path):
    with pytest.raises(InputError, match="elements"):
        export_metatomic(lf.build_model("schnet"), tmp_path / "x.pt")
