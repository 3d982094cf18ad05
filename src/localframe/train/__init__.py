"""Training: the config schema (``config``), data and normalisation (``data``), the Lightning module
(``module``), metrics and plots (``evaluate``) and the run itself (``run``: ``train``, ``evaluate``).

Submodules are imported on first access (``localframe.train.config``), so that importing this
package does not load Lightning.
"""

from localframe import _lazy_package

__getattr__, __dir__ = _lazy_package(__name__)
