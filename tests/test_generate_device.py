"""Devices in localframe generate: train.device / --device resolution, the GPU example config, CPU runs
unchanged by an explicit device, and no tensor created off the device of its inputs (checked on CPU by
making the default device ``meta``: a tensor created without ``device=`` lands there, and mixing it with
the CPU state either raises or changes the result)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from localframe.errors import InputError
from localframe.generate import train
from localframe.generate.data import CHARGES, ELEMENTS_H
from localframe.generate.denoiser import Denoiser
from localframe.generate.edm import EDM
from localframe.generate.flow import FlowMatching
from localframe.generate.inpaint import Fragment, guided_sample
from localframe.generate.molecule import Molecule
from localframe.generate.process import BOND_ORDERS

ROOT = Path(__file__).resolve().parents[1]
SIZES, STEPS, PROPERTIES = [4, 6], 4, [[72.0], [78.0]]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, restored after


def test_device_resolution():
    assert train.DEFAULTS["train"]["device"] == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert train.resolve_device("auto").type == expected
    assert train.resolve_device(None).type == expected
    assert train.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="auto, cpu, cuda or cuda:N"):
        train.resolve_device("tpu")
    with pytest.raises(InputError, match="auto, cpu, cuda or cuda:N"):
        train.resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
@pytest.mark.parametrize("value", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_one_line_error(value):
    with pytest.raises(InputError, match="CUDA is not available") as err:
        train.resolve_device(value)
    assert "\n" not in str(err.value)


def test_gpu_example_config_loads_with_known_keys():
    cfg = train.load_config(str(ROOT / "configs" / "generate_qm9_gpu.yaml"))
    assert cfg["train"]["device"] == "cuda" and cfg["data"]["n_train"] is None
    assert cfg["model"]["hparams"] == {"hidden_channels": 256, "num_layers": 9}
    assert (cfg["train"]["batch_size"], cfg["train"]["lr"], cfg["train"]["ema_decay"]) == (64, 1e-4, 0.9999)
    assert cfg["train"]["minutes"] >= 2880


def _process(cls, bonds=False, conditioned=False):
    torch.manual_seed(0)
    n = len(ELEMENTS_H) + len(CHARGES)
    net = Denoiser(n, n, "egnn", {"hidden_channels": 16, "num_layers": 2},
                   bond_classes=len(BOND_ORDERS) if bonds else 0, conditions=int(conditioned))
    proc = cls(net, ELEMENTS_H, CHARGES, bonds=bonds, conditions=("alpha",) if conditioned else ())
    if conditioned:
        proc.set_condition_stats(np.array([[70.0], [80.0], [75.0]]))
    if bonds:
        proc.set_bond_prior([40, 10, 3, 1])
    return proc.eval()


def _fragment():
    positions = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [-0.6, 0.9, 0.0]])
    return Fragment(np.array([6, 8, 1]), positions, np.zeros(3, np.int64), "frag.xyz")


def _run(proc):
    """Plain, fragment-guided and separated samples and a training loss, from fixed seeds."""
    extra = {"condition": PROPERTIES} if proc.conditions else {}
    out = [proc.sample(SIZES, STEPS, torch.Generator().manual_seed(1), **extra),
           guided_sample(proc, SIZES, STEPS, torch.Generator().manual_seed(2), fragment=_fragment(), resample=2,
                         separation=True, **extra)]
    mols = [Molecule(np.array([6, 1, 1, 8]), np.random.default_rng(k).normal(size=(4, 3)), np.zeros(4, np.int64),
                     np.array([[0, 1, 1], [0, 2, 1], [0, 3, 2]]) if proc.bonds else None,
                     info={"properties": {"alpha": 74.0 + k}}) for k in range(2)]
    torch.manual_seed(3)
    proc.separation_weight = 0.5
    loss = proc.loss(proc.make_batch(mols)).item()
    proc.separation_weight = 0.0
    return out, loss


def _same(a, b):
    (samples_a, loss_a), (samples_b, loss_b) = a, b
    assert loss_a == loss_b
    for left, right in zip(samples_a, samples_b):
        assert len(left) == len(right)
        for m, n in zip(left, right):
            np.testing.assert_array_equal(m.numbers, n.numbers)
            np.testing.assert_array_equal(m.positions, n.positions)
            assert (m.bonds is None) == (n.bonds is None)
            if m.bonds is not None:
                np.testing.assert_array_equal(m.bonds, n.bonds)


@pytest.mark.parametrize("cls, bonds, conditioned", [(FlowMatching, True, True), (FlowMatching, False, False),
                                                     (EDM, False, True)])
def test_no_tensor_is_created_off_the_device(cls, bonds, conditioned):
    proc = _process(cls, bonds, conditioned)
    reference = _run(proc)
    torch.set_default_device("meta")
    try:
        guarded = _run(proc)
    finally:
        torch.set_default_device(None)
    _same(reference, guarded)
    assert all(len(m) == n for m, n in zip(reference[0][0], SIZES))


def test_explicit_cpu_equals_the_default_and_the_model_file_is_on_cpu(tmp_path):
    proc = _process(FlowMatching, True, True)
    path = tmp_path / "model.pt"
    train.save(path, proc, {**train.DEFAULTS, "bonds": {"enabled": True, "weight": 1.0}, "condition": "alpha",
                            "model": {"name": "egnn", "hparams": {"hidden_channels": 16, "num_layers": 2}}},
               np.array([0, 0, 0, 0, 1, 0, 1]), np.array([[4, 72.0], [6, 78.0]]))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" for v in payload["state_dict"].values())
    loaded, _ = train.load(path, "cpu")
    assert loaded.device == torch.device("cpu")
    _same(_run(loaded), _run(train.load(path)[0]))


@pytest.mark.slow
def test_two_training_steps_and_sampling_with_explicit_cpu_match_the_default(tmp_path):
    """Needs QM9 (qm9pack); train.device=cpu and --device cpu give what the defaults give on this machine."""
    pytest.importorskip("rdkit")
    from localframe.cli import main

    if torch.cuda.is_available():
        pytest.skip("the default device is cuda here")
    texts = []
    for k, device in enumerate(["auto", "cpu"]):
        run = tmp_path / f"run{k}"
        overrides = [f"run_dir={run}", "train.max_steps=2", "data.n_train=50", f"train.device={device}",
                     "model.hparams={hidden_channels: 8, num_layers: 1}", "train.save_every_minutes=0"]
        assert main(["generate", "train", "--quiet", str(ROOT / "configs" / "generate_qm9.yaml"), *overrides]) == 0
        out = tmp_path / f"m{k}.sdf"
        assert main(["generate", "sample", str(run / "model.pt"), "--n", "3", "--steps", "4", "--out", str(out),
                     "--quiet", "--device", device]) == 0
        texts.append(out.read_text())
        state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
        texts.append({key: value.tolist() for key, value in state.items()})
    assert texts[0] == texts[2] and texts[1] == texts[3]
    assert texts[0].count("$$$$") == 3
