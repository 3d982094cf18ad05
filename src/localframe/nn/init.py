"""Weight initialisation that keeps signals at unit scale through products of learned factors."""

from __future__ import annotations

import math

from torch import nn


def unit_variance_init(module: nn.Module) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``module``: weights N(0, 1/fan_in), biases 0.

    A unit-variance input then gives a unit-variance output. PyTorch's default (uniform with
    bound 1/√fan_in) shrinks each layer's output to ≈ 0.58 of its input scale; in a message that
    multiplies three learned factors (filter ⊙ edge feature ⊙ neighbour feature) the shrinkage
    compounds to messages ~1 % of the node features at initialisation, and training starts slowly.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
