"""Which outputs a set of labels asks of a model: the one place that decides it.

Training (:class:`~localframe.train.module.Task`), evaluation (:func:`~localframe.train.evaluate.predict`)
and the run (:func:`~localframe.train.run.train`, its model and its metrics) all ask here.
"""

from __future__ import annotations

from typing import Iterable

#: Labels with a fixed physical meaning, computed by every model (forces and stress by autograd).
PHYSICAL = ("energy", "forces", "stress", "dipole")


def requested(labels: Iterable[str], has_dipole: bool, weights=None) -> dict[str, bool]:
    """``{"forces": ..., "stress": ..., "dipole": ...}``: the outputs to compute for ``labels``.

    A dipole needs a model with a dipole head. With loss ``weights`` (``train.weights``), an output
    whose weight is 0 is not computed (training); without them every labelled output is (evaluation).
    """
    labels = set(labels)
    return {key: key in labels and (weights is None or getattr(weights, key) > 0) and (key != "dipole" or has_dipole)
            for key in ("forces", "stress", "dipole")}


def learned(labels: Iterable[str], targets: Iterable[str]) -> list[str]:
    """The labels a run learns and reports, in the source's order: the physical ones and the scalar targets."""
    targets = set(targets)
    return [key for key in labels if key in PHYSICAL or key in targets]
