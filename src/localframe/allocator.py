"""The process-wide memory allocator policy of the compute commands (``md``, ``train``, ``evaluate``).

By default glibc maps each allocation above a threshold (up to 32 MiB) afresh and unmaps it when
freed, so every large tensor of an energy + forces call page-faults its memory in again: system
time that grows faster than the system. :func:`tune` stops that for the rest of the process with
``mallopt(M_MMAP_MAX, 0)`` (serve everything from the heap) and ``mallopt(M_TRIM_THRESHOLD, -1)``
(never give heap memory back), trading a higher resident size for fewer page faults.

:func:`apply_default` is what the commands call: it tunes the allocator only when the user has not
configured one — no ``MALLOC_*`` / ``GLIBC_TUNABLES`` variable set, no ``LD_PRELOAD`` (jemalloc,
tcmalloc, ...), and ``LOCALFRAME_ALLOCATOR`` not ``default`` (the opt-out).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

OPT_OUT = "LOCALFRAME_ALLOCATOR"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def user_configured(environ: Mapping[str, str] | None = None) -> str | None:
    """The reason the allocator is left alone (an env variable name), or None to tune it."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "").strip().lower() in ("default", "off", "0", "no", "false"):
        return OPT_OUT
    for name in sorted(env):
        if name.startswith("MALLOC_") or name in ("GLIBC_TUNABLES", "LD_PRELOAD"):
            return name
    return None


def tune() -> bool:
    """Apply the tuned glibc settings for the rest of the process; False where it cannot (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    except (OSError, AttributeError):
        return False


def apply_default(environ: Mapping[str, str] | None = None) -> bool:
    """Tune the allocator unless the user configured one (see module doc). True if tuned."""
    if user_configured(environ) is not None:
        return False
    return tune()
