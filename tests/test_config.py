"""Config validation before any work: every bad value is one line naming the key; model presets."""

from __future__ import annotations

import pytest
import yaml

from localframe import models
from localframe.cli import main
from localframe.errors import InputError
from localframe.train import config as configuration
from localframe.train.run import train

TINY = {"hidden_channels": 8, "num_layers": 1}


def raw(data: str = "water.extxyz", run_dir: str = "runs/x", **model) -> dict:
    return {"data": {"source": data, "n_train": 12, "n_val": 4},
            "model": {"name": "schnet", "cutoff": 3.0, "hparams": dict(TINY), **model},
            "train": {"batch_size": 4, "max_epochs": 1, "threads": 1}, "run_dir": run_dir}


@pytest.mark.parametrize("override, words", [
    ("model.hparams.hidden_channels=-4", ["model.hparams.hidden_channels", "negative"]),
    ("model.hparams.hidden_channels=2.5", ["model.hparams.hidden_channels", "integer"]),
    ("model.hparams.hidden_channels=abc", ["model.hparams.hidden_channels", "integer"]),
    ("model.hparams.num_layers=0", ["model.hparams.num_layers=0", "cannot be built or trained"]),
    ("model.hparams.num_radial=0", ["model.hparams.num_radial=0", "cannot be built or trained"]),
    ("model.hparams.foo=1", ["unknown key 'model.hparams.foo'", "hidden_channels"]),
    ("model.hparams.cutoff=3", ["model.hparams.cutoff", "model.cutoff"]),
    ("model.cutoff=.inf", ["model.cutoff", "finite"]),
    ("model.cutoff=1000", ["model.cutoff", "50"]),
    ("model.name=transformer9000", ["model.name", "schnet"]),
    ("train.lr=.nan", ["train.lr", "finite"]),
    ("train.lr=-1", ["train.lr", "greater than 0"]),
    ("train.min_lr=1", ["train.min_lr", "train.lr"]),
    ("train.max_time=1e20", ["train.max_time"]),
    ("train.checkpoint_minutes=.inf", ["train.checkpoint_minutes"]),
    ("train.seed=-1", ["train.seed"]),
    ("data.split_seed=-1", ["data.split_seed"]),
    ("train.batch_size=0", ["train.batch_size"]),
    ("train.dtype=float16", ["train.dtype", "float32"]),
    ("data.units={energy:", ["data.units", "not valid YAML"]),
])
def test_bad_value_is_one_line_naming_the_key(override, words):
    with pytest.raises(InputError) as caught:
        configuration.validate(configuration.apply_overrides(raw(), [override]))
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("override, words", [
    ("data.n_train=100", ["data.n_train 100", "has 20 structures"]),
    ("data.n_train=18", ["data.n_train 18 + data.n_val 4 = 22 structures", "has 20"]),
    ("data.n_test=10", ["data.n_test 10", "has 20"]),
    ("data.targets=[gap]", ["data.targets", "gap"]),
    ("train.weights={energy: 0, forces: 0}", ["train.weights", "weight 0"]),
    ("trainer.accelerator=nonsense", ["trainer settings", "nonsense"]),
    ("trainer.devices=0", ["trainer settings", "devices"]),
    ("trainer.strategy=nonsense", ["trainer settings", "nonsense"]),
])
def test_values_that_need_the_data_or_lightning_stop_before_training(tmp_path, emt_water, override, words):
    run = tmp_path / "run"
    cfg = configuration.validate(configuration.apply_overrides(raw(emt_water, str(run)), [override]))
    with pytest.raises(InputError) as caught:
        train(cfg, progress=False)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not (run / "checkpoints").exists()


def test_cli_negative_hidden_channels_and_too_large_n_train(tmp_path, emt_water, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw(emt_water, str(tmp_path / "run"))))
    for override, expected in (("model.hparams.hidden_channels=-4", "model.hparams.hidden_channels"),
                               ("data.n_train=1000", "the source has 20 structures")):
        assert main(["train", str(path), override, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and expected in err, err


@pytest.fixture
def tiny_preset(monkeypatch):
    """A preset 'schnet-tiny' (the models' own presets may change; this one is the test's)."""
    cls = models.representation_class("schnet")
    monkeypatch.setattr(cls, "presets", {**cls.presets, "tiny": {"cutoff": 3.5, "hidden_channels": 8, "num_layers": 2}})
    return "schnet-tiny"


def test_preset_selects_the_model_its_hparams_and_cutoff(tiny_preset, tmp_path):
    base = raw()
    del base["model"]
    cfg = configuration.validate({**base, "model": {"preset": tiny_preset}})
    assert (cfg.model.name, cfg.model.cutoff, cfg.model.hparams) == ("schnet", 3.5, {"hidden_channels": 8, "num_layers": 2})
    cfg = configuration.validate({**base, "model": {"preset": tiny_preset, "cutoff": 3.0, "name": "schnet",
                                                    "hparams": {"num_layers": 1}}})
    assert (cfg.model.cutoff, cfg.model.hparams) == (3.0, {"hidden_channels": 8, "num_layers": 1})
    configuration.dump(cfg, tmp_path / "config.yaml")  # the resolved config reads back to the same model
    assert configuration.load(tmp_path / "config.yaml").model == cfg.model
    with pytest.raises(InputError, match="model.name 'painn' disagrees with model.preset 'schnet-tiny'"):
        configuration.validate({**base, "model": {"preset": tiny_preset, "name": "painn"}})
    with pytest.raises(InputError, match="unknown model preset 'schnet-nope'"):
        configuration.validate({**base, "model": {"preset": "schnet-nope"}})
    with pytest.raises(InputError, match="model.hparams.num_layers=-1|model.hparams.num_layers must not be negative"):
        configuration.validate({**base, "model": {"preset": tiny_preset, "hparams": {"num_layers": -1}}})
