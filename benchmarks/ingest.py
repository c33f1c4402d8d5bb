#!/usr/bin/env python
"""Ingest throughput (images/s) and peak memory on the ELPV demo pool.

Each configuration runs :func:`pipeline.io.ingest.ingest` in a fresh child
process writing to an empty folder, so nothing is cached between runs. Memory
is sampled from ``/proc`` every 20 ms over the child and all its descendants
(the worker processes): ``peak_rss_total_mib`` is the largest sum seen,
``peak_rss_max_process_mib`` the largest single process (``ru_maxrss`` of the
child and of its reaped workers). Pages shared after ``fork`` are counted in
every process that maps them, so the total overstates real use somewhat.

    python benchmarks/ingest.py                       # demo pool, 1 and 2 workers
    python benchmarks/ingest.py --pool /data/imgs --workers 1 2 4

Writes ``benchmarks/results/ingest.json`` and ``benchmarks/results/ingest.md``.
The machine's load average is recorded with the figures: on shared cores,
numbers taken under load understate what the code can do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

_CHILD = """
import json, resource, sys, time
from pipeline.config.ingest import IngestConfig
from pipeline.io.ingest import ingest
t = time.perf_counter()
res = ingest([sys.argv[1]], sys.argv[2], IngestConfig(shard_size=int(sys.argv[4]), workers=int(sys.argv[3])),
             progress=False)
seconds = time.perf_counter() - t
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "counts": res.counts, "reasons": res.reasons,
                  "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                  "maxrss_kib": max(me.ru_maxrss, kids.ru_maxrss)}))
"""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _run_one(pool: Path, workers: int, shard_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(pool), str(Path(tmp) / "out"), str(workers), str(shard_size)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], sum(_rss_kib(p) for p in _descendants(proc.pid)))
                time.sleep(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        out, _ = proc.communicate()
        th.join()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"ingest with {workers} workers failed (exit {proc.returncode})")
        res = json.loads(out.strip().splitlines()[-1])
        n = res["counts"]["inputs"]
        return {
            "workers": workers,
            "inputs": n,
            "accepted": res["counts"]["accepted"],
            "ingest_seconds": round(res["seconds"], 2),
            "process_seconds": round(wall, 2),
            "images_per_s": round(n / res["seconds"], 1),
            "cpu_seconds": round(res["cpu"], 2),
            # Wall-clock throughput depends on what else the cores run; this does not.
            "images_per_cpu_s": round(n / res["cpu"], 1),
            "peak_rss_total_mib": round(peak[0] / 1024, 1),
            "peak_rss_max_process_mib": round(res["maxrss_kib"] / 1024, 1),
        }


def _demo_pool() -> Path:
    root = Path(os.environ.get("PIPELINE_OUTPUT_ROOT", ROOT / "outputs"))
    pool = root / "elpv_demo" / "recipe" / "pool"
    if pool.is_dir():
        return pool
    sys.exit(f"{pool} does not exist: run `python run.py stage=ingest` first, or pass --pool")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=Path, default=None, help="folder of images (default: the demo pool)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    pool = args.pool or _demo_pool()
    load_before = os.getloadavg()
    rows = [_run_one(pool, w, args.shard_size) for w in args.workers]
    result = {
        "benchmark": "ingest",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "pool": str(pool),
        "shard_size": args.shard_size,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Ingest benchmark ({result['date']})",
        "",
        f"Pool: `{pool}` ({rows[0]['inputs']} files), shard size {args.shard_size}, "
        f"{result['machine']['cpus']} CPUs, load average {load_before[0]:.1f} before / "
        f"{result['machine']['loadavg_1m_after']:.1f} after.",
        "",
        "| workers | inputs | accepted | seconds | images/s | CPU s | images/CPU-s | peak RSS, all processes (MiB) "
        "| peak RSS, one process (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['inputs']} | {r['accepted']} | {r['ingest_seconds']} | {r['images_per_s']} | "
            f"{r['cpu_seconds']} | {r['images_per_cpu_s']} | {r['peak_rss_total_mib']} | "
            f"{r['peak_rss_max_process_mib']} |"
        )
    (args.out / "ingest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
