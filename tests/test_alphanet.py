"""AlphaNet's own parts (float64): the complex edge kernel against the published formula, the smooth
phase readout n(κ), the rotation of the message input only, and the published parameter count.

The physics (symmetries, parity, cutoff, NaN safety, forces, PBC, stress) is checked with every other
model in tests/test_physics.py and tests/test_localframe_models.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from localframe import models
from localframe.models import alphanet

#: Trainable parameters of the released AlphaNet code (zmyybc/AlphaNet 6f593b8) at pretrained/MPtrj/mp.json
#: (4 layers, H = 176, r_c = 5, 8 Bessel, dropout off; chi1 = 24, chi2 = 6, heads = 16, hidden_chi = 96).
PUBLISHED_MP_PARAMETERS = 4_836_615


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values for every parameter (non-zero biases, non-trivial LayerNorm affines)."""
    g = generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(max(p.shape[-1], 1)) + 0.1)
    return module


def test_defaults_are_the_published_complex_sizes():
    body = models.create("alphanet").representation
    kernel = body.layers[0].kernel
    assert body.chi1 == 24 and kernel.chi2 == 6
    assert tuple(kernel.kernel.shape) == (2, 17, 6, 6)  # (re, im) × (16 heads + row of ones) × 96/16 × χ₂
    assert body.layers[-1].theta is None and all(layer.theta is not None for layer in body.layers[:-1])


