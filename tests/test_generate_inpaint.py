"""Inpainting and guided sampling: the fixed fragment kept exactly, zero centre of mass, translation
equivariance, the separation constraint in sampling, fragment files and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localframe.errors import InputError
from localframe.generate import inpaint
from localframe.generate.denoiser import Denoiser
from localframe.generate.edm import EDM
from localframe.generate.flow import FlowMatching
from localframe.generate.inpaint import Fragment, check_fragment, fragment_sizes, guided_sample, read_fragment
from localframe.generate.separation import too_close

ELEMENTS, CHARGES = (1, 6, 7, 8, 9), (-1, 0, 1)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, restored after


class _TameEDM(EDM):
    """An untrained denoiser makes EDM's first steps (÷ α_{t|s}, α_1 ≈ 0.003) diverge; this one adds to
    it the exact ε of positions ~ N(0, 1.5² I) and features ~ N(0, 0.3² I), which keeps the sampler finite."""

    def predict(self, x, h, t, batch, condition=None):
        from localframe.generate.schedule import alpha_sigma

        a, s = (v[batch].unsqueeze(-1) for v in alpha_sigma(t))
        eps_x, eps_h = super().predict(x, h, t, batch)
        return (s * x / (a * a * 2.25 + s * s) + 1e-3 * eps_x, s * h / (a * a * 0.09 + s * s) + 1e-3 * eps_h)


PROCESSES = [_TameEDM, FlowMatching]


def process(cls, dtype=torch.float32):
    torch.manual_seed(0)
    net = Denoiser(len(ELEMENTS) + len(CHARGES), len(ELEMENTS) + len(CHARGES), "egnn", {"hidden_channels": 16, "num_layers": 2})
    return cls(net, ELEMENTS, CHARGES).to(dtype)


def fragment(offset=(12.3456789, -7.891, 3.3)):
    # the heavy atoms of acetaldehyde (C, C, O), far from the origin
    positions = np.array([[0.0, 0.0, 0.0], [1.50, 0.0, 0.0], [2.20, 1.05, 0.0]]) + np.array(offset)
    return Fragment(np.array([6, 6, 8]), positions, np.array([0, 0, 0]), "frag.sdf")


@pytest.mark.parametrize("cls", PROCESSES)
@pytest.mark.parametrize("resample,separation", [(1, False), (3, True)])
def test_inpainting_keeps_the_fragment_exact_in_every_sample(cls, resample, separation):
    frag = fragment()
    mols = guided_sample(process(cls), [6, 8, 9, 11], steps=6, generator=torch.Generator().manual_seed(1),
                         fragment=frag, resample=resample, separation=separation)
    assert [len(m) for m in mols] == [6, 8, 9, 11]
    for m in mols:
        assert np.abs(m.positions[:3] - frag.positions).max() <= 1e-6
        assert list(m.numbers[:3]) == [6, 6, 8] and list(m.charges[:3]) == [0, 0, 0]
        assert np.isfinite(m.positions).all()
        assert set(m.numbers) <= set(ELEMENTS)
        if separation:
            assert too_close(m.numbers, m.positions)[0] == 0


def test_inpainting_a_bond_and_condition_model_keeps_the_fragment_bonds():
    torch.manual_seed(0)
    n_f = len(ELEMENTS) + len(CHARGES)
    net = Denoiser(n_f, n_f, "egnn", {"hidden_channels": 16, "num_layers": 2}, bond_classes=4, conditions=1)
    proc = FlowMatching(net, ELEMENTS, CHARGES, bonds=True, conditions=("alpha",))
    frag = fragment()
    frag.bonds = np.array([[0, 1, 1], [1, 2, 2]])
    mols = guided_sample(proc, [6, 8], steps=4, generator=torch.Generator().manual_seed(0), fragment=frag, resample=2,
                         separation=True, condition=np.array([[70.0], [80.0]]))
    for m in mols:
        assert np.abs(m.positions[:3] - frag.positions).max() <= 1e-6
        among_fixed = sorted((int(i), int(j), int(o)) for i, j, o in m.bonds if i < 3 and j < 3)
        assert among_fixed == [(0, 1, 1), (1, 2, 2)]
        assert all(0 <= i < len(m) and 0 <= j < len(m) for i, j, _ in m.bonds)


@pytest.mark.parametrize("cls", PROCESSES)
def test_inpainting_states_stay_in_the_zero_centre_of_mass_subspace(cls, monkeypatch):
    states = []
    impose = inpaint._impose

    def recording(state, known, fixed, b, n):
        out = impose(state, known, fixed, b, n)
        states.append((out["x"], b))
        return out

    monkeypatch.setattr(inpaint, "_impose", recording)
    guided_sample(process(cls, torch.float64), [5, 7], steps=4, generator=torch.Generator().manual_seed(0),
                  dtype=torch.float64, fragment=fragment(), resample=2, separation=True)
    assert len(states) == 8
    for x, b in states:
        means = torch.zeros(2, 3, dtype=x.dtype).index_add(0, b, x) / torch.bincount(b).unsqueeze(-1)
        assert means.abs().max() < 1e-9 * max(1.0, x.abs().max().item())


def test_impose_keeps_the_centre_of_mass_and_the_fragment_shape():
    gen = torch.Generator().manual_seed(0)
    b = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    fixed = inpaint._fixed_mask(b, 2)
    assert fixed.tolist() == [True, True, False, False, True, True, False, False, False]
    x = inpaint.remove_mean(torch.randn(9, 3, generator=gen, dtype=torch.float64), b, 2)
    known = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    out = inpaint._impose({"x": x}, {"x": known}, fixed, b, 2)["x"]
    torch.testing.assert_close(torch.zeros(2, 3, dtype=torch.float64).index_add(0, b, out), torch.zeros(2, 3, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1] - out[0], known[1] - known[0], rtol=0, atol=1e-12)  # shape of the known part
    torch.testing.assert_close(out[5] - out[4], known[3] - known[2], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[~fixed] - out[~fixed].mean(0), x[~fixed] - x[~fixed].mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", PROCESSES)
def test_translating_the_fragment_translates_the_completion_float64(cls):
    proc = process(cls, torch.float64)
    shift = np.array([-4.0, 2.5, 7.0])

    def run(frag):
        return guided_sample(proc, [6, 7], steps=5, generator=torch.Generator().manual_seed(3), dtype=torch.float64,
                             fragment=frag, resample=2)

    base, moved = run(fragment()), run(fragment(np.array((12.3456789, -7.891, 3.3)) + shift))
    for a, c in zip(base, moved):
        assert np.array_equal(a.numbers, c.numbers)
        np.testing.assert_allclose(c.positions, a.positions + shift, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cls", PROCESSES)
def test_separation_in_unconditional_sampling_keeps_the_centre_of_mass(cls):
    proc = process(cls, torch.float64)
    mols = guided_sample(proc, [4, 6, 9], steps=20, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                         separation=True)
    for m in mols:
        scale = max(1.0, np.abs(m.positions).max())
        assert np.abs(m.positions.mean(0)).max() < 1e-9 * scale
        assert too_close(m.numbers, m.positions)[0] == 0


def test_fragment_files_sdf_and_xyz(tmp_path):
    from localframe.generate.molecule import Molecule, write_sdf

    frag = fragment()
    write_sdf(tmp_path / "f.sdf", [Molecule(frag.numbers, frag.positions, np.array([0, 0, 0]))])
    got = read_fragment(tmp_path / "f.sdf")
    assert list(got.numbers) == [6, 6, 8]
    np.testing.assert_allclose(got.positions, frag.positions, atol=1e-4)  # the SDF's 4 decimals
    (tmp_path / "f.xyz").write_text("2\n\nC 0.123456789 0 0\nO 1.3 0 0\n")
    got = read_fragment(tmp_path / "f.xyz")
    assert list(got.numbers) == [6, 8] and got.positions[0, 0] == 0.123456789 and list(got.charges) == [0, 0]


def test_fragment_errors_are_one_line(tmp_path):
    proc = process(FlowMatching)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputError, match="a fragment file is .sdf or .xyz"):
        read_fragment(tmp_path / "f.txt")
    (tmp_path / "two.xyz").write_text("1\n\nC 0 0 0\n1\n\nC 1 0 0\n")
    with pytest.raises(InputError, match="the file has 2 frames"):
        read_fragment(tmp_path / "two.xyz")
    cl = Fragment(np.array([6, 17]), np.zeros((2, 3)), np.array([0, 0]), "frag.xyz")
    with pytest.raises(InputError, match=r"frag.xyz: fragment element\(s\) Cl not among the model's atom types \(H, C, N, O, F\)"):
        check_fragment(proc, cl)
    charged = Fragment(np.array([6, 7]), np.zeros((2, 3)), np.array([0, 2]), "frag.sdf")
    with pytest.raises(InputError, match=r"formal charge\(s\) \[2\]"):
        check_fragment(proc, charged)
    histogram = np.zeros(10, int)
    histogram[[5, 9]] = 1
    with pytest.raises(InputError, match=r"3 atoms \+ --add 7 = 10 atoms: more than the largest molecule .* \(9 atoms\)"):
        fragment_sizes(fragment(), 7, histogram, 4, np.random.default_rng(0))
    assert set(fragment_sizes(fragment(), None, histogram, 20, np.random.default_rng(0))) == {5, 9}
    assert set(fragment_sizes(fragment(), 2, histogram, 3, np.random.default_rng(0))) == {5}
    with pytest.raises(InputError, match="no molecule larger"):
        fragment_sizes(Fragment(np.ones(9, int), np.zeros((9, 3)), np.zeros(9, int)), None, histogram, 2, np.random.default_rng(0))


@pytest.mark.parametrize("suffix", ["sdf", "xyz"])
def test_cli_round_trip_with_a_fragment(tmp_path, capsys, suffix):
    pytest.importorskip("rdkit")
    import json

    from localframe.cli import main
    from localframe.generate import train
    from localframe.generate.data import CHARGES, ELEMENTS_H
    from localframe.generate.molecule import Molecule, read_sdf, write_sdf

    cfg = train.load_config(None, ["model.hparams={hidden_channels: 8, num_layers: 1}", "process=flow"])
    histogram = np.zeros(12, int)
    histogram[[6, 9]] = 1
    train.save(tmp_path / "model.pt", train.build(cfg, ELEMENTS_H, CHARGES), cfg, histogram)
    frag = fragment()
    path = tmp_path / f"frag.{suffix}"
    if suffix == "sdf":
        write_sdf(path, [Molecule(frag.numbers, frag.positions, frag.charges)])
    else:
        path.write_text("3\n\n" + "".join(f"{s} {x:.6f} {y:.6f} {z:.6f}\n" for s, (x, y, z) in zip("CCO", frag.positions)))
    expected = read_fragment(path).positions
    out = tmp_path / "mols.sdf"
    assert main(["generate", "sample", str(tmp_path / "model.pt"), "--fragment", str(path), "--add", "5", "--resample", "2",
                 "--n", "4", "--steps", "3", "--separation", "--out", str(out), "--quiet"]) == 0
    mols = read_sdf(out)
    assert [len(m) for m in mols] == [8] * 4
    for m in mols:  # the SDF keeps 4 decimals
        assert np.abs(m.positions[:3] - expected).max() <= 5e-5 and list(m.numbers[:3]) == [6, 6, 8]
    capsys.readouterr()
    assert main(["generate", "evaluate", str(out), "--reference", "0", "--no-novelty", "--json", "--strain", "0",
                 "--posebusters", "0"]) == 0
    result = json.loads(capsys.readouterr().out)["samples"]
    assert result["n_molecules"] == 4 and result["pairs_too_close"] == 0.0
    assert main(["generate", "sample", str(tmp_path / "model.pt"), "--fragment", str(path), "--add", "9", "--out", str(out)]) == 2
    assert "3 atoms + --add 9 = 12 atoms: more than the largest molecule" in capsys.readouterr().err
    assert main(["generate", "sample", str(tmp_path / "model.pt"), "--add", "2", "--out", str(out)]) == 2
    assert "--add and --resample need --fragment" in capsys.readouterr().err
