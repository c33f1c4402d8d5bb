"""CPU smoke runs of the pretraining benchmarks: tiny sizes, real code paths, result files checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, timeout=600, capture_output=True)


def test_pretrain_throughput_runs_ours_and_lightly_reference(tmp_path: Path) -> None:
    out = tmp_path / "pt"
    _run(
        "benchmarks/pretrain_throughput.py",
        "--device",
        "cpu",
        "--models",
        "vit_tiny_patch16_224",
        "--global-size",
        "64",
        "--local-size",
        "32",
        "--local-crops",
        "1",
        "--batch",
        "4",
        "--out-dim",
        "64",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--compile",
        "off",
        "--impl",
        "ours,reference",
        "--data-batches",
        "2",
        "--param-dtype",
        "float32,bfloat16",
        "--out",
        str(out),
    )
    res = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["impl"], r["param_dtype"]): r for r in res["compute"]}
    assert set(rows) == {("ours", "float32"), ("ours", "bfloat16"), ("reference", "float32")}
    for r in rows.values():
        assert r["images_per_s"] > 0 and r["gflop_per_image"] > 0 and "mfu" not in r  # no MFU on CPU
        assert math.isfinite(r["first_step_loss"])
    rows = {impl: r for (impl, dt), r in rows.items() if dt == "float32"}
    # same architecture and views, so the counted FLOPs agree (iBOT masks differ in size per step)
    assert abs(rows["ours"]["gflop_per_image"] / rows["reference"]["gflop_per_image"] - 1) < 0.2
    assert "| reference |" in out.with_suffix(".md").read_text()


def test_pretrain_profile_groups_kernels(tmp_path: Path) -> None:
    _run(
        "benchmarks/pretrain_profile.py",
        "--model",
        "vit_tiny_patch16_224",
        "--batch",
        "2",
        "--steps",
        "1",
        "--out-dir",
        str(tmp_path),
        "--tag",
        "smoke",
    )
    res = json.loads((tmp_path / "pretrain_profile_smoke.json").read_text())
    assert res["categories_s"]["matmul"] > 0 and res["step_wall_s"] > 0
    assert len(res["top_kernels_s"]) > 0
