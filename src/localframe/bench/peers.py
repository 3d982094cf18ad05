r"""Peer models behind localframe's model interface, so that one harness times and trains everyone.

Peers: PyTorch Geometric's ``SchNet``, ``DimeNetPlusPlus`` and ``ViSNet``, and ``MACE``
(mace-torch). They are an optional extra (``pip install 'localframe[bench]'``): nothing here
imports them until a peer is built, and :func:`status` says which are installed.

How a peer becomes an :class:`~localframe.models.AtomisticModel`
-------------------------------------------------------------------
A peer body is wrapped in a :class:`PeerRepresentation` that returns the body's own per-atom
output e_i (its native readout, one channel); the energy head of the wrapper is the identity, so

    E = Σ_i (scale · e_i + shift + E0[z_i]),     F = −∂E/∂x,     σ = (1/V) ∂E/∂ε

with the same per-element references, scale and shift (from the training split) as every
localframe model, the same conservative forces and stress, the same loss, optimiser, schedule and
EMA. Scalar targets (QM9) use the same identity readout. Every body sees *the same neighbour
graph* as localframe's models — the pairs of the batch, from :mod:`localframe.data.neighbors`:

* PyG SchNet and MACE only need pair vectors r_ij: SchNet gets ``(edges, |r_ij|)`` through its
  ``interaction_graph`` hook; MACE gets zero positions and r_ij as its edge shifts, so that its
  ``x_receiver − x_sender + shift`` is exactly r_ij. Both are therefore exact under periodic
  boundaries (forces and stress included).
* DimeNet++ and ViSNet compute pair vectors from absolute positions inside, after calling
  ``radius_graph`` (which needs pyg-lib, not on PyPI). During their call, :func:`given_graph`
  replaces that module-level function with one returning the batch's pairs (ViSNet also gets its
  self-loops), and DimeNet's ``triplets`` (which needs torch-sparse) with :func:`triplets`. They
  see only non-periodic structures (PyG has no image shifts); a periodic batch raises
  ``ValueError``.

:func:`radius_graph` is also a stand-alone replacement of PyG's function: every pair closer than
``r`` within each structure of ``batch``, from localframe's neighbour list, without PyG's cap of
``max_num_neighbors`` (the cap would give peers a different graph from ours).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import io
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from localframe.data.batch import AtomsBatch
from localframe.data.neighbors import neighbor_pairs
from localframe.errors import InputError
from localframe.models.atomistic import AtomisticModel
from localframe.models.base import Representation

#: Elements a MACE body is built for unless told otherwise (QM9's H C N O F, plus Si).
DEFAULT_ELEMENTS = (1, 6, 7, 8, 9, 14)


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    name: str
    label: str  # as shown in reports
    package: str  # distribution name, for status and versions
    module: str  # module that must import
    periodic: bool  # exact under periodic boundary conditions
    paper: str
    defaults: dict[str, Any]
    build: Callable[..., nn.Module]


# ---------------------------------------------------------------------- the graph PyG sees
_GIVEN: dict[str, torch.Tensor | None] = {"edge_index": None}


def radius_graph(
    x: torch.Tensor,
    r: float,
    batch: torch.Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int = 32,
    flow: str = "source_to_target",
    num_workers: int = 1,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Drop-in replacement of ``torch_geometric.nn.radius_graph``: pairs closer than ``r``.

    Returns ``edge_index`` (2, E) in PyG's convention (row 0 the source j, row 1 the target i for
    ``flow="source_to_target"``), all pairs within each structure of ``batch`` (no neighbour cap),
    with self-loops when ``loop``. Inside :func:`given_graph` it returns the given pairs instead.
    """
    given = _GIVEN["edge_index"]
    if given is not None:
        edges = given
    else:
        n = x.shape[0]
        batch = torch.zeros(n, dtype=torch.long, device=x.device) if batch is None else batch
        pos = x.detach().cpu().double().numpy()
        owner = batch.cpu().numpy()
        pieces = []
        for b in np.unique(owner):
            members = np.flatnonzero(owner == b)
            i, j, _, _ = neighbor_pairs(pos[members], np.zeros((3, 3)), np.zeros(3, dtype=bool), float(r))
            pieces.append(np.stack([members[j], members[i]]))  # (source j, target i)
        stacked = np.concatenate(pieces, axis=1) if pieces else np.zeros((2, 0), dtype=np.int64)
        edges = torch.as_tensor(stacked, dtype=torch.long, device=x.device)
    if flow == "target_to_source":
        edges = edges.flip(0)
    if loop:
        nodes = torch.arange(x.shape[0], device=x.device)
        edges = torch.cat([edges, torch.stack([nodes, nodes])], dim=1)
    return edges


