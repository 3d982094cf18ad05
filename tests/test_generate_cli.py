"""CLI round trip of localframe generate: a model file -> sample -> evaluate; a tiny training run (slow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from localframe.cli import main  # noqa: E402
from localframe.generate import train  # noqa: E402
from localframe.generate.data import CHARGES, ELEMENTS_H  # noqa: E402
from localframe.generate.molecule import read_sdf  # noqa: E402

TINY = ["model.hparams={hidden_channels: 8, num_layers: 1}"]


def test_sample_then_evaluate_round_trip(tmp_path, capsys):
    cfg = train.load_config(None, TINY + ["process=edm"])
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
    assert main(["generate", "evaluate", str(out), "--reference", "0", "--no-novelty", "--json"]) == 0
    assert '"n_molecules": 6' in capsys.readouterr().out


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
def test_tiny_training_run_round_trip(tmp_path):
    """Needs QM9 (qm9pack) and builds its bond cache on first use (~75 s)."""
    run = tmp_path / "run"
    assert main(["generate", "train", "--quiet", str(_config(tmp_path)), f"run_dir={run}", "train.max_steps=3",
                 "data.n_train=50", *TINY]) == 0
    assert (run / "model.pt").is_file() and (run / "config.yaml").is_file()
    assert main(["generate", "sample", str(run / "model.pt"), "--n", "4", "--steps", "5", "--out", str(tmp_path / "m.sdf"), "--quiet"]) == 0
    assert main(["generate", "evaluate", str(tmp_path / "m.sdf"), "--reference", "20"]) == 0


def _config(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("process: flow\n")
    return path
