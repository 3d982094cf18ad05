"""Progress of long loops: a live bar on a terminal, plain lines in a log.

    from localframe.progress import progress

    with progress(len(structures), "GFN2-xTB labels") as bar:
        for atoms in structures:
            ...
            bar.advance()                      # or bar.advance(T="300 K", Epot="-97.12 eV")

When the stream (default: standard error) is a terminal, a rich bar is redrawn in place. When it is
not (a log file, a pipe, CI, a batch job), one plain line is written every ``interval`` seconds and
one at the end, never a carriage return, e.g.::

    MD: 1200/10000 steps (12 %), 41.3 steps/s, 0:00:29 elapsed, 0:03:33 left, T 301 K, Epot -97.1 eV
    MD: 10000/10000 steps in 0:04:02 (41.3 steps/s), T 299 K, Epot -97.0 eV

A loop left by an exception ends with ``stopped at 1234/10000 steps after ...``. ``fields`` are
shown after the counts as ``name value``, in the order given; numbers are written with 4
significant digits. ``enabled=False`` shows nothing (the counts are still kept).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

__all__ = ["Progress", "progress", "is_terminal"]

REFRESH = 0.1  # s between updates of a live bar (rich redraws at 10 Hz anyway)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """Counts done of ``total`` (None: unknown), shown as a live bar or as plain lines; see the module."""

    def __init__(self, total: float | None, description: str, *, enabled: bool = True, interval: float = 30.0,
                 unit: str = "steps", stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] | None = None):
        self.total, self.description, self.unit = total, description, unit
        self.enabled, self.interval, self.clock = enabled, float(interval), clock or time.monotonic
        self.stream = stream if stream is not None else sys.stderr
        self.live = is_terminal(self.stream) if live is None else bool(live)
        self.completed: float = 0
        self.fields: dict[str, object] = {}
        self.started = self.last_line = self.last_refresh = self.clock()
        self._bar = self._task = None
        self.closed = False

    # ------------------------------------------------------------------ counting
    def advance(self, n: float = 1, **fields) -> None:
        """``n`` more done; ``fields`` replace the shown values of the same names."""
        self.update(self.completed + n, **fields)

    def update(self, completed: float, **fields) -> None:
        """``completed`` done in all; ``fields`` replace the shown values of the same names."""
        self.completed = completed
        self.fields.update(fields)
        if not self.enabled:
            return
        now = self.clock()
        if self.live:
            if self._bar is not None and (now - self.last_refresh >= REFRESH or completed == self.total):
                self.last_refresh = now
                self._bar.update(self._task, completed=completed, info=self._fields("  "))
        elif now - self.last_line >= self.interval:
            self.last_line = now
            self._write(self.line())

    # ------------------------------------------------------------------ text
    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self, end: bool = False, stopped: bool = False) -> str:
        """The plain status line (``end``: the closing one; ``stopped``: left by an exception)."""
        elapsed = self.elapsed
        rate = self.completed / elapsed if elapsed > 0 else None
        speed = f"{rate:.3g} {self.unit}/s" if rate is not None else None
        count = _number(self.completed) + (f"/{_number(self.total)}" if self.total is not None else "") + f" {self.unit}"
        if stopped:
            parts = [f"stopped at {count} after {_clock(elapsed)}" + (f" ({speed})" if speed else "")]
        elif end:
            parts = [f"{count} in {_clock(elapsed)}" + (f" ({speed})" if speed else "")]
        else:
            parts = [count + (f" ({100 * self.completed / self.total:.0f} %)" if self.total else "")]
            parts += [speed] if speed else []
            parts.append(f"{_clock(elapsed)} elapsed")
            if self.total is not None and rate:
                parts.append(f"{_clock(max(0.0, self.total - self.completed) / rate)} left")
        fields = self._fields(", ")
        return f"{self.description}: {', '.join(parts)}" + (f", {fields}" if fields else "")

    def _fields(self, separator: str) -> str:
        return separator.join(f"{name} {_value(value)}" for name, value in self.fields.items())

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    # ------------------------------------------------------------------ start and end
    def start(self) -> "Progress":
        """Show the live bar (on a terminal); :func:`progress` calls it on entering the ``with`` block."""
        if not (self.enabled and self.live) or self._bar is not None:
            return self
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._bar = RichProgress(
            TextColumn(f"[bold]{escape(self.description)}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}", markup=False),
            console=Console(file=self.stream), transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, info=self._fields("  "))
        return self

    def close(self, stopped: bool = False) -> None:
        """End the bar, or write the closing line (``stopped``: the loop was left by an exception)."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        if self.live:
            if self._bar is not None:
                self._bar.update(self._task, completed=self.completed, info=self._fields("  "))
                self._bar.stop()
        else:
            self._write(self.line(end=True, stopped=stopped))


@contextmanager
def progress(total: float | None, description: str, enabled: bool = True, interval: float = 30.0,
             **options) -> Iterator[Progress]:
    """A :class:`Progress` for the ``with`` block: live bar on a terminal, else plain lines (see the module).

    ``total`` (None: unknown), ``description`` (the line's prefix), ``interval`` (s between plain
    lines); ``options``: ``unit`` (what is counted, default "steps"), ``stream`` (default standard
    error), ``live`` (default: whether the stream is a terminal), ``clock`` (default time.monotonic).
    """
    bar = Progress(total, description, enabled=enabled, interval=interval, **options)
    bar.start()
    try:
        yield bar
    except BaseException:
        bar.close(stopped=True)
        raise
    bar.close()


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
