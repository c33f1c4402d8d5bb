"""``tracking=server``: a pipeline run lands in a real MLflow tracking server.

The server (SQLite backend, local artifact root) is started on loopback exactly as
``docs/cluster.md`` documents, and always stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import parent_and_child_run
from tests.slurm.mlflow_server import mlflow_server
from tests.slurm.tinydata import make_pool

REPO = Path(__file__).resolve().parents[2]


def test_ingest_run_lands_in_tracking_server(tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "pool", 6)
    server_root = tmp_path / "server"
    with mlflow_server(server_root) as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}  # what tracking=server reads by default
        cmd = [
            sys.executable,
            "run.py",
            "stage=ingest",
            "tracking=server",
            "data_recipe=folder",
            "data_recipe.name=tiny_server",
            f"data_recipe.pool=[{pool}]",
            f"paths.root={tmp_path / 'out'}",
            "ingest.workers=1",
            "progress=false",
        ]
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr[-3000:]

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("tiny_server")
        assert exp is not None
        parent, child = parent_and_child_run(client, exp.experiment_id)
        assert child.data.tags["stage"] == "ingest"
        assert child.data.metrics["pool.accepted"] == 6
        assert "config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert "ingest/pool/manifest.json" in {a.path for a in client.list_artifacts(child.info.run_id, "ingest/pool")}
        # Artifacts went through the server into its --artifacts-destination, not to the client's disk.
        assert list((server_root / "artifacts").rglob("manifest.json"))
        assert not (tmp_path / "out" / "mlartifacts").exists()
