"""Coordinate denoising (pretraining, Noisy-Nodes loss) and fine-tuning from a pretrained file."""

import numpy as np
import pytest
import torch

import localframe
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.train import config as configuration
from localframe.train.denoise import DenoiseHead, denoise_loss, noise
from localframe.train.run import train

from conftest import random_rotation, write_emt_frames

TINY = {"hidden_channels": 16, "num_layers": 2}


@pytest.mark.parametrize("name", ["leftnet", "painn", "schnet"])
def test_noise_prediction_is_equivariant_and_translation_invariant(lf, name):
    """ε̂(Qx + t) = Q ε̂(x) in float64 for a vector head (LEFTNet, PaiNN) and for −∂Ẽ/∂x (SchNet);
    a reflection too (the models are E(3))."""
    model = lf.build_model(name)
    torch.manual_seed(1)
    head = DenoiseHead(model.representation).double().eval()
    lf.randomize_biases(head)
    atoms = lf.ethanol()
    rng = np.random.default_rng(0)
    q = random_rotation(rng) * np.array([1, 1, -1])  # a rotation followed by a reflection
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T + np.array([0.3, -1.2, 2.0])

    def predict(a):
        batch = AtomsBatch.from_atoms(a, model.cutoff, dtype=torch.float64)
        return head(model.representation, batch, batch.positions).detach().numpy()

    base = predict(atoms)
    assert np.abs(base).max() > 1e-3  # not trivially zero
    assert np.allclose(predict(moved), base @ q.T, atol=1e-10)


def test_a_perfect_predictor_has_zero_loss_and_zero_prediction_has_one():
    """On two hand-built structures (3 + 2 atoms): the noise has each structure's mean removed, a
    predictor that returns it has loss 0, and ε̂ = 0 has the loss (1/3N) Σ |ε_i|²."""
    from ase import Atoms

    batch = AtomsBatch.collate([AtomsBatch.from_atoms(Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), 4.0),
                                AtomsBatch.from_atoms(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), 4.0)])
    torch.manual_seed(0)
    eps = noise(batch, 0.04)
    assert torch.allclose(eps[:3].sum(0), torch.zeros(3), atol=1e-6) and torch.allclose(eps[3:].sum(0), torch.zeros(3), atol=1e-6)
    assert float(denoise_loss(eps.clone(), eps)) == 0.0
    assert float(denoise_loss(torch.zeros_like(eps), eps)) == pytest.approx(float(eps.pow(2).sum()) / 15, rel=1e-6)
    # the hydrogen molecule's noise is ±δ: the relative displacement fixes it exactly
    assert torch.allclose(eps[3], -eps[4], atol=1e-6)
    big = torch.stack([noise(batch, 0.04) for _ in range(2000)])  # unit variance but for the removed mean
    assert float(big[:, :3].var()) == pytest.approx(2 / 3, rel=0.05) and float(big[:, 3:].var()) == pytest.approx(1 / 2, rel=0.05)


def _raw(data, run, **model):
    return {"data": {"source": data, "n_train": 16, "n_val": 4},
            "model": {"name": "painn", "cutoff": 4.0, "hparams": dict(TINY), **model},
            "train": {"batch_size": 8, "max_epochs": 2, "lr": 2e-3, "warmup_steps": 2, "threads": 1},
            "run_dir": str(run)}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    data = write_emt_frames(root / "water.extxyz", "H2O", 24, 0.05)
    result = train(configuration.validate(_raw(data, root / "pre")), progress=False, pretrain=True)
    return data, root, result


