"""Keep freed CPU memory inside the process, so that big tensors stop costing page faults.

glibc's ``malloc`` serves every request above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` on free. A CPU training step allocates and frees
hundreds of activations of that size (a ViT-Tiny batch of 64 at 224 px has 77 MB MLP
activations), so each one is mapped anew and its pages are faulted in and zeroed by the
kernel on first touch: ``copy_`` and GELU ran 2-5x slower inside the step than on a reused
buffer. Turning ``mmap`` off for ordinary allocations and never trimming the heap makes freed
blocks reusable, the way PyTorch's CUDA caching allocator already works on the GPU
(``benchmarks/results/cpu_malloc.md``: about 1.3x on the CPU step).

The cost is that the process keeps its high-water mark of memory until it exits. glibc still
falls back to ``mmap`` when an arena cannot grow, so no allocation fails because of this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # an int: mallopt takes one


def keep_freed_memory() -> bool:
    """Tell glibc to reuse freed memory instead of unmapping it; True when it took effect.

    Idempotent (setting the same values again changes nothing), process-wide and inherited by
    forked data-loader workers. A no-op (False) off Linux or with a C library that is not glibc
    (musl has no ``mallopt``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1
    if ok:
        log.debug("glibc malloc: mmap off, trimming off (freed memory is reused)")
    return ok
