"""Chunked pair sums with recomputation (localframe.nn.chunking) give the same energy, forces and stress."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.nn import chunking
from localframe.nn.chunking import chunk_size

SMALL = {"hidden_channels": 16, "num_layers": 2}


@pytest.fixture(scope="module")
def box():
    """A rattled, sheared periodic silicon box (16 atoms, several hundred pairs within 4 Å)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.numbers[::3] = 8
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, 0.1], [0.1, 0.0, 0.0], [0.0, 0.3, 0.0]]), scale_atoms=True)
    return AtomsBatch.from_atoms(atoms, 4.0, dtype=torch.float64)


def _outputs(model, batch, chunk, monkeypatch):
    model.edge_chunk = chunk
    calls = []
    original = chunking._ChunkedSum.apply
    monkeypatch.setattr(chunking._ChunkedSum, "apply", lambda *args: calls.append(1) or original(*args))
    out = model(batch, forces=True, stress=True)
    monkeypatch.undo()
    assert bool(calls) == bool(chunk)  # the chunked path ran exactly when asked for
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("name", models.available())
def test_chunked_equals_at_once(name, box, one_thread, monkeypatch):
    torch.manual_seed(0)
    model = models.create(name, cutoff=4.0, **SMALL).double().eval()
    for p in model.parameters():  # non-zero biases: every term of the messages matters
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    ref = _outputs(model, box, 0, monkeypatch)
    n_pairs = box.edge_index.shape[1]
    assert n_pairs > 200
    for chunk in (37, n_pairs - 1):
        got = _outputs(model, box, chunk, monkeypatch)
        for key in ("energy", "forces", "stress"):
            assert torch.allclose(got[key], ref[key], rtol=0, atol=1e-10), (name, chunk, key)
    assert ref["forces"].abs().max() > 1e-3


@pytest.mark.parametrize("name", ["clofnet", "leftnet", "alphanet"])
def test_parameter_gradients_chunked(name, box, one_thread):
    """Eval-mode parameter gradients (energy.backward()) go through the chunked backward too."""
    torch.manual_seed(1)
    model = models.create(name, cutoff=4.0, **SMALL).double().eval()
    grads = []
    for chunk in (0, 50):
        model.zero_grad()
        model.edge_chunk = chunk
        model(box, forces=False, stress=False)["energy"].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape and grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-10)


def test_chunk_rule():
    assert chunk_size(None, 10**6, 128, training=False) == chunking.CHUNK_ELEMENTS // 128
    assert chunk_size(None, 1000, 128, training=False) is None  # fits in one chunk
    assert chunk_size(100, 1000, 128, training=True) is None  # training: forces in the loss need create_graph
    assert chunk_size(0, 10**6, 128, training=False) is None
    assert chunk_size(100, 1000, 128, training=False) == 100
    with pytest.raises(InputError):
        chunk_size(-1, 10, 128, training=False)


def test_setting_on_the_model():
    model = models.create("schnet", **SMALL)
    assert model.edge_chunk is None
    model.edge_chunk = 64
    assert copy.deepcopy(model).representation.edge_chunk == 64
    with pytest.raises(InputError):
        model.edge_chunk = "big"


def test_leftnet_recomputed_in_many_pieces(box, one_thread, monkeypatch):
    """LEFTNet's chunked call with its LSE and FTE encodings in chunks of a few edges and atoms (each
    recomputed in the backward pass) gives the energy, forces and stress of the call at once (float64)."""
    from localframe.models import leftnet
    from localframe.nn import lse

    torch.manual_seed(0)
    model = models.create("leftnet", cutoff=4.0, **SMALL).double().eval()
    ref = _outputs(model, box, 0, monkeypatch)
    monkeypatch.setattr(lse, "CHUNK_ELEMENTS", 1)  # LSE: 32 edges a chunk
    monkeypatch.setattr(leftnet, "CHUNK_ELEMENTS", 64)  # FTE: 1 atom a chunk (g_F: 4 × 16 activations per atom)
    model.edge_chunk = 101
    out = model(box, forces=True, stress=True)
    for key in ("energy", "forces", "stress"):
        assert torch.allclose(out[key].detach(), ref[key], rtol=0, atol=1e-10), key
    assert ref["forces"].abs().max() > 1e-3


def test_forces_backward_takes_no_parameter_gradients(box, one_thread, monkeypatch):
    """Forces and stress (autograd.grad with respect to positions and strain) of a model whose parameters
    require gradients: the chunked backward asks autograd for no parameter gradient; asked for both
    at once, positions and parameters get the gradients of the call at once (float64)."""
    torch.manual_seed(2)
    model = models.create("painn", cutoff=4.0, **SMALL).double().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) > 10
    asked = []
    grad = torch.autograd.grad

    def spy(outputs, inputs, *args, **kwargs):
        asked.append(list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
        return grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    model.edge_chunk = 37
    model(box, forces=True, stress=True)
    # the first call is the model's own (positions and strain); the chunked backward's calls run inside it
    outer, inner = asked[0], asked[1:]
    assert len(outer) == 2 and not any(isinstance(t, torch.nn.Parameter) for t in outer)
    assert inner and not any(isinstance(t, torch.nn.Parameter) for call in inner for t in call)
    monkeypatch.undo()

    both = []
    for chunk in (0, 37):
        model.edge_chunk = chunk
        positions = box.positions.detach().clone().requires_grad_(True)
        energy = model.energy_head(model.features(box, positions)[0], box.numbers, box.batch, box.n_structures)
        both.append(torch.autograd.grad(energy.sum(), [positions] + params, allow_unused=True))
    for got, ref in zip(both[1], both[0]):
        assert (got is None) == (ref is None)
        if ref is not None:
            assert torch.allclose(got, ref, rtol=0, atol=1e-10)
    assert both[0][0].abs().max() > 1e-3
