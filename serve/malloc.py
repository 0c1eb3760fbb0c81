"""glibc's allocator, told to keep freed memory for the next request instead of handing it back to the kernel.

By default glibc gives large blocks back to the kernel as soon as they are freed (munmap, or a trim of the heap's
top), so each large request faults its pages in again: a 10,000-row CSV body was parsed a third slower in a worker
than in a loop. Fixed thresholds keep blocks up to MMAP_THRESHOLD on the heap and up to TRIM_THRESHOLD of free heap
in the process: a worker's memory stays at its
largest request's, up to these limits, instead of shrinking between requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest mallopt(3) documents for 64-bit systems
TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Sets the thresholds in this process (the workers it forks inherit them); False where the C library is not
    glibc."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
