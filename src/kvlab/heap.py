"""glibc's mmap threshold, which decides how much of a long CPU prefill stays resident.

glibc serves blocks under its mmap threshold from the heap and keeps them resident after they are
freed; it raises the threshold (up to 32 MiB on 64-bit) each time a larger mapped block is freed. A
long prefill frees many 1-32 MiB activations, so after the first ones its activations come from the
heap and its peak resident set grows by hundreds of MiB past what is live: on the embedded model at
8,000 tokens a one-pass prefill's peak RSS was 754-989 MiB for 574 MiB of live tensors, 565 MiB with a
fixed 1 MiB threshold (docs/performance.md). The price is page faults: every freed activation is
unmapped and the next one faults in fresh pages. On one long prompt that cost ~1% of the time
(`kvlab generate`, 6,530 tokens: peak RSS 1360 -> 1175 MiB, 57.3 -> 57.9 s), on the demo's sweep of
short prompts 11% (406 -> 453 s; system time 14 -> 61 s; peak RSS 4.56 -> 3.79 GB). So it is a choice,
not a default: call :func:`fix_mmap_threshold` (or start Python with ``MALLOC_MMAP_THRESHOLD_=1048576``,
which also reaches the ``kvlab`` commands) where resident memory matters more than those percent.
``kvlab bench`` runs every case with it, for peaks that follow the live tensors. Nothing happens off
glibc.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
FIXED_MMAP_THRESHOLD = 1 << 20
DYNAMIC_MAX = 32 << 20  # the most glibc's own dynamic threshold rises to on 64-bit
M_MMAP_THRESHOLD = -3  # mallopt's parameter number


def mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None elsewhere."""
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return None


def fix_mmap_threshold(nbytes: int = FIXED_MMAP_THRESHOLD) -> bool:
    """Fix this process's mmap threshold at ``nbytes`` (freed activations of that size and more leave
    the resident set) and export ``MALLOC_MMAP_THRESHOLD_`` so child processes start the same way.

    A threshold the user set through that variable is left alone (glibc applied it at start). Returns
    whether this call set it."""
    if os.environ.get(MMAP_THRESHOLD_ENV):
        return False
    call = mallopt()
    if call is None or not call(M_MMAP_THRESHOLD, nbytes):
        return False
    os.environ[MMAP_THRESHOLD_ENV] = str(nbytes)
    return True
