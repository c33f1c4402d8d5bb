"""The labeled evaluation set, read from the ingest stage's ``eval`` shards.

Each sample's meta carries ``labels = {split: train|test, <task column>: <class>}``;
the eval manifest's ``extra.tasks`` names the tasks, their classes (whose order
defines class ids) and the primary one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.core.manifest import read_manifest
from pipeline.io.shards import image_of, iter_samples, list_shards

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One classification task: class names and every sample's class id (-1: unlabeled).

    ``normal`` names the defect-free class of an inspection task (``None``: not one).
    """

    name: str
    classes: list[str]
    y: np.ndarray
    primary: bool = False
    description: str = ""
    normal: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class EvalSet:
    """Images, splits and task labels of the evaluation set, in a stable (id) order."""

    ids: list[str]
    images: list[Image.Image]
    is_test: np.ndarray
    tasks: dict[str, Task]
    manifest_hash: str

    @property
    def train_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.is_test)

    @property
    def test_idx(self) -> np.ndarray:
        return np.flatnonzero(self.is_test)

    def primary_task(self) -> str:
        return next((n for n, t in self.tasks.items() if t.primary), next(iter(self.tasks)))


def load_eval_set(folder: Path, progress: bool = False, limit: int | None = None) -> EvalSet:
    """Read ``<ingest>/eval`` shards and labels.

    Args:
        folder: The ingest stage's ``eval`` folder (with ``manifest.json``).
        progress: Show a progress bar while decoding.
        limit: Keep only the first ``limit`` samples by id (tests, smoke runs).

    Raises:
        FileNotFoundError: when the folder has no manifest (ingest has not run).
        ValueError: naming the sample, when a label is missing or not a known class.
    """
    folder = Path(folder)
    m = read_manifest(folder)
    specs = m.extra.get("tasks") or {}
    if not specs:
        raise ValueError(f"{folder}/manifest.json has no extra.tasks: the recipe defines no evaluation tasks")
    rows = []
    for s in tqdm(iter_samples(list_shards(folder)), desc="eval set", disable=not progress, unit="img"):
        rows.append((s["__key__"], s))
    rows.sort(key=lambda r: r[0])
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"{folder} holds no evaluation samples")
    ids, images, is_test = [], [], []
    raw: dict[str, list[int]] = {t: [] for t in specs}
    for key, s in rows:
        labels = s["meta"].get("labels") or {}
        split = labels.get("split")
        if split not in ("train", "test"):
            raise ValueError(
                f"eval sample {key} ({s['meta'].get('source')}): labels.split is {split!r}, not train/test"
            )
        ids.append(key)
        images.append(image_of(s))
        is_test.append(split == "test")
        for t, spec in specs.items():
            value = labels.get(spec.get("column", t))
            if value is None or value == "":
                raw[t].append(-1)
            elif value in spec["classes"]:
                raw[t].append(spec["classes"].index(value))
            else:
                raise ValueError(f"eval sample {key}: task {t} label {value!r} is not one of {spec['classes']}")
    tasks = {
        t: Task(
            t,
            list(spec["classes"]),
            np.asarray(raw[t]),
            bool(spec.get("primary")),
            spec.get("description", ""),
            spec.get("normal"),
        )
        for t, spec in specs.items()
    }
    log.info(
        "eval set: %d images (%d train, %d test), tasks %s",
        len(ids),
        len(ids) - sum(is_test),
        sum(is_test),
        list(tasks),
    )
    return EvalSet(ids, images, np.asarray(is_test, dtype=bool), tasks, m.config_hash)
