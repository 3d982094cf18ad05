r"""Fixed-graph energy and forces of one structure, or of many with the same atoms: the fast path of
``compile=True`` for MD and MD replicas.

One energy + forces call of a small molecule is little arithmetic; in eager PyTorch most of its
time goes to per-operator dispatch, the autograd engine and Python-side tensor assembly. The fast
path removes them for the call MD makes again and again, one structure with a fixed set of atoms:

1. **Fixed graph.** The pairs are the Verlet candidates themselves (within r_c + δ, see
   :class:`localframe.inference.VerletNeighborList`), without the per-call selection of those
   within r_c, padded to a capacity K with self-pairs (i, i) shifted by a lattice vector of length
   ≥ 2 r_c. A pair with d_ij ≥ r_c has the envelope u_ij = 0 and ∂u/∂d = 0 (:mod:`localframe.nn.cutoff`),
   and every model multiplies its edge terms by u, so such a pair adds exactly zero to the
   energy and to the forces: the results are those of the pairs within r_c (to the round-off of a
   different summation order). A non-periodic structure gets a fictitious cell diag(L, L, L),
   L = 2 r_c + 1 Å, used by the padding pairs only. Checked when the graph is built: the energy
   and forces with and without one extra padding pair must agree (else the fast path is not used).
2. **One traced graph.** ``make_fx`` traces the model's forward and the autograd backward of
   F = −∂E/∂x into one graph of ATen operators, with the parameters as inputs; positions, cell,
   pairs and shifts enter as preallocated tensors updated in place.
3. **Compiled ahead of time.** AOTInductor compiles that graph for the fixed sizes (N atoms, K
   pairs) into a shared library called from C++ (no Python wrapper, no Dynamo frame or guards;
   LEFTNet on ethanol: 1.6 ms per call against 3.0 ms through ``torch.compile``), kept in
   ``cache_dir()/graphs`` under a key of the graph's code, its inputs' shapes, dtypes and devices,
   the torch version and the CPU's vector instructions: the first call compiles for about a minute,
   later runs of the same architecture and sizes (any weights: they are inputs) load it in
   milliseconds.
4. **Replicas** (:class:`FastBatch`): R structures of the same atoms, structure r on atom rows
   r N ... (r + 1) N − 1 and pair slots r K ... (r + 1) K − 1, each padded on its own Verlet list,
   go through one graph of G structures (one batch of the model), so the per-call costs of 2. and
   3. are paid once for G structures.

Returns energy (eV), forces (eV/Å) and the K pair distances (Å) per member. Not served here (the
caller falls back to the general path): stress, dipoles, models with SPE inputs, and any failure
to trace or compile (e.g. no C++ compiler); :attr:`FastPath.reason` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings

import numpy as np
import torch
from ase import Atoms

from localframe.data.batch import AtomsBatch
from localframe.data.convert import MIN_DISTANCE, check_structure
from localframe.errors import InputError
from localframe.files import cache_dir

__all__ = ["FixedGraph", "FastPath", "FastBatch", "padded_pairs"]

PAD_MARGIN = 1.25  # capacity K = this × the first pair count (rounded up to 8), at most N(N−1) without periodicity


def padded_pairs(edges: np.ndarray, shifts: np.ndarray, capacity: int, pad_shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``edges`` (2, E) and ``shifts`` (E, 3) padded to ``capacity`` with self-pairs (0, 0) shifted by ``pad_shift``."""
    n_pad = capacity - edges.shape[1]
    if n_pad < 0:
        raise ValueError(f"{edges.shape[1]} pairs exceed the capacity {capacity}")
    pad_edges = np.zeros((2, n_pad), dtype=np.int64)
    pad_shifts = np.broadcast_to(np.asarray(pad_shift, dtype=np.float64), (n_pad, 3))
    return np.concatenate([edges, pad_edges], axis=1), np.concatenate([shifts, pad_shifts], axis=0)


@contextlib.contextmanager
def _uncompiled(model):
    """``model`` with its representation unwrapped from ``torch.compile`` for the duration."""
    wrapped = model.representation
    model.representation = getattr(wrapped, "_orig_mod", wrapped)
    try:
        yield model
    finally:
        model.representation = wrapped


