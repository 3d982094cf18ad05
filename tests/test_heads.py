"""Shared heads (charges, dipole, scalar targets), model config and model files."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError
from localframe.heads import check_targets
from localframe.nn.mlp import columnwise, mlp
from localframe.io import FORMAT_VERSION, load_model, save_model
from localframe.nn.scatter import gather

TARGETS = {"U0": "sum", "gap": "mean"}


def charged(atoms: Atoms, charge: float) -> Atoms:
    atoms = atoms.copy()
    atoms.info["charge"] = charge
    return atoms


# ---------------------------------------------------------------------- charges and dipole
@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_charges_sum_to_total_charge(name, lf):
    model = lf.build_model(name, dipole=True)
    structures = [charged(lf.ethanol(), 1.0), charged(molecule("H2O"), -2.0), charged(molecule("CH4"), 0.0)]
    batch = AtomsBatch.from_atoms(structures, model.cutoff, labels=("charge",), dtype=torch.float64)
    q = model(batch)["charges"].detach()
    totals = torch.zeros(3, dtype=torch.float64).index_add(0, batch.batch, q)
    assert torch.allclose(totals, torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64), atol=1e-12)
    unlabelled = AtomsBatch.from_atoms(structures, model.cutoff, dtype=torch.float64)
    q0 = model(unlabelled)["charges"].detach()
    assert torch.zeros(3, dtype=torch.float64).index_add(0, batch.batch, q0).abs().max() < 1e-12


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_dipole_rotates_and_ignores_translation(name, lf):
    model = lf.build_model(name, dipole=True)
    assert (model.dipole_head.vector_weights is not None) == model.representation.has_vectors
    atoms = lf.ethanol()
    rot = lf.random_rotation(np.random.default_rng(5))
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + np.array([10.0, -7.0, 3.0])
    mu, mu_moved = lf.predict(model, atoms)["dipole"], lf.predict(model, moved)["dipole"]
    assert mu.shape == (1, 3)
    np.testing.assert_allclose(mu_moved, mu @ rot.T, rtol=0, atol=1e-10 * np.abs(mu).max())


def test_dipole_gradients_reach_positions_and_weights(lf):
    model = lf.build_model("painn", dipole=True).train()
    batch = AtomsBatch.from_atoms(lf.ethanol(), model.cutoff, dtype=torch.float64)
    out = model(batch)
    (out["dipole"].pow(2).sum() + out["forces"].pow(2).sum()).backward()
    assert model.dipole_head.vector_weights.weight.grad.abs().sum() > 0
    assert model.dipole_head.charge_net[0].weight.grad.abs().sum() > 0


def test_dipole_refuses_periodic_structures(lf):
    model = lf.build_model("schnet", dipole=True)
    with pytest.raises(ValueError, match="periodic"):
        lf.predict(model, lf.silicon())
    out = lf.predict(model, lf.silicon(), dipole=False)
    assert "dipole" not in out and out["stress"].shape == (1, 3, 3)
    with pytest.raises(ValueError, match="dipole head"):
        lf.predict(lf.build_model("schnet"), lf.ethanol(), dipole=True)


# ---------------------------------------------------------------------- scalar targets
def test_scalar_targets_sum_and_mean(lf):
    model = lf.build_model("schnet", targets=TARGETS)
    water = molecule("H2O")
    far = water.copy()
    far.translate([20.0, 0.0, 0.0])
    out = lf.predict(model, [water, lf.ethanol(), water + far])
    assert out["U0"].shape == (3,) and out["gap"].shape == (3,)
    assert out["U0"][2] == pytest.approx(2 * out["U0"][0], rel=1e-12)  # extensive
    assert out["gap"][2] == pytest.approx(out["gap"][0], rel=1e-12)  # intensive
    head = model.target_heads["gap"]
    head.scale.fill_(2.0)
    head.shift.fill_(-1.5)
    scaled = lf.predict(model, [water, lf.ethanol(), water + far])
    np.testing.assert_allclose(scaled["gap"], 2.0 * out["gap"] - 1.5, rtol=1e-12)


def test_columnwise_and_gather_match_their_plain_forms():
    torch.manual_seed(0)
    net = mlp([3, 8, 1]).double()
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    assert torch.allclose(columnwise(net, x), net(x.transpose(1, 2)).transpose(1, 2), atol=1e-13)
    src, index = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True), torch.tensor([4, 0, 4, 2])
    plain = torch.autograd.grad(src[index].square().sum(), src)[0]
    assert torch.equal(gather(src, index), src[index])
    assert torch.allclose(torch.autograd.grad(gather(src, index).square().sum(), src)[0], plain, atol=1e-14)


@pytest.mark.parametrize(
    "targets", [{"gap": "max"}, {"energy": "sum"}, {"a.b": "sum"}, {"": "mean"}, {"dipole": "sum"}]
)
def test_bad_targets(targets):
    with pytest.raises(InputError):
        check_targets(targets)
    with pytest.raises(InputError):
        models.create("schnet", targets=targets)


def test_config_is_plain_and_rebuilds(lf):
    model = models.create("painn", dipole=True, targets=TARGETS, hidden_channels=8, num_layers=1, cutoff=4.0)
    config = json.loads(json.dumps(model.config()))
    assert config == {
        "name": "painn", "hparams": {"hidden_channels": 8, "num_layers": 1, "cutoff": 4.0},
        "dipole": True, "targets": TARGETS,
    }
    rebuilt = models.create(config["name"], dipole=config["dipole"], targets=config["targets"], **config["hparams"])
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert rebuilt.cutoff == 4.0


# ---------------------------------------------------------------------- model files
@pytest.fixture
def trained(lf):
    model = lf.build_model("painn", dipole=True, targets=TARGETS)
    with torch.no_grad():
        model.energy_head.atom_ref.normal_()
        model.energy_head.scale.fill_(2.5)
        model.target_heads["U0"].shift.fill_(-3.0)
    return model


def test_model_file_round_trip(trained, lf, tmp_path):
    path = tmp_path / "sub" / "model.pt"
    metadata = {"units": {"energy": "eV"}, "elements": [1, 6, 8], "normalization": {"mean": -1.5}, "note": None}
    save_model(trained, path, metadata=metadata)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    loaded = load_model(path)
    assert loaded.config() == trained.config() and loaded.metadata == metadata
    assert not loaded.training and next(loaded.parameters()).dtype == torch.float64
    structures = [lf.ethanol(), molecule("CH4")]
    a, b = lf.predict(trained, structures), lf.predict(loaded, structures)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert next(load_model(path, dtype="float32").parameters()).dtype == torch.float32
    save_model(loaded, tmp_path / "again.pt")  # metadata travels with the loaded model
    assert load_model(tmp_path / "again.pt").metadata == metadata


def test_model_file_holds_only_plain_types(trained, tmp_path):
    path = save_model(trained, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "localframe-model" and payload["format_version"] == FORMAT_VERSION
    assert payload["cutoff"] == trained.cutoff and isinstance(payload["localframe_version"], str)

    def check(value):
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for v in value.values():
                check(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                check(v)
        else:
            assert value is None or isinstance(value, (bool, int, float, str, torch.Tensor)), type(value)

    check(payload)
    assert type(payload["state_dict"]) is dict


def test_metadata_must_be_plain(trained, tmp_path):
    with pytest.raises(InputError, match="metadata"):
        save_model(trained, tmp_path / "model.pt", metadata={"bad": object()})
    assert not (tmp_path / "model.pt").exists()


def _mark_code_ran() -> None:
    os.environ["LOCALFRAME_TEST_CODE_RAN"] = "1"


class _Payload:
    """Unpickling this would run code; a model file must never get that far."""

    def __reduce__(self):
        return (_mark_code_ran, ())


def test_bad_model_files(trained, tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")
    good = save_model(trained, tmp_path / "model.pt")
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a model file")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    for path in (corrupted, garbage, other, tmp_path):
        with pytest.raises(InputError):
            load_model(path)
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(InputError, match="format_version"):
        load_model(future)
    payload["format_version"] = FORMAT_VERSION
    payload["state_dict"].pop("energy_head.scale")
    torch.save(payload, tmp_path / "incomplete.pt")
    with pytest.raises(InputError, match="weights do not match"):
        load_model(tmp_path / "incomplete.pt")


def test_model_file_never_runs_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump(_Payload(), handle, protocol=2)
    torch.save({"format": "localframe-model", "evil": _Payload()}, tmp_path / "evil_zip.pt")
    os.environ.pop("LOCALFRAME_TEST_CODE_RAN", None)
    for p in (path, tmp_path / "evil_zip.pt"):
        with pytest.raises(InputError):
            load_model(p)
    assert "LOCALFRAME_TEST_CODE_RAN" not in os.environ
