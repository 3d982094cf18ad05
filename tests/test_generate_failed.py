"""Samples whose positions or features are not finite (or absurdly far) become failed records, never molecules,
and every evaluation keeps them in its denominator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("rdkit")

from localframe.cli import main  # noqa: E402
from localframe.generate import metrics, train  # noqa: E402
from localframe.generate.data import CHARGES, ELEMENTS_H  # noqa: E402
from localframe.generate.denoiser import pair_index  # noqa: E402
from localframe.generate.molecule import Molecule, as_written, failed_molecule, read_sdf, write_sdf  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.hparams={hidden_channels: 8, num_layers: 1}"]


class Broken(nn.Module):
    """The real denoiser, with its coordinate output (or its logits) replaced by ``value`` on some molecules."""

    def __init__(self, inner, broken_molecules, value, output=0):
        super().__init__()
        self.inner, self.broken, self.value, self.output = inner, list(broken_molecules), value, output

    def forward(self, x, h, t, batch, **kwargs):
        out = list(self.inner(x, h, t, batch, **kwargs))
        owner = batch if self.output < 2 else batch[pair_index(batch)[0]]  # output 2: bond logits, per pair
        mask = torch.isin(owner, torch.tensor(self.broken, dtype=torch.long))
        fill = torch.full_like(out[self.output], self.value)
        if np.isfinite(self.value):  # differs between atoms, so that removing the mean does not cancel it
            fill = fill * torch.arange(1, len(fill) + 1, dtype=fill.dtype).unsqueeze(-1)
        out[self.output] = torch.where(mask.unsqueeze(-1), fill, out[self.output])
        return tuple(out)


class GaussianOracle(nn.Module):
    """EDM's exact ε for positions and features ~ N(0, 0.25 I): bounded samples (an untrained EGNN's few-step
    EDM samples reach 10⁶ Å and more, which the guard rightly fails too)."""

    def forward(self, x, h, t, batch, **kwargs):
        from localframe.generate.schedule import alpha_sigma

        alpha, sigma = alpha_sigma(t[batch])
        scale = (sigma / (0.25 * alpha**2 + sigma**2)).unsqueeze(-1)
        return scale * x, scale * h


def broken_process(name, broken, value, output=0, bonds=False):
    cfg = train.load_config(None, TINY + [f"process={name}"] + (["bonds.enabled=true"] if bonds else []))
    process = train.build(cfg, ELEMENTS_H, CHARGES)
    process.network = Broken(GaussianOracle() if name == "edm" else process.network, broken, value, output)
    return process, cfg


@pytest.mark.parametrize("name,value,output,reason", [
    ("edm", float("inf"), 0, "non-finite"), ("edm", float("nan"), 1, "non-finite"),
    ("flow", float("inf"), 0, "non-finite"), ("flow", 1e5, 0, "beyond 1000"),
    ("flow", float("nan"), 1, "non-finite"),  # NaN type logits: the sampler must not crash on them
])
def test_broken_denoiser_gives_failed_records(name, value, output, reason):
    process, _ = broken_process(name, [0, 2], value, output)
    mols = [as_written(m) for m in process.sample([5, 6, 7, 4], 4, torch.Generator().manual_seed(0))]
    assert len(mols) == 4
    assert [bool(m.failed) for m in mols] == [True, False, True, False]
    assert all(reason in m.failed for m in (mols[0], mols[2]))
    assert [m.info.get("n_atoms") for m in (mols[0], mols[2])] == [5, 7]
    for m in (mols[1], mols[3]):
        assert np.isfinite(m.positions).all() and np.abs(m.positions).max() <= 1e3


def test_nan_bond_logits_fail_only_their_molecule():
    process, _ = broken_process("flow", [1], float("nan"), output=2, bonds=True)
    mols = [as_written(m) for m in process.sample([5, 6], 3, torch.Generator().manual_seed(0))]
    assert not mols[0].failed and mols[1].failed


def test_healthy_samples_are_unchanged_by_the_guard():
    """A denoiser broken on no molecule gives exactly the samples of the plain one (same seed)."""
    for name, bonds in (("edm", False), ("flow", False), ("flow", True)):
        cfg = train.load_config(None, TINY + [f"process={name}"] + (["bonds.enabled=true"] if bonds else []))
        process = train.build(cfg, ELEMENTS_H, CHARGES)
        plain = process.network
        a = process.sample([5, 6], 3, torch.Generator().manual_seed(1))
        process.network = Broken(plain, [], float("inf"), output=1)
        b = process.sample([5, 6], 3, torch.Generator().manual_seed(1))
        for m, n in zip(a, b):
            assert np.array_equal(m.positions, n.positions, equal_nan=True) and np.array_equal(m.numbers, n.numbers)
            assert (m.bonds is None and n.bonds is None) or np.array_equal(m.bonds, n.bonds)


def test_write_sdf_never_writes_non_finite_or_absurd_coordinates(tmp_path):
    good = Molecule([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], None, [(0, 1, 1), (0, 2, 1)])
    nan = Molecule([8, 1, 1], [[0, 0, np.nan], [0.96, 0, 0], [-0.24, 0.93, 0]], None, None)
    far = Molecule([8, 1, 1], [[0, 0, 1e45], [0.96, 0, 0], [-0.24, 0.93, 0]], None, None)
    back = read_sdf(write_sdf(tmp_path / "m.sdf", [nan, good, far]))
    assert [m.failed for m in back] == ["non-finite positions or atom features", None, "a coordinate beyond 1000 Å"]
    assert back[0].info["n_atoms"] == 3 and len(back[1]) == 3
    # the same molecules in memory score as failed too (never as molecules with NaN bonds)
    result = metrics.evaluate_molecules([nan, good, far])
    assert result["n_failed"] == 2 and result["valid"] == pytest.approx(1 / 3)


def test_failed_records_round_trip_through_sdf_and_count_in_every_denominator(tmp_path):
    ch4 = Molecule([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                     [0.63, -0.63, -0.63]], None, [(0, k, 1) for k in range(1, 5)])
    records = [ch4, failed_molecule(7, "non-finite positions or atom features", {"properties": {"alpha": 70.0}}), ch4]
    path = write_sdf(tmp_path / "m.sdf", records)
    back = read_sdf(path)
    assert [m.failed for m in back] == [None, "non-finite positions or atom features", None]
    assert back[1].info["n_atoms"] == 7 and len(back[1]) == 0 and back[1].info["properties"] == {"alpha": 70.0}
    result = metrics.evaluate_molecules(back)
    assert result["n_molecules"] == 3 and result["n_failed"] == 1
    assert result["failed"] == pytest.approx(1 / 3)
    assert result["valid"] == pytest.approx(2 / 3) and result["connected"] == pytest.approx(2 / 3)
    assert result["mol_stable_corrected"] == pytest.approx(2 / 3)
    assert result["atom_stable_corrected"] == pytest.approx(10 / 17)  # the failed sample's 7 atoms are unstable
    assert result["mol_too_close"] == pytest.approx(1 / 3)


def test_cli_prints_the_count_and_evaluate_counts_them_invalid(tmp_path, capsys, monkeypatch):
    import json

    from localframe.generate import sample as sample_module

    cfg = train.load_config(None, TINY + ["process=flow"])
    histogram = np.zeros(7, int)
    histogram[6] = 1
    train.save(tmp_path / "model.pt", train.build(cfg, ELEMENTS_H, CHARGES), cfg, histogram)
    loaded, hist = train.load(tmp_path / "model.pt")
    loaded.network = Broken(loaded.network, [1, 3], float("inf"))
    monkeypatch.setattr(sample_module, "load", lambda path, device="cpu": (loaded, hist))
    out = tmp_path / "m.sdf"
    assert main(["generate", "sample", str(tmp_path / "model.pt"), "--n", "5", "--steps", "3", "--out", str(out),
                 "--quiet", "--batch-size", "5"]) == 0
    assert "2 of 5 samples failed (non-finite positions or atom features)" in capsys.readouterr().out
    mols = read_sdf(out)
    assert len(mols) == 5 and [bool(m.failed) for m in mols] == [False, True, False, True, False]
    assert main(["generate", "evaluate", str(out), "--reference", "0", "--no-novelty", "--json", "--strain", "0",
                 "--posebusters", "0"]) == 0
    result = json.loads(capsys.readouterr().out)["samples"]
    assert result["n_molecules"] == 5 and result["n_failed"] == 2 and result["valid"] <= 3 / 5
    assert result["failed"] == pytest.approx(2 / 5)
