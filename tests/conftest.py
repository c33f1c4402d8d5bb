"""Shared fixtures: composing the real Hydra config, a tiny demo recipe, the bad-input corpus."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pipeline.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# A demo recipe small enough for a unit test: 60 ELPV cells, a handful of each distractor.
TINY_ELPV = (
    "data_recipe.elpv_limit=60",
    "data_recipe.n_seeds=5",
    "data_recipe.n_faces=4",
    "data_recipe.n_digits=4",
    "data_recipe.n_photo_tiles=4",
    "data_recipe.n_pool_copies=4",
    "data_recipe.n_byte_copies=2",
    "data_recipe.n_eval_copies=3",
    "data_recipe.n_corrupt=3",
)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/config.yaml`` with overrides; outputs go under ``tmp_path``."""

    def _compose(overrides: Sequence[str] = (), root: Path | None = None) -> DictConfig:
        register_configs()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[f"paths.root={root or tmp_path}", "progress=false", *overrides])

    return _compose


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The generated corpus of good and bad inputs and what ingest must record for each."""
    from tests.bad_inputs import build_corpus

    root = tmp_path_factory.mktemp("corpus") / "inputs"
    return root, build_corpus(root)


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store; creating one costs ~10 s, copying it nothing.

    Copy it to ``<paths.root>/mlflow.db`` before a run that tracks.
    """
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def parent_and_child_run(client: Any, experiment_id: str) -> tuple[Any, Any]:
    """The one parent run and its one finished child (a one-stage pipeline call), checked."""
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 1
    parent, child = parents[0], children[0]
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    return parent, child
