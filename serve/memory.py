"""Memory for the multi-model registry: what a model keeps, a first guess from its files, and handing freed memory back.

A model's memory is measured on the model's own objects, not as the growth of the process while it loads: requests
served meanwhile allocate in the same heap, and no process-wide figure (the resident set, malloc's statistics,
tracemalloc) can tell their memory from the model's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import BuiltinFunctionType, CodeType, FrameType, FunctionType, MethodType, ModuleType

import numpy as np

# Objects a model refers to but shares with the whole program: the walk counts them for no model and stops there.
SHARED = (ModuleType, type, FunctionType, BuiltinFunctionType, MethodType, CodeType, FrameType)


def _glibc():
    """glibc's malloc_trim, or None (musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def return_free_memory() -> None:
    """Hand the heap that freed objects leave back to the system, so that the resident set shrinks."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def directory_bytes(path: Path) -> int:
    """Size of the files under a model directory: the first guess at a model's memory, before it is measured."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def object_bytes(roots: Iterable, native: Callable[[object], int] = lambda obj: 0) -> int:
    """Bytes of the objects reachable from `roots`, each counted once: sys.getsizeof of each (a numpy array's includes
    the data it owns; a view leads to its base) and the memory outside Python objects that `native` reports for it (a
    library's model). Modules, classes and functions are the program's: the walk does not enter them. Approximate:
    malloc's own overhead is not counted, and an object the model shares with the rest of the program (a cached
    string, a registry of the program's it points to) is counted as the model's."""
    seen, stack, total = set(), list(roots), 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj, 0) + native(obj)
        stack.extend(gc.get_referents(obj))
        if isinstance(obj, np.ndarray) and obj.base is not None:
            stack.append(obj.base)
    return total
