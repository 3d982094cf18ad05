"""Ablations (localframe.bench.ablation): statistics and tables on hand-built runs, validation every N
steps (train.val_every), and one small ablation end to end (slow)."""

import json
import math

import pytest
import yaml

from localframe.bench import ablation
from localframe.errors import InputError
from localframe.train import config as configuration
from localframe.train.run import train

from conftest import write_emt_frames


def test_mean_std_and_spread_on_known_values():
    assert ablation.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert ablation.mean_std([5.0]) == (5.0, 0.0)
    mean, std = ablation.mean_std([2.0, 4.0])
    assert mean == 3.0 and math.isclose(std, math.sqrt(2.0))
    assert ablation.beyond_spread([1, 2, 3], [10, 11, 12])  # |Δ| 9 > 1 + 1
    assert not ablation.beyond_spread([1, 2, 3], [2.5, 3.5, 4.5])  # |Δ| 1.5 < 2
    assert ablation.beyond_spread([1.0], [10.0, 11.0]) is None  # one value: no spread


def _record(variant, seed, test_mae, curve):
    return {"variant": variant, "seed": seed, "returncode": 0, "cpu_s": 10.0 + seed, "steps": 4,
            "test": {"U0_atom": {"mae": test_mae}},
            "curve": [{"step": s, "val_U0_atom_mae": v} for s, v in curve]}


def test_summary_table_and_curves_on_hand_built_runs(tmp_path):
    variants = [ablation.parse_variant("schnet/unit", "model.init=unit"),
                ablation.parse_variant("schnet/virgo", "model.init=virgo")]
    results = [_record("schnet/unit", 0, 0.100, [(2, 0.30), (4, 0.20)]),
               _record("schnet/unit", 1, 0.120, [(2, 0.50), (4, 0.22)]),
               _record("schnet/virgo", 0, 0.300, [(2, 0.60), (4, 0.40)]),
               _record("schnet/virgo", 1, 0.310, [(2, 0.70), (4, 0.42)])]
    rows = ablation.summary(results, variants, ablation.Metric("U0_atom", 1000, "meV"))
    unit, virgo = rows
    assert unit["test_mean_std"][0] == pytest.approx(110.0) and unit["test_mean_std"][1] == pytest.approx(math.sqrt(200))
    assert unit["val_mean_std"][0] == pytest.approx(210.0)  # the last validation of each seed
    assert unit["cpu_s"] == (10.5, pytest.approx(math.sqrt(0.5)))
    assert "vs" not in unit and virgo["vs"] == "schnet/unit"
    assert virgo["delta_test"] == pytest.approx(195.0) and virgo["beyond_spread"]
    text = ablation.table(rows)
    assert "| schnet/unit | U0_atom (meV) | 2 | 4 | 110.0 ± 14.1 | 210.0 ± 14.1 |" in text
    assert "+195.0 (beyond the spread)" in text
    steps, mean, std = ablation.curves(results, "schnet/unit", "U0_atom", scale=1000)
    assert steps == [2, 4] and mean == pytest.approx([400.0, 210.0]) and std[0] == pytest.approx(math.sqrt(2) * 100)
    metric = ablation.parse_metric("U0_atom:1000:meV")
    assert metric == ablation.Metric("U0_atom", 1000.0, "meV")
    assert ablation.plot(results, variants, metric, tmp_path / "curves.png").stat().st_size > 0
    assert ablation.plot_test(results, variants, metric, tmp_path / "test.png").stat().st_size > 0


def test_each_variant_is_compared_on_the_first_label_its_runs_have():
    variants = [ablation.parse_variant("mu/off", ""), ablation.parse_variant("mu/spe", "model.spe={}")]
    results = [{"variant": v, "seed": 0, "returncode": 0, "cpu_s": 1.0, "steps": 2, "test": {"mu": {"mae": mae}}, "curve": []}
               for v, mae in (("mu/off", 0.50), ("mu/spe", 0.40))]
    metrics = [ablation.parse_metric("U0_atom:1000:meV"), ablation.parse_metric("mu:1:D")]
    off, spe = ablation.summary(results, variants, metrics)
    assert off["label"] == spe["label"] == "mu" and off["unit"] == "D"
    assert spe["delta_test"] == pytest.approx(-0.10) and spe["beyond_spread"] is None  # one seed each: no spread
    text = ablation.table([off, spe])
    assert "| mu/spe | mu (D) | 1 | 2 | 0.400 ± 0.000 |" in text and "-0.100 (too few seeds)" in text
    with pytest.raises(InputError, match="SCALE"):
        ablation.parse_metric("mu:x:D")


