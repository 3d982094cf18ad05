"""A model refuses structures with elements it was not trained on, unless the user opts in."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule

from localframe import models
from localframe.calculator import Calculator
from localframe.cli import main
from localframe.errors import InputError
from localframe.inference import evaluate_many
from localframe.io import load_model, save_model, trained_elements

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(elements=(1, 6, 8), seed: int = 0):
    torch.manual_seed(seed)
    model = models.create("schnet", hidden_channels=8, num_layers=1)
    if elements is not None:
        model.metadata = {"elements": list(elements)}
    return model


@pytest.fixture
def hco_file(tmp_path):
    return str(save_model(tiny_model(), tmp_path / "hco.pt"))


@pytest.fixture
def ammonia_file(tmp_path):
    path = tmp_path / "ammonia.xyz"
    ase.io.write(path, molecule("NH3"))
    return str(path)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_model_file_keeps_its_elements(hco_file):
    assert trained_elements(load_model(hco_file)) == (1, 6, 8)


def test_cli_md_on_ammonia_with_an_hco_model_stops_with_one_line(capsys, tmp_path, hco_file, ammonia_file):
    traj = tmp_path / "md.extxyz"
    code = main(["md", hco_file, ammonia_file, "--steps", "2", "--traj", str(traj), "--quiet"])
    err = one_line_error(capsys)
    assert code == 2 and not traj.exists()
    assert err.startswith("localframe md: error:") and ammonia_file in err
    assert "has N, but the model was trained on H, C, O only" in err and "--allow-unseen-elements" in err
    code = main(["md", hco_file, ammonia_file, "--steps", "2", "--traj", str(traj), "--quiet",
                 "--allow-unseen-elements"])
    assert code == 0 and traj.exists()


def test_cli_relax_and_evaluate_refuse_unseen_elements(capsys, tmp_path, hco_file, ammonia_file):
    assert main(["relax", hco_file, ammonia_file, "--quiet", "--out", str(tmp_path / "r.extxyz")]) == 2
    assert "has N" in one_line_error(capsys)
    data = tmp_path / "data.extxyz"
    frames = [molecule("CH4"), molecule("NH3")]
    for a in frames:
        a.info["energy"] = 0.0
    ase.io.write(data, frames)
    assert main(["evaluate", hco_file, str(data)]) == 2
    err = one_line_error(capsys)
    assert f"{data}: structure 1: has N" in err
    assert main(["evaluate", hco_file, str(data), "--allow-unseen-elements"]) == 0


def test_calculator_refuses_and_opts_in(hco_file):
    ammonia = molecule("NH3")
    ammonia.calc = Calculator(hco_file)
    with pytest.raises(InputError, match="has N, but the model was trained on H, C, O"):
        ammonia.get_potential_energy()
    ammonia.calc = Calculator(hco_file, allow_unseen_elements=True)
    assert np.isfinite(ammonia.get_potential_energy())
    with pytest.raises(InputError, match="structure 1: has N"):
        evaluate_many(hco_file, [molecule("CH4"), molecule("NH3")])
    methane = molecule("CH4")
    methane.calc = Calculator(hco_file)
    assert np.isfinite(methane.get_potential_energy())


def test_committee_knows_the_common_elements_and_old_files_are_not_checked(tmp_path):
    a = tiny_model((1, 6, 7, 8))
    b = tiny_model((1, 6, 8), seed=1)
    assert Calculator([a, b]).elements == (1, 6, 8)
    old = str(save_model(tiny_model(None), tmp_path / "old.pt"))  # no record of its elements
    ammonia = molecule("NH3")
    ammonia.calc = Calculator(old)
    assert Calculator(old).elements is None and np.isfinite(ammonia.get_potential_energy())
