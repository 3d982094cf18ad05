"""Reference labels from GFN2-xTB (tblite): single points for data sets, and MD sampling.

Three entry points:

* :func:`label` computes energy (eV), forces (eV/Å) and, for structures periodic in all three
  directions, stress (eV/Å³) for a list of ``ase.Atoms``;
* :func:`localframe.reference.labelling.label_file` does the same for a structure file, writing
  an extended-XYZ file as it goes (resumable, in parallel processes or on a Dask cluster);
* :func:`sample` runs Langevin molecular dynamics with GFN2-xTB from a SMILES string or a
  structure file and writes the visited frames with their energies and forces (an MD17-style
  data set), each frame as soon as it is computed.

Labels live in ``atoms.info["energy"]``, ``atoms.arrays["forces"]`` and ``atoms.info["stress"]``
(3x3, ASE sign convention: ``stress = (1/V) dE/dstrain``). Returned structures carry no calculator.

Threads: tblite parallelises with OpenMP, which only slows down molecules this small and fights
with everything else running on the machine. Importing this module sets ``OMP_NUM_THREADS=1``
unless the user has set it. Because the OpenMP runtime reads that variable once, when it is first
loaded (``import torch`` already loads it), every tblite call here also sets the runtime's thread
count to ``OMP_NUM_THREADS`` for its duration and restores the previous value afterwards, so the
setting takes effect whatever was imported first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Iterable, Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402

from localframe.errors import InputError, one_line  # noqa: E402
from localframe.md import checks  # noqa: E402
from localframe.progress import progress as progress_bar  # noqa: E402
from localframe.reference.extxyz_frames import FrameAppender, frame_text  # noqa: E402

__all__ = ["label", "sample", "METHODS", "embed_smiles", "tblite_calculator_class", "tblite_threads"]

METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


# ---------------------------------------------------------------------- public API
def label(
    atoms_list: Atoms | Iterable[Atoms],
    *,
    method: str = "GFN2-xTB",
    charge: int | None = None,
    progress: bool = True,
    source: str | None = None,
    accuracy: float = 1.0,
) -> list[Atoms]:
    """Label structures with xTB energy (eV), forces (eV/Å) and stress (eV/Å³).

    Every structure is computed from scratch (no wavefunction is carried over), so a structure's
    labels do not depend on its neighbours in the list. Returns copies with
    ``info["energy"]`` (eV), ``arrays["forces"]`` (N, 3, eV/Å) and, for structures periodic in
    all three directions, ``info["stress"]`` (3, 3, eV/Å³, ASE sign convention); no calculator is
    attached. The total charge (e) is ``charge`` if given, else ``atoms.info["charge"]`` (default
    0); ``atoms.info["multiplicity"]``, when present, sets the spin multiplicity. A failed
    calculation raises :class:`InputError` naming ``source`` and the structure index. The total
    charge given as ``charge`` is recorded in ``info["charge"]``.
    """
    structures = [atoms_list] if isinstance(atoms_list, Atoms) else list(atoms_list)
    _check_method(method)
    TBLite = tblite_calculator_class()
    out = []
    with tblite_threads(), progress_bar(len(structures), f"{method} labels", progress, unit="structures") as bar:
        for index, atoms in enumerate(structures):
            out.append(_label_one(atoms, TBLite, method, charge, accuracy, source, index))
            bar.advance()
    return out


def sample(
    smiles_or_file: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    temperature: float = 500.0,
    frames: int = 200,
    timestep: float = 0.5,
    interval: int = 20,
    friction: float = 0.01,
    seed: int = 0,
    equilibration: float = 500.0,
    method: str = "GFN2-xTB",
    charge: int | None = None,
    progress: bool = True,
) -> list[Atoms]:
    """Sample an MD17-style data set by Langevin molecular dynamics with xTB.

    ``smiles_or_file`` is an existing structure file (its first structure is used) or else a
    SMILES string (hydrogens added, 3D coordinates embedded with RDKit using ``seed`` and relaxed
    with MMFF, or UFF where MMFF has no parameters). Velocities are drawn from the
    Maxwell-Boltzmann distribution at ``temperature`` (K); the Langevin thermostat uses
    ``friction`` (1/fs) and the time step ``timestep`` (fs); the centre of mass is held fixed.
    The first ``equilibration`` fs are discarded, then ``frames`` frames are kept, one every
    ``interval`` steps, each with the energy (eV) and forces (eV/Å) the MD computed for it
    (plus stress, eV/Å³, for a 3D-periodic input). The frames are returned and written as an
    extended-XYZ file: each frame is appended, whole and synced, to :func:`partial_path` of
    ``out_path`` as soon as it is computed, and that file is renamed to ``out_path`` at the end,
    so ``out_path`` exists only complete, while a killed or failed run leaves the frames it
    produced readable in the partial file. A rerun starts over. The same ``seed`` gives an
    identical file. A simulation that blows up (non-finite energy, atoms closer than 0.5 Å,
    temperature above 10x the target) or whose xTB calculation fails raises :class:`InputError`.
    """
    _check_method(method)
    temperature = checks.positive("temperature", temperature, "K")
    timestep = checks.positive("timestep", timestep, "fs")
    frames = checks.count("frames", frames)
    interval = checks.count("interval", interval)
    friction = checks.positive("friction", friction, "1/fs", allow_zero=True)
    equilibration = checks.positive("equilibration", equilibration, "fs", allow_zero=True)
    seed = checks.seed(seed)
    out_path = _check_output(out_path)

    atoms, source, mol_charge, multiplicity = _starting_structure(smiles_or_file, seed)
    total_charge = mol_charge if charge is None else int(charge)
    dynamics = _langevin(
        atoms, source=source, method=method, charge=total_charge, multiplicity=multiplicity,
        temperature=temperature, frames=frames, timestep=timestep, interval=interval,
        friction=friction, seed=seed, equilibration=equilibration, progress=progress,
    )
    partial = partial_path(out_path)
    trajectory: list[Atoms] = []
    try:
        with contextlib.closing(dynamics), FrameAppender(partial) as log:
            for frame in dynamics:
                log.append([frame_text(frame)])
                trajectory.append(frame)
    except BaseException as err:
        if not trajectory:
            partial.unlink(missing_ok=True)
        elif isinstance(err, InputError):
            kept = f"{len(trajectory)} frame" + ("s" if len(trajectory) > 1 else "")
            raise InputError(f"{err.problem}; {kept} kept in {partial}", err.source, err.index) from None
        raise
    os.replace(partial, out_path)
    return trajectory


def partial_path(out_path: str | os.PathLike) -> Path:
    """Where :func:`sample` appends the frames of ``out_path`` while it runs: ``NAME.partial.EXT``."""
    path = Path(out_path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


# ---------------------------------------------------------------------- labelling
def _label_one(atoms: Atoms, TBLite, method: str, charge, accuracy: float, source, index: int) -> Atoms:
    total_charge = _structure_charge(atoms, charge, source, index)
    multiplicity = _structure_multiplicity(atoms, source, index)
    work = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    work.calc = TBLite(method=method, charge=total_charge, multiplicity=multiplicity,
                       accuracy=accuracy, verbosity=0)
    properties = ["energy", "forces"] + (["stress"] if work.pbc.all() else [])
    try:
        work.calc.calculate(work, properties)
    except (RuntimeError, ValueError) as err:  # ase CalculationFailed/InputError, tblite errors
        raise InputError(f"{method} calculation failed: {one_line(err)}", source, index) from None
    results = work.calc.results
    out = atoms.copy()  # keeps info and arrays, drops any calculator and constraints
    out.calc = None
    out.set_constraint()
    for key in ("energy", "free_energy", "stress"):
        out.info.pop(key, None)
    if charge is not None:
        out.info["charge"] = total_charge
    _store_labels(out, results, source, index)
    return out


def _store_labels(atoms: Atoms, results: dict, source, index: int) -> None:
    energy = float(results["energy"])
    forces = np.array(results["forces"], dtype=np.float64).reshape(len(atoms), 3)
    if not np.isfinite(energy) or not np.isfinite(forces).all():
        raise InputError("xTB returned a non-finite energy or forces", source, index)
    atoms.info["energy"] = energy
    atoms.arrays["forces"] = forces
    if atoms.pbc.all() and "stress" in results:
        stress = _voigt_to_matrix(np.asarray(results["stress"], dtype=np.float64))
        if not np.isfinite(stress).all():
            raise InputError("xTB returned a non-finite stress", source, index)
        atoms.info["stress"] = stress


def _voigt_to_matrix(stress: np.ndarray) -> np.ndarray:
    """ASE's Voigt order (xx, yy, zz, yz, xz, xy) to a symmetric 3x3 matrix."""
    if stress.shape == (3, 3):
        return stress.copy()
    xx, yy, zz, yz, xz, xy = stress
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _structure_charge(atoms: Atoms, charge, source, index: int) -> int:
    value = atoms.info.get("charge", 0) if charge is None else charge
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"total charge must be an integer, got {value!r}", source, index) from None
    if not np.isfinite(number) or number != round(number):
        raise InputError(f"total charge must be an integer, got {value!r}", source, index)
    return int(round(number))