def test_complex_edge_kernel_matches_the_published_formula():
    """The folded, rank-2 computation equals conv = [1; Φ]·K / √(H/M), D = W^D(α ⊗ δ + 1) + c^D,
    κ = Σ_k conv_k D_k, κ′ = W_κ Re κ + b + i (W_κ Im κ + b), written here with complex tensors."""
    torch.set_default_dtype(torch.float64)
    try:
        hidden, chi1, chi2, heads, hidden_chi = 32, 12, 5, 4, 20
        k = randomize(alphanet.ComplexEdgeKernel(hidden, chi1, chi2, heads, hidden_chi), 0)
        x = torch.randn(7, hidden, generator=generator(1))
        filt = torch.randn(7, 3 * hidden, generator=generator(2))
        ours = k(x, filt)
        re, im = k.phi(x).chunk(2, dim=-1)
        phi = torch.complex(re, im).view(7, heads, hidden_chi // heads)
        phi = torch.cat([torch.ones(7, 1, hidden_chi // heads, dtype=phi.dtype), phi], dim=1)
        K = torch.complex(k.kernel[0], k.kernel[1])
        conv = torch.einsum("ehl,hlk->ek", phi, K) / math.sqrt(hidden / heads)
        alpha = torch.nn.functional.silu(k.diagonal(filt))
        D = k.dia(alpha.unsqueeze(-1) * k.delta + 1.0)  # (E, χ₂, χ₁)
        kappa = torch.einsum("ek,ekl->el", conv, D.to(conv.dtype))
        published = torch.stack([k.out(kappa.real), k.out(kappa.imag)], dim=-1)
        assert torch.allclose(ours, published, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_phase_readout_is_unit_modulus_and_smooth_through_zero():
    eps = alphanet.PHASE_EPS
    big = 10 * torch.randn(1000, 2, generator=generator(3), dtype=torch.float64)
    big = big[big.norm(dim=-1) > 20 * eps]
    modulus = alphanet.unit_complex(big).norm(dim=-1)
    assert (modulus < 1).all() and (1 - modulus).max() < (eps / (20 * eps)) ** 2  # 1 − |n| ≈ ε²/2|κ|²
    direction = big[0] / big[0].norm()
    assert torch.allclose(alphanet.unit_complex(big[:1]), direction.unsqueeze(0), atol=2e-3)  # carries the phase
    # κ along a line through 0, where angle(κ) is undefined
    t = (torch.arange(-1000, 1001, dtype=torch.float64) / 1000).requires_grad_(True)
    path = torch.stack([-t, 0.3 * t], dim=-1)
    n = alphanet.unit_complex(path)
    (grad,) = torch.autograd.grad(n.sum(), t, create_graph=True)
    (curv,) = torch.autograd.grad(grad.sum(), t)
    assert torch.isfinite(grad).all() and torch.isfinite(curv).all()
    assert grad.abs().max() <= 2.0 / eps * path.detach()[0].norm()  # Lipschitz: |dn/dκ| ≤ 1/ε
    assert (n[1:] - n[:-1]).norm(dim=-1).max() < 0.02  # continuous, no jump at κ = 0
    assert n[1000].abs().max() == 0.0  # n(0) = 0
    # κ across the negative real axis, the branch cut of angle(κ)
    cross = torch.stack([-0.5 * torch.ones(2001, dtype=torch.float64), t.detach()], dim=-1)
    n = alphanet.unit_complex(cross)
    assert (n[1:] - n[:-1]).norm(dim=-1).max() < 0.01
    angle = torch.atan2(cross[:, 1], cross[:, 0])
    assert (angle[1:] - angle[:-1]).abs().max() > 6.0  # angle(κ) jumps by 2π there


def layer_inputs(hidden: int, num_radial: int, chi1: int, seed: int):
    g = generator(seed)
    n = 5
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    edge_index = torch.stack([i[keep], j[keep]])
    vectors = torch.randn(edge_index.shape[1], 3, generator=g, dtype=torch.float64)
    d = vectors.norm(dim=-1)
    return dict(
        s=torch.randn(n, hidden, generator=g, dtype=torch.float64),
        v=torch.randn(n, 3, hidden, generator=g, dtype=torch.float64),
        q=alphanet.unit_complex(torch.randn(n, chi1, 2, generator=g, dtype=torch.float64)),
        rho=alphanet.unit_complex(torch.randn(n, hidden // 2, 2, generator=g, dtype=torch.float64)),
        A=torch.randn(edge_index.shape[1], 3 * hidden + num_radial, generator=g, dtype=torch.float64),
        phi=torch.randn(edge_index.shape[1], num_radial, generator=g, dtype=torch.float64),
        unit=vectors / d.unsqueeze(-1), u=torch.rand(edge_index.shape[1], generator=g, dtype=torch.float64),
        edge_index=edge_index,
    )


def test_phase_rotates_the_message_input_only():
    """With the message output Δs and the FTE update switched off, a layer must return the residual
    stream s unchanged for any phase ρ (the published model rotates only what MLP_x reads); rotating
    s itself would return ρ ⊙ s. With them on, ρ does change the output through the messages."""
    hidden, num_radial, chi1 = 16, 6, 4
    layer = randomize(alphanet.AlphaLayer(hidden, num_radial, chi1, 3, 2, 8, last=False), 4).double()
    inputs = layer_inputs(hidden, num_radial, chi1, 5)
    no_phase = {**inputs, "rho": None}
    assert not torch.allclose(layer(**inputs)[0], layer(**no_phase)[0])  # the message sees ρ
    with torch.no_grad():
        layer.norm_out.weight[2 * chi1:] = 0.0  # Δs = 0
        layer.norm_out.bias[2 * chi1:] = 0.0
        layer.update[-1].weight.zero_()  # FTE: a₁ = a₂ = a₃ = 0
        layer.update[-1].bias.zero_()
        layer.uv.weight.zero_()  # and ⟨U, V⟩ = 0
    s, v, q, rho = layer(**inputs)
    assert torch.equal(s, inputs["s"])
    assert not torch.allclose(alphanet.rotate(inputs["s"], inputs["rho"]), inputs["s"])  # ρ ⊙ s would differ
    assert rho is not None and torch.allclose(rho.norm(dim=-1), torch.ones_like(rho[..., 0]))  # next phase, unit
    assert (q.norm(dim=-1) <= 1).all()


@pytest.mark.parametrize("preset", ["mp", "cpu"])
def test_presets(preset):
    rows = {row["preset"]: row for row in models.describe_presets() if row["name"] == "alphanet"}
    row = rows[f"alphanet-{preset}"]
    if preset == "mp":
        assert row["hparams"]["hidden_channels"] == 176 and row["hparams"]["num_radial"] == 8
        assert abs(row["parameters"] / PUBLISHED_MP_PARAMETERS - 1) < 0.10, row["parameters"]
    else:
        assert row["parameters"] < models.count_parameters(models.create("alphanet"))


def small_alphanet(**kwargs) -> models.AtomisticModel:
    torch.manual_seed(0)
    model = models.create("alphanet", hidden_channels=16, num_layers=2, num_radial=8, chi1=4, heads=2,
                          hidden_chi=8, **kwargs)
    return randomize(model, 6).double().eval()


def ethanol_batch(rotation: torch.Tensor | None = None):
    from ase.build import molecule

    from localframe.data.batch import AtomsBatch

    atoms = molecule("CH3CH2OH")
    atoms.positions += torch.randn(len(atoms), 3, generator=generator(8), dtype=torch.float64).numpy() * 0.05
    if rotation is not None:
        atoms.positions = atoms.positions @ rotation.numpy().T
    return AtomsBatch.from_atoms(atoms, cutoff=5.0, dtype=torch.float64)


def test_published_readout_is_linear_in_s_and_the_complex_state_with_a_per_element_affine():
    """E = Σ_i a_{z_i} (wᵀ s_i + uᵀ [Re q_i, Im q_i]/χ₁ + c) + b_{z_i}, a_z = scale · α_z,
    b_z = shift + E0[z] + β_z, checked by hand on the representation's outputs; α and β are trained."""
    model = small_alphanet()
    head, body = model.energy_head, model.representation
    assert isinstance(head.net, torch.nn.Linear) and head.net.in_features == 16 + 2 * 4
    assert body.state_out is None and head.element_scale.requires_grad and head.element_shift.requires_grad
    with torch.no_grad():
        head.scale.fill_(0.7)
        head.shift.fill_(-0.3)
        head.atom_ref.copy_(torch.randn(head.atom_ref.shape, generator=generator(9), dtype=torch.float64))
    batch = ethanol_batch()
    x, _ = body(batch.numbers, batch.edge_index, batch.edge_vectors(batch.positions, batch.cell), batch.batch, 1)
    s, q = x[:, :16], x[:, 16:].view(-1, 2, 4)  # [s | Re q / χ₁ | Im q / χ₁]
    assert torch.all(torch.linalg.vector_norm(q, dim=1) <= 1 / 4 + 1e-12)  # unit complex states / χ₁
    assert torch.all(torch.linalg.vector_norm(q, dim=1) > 0.2 / 4)  # and not zero
    w, c = head.net.weight[0], head.net.bias[0]
    z = batch.numbers
    e = s @ w[:16] + q.flatten(1) @ w[16:] + c
    expected = (0.7 * head.element_scale[z] * e + (-0.3 + head.atom_ref[z] + head.element_shift[z])).sum()
    energy = model(batch, forces=False)["energy"]
    assert torch.allclose(energy[0], expected, rtol=1e-12, atol=1e-12)
    energy.sum().backward()
    assert head.element_scale.grad[z].abs().min() > 0 and head.element_shift.grad[1] == (z == 1).sum()


def test_mlp_readout_option_is_the_model_of_before():
    """readout="mlp": x = s + W_q [Re q, Im q]/χ₁ to the shared MLP head, the 2,881,570 parameters of before."""
    model = models.create("alphanet", readout="mlp")
    assert models.count_parameters(model) == 2_881_570
    assert isinstance(model.energy_head.net, torch.nn.Sequential) and model.energy_head.element_scale is None
    small = small_alphanet(readout="mlp")
    R = torch.linalg.qr(torch.randn(3, 3, generator=generator(10), dtype=torch.float64))[0]
    a, b = small(ethanol_batch()), small(ethanol_batch(R))
    assert torch.allclose(a["energy"], b["energy"], rtol=1e-10) and torch.allclose(b["forces"], a["forces"] @ R.T, atol=1e-10)
    with pytest.raises(Exception, match="readout"):
        models.create("alphanet", readout="linear")


def test_published_readout_feeds_every_head():
    """The dipole head reads H-wide vectors and (H + 2χ₁)-wide scalars; scalar targets read linearly."""
    model = models.create("alphanet", hidden_channels=16, num_layers=2, num_radial=8, chi1=4, heads=2, hidden_chi=8,
                          dipole=True, targets={"gap": "mean"}).double().eval()
    assert model.dipole_head.vector_weights.in_features == 16
    assert isinstance(model.target_heads["gap"].net, torch.nn.Linear)
    out = model(ethanol_batch())
    assert out["dipole"].shape == (1, 3) and out["gap"].shape == (1,)
