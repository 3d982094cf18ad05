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
        return head(model, batch, batch.positions).detach().numpy()

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


# ------------------------------------------------------------------ force-aware denoising (DeNS)
@pytest.mark.parametrize("name", ["leftnet", "painn", "schnet"])
def test_force_aware_prediction_and_loss_are_equivariant(lf, name):
    """Float64: with the structure, its forces and the noise rotated, reflected and translated,
    ε̂(Qx̃ + t, QF) = Q ε̂(x̃, F) and the loss (target Qε) is unchanged; the forces change the prediction."""
    from localframe.train.denoise import corruption_mask

    model = lf.build_model(name)
    torch.manual_seed(1)
    head = DenoiseHead(model.representation, force_scale=0.7).double().eval()
    lf.randomize_biases(head)
    atoms = lf.ethanol()
    rng = np.random.default_rng(0)
    q = random_rotation(rng) * np.array([1, 1, -1])
    t = np.array([0.3, -1.2, 2.0])
    batch = AtomsBatch.from_atoms(atoms, model.cutoff, dtype=torch.float64)
    mask = corruption_mask(batch, 0.5, torch.Generator().manual_seed(0))
    assert 0 < int(mask.sum()) < len(atoms)
    eps = noise(batch, 0.1, torch.Generator().manual_seed(1), mask=mask)
    forces = torch.tensor(rng.normal(size=(len(atoms), 3))) * mask.unsqueeze(-1)
    qt = torch.tensor(q)

    def predict(x, f, e):
        moved = atoms.copy()
        moved.positions = x
        b = AtomsBatch.from_atoms(moved, model.cutoff, dtype=torch.float64)
        return head(model, b, b.positions + 0.1 * e, f).detach()

    base = predict(atoms.positions, forces, eps)
    moved = predict(atoms.positions @ q.T + t, forces @ qt.T, eps @ qt.T)
    assert torch.allclose(moved, base @ qt.T, atol=1e-10)
    assert float(denoise_loss(moved, eps @ qt.T, mask)) == pytest.approx(float(denoise_loss(base, eps, mask)), rel=1e-10)
    assert (predict(atoms.positions, 2 * forces, eps) - base).abs().max() > 1e-4  # the forces are used


def test_partial_corruption_noises_only_the_masked_atoms():
    """Hand-built batch (water + H2): at least one atom per structure is noised; the others have ε = 0; the
    mean is removed only where all atoms are noised; the loss averages over the noised atoms only."""
    from ase import Atoms

    from localframe.train.denoise import corruption_mask

    batch = AtomsBatch.collate([AtomsBatch.from_atoms(Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), 4.0),
                                AtomsBatch.from_atoms(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), 4.0)])
    for seed in range(20):
        mask = corruption_mask(batch, 0.01, torch.Generator().manual_seed(seed))
        assert int(mask[:3].sum()) == 1 and int(mask[3:].sum()) == 1  # r → 0: exactly the one kept atom
    assert bool(corruption_mask(batch, 1.0).all())
    mask = torch.tensor([True, False, True, True, True])
    eps = noise(batch, 0.04, torch.Generator().manual_seed(0), mask=mask)
    assert float(eps[1].abs().max()) == 0.0 and float(eps[[0, 2]].abs().min()) > 0
    assert torch.allclose(eps[3:].sum(0), torch.zeros(3), atol=1e-6)  # H2 all noised: its mean removed
    assert float(eps[:3].sum(0).abs().max()) > 1e-3  # water keeps an atom in place: its mean stays
    prediction = eps.clone()
    prediction[1] = 5.0  # an atom left in place is not scored
    assert float(denoise_loss(prediction, eps, mask)) == 0.0
    assert float(denoise_loss(torch.zeros_like(eps), eps, mask)) == pytest.approx(float(eps.pow(2).sum()) / 12, rel=1e-6)


@pytest.fixture(scope="module")
def dens_pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dens")
    data = write_emt_frames(root / "water.extxyz", "H2O", 24, 0.1)
    raw = _raw(data, root / "pre")
    raw["train"].update({"denoise_forces": True, "denoise_fraction": 0.5, "denoise_sigma": 0.1, "max_epochs": 30,
                         "dtype": "float64"})
    result = train(configuration.validate(raw), progress=False, pretrain=True)
    return data, root, result


def test_force_aware_pretraining_lowers_its_loss(dens_pretrained):
    data, root, result = dens_pretrained
    rows = (root / "pre" / "metrics.csv").read_text().strip().splitlines()
    column = rows[0].split(",").index("train_denoise")
    losses = [float(r.split(",")[column]) for r in rows[1:]]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    meta = localframe.load_model(root / "pre" / "model.pt").metadata["pretraining"]
    assert meta["task"] == "force-aware coordinate denoising (DeNS)" and meta["fraction"] == 0.5


def test_a_force_aware_pretrained_file_fine_tunes(dens_pretrained, tmp_path):
    data, root, _ = dens_pretrained
    raw = _raw(data, tmp_path / "ft", init=str(root / "pre" / "model.pt"))
    raw["train"]["max_epochs"] = 1
    result = train(configuration.validate(raw), progress=False)
    assert {"energy", "forces"} <= set(result["test"])
    record = localframe.load_model(tmp_path / "ft" / "model.pt").metadata["init"]
    assert record["pretraining"]["task"] == "force-aware coordinate denoising (DeNS)"


def test_force_aware_denoising_needs_forces_and_a_denoising_loss(tmp_path):
    import ase.io
    from ase.build import molecule

    plain = tmp_path / "plain.extxyz"
    ase.io.write(plain, [molecule("H2O") for _ in range(6)])
    raw = _raw(str(plain), tmp_path / "a")
    raw["data"].update({"n_train": 4, "n_val": 2})
    raw["train"]["denoise_forces"] = True
    with pytest.raises(InputError, match="train.denoise_forces needs forces in the data"):
        train(configuration.validate(raw), progress=False, pretrain=True)
    frames = write_emt_frames(tmp_path / "w.extxyz", "H2O", 6, 0.05)
    raw = _raw(frames, tmp_path / "b")
    raw["data"].update({"n_train": 4, "n_val": 2})
    raw["train"]["denoise_forces"] = True
    with pytest.raises(InputError, match="nothing is denoised: set train.weights.denoise > 0"):
        train(configuration.validate(raw), progress=False)
