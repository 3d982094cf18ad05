"""SPE: basis and sign invariance under a repeated eigenvalue, permutation equivariance, bonds, and the
physics of a model that takes it as an input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import localframe
from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.nn.spe import SPE, adjacency, bond_graph, laplacian_eigenpairs

from conftest import random_rotation


def _cycle(n):
    return np.array([[k for k in range(n)], [(k + 1) % n for k in range(n)]])


def test_same_encoding_for_any_basis_of_a_repeated_eigenvalue():
    """The 6-cycle's normalised Laplacian has eigenvalues 0, ½, ½, 3/2, 3/2, 2: rotating and flipping the
    eigenvectors inside each two-dimensional eigenspace, and permuting them, leaves SPE unchanged."""
    torch.manual_seed(0)
    spe = SPE(eigenpairs=6).double()
    a = adjacency(6, _cycle(6))
    lam, vec = laplacian_eigenpairs(a, 6)
    assert np.allclose(lam.numpy(), [0, 0.5, 0.5, 1.5, 1.5, 2.0], atol=1e-12)
    base = spe(lam, vec, a)
    rng = np.random.default_rng(1)
    other = vec.clone()
    for block in ([1, 2], [3, 4]):
        q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
        other[:, block] = vec[:, block] @ torch.tensor(q @ np.diag([1.0, -1.0]))
    order = [0, 2, 1, 4, 3, 5]  # eigh's order within an eigenspace is arbitrary
    assert not torch.allclose(other, vec)
    assert torch.allclose(spe(lam[order], other[:, order], a), base, atol=1e-10)
    assert torch.allclose(spe(lam, -vec, a), base, atol=1e-10)  # signs
    # nearby eigenvalues, nearby encodings (stability): a slight perturbation of the graph
    a2 = a.clone()
    a2[0, 1] = a2[1, 0] = 1.001
    assert (spe(*laplacian_eigenpairs(a2, 6), a2) - base).abs().max() < 1e-2 * base.abs().max()


def test_permutation_equivariance_and_padding():
    torch.manual_seed(0)
    spe = SPE(eigenpairs=12).double()  # more eigenpairs than atoms: zero-padded
    atoms = molecule("CH3CH2OH")
    perm = np.random.default_rng(0).permutation(len(atoms))
    base = spe.of_structure(atoms.numbers, atoms.positions)
    moved = spe.of_structure(atoms.numbers[perm], atoms.positions[perm])
    assert base.shape == (9, 16) and torch.allclose(moved, base[perm], atol=1e-10)


def test_bonds_from_covalent_radii():
    bonds = {tuple(b) for b in bond_graph(*_z_x(molecule("CH3CH2OH"))).T}
    assert len(bonds) == 8  # C-C, C-O, O-H, 5 C-H
    water_pair = Atoms("OH2OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0],
                                           [2.9, 0, 0], [3.5, 0.7, 0], [3.5, -0.7, 0]])
    assert bond_graph(*_z_x(water_pair)).shape[1] == 4  # the hydrogen bond (1.9 Å) is not a bond


def _z_x(a):
    return a.numbers, a.positions


def _model(name="painn"):
    torch.manual_seed(0)
    model = models.create(name, hidden_channels=16, num_layers=2, num_radial=8, spe={"eigenpairs": 6}).double()
    torch.nn.init.normal_(model.spe_in.weight)  # it starts at zero: give the encoding a say
    return model.eval()


def test_a_model_with_spe_keeps_its_guarantees():
    model = _model()
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(3).normal(scale=0.05, size=atoms.positions.shape)

    def run(a):
        out = model(AtomsBatch.from_atoms(a, model.cutoff, dtype=torch.float64))
        return float(out["energy"].detach()), out["forces"].detach().numpy()

    e, f = run(atoms)
    without = models.create("painn", hidden_channels=16, num_layers=2, num_radial=8).double().eval()
    without.load_state_dict({k.replace("embedding.inner.", "embedding."): v for k, v in model.state_dict().items()
                             if not k.startswith("spe")})
    assert abs(float(without(AtomsBatch.from_atoms(atoms, 5.0, dtype=torch.float64))["energy"].detach()) - e) > 1e-6
    q = random_rotation(np.random.default_rng(0)) * np.array([1, 1, -1])
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T + 1.5
    perm = np.random.default_rng(1).permutation(len(atoms))
    e2, f2 = run(moved[perm])
    assert e2 == pytest.approx(e, abs=1e-10) and np.allclose(f2, (f @ q.T)[perm], atol=1e-9)
    # forces are −∂E/∂x (the bond graph does not change under a small displacement)
    h, k = 1e-5, (2, 1)
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[k] += h
    minus.positions[k] -= h
    assert f[k] == pytest.approx(-(run(plus)[0] - run(minus)[0]) / (2 * h), abs=1e-6)


def test_fixed_bond_graph_and_model_file(tmp_path):
    model = _model("schnet")
    atoms = molecule("CH3CH2OH")
    batch = AtomsBatch.from_atoms(atoms, model.cutoff, dtype=torch.float64)
    e = float(model(batch)["energy"].detach())
    stretched = atoms.copy()
    stretched.positions[8] += 1.5 * (stretched.positions[8] - stretched.positions[2])  # the O-H bond broken
    model.fix_bond_graph([bond_graph(atoms.numbers, atoms.positions)])
    fixed = float(model(AtomsBatch.from_atoms(stretched, model.cutoff, dtype=torch.float64))["energy"].detach())
    model.fix_bond_graph(None)
    free = float(model(AtomsBatch.from_atoms(stretched, model.cutoff, dtype=torch.float64))["energy"].detach())
    assert fixed != pytest.approx(free, abs=1e-9)  # the encoding changed with the graph: fixing it matters
    from localframe.io import save_model

    save_model(model, tmp_path / "m.pt")
    loaded = localframe.load_model(tmp_path / "m.pt", dtype="float64")
    assert loaded.config()["spe"] == {"eigenpairs": 6}
    assert float(loaded(batch)["energy"].detach()) == pytest.approx(e, abs=1e-10)
    with pytest.raises(InputError, match="model.spe.depth"):
        models.create("schnet", spe={"depth": 3})


def test_config_key_checked_before_any_work():
    from localframe.train import config as configuration

    raw = {"data": {"source": "x.extxyz"}, "model": {"name": "schnet", "spe": {"depth": 2}}}
    with pytest.raises(InputError, match="unknown key 'model.spe.depth'"):
        configuration.validate(raw)
    assert configuration.validate({**raw, "model": {"name": "schnet", "spe": {"eigenpairs": 4}}}).model.spe == {"eigenpairs": 4}


def test_bonds_from_the_smiles_where_it_matches_else_covalent_radii():
    """QM9 molecules: the SMILES graph mapped onto the atoms (RDKit); a SMILES that does not describe the
    atoms, or none, gives the covalent-radius graph (and is counted)."""
    from localframe.data import qm9
    from localframe.data.readers import StructureSet
    from localframe.generate.data import match_smiles
    from localframe.train.data import GraphDataset

    every = qm9.load()
    mols = every.atoms_list([0, 5, 100, 2000])
    wrong = molecule("H2O")
    wrong.info["smiles"] = "CC"  # not these atoms
    data = StructureSet([*mols, wrong, molecule("H2O")], (), {}, "test")
    graphs = GraphDataset(data, np.arange(6), 4.0, torch.float64, bonds=True)
    assert graphs.unmatched == 1
    for k, atoms in enumerate(mols):
        expected = match_smiles(atoms.info["smiles"], atoms.numbers, atoms.positions)[0][:, :2]
        assert graphs[k].bonds[0].T.tolist() == expected.tolist()
    for k in (4, 5):
        assert np.array_equal(graphs[k].bonds[0], bond_graph(data.atoms[k].numbers, data.atoms[k].positions))
    collated = AtomsBatch.collate([graphs[0], graphs[4]])
    assert len(collated.bonds) == 2 and [len(b.bonds[0][0]) for b in collated.split()] == [len(graphs[0].bonds[0][0]), 2]


def test_a_model_uses_the_bonds_of_its_batch():
    """batch.bonds replaces the covalent-radius graph; fix_bond_graph takes precedence over both."""
    model = _model("schnet")
    atoms = molecule("CH3CH2OH")
    own = bond_graph(atoms.numbers, atoms.positions)
    batch = AtomsBatch.from_atoms(atoms, model.cutoff, dtype=torch.float64)
    e = float(model(batch)["energy"].detach())
    batch.bonds = [own]
    assert float(model(batch)["energy"].detach()) == pytest.approx(e, abs=1e-12)
    batch.bonds = [own[:, 1:]]  # one bond fewer
    other = float(model(batch)["energy"].detach())
    assert other != pytest.approx(e, abs=1e-9)
    model.fix_bond_graph([own])
    assert float(model(batch)["energy"].detach()) == pytest.approx(e, abs=1e-12)


def _stretched_ethanol(factor):
    """Ethanol with its O-H distance at ``factor`` × the bond threshold 1.2 (r_O + r_H)."""
    from ase.data import covalent_radii

    atoms = molecule("CH3CH2OH")
    o, h = 2, 8
    bond = atoms.positions[h] - atoms.positions[o]
    limit = 1.2 * (covalent_radii[8] + covalent_radii[1])
    atoms.positions[h] = atoms.positions[o] + bond / np.linalg.norm(bond) * factor * limit
    return atoms


def test_md_keeps_the_bond_graph_of_the_first_frame_and_a_smooth_energy():
    """run_md fixes the SPE graph from the first frame for every step (and lets go afterwards); with it
    fixed, the energy along an O-H stretch through the bond threshold is smooth, without it it jumps."""
    from localframe import Calculator
    from localframe.md import run_md

    calc = Calculator(_model("schnet"), dtype="float64")
    start = _stretched_ethanol(0.995)
    first = bond_graph(start.numbers, start.positions)
    seen = []
    run_md(calc, start, ensemble="nve", temperature=300.0, timestep=0.5, steps=5, progress=False,
           on_step=lambda k: seen.append(calc.evaluator.bonds))
    assert len(seen) == 5 and all(np.array_equal(b, first) for b in seen)
    assert calc.evaluator.bonds is None

    def scan():
        out = []
        for f in np.linspace(0.98, 1.02, 21):  # the threshold is crossed between 1.0 and 1.002
            a = _stretched_ethanol(f)
            a.calc = calc
            out.append(a.get_potential_energy())
        return np.abs(np.diff(np.array(out), 2))  # second differences

    free = scan()
    calc.fix_bond_graph(start)
    fixed = scan()
    assert free.max() > 1000 * fixed.max()  # the jump where the bond breaks (measured 3,600×)


def test_replicas_each_keep_the_bond_graph_of_their_first_frame():
    """Replicas share the models: each one's graph travels with its own batches (two molecules at once)."""
    from localframe import Calculator
    from localframe.md import run_replicas

    calc = Calculator(_model("schnet"), dtype="float64")
    result = run_replicas(calc, [_stretched_ethanol(0.995), molecule("H2O")], 2, steps=3, ensemble="nve",
                          temperature=300.0, progress=False)
    assert result["stopped"] == [] and result["replica_steps"] == 6
    assert calc.evaluator.bonds is None
