"""Writing into a run directory: a failed write (disk full, no permission) is one line, not a traceback.

Every file of a run is written atomically (:mod:`localframe.files`), so a failed write leaves the
earlier version of that file, and every other file, intact. :func:`writing` turns the failure into
an :class:`InputError` that names the file, the reason and the checkpoint that is kept::

    runs/x/checkpoints/last.ckpt: cannot write it (No space left on device); the last good checkpoint
    runs/x/checkpoints/last.ckpt is kept: make room and continue with 'localframe train --resume runs/x'
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from localframe.errors import InputError

#: torch.save reports a failed write of its zip container as a RuntimeError with one of these
TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")


@contextmanager
def writing(path: str | os.PathLike, run: str | os.PathLike | None = None) -> Iterator[None]:
    """Raise a failed write of ``path`` as a one-line :class:`InputError`; with ``run`` (the run
    directory) the message says which checkpoint is kept and how to continue."""
    try:
        yield
    except InputError:
        raise
    except (OSError, RuntimeError) as err:
        reason = write_failure(err)
        if reason is None:
            raise
        raise InputError(f"cannot write it ({reason}); {kept(Path(run)) if run is not None else 'nothing else was changed'}",
                         str(path)) from None


def write_failure(err: BaseException) -> str | None:
    """Why a write failed (the OS's reason), or None if ``err`` is not a failed write."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err.strerror or str(err) or type(err).__name__
        if isinstance(err, RuntimeError) and any(text in str(err) for text in TORCH_WRITE_FAILURES):
            chained = err.__cause__ or err.__context__
            return write_failure(chained) if isinstance(chained, OSError) else "the write failed; is the disk full?"
        err = err.__cause__ or err.__context__
    return None


def kept(run: Path) -> str:
    """What a failed write leaves to continue from."""
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "best.ckpt"
    if last.is_file():
        return (f"the last good checkpoint {last} is kept: make room (or fix the permissions) and continue with "
                f"'localframe train --resume {run}'")
    if best.is_file():
        return f"the best checkpoint {best} is kept (no last.ckpt yet to resume from)"
    return "no checkpoint had been written yet; earlier files are intact"
