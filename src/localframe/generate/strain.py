r"""Strain of generated molecules: GFN2-xTB relaxation with tblite, energy drop and RMSD.

For one molecule (its atoms, positions in Å and formal charges; total charge = Σ formal charges,
spin multiplicity = RDKit's radical electrons + 1) the xTB calculator of
:mod:`localframe.reference.xtb` (one OpenMP thread) gives the energy at the generated geometry,
then :func:`localframe.md.relax.relax` (BFGS, until every force is below ``fmax`` eV/Å, at most
``steps`` steps) the relaxed geometry and its energy:

- **ΔE** = E(generated) − E(relaxed), eV (≥ 0 up to the relaxation's tolerance): how far uphill
  from its nearest xTB minimum the molecule was generated;
- **RMSD** between the generated and the relaxed geometry after the optimal rotation and
  translation (Kabsch; proper rotations only, atoms in their own order): over the heavy atoms
  (aligned on them) and over all atoms (aligned on all).

A molecule already at its xTB minimum has ΔE ≈ 0 and RMSD ≈ 0. DFT minima (QM9's geometries) are
not xTB minima, so real molecules have a small nonzero ΔE: that is the data's reference row.
:func:`summarize` gives medians over molecules (ΔE in eV and kcal/mol) and counts the molecules
whose relaxation failed or did not converge.
"""

from __future__ import annotations

import numpy as np

from localframe.errors import InputError, one_line
from localframe.generate.molecule import Molecule

FMAX = 0.01  # eV/Å
STEPS = 1000
METHOD = "GFN2-xTB"


def kcal_per_mol(ev: float) -> float:
    from ase import units

    return float(ev) / (units.kcal / units.mol)


def aligned_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD (Å) of two (n, 3) coordinate sets after the optimal proper rotation and translation (Kabsch)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3 or not len(a):
        raise ValueError(f"aligned_rmsd needs two (n, 3) arrays of the same shape, got {a.shape} and {b.shape}")
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt  # a @ rotation ≈ b
    return float(np.sqrt(((a @ rotation - b) ** 2).sum(1).mean()))


def multiplicity(mol: Molecule) -> int:
    """Radical electrons + 1 of the molecule with its bonds and charges (1 when it does not sanitise)."""
    from rdkit import Chem

    from localframe.generate.molecule import to_rdkit

    if mol.bonds is None:
        return 1
    rd = to_rdkit(mol)
    try:
        Chem.SanitizeMol(rd)
    except Exception:  # RDKit raises several types
        return 1
    return sum(atom.GetNumRadicalElectrons() for atom in rd.GetAtoms()) + 1


def strain(mol: Molecule, fmax: float = FMAX, steps: int = STEPS, source: str | None = None,
           index: int | None = None) -> dict:
    """``{"energy", "relaxed_energy", "delta_e"`` (eV), ``"rmsd_heavy", "rmsd_all"`` (Å), ``"converged",
    "steps"}`` of one molecule (see the module); bad input or a failed xTB calculation raises a
    one-line :class:`InputError` naming ``source`` and ``index``."""
    from ase import Atoms

    from localframe.md.relax import relax
    from localframe.reference.xtb import tblite_calculator_class, tblite_threads

    if not len(mol):
        raise InputError("strain: the molecule has no atoms", source, index)
    if not np.isfinite(mol.positions).all():
        raise InputError("strain: positions are not finite (NaN or inf)", source, index)
    if len(mol) > 1:
        d = np.linalg.norm(mol.positions[:, None] - mol.positions[None], axis=-1)[np.triu_indices(len(mol), 1)]
        if d.min() < 0.1:
            raise InputError(f"strain: two atoms are {d.min():.3f} Å apart (below 0.1 Å)", source, index)
    TBLite = tblite_calculator_class()
    atoms = Atoms(numbers=mol.numbers, positions=mol.positions)
    calc = TBLite(method=METHOD, charge=int(mol.charges.sum()), multiplicity=multiplicity(mol), verbosity=0)
    try:
        with tblite_threads(1):
            atoms.calc = calc
            energy = float(atoms.get_potential_energy())
            result = relax(calc, atoms, fmax=fmax, optimizer="bfgs", steps=steps, progress=False)
    except InputError as err:
        raise InputError(f"strain: {err.problem}", source, index) from None
    except (RuntimeError, ValueError) as err:  # ase CalculationFailed, tblite errors
        raise InputError(f"strain: {METHOD} calculation failed: {one_line(err, 200)}", source, index) from None
    if not np.isfinite(energy):
        raise InputError(f"strain: {METHOD} energy is not finite", source, index)
    relaxed = result["atoms"].positions
    heavy = mol.numbers != 1
    return {
        "energy": energy, "relaxed_energy": result["energy"], "delta_e": energy - result["energy"],
        "rmsd_heavy": aligned_rmsd(mol.positions[heavy], relaxed[heavy]) if heavy.any() else None,
        "rmsd_all": aligned_rmsd(mol.positions, relaxed),
        "converged": result["converged"], "steps": result["steps"],
    }


def strain_many(molecules: list[Molecule], progress: bool = True, description: str = "xTB strain",
                source: str | None = None, indices=None, **kwargs) -> list[dict]:
    """:func:`strain` of each molecule, with a progress bar; a molecule whose relaxation fails gets
    ``{"error": message}`` instead (counted by :func:`summarize`, never dropped)."""
    from localframe.progress import progress as progress_bar

    indices = list(range(len(molecules))) if indices is None else list(indices)
    out = []
    with progress_bar(len(molecules), description, progress, unit="molecules") as bar:
        for mol, k in zip(molecules, indices):
            try:
                out.append(strain(mol, source=source, index=k, **kwargs))
            except InputError as err:
                out.append({"error": str(err)})
            bar.advance()
    return out


def summarize(results: list[dict]) -> dict:
    """Medians over the molecules whose relaxation ran (ΔE in eV and kcal/mol, RMSDs in Å), with counts."""
    ran = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]

    def median(key):
        values = [r[key] for r in ran if r[key] is not None]
        return float(np.median(values)) if values else None

    delta = median("delta_e")
    return {
        "n_molecules": len(results), "n_relaxed": len(ran), "n_failed": len(errors),
        "n_not_converged": sum(not r["converged"] for r in ran), "first_error": errors[0] if errors else None,
        "delta_e_ev": delta, "delta_e_kcal_mol": None if delta is None else kcal_per_mol(delta),
        "rmsd_heavy": median("rmsd_heavy"), "rmsd_all": median("rmsd_all"),
        "delta_e_kcal_mol_mean": kcal_per_mol(np.mean([r["delta_e"] for r in ran])) if ran else None,
    }
