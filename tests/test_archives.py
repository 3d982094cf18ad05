"""Real data in its own units: sGDML/MD17 and rMD17 archives, unit-less archives, and label keys
found in files written by other programs (MACE/NequIP-style ``REF_energy``, virials)."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.units import Bohr, kcal, mol

from localframe.cli import main
from localframe.data import readers, sources
from localframe.errors import InputError

KCAL = kcal / mol  # eV per kcal/mol


@pytest.fixture(scope="module")
def ethanol():
    """Three ethanol frames with known energies (eV) and forces (eV/Å)."""
    rng = np.random.default_rng(7)
    base = molecule("CH3CH2OH")
    R = np.stack([base.positions + 0.02 * rng.normal(size=base.positions.shape) for _ in range(3)])
    return {"z": base.numbers, "R": R, "E": -309.3 + 0.05 * rng.normal(size=3), "F": rng.normal(size=R.shape)}


def quiet_load(path, **options):
    notes = []
    return sources.load(path, notify=notes.append, **options), notes


def assert_one_line(err, *fragments):
    text = str(err.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def sgdml(path, eth, e_unit="kcal/mol", r_unit="Ang", **more):
    """An archive as sGDML writes it: E as (n, 1), units as string arrays, metadata next to the data."""
    length = {"Ang": 1.0, "bohr": Bohr}[r_unit]
    energy = {"kcal/mol": KCAL, "eV": 1.0}[e_unit]
    np.savez(path, R=eth["R"] / length, z=eth["z"], E=(eth["E"] / energy)[:, None], F=eth["F"] / (energy / length),
             e_unit=np.array(e_unit), r_unit=np.array(r_unit), name=np.array("ethanol"), theory=np.array("test"),
             type=np.array("d"), E_mean=np.array((eth["E"] / energy).mean()), **more)
    return path


def check_values(data, eth, atol=1e-9):
    """``atol``: extxyz stores arrays with 8 decimals."""
    assert len(data) == 3 and data.labels == ("energy", "forces")
    assert np.allclose([a.info["energy"] for a in data.atoms], eth["E"], rtol=0, atol=atol)
    assert np.allclose(np.stack([a.arrays["forces"] for a in data.atoms]), eth["F"], rtol=0, atol=atol)
    assert np.allclose(np.stack([a.positions for a in data.atoms]), eth["R"], rtol=0, atol=atol)


# ------------------------------------------------------------------------------ sGDML / MD17
def test_sgdml_archive_is_read_in_its_stored_units(tmp_path, ethanol):
    data, notes = quiet_load(sgdml(tmp_path / "ethanol.npz", ethanol))
    check_values(data, ethanol)
    assert data.source_units == {"length": "Ang", "energy": "kcal/mol", "forces": "kcal/mol/Ang"}
    assert any("stored in the file" in note and "kcal/mol" in note for note in notes)
    assert notes == [f"{tmp_path / 'ethanol.npz'}: {note}" for note in data.notes]  # each prefixed with the file


def test_sgdml_length_unit_and_byte_strings(tmp_path, ethanol):
    path = sgdml(tmp_path / "bohr.npz", ethanol, e_unit="eV", r_unit="bohr")
    content = dict(np.load(path))
    content["e_unit"], content["r_unit"] = np.array(b"eV"), np.array(b"bohr")  # older numpy/Python 2 writers
    np.savez(path, **content)
    data, _ = quiet_load(path)
    check_values(data, ethanol)  # positions from bohr, forces from eV/bohr (e_unit/r_unit)
    assert data.source_units["forces"] == "eV/bohr"


def test_sgdml_lattice_makes_a_periodic_structure(tmp_path, ethanol):
    cell = 12.0 * np.eye(3)
    data, _ = quiet_load(sgdml(tmp_path / "box.npz", ethanol, lattice=cell))
    assert data.atoms[0].pbc.all() and np.allclose(data.atoms[0].cell.array, cell)


def test_user_unit_agreeing_with_the_stored_one_is_fine_contradicting_is_an_error(tmp_path, ethanol):
    path = sgdml(tmp_path / "ethanol.npz", ethanol)
    data, _ = quiet_load(path, units={"energy": "kcal/mol", "length": "Å", "forces": "kcal/mol/Å"})
    check_values(data, ethanol)
    with pytest.raises(InputError) as err:
        quiet_load(path, units={"energy": "eV"})
    assert_one_line(err, str(path), "--unit energy=eV", "kcal/mol")
    with pytest.raises(InputError) as err:
        quiet_load(path, units={"forces": "eV/Å"})
    assert_one_line(err, str(path), "--unit forces=eV/Å")


def test_sgdml_archive_with_other_label_keys(tmp_path, ethanol):
    path = tmp_path / "two.npz"
    np.savez(path, R=ethanol["R"], z=ethanol["z"], E=ethanol["E"] + 1.0, E_ccsd=ethanol["E"], F=ethanol["F"],
             e_unit=np.array("eV"), r_unit=np.array("Ang"))
    data, _ = quiet_load(path, keys={"energy": "E_ccsd"})
    check_values(data, ethanol)
    with pytest.raises(InputError) as err:
        quiet_load(path, keys={"energy": "E_dft"})
    assert_one_line(err, str(path), "E_dft", "E_ccsd")  # the keys found are listed


# ------------------------------------------------------------------------------ rMD17
def rmd17(path, eth):
    k = KCAL
    np.savez(path, nuclear_charges=eth["z"], coords=eth["R"], energies=eth["E"] / k, forces=eth["F"] / k,
             old_indices=np.arange(3), old_energies=eth["E"][::-1] / k, old_forces=eth["F"][::-1] / k)
    return path


def test_rmd17_archive_uses_the_documented_units_and_says_so(tmp_path, ethanol):
    data, notes = quiet_load(rmd17(tmp_path / "rmd17_ethanol.npz", ethanol))
    check_values(data, ethanol)  # old_energies / old_forces (reversed here) are not the labels
    assert data.source_units == {"length": "Å", "energy": "kcal/mol", "forces": "kcal/mol/Å"}
    assert any("documented" in note and "rMD17" in note for note in notes)
    assert any("old_energies" in note for note in notes)


def test_rmd17_documented_units_can_be_overridden_with_a_notice(tmp_path, ethanol):
    data, notes = quiet_load(rmd17(tmp_path / "r.npz", ethanol), units={"energy": "eV"})
    assert data.atoms[0].info["energy"] == pytest.approx(ethanol["E"][0] / KCAL)
    assert data.source_units["forces"] == "eV/Å"  # forces follow the energy unit the user gave
    assert any("overrides" in note and "kcal/mol" in note for note in notes)


# ------------------------------------------------------------------------------ archives without units
def test_archive_without_units_needs_unit(tmp_path, ethanol):
    path = tmp_path / "plain.npz"
    np.savez(path, R=ethanol["R"], z=ethanol["z"], E=ethanol["E"] / KCAL, F=ethanol["F"] / KCAL)
    with pytest.raises(InputError) as err:
        quiet_load(path)
    assert_one_line(err, str(path), "no energy unit", "--unit energy=")
    data, notes = quiet_load(path, units={"energy": "kcal/mol"})
    check_values(data, ethanol)
    assert data.source_units["forces"] == "kcal/mol/Å"
    assert any("positions read as Å" in note for note in notes)  # the length convention is said, not silent


def test_archive_with_forces_only_needs_a_unit_too(tmp_path, ethanol):
    path = tmp_path / "forces.npz"
    np.savez(path, R=ethanol["R"], z=ethanol["z"], F=ethanol["F"] / KCAL)
    with pytest.raises(InputError) as err:
        quiet_load(path)
    assert_one_line(err, str(path), "no forces unit", "--unit forces=")
    data, _ = quiet_load(path, units={"energy": "kcal/mol"})
    assert np.allclose(data.atoms[2].arrays["forces"], ethanol["F"][2])


def test_archive_of_geometries_needs_no_unit(tmp_path, ethanol):
    path = tmp_path / "geometries.npz"
    np.savez(path, R=ethanol["R"], z=ethanol["z"])
    data, _ = quiet_load(path)
    assert data.labels == () and len(data) == 3


# ------------------------------------------------------------------------------ label keys of other programs
def write_frames(path, eth, **keys):
    """Ethanol frames with labels under the given keys: name -> 'energy' | 'forces'."""
    frames = []
    for k in range(3):
        atoms = molecule("CH3CH2OH")
        atoms.positions = eth["R"][k]
        for name, what in keys.items():
            if what == "energy":
                atoms.info[name] = eth["E"][k]
            else:
                atoms.arrays[name] = eth["F"][k]
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_extxyz_with_mace_keys_is_found_and_said(tmp_path, ethanol):
    path = write_frames(tmp_path / "mace.extxyz", ethanol, REF_energy="energy", REF_forces="forces")
    data, notes = quiet_load(path)
    check_values(data, ethanol, atol=1e-7)
    assert any("energy read from key 'REF_energy'" in note for note in notes)
    assert any("forces read from key 'REF_forces'" in note for note in notes)


def test_ambiguous_keys_stop_with_the_candidates_and_the_choice(tmp_path, ethanol):
    path = write_frames(tmp_path / "two.extxyz", ethanol, REF_energy="energy", DFT_energy="energy", forces="forces")
    with pytest.raises(InputError) as err:
        quiet_load(path)
    assert_one_line(err, str(path), "REF_energy", "DFT_energy", "--key energy=REF_energy")
    data, _ = quiet_load(path, keys={"energy": "REF_energy"})
    check_values(data, ethanol, atol=1e-7)


def test_default_key_wins_and_other_candidates_are_mentioned(tmp_path, ethanol):
    path = write_frames(tmp_path / "both.extxyz", ethanol, REF_energy="energy", forces="forces")
    frames = ase.io.read(path, ":")
    for frame in frames:
        frame.info["energy"] = frame.info["REF_energy"] + 1.0
    ase.io.write(path, frames, format="extxyz")
    data, notes = quiet_load(path)
    assert data.atoms[0].info["energy"] == pytest.approx(ethanol["E"][0] + 1.0)
    assert any("'REF_energy'" in note and "--key energy=REF_energy" in note for note in notes)


def test_virial_becomes_stress(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    virial = np.array([[1.0, 0.2, 0.0], [0.2, 2.0, 0.1], [0.0, 0.1, 3.0]])
    atoms.info["REF_energy"] = -14.0
    atoms.info["REF_virial"] = virial.reshape(-1)
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, [atoms], format="extxyz")
    data, notes = quiet_load(path)
    assert data.labels == ("energy", "stress")
    assert np.allclose(data.atoms[0].info["stress"], -virial / atoms.get_volume())
    assert any("virial" in note for note in notes)
    molecule_path = tmp_path / "h2o.extxyz"
    water = molecule("H2O")
    water.info["virial"] = np.eye(3)
    ase.io.write(molecule_path, [water], format="extxyz")
    with pytest.raises(InputError) as err:
        quiet_load(molecule_path)
    assert_one_line(err, str(molecule_path), "structure 0", "virial", "not periodic")


# ------------------------------------------------------------------------------ options that name nothing
def test_options_that_name_nothing_in_the_source_are_errors(tmp_path, ethanol):
    npz = sgdml(tmp_path / "ethanol.npz", ethanol)
    xyz = write_frames(tmp_path / "e.extxyz", ethanol, energy="energy")
    cases = [
        ("qm9", {"keys": {"energy": "U0"}}, "--key"),
        ("qm9", {"units": {"energy": "eV"}}, "--unit"),
        (npz, {"extra": {"gap": "gap"}}, "--extra"),
        (npz, {"keys": {"stress": "S"}}, "stress"),
        (npz, {"units": {"dipole": "Debye"}}, "dipole"),
        (xyz, {"units": {"forces": "eV/Å"}}, "forces"),
        (xyz, {"keys": {"energie": "energy"}}, "energie"),
    ]
    for spec, options, fragment in cases:
        with pytest.raises(InputError) as err:
            quiet_load(spec, **options)
        assert_one_line(err, str(spec), fragment)


# ------------------------------------------------------------------------------ the command line
def test_data_info_on_an_sgdml_archive_reports_ev(capsys, tmp_path, ethanol):
    path = str(sgdml(tmp_path / "ethanol.npz", ethanol))
    assert main(["data", "info", path, "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["labels"]["energy"]["mean"] == pytest.approx(ethanol["E"].mean(), abs=1e-9)
    assert summary["labels"]["energy"]["unit"] == "eV" and summary["labels"]["energy"]["file_unit"] == "kcal/mol"
    assert "stored in the file" in captured.err
    assert main(["data", "info", path]) == 0
    assert f"{ethanol['E'].mean():.6g}" in capsys.readouterr().out


def test_data_info_on_a_unitless_archive_is_one_line(capsys, tmp_path, ethanol):
    path = tmp_path / "plain.npz"
    np.savez(path, R=ethanol["R"], z=ethanol["z"], E=ethanol["E"])
    assert main(["data", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "--unit energy=" in err
    assert main(["data", "info", str(path), "--unit", "energy=eV", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"]["energy"]["mean"] == pytest.approx(ethanol["E"].mean())


def test_data_info_on_mace_keys_shows_the_labels(capsys, tmp_path, ethanol):
    path = str(write_frames(tmp_path / "mace.extxyz", ethanol, REF_energy="energy", REF_forces="forces"))
    assert main(["data", "info", path, "--json"]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)["labels"]) == {"energy", "forces"}
    assert "energy read from key 'REF_energy'" in captured.err


def test_reader_notes_without_the_entry_point(tmp_path, ethanol):
    data = readers.read_npz(rmd17(tmp_path / "r.npz", ethanol))
    assert any("documented" in note for note in data.notes)