def triplets(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, ...]:
    """Replacement of ``torch_geometric.nn.models.dimenet.triplets`` without torch-sparse.

    For every edge j→i (``edge_index = (j, i)``), all edges k→j with k ≠ i. Returns
    ``(i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji)`` as PyG does.
    """
    row, col = edge_index  # j -> i
    n_edges = row.numel()
    order = torch.argsort(col * num_nodes + row)  # incoming edges grouped by target, then source
    counts = torch.bincount(col, minlength=num_nodes)
    start = torch.cumsum(counts, 0) - counts
    per_edge = counts[row]  # edges k->j for each edge j->i
    idx_ji = torch.repeat_interleave(torch.arange(n_edges, device=row.device), per_edge)
    first = torch.repeat_interleave(torch.cumsum(per_edge, 0) - per_edge, per_edge)
    offset = torch.arange(idx_ji.numel(), device=row.device) - first
    idx_kj = order[start[row[idx_ji]] + offset]
    idx_i, idx_j, idx_k = col[idx_ji], row[idx_ji], row[idx_kj]
    keep = idx_i != idx_k
    return col, row, idx_i[keep], idx_j[keep], idx_k[keep], idx_kj[keep], idx_ji[keep]


_PATCHED_MODULES = ("torch_geometric.nn.models.dimenet", "torch_geometric.nn.models.visnet",
                    "torch_geometric.nn.models.schnet")


@contextlib.contextmanager
def given_graph(edge_index_pyg: torch.Tensor | None = None) -> Iterator[None]:
    """Within the block, PyG's model modules build graphs with :func:`radius_graph` (returning
    ``edge_index_pyg`` when given) and DimeNet's triplets with :func:`triplets`."""
    saved = []
    for name in _PATCHED_MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyG's deprecation notices on first import
            module = importlib.import_module(name)
        for attr, replacement in (("radius_graph", radius_graph), ("triplets", triplets)):
            if hasattr(module, attr):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, replacement)
    previous = _GIVEN["edge_index"]
    _GIVEN["edge_index"] = edge_index_pyg
    try:
        yield
    finally:
        _GIVEN["edge_index"] = previous
        for module, attr, original in reversed(saved):
            setattr(module, attr, original)


# ---------------------------------------------------------------------- adapters
class PeerRepresentation(Representation):
    """A peer body as a representation: per-atom energies (N, 1), no vectors."""

    hidden_channels = 1
    needs_positions = False

    def __init__(self, body: nn.Module, cutoff: float, peer: str):
        super().__init__()
        self.body = body
        self.cutoff = float(cutoff)
        self.peer = peer
        self.positions: torch.Tensor | None = None  # set by PeerModel for bodies that need them

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        return self.atomic(numbers, edge_index, vectors, batch, n_structures).reshape(-1, 1), None

    def atomic(self, numbers, edge_index, vectors, batch, n_structures) -> torch.Tensor:
        raise NotImplementedError


class _GraphSlot(nn.Module):
    """SchNet's ``interaction_graph``: returns the graph the adapter put in it."""

    def __init__(self):
        super().__init__()
        self.current: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, pos, batch):
        return self.current


class PygSchNetRepresentation(PeerRepresentation):
    def atomic(self, numbers, edge_index, vectors, batch, n_structures):
        slot = self.body.interaction_graph
        slot.current = (edge_index.flip(0), vectors.norm(dim=-1))
        try:
            atoms = torch.arange(numbers.shape[0], device=numbers.device)
            dummy = vectors.new_zeros(numbers.shape[0], 3)
            return self.body(numbers, dummy, atoms)  # one "graph" per atom: per-atom outputs
        finally:
            slot.current = None


