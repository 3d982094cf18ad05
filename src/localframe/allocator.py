"""The process-wide memory allocator policy of the compute commands (``md``, ``train``, ``evaluate``).

glibc's malloc maps each allocation above a threshold afresh and unmaps it when freed; the threshold
starts at 128 KiB and only creeps up (to at most 32 MiB) as mapped blocks are freed, so the first
calls page-fault much of their memory in again. :func:`tune` (the ``bounded`` policy) fixes the
threshold at that maximum, 32 MiB, from the start: smaller blocks — every tensor of a molecule or a
training batch, every chunk of a large call (:mod:`localframe.nn.chunking`) — are reused from the
heap, which is trimmed only when more than 128 MiB lie free at its top; larger blocks (the per-atom
tensors of a 10⁵-atom call) stay mapped and go back to the system when freed.

The ``heap`` policy (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, -1)``: everything from a
heap that is never trimmed) was this module's policy before; it saves the page faults of the large
blocks too (7 % of the CPU time of the call below), but freed blocks of many sizes fragment a heap
that never shrinks: LEFTNet's energy + forces at 97,336 Si atoms needs 11.1 GiB resident with it
against 6.6 GiB with glibc's default (docs/benchmarks.md, "Large systems"); at 10⁴ atoms and below
the policies do not differ measurably. ``localframe bench --allocator tuned`` still measures it.

:func:`apply_default` is what the commands call: it tunes the allocator only when the user has not
configured one — no ``MALLOC_*`` / ``GLIBC_TUNABLES`` variable set, no ``LD_PRELOAD`` (jemalloc,
tcmalloc, ...), and ``LOCALFRAME_ALLOCATOR`` not ``default`` (the opt-out).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

OPT_OUT = "LOCALFRAME_ALLOCATOR"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
#: mallopt settings of each policy (parameter, value); see the module doc.
POLICIES = {
    "bounded": ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 128 << 20)),
    "heap": ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)),
}


def user_configured(environ: Mapping[str, str] | None = None) -> str | None:
    """The reason the allocator is left alone (an env variable name), or None to tune it."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "").strip().lower() in ("default", "off", "0", "no", "false"):
        return OPT_OUT
    for name in sorted(env):
        if name.startswith("MALLOC_") or name in ("GLIBC_TUNABLES", "LD_PRELOAD"):
            return name
    return None


def tune(policy: str = "bounded") -> bool:
    """Apply a policy's glibc settings for the rest of the process; False where it cannot (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([bool(libc.mallopt(parameter, value)) for parameter, value in POLICIES[policy]])
    except (OSError, AttributeError):
        return False


def apply_default(environ: Mapping[str, str] | None = None) -> bool:
    """Tune the allocator unless the user configured one (see module doc). True if tuned."""
    if user_configured(environ) is not None:
        return False
    return tune()
