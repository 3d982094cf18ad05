"""localframe: symmetry-informed deep learning on 3D molecules and materials."""

import os as _os

# How long idle OpenMP threads spin before they sleep. libgomp's default (300,000 spins) collapses
# when another process holds a core: with two LEFTNet runs on 2 cores, 43 training steps each in
# 1.2 minutes against 122 with a spin of 300 (and 75x slower steps in the worst case seen).
# OMP_WAIT_POLICY=PASSIVE (no spinning) avoids that as well (116 steps) but is slower on an idle
# machine: ~150 steps against 172 with the spin of 300.
# Set before torch loads its OpenMP runtime; a wait policy or spin count the user chose is kept.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "300")

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
