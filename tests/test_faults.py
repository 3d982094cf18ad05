"""Faults while training: a full disk or an unwritable run directory is one line naming the file and
the checkpoint that is kept, and the files written before stay intact."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from localframe.cli import main
from localframe.errors import InputError
from localframe.train import config as configuration
from localframe.train.run import train


def config(data, run_dir, **train_options):
    return configuration.validate({
        "data": {"source": data, "n_train": 12, "n_val": 4},
        "model": {"name": "schnet", "cutoff": 3.0, "hparams": {"hidden_channels": 8, "num_layers": 1}},
        "train": {"batch_size": 4, "max_epochs": 4, "threads": 1, **train_options},
        "run_dir": str(run_dir),
    })


def fail_checkpoint_writes(monkeypatch, after: int, error: OSError) -> list:
    """torch.save writes the first ``after`` checkpoints; later ones fail inside the write, as on a full disk."""
    real_save, calls = torch.save, []

    class FailingHandle:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise error

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > after and "state_dict" in obj:  # a Lightning checkpoint
            return real_save(obj, FailingHandle(f), *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, emt_water, monkeypatch):
    run = tmp_path / "run"
    calls = fail_checkpoint_writes(monkeypatch, 3, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    cfg = config(emt_water, run, checkpoint_minutes=1e-6)  # last.ckpt after every batch
    with pytest.raises(InputError) as caught:
        train(cfg, progress=False)
    message = str(caught.value)
    assert len(calls) == 4 and "\n" not in message
    assert "No space left on device" in message and "inline_container" not in message
    assert message.startswith(str(run / "checkpoints")) and f"{run / 'checkpoints' / 'last.ckpt'} is kept" in message
    assert f"--resume {run}" in message
    kept = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)  # intact, and loads
    assert kept["global_step"] >= 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # no half-written files
    monkeypatch.undo()
    train(configuration.load(run / "config.yaml"), resume=True, progress=False)  # and the run continues
    assert (run / "model.pt").is_file()


def test_cli_disk_full_is_one_line(tmp_path, emt_water, monkeypatch, capsys):
    import yaml

    fail_checkpoint_writes(monkeypatch, 0, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(emt_water, tmp_path / "run").model_dump(mode="json")))
    assert main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("localframe train: error: ") and "No space left on device" in err
    assert "no checkpoint had been written yet" in err


def test_run_directory_that_becomes_unwritable(tmp_path, emt_water, monkeypatch):
    run = tmp_path / "run"
    fail_checkpoint_writes(monkeypatch, 2, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    with pytest.raises(InputError, match="Permission denied") as caught:
        train(config(emt_water, run, checkpoint_minutes=1e-6), progress=False)
    assert "last.ckpt is kept" in str(caught.value)


def test_run_directory_that_cannot_be_created(tmp_path, emt_water):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot write it") as caught:
        train(config(emt_water, blocker / "run"), progress=False)
    assert str(blocker / "run" / "config.yaml") in str(caught.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_run_directory(tmp_path, emt_water):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        with pytest.raises(InputError, match="Permission denied"):
            train(config(emt_water, run), progress=False)
    finally:
        run.chmod(0o755)
