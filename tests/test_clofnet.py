"""ClofNet specifics (float64, random weights, non-zero biases): virtual coordinates that move and are
smooth, frames rebuilt from them in every layer, equivariant displacements, and the parameter counts
of the presets against the published N-body model (161 k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.models import clofnet
from localframe.nn import frames


def displacements(model, atoms) -> list[np.ndarray]:
    """Δx̃ (N, 3) after every layer."""
    captured = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: captured.append(out[1].detach().numpy()))
             for layer in model.representation.layers]
    try:
        model(AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64), forces=False)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.fixture(params=["E(3)", "SE(3)"])
def model(request, lf):
    return lf.build_model("clofnet", symmetry=request.param, num_layers=3)


def test_virtual_coordinates_move_in_every_layer(model, lf):
    dx = displacements(model, lf.ethanol())
    assert len(dx) == 3
    previous = np.zeros_like(dx[0])
    for layer_dx in dx:
        step = np.linalg.norm(layer_dx - previous, axis=-1)
        assert (step > 1e-4).all(), step  # every atom's virtual position moves in every layer
        previous = layer_dx
    assert np.linalg.norm(dx[-1], axis=-1).max() < 1.0  # ... by a fraction of a bond length at initialisation


def test_frames_are_rebuilt_from_the_virtual_vectors(model, lf, monkeypatch):
    atoms = lf.ethanol()
    batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64)
    seen = []
    original = frames.build_frame  # every edge frame is built by it (at once or per chunk of pairs)

    def recording(vectors, *args, **kwargs):
        seen.append(vectors.detach())
        return original(vectors, *args, **kwargs)

    monkeypatch.setattr(frames, "build_frame", recording)
    energy = model(batch, forces=False)["energy"].item()
    real = batch.edge_vectors().detach()
    assert len(seen) == 1 + 3  # the input geometry, then once per layer
    assert torch.equal(seen[0], real) and torch.equal(seen[1], real)  # Δx̃ = 0 before the first update
    for vectors in seen[2:]:
        assert (vectors - real).abs().max() > 1e-4
    # without the coordinate update the frames and distances stay those of the input: another energy
    for layer in model.representation.layers:
        layer.update_coordinates = False
    try:
        frozen = model(batch, forces=False)["energy"].item()
        assert all(np.abs(d).max() == 0.0 for d in displacements(model, atoms))
    finally:
        for layer in model.representation.layers:
            layer.update_coordinates = True
    assert abs(frozen - energy) > 1e-6 * max(abs(energy), 1.0)


def test_displacements_are_equivariant(model, lf):
    atoms = lf.ethanol()
    for proper in (True, False):
        if not proper and model.symmetry == "SE(3)":
            continue
        rot = lf.random_rotation(np.random.default_rng(5))
        if not proper:
            rot = np.diag([-1.0, 1.0, 1.0]) @ rot
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + np.array([3.0, -1.0, 2.0])
        a, b = displacements(model, atoms)[-1], displacements(model, moved)[-1]
        assert np.abs(b - a @ rot.T).max() < 1e-10 * np.abs(a).max()


def test_displacements_are_continuous_at_the_cutoff(model):
    rc = model.cutoff

    def system(dist):
        water = Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.757, 0.586, 0.03], [-0.757, 0.586, -0.02]])
        return water + Atoms("CO", positions=[[0.0, -dist, 0.0], [0.3, -dist - 1.1, 0.4]])

    inside, outside = displacements(model, system(rc - 1e-6)), displacements(model, system(rc + 1e-6))
    for a, b in zip(inside, outside):
        assert np.abs(a - b).max() < 1e-8


def test_energy_default_is_mirror_invariant_and_se3_tells_enantiomers_apart(lf):
    mol = lf.chiral()
    image = mol.copy()
    image.positions = mol.positions * np.array([-1.0, 1.0, 1.0])
    default = lf.build_model("clofnet")
    assert default.symmetry == "E(3)"
    a, b = lf.predict(default, mol)["energy"][0], lf.predict(default, image)["energy"][0]
    assert abs(a - b) < 1e-10 * max(abs(a), 1.0)
    for seed in range(3):  # not by luck of one initialisation
        chiral = lf.build_model("clofnet", seed=seed, symmetry="SE(3)")
        a, b = lf.predict(chiral, mol)["energy"][0], lf.predict(chiral, image)["energy"][0]
        assert abs(a - b) > 1e-6 * max(abs(a), 1e-3), seed


def test_parameter_counts_against_the_published_nbody_model():
    assert models.count_parameters(clofnet.ClofNetDynamics(64, 4)) == 160_964  # the released ClofNet_vel
    rows = {r["preset"]: r for r in models.describe_presets()}
    assert rows["clofnet-nbody"]["hparams"] == {"hidden_channels": 64, "num_layers": 4}
    assert abs(rows["clofnet-nbody"]["parameters"] - 161_000) < 0.1 * 161_000  # energy head included
    assert "clofnet-cpu" in rows
    assert models.create("clofnet", preset="nbody").representation.hidden_channels == 64