def test_pretraining_lowers_the_denoising_loss_and_records_itself(pretrained):
    data, root, result = pretrained
    assert "test" not in result
    lines = (root / "pre" / "metrics.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    assert "val_denoise" in header and not any(c.endswith("_mae") for c in header)
    meta = localframe.load_model(root / "pre" / "model.pt").metadata
    assert meta["pretraining"]["task"] == "coordinate denoising" and meta["pretraining"]["sigma"] == 0.04
    assert meta["pretraining"]["structures"] == 16 and meta["pretraining"]["val_denoise"] < 1.5


def test_fine_tuning_loads_the_representation_and_keeps_its_own_normalisation(pretrained, tmp_path):
    data, root, _ = pretrained
    source = localframe.load_model(root / "pre" / "model.pt")
    frames = write_emt_frames(tmp_path / "water2.extxyz", "H2O", 24, 0.08, seed=5)
    raw = _raw(frames, tmp_path / "ft", init=str(root / "pre" / "model.pt"))
    raw["train"]["max_epochs"] = 1
    raw["train"]["lr"] = 1e-12  # a step that changes nothing: the loaded weights reach the file unchanged
    raw["train"]["warmup_steps"] = 0
    raw["train"]["schedule"] = "constant"
    raw["train"]["ema_decay"] = None
    train(configuration.validate(raw), progress=False)
    tuned = localframe.load_model(tmp_path / "ft" / "model.pt")
    for (k, a), b in zip(source.representation.state_dict().items(), tuned.representation.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-8), k
    record = tuned.metadata["init"]
    assert record["choice"] == "pretrained" and record["pretraining"]["task"] == "coordinate denoising"
    assert len(record["sha256"]) == 64
    # the normalisation is the fine-tuning data's, not the pretrained file's (which has none)
    assert float(tuned.energy_head.scale) == pytest.approx(tuned.metadata["normalization"]["energy_scale"])
    assert float(tuned.energy_head.scale) != 1.0 and source.metadata["normalization"]["energy_scale"] == 1.0


def test_fine_tuning_refuses_another_architecture(pretrained, tmp_path):
    data, root, _ = pretrained
    path = str(root / "pre" / "model.pt")
    wider = _raw(data, tmp_path / "a", init=path)
    wider["model"]["hparams"]["hidden_channels"] = 32
    with pytest.raises(InputError, match=r"other hyperparameters than this run's \(hidden_channels 16 there, 32 here\)") as err:
        configuration.validate(wider)  # refused with the config, before any data is read
    assert "\n" not in str(err.value) and path in str(err.value)
    other = _raw(data, tmp_path / "b", init=path, name="schnet")
    with pytest.raises(InputError, match="holds a painn at 4 Å representation, but this run builds schnet at 4 Å"):
        configuration.validate(other)
    with_spe = _raw(data, tmp_path / "c", init=path, spe={})
    with pytest.raises(InputError, match="has model.spe None, this run {}"):
        configuration.validate(with_spe)


def test_noisy_nodes_auxiliary_loss_is_logged(tmp_path):
    data = write_emt_frames(tmp_path / "water.extxyz", "H2O", 24, 0.05)
    raw = _raw(data, tmp_path / "nn")
    raw["model"]["name"] = "schnet"
    raw["train"]["weights"] = {"denoise": 0.1}
    raw["train"]["max_epochs"] = 1
    result = train(configuration.validate(raw), progress=False)
    assert "test" in result
    header = (tmp_path / "nn" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_denoise", "val_denoise", "val_energy_mae"} <= set(header)


def test_pretrain_command(tmp_path, capsys):
    import yaml

    from localframe.cli import main

    data = write_emt_frames(tmp_path / "water.extxyz", "H2O", 12, 0.05)
    raw = _raw(data, tmp_path / "pre")
    raw["data"] = {"source": data, "n_train": 8, "n_val": 4}
    raw["train"]["max_epochs"] = 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(tmp_path / "c.yaml"), "--quiet", "train.denoise_sigma=0.05"]) == 0
    assert "fine-tune with model.init=" in capsys.readouterr().out
    assert localframe.load_model(tmp_path / "pre" / "model.pt").metadata["pretraining"]["sigma"] == 0.05


def test_qm9_train_offset_keeps_pretraining_molecules_out_of_the_fine_tuning_sets():
    """data.train_offset=k: training and validation molecules from the standard training split after its
    first k, disjoint from a run with n_train ≤ k and from the validation and test splits."""
    from localframe.data import qm9, sources

    fine = qm9.split(n_train=1000, n_val=500)
    pre = qm9.split(n_train=3800, n_val=200, train_offset=1000)
    assert len(pre["train"]) == 3800 and len(pre["val"]) == 200
    labelled = set(fine["train"]) | set(fine["val"]) | set(fine["test"])
    assert not (set(pre["train"]) | set(pre["val"])) & labelled
    assert not set(pre["train"]) & set(pre["val"])
    assert np.array_equal(pre["train"], qm9.split()["train"][1000:4800])  # the next molecules of the training split
    with pytest.raises(InputError, match="train_offset 109000 \\+ data.n_train 1000 \\+ data.n_val 1000 is more than"):
        qm9.split(n_train=1000, n_val=1000, train_offset=109_000)
    # through the data source, by QM9 id
    data = sources.load("qm9", selection={"n_train": 50, "n_val": 10, "train_offset": 1000}, notify=None)
    ids = {data.atoms[k].info["qm9_id"] for part in ("train", "val") for k in data.splits[part]}
    every = qm9.load()
    assert not ids & {int(every.ids[k]) for k in labelled}


def test_train_offset_is_refused_for_other_sources(tmp_path):
    raw = _raw(str(tmp_path / "water.extxyz"), tmp_path / "r")
    raw["data"]["train_offset"] = 10
    with pytest.raises(InputError, match="data.train_offset applies to data.source qm9 only"):
        configuration.validate(raw)
