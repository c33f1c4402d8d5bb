#!/usr/bin/env python
"""Run the pretrain stage for several override sets in parallel processes (hyper-parameter sweeps).

    python experiments/pretrain_sweep_driver.py --root /tmp/sweep --jobs 4 \
        --run 'a:seed=0 pretrain.trainer.max_epochs=2' --run 'b:seed=0 pretrain.optim.lr=1e-2'

Each run gets its own output root ``<root>/<name>`` holding a copy (symlinks) of ``--data``
(``<recipe>/ingest/eval`` and ``<recipe>/curate/shards``). The stage is called directly
(no MLflow, no ingest/curate), so this only needs the pretrain dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def child(root: str, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from pipeline.config import register_configs
    from pipeline.stages import pretrain

    register_configs()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={root}", "tracking=off", "progress=false", *overrides])
    t0 = time.time()
    m = pretrain.run(cfg)
    print("RESULT", json.dumps({"wall_s": time.time() - t0, **m.metrics, "steps": m.counts["steps"]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--data", default="")
    p.add_argument("--recipe", default="elpv_demo")
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--run", action="append", default=[], help="name:overrides")
    p.add_argument("--child", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.child is not None:
        child(a.root, a.child)
        return
    pending = [r.split(":", 1) for r in a.run]
    running: list[tuple[str, subprocess.Popen, float]] = []
    results = {}
    while pending or running:
        while pending and len(running) < a.jobs:
            name, ov = pending.pop(0)
            out = Path(a.root) / name
            (out / a.recipe).mkdir(parents=True, exist_ok=True)
            for sub in ("ingest", "curate", "recipe"):
                src = Path(a.data) / a.recipe / sub
                if src.exists() and not (out / a.recipe / sub).exists():
                    (out / a.recipe / sub).symlink_to(src.resolve())
            env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONUNBUFFERED": "1"}
            log = open(out / "log.txt", "w")  # noqa: SIM115 - the child process writes it
            cmd = [sys.executable, __file__, "--root", str(out), "--child", *shlex.split(ov)]
            running.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(2)
        for r in list(running):
            if r[1].poll() is not None:
                running.remove(r)
                txt = (Path(a.root) / r[0] / "log.txt").read_text()
                res = [ln for ln in txt.splitlines() if ln.startswith("RESULT ")]
                results[r[0]] = json.loads(res[-1][7:]) if res else {"error": txt[-1500:]}
                print(r[0], json.dumps(results[r[0]]), flush=True)
    Path(a.root, "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
