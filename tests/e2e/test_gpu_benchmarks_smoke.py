"""The GPU benchmark scripts run end to end on their smallest CPU presets and write sane result files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, args: list[str], out: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / script),
        *args,
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out-dir",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = script.removesuffix(".py")
    assert (out / f"{name}_cpu.md").read_text().startswith(f"# {name} on ")
    payload = json.loads((out / f"{name}_cpu.json").read_text())
    assert payload["benchmark"] == name
    assert payload["environment"]["device"] == "cpu" and payload["environment"]["device_name"]
    assert payload["params"]["threads"] == 1
    return payload


def test_gpu_knn_small(tmp_path: Path) -> None:
    p = _run("gpu_knn.py", ["--sizes", "3000", "--sample", "100", "--pq-m", "16", "--nprobe", "8"], tmp_path)
    rows = {r["method"].split("_nlist")[0] + ("+refine" if "refine" in r["method"] else ""): r for r in p["rows"]}
    assert set(rows) == {
        "torch_exact_cpu",
        "faiss_cpu_flat",
        "faiss_cpu_ivf_flat",
        "faiss_cpu_ivf_pq16",
        "faiss_cpu_ivf_pq16+refine",
    }
    for r in rows.values():
        assert r["n"] == 3000 and r["search_s"] > 0 and r["queries_per_s"] > 0
        assert 0.0 <= r["recall_at_k"] <= 1.0 and 0.0 <= r["dup_recall"] <= 1.0
        assert r["extrapolated"] is False  # 3000 <= --full-max
    # Exact methods agree with exact search and find every planted copy.
    for m in ("torch_exact_cpu", "faiss_cpu_flat"):
        assert rows[m]["recall_at_k"] == 1.0 and rows[m]["dup_recall"] == 1.0
    cross = p["results"]["sizes"]["3000"]["crossover"]
    assert p["results"]["sizes"]["3000"]["n_duplicates"] == 30
    assert cross["exact_effective_tflops"] > 0 and cross["measured_crossover_n_vs_faiss_cpu_ivfpq"] > 1
    gm = cross["gpu_model"]
    assert gm["rate_source"] == "assumed" and gm["exact_hours_at"]["1e+08"] > gm["exact_hours_at"]["1e+07"] * 99


def test_gpu_embed_small(tmp_path: Path) -> None:
    p = _run("gpu_embed.py", ["--small", "--synthetic-n", "96", "--cache-dir", str(tmp_path / "shards")], tmp_path)
    configs = {r["config"]: r for r in p["rows"]}
    assert set(configs) == {
        "bare_forward",
        "loader_only/workers",
        "end_to_end/workers",
        "loader_only/device",
        "end_to_end/device",
    }
    assert all(r["images_per_s"] > 0 for r in p["rows"])
    bare = configs["bare_forward"]["images_per_s"]
    assert configs["end_to_end/workers"]["ratio_to_bare"] == pytest.approx(
        configs["end_to_end/workers"]["images_per_s"] / bare
    )
    assert p["params"]["model"] == "vit_tiny_patch16_224" and p["params"]["img_size"] == 64
    assert p["params"]["synthetic_n"] == 96  # an explicit flag beats the --small preset
    assert p["results"]["dtype"] == "fp32" and isinstance(p["results"]["meets_target"], bool)


def test_gpu_augment_small(tmp_path: Path) -> None:
    p = _run("gpu_augment.py", ["--small"], tmp_path)
    res = p["results"]
    assert res["pil_images_per_s_per_core"] > 0 and res["tensor_images_per_s"] > 0
    assert res["model_step_images_per_s"] > 0
    assert res["speedup_tensor_vs_one_core"] == pytest.approx(
        res["tensor_images_per_s"] / res["pil_images_per_s_per_core"]
    )
    assert {r["path"] for r in p["rows"]} >= {"pil_per_core", "tensor"}
