r"""Fast inference: neighbour-list reuse (Verlet skin), committees, batched and compiled evaluation.

Everything here works on tensors; nothing loops over atoms or pairs in Python.

Verlet skin
-----------
:class:`VerletNeighborList` builds the pair list once with the radius r_c + δ (δ the *skin*, Å)
and, at every later call, keeps the candidate pairs that are within r_c at the current positions,

    r_ij = x_j − x_i + S_ij · C,        keep (i, j, S_ij)  ⇔  |r_ij| < r_c,

so the model always sees exactly the pairs a fresh list would give (the same set of
``(i, j, S)``; only their order may differ). The candidate list stays complete while no pair can
have come from beyond r_c + δ. With the reference positions x⁰ and cell C⁰ of the last build:

* fixed cell (C = C⁰ bitwise, or no periodic direction): rebuild when max_i |x_i − x⁰_i| ≥ δ/2;
* a cell that changes (NPT; structures periodic in all three directions): with the deformation
  F = (C⁰)⁻¹ C and the displacements measured in the reference cell, d_i = x_i F⁻¹ − x⁰_i,
  every pair within r_c now was within r_c / σ_min(F) + 2 max_i |d_i| at the build, so rebuild when
  that bound reaches r_c + δ (σ_min the smallest singular value of F). For F = I this is the
  fixed-cell rule.

A cell that changes in a structure periodic in only one or two directions always triggers a
rebuild. ``skin = 0`` rebuilds at every call (a fresh list each time).

Committees
----------
:class:`Evaluator` runs one model or several (a committee of M members on the same pairs) and
returns the mean and the spread across members, with population standard deviations:

    E = (1/M) Σ_m E_m,             σ_E   = √((1/M) Σ_m (E_m − E)²)                       (eV)
    F_i = (1/M) Σ_m F_m,i,         σ_F,i = √((1/M) Σ_m |F_m,i − F_i|²)                    (eV/Å, per atom)
    σ_ab = (1/M) Σ_m σ_m,ab,       std of each stress component across members           (eV/Å³)

Compiled path
-------------
``compile=True`` evaluates energy and forces of one structure (the MD and relaxation call)
through a fixed graph, :mod:`localframe.fast`: the forward and its backward traced into one
compiled graph for the structure's atom count and a padded pair count, fed from preallocated
tensors. Everything else (stress, dipoles, batches, SPE models, or where tracing or compiling
fails) goes through each model's representation wrapped in ``torch.compile(dynamic=True)``, with
the energy head, the autograd forces and stress eager; shapes (atoms, pairs) change from call to
call, so that graph is compiled with symbolic sizes. Both need a C++ compiler for Inductor on CPU.
"""

from __future__ import annotations

import copy
import os
from typing import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms

from localframe.data.batch import AtomsBatch
from localframe.data.convert import AtomsConverter, restrict
from localframe.data.neighbors import neighbor_pairs
from localframe.errors import InputError
from localframe.fast import FastPath
from localframe.dtypes import torch_dtype
from localframe.io import check_elements, known_elements, load_model
from localframe.models.atomistic import AtomisticModel

__all__ = ["VerletNeighborList", "Evaluator", "load_models", "compile_model", "evaluate_many", "evaluate_together"]