def _structure_multiplicity(atoms: Atoms, source, index: int) -> int | None:
    value = atoms.info.get("multiplicity")
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number != round(number) or number < 1:
        raise InputError(f"spin multiplicity must be a positive integer, got {value!r}", source, index)
    return int(round(number))


# ---------------------------------------------------------------------- MD sampling
def _langevin(
    atoms: Atoms, *, source: str, method: str, charge: int, multiplicity: int | None,
    temperature: float, frames: int, timestep: float, interval: int, friction: float, seed: int,
    equilibration: float, progress: bool,
) -> Iterator[Atoms]:
    """The kept frames, one at a time, as the simulation produces them (the model MD's Langevin
    integrator, Maxwell-Boltzmann start and guards, :mod:`localframe.md`)."""
    from localframe.md.driver import langevin, maxwell_boltzmann

    TBLite = tblite_calculator_class()
    rng = np.random.default_rng(seed)
    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    atoms.calc = TBLite(method=method, charge=charge, multiplicity=multiplicity, verbosity=0)
    dynamics = langevin(atoms, timestep, temperature, friction, rng)  # FixCom first: as before, the same stream
    maxwell_boltzmann(atoms, temperature, rng, zero_rotation=False)
    equilibration_steps = int(round(equilibration / timestep))
    total_steps = equilibration_steps + frames * interval
    want_stress = bool(atoms.pbc.all())

    step = 0
    guards = _guards(temperature)

    def failed(problem: str) -> InputError:
        return InputError(f"MD after {step} steps ({step * timestep:g} fs): {problem}", source)

    def advance(n: int, forces: np.ndarray) -> np.ndarray:
        nonlocal step
        for _ in range(n):
            try:
                forces = dynamics.step(forces)
            except (RuntimeError, ValueError) as err:
                raise failed(f"{method} calculation failed ({one_line(err)}); the simulation probably "
                             "blew up (try a smaller timestep or temperature)") from None
            step += 1
            guards.results(atoms.calc.results, failed)
        guards.state(atoms, failed)
        return forces

    with tblite_threads(), progress_bar(total_steps, f"{method} MD", progress) as bar:
        try:
            forces = atoms.get_forces(md=True)
        except (RuntimeError, ValueError) as err:
            raise InputError(f"{method} calculation failed: {one_line(err)}", source, 0) from None
        guards.state(atoms, failed)
        done = 0
        while done < equilibration_steps:
            n = min(interval, equilibration_steps - done)
            forces = advance(n, forces)
            done += n
            bar.advance(n)
        for _ in range(frames):
            forces = advance(interval, forces)
            frame = Atoms(numbers=atoms.numbers, positions=atoms.get_positions(), cell=atoms.cell,
                          pbc=atoms.pbc)
            if charge:
                frame.info["charge"] = charge
            if multiplicity is not None:
                frame.info["multiplicity"] = multiplicity
            results = dict(atoms.calc.results)
            if want_stress and "stress" not in results:
                results["stress"] = atoms.calc.get_property("stress", atoms)
            _store_labels(frame, results, source, None)
            bar.advance(interval)
            yield frame


