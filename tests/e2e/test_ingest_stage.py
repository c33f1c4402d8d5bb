"""``python run.py stage=ingest`` on a tiny ELPV demo: manifests, ground truth, MLflow, idempotent re-run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.io.shards import iter_samples, list_shards, read_metadata
from tests.conftest import ROOT, TINY_ELPV


def _run(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPELINE_OUTPUT_ROOT": str(out), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "run.py", "stage=ingest", "progress=false", *TINY_ELPV],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ingest_stage_end_to_end(tmp_path: Path, mlflow_db_template: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(mlflow_db_template, out / "mlflow.db")
    res = _run(out)
    assert res.returncode == 0, res.stderr[-3000:]
    ing = out / "elpv_demo" / "ingest"
    summary = json.loads((ing / "manifest.json").read_text())
    assert summary["stage"] == "ingest" and [i["stage"] for i in summary["inputs"]] == [
        "recipe",
        "ingest/pool",
        "ingest/seeds",
        "ingest/eval",
    ]

    # Pool: every planted file is accounted for, as the ground truth says.
    pool = json.loads((ing / "pool" / "manifest.json").read_text())
    truth = json.loads(Path(pool["extra"]["ground_truth"]).read_text())
    recs = {r["key"]: r for r in map(json.loads, (ing / "pool" / "records.jsonl").read_text().splitlines())}
    assert set(recs) == set(truth)
    n_byte = sum(1 for t in truth.values() if t.get("transform") == "byte_copy")
    expected_rej = Counter(t["expected_rejection"] for t in truth.values() if "expected_rejection" in t)
    assert pool["counts"] == {
        "inputs": len(truth),
        "accepted": len(truth) - n_byte - sum(expected_rej.values()),
        "rejected": sum(expected_rej.values()),
        "duplicate": n_byte,
        "shards": 1,
    }
    assert pool["extra"]["reasons"] == dict(expected_rej) == {"empty_file": 1, "truncated": 1, "not_an_image": 1}
    for key, t in truth.items():
        r = recs[key]
        if "expected_rejection" in t:
            assert (r["status"], r["reason"]) == ("rejected", t["expected_rejection"])
        elif t.get("transform") == "byte_copy":
            # Whichever of the pair comes first in name order is kept; the other points at it.
            pair = {key: r, t["copy_of"]["key"]: recs[t["copy_of"]["key"]]}
            kept = [k for k, x in pair.items() if x["status"] == "accepted"]
            dup = [x for x in pair.values() if x["status"] == "duplicate"]
            assert len(kept) == 1 and len(dup) == 1 and dup[0]["duplicate_of"] == kept[0]
        elif not any(u.get("transform") == "byte_copy" and u["copy_of"]["key"] == key for u in truth.values()):
            assert r["status"] == "accepted"

    # Eval: labels and splits in every sample, tasks in the manifest.
    ev = json.loads((ing / "eval" / "manifest.json").read_text())
    assert set(ev["extra"]["tasks"]) == {"defect", "type"} and ev["extra"]["tasks"]["defect"]["primary"]
    samples = list(iter_samples(list_shards(ing / "eval")))
    # Every labelled cell, 18 of them held out; module groups and held-out flags travel in the meta.
    assert len(samples) == ev["counts"]["accepted"] == ev["counts"]["inputs"] == 60
    assert sum(s["meta"]["labels"]["heldout"] is True for s in samples) == 18
    assert all(s["meta"]["labels"]["heldout"] in (True, False) for s in samples)
    assert all(s["meta"]["labels"]["group"].isdigit() for s in samples)
    splits = Counter(s["meta"]["labels"]["split"] for s in samples)
    assert splits["train"] > splits["test"] > 0
    assert all(s["meta"]["mode"] == "L" for s in samples)
    assert {s["meta"]["labels"]["defect"] for s in samples} <= {"functional", "defective"}
    # The cells pretraining sees are in two sources at once: the seeds as byte copies (same content-hash
    # id in both folders), the pool as re-encoded PNGs (other ids); neither is dropped from the eval set.
    seeds = read_metadata(ing / "seeds")
    eval_by_source = {s["meta"]["source"]: s for s in samples}
    assert len(seeds) == 5
    assert all(eval_by_source[r["source"]]["meta"]["id"] == r["id"] for r in seeds)
    assert all(eval_by_source[r["source"]]["meta"]["labels"]["heldout"] is False for r in seeds)
    pool_cells = {t["origin"][5:] for t in truth.values() if t["origin"].startswith("elpv/") and "copy_of" not in t}
    assert len(pool_cells) == 60 - 18 - 5
    assert all(eval_by_source[c]["meta"]["labels"]["heldout"] is False for c in pool_cells)

    # MLflow: one parent, one ingest child with the stage's metrics and manifest.
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("elpv_demo").experiment_id])
    child = next(r for r in runs if r.info.run_name == "ingest")
    assert child.data.metrics["pool.accepted"] == pool["counts"]["accepted"]
    assert child.data.metrics["pool.rejected.truncated"] == 1
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"manifest.json", "ingest"}

    # A second run skips everything and changes no byte (nor mtime) of the outputs.
    before = _snapshot(out / "elpv_demo")
    res = _run(out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count("match the config") == 5  # recipe, 3 sources, summary
    assert _snapshot(out / "elpv_demo") == before
