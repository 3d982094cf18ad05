"""localframe: symmetry-informed deep learning on 3D molecules and materials."""

import os as _os

# OpenMP threads that spin while waiting collapse when another process holds a core: a training
# step on 2 shared cores took 7.5 s instead of 0.1 s. Passive waiting costs next to nothing otherwise.
# Set before torch loads its OpenMP runtime; a value the user chose is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("localframe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from localframe.data.batch import AtomsBatch
from localframe.errors import InputError

__all__ = ["AtomsBatch", "Calculator", "InputError", "__version__", "load_model"]

# Imported on first use, so that ``import localframe`` stays light.
_LAZY = {"Calculator": "localframe.calculator", "load_model": "localframe.io"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'localframe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
