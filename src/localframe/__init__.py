"""localframe: symmetry-informed deep learning on 3D molecules and materials."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("localframe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from localframe.data.batch import AtomsBatch
from localframe.errors import InputError

__all__ = ["AtomsBatch", "InputError", "__version__"]
