"""The one place a Lightning ``Trainer`` is built, and the one place Lightning's console chatter is silenced.

Used by ``localframe train`` (:mod:`localframe.train.run`) and by the accuracy benchmark
(:mod:`localframe.bench.accuracy`), so both run with the same precision and console settings.
"""

from __future__ import annotations

import logging
import warnings

from localframe.errors import InputError, one_line

# Some models hold parameters that never reach the energy (a last vector update, an unused head):
# plain DDP would stop on them, so "ddp" means DDP that tolerates unused parameters.
STRATEGIES = {"ddp": "ddp_find_unused_parameters_true"}
PRECISION = {"float32": "32-true", "float64": "64-true"}
LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


def quiet_lightning(level: int = logging.WARNING) -> None:
    """Keep the console to our progress lines and results: no accelerator banners, tips or deprecations
    (Lightning's loggers at ``level``; the benchmarks pass ``logging.ERROR``). Lightning is imported first:
    importing ``lightning.pytorch`` sets its logger to INFO, which would undo a level set before."""
    import lightning.pytorch  # noqa: F401 - for its import-time logger set-up, see above

    for name in LOGGERS:
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # checkpoints/ of a resumed run


def build_trainer(dtype: str = "float32", accelerator: str = "cpu", devices="auto", num_nodes: int = 1,
                  strategy: str = "auto", probe: bool = False, **options):
    """A Lightning Trainer in ``dtype`` precision on the given hardware, without logger, progress bar or
    model summary (``options`` go to the Trainer). ``probe=True`` builds a throwaway one to check the
    hardware settings: what Lightning refuses is a one-line :class:`InputError`."""
    import lightning as L

    settings = dict(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                    strategy=STRATEGIES.get(strategy, strategy), precision=PRECISION[dtype],
                    logger=False, enable_progress_bar=False, enable_model_summary=False)
    if not probe:
        return L.Trainer(**settings, **options)
    try:
        return L.Trainer(**settings, enable_checkpointing=False)
    except Exception as err:  # noqa: BLE001 - Lightning's MisconfigurationException, ValueError, TypeError, ...
        raise InputError(f"trainer settings (accelerator {accelerator!r}, devices {devices!r}, strategy "
                         f"{strategy!r}, num_nodes {num_nodes}, train.dtype {dtype}): {one_line(err, 300)}") from None
