"""Give the C heap's free pages back to the kernel after the daemon's known transient peaks.

Contract: `release_free_memory()` asks glibc to return every whole free page of its heaps
(malloc_trim(3)) and says whether it could ask; elsewhere (musl, no libc found) it does
nothing. Why: glibc gives memory back on its own only from the top of its heap, so what a
short-lived peak took below live allocations stays in the daemon's RSS for good. A drift
reconcile builds an index of every policy and reads both dumps (1.5-1.8 MB at 900 Child
SAs, issue 15), and a reload parses the whole configuration: the daemon calls this after each.
Python's small objects live in pymalloc's own arenas, which it frees once empty and otherwise
reuses, so only the allocations past its 512-byte limit (dict tables, datagrams) are concerned.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the C library it runs on
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Return the heaps' free pages to the kernel; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
