"""Limits ingest works within: time per file, space for shards.

A hostile file must not hang a shard (:func:`time_limit`), and a disk that
fills up must stop ingest with an error that says where and how much space is
needed (:class:`OutOfSpace`), not a bare ``OSError`` from deep in tarfile.
"""

from __future__ import annotations

import errno
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class OutOfSpace(OSError):
    """A shard could not be written for want of space; says where and about how much is needed."""

    def __init__(self, out_dir: Path, cause: OSError, need: int, shards_left: int) -> None:
        try:
            free = f"{shutil.disk_usage(out_dir).free:,} bytes are free there"
        except OSError:
            free = "the free space could not be read"
        what = {errno.EFBIG: "a file-size limit (ulimit -f) was hit", errno.EDQUOT: "the disk quota is exhausted"}
        super().__init__(
            cause.errno,
            f"ingest: out of space writing shards in {out_dir} "
            f"({what.get(cause.errno or 0, 'no space left on the device')}: {cause.strerror}, {cause.filename or ''}). "
            f"The shard being written was removed; {shards_left} shards are left to write, about {need:,} bytes "
            f"(their inputs' size; PNG-normalised images can be larger) and {free}. Free space or move "
            "paths.root, then re-run: finished shards are kept.",
        )
        self.out_dir, self.need, self.shards_left = out_dir, need, shards_left


class FileTimeout(BaseException):
    """Reading and decoding one file took longer than ``file_timeout_s``.

    A ``BaseException``, so the decoders' own ``except Exception`` cannot turn it into another reason.
    """


@contextmanager
def time_limit(seconds: float, key: str) -> Iterator[None]:
    """Raise :class:`FileTimeout` in the block after ``seconds`` (main thread only, else no limit).

    SIGALRM interrupts Python code between bytecodes, which covers PIL's decode
    loops (they feed the C decoder in chunks); a single C call that never
    returns is not interrupted.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _fire(*_: Any) -> None:
        raise FileTimeout(f"reading and decoding took over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
