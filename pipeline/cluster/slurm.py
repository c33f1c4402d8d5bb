"""Bounded queries of Slurm job states with ``scontrol`` (works without an accounting DB)."""

from __future__ import annotations

import re
import subprocess
import time

FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def job_records(job_id: str) -> list[dict[str, str]]:
    """``scontrol -o show job <id>``: one dict per record (an array shows each task).

    Returns ``[]`` once Slurm has forgotten the job (after ``MinJobAge``).
    """
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return []
        raise RuntimeError(f"scontrol show job {job_id}: {out.stderr.strip()}")
    return [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.stdout.splitlines() if line.strip()]


def job_info(job_id: str) -> dict[str, str]:
    """The first record of ``job_id``."""
    recs = job_records(job_id)
    if not recs:
        raise RuntimeError(f"Slurm does not know job {job_id}")
    return recs[0]


def states(job_id: str) -> list[str]:
    """``JobState`` of every record of a job."""
    return [r.get("JobState", "UNKNOWN") for r in job_records(job_id)]


def wait_final(job_id: str, timeout: float = 3600, poll_s: float = 1.0) -> str:
    """Wait until every record of ``job_id`` is final; the state (``A,B`` when tasks differ).

    A job held by a dependency that can never be met (``DependencyNeverSatisfied``)
    counts as final: it will never run.
    """
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        recs = job_records(job_id)
        seen = [r.get("JobState", "UNKNOWN") for r in recs]
        if recs and all(s in FINAL for s in seen):
            uniq = sorted(set(seen))
            return uniq[0] if len(uniq) == 1 else ",".join(uniq)
        if recs and all(r.get("Reason") == "DependencyNeverSatisfied" for r in recs):
            return "DEPENDENCY_NEVER_SATISFIED"
        time.sleep(poll_s)
    raise TimeoutError(f"job {job_id} not finished after {timeout}s: {seen}")
