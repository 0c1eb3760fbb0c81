"""serve.malloc: a worker keeps the memory a large request freed, instead of faulting it in again next time."""

import subprocess
import sys

from serve import malloc

# In a child process: allocate and free an 8 MiB block (over glibc's default mmap threshold, under ours), then say
# how much of it the process still holds (resident kB from /proc/self/statm, after minus before the free).
_CHILD = """
import ctypes, sys
from serve.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def resident_kb():
    return int(open("/proc/self/statm").read().split()[1]) * 4
block = libc.malloc(8 << 20)
ctypes.memset(block, 1, 8 << 20)
held = resident_kb()
libc.free(block)
print(held - resident_kb())
"""


def _released_kb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_freed_large_blocks_stay_in_the_process():
    assert _released_kb("default") >= 7 * 1024  # glibc's default: the block goes back to the kernel at once
    assert _released_kb("keep") < 1024  # ours: it stays for the next request


def test_thresholds_cover_a_full_payload_and_stay_bounded():
    assert malloc.MMAP_THRESHOLD >= 6 * 1024 * 1024  # SageMaker's default payload limit (6 MB) stays on the heap
    assert malloc.TRIM_THRESHOLD <= 64 * 1024 * 1024