def _guards(temperature: float):
    """The MD guards of :mod:`localframe.md` at ``temperature`` (K): atoms closer than 0.5 Å, more
    than 10x the target temperature, non-finite positions or velocities."""
    from localframe.md.guards import Guards, temperature_bound

    return Guards(temperature_bound(temperature), advice="try a smaller timestep or temperature")


def _check_md_state(atoms: Atoms, temperature: float, failed) -> None:
    """The guards on the state of ``atoms`` (positions, velocities, temperature, distances)."""
    _guards(temperature).state(atoms, failed)


def _starting_structure(smiles_or_file, seed: int) -> tuple[Atoms, str, int, int | None]:
    """(atoms, source name, total charge, multiplicity) from a structure file or a SMILES string."""
    from localframe.data.convert import check_structure

    is_path = isinstance(smiles_or_file, os.PathLike)
    text = os.fspath(smiles_or_file) if is_path else smiles_or_file
    if not isinstance(text, str):
        raise InputError(f"expected a SMILES string or a file path, got {type(smiles_or_file).__name__}")
    if is_path or (text and os.path.exists(text)):
        atoms = _read_structures(text, 0, None)[0]
        source = text
        charge = _structure_charge(atoms, None, source, 0)
        multiplicity = _structure_multiplicity(atoms, source, 0)
    else:
        atoms, charge, multiplicity = embed_smiles(text, seed)
        source = f"SMILES {text}"
    check_structure(atoms, source=source, index=0)
    return atoms, source, charge, multiplicity


