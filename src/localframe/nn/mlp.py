"""Multilayer perceptrons, the building block of every model body and head.

``mlp([a, b, c])`` is Linear(a, b) → SiLU → Linear(b, c) (no activation after the last layer);
:func:`columnwise` applies one to every column of a (…, D, C) tensor (vector or frame features).
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers with an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def columnwise(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``net`` (an :func:`mlp`) applied to every column of x (…, D, C), giving (…, D_out, C): the same
    as ``net(x.transpose(-1, -2)).transpose(-1, -2)`` without the transposed copies (faster on CPU)."""
    for layer in net:
        if isinstance(layer, nn.Linear):
            x = torch.einsum("ka,...ac->...kc", layer.weight, x)
            x = x + layer.bias.unsqueeze(-1) if layer.bias is not None else x
        else:
            x = layer(x)
    return x
