r"""Local frames built from relative, image-corrected pair vectors, and the maps in and out of them.

Every frame in localframe comes from this module. Inputs are the pair vectors r_ij = x_j − x_i
(+ S·cell) of :mod:`localframe.models.base` and a smooth envelope u(d) (1 at d = 0, 0 with
vanishing derivatives at r_c), never absolute positions, so frames are translation invariant
without pre-centring and consistent under periodic wrapping.

Safe normalisation (finite value and gradient at u = 0):

    n_ε(u) = u / √(|u|² + ε²) = q_ε(|u|) · u/|u|,    q_ε(l) = l / √(l² + ε²) ∈ [0, 1)

q_ε is a smooth *frame-quality weight*: an axis defined by a geometric lever |u| ≫ ε is a unit
vector, one defined by a lever below ε fades out smoothly, and a degenerate one (|u| = 0) is 0.
For frame axes ε = FRAME_EPS = 0.3 Å, a physical length comparable to atomic displacements
(thermal H motion at 300 K is ~0.1 Å). The scale matters: near planar, linear and
centrosymmetric sites (benzene, CO₂) the missing axis grows as δ/ε with the displacement δ,
so the energy has curvature ~1/ε there. With ε = 0.01 Å, moving one benzene hydrogen 1 mÅ out
of the plane gave a spurious out-of-plane stiffness ~100× its value at 30–100 mÅ; with 0.3 Å
the two agree within 2× (tests/test_conditioning.py).

Feature vectors and coefficients (dimensionless, O(1) at initialisation) use VECTOR_EPS = 0.1
for their smooth norms √(|v|² + ε²) and for the even map below.

Neighbour centroid of atom i, relative to x_i (smooth when a neighbour crosses the cutoff,
because each neighbour enters with weight u_ij → 0 and no count appears):

    m_i = Σ_j u_ij r_ij / (1 + Σ_j u_ij)

A frame is three rows [e₁; e₂; e₃] from a primary direction a and a reference s:

    e₁ = n_ε(a),   e₂ = n_ε(e₁ × s),   e₃ = e₁ × e₂

Non-degenerate frames are orthonormal and right-handed (det = +1). When s ∥ a (linear molecules,
single neighbours) e₂ = e₃ = 0; when a = 0 (centrosymmetric sites) all rows vanish. Components
along vanished rows are 0: degenerate frames lose information gracefully, they never divide by 0.

* Edge frame of the pair (i, j):  a = r_ij,  s = m_i + m_j  (both centroids; the local analogue
  of the cross product x_i × x_j of centred positions, since (−m_i) × (r_ij − m_i) = r_ij × m_i).
* Node frame of atom i:  a = m_i,  s = p_i = Σ_j u_ij m_j / (1 + Σ_j u_ij)  (second shell).

Parity. e₁ and e₃ are polar vectors, e₂ = e₁ × s is a pseudovector: under an improper rotation
the coefficient of a polar vector on e₂ flips sign. Models choose:

* SE(3) (``chiral=True``; models: ``symmetry="SE(3)"``): keep the sign — mirror images get different invariants.
* E(3)  (``chiral=False``; models: ``symmetry="E(3)"``): replace that coefficient by the smooth even function
  even(c) = √(c² + ε²) − ε (no kink at 0, unlike |c|; curvature 1/ε at 0, so ε = VECTOR_EPS,
  not a tiny number), and let tensorize use e₁ and e₃ only, so that its output stays a polar vector.

Scalarize (vectors → invariant coefficients) and tensorize (coefficients → equivariant vectors),
per channel f of vector features V ∈ ℝ^{3×F}:

    scalarize:  c_kf = e_k · V_:f              tensorize:  V_:f = Σ_k c_kf e_k
"""

from __future__ import annotations

import torch

from localframe.errors import InputError
from localframe.nn.scatter import gather, scatter_sum

#: Length (Å) over which a frame axis switches on: the lever of an axis enters through q_ε(|u|).
FRAME_EPS = 0.3
#: Scale of smooth norms and of the even map for (dimensionless) feature vectors and coefficients.
VECTOR_EPS = 0.1
SYMMETRIES = ("E(3)", "SE(3)")


def check_symmetry(symmetry: str) -> str:
    """The parity choice of a model: "E(3)" (mirror-invariant) or "SE(3)" (chirality-aware)."""
    if symmetry not in SYMMETRIES:
        raise InputError(f"symmetry must be one of {SYMMETRIES}, got {symmetry!r}")
    return symmetry


