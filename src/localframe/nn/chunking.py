r"""Sums over pairs, evaluated at once or chunk by chunk with recomputation (memory-lean forces).

Every model's message passing is made of sums over the pairs e = (i, j) of each centre atom i,

    y_i = Σ_{e: i_e = i} f(g_e, a_{i_e}, b_{j_e}),      g_e = G(r_e, c_{i_e}, d_{j_e})

with per-pair features g_e (radial bases, envelopes, frames, filters: functions of the pair vector
r_e and of per-atom tensors c, d read at the two ends) and per-atom inputs a, b. :class:`Pairs`
evaluates them in one of two ways, with the same arithmetic:

* at once (``chunk=None``): g is computed for all pairs once and shared by every sum; autograd keeps
  every per-pair intermediate, (pairs × channels) tensors, until the backward pass;
* in chunks of ``chunk`` pairs (``chunk=k``): each sum runs chunk by chunk — features, message and
  ``index_add`` into the per-atom result, then the chunk's intermediates are freed. The backward pass
  recomputes each chunk with autograd on, takes its vector–Jacobian product, and adds the gradients of
  the per-atom inputs back with ``index_add`` (O(pairs in the chunk), never a dense (atoms × channels)
  gradient per chunk); it takes only the gradients the running backward pass uses, so a force or stress
  pass (``torch.autograd.grad`` with respect to positions and strain) takes no parameter gradients, while
  ``energy.backward()`` takes them all. Only the per-atom inputs and outputs of each sum are kept, so peak memory grows
  as atoms × channels plus one chunk's intermediates; the features are recomputed in every sum and the
  forward of every chunk runs twice. Measured on 1,000 Si atoms, one thread: LEFTNet 1.3× the CPU time of
  the path at once (cold call), PaiNN 0.7× (warm; small tensors stay in cache and need no fresh pages).

The chunked backward is not itself differentiable: training on forces (``create_graph=True``) uses the
path at once. :func:`chunk_size` is the rule the models apply: chunks in eval mode when there are more
pairs than one chunk; never in training mode.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.utils.checkpoint
from torch.autograd.function import once_differentiable

from localframe.errors import InputError
from localframe.nn.scatter import gather, scatter_sum

#: Default chunk: about this many elements in each (pairs × channels) tensor of a chunk
#: (2²⁰ floats: 4 MiB in float32), i.e. 2²⁰ / hidden_channels pairs (8,192 at 128 channels).
CHUNK_ELEMENTS = 2**20
#: The smallest default chunk, in pairs.
MIN_CHUNK = 1024

EDGE, CENTRE, NEIGHBOUR = 0, 1, 2


def chunk_size(setting: int | None, n_pairs: int, channels: int, training: bool) -> int | None:
    """Pairs per chunk for a call with ``n_pairs`` pairs, or None to evaluate at once.

    ``setting``: None (default: ``CHUNK_ELEMENTS // channels`` pairs, at least ``MIN_CHUNK``), a
    positive number of pairs, or 0 (never chunk). Training mode never chunks (the chunked backward
    cannot be differentiated again, as forces in a loss need)."""
    if isinstance(setting, bool) or not (setting is None or (isinstance(setting, int) and setting >= 0)):
        raise InputError(f"edge_chunk must be None (automatic), 0 (off) or a positive number of pairs, got {setting!r}")
    if training or setting == 0:
        return None
    size = setting or max(MIN_CHUNK, CHUNK_ELEMENTS // max(int(channels), 1))
    return size if n_pairs > size else None


def pairs_of(module: torch.nn.Module, edge_index: torch.Tensor, n_nodes: int) -> "Pairs":
    """The :class:`Pairs` of a representation's call: chunked as :func:`chunk_size` says for its
    ``edge_chunk`` setting, width ``hidden_channels`` and mode, with its parameters that require gradients."""
    chunk = chunk_size(module.edge_chunk, int(edge_index.shape[1]), module.hidden_channels, module.training)
    params = [p for p in module.parameters() if p.requires_grad] if chunk else ()
    return Pairs(edge_index, n_nodes, chunk, params)


def _bounds(n_pairs: int, chunk: int):
    return [(a, min(a + chunk, n_pairs)) for a in range(0, max(n_pairs, 1), chunk)]  # one empty chunk for no pairs


def _take(tensor: torch.Tensor, kind: int, a: int, b: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    return tensor[a:b] if kind == EDGE else gather(tensor, i if kind == CENTRE else j)


class _ChunkedSum(torch.autograd.Function):
    """y = Σ_chunks index_add(fn(pieces of the chunk)); ``spec`` = (fn, kinds, edge_index, n_nodes, chunk, params)."""

    @staticmethod
    def forward(ctx, spec, *tensors):
        fn, kinds, edge_index, n_nodes, chunk, params = spec
        ctx.spec = spec
        ctx.set_materialize_grads(False)  # an output nothing depends on gets None: skipped in backward
        ctx.save_for_backward(*tensors)
        outs = None
        for a, b in _bounds(edge_index.shape[1], chunk):
            i, j = edge_index[0, a:b], edge_index[1, a:b]
            res = fn([_take(t, k, a, b, i, j) for t, k in zip(tensors, kinds)])
            if outs is None:
                outs = [r.new_zeros((n_nodes,) + tuple(r.shape[1:])) for r in res]
            for out, r in zip(outs, res):
                out.index_add_(0, i, r)
            del res
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        fn, kinds, edge_index, n_nodes, chunk, params = ctx.spec
        tensors = ctx.saved_tensors
        n_in = len(kinds)
        need = _used(ctx)
        out = [torch.zeros_like(t) if n else None for t, n in zip(tensors[:n_in], need[:n_in])]
        trainable = [p for p, n in zip(params, need[n_in:]) if n]
        param_grads: list[torch.Tensor | None] = [None] * len(trainable)
        for a, b in _bounds(edge_index.shape[1], chunk):
            i, j = edge_index[0, a:b], edge_index[1, a:b]
            with torch.enable_grad():
                pieces = [_take(t.detach(), k, a, b, i, j).requires_grad_(n)
                          for t, k, n in zip(tensors, kinds, need)]
                res = fn(pieces)
                pairs = [(r, gather(g, i)) for r, g in zip(res, grads) if g is not None and r.requires_grad]
                wrt = [p for p, n in zip(pieces, need) if n] + trainable
                found = torch.autograd.grad([r for r, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True) \
                    if pairs and wrt else [None] * len(wrt)
            found = iter(found)
            for k, (kind, n) in enumerate(zip(kinds, need)):
                g = next(found) if n else None
                if g is None:
                    continue
                if kind == EDGE:
                    out[k][a:b] += g
                else:
                    out[k].index_add_(0, i if kind == CENTRE else j, g)
            for k, g in enumerate(found):
                if g is not None:
                    param_grads[k] = g if param_grads[k] is None else param_grads[k] + g
            del pieces, res, pairs, found  # before the next chunk's are made
        param_grads = iter(param_grads)
        return (None, *out, *[next(param_grads) if n else None for n in need[n_in:]])


def _used(ctx) -> list[bool]:
    """Per tensor input of a :class:`_ChunkedSum`: whether the running backward pass uses its gradient.

    ``needs_input_grad`` says which inputs require one; of those, only the ones whose gradient node the
    engine will run are used: ``torch.autograd.grad(energy, positions)`` (forces, stress) runs no
    parameter's gradient accumulator, so the recompute then takes no parameter gradients, while
    ``energy.backward()`` runs them all."""
    need = ctx.needs_input_grad[1:]  # after spec, which is not a tensor and has no entry in next_functions
    if len(ctx.next_functions) != len(need):
        return list(need)
    try:
        return [bool(n) and node is not None and torch._C._will_engine_execute_node(node)
                for n, (node, _) in zip(need, ctx.next_functions)]
    except (AttributeError, RuntimeError):  # no such query in this torch: every gradient that may be needed
        return list(need)


@torch.compiler.disable  # a compiled representation (torch.compile) runs the chunk loop eagerly
def _chunked_sum(spec, *tensors):
    return _ChunkedSum.apply(spec, *tensors)


class Pairs:
    """The pairs of one call (``edge_index`` (2, E), ``n_nodes`` atoms) and their per-pair features.

    ``Pairs(edge_index, n_nodes, chunk, params)``; ``chunk`` from :func:`chunk_size` (None: at once),
    ``params`` the module parameters the features and messages use (their gradients, when they require
    one, are computed in the chunked backward as well). :meth:`features` adds a stage of per-pair
    features; :meth:`sum` evaluates a sum over the pairs.
    """

    def __init__(self, edge_index: torch.Tensor, n_nodes: int, chunk: int | None = None, params: Sequence = ()):
        self.edge_index, self.n_nodes, self.chunk = edge_index, n_nodes, chunk  # no int(): traced sizes stay symbolic
        self.params = tuple(p for p in params if isinstance(p, torch.Tensor))
        self._stages: list[tuple] = []  # (fn, tensors, kinds, (n_edges, n_centre))
        self._cached: tuple = ()

    @property
    def chunked(self) -> bool:
        return self.chunk is not None

    def _pieces(self, tensors, kinds) -> list[torch.Tensor]:
        i, j = self.edge_index
        return [t if k == EDGE else gather(t, i if k == CENTRE else j) for t, k in zip(tensors, kinds)]  # not t[0:], whose backward copies

    def features(self, fn: Callable, edges: Sequence = (), centre: Sequence = (), neighbour: Sequence = ()) -> "Pairs":
        """Add per-pair features ``fn(previous, edges, centre, neighbour) -> tuple``: ``previous`` the
        features of the earlier stages, ``edges`` per-pair tensors (E, ...) and ``centre``/``neighbour``
        per-atom tensors (N, ...) read at i and at j. At once they are computed here, once; in chunks,
        in every chunk of every later sum. Returns a new :class:`Pairs` with the stage added."""
        tensors = (*edges, *centre, *neighbour)
        kinds = (EDGE,) * len(edges) + (CENTRE,) * len(centre) + (NEIGHBOUR,) * len(neighbour)
        out = Pairs(self.edge_index, self.n_nodes, self.chunk, self.params)
        out._stages = self._stages + [(fn, tensors, kinds, (len(edges), len(centre)))]
        if not self.chunked:
            pieces = self._pieces(tensors, kinds)
            out._cached = tuple(fn(self._cached, *_split(pieces, len(edges), len(centre))))
        return out

    def cached(self) -> tuple:
        """The features of all pairs (at once only)."""
        if self.chunked:
            raise RuntimeError("per-pair features of all pairs are not kept when evaluating in chunks")
        return self._cached

    def recompute(self, fn: Callable, *args):
        """``fn(*args)``; when chunked, through ``torch.utils.checkpoint`` (non-reentrant), so that the force
        pass recomputes fn's intermediates instead of keeping them: for per-atom steps whose intermediates
        are much wider than their inputs and outputs."""
        if not self.chunked or not torch.is_grad_enabled():
            return fn(*args)
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)

    def sum(self, message: Callable, centre: Sequence = (), neighbour: Sequence = ()) -> tuple[torch.Tensor, ...]:
        """(y_i, ...) with y_i = Σ_{e: i_e = i} message(features_e, centre[i_e], neighbour[j_e]):
        ``message(features, centre, neighbour) -> tuple`` of per-pair tensors, each summed onto the centres."""
        if not self.chunked:
            i, j = self.edge_index
            res = message(self._cached, [gather(t, i) for t in centre], [gather(t, j) for t in neighbour])
            return tuple(scatter_sum(r, i, self.n_nodes) for r in res)
        tensors, kinds, layout = [], [], []
        for fn, stage_tensors, stage_kinds, sizes in self._stages:
            tensors += stage_tensors
            kinds += stage_kinds
            layout.append((fn, len(stage_tensors), sizes))
        tensors += [*centre, *neighbour]
        kinds += [CENTRE] * len(centre) + [NEIGHBOUR] * len(neighbour)
        n_centre = len(centre)

        def run(pieces):
            feats, k = (), 0
            for fn, count, (n_edges, n_c) in layout:
                feats = tuple(fn(feats, *_split(pieces[k : k + count], n_edges, n_c)))
                k += count
            rest = pieces[k:]
            return message(feats, rest[:n_centre], rest[n_centre:])

        spec = (run, tuple(kinds), self.edge_index, self.n_nodes, self.chunk, self.params)
        return _chunked_sum(spec, *tensors, *self.params)


def given(previous, edges, centre, neighbour):
    """Per-pair features passed in as they are (``Pairs(...).features(given, edges=(...))``)."""
    return edges


def _split(pieces, n_edges: int, n_centre: int):
    return pieces[:n_edges], pieces[n_edges : n_edges + n_centre], pieces[n_edges + n_centre :]


__all__ = ["CHUNK_ELEMENTS", "MIN_CHUNK", "Pairs", "chunk_size", "given", "pairs_of"]
