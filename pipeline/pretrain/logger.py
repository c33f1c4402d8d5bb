"""A Lightning logger that writes ``metrics.jsonl`` and the stage's active MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from pipeline.core import tracking


class StageLogger(Logger):
    """Log into the MLflow run the app opened for the stage (via :mod:`pipeline.core.tracking`)
    and append every record to ``<folder>/metrics.jsonl`` (kept across resumes).

    Metrics go to MLflow with the optimizer step as ``step``; nothing happens on ranks > 0.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.path = Path(folder) / "metrics.jsonl"

    @property
    def name(self) -> str:
        return "stage"

    @property
    def version(self) -> str:
        return "0"

    @property
    @rank_zero_experiment
    def experiment(self) -> None:
        return None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        if "epoch" in metrics:
            clean["epoch"] = float(metrics["epoch"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **clean}) + "\n")
        tracking.log_metrics(clean, step=step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the app logs the stage's config as run params


def read_metrics(folder: Path, key: str) -> dict[int, float]:
    """``{step: value}`` of one metric from ``metrics.jsonl``; a re-logged step keeps its last value."""
    out: dict[int, float] = {}
    path = Path(folder) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if key in rec and rec.get("step") is not None:
            out[int(rec["step"])] = float(rec[key])
    return out
