"""Session fixture: a real one-node Slurm cluster (see ``cluster.py``).

Every test here is marked ``slurm`` and uses ``slurm_cluster``; the cluster is started
once per session (installing Debian's packages if missing) and stopped, with all its
jobs cancelled, at the end. Tests skip only when Slurm cannot be installed or run here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.cluster import LocalSlurm, SlurmUnavailable
from tests.slurm.mlflow_server import MlflowServer

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm test cluster: {e}")
    except Exception:
        cluster.stop()
        raise
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # clients and jobs find the cluster through it
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="session", autouse=True)
def _mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Boot the tracking server in the background as soon as the cluster tests start."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_uri(_mlflow_server: MlflowServer) -> str:
    """A real MLflow tracking server (SQLite backend, local artifact root) on loopback."""
    return _mlflow_server.wait()
