"""MLflow tracking: one parent run per ``run.py`` call, one child run per stage.

Stages call :func:`log_metrics` and :func:`log_artifact`; these are no-ops when
tracking is off, so algorithms never need to know whether MLflow is there.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_ENABLED = False


def normalize_uri(uri: str) -> str:
    """Make a relative ``sqlite:///`` path absolute, so the store does not move with the cwd."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to ``a.b.c`` keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@contextlib.contextmanager
def parent_run(
    enabled: bool,
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None,
    run_name: str,
    params: Mapping[str, Any],
) -> Iterator[str | None]:
    """Open the parent run; yields its id (``None`` when tracking is off)."""
    global _ENABLED
    if not enabled or not _is_global_zero():
        yield None
        return
    import mlflow

    uri = normalize_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    with _store_setup_lock(uri):
        _ensure_experiment(mlflow, uri, experiment, artifact_location)
    with mlflow.start_run(run_name=run_name) as run:
        _ENABLED = True
        try:
            _log_params(params)
            yield run.info.run_id
        finally:
            _ENABLED = False


def _store_setup_lock(uri: str) -> contextlib.AbstractContextManager:
    """Two runs opening a new SQLite store at once would both create its tables (and one fail);
    one at a time does it, behind an OS lock next to the file (released if the process dies)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(uri[len(prefix) :] + ".lock")


def _ensure_experiment(mlflow: Any, uri: str, experiment: str, artifact_location: str | None) -> None:
    if mlflow.get_experiment_by_name(experiment) is None:
        loc = None
        if artifact_location and not uri.startswith(("http://", "https://")):
            loc = Path(artifact_location).resolve().as_uri()
        try:
            mlflow.create_experiment(experiment, artifact_location=loc)
        except mlflow.exceptions.MlflowException:
            # Jobs of a sweep or job array start together; one of them created it first.
            if mlflow.get_experiment_by_name(experiment) is None:
                raise
    mlflow.set_experiment(experiment)


def _is_global_zero() -> bool:
    """False in the other processes of a multi-process job (srun tasks, torchrun ranks):
    each runs ``run.py``, but only global rank 0 logs, so a job is one MLflow run."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


@contextlib.contextmanager
def child_run(name: str, params: Mapping[str, Any] | None = None) -> Iterator[str | None]:
    """A nested run for one stage; a no-op outside a parent run."""
    if not _ENABLED:
        yield None
        return
    import mlflow

    with mlflow.start_run(run_name=name, nested=True) as run:
        mlflow.set_tag("stage", name)
        if params:
            _log_params(params)
        yield run.info.run_id


def _log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    flat = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[i : i + 100]))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active run, if any."""
    if not _ENABLED:
        return
    import mlflow

    clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if v is not None}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or folder to the active run, if any."""
    if not _ENABLED:
        return
    import mlflow

    p = Path(path)
    if p.is_dir():
        mlflow.log_artifacts(str(p), artifact_path=artifact_path)
    elif p.is_file():
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


def set_tags(tags: Mapping[str, Any]) -> None:
    if not _ENABLED:
        return
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def is_active() -> bool:
    return _ENABLED
