"""CLI round trip of localframe generate: a model file -> sample -> evaluate; a tiny training run (slow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from localframe.cli import main  # noqa: E402
from localframe.errors import InputError  # noqa: E402
from localframe.generate import train  # noqa: E402
from localframe.generate.data import CHARGES, ELEMENTS_H  # noqa: E402
from localframe.generate.molecule import read_sdf  # noqa: E402

TINY = ["model.hparams={hidden_channels: 8, num_layers: 1}"]


def test_sample_then_evaluate_round_trip(tmp_path, capsys):
    # flow: an untrained EGNN's 3-step EDM samples reach 10⁶ Å and are written as failed records
    # (tests/test_generate_failed.py)
    cfg = train.load_config(None, TINY + ["process=flow"])
    process = train.build(cfg, ELEMENTS_H, CHARGES)
    histogram = np.zeros(8, int)
    histogram[[5, 7]] = 1
    train.save(tmp_path / "model.pt", process, cfg, histogram)
    out = tmp_path / "mols.sdf"
    assert main(["generate", "sample", str(tmp_path / "model.pt"), "--n", "6", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    mols = read_sdf(out)
    assert len(mols) == 6 and {len(m) for m in mols} <= {5, 7}
    assert all(m.bonds is not None for m in mols)
    capsys.readouterr()
    assert main(["generate", "evaluate", str(out), "--reference", "0", "--no-novelty", "--json", "--strain", "0",
                 "--posebusters", "0"]) == 0
    assert '"n_molecules": 6' in capsys.readouterr().out


def test_sample_writes_the_generated_bonds_and_the_requested_property(tmp_path):
    import torch

    from localframe.generate.sample import sizes_and_conditions

    cfg = train.load_config(None, TINY + ["bonds.enabled=true", "condition=alpha"])
    process = train.build(cfg, ELEMENTS_H, CHARGES)
    process.set_bond_prior([60, 30, 8, 2])
    process.set_condition_stats(np.array([[40.0], [90.0]]))
    pairs = np.array([[5, 40.0], [7, 90.0]] * 20)
    train.save(tmp_path / "model.pt", process, cfg, np.bincount([5, 7]), pairs)
    out = tmp_path / "mols.sdf"
    args = ["generate", "sample", str(tmp_path / "model.pt"), "--n", "5", "--steps", "3", "--out", str(out), "--quiet"]
    assert main(args + ["--condition", "alpha=70.0", "--seed", "4"]) == 0
    mols = read_sdf(out)
    assert all(m.info["properties"] == {"alpha": 70.0} for m in mols)
    # the SDF holds the bonds the process generated (not distance-table bonds): same seed, same molecules
    loaded, histogram = train.load(tmp_path / "model.pt")
    sizes, values = sizes_and_conditions(loaded, histogram, 5, np.random.default_rng(4), {"alpha": 70.0})
    direct = loaded.sample(sizes, 3, torch.Generator().manual_seed(4), condition=values)
    for a, b in zip(mols, direct):
        assert sorted(map(tuple, a.bonds.tolist())) == sorted(map(tuple, b.bonds.tolist()))
    assert main(args + ["--condition", "gap=1"]) == 2


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    assert main(["generate", "sample", str(bad), "--n", "2"]) == 2
    assert "not a localframe generative model file" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("proces: flow\n")
    assert main(["generate", "train", str(cfg)]) == 2
    assert "unknown key 'proces'" in capsys.readouterr().err
    with pytest.raises(Exception, match="process must be one of"):
        train.load_config(None, ["process=vae"])


@pytest.mark.slow
def test_tiny_training_run_with_bonds_and_condition_round_trip(tmp_path, capsys):
    """Flow matching with bond co-generation, conditioned on alpha, trained on the first half (needs QM9)."""
    run = tmp_path / "run"
    assert main(["generate", "train", "--quiet", str(_config(tmp_path)), f"run_dir={run}", "train.max_steps=3",
                 "data.n_train=50", "data.half=first", "bonds.enabled=true", "condition=alpha", *TINY]) == 0
    out = tmp_path / "m.sdf"
    assert main(["generate", "sample", str(run / "model.pt"), "--n", "4", "--steps", "5", "--out", str(out), "--quiet"]) == 0
    mols = read_sdf(out)
    assert all(m.bonds is not None and "alpha" in m.info["properties"] for m in mols)
    capsys.readouterr()
    assert main(["generate", "evaluate", str(out), "--reference", "20", "--json", "--strain", "0", "--posebusters", "0"]) == 0
    assert '"n_molecules": 4' in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_training_run_round_trip(tmp_path):
    """Needs QM9 (qm9pack) and builds its bond cache on first use (~75 s)."""
    run = tmp_path / "run"
    assert main(["generate", "train", "--quiet", str(_config(tmp_path)), f"run_dir={run}", "train.max_steps=3",
                 "data.n_train=50", *TINY]) == 0
    assert (run / "model.pt").is_file() and (run / "config.yaml").is_file()
    assert main(["generate", "sample", str(run / "model.pt"), "--n", "4", "--steps", "5", "--out", str(tmp_path / "m.sdf"), "--quiet"]) == 0
    assert main(["generate", "evaluate", str(tmp_path / "m.sdf"), "--reference", "20", "--strain", "2",
                 "--posebusters", "2", "--quiet"]) == 0


def _config(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("process: flow\n")
    return path


def test_the_shipped_model_samples_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of that name here
    out = tmp_path / "mols.sdf"
    for name in train.SHIPPED:
        process, histogram = train.load(name)
        assert process.bonds and histogram.sum() > 0
        assert main(["generate", "sample", name, "--n", "2", "--steps", "3", "--out", str(out), "--quiet"]) == 0
        assert len(read_sdf(out)) == 2
    with pytest.raises(InputError, match="not a shipped model"):
        train.load("qm9-no-such-model")
