"""QM9 offline, from the CSV files that the ``qm9pack`` package ships (130,831 molecules).

The package is never imported (it needs ``pkg_resources``); its data folder is located with
``importlib.util.find_spec`` and parsed once into a NumPy cache (``~/.cache/localframe`` or
``$LOCALFRAME_CACHE``), so later loads take about a second.

Targets and units (energies in eV, as everywhere in localframe):

=========  ==============================  ==============
name       meaning                         unit
=========  ==============================  ==============
mu         dipole moment magnitude         Debye
alpha      isotropic polarizability        bohr³
homo       HOMO energy                     eV
lumo       LUMO energy                     eV
gap        HOMO–LUMO gap                   eV
r2         electronic spatial extent       bohr²
zpve       zero-point vibrational energy   eV
U0         internal energy at 0 K          eV
U          internal energy at 298.15 K     eV
H          enthalpy at 298.15 K            eV
G          free energy at 298.15 K         eV
Cv         heat capacity at 298.15 K       cal/(mol K)
U0_atom    U0 − Σ atom references          eV
U_atom     U − Σ atom references           eV
H_atom     H − Σ atom references           eV
G_atom     G − Σ atom references           eV
=========  ==============================  ==============

Each column is read by name from the CSV header (never by position). The split convention is
110,000 training / 10,000 validation / the remaining 10,831 test molecules from one permutation
with a fixed seed; ``n_train`` takes the first molecules of the training part.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import Hartree

from localframe.errors import InputError
from localframe.files import atomic_open, cache_dir

N_MOLECULES = 130_831
SPLIT_SIZES = (110_000, 10_000)  # train, validation; test is the rest
SPLIT_SEED = 42
CACHE_VERSION = 1

# (target name, CSV column, factor to the documented unit)
COLUMNS = [
    ("mu", "Dipole_debye", 1.0),
    ("alpha", "Polarizability_bohr3", 1.0),
    ("homo", "HOMO_au", Hartree),
    ("lumo", "LUMO_au", Hartree),
    ("gap", "HOMO_LUMO_gap_au", Hartree),
    ("r2", "R2_bohr2", 1.0),
    ("zpve", "ZPVE_au", Hartree),
    ("U0", "InternalEnergy_0K_au", Hartree),
    ("U", "InternalEnergy_298K_au", Hartree),
    ("H", "Enthalphy_298K_au", Hartree),
    ("G", "GibbsFreeEnergy_298K_au", Hartree),
    ("Cv", "Heatcapacity_Cv_cal_mol_K", 1.0),
]
UNITS = {
    "mu": "Debye", "alpha": "bohr³", "homo": "eV", "lumo": "eV", "gap": "eV", "r2": "bohr²",
    "zpve": "eV", "U0": "eV", "U": "eV", "H": "eV", "G": "eV", "Cv": "cal/(mol K)",
    "U0_atom": "eV", "U_atom": "eV", "H_atom": "eV", "G_atom": "eV",
}
TARGETS = tuple(UNITS)
# How atomic contributions add up to each target: intensive orbital energies are averaged,
# everything else is summed.
AGGREGATION = {name: ("mean" if name in ("homo", "lumo", "gap") else "sum") for name in TARGETS}

# Energies of the free atoms at the QM9 level of theory (Hartree), from the data set's atomref table.
ATOM_REFERENCES = {  # element: (U0, U, H, G)
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}
SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


@dataclass
class QM9:
    """All of QM9 as flat arrays; ``atoms(k)`` builds molecule k with its targets in ``info``."""

    ids: np.ndarray  # (M,) QM9 index (1..133885)
    smiles: np.ndarray  # (M,) str
    n_atoms: np.ndarray  # (M,)
    numbers: np.ndarray  # (sum n_atoms,)
    positions: np.ndarray  # (sum n_atoms, 3) Å
    targets: dict[str, np.ndarray]  # name -> (M,) in UNITS

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_atoms)])

    def atoms(self, k: int) -> Atoms:
        return self.atoms_list([k])[0]

    def atoms_list(self, indices=None) -> list[Atoms]:
        """Molecules as ``ase.Atoms``, every target in ``info`` (plus ``qm9_id`` and ``smiles``)."""
        indices = range(len(self)) if indices is None else indices
        offsets = self.offsets
        out = []
        for k in indices:
            mol = Atoms(numbers=self.numbers[offsets[k] : offsets[k + 1]], positions=self.positions[offsets[k] : offsets[k + 1]])
            mol.info.update({name: float(values[k]) for name, values in self.targets.items()})
            mol.info["qm9_id"] = int(self.ids[k])
            mol.info["smiles"] = str(self.smiles[k])
            out.append(mol)
        return out


def split(n_train: int | None = None, n_val: int | None = None, seed: int = SPLIT_SEED,
          train_offset: int | None = None) -> dict[str, np.ndarray]:
    """Indices of the standard split: 110,000 / 10,000 / rest, subsets by ``n_train``/``n_val``.

    ``train_offset`` = k: training and validation molecules both come from the standard training split
    after its first k (train = train[k : k + n_train], val = the next n_val; defaults: n_val 10,000 and
    n_train the rest), so they are disjoint from a run with ``n_train`` ≤ k (its training molecules) and
    from the standard validation and test splits (pretraining on molecules a fine-tuning run never sees)."""
    train_size, val_size = SPLIT_SIZES
    perm = np.random.default_rng(seed).permutation(N_MOLECULES)
    train, val, test = perm[:train_size], perm[train_size : train_size + val_size], perm[train_size + val_size :]
    if train_offset is not None:
        return _after(train, test, train_offset, n_train, n_val)
    for name, n, limit in (("n_train", n_train, train_size), ("n_val", n_val, val_size)):
        if n is not None and not 0 < n <= limit:
            raise InputError(f"qm9: {name} must be between 1 and {limit}, got {n}")
    return {
        "train": train[:n_train] if n_train else train,
        "val": val[:n_val] if n_val else val,
        "test": test,
    }


def _after(train: np.ndarray, test: np.ndarray, offset: int, n_train: int | None, n_val: int | None) -> dict:
    """Training and validation molecules from ``train[offset:]`` (see :func:`split`)."""
    rest = len(train) - offset
    n_val = n_val or min(SPLIT_SIZES[1], rest // 2)
    n_train = n_train or rest - n_val
    if not 0 <= offset < len(train) or n_train + n_val > rest:
        raise InputError(f"qm9: data.train_offset {offset} + data.n_train {n_train} + data.n_val {n_val} is more than "
                         f"the {len(train)} molecules of the training split")
    return {"train": train[offset : offset + n_train], "val": train[offset + n_train : offset + n_train + n_val],
            "test": test}


def data_dir() -> Path:
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("qm9: the qm9pack package is not installed (pip install 'localframe[chem]')")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not folder.is_dir():
        raise InputError(f"qm9: no data folder in the qm9pack installation at {folder}")
    return folder


def load(cache: bool = True) -> QM9:
    """QM9 with all targets; parsed from qm9pack's CSVs on first use, then from the cache."""
    path = cache_dir() / f"qm9_v{CACHE_VERSION}.npz"
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as z:
            targets = {name: z[f"target_{name}"] for name in TARGETS}
            return QM9(z["ids"], z["smiles"], z["n_atoms"], z["numbers"], z["positions"], targets)
    data = _parse(data_dir())
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as handle:
            np.savez(
                handle, ids=data.ids, smiles=data.smiles, n_atoms=data.n_atoms, numbers=data.numbers,
                positions=data.positions, **{f"target_{k}": v for k, v in data.targets.items()},
            )
    return data