class FixedGraph:
    """Energy and forces of one model for R structures of N atoms on K pairs each, traced (and compiled) once.

    ``FixedGraph(model, numbers, positions, cell, edges, shifts, compile=True, structures=1)``:
    example tensors (model dtype and device; ``numbers`` (R N,), ``positions`` (R N, 3), structure
    r on rows r N ... (r + 1) N − 1; ``cell`` (3, 3) for one structure, (R, 3, 3) for several;
    ``edges`` (2, R K) with indices into all R N atoms, ``shifts`` (R K, 3) integer lattice shifts
    in the float dtype). ``graph(positions, cell, edges, shifts)`` returns
    ``(energy (R,), forces (R N, 3), distances (R K,))``.
    """

    def __init__(self, model, numbers, positions, cell, edges, shifts, compile: bool = True, structures: int = 1):
        from torch.fx.experimental.proxy_tensor import make_fx

        with _uncompiled(model):
            self.state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        keys, cutoff = list(self.state), model.cutoff
        self.structures = structures
        n = numbers.shape[0] // structures

        device = positions.device
        # pbc as numpy: the model reads it as a Python value (bool(pbc.any())), which a traced tensor cannot give
        pbc = np.ones((structures, 3), dtype=bool)
        index = torch.arange(structures, device=device).repeat_interleave(n)
        n_atoms = torch.full((structures,), n, dtype=torch.long, device=device)

        def energy_forces(*args):
            state = dict(zip(keys, args[: len(keys)]))
            numbers, positions, cell, edges, shifts = args[len(keys):]
            cell = cell.reshape(structures, 3, 3)
            batch = AtomsBatch(numbers=numbers, positions=positions, cell=cell, pbc=pbc, batch=index,
                               n_atoms=n_atoms, edge_index=edges, cell_shifts=shifts, cutoff=cutoff)
            out = torch.func.functional_call(model, state, (batch,), {"forces": True, "stress": False, "dipole": False})
            distances = torch.linalg.vector_norm(batch.edge_vectors(positions.detach(), cell), dim=-1)
            return out["energy"].detach(), out["forces"].detach(), distances

        self.inputs = [*self.state.values(), numbers]
        example = [*self.inputs, positions, cell, edges, shifts]
        with _uncompiled(model), torch.no_grad():
            self.traced = make_fx(energy_forces)(*example)
        self.function = ahead_of_time(self.traced, example) if compile else self.traced

    def __call__(self, positions, cell, edges, shifts):
        return self.function(*self.inputs, positions, cell, edges, shifts)


class _Graph(torch.nn.Module):
    """A traced graph as the module ``torch.export`` takes."""

    def __init__(self, traced):
        super().__init__()
        self.traced = traced

    def forward(self, *args):
        return self.traced(*args)


