"""One entry point for every data source: ``load(spec)``.

``spec`` is ``"qm9"`` (offline QM9 from qm9pack), a path to an ``.npz`` archive (sGDML/MD17 or
rMD17 layout), or a path to any file ASE can read (also any path given with a ``format``). The
dispatch is a table from the kind of source to its reader; an option the reader does not take
(``keys`` for QM9, ``extra`` for an archive, …) is an error, never silently ignored.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from localframe.data import qm9, readers
from localframe.data.readers import StructureSet
from localframe.errors import InputError

# The command-line flag of each file option, for messages.
FLAGS = {"keys": "--key", "units": "--unit", "extra": "--extra", "format": "--format"}


def _load_qm9(spec: str, targets=None, n_train: int | None = None, n_val: int | None = None, seed: int = qm9.SPLIT_SEED,
              train_offset: int | None = None) -> StructureSet:
    data = qm9.load()
    parts = qm9.split(n_train=n_train, n_val=n_val, seed=seed, train_offset=train_offset)
    unknown = [t for t in (targets or ()) if t not in qm9.TARGETS]
    if unknown:
        raise InputError(f"qm9: unknown targets {unknown}; known: {', '.join(qm9.TARGETS)}")
    indices = np.concatenate([parts["train"], parts["val"], parts["test"]])
    atoms = data.atoms_list(indices)
    starts = np.cumsum([0, len(parts["train"]), len(parts["val"])])
    splits = {name: np.arange(start, start + len(parts[name])) for name, start in zip(("train", "val", "test"), starts)}
    labels = tuple(targets) if targets else qm9.TARGETS
    return StructureSet(atoms, labels, {t: qm9.UNITS[t] for t in labels}, "qm9", splits)


def _load_npz(spec: str, keys: dict | None = None, units: dict | None = None) -> StructureSet:
    return readers.read_npz(spec, keys=keys, units_in=units)


def _load_ase(spec: str, keys: dict | None = None, units: dict | None = None, extra: dict | None = None, format: str | None = None) -> StructureSet:
    return readers.read_ase(spec, keys=keys, units_in=units, extra=extra, format=format)


LOADERS: dict[str, Callable[..., StructureSet]] = {"qm9": _load_qm9, "npz": _load_npz, "ase": _load_ase}
KIND_NAMES = {"qm9": "QM9 (its labels are its targets, in fixed units)", "npz": "an .npz archive", "ase": "an ASE file"}


def _kind(spec: str, format: str | None) -> str:
    if spec.lower() == "qm9":
        return "qm9"
    return "npz" if Path(spec).suffix.lower() == ".npz" and not format else "ase"


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, (dict, list, tuple, str)) and len(value) == 0)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def aggregation(target: str) -> str:
    """How atom contributions add up to a scalar target: QM9's table (``"sum"`` for extensive targets,
    ``"mean"`` for intensive ones such as the HOMO-LUMO gap); ``"sum"`` for any other label."""
    return qm9.AGGREGATION.get(target, "sum")


def load(spec: str | Path, notify: Callable[[str], None] | None = _stderr, selection: dict[str, Any] | None = None,
         **options: Any) -> StructureSet:
    """Load a data source. Options: ``keys``, ``units``, ``extra``, ``format`` (files; ``extra`` and
    ``format`` for ASE files only); ``targets``, ``n_train``, ``n_val``, ``seed``, ``train_offset`` (QM9). Options left
    empty (``None``, ``{}``) are ignored; one the source does not take raises :class:`InputError`.

    ``selection`` holds what a training run asks of any source (``targets``, ``n_train``, ``n_val``,
    ``seed``): a source that can select by them (QM9 reads only the split it is asked for) gets them;
    for the others the training run makes the split and checks the targets itself.

    What the reader decided on its own (a discovered label key, units stored in the file or
    documented for its layout) is in the result's ``notes`` and passed, one line each prefixed
    with the source, to ``notify`` (default: stderr; ``None``: silent).
    """
    spec = str(spec)
    options = {name: value for name, value in options.items() if _given(value)}
    kind = _kind(spec, options.get("format"))
    loader = LOADERS[kind]
    accepted = list(inspect.signature(loader).parameters)[1:]
    for name, value in (selection or {}).items():
        if name in accepted and _given(value) and name not in options:
            options[name] = value
    wrong = [name for name in options if name not in accepted]
    if wrong:
        named = ", ".join(f"{FLAGS[name]} ({name}=)" if name in FLAGS else repr(name) for name in wrong)
        raise InputError(f"{named} does not apply to {KIND_NAMES[kind]}; it takes {', '.join(accepted)}", spec)
    data = loader(spec, **options)
    if notify is not None:
        for note in data.notes:
            notify(f"{data.source}: {note}")
    return data
