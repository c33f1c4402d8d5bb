#!/usr/bin/env python
"""CPU training step with glibc's default malloc against ``keep_freed_memory()`` (pipeline/core/malloc.py).

Each measurement is a fresh process (malloc settings are process-wide), the two variants
alternate so that both see the same machine load, and every process times ``--steps`` steps
after one warm-up step on the same device-resident views. Also records each process's peak RSS.

    python benchmarks/cpu_malloc.py                  # LightlyTrain's settings and the CPU demo's
    python benchmarks/cpu_malloc.py --settings demo --reps 3

Results: ``benchmarks/results/cpu_malloc.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cpu_malloc"
# name: (timm model, vit kwargs, method, global px, local px, local crops, batch, out_dim)
SETTINGS = {
    "lightlytrain": ("vit_tiny_patch16_224", {}, "dino", 224, 96, 6, 64, 1024),
    "demo": ("vit_tiny_patch16_224", {"depth": 6}, "dinov2", 96, 48, 4, 16, 256),
}


def child(name: str, keep: bool, steps: int) -> dict:
    """One process: optionally switch malloc, then time ``steps`` training steps."""
    if keep:
        from pipeline.core.malloc import keep_freed_memory

        assert keep_freed_memory(), "mallopt failed"
    import torch
    from pretrain_throughput import make_method, train_step  # the throughput benchmark's model and step

    model, kw, method, g, lo, nl, batch, out_dim = SETTINGS[name]
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    m = make_method(model, g, method, out_dim, cpu, **kw)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    views = [torch.randn(batch, 3, g, g) for _ in range(2)] + [torch.randn(batch, 3, lo, lo) for _ in range(nl)]

    def step() -> None:
        train_step(m, opt, views, cpu, bf16=False)

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "settings": name,
        "malloc": "keep" if keep else "system",
        "step_s": times,
        "batch": batch,
        "images_per_s": batch / statistics.median(times),
        "peak_rss_gib": rss,
        "load": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="lightlytrain,demo")
    p.add_argument("--reps", type=int, default=2, help="processes per variant (alternating)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("SETTINGS", "MALLOC"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1] == "keep", a.steps)))
        return
    rows = []
    for name in a.settings.split(","):
        for rep in range(a.reps):
            for variant in ("system", "keep"):
                cmd = [sys.executable, __file__, "--child", name, variant, "--steps", str(a.steps)]
                out = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                ).stdout
                row = json.loads(out.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{name} {variant} rep {rep}: {row['images_per_s']:.2f} images/s, "
                    f"peak RSS {row['peak_rss_gib']:.2f} GiB, load {row['load'][0]:.1f}",
                    flush=True,
                )
    lines = [
        "# CPU training step: glibc's default malloc vs keep_freed_memory()",
        "",
        f"{platform.platform()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}; "
        f"{a.reps} fresh processes per variant, alternating; median of {a.steps} steps each after 1 warm-up step.",
        "",
        "| settings | malloc | images/s per process | median images/s | peak RSS GiB | load avg (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    summary = {}
    for name in a.settings.split(","):
        for variant in ("system", "keep"):
            rs = [r for r in rows if r["settings"] == name and r["malloc"] == variant]
            ips = [r["images_per_s"] for r in rs]
            loads = ", ".join(f"{r['load'][0]:.1f}" for r in rs)
            summary[f"{name}/{variant}"] = statistics.median(ips)
            lines.append(
                f"| {name} | {variant} | {', '.join(f'{x:.2f}' for x in ips)} | {statistics.median(ips):.2f} | "
                f"{max(r['peak_rss_gib'] for r in rs):.2f} | {loads} |"
            )
        lines.append(
            f"| {name} | **speed-up** | | **{summary[f'{name}/keep'] / summary[f'{name}/system']:.2f}x** | | |"
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).with_suffix(".json").write_text(
        json.dumps({"settings": SETTINGS, "rows": rows, "summary": summary}, indent=2) + "\n"
    )
    Path(a.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
