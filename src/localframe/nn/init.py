r"""Weight initialisation: unit variance, PyTorch's default, and Virgo (variance propagation through the graph).

Choices (``model.init`` of a training config, :func:`initialize`), acting on every ``nn.Linear`` of a
representation (embeddings and heads keep theirs):

* ``model``: as the model builds itself (SchNet, LEFTNet, ClofNet: unit variance; the others: PyTorch);
* ``pytorch``: PyTorch's default, U(−1/√fan_in, 1/√fan_in) weights (variance 1/(3 fan_in));
* ``unit``: N(0, 1/fan_in) weights, zero biases (:func:`unit_variance_init`);
* ``virgo``: Virgo (Li, Song, Song, Wipf, ICML 2023), computed from a sample of training graphs.

Virgo. For a GCN layer h^l = σ(Â h^{l−1} W^l) the variance of a layer's output is the variance of its
input times fan_in·Var(W^l)·g² (g² the activation's gain, 2 for ReLU) times a *graph factor*, how one
more propagation step changes the squared norm of the propagated signal. With the graph statistics of
the disjoint union of the sample graphs (N nodes, x̄ the per-node mean of the input features)

    F_k = ‖Â^k x̄‖²,   B_k = ‖Â^k 𝟙‖²,      k = 0 … L,

the forward and backward choices for layer l = 1 … L are

    Var_f(W^1) = g²/fan_in,      Var_f(W^l) = (g²/fan_in) · F_{l−1}/F_l            (l ≥ 2)
    Var_b(W^l) = (g²/fan_out) · B_{L−l}/B_{L−l+1}

and Virgo takes their harmonic mean, Var = 2/(1/Var_f + 1/Var_b) (``mean="forward"`` or ``"backward"``
keep one of them: the paper's virgofor / virgoback). Weights are drawn U(−a, a), a = √(3 Var), biases 0.
For a linear GCN with a rank-one input x̄ 𝟙ᵀ the forward choice keeps the per-entry variance of every
layer's output equal to the first layer's, and for a sum-pooled output (whose gradient is 𝟙 gᵀ) the
backward choice keeps that of every layer's gradient equal to the output's; a ReLU network with
non-negative x̄ keeps the forward variance with g² = 2. ``tests/test_init.py`` measures both.

Departure for regression (this package's outputs): the paper's last backward term N/((C−1)·B_1) comes
from the softmax cross-entropy gradient over C classes; a sum-pooled scalar has the gradient 𝟙 gᵀ, whose
term is the general one, (g²/fan_out)·B_0/B_1 with B_0 = N.

Applied to a representation (:func:`virgo_init`): the propagation operator is the model's own
aggregation, a residual sum over neighbours weighted by the smooth envelope u(d_ij) at the model's
cutoff, Â = I + U (U_ij = u(d_ij)); ``normalize=True`` gives the paper's GCN operator
D̃^{−1/2}(A + I)D̃^{−1/2} instead. The input of every model is the one-hot element code (the embedding
is a linear map of it), whose per-node mean is the same for every atom, so x̄ = 𝟙 and F_k = B_k.
The message-passing layers are :meth:`Representation.message_layers`; a layer of this package has
several Linears (filters, node MLPs, updates) where a GCN layer has one: each of the n Linears of
layer l gets the graph factor to the power 1/n (exact when they act in series), with g² = 1 (the
models mix SiLU, shifted softplus and products, and their unit-variance initialisation uses g² = 1
too, so ``virgo`` differs from ``unit`` by the graph factor only). Linears outside the layers
(radial filters, embeddings' mixers, substructure encoders) get the unit-variance initialisation.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from localframe.errors import InputError

#: the values of ``model.init`` other than a model file (fine-tuning, see :mod:`localframe.train.finetune`)
CHOICES = ("model", "pytorch", "unit", "virgo")
MEANS = ("harmonic", "forward", "backward")
VIRGO_SAMPLE = 64  # training structures whose disjoint union gives the graph statistics


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


def pytorch_default_init(module: nn.Module) -> nn.Module:
    """Every ``nn.Linear`` in ``module`` back to PyTorch's own initialisation (``reset_parameters``)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    return module


