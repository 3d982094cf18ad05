"""Atomic file writing: a file is either completely written or not there at all.

Model files, checkpoints, caches and generated data sets are written through :func:`atomic_open`,
so a crash or a ``kill -9`` in the middle of writing never leaves a truncated file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

_UMASK = os.umask(0)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A temporary file beside ``path``; on success it is synced and renamed to ``path``, else removed.

    The folder of ``path`` must exist.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)  # mkstemp makes files private; use the usual mode
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def cache_dir() -> Path:
    """localframe's cache folder: ``$LOCALFRAME_CACHE``, else ``~/.cache/localframe`` (parsed data sets,
    compiled graphs)."""
    root = os.environ.get("LOCALFRAME_CACHE") or Path.home() / ".cache" / "localframe"
    return Path(root)
