"""Noise processes and denoisers: schedule values, E(3) symmetry in float64, zero centre of mass, toy recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from localframe.generate.denoiser import Denoiser
from localframe.generate.edm import EDM
from localframe.generate.flow import FlowMatching
from localframe.generate.molecule import Molecule
from localframe.generate.process import centred_noise
from localframe.generate.schedule import PRECISION, alpha2, alpha_sigma

ELEMENTS, CHARGES = (1, 6, 7, 8, 9), (-1, 0, 1)
SMALL = {"egnn": {"hidden_channels": 16, "num_layers": 2}, "painn": {"hidden_channels": 16, "num_layers": 2, "num_radial": 8}}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, restored after


def rotation(seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return torch.tensor(q * np.sign(np.linalg.det(q)) * -1.0)  # an improper rotation (includes a reflection)


def molecules(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in (4, 6):
        out.append(Molecule(rng.choice(ELEMENTS, n), rng.normal(scale=1.2, size=(n, 3)), rng.choice(CHARGES, n)))
    return out


def network(model):
    torch.manual_seed(0)
    return Denoiser(len(ELEMENTS) + len(CHARGES), len(ELEMENTS) + len(CHARGES), model, SMALL[model]).double()


def test_schedule_known_values():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    a2 = alpha2(t)
    assert a2[0].item() == pytest.approx(1 - PRECISION, abs=1e-15)
    assert a2[1].item() == pytest.approx((1 - 2 * PRECISION) * 0.5625 + PRECISION, abs=1e-15)
    assert a2[2].item() == pytest.approx(PRECISION, abs=1e-15)
    alpha, sigma = alpha_sigma(torch.linspace(0, 1, 11, dtype=torch.float64))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(11, dtype=torch.float64))
    assert (alpha[1:] < alpha[:-1]).all()


@pytest.mark.parametrize("model", ["egnn", "painn"])
def test_denoiser_is_e3_equivariant_float64(model):
    net = network(model)
    proc = EDM(net, ELEMENTS, CHARGES)
    batch = proc.make_batch(molecules(), dtype=torch.float64)
    h = torch.randn(len(batch.x), proc.n_features, dtype=torch.float64)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    dx, out = net(batch.x, h, t, batch.batch)
    R, shift = rotation(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    dx2, out2 = net(batch.x @ R.T + shift, h, t, batch.batch)
    torch.testing.assert_close(dx2, dx @ R.T, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out2, out, rtol=1e-9, atol=1e-10)
    means = torch.zeros(2, 3, dtype=torch.float64).index_add(0, batch.batch, dx)
    assert means.abs().max() < 1e-12  # output in the zero-centre-of-mass subspace
    assert dx.abs().max() > 1e-3  # and not trivially zero


@pytest.mark.parametrize("process", [EDM, FlowMatching])
def test_loss_is_invariant_under_rotation_and_translation_float64(process):
    proc = process(network("painn"), ELEMENTS, CHARGES)
    batch = proc.make_batch(molecules(1), dtype=torch.float64)
    t = torch.tensor([0.25, 0.7], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    n = len(batch.x)
    eps_x = centred_noise((n, 3), batch.batch, 2, generator=gen, dtype=torch.float64)
    if process is EDM:
        other = torch.randn(n, proc.n_features, generator=gen, dtype=torch.float64)
        noise = lambda R: (eps_x @ R.T, other)  # noqa: E731
    else:
        u, rt, rc = torch.rand(n, 2, generator=gen, dtype=torch.float64), torch.randint(5, (n,), generator=gen), torch.randint(3, (n,), generator=gen)
        noise = lambda R: (eps_x @ R.T, u, rt, rc)  # noqa: E731
    eye = torch.eye(3, dtype=torch.float64)
    base = proc.loss(batch, t, noise(eye))
    R = rotation(2)
    moved = proc.make_batch([Molecule(m.numbers, m.positions @ R.numpy().T + [3.0, 1.0, -2.0], m.charges) for m in molecules(1)], dtype=torch.float64)
    torch.testing.assert_close(proc.loss(moved, t, noise(R)), base, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("process", [EDM, FlowMatching])
def test_sampling_keeps_zero_centre_of_mass(process):
    proc = process(network("egnn"), ELEMENTS, CHARGES)
    mols = proc.sample([3, 5, 7], steps=4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert [len(m) for m in mols] == [3, 5, 7]
    for m in mols:
        # relative: a random network makes EDM's few-step updates (÷ α_{t|s}) large
        assert np.abs(m.positions.mean(0)).max() < 1e-12 * max(1.0, np.abs(m.positions).max())
        assert set(m.numbers) <= set(ELEMENTS) and set(m.charges) <= set(CHARGES)


class _OracleEDM(EDM):
    """The exact ε-prediction for positions ~ N(0, s² I) (centred) and features ~ N(0, s_h² I)."""

    s2, sh2 = 0.5**2, 0.3**2

    def predict(self, x, h, t, batch, condition=None):
        alpha, sigma = alpha_sigma(t[:1])
        a, s = alpha.item(), sigma.item()
        return (s * x / (a * a * self.s2 + s * s), s * h / (a * a * self.sh2 + s * s))


class _OracleFlow(FlowMatching):
    """The exact posterior mean of x₁ ~ N(0, s² I) and p(c₁ | c_t) for a fixed categorical π."""

    s2 = 0.5**2
    pi_types = torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05], dtype=torch.float64)
    pi_charges = torch.tensor([0.1, 0.8, 0.1], dtype=torch.float64)

    def predict(self, x, types, charges, t, batch, bonds=None, condition=None):
        tt = t[:1].item()
        x_hat = tt * self.s2 * x / ((1 - tt) ** 2 + tt * tt * self.s2)

        def posterior(pi, state):
            k = len(pi)
            like = tt * torch.nn.functional.one_hot(state, k).double() + (1 - tt) / k
            return (pi * like).log()

        return x_hat, posterior(self.pi_types, types), posterior(self.pi_charges, charges), None


def test_edm_sampler_recovers_a_gaussian_toy_distribution():
    proc = _OracleEDM(None, ELEMENTS, CHARGES)
    gen = torch.Generator().manual_seed(0)
    n_atoms, n_mol = 4, 3000
    from localframe.generate.process import size_batch

    mols = proc.sample([n_atoms] * n_mol, steps=500, generator=gen, dtype=torch.float64)
    x = np.concatenate([m.positions for m in mols])
    # centred Gaussian: per-coordinate variance s² (1 − 1/n); the ancestral sampler with the exact ε
    # is biased low at few steps (0.142 at 20, 0.174 at 100, 0.185 at 500 steps, 0.1875 exact)
    assert x.var() == pytest.approx(proc.s2 * (1 - 1 / n_atoms), rel=0.03)
    assert size_batch([2, 3])[1] == 2


def test_flow_sampler_recovers_a_gaussian_and_categorical_toy_distribution():
    proc = _OracleFlow(None, ELEMENTS, CHARGES)
    gen = torch.Generator().manual_seed(0)
    n_atoms, n_mol = 4, 3000
    mols = proc.sample([n_atoms] * n_mol, steps=200, generator=gen, dtype=torch.float64)
    x = np.concatenate([m.positions for m in mols])
    # Euler with the exact posterior mean is biased low at few steps (0.163 at 20, 0.178 at 50, 0.186 at 200)
    assert x.var() == pytest.approx(proc.s2 * (1 - 1 / n_atoms), rel=0.03)
    z = np.concatenate([m.numbers for m in mols])
    freq = np.array([(z == e).mean() for e in ELEMENTS])
    np.testing.assert_allclose(freq, proc.pi_types.numpy(), atol=0.015)
    q = np.concatenate([m.charges for m in mols])
    np.testing.assert_allclose([(q == c).mean() for c in CHARGES], proc.pi_charges.numpy(), atol=0.015)
    assert math.isfinite(x.sum())