class PygPositionsRepresentation(PeerRepresentation):
    """DimeNet++ and ViSNet: the body reads absolute positions (non-periodic structures only)."""

    needs_positions = True

    def atomic(self, numbers, edge_index, vectors, batch, n_structures):
        if self.positions is None:
            raise RuntimeError(f"{self.peer} needs positions: call it through PeerModel")
        atoms = torch.arange(numbers.shape[0], device=numbers.device)
        with given_graph(edge_index.flip(0)):
            out = self.body(numbers, self.positions, atoms)
        return out[0] if isinstance(out, tuple) else out


class MaceRepresentation(PeerRepresentation):
    def __init__(self, body: nn.Module, cutoff: float, peer: str, elements: tuple[int, ...]):
        super().__init__(body, cutoff, peer)
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("element_index", table)
        self.elements = tuple(elements)

    def atomic(self, numbers, edge_index, vectors, batch, n_structures):
        index = self.element_index[numbers]
        if bool((index < 0).any()):
            missing = sorted({int(z) for z in numbers[index < 0]})
            raise ValueError(f"mace was built for elements {list(self.elements)}, not {missing}")
        counts = torch.bincount(batch, minlength=n_structures)
        data = {
            "positions": vectors.new_zeros(numbers.shape[0], 3),
            "edge_index": edge_index,
            "shifts": vectors,  # x_receiver - x_sender + shift = r_ij with zero positions
            "unit_shifts": vectors.new_zeros(vectors.shape),
            "cell": vectors.new_zeros(n_structures, 3, 3),
            "batch": batch,
            "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
            "node_attrs": nn.functional.one_hot(index, len(self.elements)).to(vectors.dtype),
        }
        out = self.body(data, training=self.training, compute_force=False)
        return out["node_energy"]


class PeerModel(AtomisticModel):
    """An AtomisticModel around a peer body: identity readouts, everything else shared."""

    def __init__(self, representation: PeerRepresentation, name: str, hparams: dict[str, Any],
                 targets: dict[str, str] | None = None):
        super().__init__(representation, name, hparams, dipole=False, targets=targets)
        self.energy_head.net = nn.Identity()
        for head in self.target_heads.values():
            head.net = nn.Identity()

    def forward(self, batch: AtomsBatch, forces: bool = True, stress: bool | None = None,
                dipole: bool | None = None) -> dict[str, torch.Tensor]:
        rep = self.representation
        if not rep.needs_positions:
            return super().forward(batch, forces, stress, dipole)
        if bool(batch.pbc.any()):
            raise ValueError(f"{self.name} has no periodic boundary conditions (PyG computes pair vectors "
                             "from positions without image shifts)")
        positions = batch.positions
        if (forces or stress) and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        rep.positions = positions
        try:
            return super().forward(dataclasses.replace(batch, positions=positions), forces, stress, dipole)
        finally:
            rep.positions = None


# ---------------------------------------------------------------------- builders
def _build_pyg_schnet(cutoff: float, hidden_channels: int, num_filters: int, num_interactions: int,
                      num_gaussians: int, **_) -> PeerRepresentation:
    from torch_geometric.nn.models import SchNet

    body = SchNet(hidden_channels=hidden_channels, num_filters=num_filters, num_interactions=num_interactions,
                  num_gaussians=num_gaussians, cutoff=cutoff, interaction_graph=_GraphSlot())
    return PygSchNetRepresentation(body, cutoff, "pyg_schnet")


def _build_pyg_dimenetpp(cutoff: float, **hp) -> PeerRepresentation:
    from torch_geometric.nn.models import DimeNetPlusPlus

    body = DimeNetPlusPlus(out_channels=1, cutoff=cutoff, **hp)
    return PygPositionsRepresentation(body, cutoff, "pyg_dimenet++")


def _build_pyg_visnet(cutoff: float, **hp) -> PeerRepresentation:
    from torch_geometric.nn.models import ViSNet

    body = ViSNet(cutoff=cutoff, derivative=False, **hp)
    return PygPositionsRepresentation(body, cutoff, "pyg_visnet")


