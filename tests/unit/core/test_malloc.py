"""keep_freed_memory: freed big blocks stay in the process instead of being unmapped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter: the malloc setting is process-wide and must not leak into other tests.
PROBE = textwrap.dedent(
    """
    import ctypes, os, sys
    from pipeline.core.malloc import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory() and keep_freed_memory()  # idempotent
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
    n = 64 * 2**20
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)  # fault every page in
    before = rss()
    libc.free(p)
    print((before - rss()) / 2**20)  # MiB given back to the OS by free()
    """
)


def _released_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_block_is_kept_for_reuse() -> None:
    # glibc's default serves 64 MiB with mmap and unmaps it on free: RSS drops by ~64 MiB
    assert _released_mib("system") > 60
    # with mmap off and trimming off the block stays mapped, ready for the next allocation
    assert _released_mib("keep") < 4
