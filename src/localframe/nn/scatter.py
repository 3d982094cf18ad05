"""Gather and scatter on plain torch (no torch_scatter): rows picked by an index, sum and mean of rows grouped by one."""

from __future__ import annotations

import torch


def gather(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """src[index] along the first dimension. ``index_select`` rather than ``src[index]``: its gradient
    is an ``index_add`` instead of an accumulating ``index_put``, several times faster on CPU."""
    return src.index_select(0, index)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """out[k] = sum of src[e] over e with index[e] == k, along the first dimension."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of rows grouped by ``index``; empty groups give zero."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(src.dtype)
    return total / count.view((-1,) + (1,) * (src.dim() - 1))
