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

from localframe.errors import InputError

__all__ = ["AtomsBatch", "Calculator", "InputError", "__version__", "load_model"]

# Imported on first use, so that ``import localframe`` stays light (no torch: labelling workers
# start in a fraction of a second): these names, and every subpackage and module
# (``localframe.models``, ``localframe.train``, ``localframe.md``, ...).
_LAZY = {"AtomsBatch": "localframe.data.batch", "Calculator": "localframe.calculator", "load_model": "localframe.io"}


def _lazy_package(name: str, names: dict[str, str] | None = None):
    """``(__getattr__, __dir__)`` for package ``name``: its submodules, and ``names`` (attribute ->
    module), are imported on first access."""
    import importlib
    import importlib.util
    import pkgutil
    import sys

    names = names or {}

    def getattr_(attribute: str):
        package = sys.modules[name]
        if attribute in names:
            value = getattr(importlib.import_module(names[attribute]), attribute)
        elif not attribute.startswith("_") and importlib.util.find_spec(f"{name}.{attribute}") is not None:
            value = importlib.import_module(f"{name}.{attribute}")
        else:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        setattr(package, attribute, value)
        return value

    def dir_() -> list[str]:
        package = sys.modules[name]
        return sorted(set(vars(package)) | set(names) | {m.name for m in pkgutil.iter_modules(package.__path__)})

    return getattr_, dir_


__getattr__, __dir__ = _lazy_package(__name__, _LAZY)