# ---------------------------------------------------------------------------------- neighbour list
class VerletNeighborList:
    """Pairs within ``cutoff`` (Å), from a list built with ``cutoff + skin`` and reused while valid.

    ``pairs(positions, cell, pbc)`` returns ``(edge_index (2, E) int64, shifts (E, 3) float64,
    distances (E,) float64)`` as torch tensors, pairs as in :mod:`localframe.data.neighbors`.
    ``builds`` counts the full rebuilds (for tests and benchmarks).
    """

    def __init__(self, cutoff: float, skin: float = 0.0):
        cutoff, skin = float(cutoff), float(skin)
        if not np.isfinite(cutoff) or cutoff <= 0:
            raise InputError(f"cutoff must be a positive length (Å), got {cutoff}")
        if not np.isfinite(skin) or skin < 0:
            raise InputError(f"skin must be a non-negative length (Å), got {skin}")
        self.cutoff, self.skin = cutoff, skin
        self.builds = 0
        self._ref_positions: np.ndarray | None = None
        self._ref_cell: np.ndarray | None = None
        self._pbc: np.ndarray | None = None
        self._edges: torch.Tensor | None = None
        self._shifts: torch.Tensor | None = None
        self._offsets: torch.Tensor | None = None
        self._offsets_cell: np.ndarray | None = None

    def pairs(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        positions, cell, pbc = _arrays(positions, cell, pbc)
        if self._needs_rebuild(positions, cell, pbc):
            distances = self._build(positions, cell, pbc)
            if self.skin == 0.0:  # built for these positions with the cutoff itself: nothing to select
                return self._edges, self._shifts, torch.from_numpy(distances)
        pos = torch.from_numpy(positions)
        i, j = self._edges
        vectors = pos.index_select(0, j) - pos.index_select(0, i)
        if pbc.any():
            vectors = vectors + self._image_offsets(cell)
        d2 = (vectors * vectors).sum(dim=1)
        keep = torch.nonzero(d2 < self.cutoff**2).squeeze(1)
        return self._edges.index_select(1, keep), self._shifts.index_select(0, keep), d2.index_select(0, keep).sqrt()

    def candidates(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The list within ``cutoff + skin`` itself, without selection, rebuilt when needed:
        ``(edge_index (2, E), shifts (E, 3), rebuilt)`` (the fixed graph of :mod:`localframe.fast`)."""
        positions, cell, pbc = _arrays(positions, cell, pbc)
        rebuilt = self._needs_rebuild(positions, cell, pbc)
        if rebuilt:
            self._build(positions, cell, pbc)
        return self._edges, self._shifts, rebuilt

    def _build(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
        """A fresh list within ``cutoff + skin`` with these as the reference; returns its distances."""
        i, j, shifts, distances = neighbor_pairs(positions, cell, pbc, self.cutoff + self.skin)
        self._edges = torch.from_numpy(np.stack([i, j]))
        self._shifts = torch.from_numpy(shifts.astype(np.float64))
        self._ref_positions, self._ref_cell, self._pbc = positions.copy(), cell.copy(), pbc.copy()
        self._offsets, self._offsets_cell = None, None
        self.builds += 1
        return distances

    def _image_offsets(self, cell: np.ndarray) -> torch.Tensor:
        """S_ij · C for the candidate pairs, kept while the cell does not change."""
        if self._offsets is None or not np.array_equal(cell, self._offsets_cell):
            self._offsets = self._shifts @ torch.from_numpy(cell)
            self._offsets_cell = cell.copy()
        return self._offsets

    def _needs_rebuild(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        ref = self._ref_positions
        if ref is None or self.skin == 0.0 or ref.shape != positions.shape or not np.array_equal(pbc, self._pbc):
            return True
        if not pbc.any() or np.array_equal(cell, self._ref_cell):
            return 2.0 * _max_norm(positions - ref) >= self.skin
        if not pbc.all():
            return True
        # F = C0^-1 C; displacement in the reference cell d = x F^-1 - x0 = x C^-1 C0 - x0
        deformation = np.linalg.solve(self._ref_cell, cell)
        smallest = float(np.linalg.svd(deformation, compute_uv=False).min())
        if smallest <= 0.0:
            return True
        mapped = np.linalg.solve(cell.T, positions.T).T @ self._ref_cell
        return self.cutoff / smallest + 2.0 * _max_norm(mapped - ref) >= self.cutoff + self.skin


def _arrays(positions, cell, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3) if pbc.any() else np.zeros((3, 3))
    return np.asarray(positions, dtype=np.float64), cell, pbc


def _max_norm(displacements: np.ndarray) -> float:
    if len(displacements) == 0:
        return 0.0
    return float(np.sqrt(np.einsum("ij,ij->i", displacements, displacements).max()))


# ---------------------------------------------------------------------------------- models
def load_models(
    models: AtomisticModel | str | os.PathLike | Sequence[AtomisticModel | str | os.PathLike],
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> list[AtomisticModel]:
    """Private eval-mode copies of one or several models (objects or model files) in ``dtype``."""
    dtype = torch_dtype(dtype)
    items = list(models) if isinstance(models, (list, tuple)) else [models]
    if not items:
        raise InputError("no model given (an empty committee)")
    out = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            model = load_model(item, device=device, dtype=dtype)
        elif isinstance(item, AtomisticModel):
            model = copy.deepcopy(item).to(device=device, dtype=dtype)
        else:
            raise InputError(f"expected a localframe model or a model file path, got {type(item).__name__}")
        for parameter in model.parameters():  # inference only: autograd tracks positions, not weights
            parameter.requires_grad_(False)
        out.append(model.eval())
    return out


def compile_model(model: AtomisticModel) -> AtomisticModel:
    """``model`` with its representation wrapped in ``torch.compile(dynamic=True)`` (in place)."""
    if not getattr(model, "compiled", False):
        model.representation = torch.compile(model.representation, dynamic=True)
        model.compiled = True
    return model


# ---------------------------------------------------------------------------------- evaluation
class Evaluator:
    """Energy, forces, stress (and dipole) of one model or a committee, with neighbour-list reuse.

    ``Evaluator(models, device="cpu", dtype="float32", skin=0.0, compile=False,
    allow_unseen_elements=False)``; ``models`` as for :func:`load_models`. A structure with an
    element that a model was not trained on (its file's ``metadata["elements"]``) raises
    :class:`InputError`, unless ``allow_unseen_elements``. :meth:`__call__` evaluates one ``ase.Atoms`` and returns float64
    numpy arrays: ``energy`` (eV), ``forces`` (N, 3; eV/Å), ``stress`` (3, 3; eV/Å³) when asked,
    ``dipole`` (3; e·Å) and ``charges`` (N; e) when asked and every member has a dipole head, and
    for a committee ``energy_std``, ``forces_std`` (N,), ``stress_std`` (3, 3) and ``energies``
    (M,), the members' energies.
    """

    def __init__(self, models, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                 skin: float = 0.0, compile: bool = False, allow_unseen_elements: bool = False):
        self.dtype = torch_dtype(dtype)
        self.device = torch.device(device)
        self.models = load_models(models, self.device, self.dtype)
        #: the elements every member was trained on (None: not recorded, or unseen elements allowed)
        self.elements = None if allow_unseen_elements else known_elements(self.models)
        if compile:
            for model in self.models:
                compile_model(model)
        self.cutoffs = [m.cutoff for m in self.models]
        self.neighbors = VerletNeighborList(max(self.cutoffs), skin)
        self.converter = AtomsConverter(self.neighbors.cutoff, self.dtype, self.device, self.neighbors.pairs, self.elements)
        #: (i, j, distance Å) of the closest pair at the last call, (-1, -1, inf) without pairs
        self.closest: tuple[int, int, float] | None = None
        #: compile=True: energy and forces of one structure through a compiled fixed graph (localframe.fast)
        self.fast = FastPath(self) if compile else None

    @property
    def committee(self) -> bool:
        return len(self.models) > 1

    @property
    def has_dipole(self) -> bool:
        return all(m.has_dipole for m in self.models)

    def check_elements(self, numbers, source: str | None = None, index: int | None = None) -> None:
        """Raise :class:`InputError` if ``numbers`` hold an element a member was not trained on."""
        check_elements(self.elements, numbers, source, index)

    #: a bond graph (2, B) that every batch carries for SPE models (``Calculator.fix_bond_graph``), or None
    bonds: np.ndarray | None = None

    def batch(self, atoms: Atoms, charge: bool = False) -> tuple[AtomsBatch, torch.Tensor]:
        """The one-structure batch of ``atoms`` with the current pairs, and the pair distances (Å).

        Built by the one converter (:class:`localframe.data.convert.AtomsConverter`) with this
        evaluator's Verlet list and the members' training elements; ``charge=True`` carries
        ``atoms.info["charge"]`` when set (for dipole heads); :attr:`bonds`, when set, as ``batch.bonds``."""
        batch = self.converter(atoms, optional=("charge",) if charge else (), first_index=None)
        if self.bonds is not None:
            batch.bonds = [self.bonds]
        self.closest = self.converter.closest[0]
        return batch, self.converter.distances

    def __call__(self, atoms: Atoms, stress: bool = False, dipole: bool = False) -> dict[str, np.ndarray]:
        if self.fast is not None and not stress and not dipole:
            result = self.fast(atoms)
            if result is not None:
                return result
        (result,) = evaluate_together([self], [atoms], stress=stress, dipole=dipole)
        if isinstance(result, InputError):
            raise result
        return result

    def fork(self) -> "Evaluator":
        """An evaluator on the same models (not copies) with a neighbour list of its own, for another
        structure evaluated alongside this one's (:func:`evaluate_together`)."""
        other = copy.copy(self)
        other.neighbors = VerletNeighborList(self.neighbors.cutoff, self.neighbors.skin)
        other.converter = AtomsConverter(other.neighbors.cutoff, self.dtype, self.device, other.neighbors.pairs,
                                         self.elements)
        other.closest = None
        other.fast = FastPath(other) if self.fast is not None else None
        return other


#: result keys with one row per atom; the others have one entry per structure
PER_ATOM = ("forces", "forces_std", "charges")


def evaluate_together(evaluators: Sequence[Evaluator], structures: Sequence[Atoms], stress: bool = False,
                      dipole: bool = False, max_pairs: int | None = None) -> list[dict[str, np.ndarray] | InputError]:
    """Structure k through ``evaluators[k]``'s pair list, all of them in one forward (and backward)
    pass per committee member; the evaluators share their models (:meth:`Evaluator.fork`).
    ``max_pairs``: at most this many pairs per pass (consecutive structures, at least one per
    pass); None: one pass for all.

    Returns, per structure, what :meth:`Evaluator.__call__` returns for it alone, or the
    :class:`InputError` its conversion raised (an unusable structure fails alone; the others are
    evaluated). Results equal separate calls up to the round-off of the batched sums.
    """
    results: list = [None] * len(structures)
    batches, distances, done = [], [], []
    for k, (evaluator, atoms) in enumerate(zip(evaluators, structures)):
        try:
            batch, pair_distances = evaluator.batch(atoms, charge=dipole)
        except InputError as err:
            results[k] = err
            continue
        batches.append(batch)
        distances.append(pair_distances)
        done.append(k)
    models, cutoffs = (evaluators[done[0]].models, evaluators[done[0]].cutoffs) if done else ((), ())
    for group in _groups([len(d) for d in distances], max_pairs):
        batch = batches[group[0]] if len(group) == 1 else AtomsBatch.collate([batches[g] for g in group])
        pair_distances = distances[group[0]] if len(group) == 1 else torch.cat([distances[g] for g in group])
        outputs = [model(restrict(batch, pair_distances, cutoff), forces=True, stress=stress, dipole=dipole)
                   for model, cutoff in zip(models, cutoffs)]
        for g, result in zip(group, split(combine(outputs), batch.n_atoms.cpu().numpy())):
            results[done[g]] = result
    return results


def _groups(pairs: list[int], max_pairs: int | None) -> list[list[int]]:
    """Consecutive indices of ``pairs`` in groups of at most ``max_pairs`` pairs (at least one each)."""
    groups: list[list[int]] = []
    total = 0
    for k, n in enumerate(pairs):
        if not groups or (max_pairs is not None and total + n > max_pairs):
            groups.append([])
            total = 0
        groups[-1].append(k)
        total += n
    return groups


def split(result: dict[str, np.ndarray], n_atoms: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The results of a batch (:func:`combine`) as one dict per structure of ``n_atoms`` atoms: the
    rows of that structure's atoms for the keys in :data:`PER_ATOM`, its entry for the others (views,
    not copies). The one way results are split per structure (:func:`evaluate_together`,
    :func:`evaluate_many`)."""
    ends = np.cumsum(n_atoms)
    starts = ends - n_atoms
    return [{key: value[a:b] if key in PER_ATOM else value[k] for key, value in result.items()}
            for k, (a, b) in enumerate(zip(starts, ends))]


def combine(outputs: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Mean over committee members (float64 numpy), and the spreads when there are several.

    Keys follow the model: ``energy`` (B,), ``forces`` (N, 3), ``stress`` (B, 3, 3), ``dipole``
    (B, 3), ``charges`` (N,); a committee adds ``energies`` (B, M), ``energy_std`` (B,),
    ``forces_std`` (N,) and ``stress_std`` (B, 3, 3).
    """
    keys = [k for k in ("energy", "forces", "stress", "dipole", "charges") if k in outputs[0]]
    stacked = {k: torch.stack([o[k].detach() for o in outputs]).to("cpu", torch.float64) for k in keys}
    result = {k: v.mean(dim=0).numpy() for k, v in stacked.items()}
    if len(outputs) > 1:
        energies = stacked["energy"]
        result["energies"] = energies.T.numpy()
        result["energy_std"] = energies.std(dim=0, correction=0).numpy()
        if "forces" in stacked:
            deviation = stacked["forces"] - stacked["forces"].mean(dim=0)
            result["forces_std"] = deviation.pow(2).sum(dim=-1).mean(dim=0).sqrt().numpy()
        if "stress" in stacked:
            result["stress_std"] = stacked["stress"].std(dim=0, correction=0).numpy()
    return result


def evaluate_many(
    models,
    atoms_list: Iterable[Atoms],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    stress: bool | None = None,
    compile: bool = False,
    allow_unseen_elements: bool = False,
) -> dict[str, object]:
    """Energies and forces of many structures, ``batch_size`` structures per forward pass.

    ``models``: model objects, model files, or an :class:`Evaluator` (reused as is). Returns
    ``energy`` (n,) in eV, ``forces`` a list of (N_k, 3) arrays in eV/Å, ``stress`` (n, 3, 3) in
    eV/Å³ when every structure is periodic in all directions (default) and, for a committee,
    ``energy_std`` (n,), ``forces_std`` (list of (N_k,)) and ``energies`` (n, M). Structures are
    checked as in :meth:`AtomsBatch.from_atoms`, and for elements the models were not trained on
    (see :class:`Evaluator`).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    evaluator = models if isinstance(models, Evaluator) else Evaluator(
        models, device, dtype, compile=compile, allow_unseen_elements=allow_unseen_elements)
    structures = [atoms_list] if isinstance(atoms_list, Atoms) else list(atoms_list)
    if not structures:
        raise InputError("no structures to evaluate")
    if stress is None:
        stress = all(bool(a.pbc.all()) for a in structures)
    converter = AtomsConverter(max(evaluator.cutoffs), evaluator.dtype, evaluator.device, elements=evaluator.elements)
    parts: dict[str, list] = {}
    for start in range(0, len(structures), int(batch_size)):
        chunk = structures[start : start + int(batch_size)]
        batch = converter(chunk, first_index=start)
        distances = converter.distances
        outputs = [model(restrict(batch, distances, c), forces=True, stress=stress, dipole=False)
                   for model, c in zip(evaluator.models, evaluator.cutoffs)]
        for result in split(combine(outputs), batch.n_atoms.cpu().numpy()):
            for key, value in result.items():
                parts.setdefault(key, []).append(value)
    return {key: (values if key in PER_ATOM else np.stack(values)) for key, values in parts.items()}
