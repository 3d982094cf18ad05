r"""AlphaNet: local frames with a complex edge kernel and learned phase transitions (Yin et al., 2025).

The published architecture (arXiv:2501.07155, released code zmyybc/AlphaNet), with the fixes listed at
the end. Notation: centre atom i, neighbour j, r_ij = x_j − x_i (periodic image included), d_ij = |r_ij|,
ê_ij = r_ij / d_ij, u_ij = u(d_ij) the polynomial envelope, φ_ij ∈ ℝ^K a Bessel basis with trainable
frequencies, s_i ∈ ℝ^H invariant and v_i ∈ ℝ^{3×H} equivariant features, LN a LayerNorm, σ = SiLU.
Complex numbers are stored as (re, im) pairs; n(z) = z / √(|z|² + ε²) is the smooth unit-modulus map.

1. Edge frame from the envelope-weighted neighbour mean m_i = Σ_j u_ij r_ij / (1 + Σ_j u_ij):
       F_ij = [e₁; e₂; e₃] = [n_F(r_ij); n_F(e₁ × m_i); e₁ × e₂]
   (:func:`localframe.nn.frames.build_frame`, n_F with the frame length; the published
   b = (x_i − m_i) × (x_j − m_i) is ∝ r_ij × m_i in these terms)

2. Embedding, local substructure encoding (LSE, :mod:`localframe.nn.lse`) and initial complex state (computed once):
       h_ij = u_ij MLP_r(φ_ij),   s_i = LN(E z_i) + Σ_j h_ij ⊙ LN(E′ z_j),   v_i = 0
       S_i = Σ_j ê_ij ⊗ (h_ij ⊙ σ(LN(W s_j + b)))                   ∈ ℝ^{3×H}
       t^u_ij = [g(F_ij S_u) + (F_ij S_u)_{e₁}] / √H,  u ∈ {i, j}    (g: ℝ³ → ℝ, shared by the channels)
       A_ij = [u_ij t^i_ij, u_ij t^j_ij, h_ij, φ_ij]                   ∈ ℝ^{3H+K}
       q_i = K₁ᵀ LN(E z_i)                                             ∈ ℂ^{χ₁}

3. Layer ℓ = 1..L:
   a. rotated message input  s̃_i = ρ_i ⊙ s_i  (s as H/2 complex numbers, ρ from layer ℓ−1, none at ℓ = 1);
      the residual stream s_i itself is not rotated
   b. filter and messages  f_ij = u_ij (W_φ φ_ij + b) ⊙ MLP_A^ℓ(A_ij),   [x, β, γ]_ij = MLP_x(LN s̃_j) ⊙ f_ij
   c. complex edge kernel, M heads of P channels (χ_h = M·P):
         Φ_ij = W_Φ x_ij + b_Φ ∈ ℂ^{M×P},   Φ̂ = [1; Φ] ∈ ℂ^{(M+1)×P}
         conv_k = Σ_{h,l} Φ̂_hl K_hlk / √(H/M)   ∈ ℂ^{χ₂}   (K complex, learned)
         α_ij = σ(MLP_D(f_ij)) ∈ ℝ^{χ₂},   D_kl = Σ_m W^D_lm (α_k δ_m + 1) + c^D_l   (distance-dependent)
         κ_l = Σ_k conv_k D_kl,   κ′ = W_κ Re κ + b_κ + i (W_κ Im κ + b_κ)   ∈ ℂ^{χ₁}
         ψ_ij = u_ij n(κ′_ij)                       (phase readout: the published model takes angle(κ′))
   d. [Φ_i, Δs_i] = LN([Σ_j ψ_ij, Σ_j x_ij]),   s_i ← s_i + Δs_i,
      v_i ← v_i + Σ_j (v_j ⊙ β_ij / √3 + ê_ij ⊗ γ_ij) / √H
   e. next phase  ρ_i = exp(i (W_θ Φ_i + b_θ)) ∈ ℂ^{H/2}
   f. state transition  q_i[k] ← n(Σ_{h,l} T^ℓ_{hkl} s_i[h] q_i[l])   (T^ℓ complex, learned)
   g. FTE  [U, V] = W_uv v_i,  [a₁, a₂, a₃] = MLP([s_i, ‖U‖₂]),
      s_i ← s_i + (a₁ + a₂ + ⟨U, V⟩/√H) / √2,   v_i ← v_i + a₃ ⊙ V

4. Readout as published (``readout="published"``): the representation returns x_i = [s_i, Re q_i / χ₁,
   Im q_i / χ₁] ∈ ℝ^{H+2χ₁}, and the shared energy head reads it linearly with a trainable per-element affine
   (head options ``readout="linear", element_affine=True``):
       e_i = wᵀ s_i + uᵀ [Re q_i, Im q_i] / χ₁ + c,    E = Σ_i (a_{z_i} e_i + b_{z_i}),
       a_z = scale · α_z,  b_z = shift + E0[z] + β_z   (α_z = 1, β_z = 0 at the start; α, β trained)
   — the released ``last_layer(s) + last_layer_quantum(q)/χ₁`` followed by ``a[z] · e + b[z]``, with a and b
   initialised from the training split (scale; per-element least-squares references) instead of the config's
   force std and mean energy per atom. ``readout="mlp"``: x_i = s_i + W_q [Re q_i, Im q_i] / χ₁ ∈ ℝ^H to the
   shared MLP head with one global scale and shift (the earlier readout).

Computation. W_Φ and K fold into one real H × 2χ₂ matrix, and D has rank ≤ 2 in (k, l), so that
κ = (Σ_k α_k conv_k) W^D δ + (Σ_k conv_k)(W^D 1 + c^D) — the same function at O(χ₁) per edge.

Initialisation as published: Xavier-uniform weights and zero biases in MLP_A, W_φ, MLP_x and FTE,
PyTorch defaults elsewhere, K and δ standard normal; T^ℓ and K₁ are normal with variance 1/(fan-in)
(the published ones are unscaled; only their scale against the ε of n matters). At this
initialisation the messages are small next to s (the LN in 3d is dominated by Σψ).

Symmetry: E(3) by default (coefficients on the pseudovector row e₂ go through the smooth even map of
:mod:`localframe.nn.frames`); ``symmetry="SE(3)"`` keeps their sign (chirality-aware).

Departures from the published code, and why:
* frames, neighbour mean and cross product from image-corrected r_ij (raw positions break wrapping
  invariance under PBC); the mean is envelope-weighted and the rows safely normalised (smooth in the
  neighbour set; the published b is unnormalised and its abs() has a kink);
* the envelope multiplies the filter f_ij, the phase terms ψ_ij and h_ij, and no top-k neighbour cap:
  energy and forces are continuous at r_c (the published model jumps there);
* n(κ′) ∈ ℂ (2χ₁ numbers) instead of angle(κ′) (χ₁ numbers): angle has a branch cut at ±π and no
  derivative at κ′ = 0; the states q are normalised with the same n;
* L2 norm in FTE (the published L1 norm over x, y, z is not rotation invariant);
* one χ₁ for the message phases and the state (published: mp_chi1 = main_chi1 = 24); no dropout; the
  last layer computes no next phase, and the unused fc_dx / unitary parameters are not created;
* readout: the released two biases (of w and u) are one (c), and b_z starts at the least-squares
  reference of element z plus the head's shift rather than at one mean energy per atom; a_z starts at the
  training split's energy scale (force RMS with forces) rather than the config's ``a``; 119 elements, not 108.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from localframe.errors import InputError
from localframe.models import register
from localframe.models.base import Representation
from localframe.nn.chunking import Pairs, given, pairs_of
from localframe.nn.cutoff import PolynomialCutoff
from localframe.nn.elements import N_ELEMENTS
from localframe.nn.frames import build_frame, check_symmetry, neighbour_centroid, normalize, safe_norm
from localframe.nn.lse import LocalSubstructure
from localframe.nn.mlp import mlp
from localframe.nn.radial import BesselBasis

#: ``readout`` values: the released linear readout with the complex term and a per-element affine, or the shared MLP head.
READOUTS = ("published", "mlp")

#: ε of the unit-complex map n(z) (dimensionless; κ′ and the states are O(1) at initialisation).
PHASE_EPS = 0.1


def unit_complex(z: torch.Tensor) -> torch.Tensor:
    """n(z) = z / √(|z|² + ε²) for complex numbers z (…, 2): unit modulus for |z| ≫ ε, smooth through 0."""
    return normalize(z, PHASE_EPS)


def rotate(s: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """ρ ⊙ s with s (N, H) read as H/2 complex numbers [re | im] and ρ (N, H/2, 2) unit complex numbers."""
    a, b = s.chunk(2, dim=-1)
    c, sn = rho.unbind(-1)
    return torch.cat([a * c - b * sn, a * sn + b * c], dim=-1)


class ComplexEdgeKernel(nn.Module):
    """Step 3c: x_ij (E, H), f_ij (E, 3H) → κ′_ij (E, χ₁, 2)."""

    def __init__(self, hidden: int, chi1: int, chi2: int, heads: int, hidden_chi: int):
        super().__init__()
        if hidden_chi % heads:
            raise InputError(f"alphanet needs hidden_chi divisible by heads, got {hidden_chi} and {heads}")
        self.chi2, self.norm = chi2, 1.0 / math.sqrt(max(hidden / heads, 1.0))
        self.phi = nn.Linear(hidden, 2 * hidden_chi)  # W_Φ, b_Φ: [Re Φ | Im Φ], heads × P each
        self.kernel = nn.Parameter(torch.randn(2, heads + 1, hidden_chi // heads, chi2))  # (re, im) of K
        self.diagonal = mlp([3 * hidden, max(hidden_chi // 2, 1), chi2])  # MLP_D
        self.delta = nn.Parameter(torch.randn(chi1))  # δ
        self.dia = nn.Linear(chi1, chi1)  # W^D, c^D
        self.out = nn.Linear(chi1, chi1)  # W_κ, b_κ

    def forward(self, x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
        kr, ki = self.kernel[0] * self.norm, self.kernel[1] * self.norm
        big = torch.cat([torch.cat([kr[1:], ki[1:]], -1).flatten(0, 1), torch.cat([-ki[1:], kr[1:]], -1).flatten(0, 1)])
        weight = self.phi.weight.t() @ big  # (H, 2χ₂): x ↦ [Re conv | Im conv]
        bias = self.phi.bias @ big + torch.cat([kr[0].sum(0), ki[0].sum(0)])  # b_Φ and the row of ones
        conv = torch.addmm(bias, x, weight).unflatten(-1, (2, self.chi2))  # (E, 2, χ₂)
        alpha = torch.nn.functional.silu(self.diagonal(filt))  # (E, χ₂)
        coeff = torch.stack([(conv * alpha.unsqueeze(1)).sum(-1), conv.sum(-1)], dim=-1)  # (E, 2 re/im, 2)
        p = self.dia.weight @ self.delta  # W^D δ
        q = self.dia.weight.sum(1) + self.dia.bias  # W^D 1 + c^D
        basis = torch.stack([self.out.weight @ p, self.out.weight @ q])  # (2, χ₁): W_κ applied to both
        return (coeff @ basis + self.out.bias).transpose(1, 2)  # (E, χ₁, 2)


class AlphaLayer(nn.Module):
    """Steps 3a–3g."""

    def __init__(self, hidden, num_radial, chi1, chi2, heads, hidden_chi, last):
        super().__init__()
        self.hidden, self.chi1 = hidden, chi1
        self.lse = mlp([3 * hidden + num_radial, 3 * hidden, 3 * hidden])  # MLP_A^ℓ
        self.filter = nn.Linear(num_radial, 3 * hidden)
        self.norm_in = nn.LayerNorm(hidden)
        self.node = mlp([hidden, hidden, 3 * hidden])  # MLP_x
        self.kernel = ComplexEdgeKernel(hidden, chi1, chi2, heads, hidden_chi)
        self.norm_out = nn.LayerNorm(2 * chi1 + hidden)
        self.theta = None if last else nn.Linear(2 * chi1, hidden // 2)
        self.transition = nn.Parameter(torch.randn(hidden, 2, chi1, chi1) / math.sqrt(hidden * chi1))
        self.uv = nn.Linear(hidden, 2 * hidden, bias=False)
        self.update = mlp([2 * hidden, hidden, 3 * hidden])
        for module in (self.lse, self.filter, self.node, self.uv, self.update):  # the published initialisation
            for linear in (m for m in module.modules() if isinstance(m, nn.Linear)):
                nn.init.xavier_uniform_(linear.weight)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    def message(self, features, centre, neighbour):
        """(ψ_ij, x_ij, ê_ij ⊗ γ_ij [+ v_j ⊙ β_ij / √3]) for the pairs of ``features`` = (ê, u, φ, A) (steps b–d)."""
        unit, u, phi, A = features
        ue = u.unsqueeze(-1)
        filt = ue * self.filter(phi) * self.lse(A)  # b.
        x, beta, gamma = (neighbour[0] * filt).split(self.hidden, dim=-1)
        psi = ue.unsqueeze(-1) * unit_complex(self.kernel(x, filt))  # c.
        dv = unit.unsqueeze(-1) * gamma.unsqueeze(1)
        if len(neighbour) > 1:  # v = 0 before the first layer: v_j ⊙ β vanishes
            dv = dv + neighbour[1] * (beta / math.sqrt(3.0)).unsqueeze(1)
        return psi.flatten(1), x, dv

    def forward(self, s, v, q, rho, A, phi, unit, u, edge_index):
        """The layer with the pair features given for all pairs."""
        return self.step(s, v, q, rho, Pairs(edge_index, s.shape[0]).features(given, edges=(unit, u, phi, A)))

    def step(self, s, v, q, rho, pairs: Pairs):
        """The layer on ``pairs`` whose features are (ê, u, φ, A)."""
        s_in = s if rho is None else rotate(s, rho)  # a. rotates the message input only
        x_j = self.node(self.norm_in(s_in))
        psi, x, dv = pairs.sum(self.message, neighbour=(x_j,) if v is None else (x_j, v))
        # d.–g. on the atoms; chunked calls keep only their inputs (the state transition's (N, 2, 2, χ₁, χ₁) product)
        return pairs.recompute(self.atom_update, s, v, q, psi, x, dv)

    def atom_update(self, s, v, q, psi, x, dv):
        """Steps d–g on the atoms, from the pair sums Σψ, Σx and Σdv: the next (s, v, q, ρ) (ρ None after the last layer)."""
        n, h = s.shape
        rho = None
        agg = self.norm_out(torch.cat([psi, x], dim=-1))  # d.
        Phi, ds = agg.split([2 * self.chi1, h], dim=-1)
        s = s + ds
        dv = dv / math.sqrt(h)
        v = dv if v is None else v + dv
        if self.theta is not None:  # e.
            theta = self.theta(Phi)
            rho = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
        T = (s @ self.transition.flatten(1)).view(n, 2, 1, self.chi1, self.chi1)  # f. Σ_h T_hkl s_h
        M = (T * q.transpose(1, 2)[:, None, :, None, :]).sum(-1)  # (N, 2, 2, χ₁): [Re T, Im T] × [Re q, Im q]
        q = unit_complex(torch.stack([M[:, 0, 0] - M[:, 1, 1], M[:, 0, 1] + M[:, 1, 0]], dim=-1))  # no tiny bmm
        U, V = self.uv(v).split(h, dim=-1)  # g.
        a1, a2, a3 = self.update(torch.cat([s, safe_norm(U, dim=1)], dim=-1)).split(h, dim=-1)
        s = s + (a1 + a2 + (U * V).sum(dim=1) / math.sqrt(h)) / math.sqrt(2.0)
        v = v + a3.unsqueeze(1) * V
        return s, v, q, rho


@register("alphanet")
class AlphaNet(Representation):
    """AlphaNet with the published complex edge kernel, phase rotations and complex atomic states."""

    paper = (
        "Yin et al., AlphaNet: Scaling Up Local-frame-based Neural Network Interatomic Potentials, 2025 "
        "(arXiv:2501.07155)"
    )
    has_vectors = True
    legacy_keys = {"lse_in.0.": "lse.input.", "lse_g.": "lse.g."}  # earlier model files
    presets = {
        # released mp.json / oma.json: 4 layers, H = 176, r_c = 5, 8 Bessel, dropout off, chi defaults
        "mp": {"cutoff": 5.0, "hidden_channels": 176, "num_layers": 4, "num_radial": 8,
               "chi1": 24, "chi2": 6, "heads": 16, "hidden_chi": 96, "lse_hidden": 44},
        "cpu": {"cutoff": 5.0, "hidden_channels": 96, "num_layers": 3, "num_radial": 16,
                "chi1": 16, "chi2": 6, "heads": 8, "hidden_chi": 48, "lse_hidden": 8},
    }

    def __init__(
        self,
        cutoff: float = 5.0,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_radial: int = 32,
        chi1: int = 24,
        chi2: int = 6,
        heads: int = 16,
        hidden_chi: int = 96,
        lse_hidden: int = 8,
        symmetry: str = "E(3)",
        readout: str = "published",
    ):
        super().__init__()
        h = self.hidden_channels = int(hidden_channels)
        if h % 2:
            raise InputError(f"alphanet needs an even hidden_channels (complex pairs), got {h}")
        self.cutoff = float(cutoff)
        self.symmetry = check_symmetry(symmetry)
        self.chiral = self.symmetry == "SE(3)"
        self.chi1 = int(chi1)
        if readout not in READOUTS:
            raise InputError(f"alphanet: readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        if readout == "published":  # [s, Re q/χ₁, Im q/χ₁] read linearly, per-element affine (step 4)
            self.scalar_channels = h + 2 * self.chi1
            self.head_options = {"readout": "linear", "element_affine": True}
        self.envelope = PolynomialCutoff(cutoff)
        self.radial = BesselBasis(cutoff, num_radial, trainable=True)
        self.radial_mlp = mlp([num_radial, h, h])
        self.embedding = nn.Embedding(N_ELEMENTS, h)
        self.neighbour_embedding = nn.Embedding(N_ELEMENTS, h)
        self.embed_norm = nn.LayerNorm(h, elementwise_affine=False)
        self.state_embedding = nn.Parameter(torch.randn(h, 2 * self.chi1) / math.sqrt(h))  # K₁
        self.lse = LocalSubstructure(h, int(lse_hidden), chiral=self.chiral, layer_norm=True, envelope=True, order="ij")
        self.layers = nn.ModuleList(
            AlphaLayer(h, num_radial, self.chi1, int(chi2), int(heads), int(hidden_chi), k == num_layers - 1)
            for k in range(num_layers)
        )
        self.state_out = nn.Linear(2 * self.chi1, h, bias=False) if readout == "mlp" else None  # W_q

    def radial_features(self, previous, edges, centre, neighbour):
        """(ê_ij, u_ij, φ_ij, h_ij) from the pair vectors, their lengths d_ij and envelopes (step 2)."""
        vectors, d, u = edges
        phi = self.radial(d)
        return vectors / d.unsqueeze(-1), u, phi, u.unsqueeze(-1) * self.radial_mlp(phi)

    def substructure_features(self, previous, edges, centre, neighbour, recompute=False):
        """(ê, u, φ, A_ij) with the edge frame (step 1) and the LSE (step 2); m_i, S_i and S_j read at the pair.
        ``recompute`` (chunked calls): the LSE's g activations are recomputed in the backward pass, not kept."""
        unit, u, phi, hij = previous
        (m_i, S_i), (S_j,) = centre, neighbour
        frame = build_frame(edges[0], m_i)
        return unit, u, phi, torch.cat([self.lse.read(lambda rows: (S_i[rows], S_j[rows]), frame, u, recompute), hij, phi],
                                         dim=-1)

    def forward(self, numbers, edge_index, vectors, batch, n_structures):
        i = edge_index[0]
        n = numbers.shape[0]
        d = torch.linalg.vector_norm(vectors, dim=-1)
        u = self.envelope(d)
        m = neighbour_centroid(vectors, u, i, n)  # 1. frames from the image-corrected neighbour mean
        pairs = pairs_of(self, edge_index, n).features(self.radial_features, edges=(vectors, d, u))
        # 2. embedding, LSE, complex state
        z = self.embed_norm(self.embedding(numbers))
        (e,) = pairs.sum(lambda f, c, nb: (f[3] * nb[0],), neighbour=(self.embed_norm(self.neighbour_embedding(numbers)),))
        s = z + e
        (S,) = pairs.sum(lambda f, c, nb: (self.lse.summand(f[3], f[0], nb[0]),), neighbour=(self.lse.neighbour_input(s),))
        pairs = pairs.features(functools.partial(self.substructure_features, recompute=pairs.chunked),
                               edges=(vectors,), centre=(m, S), neighbour=(S,))
        q = (z @ self.state_embedding).unflatten(-1, (2, self.chi1)).transpose(1, 2)  # (N, χ₁, 2)
        v, rho = None, None
        # 3. layers
        for layer in self.layers:
            s, v, q, rho = layer.step(s, v, q, rho, pairs)
        # 4. readout features
        q = q.transpose(1, 2).flatten(1) / self.chi1  # [Re q | Im q] / χ₁
        out = torch.cat([s, q], dim=-1) if self.state_out is None else s + self.state_out(q)
        return out, (v if v is not None else s.new_zeros(n, 3, self.hidden_channels))

