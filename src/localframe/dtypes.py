"""The floating-point precisions localframe runs in, and the one parser of their names.

``DTYPES`` maps the names a user writes (config ``train.dtype``, ``--dtype``, ``Calculator(dtype=)``)
to torch dtypes; :func:`torch_dtype` turns a name or a torch dtype into one, or raises a one-line
:class:`~localframe.errors.InputError`.
"""

from __future__ import annotations

import torch

from localframe.errors import InputError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype: str | torch.dtype, source: str | None = None) -> torch.dtype:
    """``torch.float32`` or ``torch.float64`` for a name in :data:`DTYPES` or one of those dtypes."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if str(dtype) not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}", source)
    return DTYPES[str(dtype)]


def name(dtype: torch.dtype) -> str:
    """The name of a dtype of :data:`DTYPES` (``torch.float64`` -> ``"float64"``)."""
    return next(key for key, value in DTYPES.items() if value == torch_dtype(dtype))
