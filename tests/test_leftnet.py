"""LEFTNet as published: per-layer MLP_A, full-width LSE, FTE with node-frame scalarisation and
tensorisation, presets with the published sizes, and the documented cheaper variants (float64).

The physics checks of tests/test_localframe_models.py and tests/test_physics.py run here for the
settings they do not cover: SE(3) mode of the faithful model, and today's / the released variants.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

import conftest
import test_localframe_models as base
import test_physics
from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.models import leftnet
from localframe.nn import lse

#: The LEFTNet of commit 58bbeaa (before this model followed the paper), as hyperparameters (at H = 128).
TODAY = {"shared_filter": True, "filter_hidden": 128, "lse_channels": 32, "lse_hidden": 8, "fte": "coefficients",
         "vector_scale": "sqrt3"}
RELEASED_FTE = {"fte": "none", "fte_gate": "sum"}  # the released code's frame-free FTE


def representation_outputs(model, atoms):
    batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=torch.float64)
    with torch.no_grad():
        s, v = model.representation(batch.numbers, batch.edge_index, batch.edge_vectors(), batch.batch, 1)
    return s.numpy(), v.numpy()


# ---------------------------------------------------------------------- published components
def test_each_layer_has_its_own_filter_network():
    model = base.build("leftnet")
    body = model.representation
    nets = [layer.mlp_a for layer in body.layers]
    assert body.shared_mlp_a is None and all(net is not None for net in nets)
    assert nets[0][0].in_features == 3 * 16 + 8 and nets[0][0].out_features == 3 * 16  # 3H+K → 3H → 3H
    assert not torch.equal(nets[0][0].weight, nets[1][0].weight)
    shared = base.build("leftnet", shared_filter=True).representation
    assert all(layer.mlp_a is None for layer in shared.layers) and shared.shared_mlp_a is not None
    # the per-layer filters really differ on the same edges
    batch = AtomsBatch.from_atoms(molecule("CH3CH2OH"), cutoff=5.0, dtype=torch.float64)
    d = batch.edge_vectors().norm(dim=-1)
    phi, u = body.radial(d), body.envelope(d)
    A = torch.randn(len(d), nets[0][0].in_features, dtype=torch.float64)
    f0, f1 = (layer.edge_filter(A, phi, u, None) for layer in body.layers)
    assert (f0 - f1).abs().max() > 1e-3 * f0.abs().max()


def test_full_width_substructure_encoding():
    body = models.create("leftnet", hidden_channels=64).representation
    assert body.lse.mix is None  # H channels, no mixing
    assert (body.lse.g[0].in_features, body.lse.g[0].out_features, body.lse.g[2].out_features) == (3, 16, 1)
    narrow = models.create("leftnet", hidden_channels=64, lse_channels=16, lse_hidden=8).representation
    assert narrow.lse.mix.out_features == 16 and narrow.lse.g[0].out_features == 8
    assert narrow.layers[0].mlp_a[0].in_features == 2 * 16 + 64 + 32


def test_substructure_chunks_are_exact(monkeypatch):
    model = base.build("leftnet")
    atoms = [base.rattled(molecule("CH3CH2OH"), 0.05, 1), molecule("C6H6")]
    whole = base.run(model, atoms)
    monkeypatch.setattr(lse, "CHUNK_ELEMENTS", 1)  # 32 edges per chunk
    chunked = base.run(model, atoms)
    for key in ("energy", "forces"):
        assert np.abs(chunked[key] - whole[key]).max() < 1e-12


@pytest.mark.parametrize("symmetry", ["E(3)", "SE(3)"])
def test_node_frame_tensorisation_is_parity_correct(symmetry):
    """v_i gains tensorize(b_i, F_i): polar in E(3) mode (e₂, a pseudovector, is skipped), so that the
    equivariant features rotate with any orthogonal map; in SE(3) mode with proper rotations only."""
    mol = base.rattled(molecule("CH3CH2OH"), 0.05, 3)
    model = base.build("leftnet", symmetry=symmetry)
    s, v = representation_outputs(model, mol)
    for proper in (True, False):
        Q = base.rotation(5, proper=proper)
        image = mol.copy()
        image.positions = mol.positions @ Q.T
        s2, v2 = representation_outputs(model, image)
        if proper or symmetry == "E(3)":
            assert base.rel(s2, s) < 1e-9 and base.rel(v2, np.einsum("ab,nbf->naf", Q, v)) < 1e-9
        else:
            assert base.rel(s2, s) > 1e-6
    # the tensorised term is there: the same weights without it give other vectors
    without = base.build("leftnet", symmetry=symmetry)
    for layer in without.representation.layers:
        with torch.no_grad():
            layer.update[-1].weight[3 * 16 :] = 0.0
            layer.update[-1].bias[3 * 16 :] = 0.0
    assert base.rel(representation_outputs(without, mol)[1], v) > 1e-3


def test_fte_modes_and_gate():
    mol = base.rattled(molecule("CH3CH2OH"), 0.05, 3)
    energies = {mode: base.run(base.build("leftnet", fte=mode), mol)["energy"][0] for mode in leftnet.FTE_MODES}
    assert len({round(float(e), 12) for e in energies.values()}) == len(energies)
    summed = base.run(base.build("leftnet", fte_gate="sum"), mol)["energy"][0]
    assert abs(summed - energies["frame"]) > 1e-6
    for bad in ({"fte": "global"}, {"fte_gate": "max"}, {"vector_scale": "none"}, {"lse_channels": 17}):
        with pytest.raises(InputError):
            models.create("leftnet", hidden_channels=16, **bad)


def test_vector_message_scaling():
    """Published: Δv = Σ_j (v_j ⊙ β/√3 + ê ⊗ γ)/√H; "sqrt3": (v_j ⊙ β + ê ⊗ γ)/√3."""
    h = 16
    published = base.build("leftnet").representation.layers[0].vscale
    ours = base.build("leftnet", vector_scale="sqrt3").representation.layers[0].vscale
    assert published == pytest.approx((1 / np.sqrt(3 * h), 1 / np.sqrt(h)))
    assert ours == pytest.approx((1 / np.sqrt(3), 1 / np.sqrt(3)))


# ---------------------------------------------------------------------- sizes
def test_presets_match_the_published_sizes():
    rows = {row["preset"]: row for row in models.describe_presets() if row["name"] == "leftnet"}
    assert set(rows) == {"leftnet-qm9", "leftnet-md17", "leftnet-cpu", "leftnet-lite", "leftnet-quickstart"}
    assert abs(rows["leftnet-qm9"]["parameters"] / 8.0e6 - 1.0) < 0.10  # main_qm9.py: ≈ 8.0 M
    # main_md17.py: ≈ 5.05 M including a direct force head (≈ 0.12 M) that this model does not have
    assert abs(rows["leftnet-md17"]["parameters"] / 5.05e6 - 1.0) < 0.10
    assert rows["leftnet-qm9"]["hparams"]["hidden_channels"] == 256 and rows["leftnet-md17"]["hparams"]["cutoff"] == 8.0
    assert rows["leftnet-cpu"]["hparams"]["hidden_channels"] == 64
    # with the released code's frame-free FTE the count is the released one (8,005,442) up to the
    # heads and 119 instead of 95 elements
    released = models.count_parameters(models.create("leftnet", preset="qm9", **RELEASED_FTE))
    assert abs(released - 8_005_442) < 0.01 * 8_005_442


def test_the_quickstart_preset_is_the_model_the_quickstart_trains():
    from localframe import quickstart

    hparams = models.resolve_preset("leftnet-quickstart")[1]
    assert hparams.items() >= quickstart.HPARAMS.items() and hparams["cutoff"] == 5.0
    built = models.create("leftnet", cutoff=5.0, **quickstart.HPARAMS)
    assert models.count_parameters(built) == models.count_parameters(models.create("leftnet", preset="quickstart"))


def test_todays_variant_keeps_its_size():
    assert models.count_parameters(models.create("leftnet", **TODAY)) == 1_130_794
    assert models.count_parameters(models.create("leftnet", preset="lite")) == 1_130_794  # the same, as a preset
    assert models.resolve_preset("leftnet-lite")[1].items() >= TODAY.items()


# ---------------------------------------------------------------------- physics in the other settings
VARIANTS = {"SE(3)": {"symmetry": "SE(3)"}, "today": TODAY, "released FTE": {**RELEASED_FTE, "vector_scale": "sqrt3"}}


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request):
    kwargs = dict(VARIANTS[request.param])
    if "filter_hidden" in kwargs:  # today's widths at H = 16: filter hidden H, LSE H/4 channels
        kwargs.update(filter_hidden=base.SMALL["hidden_channels"], lse_channels=base.SMALL["hidden_channels"] // 4)
    return base.build("leftnet", **kwargs)


def test_symmetries_and_cutoff(model):
    base.test_rotation_translation_permutation(model)
    base.test_mirror(model)
    base.test_continuous_at_cutoff(model)


def test_finite_on_symmetric_structures(model):
    base.test_finite_on_symmetric_structures_including_training_gradients(model)


@pytest.mark.parametrize("label,stdev", [("ethanol", 0.05), ("near-linear CO2", 1e-3), ("near-Td CH4", 1e-3)])
def test_forces_match_finite_differences(model, label, stdev):
    base.test_forces_match_finite_differences(model, label, stdev)


def test_periodic_and_stress(model):
    base.test_periodic_supercell_and_wrapping(model)
    for crystal in (conftest.silicon(), conftest.triclinic()):
        test_physics.test_stress_is_strain_derivative(model, crystal)


# ---------------------------------------------------------------------- the faster forward is the same function
def reference_forward(body, numbers, edge_index, vectors):
    """LEFTNet's forward as written before its speed-up (u ⊙ filter as a separate product, φ not flushed,
    g by :func:`columnwise`, an out-of-place addcmul, the whole LSE in one chunk): the equations of the
    module docstring, step by step."""
    from localframe.nn.mlp import columnwise
    from localframe.nn.frames import edge_frame, safe_norm, scalarize, tensorize
    from localframe.nn.scatter import gather, scatter_sum

    i, j = edge_index
    n = numbers.shape[0]
    d = torch.linalg.vector_norm(vectors, dim=-1)
    unit = vectors / d.unsqueeze(-1)
    u = body.envelope(d)
    m, node_fr = body.frames(vectors, u, edge_index, n)
    edge_fr = edge_frame(vectors, m, edge_index)
    phi = body.radial(d)
    hij = u.unsqueeze(-1) * body.radial_mlp(phi)
    s = body.embedding(numbers) + scatter_sum(hij * gather(body.neighbour_embedding(numbers), j), i, n)
    w = hij * gather(torch.nn.functional.silu(body.lse.input(s)), j)
    if body.lse.mix is not None:
        w = body.lse.mix(w)
    S = scatter_sum(unit.unsqueeze(-1) * w.unsqueeze(1), i, n)
    P = scalarize(torch.cat([gather(S, j), gather(S, i)], dim=-1), edge_fr, body.chiral)
    A = torch.cat([columnwise(body.lse.g, P).squeeze(-2) + P[:, 0, :], hij, phi], dim=-1)
    shared = u.unsqueeze(-1) * body.shared_mlp_a(A) if body.shared_mlp_a is not None else None
    v = None
    for layer in body.layers:
        h = layer.hidden
        if layer.mlp_a is None:
            filt = layer.filter(phi) * shared
        else:
            filt = (u.unsqueeze(-1) * layer.filter(phi)) * layer.mlp_a(A)
        alpha, beta, gamma = (gather(layer.node(s), j) * filt).split(h, dim=-1)
        s = s + scatter_sum(alpha, i, n)
        dv = (unit * layer.vscale[1]).unsqueeze(-1) * gamma.unsqueeze(1)
        if v is not None:
            dv = torch.addcmul(dv, gather(v * layer.vscale[0], j), beta.unsqueeze(1))
        v = scatter_sum(dv, i, n) if v is None else v + scatter_sum(dv, i, n)
        U, V = layer.uv(v).split(h, dim=-1)
        norm = safe_norm(U, dim=1)
        if layer.fte == "none":
            inputs = [s, norm]
        else:
            c = scalarize(U, node_fr, layer.chiral)
            inputs = [s, norm, c.flatten(1)] if layer.fte == "coefficients" else [
                s, norm + columnwise(layer.fte_g, c).squeeze(-2)]
        out = layer.update(torch.cat(inputs, dim=-1))
        a1, a2, a3 = out[:, : 3 * h].split(h, dim=-1)
        q = (U * V).sum(dim=1) / np.sqrt(h)
        s = s + ((a1 + a2 + q) if layer.fte_gate == "sum" else (a1 + a2 * q)) / np.sqrt(2.0)
        v = v + a3.unsqueeze(1) * V
        if layer.axes:
            b = out[:, 3 * h :].view(n, layer.axes, h)
            b = b if layer.chiral else torch.stack([b[:, 0], torch.zeros_like(b[:, 0]), b[:, 1]], dim=1)
            v = v + tensorize(b, node_fr, layer.chiral)
    return s, v


@pytest.mark.parametrize("variant", [{}, {"symmetry": "SE(3)"}, TODAY, {"shared_filter": True}, RELEASED_FTE])
def test_forward_equals_the_reference_forward(variant, monkeypatch):
    """Energies, forces and parameter gradients of the model equal those of the forward of before, to 1e-12
    (float64, fixed random weights with non-zero biases; molecules and a periodic cell; LSE in small chunks)."""
    monkeypatch.setattr(lse, "CHUNK_ELEMENTS", 1)  # several LSE chunks even on these small systems
    model = base.build("leftnet", **{k: (16 if k == "filter_hidden" else 4 if k == "lse_channels" else val)
                                     for k, val in variant.items()})
    structures = [base.rattled(molecule("CH3CH2OH"), 0.05, 1), molecule("C6H6"), conftest.silicon()]
    batch = AtomsBatch.from_atoms(structures, cutoff=model.cutoff, dtype=torch.float64)
    body = model.representation

    def energy_and_forces(forward):
        positions = batch.positions.detach().requires_grad_(True)
        vectors = batch.edge_vectors(positions, batch.cell)
        s, v = forward(batch.numbers, batch.edge_index, vectors)
        energy = model.energy_head(s, batch.numbers, batch.batch, batch.n_structures)
        (forces,) = torch.autograd.grad(-energy.sum(), positions, create_graph=True)
        params = [p for p in body.parameters() if p.requires_grad]
        grads = torch.autograd.grad((energy.sum() + forces.pow(2).sum()), params, allow_unused=True)
        return energy.detach(), forces.detach(), v.detach(), [g for g in grads if g is not None]

    new = energy_and_forces(lambda *a: body(*a, batch.batch, batch.n_structures))
    old = energy_and_forces(lambda *a: reference_forward(body, *a))
    for a, b in zip(new[:3], old[:3]):
        assert (a - b).abs().max() <= 1e-12 * max(1.0, b.abs().max())
    assert len(new[3]) == len(old[3])
    for a, b in zip(new[3], old[3]):
        assert (a - b).abs().max() <= 1e-10 * max(1.0, b.abs().max())


def _se3_with_the_weights_of(e3_model):
    """The SE(3) model with the weights of an E(3) one; its extra tensorised axis (e₂) starts at zero."""
    h = e3_model.representation.hidden_channels
    se3 = models.create("leftnet", **{**base.SMALL, "symmetry": "SE(3)"}).double().eval()
    state = dict(e3_model.state_dict())
    for key, value in state.items():
        if key.startswith("representation.layers.") and ".update.2." in key:  # rows [a₁ a₂ a₃ b₁ b₃] -> [.. b₁ 0 b₃]
            state[key] = torch.cat([value[: 4 * h], value.new_zeros((h,) + value.shape[1:]), value[4 * h :]])
    se3.load_state_dict(state, strict=True)
    return se3


def test_parity_modes_agree_on_a_planar_molecule():
    """In a planar molecule (z = 0) every pair vector, centroid and feature vector lies in the plane, and
    the pseudovector axis e₂ of every frame is normal to it (or 0), so every e₂ coefficient is 0 and
    even(0) = 0: E(3) and SE(3) mode (with the same weights) give the same energy and in-plane forces.
    Out of the plane E(3) mode has the mirror z → −z, so F_z = 0; SE(3) mode has not (its linear response
    to an e₂ coefficient is kept). A non-planar molecule tells the modes apart. (Seed 3 is one whose
    random weights give a large benzene energy, through the products of the layers, not the frames.)"""
    e3 = base.build("leftnet", seed=3)
    se3 = _se3_with_the_weights_of(e3)
    flat, bent = molecule("C6H6"), base.rattled(molecule("CH3CH2OH"), 0.05, 1)
    assert np.abs(flat.positions[:, 2]).max() == 0.0
    a, b = base.run(e3, flat), base.run(se3, flat)
    assert abs(a["energy"][0]) > 100.0
    assert base.rel(b["energy"], a["energy"]) < 1e-12 and base.rel(b["forces"][:, :2], a["forces"][:, :2]) < 1e-12
    assert np.abs(a["forces"][:, 2]).max() == 0.0
    assert base.rel(base.run(se3, bent)["energy"], base.run(e3, bent)["energy"]) > 1e-3