def _parse(folder: Path) -> QM9:
    files = sorted(folder.glob("qm9_part*.csv"))
    if not files:
        raise InputError(f"qm9: no qm9_part*.csv files in {folder}")
    ids, smiles, n_atoms, numbers, coords = [], [], [], [], []
    raw = {name: [] for name, _, _ in COLUMNS}
    for file in files:
        with open(file, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [col for _, col, _ in COLUMNS + [("", "Elements", 0), ("", "XYZ_Ang", 0)] if col not in reader.fieldnames]
            if missing:
                raise InputError(f"qm9: {file.name} lacks the columns {missing}")
            for row in reader:
                symbols = row["Elements"].strip("[]").replace("'", "").split(",")
                xyz = np.array(row["XYZ_Ang"].replace("[", "").replace("]", "").split(","), dtype=np.float64)
                if xyz.size != 3 * len(symbols):
                    raise InputError(f"qm9: {file.name}: molecule {row['Index']} has {len(symbols)} atoms but {xyz.size} coordinates")
                ids.append(int(row["Index"]))
                smiles.append(row["SMILES"])
                n_atoms.append(len(symbols))
                numbers.extend(SYMBOL_TO_Z[s.strip()] for s in symbols)
                coords.append(xyz.reshape(-1, 3))
                for name, col, _ in COLUMNS:
                    raw[name].append(row[col])
    order = np.argsort(ids, kind="stable")
    n_atoms_arr = np.array(n_atoms, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_atoms_arr)])
    numbers_arr = np.array(numbers, dtype=np.int64)
    positions = np.concatenate(coords)
    atom_order = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in order])
    targets = {name: np.array(raw[name], dtype=np.float64)[order] * factor for name, _, factor in COLUMNS}
    n_sorted, z_sorted = n_atoms_arr[order], numbers_arr[atom_order]
    mol_index = np.repeat(np.arange(len(order)), n_sorted)
    for col, name in enumerate(("U0", "U", "H", "G")):
        ref = np.zeros(10)
        for z, values in ATOM_REFERENCES.items():
            ref[z] = values[col] * Hartree
        targets[f"{name}_atom"] = targets[name] - np.bincount(mol_index, weights=ref[z_sorted], minlength=len(order))
    return QM9(
        ids=np.array(ids, dtype=np.int64)[order], smiles=np.array(smiles)[order], n_atoms=n_sorted,
        numbers=z_sorted, positions=positions[atom_order], targets=targets,
    )
