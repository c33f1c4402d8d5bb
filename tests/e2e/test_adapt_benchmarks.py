"""The adaptation benchmarks: the paired report's arithmetic, the overrides they hand the pipeline,
and (slow) ``gpu_adapt.py --smoke`` end to end on the CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from adapt_report import hurts, read_rows, seed_gain, summarise, write_report  # noqa: E402
from adapt_side_by_side import finished_arms, hydra_list, merge_overrides  # noqa: E402

FIELDS = ["backbone", "role", "task", "protocol", "fraction", "seed", "fold", "auroc", "heldout_auroc"]


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


def _rows(backbone: str, protocol: str, values: list[float], task: str = "defect", fraction: float = 1.0) -> list:
    return [
        {"backbone": backbone, "role": "x", "task": task, "protocol": protocol, "fraction": fraction, "seed": 0,
         "fold": i, "auroc": v, "heldout_auroc": "" if protocol == "patchcore" else v - 0.1}
        for i, v in enumerate(values)
    ]  # fmt: skip


def test_paired_differences_per_fold(tmp_path: Path) -> None:
    base = [0.80, 0.70, 0.90]
    rows = _rows("imagenet_lite0", "knn", base) + _rows("dino_s0", "knn", [0.83, 0.71, 0.95])
    rows += _rows("dino_s0", "knn", [0.1, 0.1, 0.1], fraction=0.1)  # another fraction: ignored
    rows += _rows("dino_s0", "knn", [0.1, 0.1, 0.1], task="type")  # another task: ignored
    s = summarise(read_rows(_write(tmp_path / "r.csv", rows)), "imagenet_lite0")
    paired = s["dino_s0"]["knn"]["paired_auroc"]
    assert s["dino_s0"]["knn"]["paired_auroc_folds"] == pytest.approx([0.03, 0.01, 0.05])
    assert paired["mean"] == pytest.approx(0.03) and paired["sd"] == pytest.approx(0.02)
    assert paired["min"] == pytest.approx(0.01) and paired["max"] == pytest.approx(0.05)
    assert s["dino_s0"]["knn"]["paired_heldout_auroc"]["mean"] == pytest.approx(0.03)
    assert s["imagenet_lite0"]["knn"]["auroc"]["mean"] == pytest.approx(0.8)
    assert "paired_auroc" not in s["imagenet_lite0"]["knn"]


def test_seed_gain_target_and_hurts(tmp_path: Path) -> None:
    rows = _rows("imagenet_lite0", "linear_probe", [0.8] * 5)
    rows += _rows("dino_s0", "linear_probe", [0.84, 0.84, 0.83, 0.85, 0.84])
    rows += _rows("dino_s1", "linear_probe", [0.83, 0.84, 0.84, 0.84, 0.85])
    rows += _rows("bad_s0", "linear_probe", [0.70, 0.71, 0.69, 0.70, 0.72])
    s = summarise(read_rows(_write(tmp_path / "r.csv", rows)), "imagenet_lite0")
    g = seed_gain(s, "dino")["linear_probe"]
    assert g["per_seed_mean"] == pytest.approx([0.04, 0.04]) and g["every_seed_above_zero"]
    assert g["meets_target"] is True
    small = seed_gain(s, "bad")
    assert small["seeds"] == ["bad_s0"] and small["linear_probe"]["meets_target"] is False  # one seed: no sd
    assert hurts(s["bad_s0"]["linear_probe"]) is True and hurts(s["dino_s0"]["linear_probe"]) is False


def test_write_report_files(tmp_path: Path) -> None:
    rows = _rows("imagenet_lite0", "knn", [0.8, 0.7]) + _rows("dino_s0", "knn", [0.81, 0.69])
    rows += _rows("imagenet_lite0", "patchcore", [0.6, 0.7]) + _rows("dino_s0", "patchcore", [0.65, 0.7])
    pre = {"dino_s0": {"steps": 3, "images_per_s": 2.5, "wall_s": 10.0}}
    stem = tmp_path / "out" / "x"
    res = write_report(_write(tmp_path / "r.csv", rows), pre, {"wall_s": 5.0}, stem, {}, "imagenet_lite0", {})
    assert json.loads((tmp_path / "out" / "x.json").read_text())["summary"] == res["summary"]
    md = (tmp_path / "out" / "x.md").read_text()
    assert "| `dino_s0` | 3 | 2.50 | 10 |" in md and "+0.025 ± 0.035" in md  # patch-level paired


def test_overrides_and_backbone_list(tmp_path: Path) -> None:
    merged = merge_overrides(["a=1", "~experiment", "b=2"], ["a=3"])
    assert merged == ["~experiment", "b=2", "a=3"]
    text = hydra_list([{"name": "x", "weights": None, "img_size": 224, "finetune": False, "p": "/t/a-b"}])
    assert text == "[{name:'x',weights:null,img_size:224,finetune:false,p:'/t/a-b'}]"
    for name in ("dino_s1", "distill_s0", "dino_s0", "other_s0"):
        (tmp_path / "arms" / name / "elpv_demo" / "pretrain" / "export").mkdir(parents=True)
        (tmp_path / "arms" / name / "elpv_demo" / "pretrain" / "export" / "config.json").write_text("{}")
    (tmp_path / "arms" / "vit_scratch_s0").mkdir()  # no export yet: left out
    assert finished_arms(tmp_path) == [("dino", 0), ("dino", 1), ("distill", 0)]


@pytest.mark.slow
def test_gpu_adapt_smoke(tmp_path: Path) -> None:
    pytest.importorskip("elpv_dataset")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_adapt.py"), "--smoke", "--root", str(tmp_path / "w")]
    proc = subprocess.run([*cmd, "--out-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_adapt_cpu_smoke.json").read_text())
    assert set(res["summary"]) == {"imagenet_lite0", "dino_s0", "dino_s0_at_export_size"}
    assert res["params"]["timings_s"]["ingest"] > 0 and "curate" not in res["params"]["timings_s"]  # smoke: pool
    assert res["pretrain"]["dino_s0"]["steps"] == 2
    for p in ("knn", "linear_probe", "patchcore"):
        assert 0.0 <= res["summary"]["dino_s0"][p]["auroc"]["mean"] <= 1.0
        assert res["summary"]["dino_s0"][p]["paired_auroc"]["n"] == 5
    assert (tmp_path / "gpu_adapt_files" / "results.csv").is_file()
    assert (tmp_path / "gpu_adapt_cpu_smoke.md").read_text().startswith("# gpu_adapt_cpu_smoke on ")
