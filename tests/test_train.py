"""Training: config validation, a real short run, model-file round trip, resume after SIGKILL, DDP."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import localframe
from localframe.cli import main
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.train import config as configuration
from localframe.train.run import train

from conftest import write_emt_frames

TINY = {"hidden_channels": 16, "num_layers": 2}


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    """60 rattled ethanol frames labelled with ASE's EMT potential (fast, smooth, eV and Å)."""
    return write_emt_frames(tmp_path_factory.mktemp("data") / "ethanol_emt.extxyz", "CH3CH2OH", 60, 0.08)


def config_dict(data_path, run_dir, **train):
    return {
        "data": {"source": data_path, "n_train": 40, "n_val": 10},
        "model": {"name": "schnet", "cutoff": 4.0, "hparams": dict(TINY)},
        "train": {"batch_size": 8, "max_epochs": 3, "lr": 2e-3, "warmup_steps": 2, "threads": 1, **train},
        "run_dir": str(run_dir),
    }


def write_config(tmp_path, data_path, run_dir, **train):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(data_path, run_dir, **train)))
    return str(path)


def test_unknown_key_names_key_and_allowed(tmp_path, emt_data, capsys):
    raw = config_dict(emt_data, tmp_path / "run")
    raw["train"]["learning_rate"] = 1e-3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["train", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "train.learning_rate" in err and "lr" in err and str(path) in err


def test_bad_value_and_bad_override(tmp_path, emt_data):
    path = write_config(tmp_path, emt_data, tmp_path / "run")
    with pytest.raises(InputError, match="train.lr"):
        configuration.load(path, ["train.lr=-1"])
    with pytest.raises(InputError, match="model.name"):
        configuration.load(path, ["model.name=transformer9000"])
    with pytest.raises(InputError, match="section.key=value"):
        configuration.load(path, ["max_epochs"])
    cfg = configuration.load(path, ["train.max_epochs=7", "model.hparams.hidden_channels=8"])
    assert cfg.train.max_epochs == 7 and cfg.model.hparams["hidden_channels"] == 8


def test_short_run_writes_everything_and_model_file_round_trips(tmp_path, emt_data):
    run = tmp_path / "run"
    cfg = configuration.load(write_config(tmp_path, emt_data, run, max_epochs=4), [])
    result = train(cfg, progress=False)
    for name in ("config.yaml", "model.pt", "metrics.csv", "test_metrics.json", "parity.png", "learning_curve.png"):
        assert (run / name).exists(), name
    saved = json.loads((run / "test_metrics.json").read_text())
    assert saved["test"]["forces"]["unit"] == "eV/Å" and saved["n_test"] == 10
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 4
    first, last = [float(line.split(",")[4]) for line in (lines[1], lines[-1])]
    assert last < first  # the training loss goes down
    # model file round trip: the file, read back, gives the in-memory model's energies
    in_memory = result["model_object"].double().eval()
    loaded = localframe.load_model(run / "model.pt", dtype="float64")
    import ase.io

    frames = ase.io.read(emt_data, ":5")
    batch = AtomsBatch.from_atoms(frames, cutoff=4.0, dtype=torch.float64)
    e_mem = in_memory(batch)["energy"].detach()
    e_file = loaded(batch)["energy"].detach()
    assert torch.allclose(e_mem, e_file, rtol=0, atol=1e-10)
    calc = localframe.Calculator(str(run / "model.pt"), dtype="float64")
    for k, atoms in enumerate(frames):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(float(e_mem[k]), abs=1e-8)
    meta = loaded.metadata
    assert meta["elements"] == [1, 6, 8] and meta["units"]["energy"] == "eV"


def test_refuses_to_overwrite_a_run(tmp_path, emt_data):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cfg = configuration.load(write_config(tmp_path, emt_data, run), [])
    with pytest.raises(InputError, match="resume"):
        train(cfg, progress=False)


def _cli(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return [sys.executable, "-m", "localframe.cli", *args], env


def test_resume_after_sigkill_mid_epoch(tmp_path, emt_data):
    # Many short epochs, killed as soon as two are done: on a fast machine an epoch takes tens of
    # milliseconds, so the remaining 18 leave a margin far above the polling interval.
    epochs = 20
    killed_run, clean_run = tmp_path / "killed", tmp_path / "clean"
    path = write_config(tmp_path, emt_data, killed_run, max_epochs=epochs, checkpoint_minutes=0.001, batch_size=4)
    cmd, env = _cli("train", path, "--quiet")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed_run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = (killed_run / "metrics.csv").read_text().strip().splitlines() if (killed_run / "metrics.csv").exists() else []
        if last.exists() and len(rows) >= 3:  # two epochs done, the third under way
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_run / "model.pt").exists()
    state = torch.load(last, map_location="cpu", weights_only=False)  # a complete, loadable checkpoint
    assert state["global_step"] > 0

    resumed = subprocess.run(_cli("train", "--resume", str(killed_run), "--quiet")[0], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    path_clean = write_config(tmp_path, emt_data, clean_run, max_epochs=epochs, checkpoint_minutes=0.001, batch_size=4)
    clean = subprocess.run(_cli("train", path_clean, "--quiet")[0], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]
    a = json.loads((killed_run / "test_metrics.json").read_text())
    b = json.loads((clean_run / "test_metrics.json").read_text())
    assert a["epochs"] == b["epochs"] == epochs
    # same end point within noise: the test errors agree to within a factor of two
    for label in ("energy", "forces"):
        ratio = a["test"][label]["mae"] / b["test"][label]["mae"]
        assert 0.5 < ratio < 2.0, (label, ratio)


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path, emt_data):
    run = tmp_path / "ddp"
    path = write_config(tmp_path, emt_data, run, max_epochs=2)
    cmd, env = _cli("train", path, "--quiet", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["world_size"] == 2
    assert result["ranks_identical"] is True


def test_normalization_recovers_element_references_of_an_additive_target():
    from ase import Atoms

    from localframe.data.readers import StructureSet
    from localframe.train.data import normalization

    refs = {1: -0.5, 6: -37.8, 8: -75.1}
    rng = np.random.default_rng(3)
    atoms = []
    for _ in range(30):
        numbers = rng.choice([1, 6, 8], size=rng.integers(2, 9))
        a = Atoms(numbers=numbers, positions=np.arange(len(numbers))[:, None] * [1.5, 0, 0])
        a.info["U0"] = sum(refs[z] for z in numbers) + 0.01 * rng.normal()
        a.info["gap"] = 5.0 + rng.normal()
        atoms.append(a)
    data = StructureSet(atoms, ("U0", "gap"), {"U0": "eV", "gap": "eV"}, "synthetic")
    norm = normalization(data, np.arange(30), {"U0": "sum", "gap": "mean"})
    fitted = norm.target_stats["U0"]["atom_ref"]
    for z, value in refs.items():
        assert fitted[z] == pytest.approx(value, abs=0.02)
    assert norm.target_stats["U0"]["scale"] < 0.01
    gaps = np.array([a.info["gap"] for a in atoms])
    assert norm.target_stats["gap"]["shift"] == pytest.approx(gaps.mean())
    assert norm.target_stats["gap"]["scale"] == pytest.approx(gaps.std())


def test_ddp_with_a_time_budget_keeps_ranks_identical(tmp_path, emt_data):
    """The cosine schedule follows the wall-clock budget: every rank must use the same clock (rank 0's), or
    their learning rates, and so their weights, drift apart."""
    run = tmp_path / "ddp_time"
    path = write_config(tmp_path, emt_data, run, max_epochs=1000, max_time=0.05)
    cmd, env = _cli("train", path, "--quiet", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["world_size"] == 2 and result["ranks_identical"] is True
    assert result["epochs"] < 1000  # the time budget ended the run
