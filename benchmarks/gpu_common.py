"""Shared bits of the GPU benchmarks: device naming, timing, result files.

Every benchmark writes ``<out>/<name>_<device-slug>.json`` (all parameters,
the device name, library versions, the figures) and a markdown table next to
it, so results from different machines sit side by side in
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: import this checkout's pipeline, not an installed one
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def parse_args(ap: argparse.ArgumentParser, small_help: str, small_defaults: dict[str, Any]) -> argparse.Namespace:
    """Add the options every GPU benchmark shares, apply the ``--small`` CPU preset, parse.

    The preset only changes defaults, so explicit flags still win; ``--threads`` sets torch's
    CPU threads.
    """
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--small", action="store_true", help=f"CPU preset: {small_help}")
    ap.add_argument("--out-dir", default=None, help="default benchmarks/results")
    ap.add_argument("--tag", default=None, help="suffix of the result file names")
    if ap.parse_known_args()[0].small:
        ap.set_defaults(**small_defaults)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return dev


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_model()


def device_slug(dev: torch.device) -> str:
    """``cpu`` or the GPU's name in file-name form, e.g. ``nvidia-h100-80gb-hbm3``."""
    if dev.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(dev).lower()).strip("-")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], dev: torch.device, iters: int, warmup: int = 1) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls, synchronising the device."""
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / iters


def environment(dev: torch.device) -> dict[str, Any]:
    import torchvision

    env: dict[str, Any] = {
        "device": str(dev),
        "device_name": device_name(dev),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return env


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(c for r in rows for c in r))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    dev: torch.device,
    params: dict[str, Any],
    results: dict[str, Any],
    rows: list[dict[str, Any]],
    out_dir: Path | None = None,
    notes: str = "",
    tag: str | None = None,
) -> Path:
    """Write ``<name>_<device>[_<tag>].json`` and ``.md``; returns the JSON path."""
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_{device_slug(dev)}" + (f"_{tag}" if tag else "")
    env = environment(dev)
    payload = {"benchmark": name, "environment": env, "params": params, "results": results, "rows": rows}
    path = out / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md = [f"# {name} on {env['device_name']}", "", f"torch {env['torch']}, {env['time_utc']}", ""]
    md.append(f"Parameters: `{json.dumps(params, default=str)}`")
    md += ["", markdown_table(rows)]
    if notes:
        md += ["", notes]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(markdown_table(rows))
    if notes:
        print(notes)
    print(f"wrote {path}")
    return path
