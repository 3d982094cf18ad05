"""The local substructure encoding shared by LEFTNet and AlphaNet (localframe.nn.lse), in float64.

Each model with the shared block computes what it computed with its own LSE: the earlier forwards are
copied here, as subclasses with the earlier attributes (``lse_in``, ``lse_mix``, ``lse_g``), so their
state_dicts have the earlier key layout; loading such a state_dict (and a model file written with it)
into today's model gives the same energies, forces and parameter gradients to 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch
from ase.build import molecule
from torch import nn

import conftest
import test_localframe_models as base
from localframe import io, models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.models.alphanet import AlphaNet
from localframe.models.leftnet import LEFTNet
from localframe.nn import lse
from localframe.nn.frames import build_frame, edge_frame, neighbour_centroid, scalarize
from localframe.nn.mlp import columnwise, mlp
from localframe.nn.scatter import gather, scatter_sum

CHUNK_ELEMENTS = 2**21  # the earlier leftnet.CHUNK_ELEMENTS


class EarlierLEFTNet(LEFTNet):
    """LEFTNet with the LSE written into the model, as before ``nn/lse.py`` (forward copied unchanged)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.lse
        h = self.hidden_channels
        c = kwargs.get("lse_channels") or h
        self.lse_in = nn.Linear(h, h)
        self.lse_mix = nn.Linear(h, c, bias=False) if c < h else None
        self.lse_g = mlp([3, kwargs.get("lse_hidden") or max(h // 4, 1), 1])

    def substructure(self, S, frame, edge_index):
        i, j = edge_index
        size = max(32, CHUNK_ELEMENTS // (self.lse_g[0].out_features * 2 * S.shape[-1]))
        out = []
        for k in range(0, max(i.shape[0], 1), size):  # one (empty) chunk when there are no edges
            P = scalarize(torch.cat([gather(S, j[k : k + size]), gather(S, i[k : k + size])], dim=-1),
                          frame[k : k + size], self.chiral)  # (e, 3, 2C)
            out.append(self.lse_columns(P) + P[:, 0, :])
        return torch.cat(out) if len(out) > 1 else out[0]

    def lse_columns(self, P):
        first, last = self.lse_g[0], self.lse_g[-1]
        e, a, c = P.shape
        X = torch.cat([P, P.new_ones(e, 1, c)], dim=1).transpose(0, 1).reshape(a + 1, e * c)
        hidden = self.lse_g[1](torch.cat([first.weight, first.bias.unsqueeze(-1)], dim=1) @ X)
        return torch.addmm(last.bias.unsqueeze(-1), last.weight, hidden).view(e, c)

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i, j = edge_index
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        unit = vectors / d.unsqueeze(-1)
        u = self.envelope(d)
        m, node_fr = self.frames(vectors, u, edge_index, n)
        edge_fr = edge_frame(vectors, m, edge_index)
        phi = self.radial(d)
        hij = u.unsqueeze(-1) * self.radial_mlp(phi)
        s = self.embedding(numbers) + scatter_sum(hij * gather(self.neighbour_embedding(numbers), j), i, n)
        w = hij * gather(torch.nn.functional.silu(self.lse_in(s)), j)
        if self.lse_mix is not None:
            w = self.lse_mix(w)
        S = scatter_sum(unit.unsqueeze(-1) * w.unsqueeze(1), i, n)
        A = torch.cat([self.substructure(S, edge_fr, edge_index), hij, phi], dim=-1)
        shared = u.unsqueeze(-1) * self.shared_mlp_a(A) if self.shared_mlp_a is not None else None
        v = None
        for layer in self.layers:
            s, v = layer(s, v, layer.edge_filter(A, phi, u, shared), unit, node_fr, edge_index)
        return s, (v if v is not None else s.new_zeros(n, 3, self.hidden_channels))


class EarlierAlphaNet(AlphaNet):
    """AlphaNet with the LSE written into the model, as before ``nn/lse.py`` (forward copied unchanged)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.lse
        h = self.hidden_channels
        self.lse_in = nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h, elementwise_affine=False), nn.SiLU())
        self.lse_g = mlp([3, int(kwargs.get("lse_hidden", 8)), 1])

    def substructure(self, S, frame, endpoint):
        P = scalarize(gather(S, endpoint), frame, self.chiral)
        return (columnwise(self.lse_g, P).squeeze(-2) + P[:, 0, :]) / math.sqrt(self.hidden_channels)

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i, j = edge_index
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        unit = vectors / d.unsqueeze(-1)
        u = self.envelope(d)
        ue = u.unsqueeze(-1)
        frame = build_frame(vectors, gather(neighbour_centroid(vectors, u, i, n), i))
        phi = self.radial(d)
        hij = ue * self.radial_mlp(phi)
        z = self.embed_norm(self.embedding(numbers))
        s = z + scatter_sum(hij * gather(self.embed_norm(self.neighbour_embedding(numbers)), j), i, n)
        S = scatter_sum(unit.unsqueeze(-1) * (hij * gather(self.lse_in(s), j)).unsqueeze(1), i, n)
        A = torch.cat([ue * self.substructure(S, frame, i), ue * self.substructure(S, frame, j), hij, phi], dim=-1)
        q = (z @ self.state_embedding).unflatten(-1, (2, self.chi1)).transpose(1, 2)
        v, rho = None, None
        for layer in self.layers:
            s, v, q, rho = layer(s, v, q, rho, A, phi, unit, u, edge_index)
        q = q.transpose(1, 2).flatten(1) / self.chi1
        out = torch.cat([s, q], dim=-1) if self.state_out is None else s + self.state_out(q)
        return out, (v if v is not None else s.new_zeros(n, 3, self.hidden_channels))


SMALL_ALPHA = {"chi1": 4, "heads": 2, "hidden_chi": 8}
CASES = {
    "leftnet": (EarlierLEFTNet, {}),
    "leftnet SE(3)": (EarlierLEFTNet, {"symmetry": "SE(3)"}),
    "leftnet narrow LSE": (EarlierLEFTNet, {"shared_filter": True, "filter_hidden": 16, "lse_channels": 4,
                                            "lse_hidden": 8, "fte": "coefficients", "vector_scale": "sqrt3"}),
    "alphanet": (EarlierAlphaNet, SMALL_ALPHA),
    "alphanet SE(3)": (EarlierAlphaNet, {**SMALL_ALPHA, "symmetry": "SE(3)"}),
    "alphanet mlp readout": (EarlierAlphaNet, {**SMALL_ALPHA, "readout": "mlp"}),
}


def earlier_and_today(case: str):
    """An earlier body with random weights (non-zero biases) and today's model loaded from its state_dict."""
    cls, kwargs = CASES[case]
    kwargs = {**base.SMALL, **kwargs}
    earlier = cls(**kwargs).double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in earlier.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(max(p.shape[-1], 1)) + 0.05)
    model = base.build(case.split()[0], **kwargs)
    model.representation.load_state_dict(earlier.state_dict(), strict=True)  # the earlier key layout
    return earlier.eval(), model


def structures():
    return AtomsBatch.from_atoms([base.rattled(molecule("CH3CH2OH"), 0.05, 1), molecule("C6H6"), conftest.silicon()],
                                 cutoff=5.0, dtype=torch.float64)


def energy_forces_gradients(model, body, batch):
    """Energies, forces and ∂(ΣE + Σ|F|²)/∂θ by the body's parameter names (today's names)."""
    positions = batch.positions.detach().requires_grad_(True)
    s, _ = body(batch.numbers, batch.edge_index, batch.edge_vectors(positions, batch.cell), batch.batch,
                batch.n_structures)
    energy = model.energy_head(s, batch.numbers, batch.batch, batch.n_structures)
    (forces,) = torch.autograd.grad(-energy.sum(), positions, create_graph=True)
    names, params = zip(*body.named_parameters())
    grads = torch.autograd.grad(energy.sum() + forces.pow(2).sum(), params, allow_unused=True)
    renamed = {}
    for name, grad in zip(names, grads):
        old = next((o for o in body.legacy_keys if name.startswith(o)), None)
        renamed[name if old is None else body.legacy_keys[old] + name[len(old):]] = grad
    return energy.detach(), forces.detach(), renamed


def close(a, b, tol=1e-12):
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("chunk", [1, lse.CHUNK_ELEMENTS])
@pytest.mark.parametrize("case", list(CASES))
def test_shared_lse_computes_what_each_model_computed(case, chunk, monkeypatch):
    """Energies, forces and every parameter gradient equal the earlier forward's, to 1e-12 (relative to
    max(1, |reference|)); chunk = 1: 32 edges per chunk, several chunks on these systems."""
    monkeypatch.setattr(lse, "CHUNK_ELEMENTS", chunk)
    monkeypatch.setitem(globals(), "CHUNK_ELEMENTS", chunk)
    earlier, model = earlier_and_today(case)
    batch = structures()
    e0, f0, g0 = energy_forces_gradients(model, earlier, batch)
    e1, f1, g1 = energy_forces_gradients(model, model.representation, batch)
    assert close(e1, e0) and close(f1, f0)
    assert set(g1) == set(g0) and sum(g is not None for g in g1.values()) == len(g1)
    for name, grad in g0.items():
        assert close(g1[name], grad), name


@pytest.mark.parametrize("case", ["leftnet narrow LSE", "alphanet"])
def test_model_file_with_the_earlier_key_layout_loads(case, tmp_path):
    """A model file whose weights carry the earlier parameter names (``lse_in.*``, ``lse_g.*``) loads
    strictly and predicts what the earlier model predicted."""
    earlier, model = earlier_and_today(case)
    path = io.save_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {**{k: v for k, v in payload["state_dict"].items() if not k.startswith("representation.")},
                             **{"representation." + k: v for k, v in earlier.state_dict().items()}}
    keys = payload["state_dict"]
    assert any(k.startswith("representation.lse_in.") for k in keys) and not any(k.startswith("representation.lse.") for k in keys)
    torch.save(payload, path)
    loaded = io.load_model(path)
    assert any(k.startswith("representation.lse.input.") for k in loaded.state_dict())
    batch = structures()
    e0, f0, _ = energy_forces_gradients(model, earlier, batch)
    e1, f1, _ = energy_forces_gradients(loaded, loaded.representation, batch)
    assert close(e1, e0) and close(f1, f0)


def test_layout_and_bad_order():
    body = models.create("leftnet", hidden_channels=64, lse_channels=16, lse_hidden=8).representation.lse
    assert body.mix.out_features == 16 and body.g[0].out_features == 8 and body.norm is None and body.scale is None
    alpha = models.create("alphanet", hidden_channels=16, **SMALL_ALPHA).representation.lse
    assert alpha.mix is None and alpha.norm is not None and alpha.scale == pytest.approx(1 / 4)
    with pytest.raises(InputError, match="order"):
        lse.LocalSubstructure(8, 4, order="jj")


def test_recomputed_read_gives_the_same_values_and_gradients(monkeypatch):
    """``read(recompute=True)`` (g's activations recomputed in backward, per chunk of edges) equals the
    plain read in value and in the gradients of S, the frames and g's parameters (several chunks, float64)."""
    monkeypatch.setattr(lse, "CHUNK_ELEMENTS", 1)  # the smallest chunks: 32 edges
    torch.manual_seed(0)
    block = lse.LocalSubstructure(8, 4, 6).double()
    n, e = 10, 100
    S = torch.randn(n, 3, 6, dtype=torch.float64, requires_grad=True)
    frame = build_frame(torch.randn(e, 3, dtype=torch.float64), torch.randn(e, 3, dtype=torch.float64)).requires_grad_()
    i, j = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
    u = torch.rand(e, dtype=torch.float64)
    weights = torch.randn(e, 12, dtype=torch.float64)
    results = []
    for recompute in (False, True):
        out = block.read(lambda rows: (S[i[rows]], S[j[rows]]), frame, u, recompute)
        grads = torch.autograd.grad((out * weights).sum(), [S, frame, *block.g.parameters()])
        results.append((out.detach(), grads))
    (out0, g0), (out1, g1) = results
    assert torch.equal(out0, out1)
    assert out0.shape == (e, 12) and float(g0[0].abs().max()) > 0
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
