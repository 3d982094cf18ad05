"""Shared fixtures: models with random weights and non-zero biases, and test structures.

Everything physical is checked in float64. Models are built small where they accept it
(``hidden_channels``/``num_layers``), otherwise with their defaults.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from localframe import models
from localframe.data.batch import AtomsBatch
from localframe.errors import InputError

SMALL_CONFIGS = ({"hidden_channels": 16, "num_layers": 2}, {"hidden_channels": 16}, {})
BIAS_STD = 0.1


@pytest.fixture(scope="module")
def one_thread():
    """Small structures: one torch thread is fastest, and fair to others sharing the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_biases(model: torch.nn.Module, seed: int = 0, std: float = BIAS_STD) -> torch.nn.Module:
    """Give every bias small random values, so that tests do not rely on zero-initialised biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1].startswith("bias"):
                param.copy_(std * torch.randn(param.shape, generator=generator, dtype=torch.float64))
    return model


def build_model(name: str, seed: int = 0, **kwargs) -> models.AtomisticModel:
    """Model ``name`` in float64 eval mode, small if it allows, random weights and biases."""
    errors = []
    for small in SMALL_CONFIGS:
        torch.manual_seed(seed)
        try:
            model = models.create(name, **{**small, **kwargs})
        except (InputError, TypeError, ValueError, AssertionError) as err:
            errors.append(err)
            continue
        return randomize_biases(model, seed).double().eval()
    raise errors[-1]


def predict(model, atoms, dtype=torch.float64, **forward_kwargs) -> dict[str, np.ndarray]:
    """Model outputs for one ``Atoms`` or a list of them, as float64 numpy arrays."""
    batch = AtomsBatch.from_atoms(atoms, cutoff=model.cutoff, dtype=dtype)
    return {k: v.detach().double().numpy() for k, v in model(batch, **forward_kwargs).items()}


# ---------------------------------------------------------------------- structures
def rattled(atoms: Atoms, stdev: float = 0.05, seed: int = 1) -> Atoms:
    atoms = atoms.copy()
    atoms.rattle(stdev=stdev, seed=seed)
    return atoms


def kekule_benzene(cc: float = 1.40, ch: float = 1.09):
    """Benzene as a generated molecule: planar D6h ring of C–C length ``cc``, C–H ``ch`` (Å), Kekulé bonds."""
    from localframe.generate.molecule import Molecule

    ang = np.arange(6) * np.pi / 3
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros(6)], 1)
    pos = np.concatenate([cc * ring, (cc + ch) * ring])
    bonds = [(k, (k + 1) % 6, 1 + k % 2) for k in range(6)] + [(k, k + 6, 1) for k in range(6)]
    return Molecule([6] * 6 + [1] * 6, pos, None, bonds)


def ethanol() -> Atoms:
    """Rattled ethanol: no symmetry left."""
    return rattled(molecule("CH3CH2OH"), 0.05, seed=3)


def chiral() -> Atoms:
    """CHFClBr, a chiral molecule (tetrahedral carbon with four different substituents)."""
    directions = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3.0)
    lengths = np.array([1.09, 1.35, 1.77, 1.94])
    positions = np.vstack([np.zeros(3), directions * lengths[:, None]])
    return Atoms("CHFClBr", positions=positions)


def sf6() -> Atoms:
    d = 1.56
    axes = np.vstack([np.eye(3), -np.eye(3)]) * d
    return Atoms("SF6", positions=np.vstack([np.zeros(3), axes]))


def symmetric_molecules() -> dict[str, Atoms]:
    """Highly symmetric and degenerate structures, where unsafe normalisations give NaN."""
    water, ammonia = molecule("H2O"), molecule("NH3")
    ammonia.translate([12.0, 0.0, 0.0])  # further apart than any cutoff used here
    return {
        "H2": molecule("H2"),
        "CO2": molecule("CO2"),
        "CH4": molecule("CH4"),
        "benzene": molecule("C6H6"),
        "SF6": sf6(),
        "single atom": Atoms("O", positions=[[0.0, 0.0, 0.0]]),
        "two distant molecules": water + ammonia,
    }


def silicon() -> Atoms:
    """Rattled 2-atom diamond Si cell; its lattice vectors (3.84 Å) are shorter than the cutoff."""
    return rattled(bulk("Si", "diamond", a=5.43), 0.05, seed=5)


def triclinic() -> Atoms:
    """A 3-atom triclinic cell with lattice vectors shorter than the cutoff."""
    cell = np.array([[3.9, 0.0, 0.0], [0.9, 3.6, 0.0], [0.6, -0.7, 4.1]])
    frac = np.array([[0.05, 0.10, 0.02], [0.45, 0.55, 0.40], [0.70, 0.15, 0.75]])
    return Atoms("SiOC", scaled_positions=frac, cell=cell, pbc=True)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def traced(model, skin: float = 0.0):
    """A float64 calculator whose fixed-graph path (as ``compile=True`` sets it) runs the traced graph
    without Inductor: seconds, not minutes."""
    from localframe import fast
    from localframe.calculator import Calculator

    calc = Calculator(model, dtype="float64", skin=skin)
    calc.evaluator.fast = fast.FastPath(calc.evaluator, compile=False)
    return calc


@pytest.fixture
def lf():
    """Helpers and structures shared by the test modules."""
    return types.SimpleNamespace(
        build_model=build_model, predict=predict, randomize_biases=randomize_biases,
        ethanol=ethanol, chiral=chiral, sf6=sf6, symmetric_molecules=symmetric_molecules,
        silicon=silicon, triclinic=triclinic, random_rotation=random_rotation, rattled=rattled, traced=traced,
    )


def write_emt_frames(path, name: str, count: int, stdev: float, seed: int = 0) -> str:
    """``count`` rattled copies of molecule ``name`` labelled with ASE's EMT (energy, forces), as an extxyz."""
    import ase.io
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        a = molecule(name)
        a.positions += stdev * rng.normal(size=a.positions.shape)
        a.calc = EMT()
        a.info["energy"], a.arrays["forces"] = a.get_potential_energy(), a.get_forces()
        a.calc = None
        frames.append(a)
    ase.io.write(path, frames)
    return str(path)


@pytest.fixture(scope="module")
def emt_water(tmp_path_factory) -> str:
    """20 rattled water molecules labelled with ASE's EMT (energy, forces): an extxyz for short training runs."""
    return write_emt_frames(tmp_path_factory.mktemp("data") / "water.extxyz", "H2O", 20, 0.05)