def graph_key(traced, example) -> str:
    """What the compiled library depends on: the graph's code and constants (values the model computed
    from its settings while traced), its inputs' shapes, strides, dtypes and devices, the torch version
    and the vector instructions of the CPU (or the GPU's name)."""
    digest = hashlib.sha256("\n".join([torch.__version__, torch.backends.cpu.get_cpu_capability(), traced.code]).encode())
    for name, value in traced.named_buffers():
        digest.update(f"{name} {tuple(value.shape)} {value.dtype}".encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for t in example:
        digest.update(f"{tuple(t.shape)} {t.stride()} {t.dtype} {t.device}".encode())
        if t.device.type == "cuda":
            digest.update(torch.cuda.get_device_name(t.device).encode())
    return digest.hexdigest()[:32]


def ahead_of_time(traced, example):
    """``traced`` compiled by AOTInductor, from ``cache_dir()/graphs`` when compiled before; a callable
    with the traced graph's arguments and outputs (a tuple)."""
    path = cache_dir() / "graphs" / f"{graph_key(traced, example)}.pt2"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        program = torch.export.export(_Graph(traced), tuple(example), strict=False)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.pt2")  # AOTInductor wants the suffix
        try:  # written under another name, then renamed: a stopped compilation leaves no broken library
            torch._inductor.aoti_compile_and_package(program, package_path=str(partial))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    runner = torch._inductor.aoti_load_package(str(path))
    return lambda *args: tuple(runner(*args))


class FastPath:
    """The fast path of an :class:`~localframe.inference.Evaluator`: energy and forces of one
    structure through one :class:`FixedGraph` per member on the evaluator's Verlet list.

    ``fast(atoms)`` returns the evaluator's result dict, or None when the fast path does not
    apply (then :attr:`reason` says why; a structure it refused once is not tried again).
    ``compile=False`` runs the traced graphs without Inductor (tests). :meth:`batch` gives the
    :class:`FastBatch` of R replicas, kept for later runs with the same R.
    """

    def __init__(self, evaluator, compile: bool = True):
        self.evaluator, self.compile = evaluator, compile
        self.reason: str | None = unsupported(evaluator)
        self.graphs: list[FixedGraph] | None = None
        self._batches: dict[tuple, FastBatch] = {}
        self._numbers: np.ndarray | None = None
        self._pbc: np.ndarray | None = None
        self._cell: np.ndarray | None = None
        self._pairs: int = 0
        self._edges = self._shifts = self._positions = self._cell_t = None

    @property
    def available(self) -> bool:
        return self.reason is None

    def __call__(self, atoms: Atoms) -> dict[str, np.ndarray] | None:
        if self.reason is not None:
            return None
        positions = atoms.positions
        if self._numbers is None or not self._same_structure(atoms):
            self._setup(atoms)  # the one structure check (numbers, elements, cell, pbc, finiteness)
        else:
            check_finite(positions)
        edges, shifts, rebuilt = self.evaluator.neighbors.candidates(positions, self._cell, self._pbc)
        if rebuilt or self._edges is None:
            self._set_pairs(edges.numpy(), shifts.numpy())
        self._positions.copy_(torch.from_numpy(positions))
        if self.graphs is None and not self._build():
            return None
        outputs = [graph(self._positions, self._cell_t, self._edges, self._shifts) for graph in self.graphs]
        self._closest(outputs[0][2])
        if len(outputs) == 1:  # one model: its own numbers (the committee mean of one, without the stacking)
            energy, forces, _ = outputs[0]
            return {"energy": energy.to("cpu", torch.float64).numpy()[0], "forces": forces.to("cpu", torch.float64).numpy()}
        from localframe.inference import combine

        result = combine([{"energy": e, "forces": f} for e, f, _ in outputs])
        return {key: value[0] if key in ("energy", "energies", "energy_std") else value for key, value in result.items()}

    def batch(self, replicas: int, max_pairs: int | None) -> "FastBatch":
        """The fixed-graph path of ``replicas`` structures at once, built (traced, compiled) on its first
        call and kept: a later run of as many replicas reuses its graph instead of tracing it again."""
        key = (replicas, max_pairs)
        if key not in self._batches:
            self._batches[key] = FastBatch(self.evaluator, max_pairs, compile=self.compile)
        return self._batches[key]

    # ------------------------------------------------------------------ state
    def _same_structure(self, atoms: Atoms) -> bool:
        return (np.array_equal(atoms.numbers, self._numbers) and np.array_equal(atoms.pbc, self._pbc)
                and (not self._pbc.any() or np.array_equal(atoms.cell.array, self._cell)))

    def _setup(self, atoms: Atoms) -> None:
        ev = self.evaluator
        checked = check_structure(atoms, elements=ev.elements, index=None, close=False)
        numbers, pbc = checked["numbers"], checked["pbc"]
        if self._numbers is None or not np.array_equal(numbers, self._numbers) or not np.array_equal(pbc, self._pbc):
            self.graphs = None  # other atoms: other sizes, a new graph
            self._positions = torch.zeros(len(numbers), 3, dtype=ev.dtype, device=ev.device)
            self._numbers_t = torch.as_tensor(numbers, device=ev.device)
            self._pairs, self._edges = 0, None
        self._numbers, self._pbc = numbers.copy(), pbc.copy()
        self._cell = checked["cell"].copy()
        cell = graph_cell(self._cell, pbc, ev.neighbors.cutoff)
        self._cell_t = torch.as_tensor(cell, dtype=ev.dtype, device=ev.device)
        self._pad_shift = pad_shift(cell, ev.neighbors.cutoff)
        if self._edges is not None:
            self._write_pairs()

    def _set_pairs(self, edges: np.ndarray, shifts: np.ndarray) -> None:
        n = len(self._numbers)
        self._raw = (edges, shifts.astype(np.float64))
        if self._pairs == 0 or edges.shape[1] > self._pairs:  # first list, or more pairs than room: a new graph
            k = capacity(edges.shape[1], n, bool(self._pbc.any()))
            self._pairs, self.graphs = k, None
            self._edges = torch.zeros(2, k, dtype=torch.long, device=self.evaluator.device)
            self._shifts = torch.zeros(k, 3, dtype=self.evaluator.dtype, device=self.evaluator.device)
        self._write_pairs()

    def _write_pairs(self) -> None:
        edges, shifts = padded_pairs(*self._raw, self._pairs, self._pad_shift)
        self._edges.copy_(torch.from_numpy(edges))
        self._shifts.copy_(torch.from_numpy(shifts))

    def _build(self) -> bool:
        """Trace (and compile) one graph per member; False (and :attr:`reason`) where that fails."""
        ev = self.evaluator
        example = (self._numbers_t, self._positions, self._cell_t, self._edges, self._shifts)
        try:
            for model in ev.models:
                check_padding(model, example, self._pad_shift)
            self.graphs = [FixedGraph(m, *example, compile=self.compile) for m in ev.models]
        except Exception as err:  # noqa: BLE001 - any failure to trace or compile means: use the general path
            self.reason = unavailable(err)
            return False
        return True

    def _closest(self, distances: torch.Tensor) -> None:
        """The closest pair, kept on the evaluator; atoms closer than the minimum raise :class:`InputError`."""
        self.evaluator.closest = _closest_pair(_numpy(distances), self._raw[0], self.evaluator.neighbors.cutoff)
        check_closest(self.evaluator.closest)


class FastBatch:
    """The fast path of many structures of the same atoms at once (MD replicas,
    :mod:`localframe.md.replicas`): energy and forces of R structures through one
    :class:`FixedGraph` of G structures per member, each structure on its own evaluator's Verlet
    list, all padded to the same K pairs.

    ``fast(evaluators, structures)`` returns, per structure, what :meth:`Evaluator.__call__`
    returns for it alone, or the :class:`InputError` that structure raised (it fails alone); or
    None when the fast path does not serve this call (structures with other atoms, periodic cells
    that differ; :attr:`reason` says why when it never will). G structures per graph call: the
    fewest calls of at most ``max_pairs`` pairs each (at least one structure per call; one call
    when None), the structures spread evenly over them; the last call of a step is filled up with
    copies of its last structure, whose results are dropped. More pairs than K, or another
    structure, build a new graph. ``compile=False`` runs the traced graphs without Inductor (tests).
    """

    def __init__(self, evaluator, max_pairs: int | None = None, compile: bool = True):
        self.evaluator, self.max_pairs, self.compile = evaluator, max_pairs, compile
        self.reason: str | None = unsupported(evaluator)
        self.graphs: list[FixedGraph] | None = None
        self.structures = 0  # G of the graphs
        self._key: tuple | None = None
        self._pairs = 0

    def __call__(self, evaluators, structures: list[Atoms]) -> list | None:
        if self.reason is not None:
            return None
        first = structures[0]
        key = (first.numbers.tobytes(), first.pbc.tobytes(), first.cell.array.tobytes() if first.pbc.any() else b"")
        if any((a.numbers.tobytes(), a.pbc.tobytes(), a.cell.array.tobytes() if a.pbc.any() else b"") != key
               for a in structures[1:]):
            return None
        if key != self._key:
            self._setup(first)
            self._key = key
        results: list = [None] * len(structures)
        rows = []  # (structure index, positions, edges, shifts) of the usable structures
        for k, (evaluator, atoms) in enumerate(zip(evaluators, structures)):
            positions = atoms.positions
            try:
                check_finite(positions)
            except InputError as err:
                results[k] = err
                continue
            edges, shifts, _ = evaluator.neighbors.candidates(positions, self._cell, self._pbc)
            rows.append((k, positions, edges.numpy(), shifts.numpy().astype(np.float64)))
        if not rows:
            return results
        most = max(row[2].shape[1] for row in rows)
        if most > self._pairs:
            self._pairs, self.graphs = capacity(most, len(self._numbers), bool(self._pbc.any())), None
        if self.graphs is None and not self._build(rows):
            return None
        self._evaluate(evaluators, rows, results)
        return results

    def _setup(self, atoms: Atoms) -> None:
        ev = self.evaluator
        checked = check_structure(atoms, elements=ev.elements, index=None, close=False)
        self._numbers, self._pbc, self._cell = checked["numbers"], checked["pbc"], checked["cell"].copy()
        self._graph_cell = graph_cell(self._cell, self._pbc, ev.neighbors.cutoff)
        self._pad_shift = pad_shift(self._graph_cell, ev.neighbors.cutoff)
        self._pairs, self.graphs = 0, None

    def _build(self, rows) -> bool:
        """Trace (and compile) one graph of G structures per member; False (and :attr:`reason`) where that fails."""
        ev, n, k = self.evaluator, len(self._numbers), self._pairs
        calls = 1 if self.max_pairs is None else -(-len(rows) // max(1, self.max_pairs // k))
        g = -(-len(rows) // calls)  # the fewest calls within max_pairs, their structures balanced
        tensor = lambda x, dtype=ev.dtype: torch.as_tensor(x, dtype=dtype, device=ev.device)  # noqa: E731
        numbers = tensor(self._numbers, torch.long)
        self._inputs = (tensor(np.zeros((g * n, 3))), tensor(np.broadcast_to(self._graph_cell, (g, 3, 3)).copy()),
                        torch.zeros(2, g * k, dtype=torch.long, device=ev.device), tensor(np.zeros((g * k, 3))))
        _, row_positions, row_edges, row_shifts = rows[0]
        edges, shifts = padded_pairs(row_edges, row_shifts, k, self._pad_shift)
        one = (numbers, tensor(row_positions), tensor(self._graph_cell), tensor(edges, torch.long), tensor(shifts))
        self.structures = g
        self._fill([rows[0]] * g)
        try:
            for model in ev.models:
                check_padding(model, one, self._pad_shift)
            self.graphs = [FixedGraph(m, numbers.repeat(g), *self._inputs, compile=self.compile, structures=g)
                           for m in ev.models]
        except Exception as err:  # noqa: BLE001 - any failure to trace or compile means: use the general path
            self.reason = unavailable(err)
            return False
        return True

    def _fill(self, group) -> None:
        """The graph's inputs for G rows: positions one after the other, pairs padded to K and offset by r N."""
        n, k = len(self._numbers), self._pairs
        positions, cell, edges, shifts = self._inputs
        positions.copy_(torch.from_numpy(np.concatenate([row[1] for row in group])))
        for r, (_, _, row_edges, row_shifts) in enumerate(group):
            e, s = padded_pairs(row_edges, row_shifts, k, self._pad_shift)
            edges[:, r * k:(r + 1) * k].copy_(torch.from_numpy(e + r * n))
            shifts[r * k:(r + 1) * k].copy_(torch.from_numpy(s))

    def _evaluate(self, evaluators, rows, results) -> None:
        from localframe.inference import combine, split

        g, n, k = self.structures, len(self._numbers), self._pairs
        cutoff = self.evaluator.neighbors.cutoff
        for start in range(0, len(rows), g):
            group = rows[start:start + g]
            self._fill(group + [group[-1]] * (g - len(group)))
            outputs = [graph(*self._inputs) for graph in self.graphs]
            answers = split(combine([{"energy": e, "forces": f} for e, f, _ in outputs]), np.full(g, n))
            distances = _numpy(outputs[0][2])
            for r, (index, _, row_edges, _) in enumerate(group):
                evaluators[index].closest = closest = _closest_pair(distances[r * k:(r + 1) * k], row_edges, cutoff)
                try:
                    check_closest(closest)
                except InputError as err:
                    results[index] = err
                    continue
                results[index] = answers[r]


def unsupported(evaluator) -> str | None:
    """Why the fixed graph cannot serve ``evaluator``'s models, or None."""
    if any(getattr(m, "spe", None) is not None for m in evaluator.models):
        return "models with SPE inputs compute them from positions outside the graph"
    return None


def pad_shift(cell: np.ndarray, cutoff: float) -> np.ndarray:
    """The lattice shift of the padding self-pairs: along the first cell vector, ≥ 2 r_c long."""
    return np.array([np.ceil(2.0 * cutoff / np.linalg.norm(cell[0])), 0.0, 0.0])


def graph_cell(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """The cell the fixed graph sees: the structure's own, or diag(L, L, L), L = 2 r_c + 1 Å, without periodicity."""
    return cell if pbc.any() else np.eye(3) * (2.0 * cutoff + 1.0)


def capacity(pairs: int, n_atoms: int, periodic: bool) -> int:
    """Pair slots K of a fixed graph for ``pairs`` pairs: :data:`PAD_MARGIN` × that, rounded up to 8,
    at most N(N − 1) without periodicity."""
    k = 8 * int(np.ceil(max(pairs, 1) * PAD_MARGIN / 8))
    return k if periodic else max(min(k, n_atoms * (n_atoms - 1)), pairs, 1)


def check_padding(model, example, shift: np.ndarray) -> None:
    """The energy and forces with one more padding pair equal those without (the envelope masks it).

    ``example``: ``(numbers, positions, cell (3, 3), edges, shifts)`` of one structure."""
    numbers, positions, cell, edges, shifts = example

    def run(e, s):
        batch = AtomsBatch(numbers=numbers, positions=positions, cell=cell.unsqueeze(0),
                           pbc=torch.ones(1, 3, dtype=torch.bool, device=positions.device),
                           batch=torch.zeros(len(numbers), dtype=torch.long, device=positions.device),
                           n_atoms=torch.full((1,), len(numbers), dtype=torch.long, device=positions.device),
                           edge_index=e, cell_shifts=s, cutoff=model.cutoff)
        with _uncompiled(model):
            out = model(batch, forces=True, stress=False, dipole=False)
        return out["energy"].detach(), out["forces"].detach()

    pad_e = torch.zeros(2, 1, dtype=edges.dtype, device=edges.device)
    pad_s = torch.as_tensor(shift, dtype=shifts.dtype, device=shifts.device).view(1, 3)
    base = run(edges, shifts)
    more = run(torch.cat([edges, pad_e], dim=1), torch.cat([shifts, pad_s]))
    tol = 1e-4 if positions.dtype == torch.float32 else 1e-10
    for a, b in zip(base, more):
        if not torch.allclose(a, b, rtol=tol, atol=tol):
            raise ValueError("pairs beyond the cutoff change this model's energy or forces (no envelope on some edge term)")


def _numpy(distances: torch.Tensor) -> np.ndarray:
    return distances.detach().to("cpu", torch.float64).numpy()


def _closest_pair(distances: np.ndarray, edges: np.ndarray, cutoff: float) -> tuple[int, int, float]:
    """The closest pair within ``cutoff`` among the first E entries of ``distances`` (the real pairs
    ``edges`` (2, E); padding follows), as ``(i, j, d)``; (-1, -1, inf) if none."""
    d = distances[: edges.shape[1]]
    k = int(d.argmin()) if len(d) else -1
    if k < 0 or d[k] >= cutoff:
        return (-1, -1, float("inf"))
    i, j = (int(x) for x in edges[:, k])
    return (i, j, float(d[k]))


def check_finite(positions: np.ndarray) -> None:
    """:class:`InputError` naming the first atom with a non-finite coordinate, if any."""
    if not np.isfinite(positions).all():
        k = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise InputError(f"non-finite coordinates (NaN or inf) at atom {k}")


def unavailable(err: Exception) -> str:
    """The one-line reason a graph could not be traced or compiled, also given as a warning."""
    reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
    warnings.warn(f"compiled fixed-graph path unavailable, using the general path ({reason})", stacklevel=4)
    return reason


def check_closest(closest: tuple[int, int, float]) -> None:
    """:class:`InputError` when the pair ``(i, j, d)`` is closer than :data:`~localframe.data.convert.MIN_DISTANCE`."""
    i, j, d = closest
    if d < MIN_DISTANCE:
        raise InputError(f"atoms {i} and {j} are {d:.3g} Å apart (closer than {MIN_DISTANCE} Å)")
