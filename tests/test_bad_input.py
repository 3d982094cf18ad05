"""Every kind of bad input exits non-zero with one clear line naming the file, structure and problem."""

import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms

from localframe.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def write_extxyz(path, frames):
    import ase.io

    ase.io.write(path, frames, format="extxyz")
    return str(path)


def water(**info):
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    a.info.update(info)
    return a


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_non_existent_path(capsys, tmp_path):
    path = str(tmp_path / "missing.extxyz")
    assert_one_line_error(*run_cli(capsys, "data", "info", path), path, "no such file")


def test_empty_file(capsys, tmp_path):
    path = tmp_path / "empty.extxyz"
    path.write_text("")
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "empty")


def test_malformed_extxyz(capsys, tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text("3\nProperties=species:S:1:pos:R:3\nO 0 0 0\nH 0.9 0 0\n")
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "cannot read")


def test_unknown_element(capsys, tmp_path):
    frames = [water(energy=1.0), Atoms("XH", positions=[[0, 0, 0], [1, 0, 0]], info={"energy": 1.0})]
    path = write_extxyz(tmp_path / "x.extxyz", frames)
    assert_one_line_error(*run_cli(capsys, "data", "info", path), path, "structure 1", "unknown element")


def test_unknown_element_in_npz(capsys, tmp_path):
    path = tmp_path / "z.npz"
    np.savez(path, R=np.array([[[0, 0, 0], [1.0, 0, 0]]]), z=np.array([1, 250]), E=np.zeros(1))
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "structure 0", "unknown element")


def test_nan_coordinates(capsys, tmp_path):
    path = tmp_path / "nan.npz"
    R = np.array([[[0, 0, 0], [1.0, 0, 0]], [[0, 0, 0], [np.nan, 0, 0]]])
    np.savez(path, R=R, z=np.array([1, 1]), E=np.zeros(2))
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "structure 1", "NaN")


def test_inf_coordinates(capsys, tmp_path):
    path = tmp_path / "inf.npz"
    np.savez(path, R=np.array([[[0, 0, 0], [np.inf, 0, 0]]]), z=np.array([1, 1]))
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "structure 0", "inf")


def test_atoms_too_close(capsys, tmp_path):
    frames = [water(energy=1.0), water(energy=2.0), Atoms("H2", positions=[[0, 0, 0], [0.05, 0, 0]], info={"energy": 1.0})]
    path = write_extxyz(tmp_path / "close.extxyz", frames)
    assert_one_line_error(*run_cli(capsys, "data", "info", path), path, "structure 2", "closer than 0.1")


def test_missing_label_key(capsys, tmp_path):
    path = write_extxyz(tmp_path / "w.extxyz", [water(energy=1.0)])
    code, err = run_cli(capsys, "data", "info", path, "--key", "energy=REF_energy")
    assert_one_line_error(code, err, path, "structure 0", "REF_energy")


def test_label_missing_in_a_later_structure(capsys, tmp_path):
    path = write_extxyz(tmp_path / "w.extxyz", [water(gap=1.0), water()])
    code, err = run_cli(capsys, "data", "info", path, "--extra", "gap=gap")
    assert_one_line_error(code, err, path, "structure 1", "gap")


def test_wrong_label_shape(capsys, tmp_path):
    path = write_extxyz(tmp_path / "dip.extxyz", [water(dipole=np.array([1.0, 2.0]))])
    assert_one_line_error(*run_cli(capsys, "data", "info", path), path, "structure 0", "dipole", "shape")


def test_wrong_forces_shape_in_npz(capsys, tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, R=np.zeros((2, 2, 3)) + [[0, 0, 0], [1, 0, 0]], z=np.array([1, 1]), F=np.zeros((2, 3, 3)))
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "F has shape")


def test_wrong_npz_keys(capsys, tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, coords=np.zeros((1, 2, 3)), numbers=np.array([1, 1]))
    assert_one_line_error(*run_cli(capsys, "data", "info", str(path)), str(path), "missing npz keys", "coords")


def test_stress_on_non_periodic_structure(capsys, tmp_path):
    path = write_extxyz(tmp_path / "s.extxyz", [water(energy=1.0, stress=np.zeros(6))])
    assert_one_line_error(*run_cli(capsys, "data", "info", path), path, "structure 0", "not periodic")


def test_unknown_unit(capsys, tmp_path):
    path = write_extxyz(tmp_path / "w.extxyz", [water(energy=1.0)])
    assert_one_line_error(*run_cli(capsys, "data", "info", path, "--unit", "energy=furlongs"), "unknown energy unit")


def test_real_entry_point_exit_code(tmp_path):
    path = str(tmp_path / "missing.npz")
    proc = subprocess.run([sys.executable, "-m", "localframe.cli", "data", "info", path], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and path in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_every_subcommand():
    proc = subprocess.run([sys.executable, "-m", "localframe.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in ("quickstart", "data", "label", "sample", "train", "evaluate", "md", "relax", "bench"):
        assert name in proc.stdout


@pytest.mark.parametrize("spec", ["qm9"])
def test_data_info_qm9_json(capsys, spec):
    import json

    code, _ = run_cli(capsys, "data", "info", spec, "--json")
    assert code == 0
