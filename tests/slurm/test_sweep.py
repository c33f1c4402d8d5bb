"""A Hydra multirun sweep of the ingest stage, each job an sbatch job on the test cluster."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.slurm.conftest import REPO
from tests.slurm.jobs import job_info, wait_final
from tests.slurm.tinydata import make_pool

N_IMAGES = 12
SHARD_SIZES = (4, 8)


def test_multirun_sweep_runs_every_job_on_slurm(slurm_cluster, mlflow_uri: str, tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "pool", N_IMAGES)
    root = tmp_path / "out"
    cmd = [
        sys.executable,
        "run.py",
        "-m",
        "hydra/launcher=slurm_local_test",
        "stage=ingest",
        "data_recipe=folder",
        "data_recipe.name=tiny_sweep",
        f"data_recipe.pool=[{pool}]",
        f"ingest.shard_size={','.join(map(str, SHARD_SIZES))}",
        "ingest.workers=1",
        f"paths.root={root}",
        "paths.output_dir=${paths.root}/tiny_s${ingest.shard_size}",
        "tracking=server",
        f"tracking.tracking_uri={mlflow_uri}",
        "progress=false",
    ]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert p.returncode == 0, f"sweep failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"

    # The sweep went to Slurm as one job array, a task per sweep point; every task finished.
    job_dirs = sorted(d for d in (root / "multirun").glob("*/*/.submitit/*_*") if d.is_dir())
    assert len(job_dirs) == len(SHARD_SIZES), job_dirs
    assert all(list(d.glob("*_result.pkl")) for d in job_dirs)
    for d in job_dirs:
        assert wait_final(d.name, timeout=60) == "COMPLETED"
        assert job_info(d.name)["Partition"] == "debug"

    # Every job wrote its own shards, with its own shard size.
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name("tiny_sweep")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    children = {r.data.params["shard_size"]: r for r in runs if r.data.tags.get("stage") == "ingest"}
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(children) == {str(s) for s in SHARD_SIZES}
    for size in SHARD_SIZES:
        m = json.loads((root / f"tiny_s{size}" / "ingest" / "pool" / "manifest.json").read_text())
        assert m["counts"]["accepted"] == N_IMAGES
        assert m["counts"]["shards"] == math.ceil(N_IMAGES / size)
        assert len(list((root / f"tiny_s{size}" / "ingest" / "pool").glob("shard-*.tar"))) == m["counts"]["shards"]
        child = children[str(size)]
        assert child.info.status == "FINISHED"
        assert child.data.metrics["pool.accepted"] == N_IMAGES
        assert child.data.tags["mlflow.parentRunId"] in parents
        arts = {a.path for a in client.list_artifacts(child.info.run_id, "ingest/pool")}
        assert "ingest/pool/manifest.json" in arts
