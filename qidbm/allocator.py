"""Keep freed large blocks in the process heap (glibc), so big per-batch buffers are not re-faulted.

glibc serves every allocation above its mmap threshold (128 KiB, raised dynamically up to 32 MiB)
with a fresh ``mmap`` and returns it with ``munmap`` when freed. The FID Inception on a CPU
allocates activation buffers of up to ~280 MB per batch of 50 images, so each batch maps, zero-fills
(one page fault per 4 KiB page) and unmaps them again: a quarter of its CPU time went to the kernel.
Raising the mmap and trim thresholds to 1 GiB keeps those blocks in the heap for the next batch.

The ``qidbm`` command calls :func:`reuse_freed_memory` before torch is imported, the FID feature
module for library users. ``QIDBM_DEFAULT_MALLOC=1`` in the environment leaves glibc's defaults
(for comparisons: ``bench/fid_speed.py``; or to return memory to the system sooner).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["reuse_freed_memory", "DEFAULT_MALLOC_ENV"]

DEFAULT_MALLOC_ENV = "QIDBM_DEFAULT_MALLOC"

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30
_done: bool | None = None


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process (once; later calls are free).

    Returns whether the setting took effect: False off Linux/glibc (macOS, Windows, musl) and when
    ``$QIDBM_DEFAULT_MALLOC`` is 1, where nothing is changed. The cost is memory held after a peak:
    freed blocks below 1 GiB stay in the heap instead of going back to the system.
    """
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux") and os.environ.get(DEFAULT_MALLOC_ENV, "0") != "1":
            try:
                libc = ctypes.CDLL("libc.so.6")  # glibc's soname (musl has none)
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _done
