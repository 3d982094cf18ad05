r"""Smooth cutoff envelopes u(d): 1 at d = 0, 0 with vanishing derivatives at d = r_c, 0 beyond.

Every model multiplies its *final* edge filters by an envelope, so that a neighbour entering or
leaving the sphere changes energy and forces continuously.

* Polynomial:  u(x) = 1 − (p+1)(p+2)/2 x^p + p(p+2) x^{p+1} − p(p+1)/2 x^{p+2},  x = d / r_c
               (C^{p−1} at r_c; p = 6 by default, as in DimeNet)
"""

from __future__ import annotations

import torch
from torch import nn


class PolynomialCutoff(nn.Module):
    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = d / self.cutoff
        u = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x.pow(p)
            + p * (p + 2) * x.pow(p + 1)
            - 0.5 * p * (p + 1) * x.pow(p + 2)
        )
        return torch.where(x < 1.0, u, torch.zeros_like(u))