def _build_mace(cutoff: float, channels: int, max_L: int, correlation: int, num_interactions: int,
                max_ell: int, num_bessel: int, num_polynomial_cutoff: int, avg_num_neighbors: float,
                elements: tuple[int, ...] = DEFAULT_ELEMENTS, **_) -> PeerRepresentation:
    with contextlib.redirect_stdout(io.StringIO()):  # mace prints a notice about optional CUDA kernels
        from e3nn import o3
        from mace.modules import MACE, interaction_classes

    irreps = " + ".join(f"{channels}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in range(max_L + 1))
    body = MACE(
        r_max=cutoff, num_bessel=num_bessel, num_polynomial_cutoff=num_polynomial_cutoff, max_ell=max_ell,
        interaction_cls=interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=num_interactions, num_elements=len(elements), hidden_irreps=o3.Irreps(irreps),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(elements)),
        avg_num_neighbors=float(avg_num_neighbors), atomic_numbers=list(elements), correlation=correlation,
        gate=torch.nn.functional.silu,
    )
    return MaceRepresentation(body, cutoff, "mace", tuple(elements))


PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec("pyg_schnet", "PyG SchNet", "torch_geometric", "torch_geometric.nn.models", True,
                 "Schütt et al., J. Chem. Phys. 148, 241722 (2018)",
                 {"hidden_channels": 128, "num_filters": 128, "num_interactions": 6, "num_gaussians": 50},
                 _build_pyg_schnet),
        PeerSpec("pyg_dimenet++", "PyG DimeNet++", "torch_geometric", "torch_geometric.nn.models", False,
                 "Gasteiger et al., arXiv:2011.14115 (2020)",
                 {"hidden_channels": 128, "num_blocks": 4, "int_emb_size": 64, "basis_emb_size": 8,
                  "out_emb_channels": 256, "num_spherical": 7, "num_radial": 6},
                 _build_pyg_dimenetpp),
        PeerSpec("pyg_visnet", "PyG ViSNet", "torch_geometric", "torch_geometric.nn.models", False,
                 "Wang et al., Nat. Commun. 15, 313 (2024)",
                 {"lmax": 1, "num_heads": 8, "num_layers": 6, "hidden_channels": 128, "num_rbf": 32},
                 _build_pyg_visnet),
        PeerSpec("mace", "MACE", "mace-torch", "mace.modules", True,
                 "Batatia et al., NeurIPS 2022 (arXiv:2206.07697)",
                 {"channels": 64, "max_L": 1, "correlation": 3, "num_interactions": 2, "max_ell": 3,
                  "num_bessel": 8, "num_polynomial_cutoff": 5, "avg_num_neighbors": 16.0},
                 _build_mace),
    )
}


def names() -> list[str]:
    return list(PEERS)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def status(name: str) -> dict[str, Any]:
    """``{"available": bool, "version": str | None, "reason": str}`` for peer ``name``."""
    spec = _spec(name)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            importlib.import_module(spec.module)
    except Exception as err:  # ImportError, or a broken install raising anything
        return {"available": False, "version": _version(spec.package),
                "reason": f"skipped: {spec.package} not installed or not importable ({type(err).__name__}: {err})"}
    return {"available": True, "version": _version(spec.package), "reason": ""}


def _spec(name: str) -> PeerSpec:
    if name not in PEERS:
        raise InputError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}")
    return PEERS[name]


def is_peer(name: str) -> bool:
    return name in PEERS


def periodic(name: str) -> bool:
    return _spec(name).periodic


def label(name: str) -> str:
    return PEERS[name].label if name in PEERS else name


def create(name: str, cutoff: float = 5.0, targets: dict[str, str] | None = None, **hparams: Any) -> PeerModel:
    """Build peer ``name`` (its default size, overridden by ``hparams``) as a :class:`PeerModel`."""
    spec = _spec(name)
    state = status(name)
    if not state["available"]:
        raise InputError(state["reason"])
    unknown = set(hparams) - set(spec.defaults) - {"elements"}
    if unknown:
        raise InputError(f"peer {name!r}: unknown hyperparameters {sorted(unknown)}; known: {sorted(spec.defaults)}")
    merged = {**spec.defaults, **hparams}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # notices from e3nn/TorchScript code generation
        representation = spec.build(cutoff=float(cutoff), **merged)
    return PeerModel(representation, name, {"cutoff": float(cutoff), **merged}, targets=targets)
