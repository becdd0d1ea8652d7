"""glibc malloc settings that let a CPU process reuse the memory of its large tensors (`keep_freed_memory`).

By default glibc gives every block of 32 MB or more its own mmap and unmaps it on free, and gives the free
memory at the top of the heap back to the system beyond 128 KB. Tensors that big are common here (an NB101
activation at batch 64 is 33.5 MB; Theta's per-image gradients come in 64 MB chunks), so every pass had the
kernel map and zero its memory again, page by page: on the NB101 HNAS metric set that was a third of the time
(docs/metrics.md, "Speed and memory"). With mmap off and a 2 GB trim threshold, freed blocks stay in the heap
and the next tensor of that size reuses them. Values do not change: only where the memory comes from.

The cost is a resident size that stays at the process's peak (NB101's HNAS set peaks at some 14 GB on its
largest cells), so `release_freed_memory` gives the free memory back between architectures when more than
2 GB of it is free: reuse across the passes of one architecture is where the time went. A user's own
`MALLOC_MMAP_MAX_` or `MALLOC_TRIM_THRESHOLD_` (glibc's environment variables) is left as it is.
"""

import ctypes
import ctypes.util
import functools
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int
KEEP_BYTES = 2**31  # free memory kept between architectures (release_freed_memory)
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache  # find_library runs ldconfig: once per process, not once per architecture
def _libc():
    """The C library where it is glibc, else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def keep_freed_memory():
    """Set glibc's malloc to keep and reuse freed memory in this process; True when it was set. Does nothing
    (False) on another C library or where the user set glibc's malloc variables."""
    libc = _libc()
    if libc is None or any(name in os.environ for name in USER_SETTINGS):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


class _MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _free_heap_bytes(libc):
    """Bytes free in the heap, or None where glibc cannot say."""
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().fordblks


def release_freed_memory(keep_bytes=KEEP_BYTES):
    """Give the heap's free memory back to the system (glibc's malloc_trim) when more than `keep_bytes` of it
    is free; True when some was given back. Below that the memory stays for the next architecture: trimming
    costs a madvise now and a page fault per page later (NB201's HNAS set leaves some 1.3 GB)."""
    libc = _libc()
    if libc is None:
        return False
    free = _free_heap_bytes(libc)
    if free is not None and free <= keep_bytes:
        return False
    return bool(libc.malloc_trim(0))
