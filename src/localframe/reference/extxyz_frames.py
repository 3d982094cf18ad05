"""Extended-XYZ files that grow one whole frame at a time and survive a kill.

Each frame is serialised in memory (:func:`frame_text`) and appended by :class:`FrameAppender`
with a single ``write`` followed by ``fsync``, so a killed writer leaves whole frames, at most
followed by the beginning of one. :func:`split_frames` finds the whole frames of such a file;
opening an appender after it cuts the unfinished rest, so that appending carries on cleanly.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ase import Atoms

__all__ = ["FrameAppender", "frame_text", "split_frames"]


def frame_text(atoms: Atoms) -> str:
    """One structure as an extended-XYZ frame (labels in ``info`` and ``arrays`` included)."""
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def split_frames(data: bytes) -> tuple[list[bytes], int]:
    """The whole frames at the start of extended-XYZ bytes, and the offset where they end.

    A frame is whole when its atom-count line and all its ``count + 1`` following lines end with a
    newline. Anything after the last whole frame is an unfinished frame. Raises ``ValueError``
    where a whole line that should hold an atom count does not.
    """
    frames, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            break
        try:
            count = int(data[start:end])
        except ValueError:
            raise ValueError(f"byte {start}: expected the atom count of an extended-XYZ frame") from None
        if count < 0:
            raise ValueError(f"byte {start}: negative atom count")
        for _ in range(count + 1):
            end = data.find(b"\n", end + 1) if end >= 0 else -1
        if end < 0:
            break
        frames.append(data[start:end + 1])
        start = end + 1
    return frames, start


class FrameAppender:
    """Appends whole frames to ``path``, each call written in one piece and synced to disk.

    ``keep`` bytes of an existing file are kept and the rest cut (``0``: start empty); the file
    is created if missing.
    """

    def __init__(self, path: str | os.PathLike, keep: int = 0):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666)
        os.ftruncate(self._fd, keep)
        os.lseek(self._fd, keep, os.SEEK_SET)
        self.frames = 0

    def append(self, texts: list[str]) -> None:
        """Write ``texts`` (whole frames) with one ``write`` and ``fsync`` them."""
        data = "".join(texts).encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it in one write; loop in case it does not
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.frames += len(texts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "FrameAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
