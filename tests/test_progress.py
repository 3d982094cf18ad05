"""The shared progress helper: plain lines when the stream is not a terminal, a live bar when it is."""

import io

import pytest

from localframe.progress import progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_every_interval_and_at_the_end():
    stream, clock = io.StringIO(), Clock()
    with progress(100, "MD", interval=30.0, stream=stream, clock=clock) as bar:
        for _ in range(100):
            clock.now += 1.0
            bar.advance(T="300 K", Epot=-97.123456)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the end
    assert lines[0] == "MD: 30/100 steps (30 %), 1 steps/s, 0:00:30 elapsed, 0:01:10 left, T 300 K, Epot -97.12"
    assert lines[-1] == "MD: 100/100 steps in 0:01:40 (1 steps/s), T 300 K, Epot -97.12"


def test_stopped_loop_says_so_and_unknown_total():
    stream, clock = io.StringIO(), Clock()
    with pytest.raises(RuntimeError):
        with progress(None, "epoch 1", stream=stream, clock=clock, unit="batches") as bar:
            clock.now = 2.0
            bar.update(4, loss=0.5)
            raise RuntimeError("boom")
    assert stream.getvalue() == "epoch 1: stopped at 4 batches after 0:00:02 (2 batches/s), loss 0.5\n"


def test_disabled_writes_nothing_but_counts():
    stream = io.StringIO()
    with progress(3, "x", enabled=False, stream=stream, interval=0) as bar:
        bar.advance(2)
    assert stream.getvalue() == "" and bar.completed == 2


def test_a_non_terminal_stream_never_gets_a_live_bar(tmp_path):
    path = tmp_path / "log.txt"
    with open(path, "w") as stream:
        with progress(5, "label", stream=stream, interval=0) as bar:
            for _ in range(5):
                bar.advance()
    text = path.read_text()
    assert "\r" not in text and "\x1b" not in text
    assert len(text.splitlines()) == 6 and text.splitlines()[-1].startswith("label: 5/5 steps in ")


def test_live_bar_on_a_terminal():
    stream = io.StringIO()
    with progress(5, "MD", stream=stream, live=True) as bar:
        for _ in range(5):
            bar.advance(T="300 K")
    assert "MD" in stream.getvalue() and "5/5" in stream.getvalue()


def test_training_log_is_one_plain_line_per_epoch(tmp_path, capsys, emt_water):
    """Training with stderr not a terminal: no carriage returns, one line per epoch with the validation metric."""
    from localframe.train import config as configuration
    from localframe.train.run import train

    cfg = configuration.validate({
        "data": {"source": emt_water, "n_train": 12, "n_val": 4},
        "model": {"name": "schnet", "cutoff": 3.0, "hparams": {"hidden_channels": 8, "num_layers": 1}},
        "train": {"batch_size": 4, "max_epochs": 3, "threads": 1}, "run_dir": str(tmp_path / "run"),
    })
    train(cfg, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3, err
    assert lines[0].startswith("epoch 0: 3/3 batches in ") and "val " in lines[0] and "forces MAE" in lines[0]