def embed_smiles(smiles: str, seed: int) -> tuple[Atoms, int, int | None]:
    """3D structure of a SMILES string (RDKit ETKDG + MMFF, seeded), its charge and multiplicity."""
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import AllChem
    except ImportError:
        raise InputError(
            f"{smiles!r} is not an existing file, and reading SMILES needs RDKit: "
            "pip install 'localframe[chem]'"
        ) from None
    text = smiles.strip()
    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(text) if text and "\n" not in text else None
        if mol is None or mol.GetNumAtoms() == 0:
            raise InputError(f"not a file and not a valid SMILES: {smiles!r}")
        mol = Chem.AddHs(mol)
        rdkit_seed = seed % (2**31)
        if AllChem.EmbedMolecule(mol, randomSeed=rdkit_seed) != 0:
            if AllChem.EmbedMolecule(mol, randomSeed=rdkit_seed, useRandomCoords=True, maxAttempts=50) != 0:
                raise InputError(f"RDKit could not generate 3D coordinates for SMILES {smiles!r}")
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        elif AllChem.UFFHasAllMoleculeParams(mol):
            AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
        positions = mol.GetConformer().GetPositions()
        numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
        charge = int(Chem.GetFormalCharge(mol))
        radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    finally:
        RDLogger.EnableLog("rdApp.*")
    atoms = Atoms(numbers=numbers, positions=positions - positions.mean(axis=0))
    return atoms, charge, (radicals + 1 if radicals else None)


# ---------------------------------------------------------------------- files
def _read_structures(path, index, format: str | None) -> list[Atoms]:
    import ase.io

    source = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", source)
    if p.is_dir():
        raise InputError("is a directory, expected a structure file", source)
    try:
        if p.stat().st_size == 0:
            raise InputError("file is empty", source)
        result = ase.io.read(p, index=index, format=format)
    except InputError:
        raise
    except Exception as err:  # ase raises many types for files it cannot parse
        raise InputError(f"cannot read structures: {one_line(err) or type(err).__name__}", source) from None
    structures = [result] if isinstance(result, Atoms) else list(result)
    if not structures:
        raise InputError("file contains no structures", source)
    return structures


def _check_output(out_path) -> Path:
    path = Path(out_path)
    if path.is_dir():
        raise InputError("output path is a directory", str(out_path))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {str(parent)!r} does not exist", str(out_path))
    return path


# ---------------------------------------------------------------------- helpers
def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown xTB method {method!r}; choose one of {', '.join(METHODS)}")


def tblite_calculator_class():
    """tblite's ASE calculator class, or a one-line InputError saying how to install it."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise InputError("xTB reference calculations need tblite: pip install 'localframe[chem]'") from None
    return TBLite


def _requested_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def _openmp_runtimes() -> list[ctypes.CDLL]:
    """The OpenMP runtimes loaded in this process (tblite must be imported first)."""
    paths: list[str] = []
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit(None, 1)[-1] if "/" in line else ""
                base = os.path.basename(name)
                if base.startswith(("libgomp", "libomp", "libiomp")) and ".so" in base and name not in paths:
                    paths.append(name)
    runtimes = []
    for path in paths:
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(path)
            if hasattr(lib, "omp_set_num_threads") and hasattr(lib, "omp_get_max_threads"):
                runtimes.append(lib)
    return runtimes


@contextlib.contextmanager
def tblite_threads(threads: int | None = None) -> Iterator[None]:
    """Run tblite with ``threads`` (default: OMP_NUM_THREADS) threads, even if OpenMP was loaded earlier."""
    tblite_calculator_class()  # loads tblite and its OpenMP runtime
    n = threads if threads is not None else _requested_threads()
    saved = []
    if n is not None:
        for lib in _openmp_runtimes():
            saved.append((lib, lib.omp_get_max_threads()))
            lib.omp_set_num_threads(n)
    try:
        yield
    finally:
        for lib, previous in saved:
            lib.omp_set_num_threads(previous)
