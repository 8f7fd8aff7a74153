"""glibc malloc thresholds for processes that decode clips.

The per-clip buffers (decoder frame pool, RGB frames, the clip) are allocated and freed on every read. glibc's
dynamic thresholds follow what the process allocated before; in some allocation histories the freed heap top is
returned to the kernel after every read and faulted back in on the next: measured ~1700 page faults and ~5 ms of
system time a clip (a quarter of its cost) at 320x240 in a loop that reads and resizes, 190-260 faults in the
dataset path. Fixing the thresholds once per process means no history leads there: 0-50 faults a clip.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_MAX_MMAP_THRESHOLD_MB = 32  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
_malloc_tuned: dict[int, int] = {}  # process id -> retain_freed_mb applied in that process


def retain_freed_memory(megabytes: int) -> bool:
    """Have glibc keep up to ``megabytes`` MB of freed heap in this process instead of returning it to the kernel.

    Sets ``M_TRIM_THRESHOLD`` to ``megabytes`` and ``M_MMAP_THRESHOLD`` to half of it (at most 32 MB), which also
    turns off glibc's dynamic thresholds: buffers up to that size come from the heap and are reused read after read.
    Process-wide and applied once per process (the reader calls it in each DataLoader worker).

    Returns:
        True when applied (now or earlier in this process), False on a C library other than glibc.
    """
    pid = os.getpid()
    if _malloc_tuned.get(pid) == megabytes:
        return True
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):  # no such confstr name: not glibc
        return False
    libc = ctypes.CDLL("libc.so.6")
    mmap_mb = min(max(megabytes // 2, 1), _MAX_MMAP_THRESHOLD_MB)
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, megabytes << 20)
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20)
    if not (trim_ok and mmap_ok):
        raise RuntimeError(f"glibc mallopt refused trim threshold {megabytes} MB / mmap threshold {mmap_mb} MB")
    _malloc_tuned[pid] = megabytes
    return True
