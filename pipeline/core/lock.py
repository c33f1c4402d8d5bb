"""One writer per stage folder: a lock next to the folder, with a holder others can read.

Two runs on one output root (a run started twice, a sweep of ``stage=all``
jobs sharing ``paths.root``) must not write one stage folder at the same time:
the second would delete or half-read what the first is writing. Before a stage
runs, :func:`stage_lock` takes ``<folder>.lock``; a second run waits for it
(``lock.wait=true``, the default) or fails at once naming the holder.

The lock is filelock's :class:`~filelock.SoftFileLease`: an existence marker
made with ``O_CREAT | O_EXCL``, which NFS (v3 and later) and Lustre honour
without ``flock`` support, refreshed by a heartbeat thread. A holder that died
on this host is recognised at once (its pid is gone) and its lock taken over; a
holder on another host, where a pid means nothing, counts as dead once its
marker has not been refreshed for ``lock.stale_minutes``. Either way the run
that takes the lock over logs a warning naming the holder it replaced.

Next to the marker, ``<folder>.lock.json`` says who holds the lock: host, pid,
command, start time, last heartbeat and the holder's last log line (a progress
hint). It is written after the lock is taken and removed before it is released,
so one found by a run that has just taken the lock was left by a run that died.

Ranks of one distributed job (``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID``
other than 0) work on one stage together: only rank 0 takes the lock, the
others would otherwise wait for their own job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import SoftFileLease, Timeout

from pipeline.config.lock import LockConfig
from pipeline.core.manifest import atomic_write_json

log = logging.getLogger(__name__)

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")


class StageLocked(RuntimeError):
    """Another live run holds the stage folder and ``lock.wait`` is false."""


def lock_paths(folder: Path) -> tuple[Path, Path]:
    """The lock marker and the holder file of ``folder``."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".lock"), folder.with_name(folder.name + ".lock.json")


def read_holder(folder: Path) -> dict[str, Any] | None:
    """What ``<folder>.lock.json`` says about the holder, or ``None``."""
    try:
        return json.loads(lock_paths(folder)[1].read_text())
    except (OSError, ValueError):
        return None


def describe(holder: dict[str, Any] | None, marker: Any = None) -> str:
    """One line naming a holder: host, pid, start time, heartbeat age and progress hint."""
    if holder is None:
        if marker is not None:
            return f"pid {marker.pid} on {marker.hostname}"
        return "another run (no holder file yet)"
    age = time.time() - float(holder.get("heartbeat_unix", 0))
    parts = [
        f"pid {holder.get('pid')} on {holder.get('host')}",
        f"started {holder.get('started')}",
        f"last heartbeat {age:.0f} s ago",
    ]
    if holder.get("progress"):
        parts.append(f"last step: {holder['progress']!r}")
    if holder.get("command"):
        parts.append(f"command: {holder['command']}")
    return ", ".join(parts)


def is_secondary_rank() -> bool:
    """True in a process of a distributed job that is not its rank 0."""
    return any(os.environ.get(v, "0") not in ("", "0") for v in RANK_VARIABLES)


