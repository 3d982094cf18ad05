"""Initialisation choices: Virgo's variances against direct measurements on hand-built graphs."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.nn import init

# a path 0-1-2-3 with a triangle 3-4-5 hanging off it: degrees 1 to 3
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 3)]


def _edge_index():
    pairs = EDGES + [(b, a) for a, b in EDGES]
    return torch.tensor(pairs, dtype=torch.long).T


def _dense(normalize):
    a = np.eye(6)
    for i, j in EDGES:
        a[i, j] = a[j, i] = 1.0
    if normalize:
        d = a.sum(1) ** -0.5
        a = d[:, None] * a * d[None, :]
    return a


@pytest.mark.parametrize("normalize", [False, True])
def test_statistics_match_the_dense_operator(normalize):
    x = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0, 1.0], dtype=torch.float64)
    a, v, expected = _dense(normalize), x.numpy(), []
    for _ in range(4):
        expected.append(float(v @ v))
        v = a @ v
    expected.append(float(v @ v))
    got = init.graph_statistics(x, _edge_index(), 4, normalize=normalize)
    assert np.allclose(got.numpy(), expected, rtol=1e-12)


def test_harmonic_mean_and_variants():
    F = B = [6.0, 24.0, 96.0]  # each step multiplies the squared norm by 4
    fwd = init.virgo_variances(F, B, [8, 16], [16, 16], gain2=2.0, mean="forward")
    bwd = init.virgo_variances(F, B, [8, 16], [16, 16], gain2=2.0, mean="backward")
    both = init.virgo_variances(F, B, [8, 16], [16, 16], gain2=2.0)
    assert fwd == pytest.approx([2 / 8, 2 / 16 / 4])
    assert bwd == pytest.approx([2 / 16 / 4, 2 / 16 / 4])
    assert both == pytest.approx([2 / (1 / f + 1 / b) for f, b in zip(fwd, bwd)])
    with pytest.raises(InputError, match="mean"):
        init.virgo_variances(F, B, [8, 16], [16, 16], mean="geometric")


def _draw(variances, shape, draws, generator):
    """Per layer, ``draws`` weight matrices U(−a, a) with the given variance."""
    return [(torch.rand(draws, *shape, generator=generator, dtype=torch.float64) * 2 - 1) * math.sqrt(3 * v)
            for v in variances]


@pytest.mark.parametrize("normalize", [False, True])
def test_forward_variance_is_kept_through_a_relu_gcn(normalize):
    """h^l = ReLU(Â h^{l−1} W^l) on the rank-one input x̄ 𝟙ᵀ: with Virgo's forward variances every
    layer's output has the per-entry variance of the first layer's (measured over 4000 weight draws)."""
    torch.manual_seed(0)
    x = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0, 1.0], dtype=torch.float64)
    width, depth, draws = 32, 4, 4000
    F = init.graph_statistics(x, _edge_index(), depth, normalize=normalize).tolist()
    if not normalize:  # the sum operator changes the norm a lot: without the factor the variance drifts
        assert max(F) / min(F) > 5
    variances = init.virgo_variances(F, F, [width] * depth, [width] * depth, gain2=2.0, mean="forward")
    a = torch.tensor(_dense(normalize))
    h = x.view(1, -1, 1).expand(draws, -1, width)
    measured = []
    for w in _draw(variances, (width, width), draws, torch.Generator().manual_seed(1)):
        h = torch.relu(torch.einsum("ij,djc->dic", a, h) @ w)
        measured.append(float(h.pow(2).mean()))
    assert np.allclose(np.array(measured) / measured[0], 1.0, atol=0.08), measured
    # unit variance (He, no graph factor) instead drifts by the graph factor
    he = [2.0 / width] * depth
    h = x.view(1, -1, 1).expand(draws, -1, width)
    drift = []
    for w in _draw(he, (width, width), draws, torch.Generator().manual_seed(1)):
        h = torch.relu(torch.einsum("ij,djc->dic", a, h) @ w)
        drift.append(float(h.pow(2).mean()))
    assert drift[-1] / drift[0] == pytest.approx(F[-1] / F[1], rel=0.15)


@pytest.mark.parametrize("normalize", [False, True])
def test_backward_variance_is_kept_for_a_sum_pooled_output(normalize):
    """Linear GCN, output y = gᵀ Σ_i h^L_i: with Virgo's backward variances the gradient of y with
    respect to every layer's output (and the input) has the per-entry variance of ∂y/∂h^L = 𝟙 gᵀ."""
    width, depth, draws = 32, 4, 4000
    ones = torch.ones(6, dtype=torch.float64)
    B = init.graph_statistics(ones, _edge_index(), depth, normalize=normalize).tolist()
    variances = init.virgo_variances(B, B, [width] * depth, [width] * depth, gain2=1.0, mean="backward")
    a = torch.tensor(_dense(normalize))
    gen = torch.Generator().manual_seed(2)
    weights = _draw(variances, (width, width), draws, gen)
    grad = torch.randn(draws, 1, width, generator=gen, dtype=torch.float64).expand(-1, 6, -1)  # 𝟙 gᵀ
    measured = [float(grad.pow(2).mean())]
    for w in reversed(weights):  # ∂y/∂h^{l−1} = Âᵀ (∂y/∂h^l) W^lᵀ
        grad = torch.einsum("ji,djc->dic", a, grad @ w.transpose(1, 2))
        measured.append(float(grad.pow(2).mean()))
    assert np.allclose(np.array(measured) / measured[0], 1.0, atol=0.08), measured


