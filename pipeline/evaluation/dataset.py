"""The labeled evaluation set, read from the ingest stage's ``eval`` shards.

Each sample's meta carries ``labels = {split: train|test, <task column>: <class>}``
and optionally ``group`` (images that must stay on one side of a split) and
``heldout`` (false for images the pretraining pool also holds); the eval
manifest's ``extra.tasks`` names the tasks, their classes (whose order defines
class ids) and the primary one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """Images, splits and task labels of the evaluation set, in a stable (id) order.

    Attributes:
        groups: int64 group id per image; images sharing one must never
            straddle train and test (one solar module, one part, one patient).
            Default: every image its own group.
        heldout: True for images the pretraining pool never holds; False for
            labelled images that pretraining also sees. Default: all True.
    """

    ids: list[str]
    images: list[Image.Image]
    is_test: np.ndarray
    tasks: dict[str, Task]
    manifest_hash: str
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    heldout: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.groups) == 0:
            self.groups = np.arange(n, dtype=np.int64)
        if len(self.heldout) == 0:
            self.heldout = np.ones(n, dtype=bool)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        self.heldout = np.asarray(self.heldout, dtype=bool)
        if self.groups.shape != (n,) or self.heldout.shape != (n,):
            raise ValueError(f"EvalSet: {n} ids but groups {self.groups.shape} and heldout {self.heldout.shape}")

    @property
    def train_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.is_test)

    @property
    def test_idx(self) -> np.ndarray:
        return np.flatnonzero(self.is_test)

    def primary_task(self) -> str:
        return next((n for n, t in self.tasks.items() if t.primary), next(iter(self.tasks)))


def _heldout(value: Any, key: str) -> bool:
    """A sample's ``labels.heldout``: a bool, or ``true``/``false`` text (absent: held out)."""
    if value is None or isinstance(value, bool):
        return value is None or value
    v = str(value).strip().lower()
    if v not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"eval sample {key}: labels.heldout is {value!r}, not true/false")
    return v in ("true", "1", "yes")


def group_ids(values: Sequence[str | None]) -> np.ndarray:
    """int64 ids for group names: equal names share an id, a missing name gets an id of its own.

    Named groups are numbered in sorted order (numbers numerically), then the unnamed images.
    """
    names = sorted({v for v in values if v is not None}, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))
    of = {v: i for i, v in enumerate(names)}
    out = np.empty(len(values), dtype=np.int64)
    nxt = len(names)
    for i, v in enumerate(values):
        if v is None:
            out[i], nxt = nxt, nxt + 1
        else:
            out[i] = of[v]
    return out


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
    ids, images, is_test, groups, heldout = [], [], [], [], []
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
        g = labels.get("group")
        groups.append(None if g is None or str(g).strip() == "" else str(g).strip())
        heldout.append(_heldout(labels.get("heldout"), key))
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
    gids = group_ids(groups)
    log.info(
        "eval set: %d images (%d train, %d test; %d groups, %d held out), tasks %s",
        len(ids),
        len(ids) - sum(is_test),
        sum(is_test),
        len(np.unique(gids)),
        sum(heldout),
        list(tasks),
    )
    return EvalSet(
        ids, images, np.asarray(is_test, dtype=bool), tasks, m.config_hash, gids, np.asarray(heldout, dtype=bool)
    )