# ------------------------------------------------------------------------------------------ Virgo
def propagate(x: torch.Tensor, edge_index: torch.Tensor, weights: torch.Tensor | None = None,
              normalize: bool = False) -> torch.Tensor:
    """Â x for Â = I + A (A_ij = ``weights`` of the pairs (i, j), 1 if None), or, with ``normalize``,
    D̃^{−1/2}(A + I)D̃^{−1/2} with D̃ the row sums of A + I (the GCN operator). x: (N,) or (N, C)."""
    i, j = edge_index
    n = x.shape[0]
    w = torch.ones(i.shape[0], dtype=x.dtype, device=x.device) if weights is None else weights.to(x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if normalize:
        degree = torch.ones(n, dtype=x.dtype, device=x.device).index_add(0, i, w)
        scale = degree.rsqrt().view(shape)
        y = x * scale
        return scale * (y + torch.zeros_like(y).index_add(0, i, w.view(shape) * y[j]))
    return x + torch.zeros_like(x).index_add(0, i, w.view(shape) * x[j])


def graph_statistics(x: torch.Tensor, edge_index: torch.Tensor, depth: int, weights: torch.Tensor | None = None,
                     normalize: bool = False) -> torch.Tensor:
    """‖Â^k x‖² for k = 0 … ``depth``, shape (depth + 1,), in float64."""
    x = x.to(torch.float64)
    out = [x.pow(2).sum()]
    for _ in range(depth):
        x = propagate(x, edge_index, weights, normalize)
        out.append(x.pow(2).sum())
    return torch.stack(out)


def graph_factors(F: Sequence[float], B: Sequence[float]) -> list[tuple[float, float]]:
    """(F_{l−1}/F_l, B_{L−l}/B_{L−l+1}) for layers l = 1 … L (the first forward term is 1); F, B: k = 0 … L."""
    layers = len(F) - 1
    if len(B) != layers + 1:
        raise ValueError("graph_factors: F and B need the same length, L + 1")
    return [(1.0 if l == 1 else float(F[l - 1]) / float(F[l]), float(B[layers - l]) / float(B[layers - l + 1]))
            for l in range(1, layers + 1)]


def combine(forward: float, backward: float, mean: str = "harmonic") -> float:
    """Virgo's choice from the forward and backward variances."""
    if mean not in MEANS:
        raise InputError(f"virgo mean must be one of {MEANS}, got {mean!r}")
    return {"forward": forward, "backward": backward, "harmonic": 2.0 / (1.0 / forward + 1.0 / backward)}[mean]


def virgo_variances(F: Sequence[float], B: Sequence[float], fan_in: Sequence[int], fan_out: Sequence[int],
                    gain2: float = 2.0, mean: str = "harmonic") -> list[float]:
    """Var(W^l) for l = 1 … L (see the module docstring); F, B: the statistics k = 0 … L."""
    terms = graph_factors(F, B)
    if len(fan_in) != len(terms) or len(fan_out) != len(terms):
        raise ValueError("virgo_variances: fan_in and fan_out need one value per layer (L = len(F) - 1)")
    return [combine(gain2 * f / a, gain2 * b / c, mean) for (f, b), a, c in zip(terms, fan_in, fan_out)]


def uniform_(weight: torch.Tensor, variance: float) -> torch.Tensor:
    """Weights U(−a, a) with a = √(3·variance)."""
    bound = math.sqrt(3.0 * variance)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def virgo_init(representation: nn.Module, batches: Iterable, mean: str = "harmonic",
               normalize: bool = False) -> list[float]:
    """Virgo for a representation of this package from sample graphs (:class:`AtomsBatch` objects whose
    disjoint union gives the statistics). Returns the graph factor of each message-passing layer."""
    from localframe.data.batch import AtomsBatch
    from localframe.nn.cutoff import PolynomialCutoff

    layers = representation.message_layers()
    if not layers:
        raise InputError(f"{type(representation).__name__} declares no message-passing layers: Virgo needs them")
    batch = AtomsBatch.collate(list(batches))
    if batch.n_atoms.sum() == 0:
        raise InputError("virgo: the sample graphs have no atoms")
    with torch.no_grad():
        d = torch.linalg.vector_norm(batch.edge_vectors(batch.positions, batch.cell), dim=-1)
        u = PolynomialCutoff(float(representation.cutoff))(d.to(torch.float64))
        ones = torch.ones(int(batch.numbers.shape[0]), dtype=torch.float64)
        stats = graph_statistics(ones, batch.edge_index, len(layers), u, normalize)
    terms = graph_factors(stats.tolist(), stats.tolist())
    unit_variance_init(representation)
    for (f, b), modules in zip(terms, layers):
        linears = [m for module in modules for m in module.modules() if isinstance(m, nn.Linear)]
        n = max(len(linears), 1)
        for linear in linears:
            variance = combine(f ** (1 / n) / linear.in_features, b ** (1 / n) / linear.out_features, mean)
            uniform_(linear.weight, variance)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
    return [combine(f, b, mean) for f, b in terms]


def initialize(representation: nn.Module, choice: str, batches: Iterable | None = None) -> list[float] | None:
    """Apply ``choice`` (one of :data:`CHOICES`) to a representation; ``virgo`` needs sample ``batches``.
    Returns Virgo's graph factors, None for the others."""
    if choice == "model":
        return None
    if choice == "pytorch":
        pytorch_default_init(representation)
    elif choice == "unit":
        unit_variance_init(representation)
    elif choice == "virgo":
        if batches is None:
            raise InputError("model.init virgo needs sample training graphs")
        return virgo_init(representation, batches)
    else:
        raise InputError(f"model.init must be one of {', '.join(CHOICES)} or a model file (.pt), got {choice!r}")
    return None


def layer_variances(model: nn.Module, batch) -> tuple[list[float], list[float]]:
    """Measured per-layer variances of an :class:`AtomisticModel` on ``batch``: the mean square of the
    invariant features after each message-passing layer (forward) and of the gradient of the total
    energy with respect to them (backward), layers 1 … L."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        s = output[0] if isinstance(output, tuple) else output
        s.retain_grad()
        outputs.append(s)

    hooks = [layer[-1].register_forward_hook(keep) for layer in model.representation.message_layers()]
    try:
        energy = model(batch, forces=False, dipole=False)["energy"]
        energy.sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    model.zero_grad(set_to_none=True)
    return ([float(s.detach().pow(2).mean()) for s in outputs],
            [float(s.grad.pow(2).mean()) if s.grad is not None else 0.0 for s in outputs])
