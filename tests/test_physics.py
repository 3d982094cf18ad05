"""Physical consistency of every registered model (float64, random weights, non-zero biases).

Parametrized over ``localframe.models.available()``, so a new model file is covered as soon as
it registers itself: symmetry (rotation, translation, permutation, parity), smoothness at the
cutoff, no NaN on symmetric structures, conservative forces, periodic consistency and stress.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms

from localframe import models
from localframe.data.batch import AtomsBatch

MODELS = models.available()
LOCAL_FRAME_MODELS = ("clofnet", "leftnet", "alphanet")
SHIFT = np.array([10.0, -7.0, 3.0])


def rel(a, b) -> float:
    """max |a − b| relative to max |b| (absolute below 1e-6)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def symmetry_configs(name: str) -> list[dict]:
    """Both parity settings when the model has a ``symmetry`` switch, else its default."""
    params = inspect.signature(models.representation_class(name).__init__).parameters
    return [{"symmetry": "E(3)"}, {"symmetry": "SE(3)"}] if "symmetry" in params else [{}]


@pytest.fixture(params=MODELS)
def name(request):
    return request.param


@pytest.fixture
def model(name, lf):
    return lf.build_model(name, dipole=True)


# ---------------------------------------------------------------------- symmetry
def test_rotation(model, lf):
    atoms = lf.ethanol()
    rot = lf.random_rotation(np.random.default_rng(7))
    turned = atoms.copy()
    turned.positions = atoms.positions @ rot.T
    a, b = lf.predict(model, atoms), lf.predict(model, turned)
    assert rel(b["energy"], a["energy"]) < 1e-9
    assert rel(b["forces"], a["forces"] @ rot.T) < 1e-9
    assert rel(b["dipole"], a["dipole"] @ rot.T) < 1e-9


def test_translation_and_permutation(model, lf):
    atoms = lf.ethanol()
    shifted = atoms.copy()
    shifted.positions += SHIFT
    perm = np.random.default_rng(3).permutation(len(atoms))
    a, b, c = lf.predict(model, atoms), lf.predict(model, shifted), lf.predict(model, atoms[perm])
    assert rel(b["energy"], a["energy"]) < 1e-9 and rel(b["forces"], a["forces"]) < 1e-9
    assert rel(b["dipole"], a["dipole"]) < 1e-9
    assert rel(c["energy"], a["energy"]) < 1e-9 and rel(c["forces"], a["forces"][perm]) < 1e-9
    assert rel(c["dipole"], a["dipole"]) < 1e-9


def test_parity(name, lf):
    mirror = np.diag([-1.0, 1.0, 1.0]) @ lf.random_rotation(np.random.default_rng(11))
    for config in symmetry_configs(name):
        model = lf.build_model(name, dipole=True, **config)
        for atoms in (lf.chiral(), lf.ethanol()):
            image = atoms.copy()
            image.positions = atoms.positions @ mirror.T
            a, b = lf.predict(model, atoms), lf.predict(model, image)
            if model.symmetry == "E(3)":
                assert rel(b["energy"], a["energy"]) < 1e-9, config
                assert rel(b["forces"], a["forces"] @ mirror.T) < 1e-9, config
                assert rel(b["dipole"], a["dipole"] @ mirror.T) < 1e-9, config
            else:
                assert model.symmetry == "SE(3)", f"unknown symmetry {model.symmetry!r}"
                diff = abs(b["energy"][0] - a["energy"][0]) / max(abs(a["energy"][0]), 1e-6)
                assert diff > 1e-6, f"{config}: enantiomers get the same energy"


def test_local_frame_model_can_be_chiral(lf):
    present = [n for n in LOCAL_FRAME_MODELS if n in MODELS]
    if not present:
        pytest.skip("no local-frame model registered yet")
    chiral = []
    for name in present:
        for config in symmetry_configs(name):
            if lf.build_model(name, **config).symmetry == "SE(3)":
                chiral.append((name, config))
    assert chiral, f"none of {present} declares or can be configured SE(3)"


# ---------------------------------------------------------------------- smoothness and robustness
def pair_crossing_cutoff(distance: float) -> Atoms:
    """Water plus a CO molecule whose C sits ``distance`` from the O; all other pairs far from it."""
    water = Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.757, 0.586, 0.03], [-0.757, 0.586, -0.02]])
    co = Atoms("CO", positions=[[0.0, -distance, 0.0], [0.3, -distance - 1.1, 0.4]])
    return water + co


def test_smooth_at_cutoff(model, lf):
    rc = model.cutoff
    inside, outside = pair_crossing_cutoff(rc - 1e-6), pair_crossing_cutoff(rc + 1e-6)
    d = inside.get_all_distances()
    assert np.sum(np.abs(d - rc) < 0.05) == 2  # only the O–C pair is near the cutoff
    assert len(AtomsBatch.from_atoms(inside, rc).edge_index[0]) == len(AtomsBatch.from_atoms(outside, rc).edge_index[0]) + 2
    a, b = lf.predict(model, inside), lf.predict(model, outside)
    assert abs(a["energy"][0] - b["energy"][0]) < 1e-8
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-6


