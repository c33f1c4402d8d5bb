"""The PatchCore ELPV benchmark runs end to end on a few cells and writes its result files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_patchcore_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("elpv_dataset")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "patchcore_elpv.py"), "--limit", "192", "--folds", "2"]
    cmd += ["--block", "32", "--set", "img_size=64", "--tag", "smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "patchcore_elpv_smoke.json").read_text())
    assert res["cells"] == 192 and res["options"]["img_size"] == 64
    assert [r["backbone"] for r in res["rows"]] == ["imagenet_lite0", "random_init"]
    assert all(0.0 <= r["auroc_mean"] <= 1.0 and len(r["auroc_folds"]) == 2 for r in res["rows"])
    assert (tmp_path / "patchcore_elpv_smoke.md").read_text().startswith("# PatchCore-style defect protocol")
