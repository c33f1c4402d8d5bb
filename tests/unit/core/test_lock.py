"""Stage locks between real processes: wait, fail at once, take over from a dead or silent holder."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config.lock import LockConfig
from pipeline.core.lock import StageLocked, lock_paths, read_holder, stage_lock
from tests.conftest import ROOT

HOLD = """
import logging, sys, time
from pathlib import Path
from pipeline.config.lock import LockConfig
from pipeline.core.lock import stage_lock
logging.basicConfig(level=logging.INFO)
folder, seconds, stale = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
with stage_lock(folder, "ingest", LockConfig(stale_minutes=stale)):
    logging.getLogger("pipeline.stages.ingest").info("ingest/pool: shard 3 of 7")
    (folder.parent / "held").write_text("1")
    time.sleep(seconds)
    (folder.parent / "finished").write_text("1")
"""


def _holder(folder: Path, seconds: float, stale: float = 10.0) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds), str(stale)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    t0 = time.monotonic()
    while not (folder.parent / "held").exists():
        assert p.poll() is None and time.monotonic() - t0 < 60, "holder did not start"
        time.sleep(0.05)
    return p


def test_second_run_waits_for_the_holder_and_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "ingest"
    p = _holder(folder, 4.0)
    holder = read_holder(folder)
    assert holder is not None and holder["pid"] == p.pid
    while (read_holder(folder) or {}).get("progress") != "ingest/pool: shard 3 of 7":  # next heartbeat
        assert p.poll() is None, "holder file never showed the progress hint"
        time.sleep(0.1)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO), stage_lock(folder, "ingest", LockConfig()):
        waited = time.monotonic() - t0
        assert (tmp_path / "finished").exists(), "got the lock while the holder still ran"
    assert waited > 0.5
    assert f"pid {p.pid} on " in caplog.text and "shard 3 of 7" in caplog.text and "waiting" in caplog.text
    assert "stale" not in caplog.text  # a clean release leaves nothing to break
    assert not any(x.exists() for x in lock_paths(folder))


def test_no_wait_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "curate"
    p = _holder(folder, 30.0)
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(StageLocked, match=rf"pid {p.pid} on .*started .*lock.wait=false"),
            stage_lock(folder, "curate", LockConfig(wait=False)),
        ):
            pass
        assert time.monotonic() - t0 < 5
    finally:
        p.kill()
        p.wait()


def test_lock_of_a_killed_run_is_broken_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "eval"
    p = _holder(folder, 60.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert all(x.exists() for x in lock_paths(folder)), "a killed holder leaves its lock"
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING), stage_lock(folder, "eval", LockConfig()):
        assert read_holder(folder)["pid"] == os.getpid()
    assert time.monotonic() - t0 < 10  # same host: the dead pid is seen at once, no stale_minutes wait
    assert f"broke a stale lock on {folder} left by pid {p.pid}" in caplog.text


def test_a_holder_without_heartbeat_is_taken_over_after_stale_minutes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A stopped process is alive but silent, as a holder on another host whose pid we cannot check.
    folder = tmp_path / "pretrain"
    stale = 2.0 / 60  # 2 s
    p = _holder(folder, 60.0, stale=stale)
    os.kill(p.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING), stage_lock(folder, "pretrain", LockConfig(stale_minutes=stale)):
            waited = time.monotonic() - t0
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert 1.5 < waited < 30
    assert "broke a stale lock" in caplog.text and f"pid {p.pid}" in caplog.text


def test_other_ranks_of_a_job_do_not_take_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pretrain"
    monkeypatch.setenv("LOCAL_RANK", "1")
    with stage_lock(folder, "pretrain", LockConfig()):
        assert not any(x.exists() for x in lock_paths(folder))
    monkeypatch.setenv("LOCAL_RANK", "0")
    with stage_lock(folder, "pretrain", LockConfig()):
        assert all(x.exists() for x in lock_paths(folder))
