r"""Output heads shared by every model. Heads see per-atom features, never which model made them.

s_i are the invariant per-atom features (N, F) of a representation, v_i its equivariant per-atom
vectors (N, 3, F) when it has them; b is the structure atom i belongs to, N_b its atom count.

Energy:   e_i = MLP(s_i);  E = Σ_i (scale · e_i + shift + E0[z_i])
          (E0: per-element reference energies; scale, shift: from the training split)
          Options a representation may ask for (``Representation.head_options``):
          ``readout="linear"``: e_i = wᵀs_i + c instead of the MLP (also for scalar targets);
          ``element_affine=True``: a trainable per-element affine on top,
          E = Σ_i (scale · α_{z_i} · e_i + shift + E0[z_i] + β_{z_i}),  α = 1, β = 0 at the start.

Dipole:   q̃_i = MLP(s_i);  q_i = q̃_i + (Q_b − Σ_{k∈b} q̃_k) / N_b      so that Σ_{i∈b} q_i = Q_b
          μ_b = Σ_{i∈b} q_i (x_i − c_b) + Σ_{i∈b} W v_i,   c_b = (1/N_b) Σ_{i∈b} x_i
          (Q_b: total charge, 0 unless given; W: a bias-free linear map F → 1 acting on the
          vector channels, present only when the representation returns vectors.) Charges in e,
          dipole in e·Å. Only defined for non-periodic structures.

Scalar:   t_i = MLP(s_i);  y_b = AGG_{i∈b} (scale · t_i + shift + y0[z_i]),   AGG ∈ {sum, mean}
          "sum" for extensive targets (U0, alpha, zpve, Cv, r2, ...), where y0 are per-element
          reference values (least squares over the training compositions) and shift a per-atom
          offset; "mean" for intensive ones (homo, lumo, gap, ...), where shift is the mean target
          and y0 stays 0.
"""

from __future__ import annotations

import torch
from torch import nn

from localframe.errors import InputError
from localframe.nn.elements import N_ELEMENTS
from localframe.nn.mlp import mlp
from localframe.nn.scatter import scatter_mean, scatter_sum

AGGREGATIONS = {"sum": scatter_sum, "mean": scatter_mean}
#: Output names produced by AtomisticModel itself; scalar targets may not reuse them.
RESERVED_OUTPUTS = ("energy", "forces", "stress", "dipole", "charges")


READOUTS = ("mlp", "linear")


def _readout(channels: int, kind: str = "mlp") -> nn.Module:
    if kind not in READOUTS:
        raise InputError(f"readout must be one of {READOUTS}, got {kind!r}")
    return mlp([channels, max(channels // 2, 1), 1]) if kind == "mlp" else nn.Linear(channels, 1)


class DipoleHead(nn.Module):
    """Dipole moment from charge-conserving atomic charges plus, if available, atomic dipoles."""

    def __init__(self, channels: int, has_vectors: bool, vector_channels: int | None = None):
        super().__init__()
        self.charge_net = _readout(channels)
        self.vector_weights = nn.Linear(vector_channels or channels, 1, bias=False) if has_vectors else None

    def charges(
        self, scalars: torch.Tensor, batch: torch.Tensor, n_structures: int, total_charge: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Atomic charges (N,) summing to ``total_charge`` (B,) per structure (zero if None)."""
        q = self.charge_net(scalars).squeeze(-1)
        excess = scatter_sum(q, batch, n_structures)
        if total_charge is not None:
            excess = excess - total_charge.to(q.dtype).reshape(n_structures)
        n_atoms = torch.bincount(batch, minlength=n_structures).clamp(min=1).to(q.dtype)
        return q - (excess / n_atoms)[batch]

    def forward(
        self,
        scalars: torch.Tensor,
        vectors: torch.Tensor | None,
        positions: torch.Tensor,
        batch: torch.Tensor,
        n_structures: int,
        total_charge: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(dipole (B, 3), charges (N,)). ``positions`` are Cartesian, not centred."""
        q = self.charges(scalars, batch, n_structures, total_charge)
        centred = positions - scatter_mean(positions, batch, n_structures)[batch]
        dipole = scatter_sum(q.unsqueeze(-1) * centred, batch, n_structures)
        if self.vector_weights is not None:
            if vectors is None:
                raise RuntimeError("dipole head was built for a representation with vectors but got none")
            dipole = dipole + scatter_sum(self.vector_weights(vectors).squeeze(-1), batch, n_structures)
        return dipole, q


class ScalarHead(nn.Module):
    """One per-structure scalar: an atomic readout, scaled and shifted, then summed or averaged."""

    def __init__(self, channels: int, aggregation: str, readout: str = "mlp"):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {aggregation!r}")
        self.aggregation = aggregation
        self.net = _readout(channels, readout)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("atom_ref", torch.zeros(N_ELEMENTS))

    def atomic(self, scalars: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """The atomic terms t_i (N,) before aggregation."""
        return self.scale * self.net(scalars).squeeze(-1) + self.shift + self.atom_ref[numbers]

    def forward(self, scalars: torch.Tensor, numbers: torch.Tensor, batch: torch.Tensor, n_structures: int) -> torch.Tensor:
        return AGGREGATIONS[self.aggregation](self.atomic(scalars, numbers), batch, n_structures)


class EnergyHead(ScalarHead):
    """Total energy: the summed scalar head (atomic terms with per-element references, scale and
    shift), optionally with a trainable per-element affine α_z, β_z on top."""

    def __init__(self, channels: int, readout: str = "mlp", element_affine: bool = False):
        super().__init__(channels, "sum", readout)
        # trainable α_z, β_z on top of the training-split scale and references (None: not used)
        self.element_scale = nn.Parameter(torch.ones(N_ELEMENTS)) if element_affine else None
        self.element_shift = nn.Parameter(torch.zeros(N_ELEMENTS)) if element_affine else None

    def atomic(self, scalars: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        if self.element_scale is None:
            return super().atomic(scalars, numbers)
        e = self.net(scalars).squeeze(-1)
        return self.scale * self.element_scale[numbers] * e + self.shift + self.atom_ref[numbers] + self.element_shift[numbers]


def check_targets(targets: dict[str, str] | None) -> dict[str, str]:
    """Validated copy of a ``{target name: "sum" | "mean"}`` mapping."""
    out: dict[str, str] = {}
    for name, aggregation in dict(targets or {}).items():
        if not isinstance(name, str) or not name or "." in name:
            raise InputError(f"target name must be a non-empty string without '.', got {name!r}")
        if name in RESERVED_OUTPUTS:
            raise InputError(f"target name {name!r} is reserved for a built-in output")
        if aggregation not in AGGREGATIONS:
            raise InputError(f"target {name!r}: aggregation must be 'sum' or 'mean', got {aggregation!r}")
        out[name] = aggregation
    return out