def test_summary_only_without_results_is_one_line(tmp_path, capsys):
    code = ablation.main(["config.yaml", "--out", str(tmp_path), "--summary-only", "--variant", "a/b", "",
                          "--label", "U0_atom:1000:meV"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "results.json: no results to summarise" in err and len(err.splitlines()) == 1


def test_variant_names_are_checked():
    assert ablation.parse_variant("leftnet/spe", "model.spe={} train.lr=1e-3").overrides == ("model.spe={}", "train.lr=1e-3")
    with pytest.raises(InputError, match="panel/curve"):
        ablation.parse_variant("a/b/c", "")


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    return write_emt_frames(tmp_path_factory.mktemp("data") / "ethanol_emt.extxyz", "CH3CH2OH", 40, 0.08)


def _config(tmp_path, data, **train):
    raw = {"data": {"source": data, "n_train": 24, "n_val": 8},
           "model": {"name": "schnet", "cutoff": 4.0, "hparams": {"hidden_channels": 8, "num_layers": 1}},
           "train": {"batch_size": 8, "max_epochs": 3, "lr": 2e-3, "warmup_steps": 1, "threads": 1, **train},
           "run_dir": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_val_every_validates_across_epochs(tmp_path, emt_data):
    # 3 batches per epoch, 9 steps: validations at steps 2, 4, 6, 8 (not at the epoch ends 3, 6, 9 alone)
    cfg = configuration.load(_config(tmp_path, emt_data, val_every=2), [])
    train(cfg, progress=False)
    rows = ablation.read_curve(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert [r["epoch"] for r in rows] == [0, 1, 1, 2]
    assert all(r["val_metric"] > 0 and r["train_loss"] > 0 for r in rows)
    with pytest.raises(InputError, match="val_every"):
        configuration.load(_config(tmp_path, emt_data), ["train.val_every=0"])


def test_val_every_beyond_the_steps_says_so(tmp_path, emt_data, capsys):
    # 9 steps, validation every 100: nothing validated; the run says so and records it, never silently
    cfg = configuration.load(_config(tmp_path, emt_data, val_every=100), [])
    result = train(cfg, progress=False)
    assert result["validated"] is False
    assert "no validation ran (train.val_every=100 > the 9 steps trained)" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert train(configuration.load(_config(tmp_path / "b", emt_data, val_every=2), []), progress=False)["validated"]


@pytest.mark.slow
def test_small_ablation_end_to_end(tmp_path, emt_data):
    config = _config(tmp_path, emt_data, max_epochs=2)
    variants = [ablation.parse_variant("schnet/unit", "model.init=unit"),
                ablation.parse_variant("schnet/pytorch", "model.init=pytorch")]
    results = ablation.run(config, variants, [0, 1], tmp_path / "abl", base=["train.val_every=3"], jobs=2, echo=lambda _: None)
    assert len(results) == 4 and all(r["returncode"] == 0 and r["steps"] == 6 and r["cpu_s"] > 0 for r in results)
    assert all([row["step"] for row in r["curve"]] == [3, 6] for r in results)
    saved = json.loads((tmp_path / "abl" / "results.json").read_text())
    assert [r["variant"] for r in saved] == ["schnet/unit"] * 2 + ["schnet/pytorch"] * 2
    # a second call finds every run done and runs nothing
    again = ablation.run(config, variants, [0, 1], tmp_path / "abl", base=["train.val_every=3"], echo=pytest.fail)
    assert [r["cpu_s"] for r in again] == [r["cpu_s"] for r in results]
