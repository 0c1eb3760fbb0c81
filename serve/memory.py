"""Memory probes for the multi-model registry: resident set, glibc's heap in use, and handing free memory back."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

MEMORY_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc():
    """glibc's allocator statistics and trim, or None (musl, or glibc older than 2.33): the resident set alone."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * MEMORY_PAGE_BYTES


def heap_bytes() -> int:
    """Bytes malloc has handed out and not yet had back (small blocks and mmapped ones)."""
    if _LIBC is None:
        return 0
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


def return_free_memory() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def directory_bytes(path: Path) -> int:
    """Size of the files under a model directory: the first guess at a model's memory, before it is measured."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
