"""Property conditioning: an invariant denoiser input, sampling pairs, SDF items, the EDM-protocol MAEs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localframe.generate.denoiser import Denoiser
from localframe.generate.flow import FlowMatching
from localframe.generate.molecule import Molecule, read_sdf, write_sdf

ELEMENTS, CHARGES = (1, 6, 7, 8, 9), (-1, 0, 1)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, restored after


def improper_rotation(seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return torch.tensor(q * -np.sign(np.linalg.det(q)))


@pytest.mark.parametrize("model", ["egnn", "painn"])
def test_condition_input_keeps_the_denoiser_symmetries_float64(model):
    torch.manual_seed(0)
    n = len(ELEMENTS) + len(CHARGES)
    net = Denoiser(n, n, model, {"hidden_channels": 16, "num_layers": 2}, conditions=1).double()
    g = torch.Generator().manual_seed(0)
    batch = torch.tensor([0] * 4 + [1] * 5)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    h = torch.randn(9, n, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    c = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    dx, out = net(x, h, t, batch, condition=c)
    R, shift = improper_rotation(), torch.tensor([0.3, 2.0, -1.0], dtype=torch.float64)
    dx2, out2 = net(x @ R.T + shift, h, t, batch, condition=c)
    torch.testing.assert_close(dx2, dx @ R.T, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out2, out, rtol=1e-9, atol=1e-10)
    _, other = net(x, h, t, batch, condition=c + 1.0)
    assert (other - out).abs().max() > 1e-6  # the condition is used


def test_condition_is_normalised_with_the_training_statistics():
    proc = FlowMatching(None, ELEMENTS, CHARGES, conditions=("alpha",))
    proc.set_condition_stats(np.array([[60.0], [80.0]]))
    np.testing.assert_allclose(proc.normalise([[70.0], [90.0]], torch.float64).numpy(), [[0.0], [2.0]])


def test_sizes_and_conditions_follow_the_training_pairs():
    from localframe.generate.sample import sizes_and_conditions

    proc = FlowMatching(None, ELEMENTS, CHARGES, conditions=("alpha",))
    pairs = np.array([[5, 20.0]] * 50 + [[20, 90.0]] * 50)
    proc.set_condition_stats(pairs[:, 1:])
    proc.condition_pairs = pairs
    rng = np.random.default_rng(0)
    sizes, values = sizes_and_conditions(proc, np.bincount(pairs[:, 0].astype(int)), 200, rng)
    assert set(zip(sizes.tolist(), values[:, 0].tolist())) == {(5, 20.0), (20, 90.0)}  # joint, never mixed
    sizes, values = sizes_and_conditions(proc, None, 30, rng, {"alpha": 88.0})
    assert set(sizes.tolist()) == {20} and (values == 88.0).all()
    with pytest.raises(Exception, match="exactly alpha"):
        sizes_and_conditions(proc, None, 3, rng, {"gap": 1.0})


def test_sdf_keeps_the_requested_property(tmp_path):
    mol = Molecule([6, 1], [[0, 0, 0], [1.09, 0, 0]], bonds=[[0, 1, 1]], info={"name": "m", "properties": {"alpha": 70.25}})
    write_sdf(tmp_path / "m.sdf", [mol])
    back = read_sdf(tmp_path / "m.sdf")[0]
    assert back.info["properties"] == {"alpha": 70.25} and back.bonds.tolist() == [[0, 1, 1]]


def test_atom_count_baseline_on_a_hand_built_case():
    from localframe.generate.condition import atom_count_mae

    # ĉ(2) = (1 + 3) / 2 = 2, ĉ(3) = 10, ĉ(4) = overall mean 14/3 (no molecule with 4 atoms)
    # errors |2 − 1| = 1, |10 − 12| = 2, |14/3 − 5| = 1/3
    assert atom_count_mae([2, 2, 3], [1.0, 3.0, 10.0], [2, 3, 4], [1.0, 12.0, 5.0]) == pytest.approx((1 + 2 + 1 / 3) / 3)


def test_random_baseline_is_the_mae_against_shuffled_properties():
    from localframe.generate.condition import mae, shuffled_mae

    # two molecules, φ = c = (0, 1): the identity permutation gives 0, the swap gives 1, each with probability 1/2
    values = [shuffled_mae([0.0, 1.0], [0.0, 1.0], np.random.default_rng(seed)) for seed in range(2000)]
    assert set(values) == {0.0, 1.0}
    assert np.mean(values) == pytest.approx(0.5, abs=0.04)
    assert mae([1.0, 2.0], [2.0, 0.0]) == pytest.approx(1.5)


def test_regressor_prediction_is_invariant_and_checks_the_target():
    from localframe import models
    from localframe.generate.condition import predict

    torch.manual_seed(0)
    regressor = models.create("schnet", targets={"alpha": "sum"}, cutoff=5.0).double().eval()
    rng = np.random.default_rng(0)
    mols = [Molecule([6, 1, 1, 1, 1], rng.normal(size=(5, 3))), Molecule([8, 1, 1], rng.normal(size=(3, 3)))]
    R = improper_rotation(1).numpy()
    moved = [Molecule(m.numbers, m.positions @ R.T + 1.5) for m in mols]
    np.testing.assert_allclose(predict(regressor, moved, "alpha"), predict(regressor, mols, "alpha"), rtol=1e-9)
    with pytest.raises(Exception, match="not 'gap'"):
        predict(regressor, mols, "gap")
    overlapping = Molecule([6, 1], [[0, 0, 0], [0.05, 0, 0]])  # refused by the input check: NaN, not an error
    values = predict(regressor, [mols[0], overlapping, mols[1]], "alpha")
    assert np.isnan(values[1]) and np.allclose(values[[0, 2]], predict(regressor, mols, "alpha"), rtol=1e-12)
