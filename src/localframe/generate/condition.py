r"""Evaluating a property-conditioned generator the EDM way (Hoogeboom et al. 2022, section 5.2).

QM9's training split is cut in two halves of QM9 indices (:func:`localframe.generate.data.load_split`
``half``): the generator trains on the first (``data.half=first``), a property regressor of
:mod:`localframe.models` on the second (``localframe train ... data.train_offset=55000``, which
takes its training and validation molecules from the training split after its first 55,000). The
regressor φ never sees the generator's molecules, nor the generator the regressor's. Then:

- **generated**: MAE = mean_k |φ(x_k) − c_k| over the generated molecules x_k, each sampled for a
  requested property c_k (the SDF's data item of that name); a molecule with two atoms closer than
  :data:`localframe.data.convert.MIN_DISTANCE` (0.1 Å), which the regressor's input check refuses,
  is left out and counted (``n_rejected``), as is a failed sample (an empty record: non-finite positions);
- **random** (upper bound): φ on real molecules of the generator's half against their properties
  *shuffled*, mean_k |φ(x_k) − c_π(k)|;
- **number of atoms**: the property predicted from the atom count alone,
  ĉ(N) = mean of c over the regressor's half with N atoms (the overall mean for an N it lacks),
  mean_k |ĉ(N_k) − c_k| over the generator's half;
- **QM9** (lower bound): φ on real molecules of the generator's half, mean_k |φ(x_k) − c_k|.

A generator that uses its condition lands between "QM9" and "number of atoms"; one that ignores
it lands near "random".
"""

from __future__ import annotations

import numpy as np
import torch

from localframe.errors import InputError
from localframe.generate.molecule import Molecule, read_sdf

GENERATOR_HALF, REGRESSOR_HALF = "first", "second"


def mae(predicted, target) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(target, float))))


def shuffled_mae(predicted, target, rng) -> float:
    """mean_k |φ_k − c_π(k)| for one random permutation π (the "random" baseline)."""
    target = np.asarray(target, float)
    return mae(predicted, target[rng.permutation(len(target))])


def atom_count_mae(n_fit, c_fit, n_eval, c_eval) -> float:
    """The "number of atoms" baseline: ĉ(N) = mean of c_fit over molecules with N atoms (the overall
    mean for an N absent from the fit), MAE of ĉ(n_eval) against c_eval."""
    n_fit, c_fit = np.asarray(n_fit, np.int64), np.asarray(c_fit, float)
    size = max(int(n_fit.max()), int(np.max(n_eval))) + 1
    total, count = np.bincount(n_fit, c_fit, size), np.bincount(n_fit, minlength=size)
    table = np.where(count > 0, total / np.maximum(count, 1), c_fit.mean())
    return mae(table[np.asarray(n_eval, np.int64)], c_eval)


def predict(regressor, molecules: list[Molecule], name: str, batch_size: int = 64) -> np.ndarray:
    """φ(x) for each molecule: the regressor's scalar target ``name`` (its units); NaN for a molecule
    with atoms closer than ``MIN_DISTANCE`` (refused as corrupt input)."""
    from ase import Atoms

    from localframe.data.convert import MIN_DISTANCE, AtomsConverter

    if name not in regressor.targets:
        raise InputError(f"the condition model predicts {', '.join(regressor.targets) or 'no scalar target'}, not {name!r}")
    dtype = next(regressor.parameters()).dtype
    converter = AtomsConverter(regressor.cutoff, dtype)
    accepted = [k for k, m in enumerate(molecules) if not m.failed and _closest(m.positions) >= MIN_DISTANCE]
    out = np.full(len(molecules), np.nan)
    with torch.no_grad():
        for start in range(0, len(accepted), batch_size):
            part = accepted[start:start + batch_size]
            chunk = [Atoms(numbers=molecules[k].numbers, positions=molecules[k].positions) for k in part]
            out[part] = regressor(converter(chunk, first_index=start))[name].double().numpy()
    return out


def _closest(positions: np.ndarray) -> float:
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    return float(d[np.triu_indices(len(positions), 1)].min()) if len(positions) > 1 else np.inf


def evaluate(path: str, regressor_path: str, n_reference: int = 1000, seed: int = 0, hydrogens: bool = True) -> dict:
    """The four MAEs of the protocol above for an SDF of conditioned samples and a regressor model file."""
    from localframe.generate.data import load_split
    from localframe.io import load_model

    regressor = load_model(regressor_path)
    molecules = read_sdf(path)
    names = [name for name in regressor.targets if all(name in m.info.get("properties", {}) for m in molecules)]
    if not names:
        raise InputError(f"no record carries the regressor's property ({', '.join(regressor.targets)}) as a data item",
                         str(path))
    name = names[0]
    requested = np.array([m.info["properties"][name] for m in molecules])
    gen_half = load_split("train", hydrogens=hydrogens, half=GENERATOR_HALF, n=n_reference)
    reg_half = load_split("train", hydrogens=hydrogens, half=REGRESSOR_HALF)
    real = gen_half.molecules()
    c_real = gen_half.properties([name])[:, 0]
    phi_real = predict(regressor, real, name)
    rng = np.random.default_rng(seed)
    phi = predict(regressor, molecules, name)
    ok = np.isfinite(phi)
    return {
        "file": str(path), "property": name, "n_molecules": len(molecules), "n_rejected": int((~ok).sum()),
        "n_reference": len(real),
        "generated": mae(phi[ok], requested[ok]) if ok.any() else None,
        "random": shuffled_mae(phi_real, c_real, rng),
        "n_atoms": atom_count_mae(reg_half.n_atoms, reg_half.properties([name])[:, 0], gen_half.n_atoms, c_real),
        "qm9": mae(phi_real, c_real),
    }


def render(result: dict) -> str:
    rows = [("generated (requested vs predicted)", result["generated"]), ("random (shuffled properties)", result["random"]),
            ("number of atoms", result["n_atoms"]), ("QM9 (regressor on real molecules)", result["qm9"])]
    width = max(len(r[0]) for r in rows)
    head = (f"{result['property']} MAE, {result['n_molecules']} samples ({result['n_rejected']} left out: failed "
            f"samples or atoms closer than 0.1 Å), {result['n_reference']} reference molecules")
    return "\n".join([head] + [f"{label:<{width}}  {'n/a' if value is None else f'{value:.4f}'}" for label, value in rows])
