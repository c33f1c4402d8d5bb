"""MLflow tracking: a parent run per call, a child run per stage, read back with MlflowClient."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.app import run_pipeline
from pipeline.core import tracking
from tests.bad_inputs import encode, noise
from tests.conftest import parent_and_child_run


def test_normalize_uri_makes_sqlite_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking.normalize_uri("sqlite:///sub/mlflow.db") == f"sqlite:///{tmp_path}/sub/mlflow.db"
    assert (tmp_path / "sub").is_dir()
    assert tracking.normalize_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert tracking.normalize_uri("http://host:5000") == "http://host:5000"


def test_flatten_nested_params() -> None:
    assert tracking.flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": None, "e": [1, 2]}


def test_logging_is_a_no_op_without_a_parent_run(tmp_path: Path) -> None:
    assert not tracking.is_active()
    tracking.log_metrics({"x": 1.0})
    tracking.log_artifact(tmp_path)
    tracking.set_tags({"a": 1})
    with tracking.child_run("ingest", params={"a": 1}) as run_id:
        assert run_id is None
    with tracking.parent_run(False, "sqlite:///unused.db", "e", None, "r", {}) as run_id:
        assert run_id is None and not tracking.is_active()
    assert mlflow.active_run() is None
    assert not Path("unused.db").exists()


def _fresh_store(template: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, out / "mlflow.db")


def _folder_inputs(root: Path) -> list[str]:
    for i in range(6):
        d = root / "pool"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.png").write_bytes(encode(Image.fromarray(noise(20, 20, seed=i)), "PNG"))
    (root / "pool" / "broken.jpg").write_bytes(b"")
    for c in ("ok", "bad"):
        for i in range(3):
            d = root / "labeled" / c
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}.png").write_bytes(encode(Image.fromarray(noise(20, 20, seed=50 + i + 10 * len(c))), "PNG"))
    return [
        "data_recipe=folder",
        "data_recipe.name=toy",
        f"data_recipe.pool=[{root / 'pool'}]",
        f"data_recipe.labeled={root / 'labeled'}",
        "stage=ingest",
        "tracking=local",
        "ingest.workers=1",
    ]


def test_runs_written_to_mlflow(tmp_path: Path, compose_cfg: Callable, mlflow_db_template: Path) -> None:
    _fresh_store(mlflow_db_template, tmp_path / "out")
    cfg = compose_cfg(_folder_inputs(tmp_path / "in"), root=tmp_path / "out")
    manifests = run_pipeline(cfg)
    assert not tracking.is_active()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("toy")
    assert exp is not None and exp.artifact_location == (tmp_path / "out" / "mlartifacts").as_uri()
    parent, child = parent_and_child_run(client, exp.experiment_id)
    assert child.info.run_name == "ingest" and child.data.tags["stage"] == "ingest"

    # Parent: the whole resolved config as params, plus the YAML.
    p = parent.data.params
    assert p["stage.name"] == "ingest" and p["data_recipe.name"] == "toy" and p["seed"] == "0"
    assert p["paths.output_dir"] == str(tmp_path / "out" / "toy")  # resolved, not ${...}
    assert p["ingest.shard_size"] == "1000"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["config.yaml"]

    # Child: its stage's config, the manifest's metrics, the manifests and records.
    assert child.data.params["shard_size"] == "1000" and child.data.params["max_pixels"] == "89478485"
    m = child.data.metrics
    assert m["pool.inputs"] == 7 and m["pool.accepted"] == 6 and m["pool.rejected.empty_file"] == 1
    assert m["eval.accepted"] == 6
    assert m == manifests["ingest"].metrics
    top = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert top == {"manifest.json", "ingest"}
    pool = {a.path for a in client.list_artifacts(child.info.run_id, "ingest/pool")}
    assert pool == {"ingest/pool/manifest.json", "ingest/pool/records.jsonl"}
    local = client.download_artifacts(child.info.run_id, "manifest.json", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (tmp_path / "out" / "toy" / "ingest" / "manifest.json").read_bytes()


def test_a_failing_stage_marks_its_runs_failed(tmp_path: Path, compose_cfg: Callable, mlflow_db_template: Path) -> None:
    _fresh_store(mlflow_db_template, tmp_path / "out")
    overrides = _folder_inputs(tmp_path / "in")
    overrides[2] = f"data_recipe.pool=[{tmp_path / 'nowhere'}]"
    cfg = compose_cfg(overrides, root=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_pipeline(cfg)
    assert not tracking.is_active() and mlflow.active_run() is None
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
