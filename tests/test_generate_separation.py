"""Separation constraint: the bonded minimum, the violation metric on hand-built molecules, the
projection (no pair left below the minimum, centre of mass kept, fixed atoms held, E(3)) and the penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localframe.generate.metrics import summarize
from localframe.generate.process import centred_noise
from localframe.generate.denoiser import pair_index as pairs
from localframe.generate.separation import bonded_minimum, penalty, project, too_close


def rotation(seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return torch.tensor(q)


def test_bonded_minimum_is_three_quarters_of_the_covalent_radii_sum():
    # Cordero radii: H 0.31, C 0.76, O 0.66 Å
    np.testing.assert_allclose(bonded_minimum(np.array([1, 6, 6, 6]), np.array([1, 1, 6, 8])),
                               [0.75 * 0.62, 0.75 * 1.07, 0.75 * 1.52, 0.75 * 1.42], rtol=1e-12)
    torch.testing.assert_close(bonded_minimum(torch.tensor([6]), torch.tensor([6])), torch.tensor([1.14], dtype=torch.float64))


def test_too_close_counts_hand_built_pairs():
    # C–C at 1.0 Å (< 1.14) violates; C–O at 1.2 Å (> 1.065) does not; the far H none
    numbers = np.array([6, 6, 8, 1])
    positions = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.2, 0], [10, 10, 10]], dtype=float)
    assert too_close(numbers, positions) == (1, 6)
    # methane at 1.09 Å: no violation; an H2 squeezed to 0.40 Å (< 0.465): one of one
    methane = np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * (1.09 / np.sqrt(3))
    assert too_close(np.array([6, 1, 1, 1, 1]), methane) == (0, 10)
    assert too_close(np.array([1, 1]), np.array([[0, 0, 0], [0.4, 0, 0]])) == (1, 1)


def test_summarize_reports_pair_and_molecule_fractions():
    from localframe.generate.metrics import MoleculeScore

    def score(close, n_pairs):
        return MoleculeScore(3, None, None, None, False, False, None, close, n_pairs)

    out = summarize([score(1, 6), score(0, 10), score(2, 4)])
    assert out["pairs_too_close"] == pytest.approx(3 / 20)
    assert out["mol_too_close"] == pytest.approx(2 / 3)


def _cluster(seed, n=12, scale=0.6):
    rng = np.random.default_rng(seed)
    z = torch.tensor(rng.choice([1, 6, 7, 8], n))
    x = torch.tensor(rng.normal(scale=scale, size=(n, 3)))
    return z, x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_leaves_no_pair_below_the_minimum_and_keeps_the_centre_of_mass(seed):
    z, x = _cluster(seed)
    b = torch.zeros(len(z), dtype=torch.long)
    ij = pairs(b)
    d_min = bonded_minimum(z[ij[0]], z[ij[1]])
    assert ((x[ij[1]] - x[ij[0]]).norm(dim=-1) < d_min).sum() > 5  # a dense start
    y = project(x, d_min, ij)
    assert ((y[ij[1]] - y[ij[0]]).norm(dim=-1) >= d_min).all()
    torch.testing.assert_close(y.mean(0), x.mean(0), rtol=0, atol=1e-12)
    assert too_close(z.numpy(), np.round(y.numpy(), 4))[0] == 0  # still apart after an SDF's 4 decimals


def test_projection_holds_fixed_atoms_and_separates_coincident_ones():
    z, x = _cluster(3)
    x[1] = x[0]  # two atoms at one point
    b = torch.zeros(len(z), dtype=torch.long)
    ij = pairs(b)
    d_min = bonded_minimum(z[ij[0]], z[ij[1]])
    mobile = torch.ones(len(z), dtype=torch.bool)
    mobile[:3] = False
    y = project(x, d_min, ij, mobile)
    assert torch.equal(y[:3], x[:3])
    free = mobile[ij[0]] | mobile[ij[1]]
    assert ((y[ij[1]] - y[ij[0]]).norm(dim=-1)[free] >= d_min[free]).all()


def test_projection_is_e3_equivariant_float64():
    z, x = _cluster(4)
    b = torch.zeros(len(z), dtype=torch.long)
    ij = pairs(b)
    d_min = bonded_minimum(z[ij[0]], z[ij[1]])
    R, shift = rotation(5), torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(project(x @ R.T + shift, d_min, ij), project(x, d_min, ij) @ R.T + shift,
                               rtol=1e-9, atol=1e-9)


def test_penalty_known_values():
    z = torch.tensor([6, 6, 1])
    b = torch.zeros(3, dtype=torch.long)
    x = torch.tensor([[0, 0, 0], [1.0, 0, 0], [0, 5.0, 0]], dtype=torch.float64, requires_grad=True)
    scale = torch.ones(1, dtype=torch.float64)
    loss = penalty(x, z, b, scale)
    assert loss.item() == pytest.approx((1.14 - 1.0) ** 2 / 3, rel=1e-9)  # one of three pairs
    loss.backward()
    assert x.grad[0, 0] > 0 and x.grad[1, 0] < 0  # pushes the C atoms apart
    # λ = 0.5 halves both the limit and the scaled distances: a quarter of the clean-space value
    assert penalty(0.5 * x.detach(), z, b, 0.5 * scale).item() == pytest.approx(0.25 * loss.item(), rel=1e-9)
    far = torch.tensor([[0, 0, 0], [3.0, 0, 0], [0, 3.0, 0]], dtype=torch.float64)
    assert penalty(far, z, b, scale).item() == 0.0


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_separation_weight_adds_the_penalty_to_the_loss_and_keeps_it_invariant(name):
    from localframe.generate import train
    from localframe.generate.molecule import Molecule

    cfg = train.load_config(None, ["model.hparams={hidden_channels: 8, num_layers: 1}", f"process={name}",
                                   "train.separation_weight=10.0"])
    torch.manual_seed(0)
    proc = train.build(cfg, (1, 6, 7, 8, 9), (-1, 0, 1)).double()
    assert proc.separation_weight == 10.0
    rng = np.random.default_rng(0)
    mols = [Molecule(rng.choice([1, 6, 8], n), rng.normal(scale=0.5, size=(n, 3))) for n in (5, 7)]
    batch = proc.make_batch(mols, dtype=torch.float64)
    t = torch.tensor([0.6, 0.9], dtype=torch.float64)
    n = len(batch.x)
    gen = torch.Generator().manual_seed(1)
    x0 = centred_noise((n, 3), batch.batch, 2, generator=gen, dtype=torch.float64)
    if name == "edm":
        other = torch.randn(n, proc.n_features, generator=gen, dtype=torch.float64)
        noise = lambda R: (x0 @ R.T, other)  # noqa: E731
    else:
        u, rt, rc = torch.rand(n, 2, generator=gen, dtype=torch.float64), torch.randint(5, (n,), generator=gen), torch.randint(3, (n,), generator=gen)
        noise = lambda R: (x0 @ R.T, u, rt, rc)  # noqa: E731
    eye = torch.eye(3, dtype=torch.float64)
    with_penalty = proc.loss(batch, t, noise(eye))
    proc.separation_weight = 0.0
    without = proc.loss(batch, t, noise(eye))
    assert with_penalty.item() > without.item()  # squeezed random molecules violate the minimum
    proc.separation_weight = 10.0
    R = rotation(7)
    moved = proc.make_batch([Molecule(m.numbers, m.positions @ R.numpy().T + 3.0, m.charges) for m in mols], dtype=torch.float64)
    torch.testing.assert_close(proc.loss(moved, t, noise(R)), with_penalty, rtol=1e-10, atol=1e-12)