def test_no_nan_on_symmetric_structures(model, lf):
    for label, atoms in lf.symmetric_molecules().items():
        out = lf.predict(model, atoms)
        for key in ("energy", "forces", "dipole"):
            assert np.isfinite(out[key]).all(), f"{label}: non-finite {key}"
        if len(atoms) == 1:
            assert np.abs(out["forces"]).max() == 0.0
    # Training on forces differentiates twice; the parameter gradients must be finite too.
    batch = AtomsBatch.from_atoms(list(lf.symmetric_molecules().values()), model.cutoff, dtype=torch.float64)
    out = model.train()(batch)
    (out["energy"].pow(2).sum() + out["forces"].pow(2).sum() + out["dipole"].pow(2).sum()).backward()
    for pname, param in model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), f"non-finite gradient of {pname}"


# ---------------------------------------------------------------------- conservative forces
def displaced_energies(model, batch: AtomsBatch, positions: list[torch.Tensor], cells=None) -> np.ndarray:
    """Energies of copies of a one-structure batch with other positions (and cells), same pairs."""
    cells = cells or [batch.cell] * len(positions)
    copies = [replace(batch, positions=p, cell=c) for p, c in zip(positions, cells)]
    return model(AtomsBatch.collate(copies), forces=False, stress=False, dipole=False)["energy"].detach().numpy()


def test_forces_are_energy_gradient(model, lf):
    atoms = lf.ethanol()
    batch = AtomsBatch.from_atoms(atoms, model.cutoff, dtype=torch.float64)
    forces = model(batch)["forces"].detach().numpy()
    h = 1e-5
    steps = []
    for k in range(len(atoms)):
        for a in range(3):
            for sign in (1.0, -1.0):
                p = batch.positions.clone()
                p[k, a] += sign * h
                steps.append(p)
    e = displaced_energies(model, batch, steps).reshape(len(atoms), 3, 2)
    numeric = -(e[..., 0] - e[..., 1]) / (2 * h)
    assert rel(forces, numeric) < 1e-6
    assert np.abs(forces.sum(axis=0)).max() < 1e-10


# ---------------------------------------------------------------------- periodic structures
@pytest.fixture(params=["silicon", "triclinic"])
def crystal(request, lf):
    return getattr(lf, request.param)()


def test_supercell_and_wrapping(model, lf, crystal):
    assert crystal.cell.lengths().min() < model.cutoff  # atoms see their own images
    base = lf.predict(model, crystal, dipole=False)
    big = lf.predict(model, crystal.repeat((2, 2, 2)), dipole=False)
    assert rel(big["energy"], 8 * base["energy"]) < 1e-9
    assert rel(big["forces"].reshape(8, len(crystal), 3), np.broadcast_to(base["forces"], (8, len(crystal), 3))) < 1e-9
    assert rel(big["stress"], base["stress"]) < 1e-9
    moved = crystal.copy()
    lattice_steps = np.random.default_rng(2).integers(-2, 3, size=(len(crystal), 3))
    moved.positions += lattice_steps @ crystal.cell.array
    wrapped = lf.predict(model, moved, dipole=False)
    for key in ("energy", "forces", "stress"):
        assert rel(wrapped[key], base[key]) < 1e-9, key


def test_stress_is_strain_derivative(model, crystal):
    batch = AtomsBatch.from_atoms(crystal, model.cutoff, dtype=torch.float64)
    stress = model(batch, dipole=False)["stress"].detach().numpy()[0]
    h = 1e-5
    positions, cells = [], []
    for a in range(3):
        for b in range(3):
            for sign in (1.0, -1.0):
                strain = torch.eye(3, dtype=torch.float64)
                strain[a, b] += 0.5 * sign * h
                strain[b, a] += 0.5 * sign * h
                positions.append(batch.positions @ strain)
                cells.append(batch.cell @ strain)
    e = displaced_energies(model, batch, positions, cells).reshape(3, 3, 2)
    numeric = (e[..., 0] - e[..., 1]) / (2 * h) / abs(np.linalg.det(crystal.cell.array))
    assert rel(stress, numeric) < 1e-6
    assert np.abs(stress - stress.T).max() < 1e-12


def test_radial_bases_return_no_subnormals():
    """Subnormal basis values (they slow every product reading them) are 0; the rest is unchanged."""
    import torch

    from localframe.nn.radial import ExpNormalBasis, GaussianBasis

    d = torch.linspace(0.5, 5.0, 400)
    for basis in (GaussianBasis(5.0, 50), ExpNormalBasis(5.0, 32)):
        phi = basis(d)
        tiny = torch.finfo(phi.dtype).tiny
        assert not ((phi != 0) & (phi.abs() < tiny)).any()
        exact = torch.exp(basis.coeff * (d.unsqueeze(-1) - basis.centers).pow(2)) if isinstance(
            basis, GaussianBasis) else torch.exp(-basis.beta * (torch.exp(-d).unsqueeze(-1) - basis.centers).pow(2))
        assert ((exact > 0) & (exact < tiny)).any()  # the case is real: these bases do underflow
        torch.testing.assert_close(phi, exact, rtol=0, atol=tiny)
