"""Two ``python run.py stage=ingest`` on one fresh output root at once, a killed run's stale lock,
``lock.wait=false``: the outputs always end up those of one clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_ELPV


def _start(root: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_OUTPUT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "run.py", "stage=ingest", "progress=false", "ingest.workers=1", *TINY_ELPV, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(p: subprocess.Popen) -> tuple[int, str]:
    out, _ = p.communicate(timeout=300)
    return p.returncode, out


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under the recipe's output folder; manifests without their write time."""
    files = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name == "manifest.json":
            d = json.loads(data)
            d.pop("created")
            data = json.dumps(d, sort_keys=True).encode()
        files[str(p.relative_to(out))] = data
    return files


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """One uninterrupted run; the tests move it aside and reuse its root path, so paths inside match."""
    root = tmp_path_factory.mktemp("locks") / "root"
    code, log = _finish(_start(root))
    assert code == 0, log[-3000:]
    snap = snapshot(root / "elpv_demo")
    shutil.rmtree(root)
    return root, snap


def test_two_runs_at_once_both_succeed_and_write_what_one_run_writes(single: tuple[Path, dict[str, bytes]]) -> None:
    root, want = single
    a, b = _start(root), _start(root)
    (ca, la), (cb, lb) = _finish(a), _finish(b)
    assert ca == 0 and cb == 0, (la[-3000:], lb[-3000:])
    waited = [log for log in (la, lb) if "is being written by another run" in log]
    assert len(waited) == 1, "exactly one run waits for the other"
    assert "waiting for it" in waited[0] and "pid " in waited[0]
    assert snapshot(root / "elpv_demo") == want
    assert not list((root / "elpv_demo").glob("*.lock*")), "locks are released"
    shutil.rmtree(root)


@pytest.mark.slow
def test_lock_left_by_a_killed_run_is_broken_with_a_warning(single: tuple[Path, dict[str, bytes]]) -> None:
    root, want = single
    p = _start(root)
    holder = root / "elpv_demo" / "ingest.lock.json"
    t0 = time.monotonic()
    while not holder.exists():
        assert p.poll() is None and time.monotonic() - t0 < 120, "the run never took its lock"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert holder.exists() and (root / "elpv_demo" / "ingest.lock").exists()
    code, log = _finish(_start(root))
    assert code == 0, log[-3000:]
    assert f"broke a stale lock on {root / 'elpv_demo' / 'ingest'} left by pid {p.pid}" in log
    assert snapshot(root / "elpv_demo") == want
    shutil.rmtree(root)


HOLD = """
import sys, time
from pathlib import Path
from pipeline.config.lock import LockConfig
from pipeline.core.lock import stage_lock
with stage_lock(Path(sys.argv[1]), "ingest", LockConfig()):
    Path(sys.argv[1] + ".held").write_text("1")
    time.sleep(300)
"""


@pytest.mark.slow
def test_no_wait_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "elpv_demo" / "ingest"
    a = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        while not Path(f"{folder}.held").exists():
            assert a.poll() is None
            time.sleep(0.05)
        code, log = _finish(_start(tmp_path, "lock.wait=false"))
    finally:
        a.kill()
        a.wait()
    assert code != 0 and f"being written by another run (pid {a.pid} on " in log and "lock.wait=false" in log
    assert not (folder / "manifest.json").exists()
