"""Peers trained by their own programs: the data files they read, the budget rule, NequIP's config
and environment lookup, and (when mace-torch / NequIP's environment are present) one-epoch runs of
``mace_run_train`` and ``nequip-train`` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read
import yaml

from localframe.bench import own_trainers as own
from localframe.train.evaluate import metrics


def _labelled(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(count):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info["energy"] = -100.0 + 0.1 * k  # eV
        atoms.arrays["forces"] = rng.normal(0.0, 1.0, (len(atoms), 3))  # eV/Å
        frames.append(atoms)
    return frames


def test_extxyz_carries_labels_under_mace_keys_in_ev_and_angstrom(tmp_path):
    frames = _labelled(3)
    path = own.write_extxyz(frames, tmp_path / "train.xyz")
    back = read(str(path), index=":")
    assert len(back) == 3
    for a, b in zip(frames, back):
        assert b.calc is None  # plain columns, not ASE calculator results that a reader might rename
        assert set(b.info) == {own.ENERGY_KEY}
        assert "energy" not in b.info and "forces" not in b.arrays
        assert b.info[own.ENERGY_KEY] == pytest.approx(a.info["energy"], abs=1e-9)  # eV, unscaled
        np.testing.assert_allclose(b.arrays[own.FORCES_KEY], a.arrays["forces"], atol=1e-7)  # eV/Å, unscaled
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)  # Å
        np.testing.assert_array_equal(b.numbers, a.numbers)
    text = path.read_text()
    assert f"{own.ENERGY_KEY}=" in text and f"{own.FORCES_KEY}:R:3" in text


def test_flags_of_a_recipe():
    assert own.flags({"lr": 0.01, "ema": True, "swa": False, "name": None, "E0s": "average"}) == \
        ["--lr=0.01", "--ema", "--E0s=average"]


def test_epochs_for_the_budget():
    # first call 100 s of which one epoch 60 s: overhead 40 s paid again; (600 - 100 - 40) // 60 = 7 more epochs
    assert own.epochs_for(600.0, 100.0, 60.0) == (7, 6)  # stage two from ceil(0.8 * 7) = 6
    assert own.epochs_for(50.0, 100.0, 60.0) == (1, 1)  # at least one more epoch


def test_epoch_seconds_from_the_last_call_of_the_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("$ first call\n"
                   "2026-01-01 00:00:00.000 INFO: Started training, reporting errors on validation set\n"
                   "2026-01-01 00:00:30.000 INFO: Epoch 0: head: Default, loss=1.0\n"
                   "\n$ second call\n"
                   "2026-01-01 00:01:00.000 INFO: Started training, reporting errors on validation set\n"
                   "2026-01-01 00:01:12.500 INFO: Epoch 0: head: Default, loss=1.0\n"
                   "2026-01-01 00:01:25.000 INFO: Epoch 1: head: Default, loss=1.0\n")
    assert own.epoch_seconds(log) == pytest.approx(12.5)
    assert own.epochs_done(log) == 3


@pytest.mark.slow
def test_mace_run_train_end_to_end(tmp_path):
    """One epoch of a tiny MACE on 6 structures; the row's test errors are the suite's metrics of
    the saved model's predictions."""
    if not own.status("mace-own")["available"]:
        pytest.skip("mace-torch not installed (pip install 'localframe[bench]')")
    frames = _labelled(10)
    structures = {"train": frames[:6], "val": frames[6:8], "test": frames[8:]}
    row = own.train_one("mace-own", structures, seed=0, budget_minutes=1.0, threads=1, workdir=tmp_path / "run",
                        select=lambda errors: errors["forces"]["mae"], epochs=1,
                        overrides={"num_channels": 8, "max_L": 0, "batch_size": 3, "valid_batch_size": 2},
                        log=lambda _: None)
    assert row["epochs"] == 1 and row["trainer"]["version"] == own.version("mace-own")
    assert row["trainer"]["settings"]["num_channels"] == 8
    model = tmp_path / "run" / row["trainer"]["model_tested"]
    expected = metrics(own.mace_predict(model, structures["test"]))
    for key in ("energy", "energy_per_atom", "forces"):
        assert row["test"][key]["mae"] == pytest.approx(expected[key]["mae"])
    assert row["test"]["forces"]["count"] == 2 * 9 * 3
    assert row["parameters"] > 0


@pytest.mark.slow
def test_mace_budget_run_reaches_stage_two_after_the_restart(tmp_path, monkeypatch):
    """The budget rule's two calls: a timed first epoch, then a restart whose last epochs are stage two
    (MACE's scheduler of stage two needs ``swa_lr`` in the restored optimizer groups)."""
    if not own.status("mace-own")["available"]:
        pytest.skip("mace-torch not installed (pip install 'localframe[bench]')")
    monkeypatch.setattr(own, "epochs_for", lambda budget, first, epoch: (3, 2))
    frames = _labelled(10)
    structures = {"train": frames[:6], "val": frames[6:8], "test": frames[8:]}
    row = own.train_one("mace-own", structures, seed=0, budget_minutes=10.0, threads=1, workdir=tmp_path / "run",
                        select=lambda errors: errors["forces"]["mae"],
                        overrides={"num_channels": 8, "max_L": 0, "batch_size": 3, "valid_batch_size": 2},
                        log=lambda _: None)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Changing loss based on Stage Two Weights" in log.split("\n$ ")[-1]
    assert (tmp_path / "run" / "model_stagetwo.model").is_file()
    assert row["test"]["forces"]["count"] == 2 * 9 * 3


