"""benchmarks/pretrain_loader.py runs on its CPU preset and writes sane result files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_gpu_benchmarks_smoke import _run


def test_pretrain_loader_small(tmp_path: Path) -> None:
    p = _run("pretrain_loader.py", ["--small", "--cache-dir", str(tmp_path / "shards")], tmp_path)
    rows = p["rows"]
    assert {(r["augment"], r["workers"]) for r in rows} == {
        ("cpu", 0),
        ("gpu", 0),
        ("cpu", 1),
        ("gpu", 1),
        ("device_augment_only", None),
    }
    assert all(r["images_per_s"] > 0 for r in rows)
    res = p["results"]
    assert res["preset"] == "rgb" and res["load_size"] == 73  # 64 * 8/7, synthetic RGB JPEGs
    assert res["images"] == (2 + 3) * 16  # warm-up (workers + 1) and timed batches of 16
    rates = res["images_per_s"]
    assert res["speedup_gpu_vs_cpu"]["1"] == pytest.approx(rates["gpu"]["1"] / rates["cpu"]["1"])
    # uint8 load_size squares cross to the device instead of float views: far fewer bytes
    mb = {r["augment"]: r["h2d_mb_per_batch"] for r in rows if r["workers"] == 0}
    assert mb["gpu"] == pytest.approx(16 * 3 * 73 * 73 / 2**20)
    assert mb["cpu"] == pytest.approx(16 * 3 * 4 * (2 * 64**2 + 4 * 32**2) / 2**20)
