r"""Radial bases φ_k(d) for pair distances d (Å). None includes an envelope: multiply by one.

* Bessel:      φ_n(d) = √(2/r_c) · sin(n π d / r_c) / d,   n = 1..K   (frequencies optionally trainable)
* Gaussian:    φ_k(d) = exp(−(d − μ_k)² / (2 σ²)),  μ_k evenly spaced on [0, r_c], σ = their spacing
* Exp-normal:  φ_k(d) = exp(−β (e^{−d} − μ_k)²),  μ_k evenly spaced on [e^{−r_c}, 1],
               β = (2 (1 − e^{−r_c}) / K)^{−2}  (PhysNet / TorchMD-Net)

The Gaussian and exp-normal bases return their subnormal values as 0 (:func:`flush_subnormal`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def flush_subnormal(x: torch.Tensor) -> torch.Tensor:
    """x with its subnormal entries (0 < |x| < the dtype's smallest normal number: 1.2e-38 in float32) set to 0.

    Gaussian-type bases underflow into subnormals for the functions far from d (exp-normal: 5 % of φ on a
    QM9 batch, Gaussians of SchNet: 4 %, float32); every matrix product that reads them, and their
    gradients, then runs 2–4× slower on CPUs that handle subnormals in microcode. The change is below
    1.2e-38 (2.2e-308 in float64)."""
    return x.masked_fill(x.abs() < torch.finfo(x.dtype).tiny, 0.0)


class BesselBasis(nn.Module):
    def __init__(self, cutoff: float, num: int = 16, trainable: bool = False):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num = int(num)
        freq = torch.arange(1, num + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff
        self.freq = nn.Parameter(freq, requires_grad=trainable)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.unsqueeze(-1)
        # sin(f d)/d is finite as d -> 0 (limit f); d is never exactly 0 for real pairs.
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq * d) / d


class GaussianBasis(nn.Module):
    def __init__(self, cutoff: float, num: int = 32, start: float = 0.0):
        super().__init__()
        self.num = int(num)
        centers = torch.linspace(start, cutoff, num, dtype=torch.get_default_dtype())
        self.register_buffer("centers", centers)
        width = float(centers[1] - centers[0]) if num > 1 else float(cutoff)
        self.coeff = -0.5 / width**2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return flush_subnormal(torch.exp(self.coeff * (d.unsqueeze(-1) - self.centers).pow(2)))


class ExpNormalBasis(nn.Module):
    def __init__(self, cutoff: float, num: int = 32):
        super().__init__()
        self.num = int(num)
        start = math.exp(-cutoff)
        self.register_buffer("centers", torch.linspace(start, 1.0, num, dtype=torch.get_default_dtype()))
        self.beta = (2.0 * (1.0 - start) / num) ** -2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return flush_subnormal(torch.exp(-self.beta * (torch.exp(-d).unsqueeze(-1) - self.centers).pow(2)))
