"""The charged N-body task ES(5): simulator physics, equivariance of the dynamics models, the bench suite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from localframe import cli
from localframe.bench import nbody


def systems(n: int, seed: int = 0):
    return nbody.initial_state(n, np.random.default_rng(seed))


# ---------------------------------------------------------------------- simulator
def test_forces_are_pairwise_coulomb_and_conserve_momentum():
    x, _, q = systems(4)
    f = nbody.forces(x, q, clip=False)
    assert np.abs(f.sum(1)).max() < 1e-10  # Newton's third law
    k = 2
    expected = sum(q[0, k] * q[0, j] * (x[0, k] - x[0, j]) / np.linalg.norm(x[0, k] - x[0, j]) ** 3
                   for j in range(5) if j != k)
    assert np.allclose(f[0, k], expected, rtol=1e-12)


def test_like_charges_repel_and_opposite_charges_attract():
    x = np.array([[[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]]])
    v = np.zeros_like(x)
    for q, sign in ((np.array([[1.0, 1.0]]), 1.0), (np.array([[1.0, -1.0]]), -1.0)):
        (xt,), _ = nbody.integrate(x, v, q, {400})
        gap = np.linalg.norm(xt[0, 1] - xt[0, 0])
        assert sign * (gap - 1.0) > 0.05


def test_energy_is_conserved_to_first_order_in_the_time_step():
    x, v, q = systems(16, seed=1)
    e0 = nbody.energy(x, v, q)
    errors = {}
    for dt in (1e-3, 1e-4):
        steps = int(round(0.5 / dt))
        xs, vs = nbody.integrate(x, v, q, set(range(steps // 10, steps + 1, steps // 10)), dt=dt, clip=False)
        e = np.stack([nbody.energy(a, b, q) for a, b in zip(xs, vs)])
        errors[dt] = np.median(np.abs(e - e0).max(0) / (0.5 * (v**2).sum((1, 2)) + 1.0))
    assert errors[1e-4] < 2e-3
    assert errors[1e-3] > 4 * errors[1e-4]  # first-order integrator: the error shrinks with Δt


def test_dataset_maps_frame_30_to_1000_steps_later():
    data = nbody.make_dataset({"train": 6, "val": 2, "test": 2}, seed=3)
    train = data["train"]
    assert set(np.unique(train["q"])) <= {-1.0, 1.0}
    assert train["x"].shape == train["target"].shape == (6, 5, 3)
    (again,), _ = nbody.integrate(train["x"], train["v"], train["q"], {1000})
    assert np.abs(again - train["target"]).max() < 1e-9
    assert all(np.isfinite(list(nbody.reference_mse(data).values())))


# ---------------------------------------------------------------------- models
@pytest.mark.parametrize("name", nbody.MODELS)
def test_dynamics_models_are_equivariant(name):
    torch.manual_seed(0)
    model = nbody.create(name, hidden_channels=16, num_layers=2).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases and a coordinate head that moves things
    x, v, q = (torch.as_tensor(a) for a in systems(3, seed=2))
    edges = nbody.full_graph(3)

    def predict(x, v, q):
        return model(x.reshape(-1, 3), v.reshape(-1, 3), q.reshape(-1), edges).reshape(3, 5, 3).detach()

    base = predict(x, v, q)
    assert (base - x).abs().max() > 1e-3  # the model moves the particles
    rng = np.random.default_rng(4)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = torch.as_tensor(rot * np.sign(np.linalg.det(rot)))
    shift = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    checks = [rot]
    if name != "clofnet":  # the SE(3) model need not follow a mirror image
        checks.append(torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)) @ rot)
    for Q in checks:
        moved = predict(x @ Q.T + shift, v @ Q.T, q)
        assert (moved - (base @ Q.T + shift)).abs().max() < 1e-10
    perm = torch.as_tensor(np.random.default_rng(5).permutation(5))
    assert (predict(x[:, perm], v[:, perm], q[:, perm]) - base[:, perm]).abs().max() < 1e-10


def test_se3_clofnet_dynamics_is_not_mirror_equivariant():
    torch.manual_seed(0)
    model = nbody.create("clofnet", hidden_channels=16, num_layers=2).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, v, q = (torch.as_tensor(a).reshape(-1, *a.shape[2:]) for a in systems(1, seed=6))
    edges = nbody.full_graph(1)
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    a, b = model(x, v, q, edges).detach(), model(x @ M, v @ M, q, edges).detach()
    assert (b - a @ M).abs().max() > 1e-6


def test_parameter_counts_of_the_nbody_models():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(nbody.create("clofnet")) == 160_964  # ClofNet_vel as released (paper: 161 k)
    assert count(nbody.create("egnn")) == 134_020  # EGNN_vel of Satorras et al. at nf 64, 4 layers


# ---------------------------------------------------------------------- bench
def test_quick_nbody_suite(tmp_path, monkeypatch):
    monkeypatch.setitem(nbody.QUICK, "sizes", {"train": 16, "val": 8, "test": 8})
    assert cli.main(["bench", "--suite", "nbody", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "nbody.json").read_text())
    assert {r["model"] for r in result["rows"]} == {"egnn", "clofnet"}
    assert all(np.isfinite(r["test_mse"]) and r["epochs"] == nbody.QUICK["epochs"] for r in result["rows"])
    assert result["environment"]["threads"] == 1 and result["settings"]["quick"]
    text = nbody.markdown(result)
    assert "| egnn |" in text and "| clofnet |" in text
