r"""LEFTNet: local substructure encoding (LSE) and frame transition encoding (FTE) (Du et al., NeurIPS 2023).

Notation: centre atom i, neighbour j, r_ij = x_j − x_i (periodic image included), d_ij = |r_ij|,
ê_ij = r_ij / d_ij, u_ij = u(d_ij) the polynomial envelope, φ_ij ∈ ℝ^K an exp-normal radial basis,
s_i ∈ ℝ^H invariant and v_i ∈ ℝ^{3×H} equivariant features; frames, scalarize and tensorize:
:mod:`localframe.nn.frames`. Defaults follow the paper and its released code; every switch below
selects a documented cheaper or older variant (ablations).

1. Frames from relative vectors only (no centring; smooth in the neighbour set):

       m_i = Σ_j u_ij r_ij / (1 + Σ_j u_ij),    p_i = Σ_j u_ij m_j / (1 + Σ_j u_ij)
       edge frame F_ij = [n(r_ij); n(r_ij × (m_i + m_j)); ·],   node frame F_i = [n(m_i); n(m_i × p_i); ·]

2. Radial filter and embedding:  h_ij = u_ij · MLP_r(φ_ij),   s_i = E(z_i) + Σ_j h_ij ⊙ E′(z_j),  v_i = 0.

3. LSE (:mod:`localframe.nn.lse`), the neighbourhood of each endpoint seen in the edge frame (computed
   once, C = H channels):

       S_i   = Σ_j ê_ij ⊗ (h_ij ⊙ σ(W s_j + b))                        ∈ ℝ^{3×C}
       P^u   = scalarize(S_u, F_ij),  u ∈ {i, j};    t^u_c = g(P^u_{:,c}) + P^u_{1,c}
       A_ij  = [t^j, t^i, h_ij, φ_ij]                                    (g: ℝ³ → ℝ^{H/4} → ℝ, shared over c)

   ``lse_channels=C < H`` narrows it: S_i = W_S Σ_j …, W_S: H → C; ``lse_hidden`` sets g's width.

4. Layer ℓ = 1..L, equivariant message passing with one MLP_A per layer (3H+K → 3H → 3H):

       [α, β, γ]_ij = MLP^ℓ_x(s_j) ⊙ u_ij (W^ℓ_φ φ_ij + b^ℓ) ⊙ MLP^ℓ_A(A_ij)
       s_i ← s_i + Σ_j α_ij,     v_i ← v_i + Σ_j (v_j ⊙ β_ij / √3 + ê_ij ⊗ γ_ij) / √H

   ``shared_filter=True``: one MLP_A for all layers; ``filter_hidden``: its hidden width (default 3H);
   ``vector_scale="sqrt3"``: v_i ← v_i + Σ_j (v_j ⊙ β_ij + ê_ij ⊗ γ_ij) / √3 instead.

5. FTE: the equivariant features are read in the node frame, mixed as invariants and tensorised back:

       [U, V] = W_uv v_i (no bias),   c_i = scalarize(U, F_i) ∈ ℝ^{3×H},   n_i = √(|U|² + ε²)
       t_i = n_i + g_F(c_i)          (g_F: ℝ³ → ℝ^{H/4} → ℝ per channel, as g in step 3)
       [a₁, a₂, a₃, b_i] = MLP_u([s_i, t_i]),   q_i = ⟨U, V⟩ / √H,   b_i ∈ ℝ^{2×H} (e₁, e₃; SE(3): 3×H)
       s_i ← s_i + (a₁ + a₂ ⊙ q_i) / √2,        v_i ← v_i + a₃ ⊙ V + tensorize(b_i, F_i)

   ``fte``: "frame" (the above), "readout" (no tensorize term), "coefficients" (MLP_u([s_i, n_i, c_i]),
   no tensorize term), "none" (MLP_u([s_i, n_i]): the released code, which uses no frame here);
   ``fte_gate="sum"``: s_i ← s_i + (a₁ + a₂ + q_i)/√2 as in the released code (a₁ + a₂ is one output).

Symmetry. E(3)-invariant by default, as in the paper: coefficients on the pseudovector axis e₂ pass
through the smooth even function √(c² + ε²) − ε (not |c|, whose kink breaks smooth forces), and
tensorize skips e₂ (its coefficient would have to be a pseudoscalar), so v stays polar.
``symmetry="SE(3)"`` keeps the sign and all three axes: a chirality-aware model.

Initialisation. Every linear layer starts with weights N(0, 1/fan_in) and zero biases
(:func:`localframe.nn.init.unit_variance_init`): a message multiplies three learned factors, and with
PyTorch's default each shrinks the signal (QM9 U0, 626 steps: validation MAE 0.39 eV with the default,
0.20 eV with this one, measured on the earlier shared-filter model).

Computation (the same function, tested against the straightforward forward): φ's subnormal values are
set to 0 (below 1.2e-38; they slow every product that reads them several-fold on many CPUs);
u_ij (W_φ φ_ij + b) is one matrix product [u φ, u] [W_φ, b]ᵀ; the LSE runs in chunks of edges, g as two
matrix products on the columns (:mod:`localframe.nn.lse`). Where the time goes: docs/benchmarks.md.

Departures from the paper and its code: see docs/models.md ("LEFTNet"). In short: local frames
(no pre-centring, safe normalisation), envelope on the final filters, FTE uses the node frame,
smooth even map instead of abs, product gate a₂ ⊙ q, no direct force head.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.utils.checkpoint
from torch import nn

from localframe.errors import InputError
from localframe.nn.elements import N_ELEMENTS
from localframe.nn.mlp import columnwise, mlp
from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.chunking import Pairs, given, pairs_of
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.frames import (
    build_frame, check_symmetry, local_centroids, node_frame, safe_norm, scalarize, tensorize,
)
from localframe.nn.init import unit_variance_init
from localframe.nn.lse import CHUNK_ELEMENTS, LocalSubstructure
from localframe.nn.radial import ExpNormalBasis, flush_subnormal

FTE_MODES = ("frame", "readout", "coefficients", "none")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"leftnet: {name} must be one of {allowed}, got {value!r}")
    return value


class LEFTLayer(nn.Module):
    """Message passing (step 4) followed by frame transition encoding (step 5)."""

    def __init__(self, hidden: int, num_radial: int, a_dim: int, filter_hidden: int | None, chiral: bool,
                 fte: str, fte_hidden: int, fte_gate: str, vector_scale: str):
        super().__init__()
        h = self.hidden = hidden
        self.chiral, self.fte, self.fte_gate = chiral, fte, fte_gate
        self.filter = nn.Linear(num_radial, 3 * h)
        self.mlp_a = mlp([a_dim, filter_hidden, 3 * h]) if filter_hidden else None  # None: shared
        self.node = mlp([h, h, 3 * h])
        self.uv = nn.Linear(h, 2 * h, bias=False)
        width = {"frame": 2, "readout": 2, "coefficients": 5, "none": 2}[fte]
        self.axes = (3 if chiral else 2) if fte == "frame" else 0  # tensorised axes (E(3): e₁, e₃)
        self.update = mlp([width * h, h, (3 + self.axes) * h])
        self.fte_g = mlp([3, fte_hidden, 1]) if fte in ("frame", "readout") else None
        # published: (v_j ⊙ β/√3 + ê ⊗ γ)/√H; "sqrt3": (v_j ⊙ β + ê ⊗ γ)/√3
        self.vscale = (1.0 / math.sqrt(3.0 * h), 1.0 / math.sqrt(h)) if vector_scale == "published" else (
            1.0 / math.sqrt(3.0), 1.0 / math.sqrt(3.0))

    def edge_filter(self, A, phi, u, shared):
        """u_ij (W_φ φ_ij + b) ⊙ MLP_A(A_ij), (E, 3H): the layer's filter, independent of s and v.
        ``shared``: u_ij MLP_A(A_ij) of a shared MLP_A, computed once.

        u_ij (W_φ φ_ij + b) is one matrix product, [u_ij φ_ij, u_ij] [W_φ, b]ᵀ: the same function without
        a separate (E, 3H) product with u."""
        if self.mlp_a is None:
            return self.filter(phi) * shared
        ue = u.unsqueeze(-1)
        weight = torch.cat([self.filter.weight, self.filter.bias.unsqueeze(-1)], dim=1)  # [W_φ, b]
        return (flush_subnormal(torch.cat([ue * phi, ue], dim=-1)) @ weight.t()) * self.mlp_a(A)

    def filter_features(self, previous, edges, centre, neighbour):
        """(ê_ij, this layer's filter) from the pair features (ê, u, φ, A, shared u MLP_A(A))."""
        unit, u, phi, A, shared = previous
        return unit, self.edge_filter(A, phi, u, shared)

    def frame_encoding(self, c, lean=False):
        """g_F on every column of c (N, 3, H), (N, H). ``lean``, when autograd records: in chunks of about
        ``CHUNK_ELEMENTS`` of g_F's hidden activations, each through ``torch.utils.checkpoint``, so that the
        (N, H/4, H) activations (4,096 floats per atom at H = 128) are never kept, nor made, for all atoms at once."""
        if not (lean and torch.is_grad_enabled()):
            return columnwise(self.fte_g, c).squeeze(-2)
        size = max(1, CHUNK_ELEMENTS // (self.fte_g[0].out_features * c.shape[-1]))
        run = lambda part: columnwise(self.fte_g, part).squeeze(-2)  # noqa: E731
        parts = [torch.utils.checkpoint.checkpoint(run, c[k : k + size], use_reentrant=False)
                 for k in range(0, max(c.shape[0], 1), size)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def message(self, features, centre, neighbour):
        """(α_ij, (v_j ⊙ β_ij / √3 + ê_ij ⊗ γ_ij) / √H) for the pairs of ``features`` = (ê, filter)."""
        unit, filt = features
        h = self.hidden
        alpha, beta, gamma = (neighbour[0] * filt).split(h, dim=-1)
        dv = (unit * self.vscale[1]).unsqueeze(-1) * gamma.unsqueeze(1)
        if len(neighbour) > 1:  # first layer: v = 0, so v_j ⊙ β_ij vanishes; in place: no second (E, 3, H) tensor
            dv = dv.addcmul_(neighbour[1], beta.unsqueeze(1))
        return alpha, dv

    def forward(self, s, v, filt, unit, node_fr, edge_index):
        """The layer with the filters of all pairs given, (E, 3H)."""
        return self.step(s, v, Pairs(edge_index, s.shape[0]).features(given, edges=(unit, filt)), node_fr)

    def step(self, s, v, pairs: Pairs, node_fr):
        """The layer on ``pairs`` whose features are (ê, filter) (:meth:`filter_features`)."""
        # 4. message passing
        neighbour = (self.node(s),) if v is None else (self.node(s), v * self.vscale[0])
        ds, dv = pairs.sum(self.message, neighbour=neighbour)
        s = s + ds
        v = dv if v is None else v + dv
        # 5. frame transition encoding; chunked calls keep only its inputs (g_F's (N, H/4, H) activations)
        return pairs.recompute(functools.partial(self.transition, lean=pairs.chunked), s, v, node_fr)

    def transition(self, s, v, node_fr, lean=False):
        """Step 5 (FTE) on the atoms: (s, v) after the message passing → (s, v) of the next layer.
        ``lean`` (chunked calls): g_F in chunks of atoms, each recomputed in the backward pass (:meth:`frame_encoding`)."""
        n, h = s.shape
        U, V = self.uv(v).split(h, dim=-1)
        norm = safe_norm(U, dim=1)
        if self.fte == "none":
            inputs = [s, norm]
        else:
            c = scalarize(U, node_fr, self.chiral)  # (N, 3, H): U in the node frame
            inputs = [s, norm, c.flatten(1)] if self.fte == "coefficients" else [
                s, norm + self.frame_encoding(c, lean)]
        out = self.update(torch.cat(inputs, dim=-1))
        a1, a2, a3 = out[:, : 3 * h].split(h, dim=-1)
        q = (U * V).sum(dim=1) / math.sqrt(h)
        s = s + ((a1 + a2 + q) if self.fte_gate == "sum" else (a1 + a2 * q)) / math.sqrt(2.0)
        v = v + a3.unsqueeze(1) * V
        if self.axes:  # tensorise back with the node frame (E(3): e₂ is skipped)
            b = out[:, 3 * h :].view(n, self.axes, h)
            b = b if self.chiral else torch.stack([b[:, 0], torch.zeros_like(b[:, 0]), b[:, 1]], dim=1)
            v = v + tensorize(b, node_fr, self.chiral)
        return s, v


@register("leftnet")
class LEFTNet(Representation):
    """LEFTNet as published (per-layer filters, full-width LSE), with an FTE that uses the node frame."""

    paper = (
        "Du et al., A new perspective on building efficient and expressive 3D equivariant graph neural "
        "networks, NeurIPS 2023 (arXiv:2304.04757)"
    )
    has_vectors = True
    legacy_keys = {"lse_in.": "lse.input.", "lse_mix.": "lse.mix.", "lse_g.": "lse.g."}  # earlier model files
    #: "qm9", "md17": the released main_qm9.py / main_md17.py sizes; "cpu": the width the example configs train on a CPU.
    presets = {
        "qm9": {"cutoff": 5.0, "hidden_channels": 256, "num_layers": 4, "num_radial": 32},
        "md17": {"cutoff": 8.0, "hidden_channels": 200, "num_layers": 4, "num_radial": 32},
        "cpu": {"cutoff": 5.0, "hidden_channels": 64, "num_layers": 4, "num_radial": 32},
        # the model `localframe quickstart` trains (its size: localframe.quickstart.HPARAMS)
        "quickstart": {"cutoff": 5.0, "hidden_channels": 64, "num_layers": 3, "num_radial": 32},
        # the cheaper LEFTNet of before 2026-12 (1,130,794 parameters): one shared, narrow MLP_A, a narrow LSE,
        # node-frame coefficients as FTE input without tensorisation, vector messages over √3
        "lite": {"cutoff": 5.0, "hidden_channels": 128, "num_layers": 4, "num_radial": 32, "shared_filter": True,
                 "filter_hidden": 128, "lse_channels": 32, "lse_hidden": 8, "fte": "coefficients", "vector_scale": "sqrt3"},
    }

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_radial: int = 32,
        symmetry: str = "E(3)",
        shared_filter: bool = False,
        filter_hidden: int | None = None,
        lse_channels: int | None = None,
        lse_hidden: int | None = None,
        fte: str = "frame",
        fte_gate: str = "product",
        vector_scale: str = "published",
    ):
        super().__init__()
        h = self.hidden_channels = int(hidden_channels)
        self.cutoff = float(cutoff)
        self.symmetry = check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        fte = _choice("fte", fte, FTE_MODES)
        fte_gate = _choice("fte_gate", fte_gate, ("product", "sum"))
        vector_scale = _choice("vector_scale", vector_scale, ("published", "sqrt3"))
        quarter = max(h // 4, 1)
        c = int(lse_channels) if lse_channels else h
        if not 0 < c <= h:
            raise InputError(f"leftnet: lse_channels must be between 1 and hidden_channels ({h}), got {lse_channels}")
        self.envelope = PolynomialCutoff(cutoff)
        self.radial = ExpNormalBasis(cutoff, num_radial)
        self.radial_mlp = mlp([num_radial, h, h])
        self.embedding = nn.Embedding(N_ELEMENTS, h)
        self.neighbour_embedding = nn.Embedding(N_ELEMENTS, h)
        self.lse = LocalSubstructure(h, int(lse_hidden) if lse_hidden else quarter, c, self.chiral)
        a_dim, hidden_a = 2 * c + h + num_radial, int(filter_hidden) if filter_hidden else 3 * h
        self.shared_mlp_a = mlp([a_dim, hidden_a, 3 * h]) if shared_filter else None
        self.layers = nn.ModuleList(
            LEFTLayer(h, num_radial, a_dim, None if shared_filter else hidden_a, self.chiral, fte, quarter,
                      fte_gate, vector_scale)
            for _ in range(num_layers)
        )
        unit_variance_init(self)

    def frames(self, vectors, u, edge_index, n):
        """The centroids m_i (N, 3), from which the edge frames F_ij are built pair by pair, and the node
        frames F_i (N, 3, 3) (step 1)."""
        m, p = local_centroids(vectors, u, edge_index, n)
        return m, node_frame(m, p)

    def radial_features(self, previous, edges, centre, neighbour):
        """(ê_ij, u_ij, φ_ij, h_ij) from the pair vectors, their lengths d_ij and envelopes (step 2)."""
        vectors, d, u = edges
        phi = self.radial(d)  # subnormals flushed by the basis
        return vectors / d.unsqueeze(-1), u, phi, u.unsqueeze(-1) * self.radial_mlp(phi)

    def substructure_features(self, previous, edges, centre, neighbour, recompute=False):
        """(ê, u, φ, A_ij, u MLP_A(A) when shared) with the edge frame and the LSE (steps 1, 3); m and S read at both ends.
        ``recompute`` (chunked calls): the LSE's g activations are recomputed in the backward pass, not kept."""
        unit, u, phi, hij = previous
        (m_i, S_i), (m_j, S_j) = centre, neighbour
        frame = build_frame(edges[0], m_i + m_j)  # F_ij = edge_frame(r_ij, m)
        A = torch.cat([self.lse.read(lambda rows: (S_i[rows], S_j[rows]), frame, u, recompute), hij, phi], dim=-1)
        shared = u.unsqueeze(-1) * self.shared_mlp_a(A) if self.shared_mlp_a is not None else None
        return unit, u, phi, A, shared

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        u = self.envelope(d)
        m, node_fr = self.frames(vectors, u, edge_index, n)
        pairs = pairs_of(self, edge_index, n).features(self.radial_features, edges=(vectors, d, u))
        # 2. embedding: s_i = E(z_i) + Σ_j h_ij ⊙ E′(z_j)
        (e,) = pairs.sum(lambda f, c, nb: (f[3] * nb[0],), neighbour=(self.neighbour_embedding(numbers),))
        s = self.embedding(numbers) + e
        # 3. local substructure encoding
        (S,) = pairs.sum(lambda f, c, nb: (self.lse.summand(f[3], f[0], nb[0]),), neighbour=(self.lse.neighbour_input(s),))
        pairs = pairs.features(functools.partial(self.substructure_features, recompute=pairs.chunked),
                               edges=(vectors,), centre=(m, S), neighbour=(m, S))
        # 4–5. layers
        v = None  # v = 0 before the first layer
        for layer in self.layers:
            s, v = layer.step(s, v, pairs.features(layer.filter_features), node_fr)
        return s, (v if v is not None else s.new_zeros(n, 3, self.hidden_channels))