def safe_norm(u: torch.Tensor, eps: float = VECTOR_EPS, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """√(|u|² + ε²): an L2 norm with a finite gradient at u = 0."""
    return torch.sqrt(u.pow(2).sum(dim=dim, keepdim=keepdim) + eps * eps)


def normalize(u: torch.Tensor, eps: float = VECTOR_EPS) -> torch.Tensor:
    """n_ε(u) = u / √(|u|² + ε²) over the last dimension."""
    return u / safe_norm(u, eps, keepdim=True)


def even(c: torch.Tensor, eps: float = VECTOR_EPS) -> torch.Tensor:
    """Smooth parity-even replacement of a pseudoscalar: √(c² + ε²) − ε."""
    return torch.sqrt(c * c + eps * eps) - eps


def neighbour_centroid(
    values: torch.Tensor, weights: torch.Tensor, centre: torch.Tensor, n_nodes: int
) -> torch.Tensor:
    """Σ_j u_ij v_ij / (1 + Σ_j u_ij) per centre atom i; ``values`` (E, 3), ``weights`` (E,)."""
    total = scatter_sum(values * weights.unsqueeze(-1), centre, n_nodes)
    mass = scatter_sum(weights, centre, n_nodes)
    return total / (1.0 + mass).unsqueeze(-1)


def build_frame(primary: torch.Tensor, reference: torch.Tensor, eps: float = FRAME_EPS) -> torch.Tensor:
    """Rows [e₁; e₂; e₃] (…, 3, 3) with e₁ = n_ε(a), e₂ = n_ε(e₁ × s), e₃ = e₁ × e₂."""
    e1 = normalize(primary, eps)
    e2 = normalize(torch.linalg.cross(e1, reference, dim=-1), eps)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-2)


def local_centroids(
    vectors: torch.Tensor, weights: torch.Tensor, edge_index: torch.Tensor, n_nodes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(m_i, p_i): the envelope-weighted neighbour centroid and the centroid of the neighbours' m_j."""
    centre, neighbour = edge_index
    m = neighbour_centroid(vectors, weights, centre, n_nodes)
    p = neighbour_centroid(gather(m, neighbour), weights, centre, n_nodes)
    return m, p


def edge_frame(
    vectors: torch.Tensor, centroid: torch.Tensor, edge_index: torch.Tensor, eps: float = FRAME_EPS
) -> torch.Tensor:
    """F_ij (E, 3, 3): e₁ along r_ij, e₂ ∝ r_ij × (m_i + m_j), e₃ = e₁ × e₂."""
    centre, neighbour = edge_index
    return build_frame(vectors, gather(centroid, centre) + gather(centroid, neighbour), eps)


def node_frame(centroid: torch.Tensor, second: torch.Tensor, eps: float = FRAME_EPS) -> torch.Tensor:
    """F_i (N, 3, 3): e₁ along m_i, e₂ ∝ m_i × p_i, e₃ = e₁ × e₂."""
    return build_frame(centroid, second, eps)


def scalarize(vectors: torch.Tensor, frame: torch.Tensor, chiral: bool, eps: float = VECTOR_EPS) -> torch.Tensor:
    """Coefficients c (…, 3, F) of vector features (…, 3, F) on the frame rows (…, 3, 3).

    ``chiral=False`` makes the pseudo-row (e₂) coefficient parity-even with :func:`even`.
    """
    coeff = (frame.unsqueeze(-1) * vectors.unsqueeze(-3)).sum(-2)  # faster than einsum for 3×3 on CPU
    if chiral:
        return coeff
    return torch.cat([coeff[..., :1, :], even(coeff[..., 1:2, :], eps), coeff[..., 2:, :]], dim=-2)


def tensorize(coeff: torch.Tensor, frame: torch.Tensor, chiral: bool) -> torch.Tensor:
    """Vectors Σ_k c_k e_k (…, 3, F) from coefficients (…, 3, F); ``chiral=False`` skips e₂."""
    if not chiral:
        coeff = coeff * coeff.new_tensor([1.0, 0.0, 1.0]).view(3, 1)
    return (frame.unsqueeze(-1) * coeff.unsqueeze(-2)).sum(-3)


__all__ = [
    "FRAME_EPS", "SYMMETRIES", "VECTOR_EPS", "build_frame", "check_symmetry", "edge_frame", "even", "local_centroids", "neighbour_centroid",
    "node_frame", "normalize", "safe_norm", "scalarize", "tensorize",
]
