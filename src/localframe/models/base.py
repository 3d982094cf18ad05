r"""The contract between model bodies and the shared heads.

A *representation* (one file per model in this package) maps a graph to per-atom features:

    forward(numbers (N,), edge_index (2, E), vectors (E, 3), batch (N,), n_structures)
        -> scalars (N, F) invariant,  vectors (N, 3, F) equivariant or None

``vectors`` are the pair vectors r_ij = x_j − x_i (+ periodic image shift) for the pairs
``edge_index = (i, j)``, i the centre atom. A representation sees only these relative, image-
corrected vectors — never absolute positions or the cell — so translation invariance and
periodic consistency hold by construction. Its messages must vanish smoothly at the cutoff.

:class:`AtomisticModel` wraps a representation with the heads that every model shares
(see :mod:`localframe.heads`): energy E = Σ_i (scale·e_i + shift + E0[z_i]), conservative forces
F = −∂E/∂x, stress σ = (1/V) ∂E/∂ε through a symmetric strain ε applied to positions and cell
(:mod:`localframe.models.atomistic`, with its strain helpers), and the other outputs the heads define.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn



class Representation(nn.Module):
    """Base class of model bodies. Subclasses set ``symmetry`` and ``hidden_channels``."""

    #: "E(3)": invariant under rotations and reflections; "SE(3)": rotations only (chirality-aware).
    #: A model with a parity switch sets it per instance in ``__init__``.
    symmetry: str = "E(3)"
    #: Citation shown in docs/models.md.
    paper: ClassVar[str] = ""
    #: Whether the body returns equivariant per-atom vectors (used by the dipole head).
    has_vectors: ClassVar[bool] = False
    #: Named hyperparameter sets, e.g. the paper's settings: ``{"qm9": {"hidden_channels": 256, ...}}``;
    #: selected as ``"<model>-<key>"`` (see :func:`localframe.models.resolve_preset`).
    presets: ClassVar[dict[str, dict]] = {}
    #: Options of the shared heads (:mod:`localframe.heads`), e.g. ``{"readout": "linear", "element_affine": True}``
    #: for a model whose paper reads its energy out that way; set per instance in ``__init__``.
    head_options: dict = {}
    #: Width of the returned scalars when it differs from ``hidden_channels`` (the vectors' width).
    scalar_channels: int | None = None

    #: Parameter names of earlier model files, as prefixes, and what they are now:
    #: ``{"lse_in.": "lse.input."}`` loads a state_dict saved with ``lse_in.weight`` into ``lse.input.weight``.
    legacy_keys: ClassVar[dict[str, str]] = {}

    #: Pairs per chunk of the memory-lean evaluation (:mod:`localframe.nn.chunking`, set through
    #: ``AtomisticModel.edge_chunk``): None chooses 2²⁰ / hidden_channels, 0 turns chunking off.
    edge_chunk: int | None = None

    hidden_channels: int
    cutoff: float

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Renames the :attr:`legacy_keys` of an earlier file (in ``state_dict``, a copy made by
        ``load_state_dict``) before loading."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            old = next((o for o in self.legacy_keys if rest.startswith(o)), None)
            if old is not None and prefix + self.legacy_keys[old] + rest[len(old):] not in state_dict:
                state_dict[prefix + self.legacy_keys[old] + rest[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def message_layers(self) -> list[tuple[nn.Module, ...]]:
        """The message-passing layers in order, each as the modules that make it up (used by the Virgo
        initialisation, :mod:`localframe.nn.init`). Default: the ``nn.ModuleList`` attributes of the
        greatest length, zipped (PaiNN's ``messages`` and ``updates`` give one layer per pair)."""
        lists = [m for m in self.children() if isinstance(m, nn.ModuleList) and len(m)]
        longest = max((len(m) for m in lists), default=0)
        return list(zip(*(m for m in lists if len(m) == longest)))

    def forward(
        self,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        vectors: torch.Tensor,
        batch: torch.Tensor,
        n_structures: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError
