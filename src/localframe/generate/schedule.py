r"""EDM's polynomial noise schedule of the variance-preserving diffusion (Hoogeboom et al. 2022).

    α²(t) = (1 − 2s) (1 − t²)² + s,    σ²(t) = 1 − α²(t),    t ∈ [0, 1],  s = 10⁻⁵

so that α²(0) = 1 − s, α²(1) = s, and the signal-to-noise ratio α²/σ² falls monotonically. This is
the continuous-time form of EDM's ``polynomial_2`` schedule; EDM's discrete table additionally clips
the step ratios α²(tₖ)/α²(tₖ₋₁) at 0.001, which only changes the last few of 1,000 steps.
"""

from __future__ import annotations

import torch

PRECISION = 1e-5


def alpha2(t: torch.Tensor, s: float = PRECISION, power: float = 2.0) -> torch.Tensor:
    return (1 - 2 * s) * (1 - t**power) ** 2 + s


def alpha_sigma(t: torch.Tensor, s: float = PRECISION) -> tuple[torch.Tensor, torch.Tensor]:
    a2 = alpha2(t, s)
    return a2.sqrt(), (1 - a2).sqrt()