class _LastLine(logging.Handler):
    """Keeps the newest INFO line of the pipeline's loggers, the holder's progress hint."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a bad log call must not break the heartbeat
            self.line = record.getMessage()[:300]


class _Holder(threading.Thread):
    """Writes the holder file now, at every heartbeat and when the progress hint changes, until stopped."""

    def __init__(self, path: Path, what: str, every: float, check_s: float = 2.0) -> None:
        super().__init__(name=f"lock-heartbeat:{what}", daemon=True)
        self.path, self.every, self.check_s, self._halt = path, every, min(check_s, every), threading.Event()
        self.lines = _LastLine()
        now = datetime.now(UTC)
        self.info = {
            "stage": what,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now.isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }

    def beat(self) -> None:
        self.written = (time.monotonic(), self.lines.line)
        now = time.time()
        info = {
            **self.info,
            "heartbeat": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "heartbeat_unix": now,
            "progress": self.lines.line,
        }
        try:
            atomic_write_json(self.path, info)
        except OSError as e:  # a full disk must not kill the run that holds the lock
            log.warning("lock: could not update %s: %s", self.path, e)

    def run(self) -> None:
        while not self._halt.wait(self.check_s):
            if time.monotonic() - self.written[0] >= self.every or self.lines.line != self.written[1]:
                self.beat()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@contextmanager
def stage_lock(
    folder: Path, what: str, cfg: LockConfig, poll_s: float = 1.0, report_every_s: float = 60.0
) -> Iterator[None]:
    """Hold the lock of ``folder`` while the block runs.

    Args:
        folder: The stage folder; the lock is ``<folder>.lock`` next to it.
        what: Stage name for messages.
        cfg: See :class:`LockConfig`.
        poll_s: Seconds between attempts while waiting.
        report_every_s: Seconds between "still waiting" log lines.

    Raises:
        StageLocked: when another live run holds it and ``cfg.wait`` is false.
    """
    if not cfg.enabled or is_secondary_rank():
        yield
        return
    if cfg.stale_minutes <= 0:
        raise ValueError(f"lock.stale_minutes must be > 0, got {cfg.stale_minutes}")
    marker, holder_file = lock_paths(folder)
    marker.parent.mkdir(parents=True, exist_ok=True)
    lease_s = 60.0 * cfg.stale_minutes
    lock = SoftFileLease(
        str(marker),
        lease_duration=lease_s,
        on_compromise=lambda c: log.error(
            "%s: lost the lock %s (%s): another run may now write %s", what, marker, c, folder
        ),
    )
    _acquire(lock, folder, what, cfg, poll_s, report_every_s)
    try:
        left = read_holder(folder)
        if left is not None and (left.get("pid"), left.get("host")) != (os.getpid(), socket.gethostname()):
            log.warning(
                "%s: broke a stale lock on %s left by %s (the process is gone or sent no heartbeat for %g min)",
                what,
                folder,
                describe(left),
                cfg.stale_minutes,
            )
        holder = _Holder(holder_file, what, every=min(30.0, lease_s / 3))
        pipeline_log = logging.getLogger("pipeline")
        pipeline_log.addHandler(holder.lines)
        holder.beat()
        holder.start()
        try:
            yield
        finally:
            holder.stop()
            pipeline_log.removeHandler(holder.lines)
            holder_file.unlink(missing_ok=True)
    finally:
        lock.release()


def _acquire(
    lock: SoftFileLease, folder: Path, what: str, cfg: LockConfig, poll_s: float, report_every_s: float
) -> None:
    try:
        lock.acquire(blocking=False)
        return
    except Timeout:
        pass
    who = describe(read_holder(folder), _marker_owner(lock))
    if not cfg.wait:
        raise StageLocked(
            f"{what}: {folder} is being written by another run ({who}). lock.wait=false, so not waiting; "
            f"re-run when it has finished, or with lock.wait=true to wait for it. A holder that died is "
            f"detected (same host at once, else after lock.stale_minutes={cfg.stale_minutes:g} without heartbeat)."
        )
    log.warning(
        "%s: %s is being written by another run (%s); waiting for it (lock.wait=false fails at once instead)",
        what,
        folder,
        who,
    )
    t0 = last = time.monotonic()
    while True:
        try:
            lock.acquire(timeout=poll_s)
            log.info("%s: got the lock on %s after %.0f s", what, folder, time.monotonic() - t0)
            return
        except Timeout:
            if time.monotonic() - last >= report_every_s:
                last = time.monotonic()
                log.info(
                    "%s: still waiting for %s (%s)", what, folder, describe(read_holder(folder), _marker_owner(lock))
                )


def _marker_owner(lock: SoftFileLease) -> Any:
    try:
        return lock.owner
    except Exception:  # noqa: BLE001 - only a hint for the message
        return None
