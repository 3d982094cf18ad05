"""The reverse step each process writes once: ``Process.sample`` equals the ancestral (EDM) and Euler
(flow matching) updates written out in full, and the guided sampler without a fragment or constraint
equals ``Process.sample``, bit for bit (same seeds, tiny untrained models, with bonds and a condition)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localframe.generate.denoiser import Denoiser, pair_index
from localframe.generate.edm import EDM
from localframe.generate.flow import T_MAX, FlowMatching
from localframe.generate.inpaint import guided_sample
from localframe.generate.process import BOND_ORDERS, centred_noise, remove_mean, size_batch
from localframe.generate.schedule import alpha_sigma

ELEMENTS, CHARGES = (1, 6, 7, 8, 9), (-1, 0, 1)
SIZES, STEPS, PROPERTIES = [3, 5, 7], 5, [[72.0], [78.0], [75.0]]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, restored after


class _TameEDM(EDM):
    """Adds to the untrained ε̂ the exact ε of positions ~ N(0, 1.5² I), features ~ N(0, 0.3² I), so that
    EDM's first steps (÷ α_{t|s}) stay finite."""

    def predict(self, x, h, t, batch, condition=None):
        a, s = (v[batch].unsqueeze(-1) for v in alpha_sigma(t))
        eps_x, eps_h = super().predict(x, h, t, batch, condition)
        return (s * x / (a * a * 2.25 + s * s) + 1e-3 * eps_x, s * h / (a * a * 0.09 + s * s) + 1e-3 * eps_h)


def process(cls, dtype, bonds=False, conditioned=False):
    torch.manual_seed(0)
    n = len(ELEMENTS) + len(CHARGES)
    net = Denoiser(n, n, "egnn", {"hidden_channels": 16, "num_layers": 2},
                   bond_classes=len(BOND_ORDERS) if bonds else 0, conditions=int(conditioned))
    proc = cls(net, ELEMENTS, CHARGES, bonds=bonds, conditions=("alpha",) if conditioned else ()).to(dtype)
    if conditioned:
        proc.set_condition_stats(np.array([[70.0], [80.0], [75.0]]))
    return proc


def edm_written_out(p, generator, dtype, condition):
    """z_s = z_t/α_{t|s} − σ²_{t|s}/(α_{t|s} σ_t) ε̂ + σ_{t|s} σ_s/σ_t ε', then (z_0 − σ_0 ε̂)/α_0."""
    b, n = size_batch(SIZES)
    x = centred_noise((len(b), 3), b, n, generator, dtype)
    h = torch.randn((len(b), p.n_features), generator=generator, dtype=dtype)
    c = p.normalise(condition, dtype) if p.conditions else None
    grid = torch.linspace(1.0, 0.0, STEPS + 1, dtype=dtype)
    for t, s in zip(grid[:-1], grid[1:]):
        eps_x, eps_h = p.predict(x, h, t.expand(n), b, c)
        (a_t, sig_t), (a_s, sig_s) = alpha_sigma(t), alpha_sigma(s)
        a_ts = a_t / a_s
        var_ts = sig_t**2 - a_ts**2 * sig_s**2
        x = x / a_ts - var_ts / (a_ts * sig_t) * eps_x
        h = h / a_ts - var_ts / (a_ts * sig_t) * eps_h
        std = var_ts.clamp(min=0).sqrt() * sig_s / sig_t
        x = remove_mean(x, b, n) + std * centred_noise(x.shape, b, n, generator, dtype)
        h = h + std * torch.randn(h.shape, generator=generator, dtype=dtype)
    a0, s0 = alpha_sigma(torch.zeros((), dtype=dtype))
    eps_x, eps_h = p.predict(x, h, torch.zeros(n, dtype=dtype), b, c)
    x = remove_mean((x - s0 * eps_x) / a0, b, n)
    h = (h - s0 * eps_h) / a0
    k = len(p.elements)
    return p.to_molecules(x, h[:, :k].argmax(-1), h[:, k:].argmax(-1), b)


def flow_written_out(p, generator, dtype, condition):
    """x ← x + Δt (x̂_1 − x)/(1 − t) (x̂_1 at the last step), categories redrawn w.p. min(1, Δt/(1 − t))."""
    b, n = size_batch(SIZES)
    x = centred_noise((len(b), 3), b, n, generator, dtype)
    types = torch.randint(len(p.elements), (len(b),), generator=generator)
    charges = torch.randint(len(p.charges), (len(b),), generator=generator)
    bonds = p._prior_draw(pair_index(b).shape[1], generator) if p.bonds else None
    c = p.normalise(condition, dtype) if p.conditions else None
    grid = torch.linspace(0.0, 1.0, STEPS + 1, dtype=dtype)
    for t, t_next in zip(grid[:-1], grid[1:]):
        dt = t_next - t
        x_hat, type_logits, charge_logits, bond_logits = p.predict(x, types, charges, t.expand(n), b, bonds, c)
        last = bool(t_next >= T_MAX)
        x = remove_mean(x + dt * (x_hat - x) / (1 - t), b, n) if not last else remove_mean(x_hat, b, n)
        jump = 1.0 if last else float(min(1.0, dt / (1 - t)))
        types = p._jump(types, type_logits, jump, generator)
        charges = p._jump(charges, charge_logits, jump, generator)
        if p.bonds:
            bonds = p._jump(bonds, bond_logits, jump, generator)
    return p.to_molecules(x, types, charges, b, bonds)


def assert_same(mols, other):
    assert len(mols) == len(other) == len(SIZES)
    for m, o in zip(mols, other):
        assert np.isfinite(m.positions).all()
        assert torch.equal(torch.as_tensor(m.positions), torch.as_tensor(o.positions))
        assert torch.equal(torch.as_tensor(m.numbers), torch.as_tensor(o.numbers))
        assert torch.equal(torch.as_tensor(m.charges), torch.as_tensor(o.charges))
        assert (m.bonds is None) == (o.bonds is None)
        if m.bonds is not None:
            assert torch.equal(torch.as_tensor(m.bonds), torch.as_tensor(o.bonds))


CASES = [(_TameEDM, edm_written_out, False, False), (_TameEDM, edm_written_out, False, True),
         (FlowMatching, flow_written_out, False, False), (FlowMatching, flow_written_out, True, True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls,written_out,bonds,conditioned", CASES)
def test_sample_and_guided_sample_run_the_same_step_bitwise(cls, written_out, bonds, conditioned, dtype):
    proc = process(cls, dtype, bonds, conditioned)
    condition = PROPERTIES if conditioned else None
    plain = proc.sample(SIZES, STEPS, torch.Generator().manual_seed(3), dtype=dtype, condition=condition)
    reference = written_out(proc, torch.Generator().manual_seed(3), dtype, condition)
    guided = guided_sample(proc, SIZES, STEPS, torch.Generator().manual_seed(3), dtype=dtype, condition=condition)
    assert_same(plain, reference)
    assert_same(guided, plain)
    if bonds:
        assert all(m.bonds is not None for m in plain)

