"""Peers trained by their own programs: the data files they read, the budget rule, and (when
mace-torch is installed) a one-epoch run of ``mace_run_train`` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read

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