def _waters():
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    b = a.copy()
    b.positions[1] += [0.1, 0.05, 0.0]
    return [AtomsBatch.from_atoms(s, 5.0, dtype=torch.float64) for s in (a, b)]


def test_virgo_on_a_model_sets_the_promised_weight_variances():
    torch.manual_seed(0)
    model = models.create("schnet", hidden_channels=64, num_layers=3, num_radial=16).double()
    rep = model.representation
    factors = init.initialize(rep, "virgo", _waters())
    assert len(factors) == 3 and all(math.isfinite(f) and f > 0 for f in factors)
    # the statistics of the two waters, Â = I + U: three atoms, every pair inside the cutoff
    stats = init.graph_statistics(torch.ones(6, dtype=torch.float64), _waters_union_edges(), 3,
                                  _waters_union_weights()).tolist()
    terms = init.graph_factors(stats, stats)
    for (f, b), (layer,) in zip(terms, rep.message_layers()):
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        for linear in linears:
            promised = init.combine(f ** (1 / len(linears)) / linear.in_features,
                                    b ** (1 / len(linears)) / linear.out_features)
            assert float(linear.weight.detach().var()) == pytest.approx(promised, rel=0.25)
            assert linear.bias is None or float(linear.bias.detach().abs().max()) == 0.0


def _waters_union():
    return AtomsBatch.collate(_waters())


def _waters_union_edges():
    return _waters_union().edge_index


def _waters_union_weights():
    from localframe.nn.cutoff import PolynomialCutoff

    b = _waters_union()
    d = torch.linalg.vector_norm(b.edge_vectors(b.positions, b.cell), dim=-1)
    return PolynomialCutoff(5.0)(d)


def test_choices_and_errors():
    model = models.create("painn", hidden_channels=16, num_layers=2, num_radial=8)
    rep = model.representation
    init.initialize(rep, "unit")
    lin = rep.messages[0].scalar_net[0]
    assert float(lin.bias.detach().abs().max()) == 0.0
    init.initialize(rep, "pytorch")
    assert float(lin.weight.detach().abs().max()) <= 1 / math.sqrt(lin.in_features) + 1e-7
    assert float(lin.bias.detach().abs().max()) > 0
    with pytest.raises(InputError, match="model.init"):
        init.initialize(rep, "xavier")
    with pytest.raises(InputError, match="sample"):
        init.initialize(rep, "virgo")


def test_config_choice_reaches_the_model_file(tmp_path):
    import localframe
    from localframe.train import config as configuration
    from localframe.train.run import train

    from conftest import write_emt_frames

    data = write_emt_frames(tmp_path / "water.extxyz", "H2O", 24, 0.05)
    raw = {"data": {"source": data, "n_train": 16, "n_val": 4},
           "model": {"name": "schnet", "cutoff": 4.0, "init": "virgo", "hparams": {"hidden_channels": 16, "num_layers": 2}},
           "train": {"batch_size": 8, "max_epochs": 1, "threads": 1}, "run_dir": str(tmp_path / "run")}
    train(configuration.validate(raw), progress=False)
    meta = localframe.load_model(tmp_path / "run" / "model.pt").metadata
    assert meta["init"]["choice"] == "virgo" and len(meta["init"]["virgo_factors"]) == 2
    with pytest.raises(InputError, match="model.init must be one of"):
        configuration.validate({**raw, "model": {**raw["model"], "init": "xavier"}})
    with pytest.raises(InputError, match="no such model file"):
        configuration.validate({**raw, "model": {**raw["model"], "init": str(tmp_path / "missing.pt")}})
