"""PoseBusters geometry checks of generated molecules (the ``posebusters`` package, its "mol" config).

PoseBusters (Buttenschoen et al. 2024) tests whether a 3D molecule is physically plausible. Of its
molecule-only configuration (``mol``) the geometry checks are run, with that configuration's own
parameters (read from the installed package, not copied):

- **bond lengths** / **bond angles** — every bond length and bond angle (heavy atoms) within the
  RDKit distance-geometry bounds of the molecule's graph, widened by 25 %;
- **internal steric clash** — no pair of non-bonded heavy atoms closer than its lower bound
  (widened by 30 %);
- **aromatic ring flatness** — the atoms of every aromatic 5- and 6-ring within 0.25 Å of one plane;
- **double bond flatness** — the six atoms of every trigonal C=C within 0.25 Å of one plane;
- **internal energy** — UFF energy of the conformation at most 100 × the mean UFF energy of an
  ensemble of 50 ETKDG conformers (relaxed with UFF) of the same molecule.

The checks need a molecule that sanitises, so they run on RDKit-valid molecules (the chemistry rows
of PoseBusters — sanitisation, connectivity — are the validity and connectivity metrics already).
A check whose value PoseBusters cannot compute (NaN, e.g. UFF lacks a parameter) counts as failed
and is counted in ``undetermined``. ``all`` is the fraction passing all six checks.
"""

from __future__ import annotations

import numpy as np

from localframe.errors import InputError
from localframe.generate.molecule import Molecule

CHECKS = ("bond_lengths", "bond_angles", "internal_steric_clash", "aromatic_ring_flatness",
          "double_bond_flatness", "internal_energy")
_MODULES = {"Geometry", "Ring flatness", "Double bond flatness", "Energy ratio"}


def available() -> bool:
    try:
        import posebusters  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """A one-line InputError saying how to install posebusters, when it is absent."""
    if not available():
        raise InputError("PoseBusters checks need the posebusters package: pip install 'localframe[chem]' "
                         "(or --posebusters 0)")


def _config() -> dict:
    """The package's "mol" config reduced to the modules of :data:`CHECKS` (each once), one UFF thread."""
    from pathlib import Path

    import posebusters
    import yaml

    with open(Path(posebusters.__file__).parent / "config" / "mol.yml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    modules, seen = [], set()
    for module in config["modules"]:
        if module["name"] not in _MODULES or not module.get("chosen_binary_test_output") or module["name"] in seen:
            continue
        seen.add(module["name"])
        if module["function"] == "energy_ratio":
            module = dict(module, parameters=dict(module.get("parameters", {}), num_threads=1))
        modules.append(module)
    config["modules"] = modules
    return config


def _rdkit(mol: Molecule, implicit_h: bool, index: int):
    from localframe.generate.metrics import _sanitised

    if mol.failed or mol.bonds is None:
        raise InputError("PoseBusters checks need a molecule with its bonds", None, index)
    rd = _sanitised(mol, implicit_h)
    if rd is None:
        raise InputError("PoseBusters checks need a molecule that RDKit sanitises", None, index)
    return rd


def check(molecules: list[Molecule], progress: bool = True, description: str = "PoseBusters",
          implicit_h: bool = False, indices=None) -> list[dict]:
    """Per molecule ``{check: True/False/None}`` (None: PoseBusters could not compute it) for
    :data:`CHECKS`; the molecules must sanitise (RDKit-valid; ``implicit_h``: heavy atoms only,
    RDKit adds the hydrogens); ``indices``: each molecule's index in its file, for error messages."""
    require()
    import logging

    from posebusters import PoseBusters
    from rdkit import RDLogger

    from localframe.progress import progress as progress_bar

    RDLogger.DisableLog("rdApp.*")
    logging.getLogger("posebusters").setLevel(logging.ERROR)
    buster = PoseBusters(config=_config(), max_workers=0)
    out = []
    with progress_bar(len(molecules), description, progress, unit="molecules") as bar:
        for k, mol in zip(range(len(molecules)) if indices is None else indices, molecules):
            table = buster.bust([_rdkit(mol, implicit_h, k)], full_report=False)
            row = table.iloc[0]
            out.append({name: (None if _missing(row[name]) else bool(row[name])) for name in CHECKS})
            bar.advance()
    return out


def _missing(value) -> bool:
    try:
        return bool(np.isnan(float(value)))
    except (TypeError, ValueError):
        return value is None


def summarize(results: list[dict]) -> dict:
    """Pass fraction (0–1) of each check and of all six, over the molecules checked; ``undetermined``
    counts the NaN values per check (counted as failed)."""
    n = len(results)
    out = {"n_molecules": n}
    for name in CHECKS:
        out[name] = float(np.mean([r[name] is True for r in results])) if n else None
    out["all"] = float(np.mean([all(r[name] is True for name in CHECKS) for r in results])) if n else None
    out["undetermined"] = {name: sum(r[name] is None for r in results) for name in CHECKS}
    return out
