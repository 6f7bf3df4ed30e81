"""Process-wide settings for a long batch job: malloc's thresholds, and one BLAS thread.

glibc's malloc serves a large block (a NumPy array) from mmap and gives it back to the
system when freed, but after the first such free it raises its threshold to that block's
size, and from then on serves blocks up to 32 MB from the heap, which it rarely gives back.
A run that fits the vocabulary frees several hundred MB of such blocks (term counts, the
SVD's work arrays) before the ranking starts; with the sliding threshold most of it stayed
resident for the rest of the run (about 300 MB at 20,000 papers). A fixed threshold keeps
large blocks on mmap, so freed means returned.

The threshold is 1 MB rather than glibc's starting 128 KB: below it sit the many short-lived
mid-sized blocks of a run (a compressor's state, the per-reader score rows), which an mmap and
munmap each would make several times slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_FROM = 1 << 20
# Free memory at the top of the heap is given back beyond this much (glibc's default, 128 KB,
# would have the heap shrink and grow again for every compressor's state).
TRIM_ABOVE = 16 << 20


def return_freed_memory() -> bool:
    """Fix malloc's thresholds where the C library is glibc; elsewhere a no-op. True if set."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_FROM)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_ABOVE)
    )


# Read by OpenBLAS (and OpenMP, MKL) when NumPy loads it.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """One BLAS thread per process unless the operator set a number: must run before NumPy is
    imported. A run's products are small (a batch of readers' directions against the listing,
    one reader's picks) and the run is already parallel over processes; OpenBLAS's extra
    thread per process only spun against the other planners and the sender for a core: with
    one, a run of 2,000 readers in one process took about a fifth less CPU time."""
    if any(name in os.environ for name in BLAS_THREADS):
        return  # the operator's choice, whichever library it names
    for name in BLAS_THREADS:
        os.environ[name] = "1"
