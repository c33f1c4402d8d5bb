"""Small, bounded queries of the test cluster's job states (``scontrol``, no accounting DB)."""

from __future__ import annotations

import re
import subprocess
import time

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (the first record; a whole array shows its tasks)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"scontrol show job {job_id}: {out.stderr}")
    line = out.stdout.splitlines()[0]
    return dict(re.findall(r"(\S+?)=(\S*)", line))


def array_states(job_id: str) -> list[str]:
    """States of every record of a job (every task of an array)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=20)
    return re.findall(r"JobState=(\S+)", out.stdout)


def wait_final(job_id: str, timeout: float = 120) -> str:
    """Wait until every record of ``job_id`` is in a final state; returns the single state if they agree."""
    deadline = time.monotonic() + timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        states = array_states(job_id)
        if states and all(s in FINAL for s in states):
            return states[0] if len(set(states)) == 1 else ",".join(states)
        time.sleep(1)
    raise TimeoutError(f"job {job_id} not finished after {timeout}s: {states}")