def test_nequip_config_carries_the_recipe_the_split_and_the_limits(tmp_path):
    recipe = own.RECIPES["nequip-own"]
    frames = _labelled(3)
    files = {"train": tmp_path / "train.xyz", "val": tmp_path / "val.xyz"}
    symbols = own.chemical_symbols(frames)
    assert symbols == ["H", "C", "O"]  # by atomic number
    config = own.nequip_config(recipe.settings, files, symbols, seed=3, budget_s=600.0)
    back = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))  # plain data, as written to config.yaml
    assert back == config
    data, module, trainer = config["data"], config["training_module"], config["trainer"]
    assert data["train_file_path"] == str(files["train"]) and data["val_file_path"] == str(files["val"])
    assert data["key_mapping"] == {own.ENERGY_KEY: "total_energy", own.FORCES_KEY: "forces"}
    assert config["chemical_symbols"] == symbols and config["cutoff_radius"] == 5.0
    model = module["model"]
    assert (model["num_layers"], model["l_max"], model["num_features"]) == (4, 1, 32)
    assert model["seed"] == 3 and data["seed"] == 3 and model["compile_mode"] == "eager"
    assert model["pair_potential"]["_target_"] == "nequip.nn.pair_potential.ZBL"
    assert module["loss"]["coeffs"] == {"total_energy": 1.0, "forces": 1.0} and module["loss"]["per_atom_energy"]
    assert module["optimizer"] == {"_target_": "torch.optim.Adam", "lr": 0.01}
    assert module["ema_decay"] == 0.999
    assert data["train_dataloader"]["batch_size"] == 5 and data["val_dataloader"]["batch_size"] == 10
    assert trainer["accelerator"] == "cpu" and trainer["max_time"] == "00:00:10:00"
    assert trainer["max_epochs"] == recipe.settings["max_epochs"]
    exact = own.nequip_config({**recipe.settings, "zbl": False, "num_features": 8}, files, symbols, 0, 600.0, epochs=2)
    assert "max_time" not in exact["trainer"] and exact["trainer"]["max_epochs"] == 2
    assert "pair_potential" not in exact["training_module"]["model"]
    assert exact["training_module"]["model"]["num_features"] == 8


def test_max_time_as_lightning_writes_it():
    assert own.max_time(600.0) == "00:00:10:00"
    assert own.max_time(90061.9) == "01:01:01:01"  # 1 d 1 h 1 min 1 s
    assert own.max_time(0.2) == "00:00:00:01"


def test_nequip_environment_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCALFRAME_NEQUIP_ENV", raising=False)
    state = own.status("nequip-own")
    assert not state["available"] and state["version"] is None
    assert "LOCALFRAME_NEQUIP_ENV not set" in state["reason"] and "pip install torch==2.13.0 nequip==0.19.1" in state["reason"]
    assert "\n" not in state["reason"]
    env = tmp_path / "venv"
    monkeypatch.setenv("LOCALFRAME_NEQUIP_ENV", str(env))
    assert f"not in LOCALFRAME_NEQUIP_ENV={env}" in own.status("nequip-own")["reason"]
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "nequip-train").write_text("")
    (env / "lib" / "python3.11" / "site-packages" / "nequip-0.19.1.dist-info").mkdir(parents=True)
    assert own.status("nequip-own") == {"available": True, "version": "0.19.1", "reason": ""}
    assert own.find_program(own.RECIPES["nequip-own"]) == str(env / "bin" / "nequip-train")
    assert own.find_program(own.RECIPES["nequip-own"], "python") is None  # only the env's own executables


@pytest.mark.slow
def test_nequip_train_end_to_end(tmp_path):
    """One epoch of a tiny NequIP on 6 structures in NequIP's environment; the row's test errors are
    the suite's metrics of the checkpoint's predictions."""
    if not own.status("nequip-own")["available"]:
        pytest.skip("NequIP environment absent: " + own.status("nequip-own")["reason"])
    frames = _labelled(10)
    structures = {"train": frames[:6], "val": frames[6:8], "test": frames[8:]}
    row = own.train_one("nequip-own", structures, seed=0, budget_minutes=1.0, threads=1, workdir=tmp_path / "run",
                        select=lambda errors: errors["forces"]["mae"], epochs=1,
                        overrides={"num_layers": 1, "num_features": 4, "radial_mlp_width": 8, "batch_size": 3,
                                   "valid_batch_size": 2},
                        log=lambda _: None)
    assert row["epochs"] == 1 and row["steps"] == 2  # ceil(6 / 3) optimizer steps
    assert row["trainer"]["version"] == own.version("nequip-own")
    assert row["trainer"]["settings"]["num_features"] == 4
    model = tmp_path / "run" / "outputs" / row["trainer"]["model_tested"]
    expected = metrics(own.nequip_predict(model, structures["test"]))
    for key in ("energy", "energy_per_atom", "forces"):
        assert row["test"][key]["mae"] == pytest.approx(expected[key]["mae"])
    assert row["test"]["forces"]["count"] == 2 * 9 * 3
    assert row["parameters"] > 0
