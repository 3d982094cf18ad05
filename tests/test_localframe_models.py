"""Local frames and the local-frame models (ClofNet, LEFTNet, AlphaNet), in float64.

Frame unit tests (orthonormal right-handed frames, equivariant scalarize → tensorize, parity,
zero-safe degenerate cases), LEFTNet's frame transition encoding, chirality, and compact
symmetry / smoothness / robustness / conservative-force / periodic checks of the three models.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.nn import frames

NAMES = ("clofnet", "leftnet", "alphanet")
SMALL = {"hidden_channels": 16, "num_layers": 2, "num_radial": 8}


def build(name: str, seed: int = 0, **kwargs) -> models.AtomisticModel:
    torch.manual_seed(seed)
    model = models.create(name, **{**SMALL, **kwargs})
    with torch.no_grad():  # non-zero biases everywhere
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape))
    return model.double().eval()


def run(model, atoms, **kwargs) -> dict[str, np.ndarray]:
    batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64)
    return {k: v.detach().numpy() for k, v in model(batch, **kwargs).items()}


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def rotation(seed: int, proper: bool = True) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def rattled(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(stdev=stdev, seed=seed)
    return atoms


def chiral_molecule() -> Atoms:
    """CHFClBr: tetrahedral carbon with four different substituents."""
    dirs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3.0)
    return Atoms("CHFClBr", positions=np.vstack([np.zeros(3), dirs * np.array([[1.09], [1.35], [1.77], [1.94]])]))


def symmetric_structures() -> dict[str, Atoms]:
    sf6 = Atoms("SF6", positions=np.vstack([np.zeros(3), np.vstack([np.eye(3), -np.eye(3)]) * 1.56]))
    far = molecule("H2O") + molecule("NH3")
    far.positions[3:] += [12.0, 0.0, 0.0]
    return {"H2": molecule("H2"), "CO2": molecule("CO2"), "CH4": molecule("CH4"), "benzene": molecule("C6H6"),
            "SF6": sf6, "atom": Atoms("O", positions=[[0.0, 0.0, 0.0]]), "far apart": far}


# ---------------------------------------------------------------------- frame module
def random_vectors(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_frames_are_orthogonal_right_handed_and_weighted_by_their_quality():
    """Rows are exactly orthogonal, with lengths q(|a|), q(|e₁ × s|) and their product (q(l) = l/√(l² + ε²));
    unit to 1e-3 where the levers are well above the frame length ε."""
    a, s = 2.0 * random_vectors(64, 0), 2.0 * random_vectors(64, 1)
    F = frames.build_frame(a, s)
    eps = frames.FRAME_EPS
    q = lambda length: length / torch.sqrt(length**2 + eps**2)  # noqa: E731
    q1 = q(a.norm(dim=-1))
    q2 = q(torch.linalg.cross(F[:, 0], s).norm(dim=-1))
    gram = F @ F.transpose(-1, -2)
    assert torch.allclose(torch.diagonal(gram, dim1=-2, dim2=-1), torch.stack([q1, q2, q1 * q2], -1).pow(2), atol=1e-12)
    off = gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-12  # exactly orthogonal
    assert torch.allclose(torch.linalg.det(F), (q1 * q2).pow(2), atol=1e-12)  # right-handed
    long = torch.tensor([[40.0, 0.0, 0.0]], dtype=torch.float64)
    unit = frames.build_frame(long, torch.tensor([[0.0, 50 * eps, 1.0]], dtype=torch.float64))[0]
    assert (unit @ unit.T - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-3


def test_degenerate_frames_vanish_with_finite_gradients():
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.5]], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([[1.0, 2.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    F = frames.build_frame(a, s)
    assert F[0].abs().max() == 0.0  # no primary direction: all rows vanish
    assert F[1:, 1:].abs().max() == 0.0  # reference parallel to / absent from e1: e2 = e3 = 0
    (g_a, g_s) = torch.autograd.grad((F * random_vectors(3, 2).unsqueeze(1)).sum(), (a, s), create_graph=True)
    assert torch.isfinite(g_a).all() and torch.isfinite(g_s).all()
    second = torch.autograd.grad((g_a.pow(2).sum() + g_s.pow(2).sum()), (a, s))
    assert all(torch.isfinite(g).all() for g in second)
    c = torch.zeros(4, requires_grad=True, dtype=torch.float64)
    (g,) = torch.autograd.grad(frames.even(c).sum(), c, create_graph=True)
    assert torch.isfinite(g).all() and torch.isfinite(torch.autograd.grad(g.sum(), c)[0]).all()


@pytest.mark.parametrize("chiral", [True, False])
def test_scalarize_tensorize_round_trip(chiral):
    a, s = 40.0 * random_vectors(32, 3), 40.0 * random_vectors(32, 4)  # levers ≫ ε: nearly unit frames
    v = torch.randn(32, 3, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = frames.tensorize(frames.scalarize(v, frames.build_frame(a, s), chiral), frames.build_frame(a, s), chiral)
    Q = torch.as_tensor(rotation(6, proper=chiral), dtype=torch.float64)  # E(3) mode: also improper
    turned = frames.tensorize(
        frames.scalarize(Q @ v, frames.build_frame(a @ Q.T, s @ Q.T), chiral), frames.build_frame(a @ Q.T, s @ Q.T), chiral
    )
    assert (turned - Q @ out).abs().max() < 1e-12  # equivariant round trip
    c, c_img = (frames.scalarize(w, frames.build_frame(x, y), chiral) for w, x, y in ((v, a, s), (Q @ v, a @ Q.T, s @ Q.T)))
    assert (c - c_img).abs().max() < 1e-12  # invariant coefficients
    F = frames.build_frame(a, s)
    well = (a.norm(dim=-1) > 50 * frames.FRAME_EPS) & (torch.linalg.cross(F[:, 0], s).norm(dim=-1) > 50 * frames.FRAME_EPS)
    error = (out - v)[well]
    if chiral:  # complete frame: the round trip reconstructs v (up to the ε regulariser)
        assert error.abs().max() < 1e-3 * v.abs().max()
    else:  # E(3): only the component along the pseudovector axis e2 is dropped
        along_e2 = (F[:, 1].unsqueeze(-1) * v).sum(1, keepdim=True) * F[:, 1].unsqueeze(-1)
        assert (error + along_e2[well]).abs().max() < 1e-3 * v.abs().max()


def test_pseudovector_coefficient_flips_under_mirror_only_when_chiral():
    a, s, v = random_vectors(8, 7), random_vectors(8, 8), random_vectors(8, 9).unsqueeze(-1)
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    for chiral, sign in ((True, -1.0), (False, 1.0)):
        c = frames.scalarize(v, frames.build_frame(a, s), chiral)
        c_img = frames.scalarize(M @ v, frames.build_frame(a @ M, s @ M), chiral)
        assert torch.allclose(c_img[:, 1], sign * c[:, 1], atol=1e-12)
        assert torch.allclose(c_img[:, [0, 2]], c[:, [0, 2]], atol=1e-12)


def test_neighbour_centroid_ignores_zero_weight_neighbours():
    r = random_vectors(5, 10)
    centre = torch.tensor([0, 0, 0, 1, 1])
    w = torch.tensor([1.0, 0.5, 0.0, 0.3, 0.0], dtype=torch.float64)
    m = frames.neighbour_centroid(r, w, centre, 3)
    kept = frames.neighbour_centroid(r[[0, 1, 3]], w[[0, 1, 3]], centre[[0, 1, 3]], 3)
    assert torch.allclose(m, kept) and m[2].abs().max() == 0.0


# ---------------------------------------------------------------------- model-specific
def test_declared_symmetry_and_switch():
    assert build("clofnet").symmetry == "E(3)"  # E(3) by default: mirror images have equal energies
    assert build("leftnet").symmetry == build("alphanet").symmetry == "E(3)"
    for name in NAMES:
        assert build(name, symmetry="SE(3)").symmetry == "SE(3)"
        assert build(name, symmetry="E(3)").symmetry == "E(3)"
        assert models.representation_class(name).has_vectors


@pytest.mark.parametrize("name", NAMES)
def test_enantiomers(name):
    mol = chiral_molecule()
    image = mol.copy()
    image.positions = mol.positions @ np.diag([-1.0, 1.0, 1.0])
    for symmetry in ("SE(3)", "E(3)"):
        model = build(name, symmetry=symmetry)
        a, b = run(model, mol)["energy"][0], run(model, image)["energy"][0]
        if symmetry == "SE(3)":
            assert abs(a - b) > 1e-6 * max(abs(a), 1e-3)
        else:
            assert abs(a - b) < 1e-10 * max(abs(a), 1.0)


@pytest.mark.parametrize("fte", ["frame", "readout", "coefficients"])
def test_fte_uses_the_node_frame(fte):
    mol = rattled(molecule("CH3CH2OH"), 0.05, 3)
    on, off = build("leftnet", fte=fte), build("leftnet", fte="none")  # "none": the released, frame-free FTE
    assert rel(run(on, mol)["energy"], run(off, mol)["energy"]) > 1e-6  # the flag changes the output
    for model, matters in ((on, True), (off, False)):
        body = model.representation
        base = run(model, mol)
        original = body.frames

        def scrambled(*args):  # replace every node frame by another rotation
            edge_fr, node_fr = original(*args)
            return edge_fr, node_fr @ torch.as_tensor(rotation(1), dtype=node_fr.dtype)

        body.frames = scrambled
        try:
            other = run(model, mol)
        finally:
            del body.frames
        changed = rel(other["energy"], base["energy"])
        assert (changed > 1e-6) if matters else (changed == 0.0)


def test_leftnet_messages_are_not_vanishing_at_initialisation():
    """Each message multiplies three learned factors; with PyTorch's default init they shrink to ~1 %
    of the node features, the vector features stay ≈ 0 and training starts slowly. The unit-variance
    init keeps them at a few per cent and more."""
    torch.manual_seed(0)
    model = models.create("leftnet")  # default size and initialisation
    batch = AtomsBatch.from_atoms([molecule(name) for name in ("CH3CH2OH", "C6H6", "CH3COOH")], cutoff=5.0)
    with torch.no_grad():
        s0 = model.representation.embedding(batch.numbers)
        s, v = model.representation(batch.numbers, batch.edge_index, batch.edge_vectors(), batch.batch, 3)
    scale = s0.pow(2).mean().sqrt()
    assert (s - s0).pow(2).mean().sqrt() > 0.45 * scale  # the layers change the scalars (default init: ~0.35)
    assert v.pow(2).mean().sqrt() > 0.02 * scale  # and the vectors carry signal (default init: ~0.005)


def test_unit_variance_init_preserves_scale():
    from localframe.nn.init import unit_variance_init

    torch.manual_seed(0)
    layer = unit_variance_init(torch.nn.Linear(256, 256))
    x = torch.randn(4096, 256)
    assert abs(float(layer(x).std()) - 1.0) < 0.1
    assert float(layer.bias.abs().max()) == 0.0


# ---------------------------------------------------------------------- physics, compact
@pytest.fixture(scope="module", params=NAMES)
def model(request):
    return build(request.param)


def test_rotation_translation_permutation(model):
    mol = rattled(molecule("CH3CH2OH"), 0.05, 3)
    base = run(model, mol)
    R = rotation(7)
    moved = mol.copy()
    moved.positions = mol.positions @ R.T + np.array([10.0, -7.0, 3.0])
    perm = np.random.default_rng(3).permutation(len(mol))
    turned, permuted = run(model, moved), run(model, mol[perm])
    assert rel(turned["energy"], base["energy"]) < 1e-9 and rel(turned["forces"], base["forces"] @ R.T) < 1e-9
    assert rel(permuted["energy"], base["energy"]) < 1e-9 and rel(permuted["forces"], base["forces"][perm]) < 1e-9
    assert np.abs(base["forces"].sum(0)).max() < 1e-10


def test_mirror(model):
    mol = rattled(molecule("CH3CH2OH"), 0.05, 3)
    M = rotation(11, proper=False)
    image = mol.copy()
    image.positions = mol.positions @ M.T
    a, b = run(model, mol), run(model, image)
    if model.symmetry == "E(3)":
        assert rel(b["energy"], a["energy"]) < 1e-9 and rel(b["forces"], a["forces"] @ M.T) < 1e-9
    else:
        assert rel(b["energy"], a["energy"]) > 1e-6


def test_continuous_at_cutoff(model):
    rc = model.cutoff

    def system(dist):
        water = Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.757, 0.586, 0.03], [-0.757, 0.586, -0.02]])
        return water + Atoms("CO", positions=[[0.0, -dist, 0.0], [0.3, -dist - 1.1, 0.4]])

    a, b = run(model, system(rc - 1e-6)), run(model, system(rc + 1e-6))
    assert abs(a["energy"][0] - b["energy"][0]) < 1e-8
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-6


def test_finite_on_symmetric_structures_including_training_gradients(model):
    for label, atoms in symmetric_structures().items():
        batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64)
        model.train()  # forces with create_graph, as in force training
        try:
            out = model(batch)
            loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
            grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        finally:
            model.eval()
        assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all(), label
        assert all(g is None or torch.isfinite(g).all() for g in grads), label


@pytest.mark.parametrize("label,stdev", [("ethanol", 0.05), ("near-linear CO2", 1e-3), ("near-Td CH4", 1e-3)])
def test_forces_match_finite_differences(model, label, stdev):
    base = {"ethanol": molecule("CH3CH2OH"), "near-linear CO2": molecule("CO2"), "near-Td CH4": molecule("CH4")}[label]
    mol = rattled(base, stdev, 4)
    batch = AtomsBatch.from_atoms(mol, cutoff=model.cutoff, dtype=torch.float64)
    forces = model(batch)["forces"].detach().numpy()
    h = 1e-5
    numeric = np.zeros_like(forces)
    with torch.no_grad():
        for k in range(len(mol)):
            for a in range(3):
                e = []
                for sign in (1.0, -1.0):
                    p = batch.positions.clone()
                    p[k, a] += sign * h
                    e.append(model(replace(batch, positions=p), forces=False)["energy"].item())
                numeric[k, a] = -(e[0] - e[1]) / (2 * h)
    # relative 1e-6, against a force scale of at least 0.01 eV/Å (near-degenerate inputs have tiny forces)
    assert np.abs(forces - numeric).max() < 1e-6 * max(np.abs(forces).max(), 1e-2), label


def test_periodic_supercell_and_wrapping(model):
    crystal = rattled(bulk("Si", "diamond", a=5.43), 0.05, 5)  # cell vectors 3.84 Å < cutoff
    base = run(model, crystal, stress=False)
    big = run(model, crystal.repeat((2, 2, 2)), stress=False)
    assert rel(big["energy"], 8 * base["energy"]) < 1e-9
    assert rel(big["forces"].reshape(8, 2, 3), np.broadcast_to(base["forces"], (8, 2, 3))) < 1e-9
    moved = crystal.copy()
    moved.positions += np.array([[1, -2, 0], [0, 1, 2]]) @ crystal.cell.array
    wrapped = run(model, moved, stress=False)
    assert rel(wrapped["energy"], base["energy"]) < 1e-9 and rel(wrapped["forces"], base["forces"]) < 1e-9


def test_models_doc_table_matches_the_registry():
    """docs/models.md lists every model with its true parameter count and symmetry, and every preset."""
    from pathlib import Path

    from localframe import models

    doc = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    for row in models.describe():
        line = next((l for l in doc.splitlines() if l.startswith(f"| `{row['name']}` |")), None)
        assert line is not None, row["name"]
        assert f"{row['parameters']:,}" in line and row["symmetry"] in line
    for row in models.describe_presets():  # and every preset with its true parameter count
        line = next((l for l in doc.splitlines() if l.startswith(f"| `{row['preset']}` |")), None)
        assert line is not None, row["preset"]
        assert f"{row['parameters']:,}" in line, row["preset"]
