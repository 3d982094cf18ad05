"""Fine-tuning from a pretrained model file (``model.init=PRETRAINED.pt``).

The representation's weights are loaded from the file; the heads stay as the fine-tuning run builds
them (freshly initialised), and the normalisation (element references, scales, shifts) is that of the
fine-tuning data's training split, set after loading. The file must hold the same architecture: the
same model name, cutoff and hyperparameters (defaults included), else one line names the difference.
The fine-tuned model file records where its representation came from (``metadata["init"]``: the
file, its SHA-256 and its ``pretraining`` record).
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from localframe.errors import InputError


def _resolved(name: str, hparams: dict) -> dict:
    from localframe import models

    cls = models.representation_class(name)
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if k not in ("self", "cutoff") and p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in hparams.items() if k != "cutoff"}}


def _resolved_spe(options: dict) -> dict:
    from localframe.nn.spe import SPE

    defaults = {k: p.default for k, p in inspect.signature(SPE.__init__).parameters.items() if k != "self"}
    return {**defaults, **options}


def _describe(name: str, cutoff: float, hparams: dict) -> str:
    return f"{name} at {cutoff:g} Å" + (f" ({', '.join(f'{k}={v!r}' for k, v in sorted(hparams.items()))})" if hparams else "")


def check_architecture(model, pretrained, source: str) -> None:
    """:class:`InputError` (one line) unless ``pretrained`` has ``model``'s architecture."""
    if pretrained.name != model.name or abs(pretrained.cutoff - model.cutoff) > 1e-9:
        raise InputError(f"holds a {_describe(pretrained.name, pretrained.cutoff, {})} representation, but this run builds "
                         f"{_describe(model.name, model.cutoff, {})}: set model.name/model.preset and model.cutoff "
                         "as in the pretraining run", source)
    if (pretrained.spe_options is None) != (model.spe_options is None) or (
            model.spe_options is not None and _resolved_spe(pretrained.spe_options) != _resolved_spe(model.spe_options)):
        raise InputError(f"the pretrained {pretrained.name} has model.spe {pretrained.spe_options!r}, this run "
                         f"{model.spe_options!r}: fine-tuning needs the same architecture", source)
    mine, theirs = _resolved(model.name, model.hparams), _resolved(pretrained.name, pretrained.hparams)
    differ = {k: (theirs.get(k), mine.get(k)) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)}
    if differ:
        text = ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differ.items())
        raise InputError(f"the pretrained {pretrained.name} has other hyperparameters than this run's ({text}): "
                         "fine-tuning needs the same architecture", source)


def check_file(model_config, path: str | Path) -> None:
    """Before any work: the model file ``path`` holds the architecture of ``model_config`` (``model.*``)."""
    from localframe import models
    from localframe.io import load_model

    m = model_config
    check_architecture(models.create(m.name, cutoff=m.cutoff, spe=m.spe, **m.hparams), load_model(path), str(path))


def load_representation(model, path: str | Path) -> dict:
    """Load the representation of the model file ``path`` into ``model`` (heads untouched); returns the
    provenance record for the fine-tuned model file."""
    from localframe.io import load_model

    source = str(path)
    pretrained = load_model(path)
    check_architecture(model, pretrained, source)
    dtype = next(model.parameters()).dtype
    model.representation.load_state_dict(pretrained.representation.to(dtype).state_dict(), strict=True)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    record = {"choice": "pretrained", "file": source, "sha256": digest}
    meta = pretrained.metadata or {}
    if "pretraining" in meta:
        record["pretraining"] = meta["pretraining"]
    return record
