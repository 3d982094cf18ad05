"""Bond co-generation: the bond head's symmetries (float64), pair labels, symmetric sampled bond matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localframe.generate.denoiser import Denoiser, pair_index
from localframe.generate.flow import FlowMatching
from localframe.generate.molecule import Molecule
from localframe.generate.process import BOND_ORDERS, pair_orders, remove_mean

ELEMENTS, CHARGES = (1, 6, 7, 8, 9), (-1, 0, 1)
SMALL = {"egnn": {"hidden_channels": 16, "num_layers": 2}, "painn": {"hidden_channels": 16, "num_layers": 2, "num_radial": 8}}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, restored after


def network(model, conditions=0):
    torch.manual_seed(0)
    n = len(ELEMENTS) + len(CHARGES)
    return Denoiser(n, n, model, SMALL[model], bond_classes=len(BOND_ORDERS), conditions=conditions).double()


def improper_rotation(seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return torch.tensor(q * -np.sign(np.linalg.det(q)))


def inputs(seed=0, sizes=(4, 6)):
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.randn(len(batch), 3, generator=g, dtype=torch.float64) * 1.2
    h = torch.randn(len(batch), len(ELEMENTS) + len(CHARGES), generator=g, dtype=torch.float64)
    state = torch.randint(len(BOND_ORDERS), (pair_index(batch).shape[1],), generator=g)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    return x, h, t, batch, state


def test_pair_orders_places_each_bond_on_its_pair():
    mols = [Molecule([6, 8, 1], np.zeros((3, 3)), bonds=[[1, 0, 2], [0, 2, 1]]),
            Molecule([7, 7], np.zeros((2, 3)), bonds=[[0, 1, 3]])]
    batch = torch.tensor([0, 0, 0, 1, 1])
    pairs = pair_index(batch)
    assert pairs.T.tolist() == [[0, 1], [0, 2], [1, 2], [3, 4]]
    assert pair_orders(mols, batch).tolist() == [2, 1, 0, 3]


@pytest.mark.parametrize("model", ["egnn", "painn"])
def test_bond_head_is_invariant_under_rotation_reflection_and_translation_float64(model):
    net = network(model)
    x, h, t, batch, state = inputs()
    _, _, logits = net(x, h, t, batch, bonds=state)
    R, shift = improper_rotation(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    _, _, moved = net(x @ R.T + shift, h, t, batch, bonds=state)
    torch.testing.assert_close(moved, logits, rtol=1e-9, atol=1e-10)
    assert logits.shape == (state.shape[0], len(BOND_ORDERS)) and logits.std() > 1e-4


@pytest.mark.parametrize("model", ["egnn", "painn"])
def test_bond_head_is_permutation_equivariant_float64(model):
    net = network(model)
    x, h, t, batch, state = inputs(1)
    pairs = pair_index(batch)
    n = len(x)
    dense = torch.zeros(n, n, dtype=torch.long)
    dense[pairs[0], pairs[1]] = state
    dense = dense + dense.T
    # permute the atoms within each molecule (molecule 0: atoms 0-3, molecule 1: atoms 4-9)
    perm = torch.tensor([2, 0, 3, 1, 9, 5, 4, 8, 6, 7])
    _, _, logits = net(x, h, t, batch, bonds=state)
    _, _, permuted = net(x[perm], h[perm], t, batch, bonds=dense[perm][:, perm][pairs[0], pairs[1]])
    # pair (a, b) of the permuted molecule is pair (perm[a], perm[b]) of the original
    table = torch.zeros(n, n, len(BOND_ORDERS), dtype=torch.float64)
    table[pairs[0], pairs[1]] = logits
    table[pairs[1], pairs[0]] = logits
    torch.testing.assert_close(permuted, table[perm[pairs[0]], perm[pairs[1]]], rtol=1e-9, atol=1e-10)


def test_bond_head_is_symmetric_in_the_pair_float64():
    net = network("egnn")
    x, h, t, batch, state = inputs(2)
    pairs = pair_index(batch)
    s = torch.randn(len(x), 16, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(state, len(BOND_ORDERS)).double()
    torch.testing.assert_close(net.bond_logits(s, x, pairs.flip(0), onehot), net.bond_logits(s, x, pairs, onehot),
                               rtol=1e-12, atol=1e-12)


def test_flow_loss_with_bonds_is_invariant_float64():
    proc = FlowMatching(network("painn"), ELEMENTS, CHARGES, bonds=True, bond_weight=2.0)
    rng = np.random.default_rng(0)
    mols = [Molecule([6, 8, 1, 1], rng.normal(size=(4, 3)), bonds=[[0, 1, 2], [0, 2, 1], [0, 3, 1]]),
            Molecule([7, 7], rng.normal(size=(2, 3)), bonds=[[0, 1, 3]])]
    batch = proc.make_batch(mols, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    n, p = len(batch.x), len(batch.bonds)
    x0 = remove_mean(torch.randn(n, 3, generator=g, dtype=torch.float64), batch.batch, 2)
    rest = (torch.rand(n, 2, generator=g, dtype=torch.float64), torch.randint(5, (n,), generator=g),
            torch.randint(3, (n,), generator=g), torch.rand(p, generator=g, dtype=torch.float64), torch.randint(4, (p,), generator=g))
    t = torch.tensor([0.4, 0.9], dtype=torch.float64)
    base = proc.loss(batch, t, (x0, *rest))
    R = improper_rotation(3)
    moved = proc.make_batch([Molecule(m.numbers, m.positions @ R.numpy().T + 2.0, m.charges, m.bonds) for m in mols],
                            dtype=torch.float64)
    torch.testing.assert_close(proc.loss(moved, t, (x0 @ R.T, *rest)), base, rtol=1e-10, atol=1e-12)
    assert batch.bonds.tolist() == [2, 1, 1, 0, 0, 0, 3]


def test_sampled_bond_matrix_is_symmetric_with_valid_orders():
    proc = FlowMatching(network("egnn").float(), ELEMENTS, CHARGES, bonds=True)
    proc.set_bond_prior([80, 15, 4, 1])
    mols = proc.sample([3, 5, 7], steps=4, generator=torch.Generator().manual_seed(0))
    assert [len(m) for m in mols] == [3, 5, 7]
    for m in mols:
        assert m.bonds is not None
        i, j, order = m.bonds.T
        assert (i < j).all() and (j < len(m)).all() and set(order) <= {1, 2, 3}
        dense = np.zeros((len(m), len(m)), int)
        dense[i, j] = order
        dense[j, i] = order
        assert (dense == dense.T).all() and len({(a, b) for a, b in zip(i, j)}) == len(i)
    assert sum(len(m.bonds) for m in mols) > 0
