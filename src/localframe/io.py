"""Model files: a trained model as a file of tensors and plain Python values, never code.

A model file (written with :func:`torch.save`) holds one dict::

    {"format": "localframe-model", "format_version": 1, "localframe_version": "0.1.0",
     "config": {"name": ..., "hparams": {...}, "dipole": ..., "targets": {...}},
     "state_dict": {parameter name: tensor}, "cutoff": 5.0, "metadata": {...}}

:func:`load_model` reads it with ``torch.load(..., weights_only=True)`` only, so opening a
model file can never run code; the model is rebuilt through the registry from ``config`` and
the weights are loaded strictly. ``metadata`` is a free dict of plain values (units, elements,
normalisation, training details).

``metadata["elements"]``, the sorted atomic numbers of the training structures (written by
``localframe train``), is what the model knows: :func:`check_elements` refuses structures with
other elements unless the caller opts in. Files without it (older ones, models saved by hand)
are used without a check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from localframe.dtypes import torch_dtype
from localframe.errors import InputError, one_line
from localframe.files import atomic_open

FORMAT = "localframe-model"
FORMAT_VERSION = 1


def save_model(model, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an :class:`~localframe.models.AtomisticModel`) to ``path`` atomically.

    ``metadata`` defaults to ``model.metadata``. Returns the path written.
    """
    from localframe import __version__

    path = Path(path)
    if metadata is None:
        metadata = getattr(model, "metadata", {}) or {}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "localframe_version": __version__,
        "config": model.config(),
        "state_dict": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
        "cutoff": float(model.cutoff),
        "metadata": _check_plain(dict(metadata), "metadata"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        torch.save(payload, handle)
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None):
    """Read a model file; returns an :class:`~localframe.models.AtomisticModel` in eval mode.

    ``dtype`` (``torch.float32``/``"float32"`` or ``torch.float64``/``"float64"``) defaults to
    the dtype the weights were saved in. Problems raise :class:`InputError` naming the file.
    """
    from localframe.models import create

    source = str(path)
    target_dtype = _dtype(dtype, source)
    if not Path(path).is_file():
        raise InputError("model file not found (no such file)", source)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zip archives, refused globals, ...
        raise InputError(f"not a localframe model file, or a corrupted one ({_load_problem(err)})", source) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"not a localframe model file (expected format {FORMAT!r})", source)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"model file format_version {version!r} is not supported (this localframe reads version "
            f"{FORMAT_VERSION}; the file was written by localframe {payload.get('localframe_version', '?')})",
            source,
        )
    config, state = payload.get("config"), payload.get("state_dict")
    if not isinstance(config, dict) or not isinstance(config.get("hparams", {}), dict) or not isinstance(state, dict):
        raise InputError("model file is missing its config or weights", source)
    try:
        model = create(
            config["name"], dipole=bool(config.get("dipole", False)), targets=config.get("targets") or None,
            spe=config.get("spe"), **config.get("hparams", {}),
        )
    except InputError as err:
        raise err.located(source) from None
    except KeyError:
        raise InputError("model file config has no model name", source) from None
    saved_dtype = next((t.dtype for t in state.values() if torch.is_tensor(t) and t.is_floating_point()), None)
    model = model.to(dtype=saved_dtype or torch.get_default_dtype())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"weights do not match model {config['name']!r}: {one_line(err, 300)}", source) from None
    if "cutoff" in payload and abs(float(payload["cutoff"]) - model.cutoff) > 1e-12:
        raise InputError(f"model file cutoff {payload['cutoff']} disagrees with its config ({model.cutoff})", source)
    model.metadata = dict(payload.get("metadata") or {})
    return model.to(device=device, dtype=target_dtype).eval()


def _dtype(dtype: torch.dtype | str | None, source: str | None = None) -> torch.dtype | None:
    return None if dtype is None else torch_dtype(dtype, source)


def _load_problem(err: BaseException) -> str:
    """A short reason why ``torch.load(weights_only=True)`` refused a file (without its advice)."""
    for line in str(err).splitlines():
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].split(" was not an allowed global")[0].strip()
            if detail.startswith("Unsupported global"):
                return f"it holds more than tensors and plain values: {detail}"
    return f"{type(err).__name__} while reading it"


def _check_plain(value: Any, where: str) -> Any:
    """``value`` if it holds only dicts with str keys, lists, tuples, str, int, float, bool, None, tensors."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            _check_plain(item, f"{where}[{k}]")
    elif not (value is None or isinstance(value, (bool, int, float, str)) or torch.is_tensor(value)):
        raise InputError(f"{where} holds a {type(value).__name__}; model files hold only plain values and tensors")
    return value


# ---------------------------------------------------------------------------------- elements
ALLOW_UNSEEN = "--allow-unseen-elements, or allow_unseen_elements=True in Python, runs it anyway"


def trained_elements(model) -> tuple[int, ...] | None:
    """The atomic numbers ``model`` was trained on (``metadata["elements"]``), or None when not recorded."""
    elements = (getattr(model, "metadata", None) or {}).get("elements")
    return tuple(sorted({int(z) for z in elements})) if elements else None


def known_elements(models) -> tuple[int, ...] | None:
    """The elements every one of ``models`` (a model or a committee) was trained on; None if none records them."""
    known = None
    for model in models if isinstance(models, (list, tuple)) else [models]:
        elements = trained_elements(model)
        if elements is not None:
            known = set(elements) if known is None else known & set(elements)
    return None if known is None else tuple(sorted(known))


def check_elements(known: Sequence[int] | None, numbers, source: str | None = None, index: int | None = None) -> None:
    """Raise :class:`InputError` naming the elements of ``numbers`` that are not in ``known`` (None: no check)."""
    if known is None:
        return
    unseen = sorted(set(int(z) for z in np.unique(np.asarray(numbers))) - set(known))
    if unseen:
        raise InputError(f"has {_symbols(unseen)}, but the model was trained on {_symbols(known)} only; {ALLOW_UNSEEN}",
                         source, index)


def _symbols(numbers: Sequence[int]) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in numbers)
