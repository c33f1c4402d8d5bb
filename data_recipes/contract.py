"""What a recipe hands to the pipeline.

A recipe's ``prepare(cfg, out_dir)`` gathers raw inputs and returns a
:class:`RecipeOutput`; the ingest stage saves it as ``<out_dir>/manifest.json``
and turns each source into shards. Nothing downstream imports recipe code.

Sources:
    ``pool``: the uncurated images (required).
    ``seeds``: the curated seed set that retrieval starts from (optional).
    ``eval``: labeled evaluation images (optional).

Labels are a CSV with a ``key`` column (the input key ingest gives a file:
its path relative to the source folder), a ``split`` column (``train`` or
``test``) and one column per task. Two more columns are optional and never
tasks (:data:`RESERVED_COLUMNS`):

``group``
    Images that must stay on one side of any train/test split (cells of one
    module, frames of one part, photos of one patient). Absent: each image is
    its own group.
``heldout``
    ``true`` for images the pretraining pool does not contain, ``false`` for
    labelled images that are also in the pool on purpose. Absent: every
    evaluation image is held out. Decontamination protects only held-out images.
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SOURCE_NAMES = ("pool", "seeds", "eval")
# Labels CSV columns that are bookkeeping, not classification tasks.
RESERVED_COLUMNS = ("key", "split", "group", "heldout")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass
class TaskSpec:
    """A classification task on the evaluation images.

    Attributes:
        column: The labels CSV column holding the class name.
        classes: Class names; index order defines class ids.
        primary: The task that says what a backbone is worth (reports lead with it).
        description: One line for reports.
        normal: The class that is a defect-free part, when the task is an inspection task
            (every other class is a defect); ``None`` when it is not. Enables the eval stage's
            label-free patch-level protocol, which learns from normal images only.
    """

    column: str
    classes: list[str]
    primary: bool = False
    description: str = ""
    normal: str | None = None

    def __post_init__(self) -> None:
        if self.normal is not None and self.normal not in self.classes:
            raise ValueError(f"task column {self.column}: normal class {self.normal!r} is not one of {self.classes}")


@dataclass
class RecipeOutput:
    """The files a recipe prepared.

    Attributes:
        sources: Source name to the specs ingest reads (folders, archives, lists).
        labels_csv: Labels of the ``eval`` source, or ``None``.
        tasks: Task name to :class:`TaskSpec`.
        ground_truth: Optional JSON file that curation can be scored against.
        info: Provenance and licence notes, copied into the manifest.
    """

    sources: dict[str, list[str]]
    labels_csv: str | None = None
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    ground_truth: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.sources) - set(SOURCE_NAMES)
        if unknown:
            raise ValueError(f"unknown recipe sources {sorted(unknown)}; allowed: {SOURCE_NAMES}")
        if "pool" not in self.sources:
            raise ValueError("a recipe must provide a 'pool' source")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecipeOutput:
        tasks = {k: TaskSpec(**v) for k, v in d.get("tasks", {}).items()}
        return cls(
            sources={k: list(v) for k, v in d["sources"].items()},
            labels_csv=d.get("labels_csv"),
            tasks=tasks,
            ground_truth=d.get("ground_truth"),
            info=dict(d.get("info", {})),
        )


def parse_heldout(value: str | bool, where: str) -> bool:
    """A ``heldout`` cell as a bool (``true``/``false``, ``1``/``0``, ``yes``/``no``, any case).

    Raises:
        ValueError: starting with ``where`` (file and line), for anything else.
    """
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in _TRUE or v in _FALSE:
        return v in _TRUE
    raise ValueError(f"{where}: heldout must be true or false, got {value!r}")


def check_group(value: str | None, where: str) -> str:
    """A ``group`` cell, stripped; an empty one is an error (leave the column out instead)."""
    v = (value or "").strip()
    if not v:
        raise ValueError(f"{where}: group is empty; give every row a group or leave the column out")
    return v


def read_labels(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a labels CSV into ``{key: {column: value}}``; ``heldout`` becomes a bool.

    Raises:
        ValueError: naming the file (and line), when ``key`` or ``split`` is
            missing, a split is unknown, a key repeats, a group is empty or a
            heldout value is not true/false.
    """
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    for col in ("key", "split"):
        if col not in rows[0]:
            raise ValueError(f"{path}: labels CSV needs a '{col}' column, has {list(rows[0])}")
    out: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "test"):
            raise ValueError(f"{path}:{i}: split must be 'train' or 'test', got {row['split']!r}")
        key = row.pop("key")
        if key in out:
            raise ValueError(f"{path}:{i}: key {key!r} appears twice")
        parsed: dict[str, Any] = dict(row)
        if "group" in row:
            parsed["group"] = check_group(row["group"], f"{path}:{i}")
        if "heldout" in row:
            parsed["heldout"] = parse_heldout(row["heldout"], f"{path}:{i}")
        out[key] = parsed
    return out


def write_labels(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write label rows (each with ``key`` and ``split``) as CSV; bools as ``true``/``false``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0]) if rows else ["key", "split"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows([{k: str(v).lower() if isinstance(v, bool) else v for k, v in r.items()} for r in rows])


def stratified_split(keys: Sequence[str], strata: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Split keys into ``train``/``test`` within each stratum, reproducibly.

    Every stratum with at least two members puts at least one in each split.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for k, s in zip(keys, strata):
        groups[s].append(k)
    rng = random.Random(seed)
    split: dict[str, str] = {}
    for s in sorted(groups):
        members = sorted(groups[s])
        rng.shuffle(members)
        n_test = round(len(members) * test_fraction)
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        for i, k in enumerate(members):
            split[k] = "test" if i < n_test else "train"
    return split


def group_split(
    keys: Sequence[str], groups: Sequence[str], strata: Sequence[str], test_fraction: float, seed: int
) -> dict[str, str]:
    """Split keys into ``train``/``test`` by whole groups, reproducibly.

    A group's stratum is its most common member stratum. Within each stratum
    the groups are shuffled and taken into ``test`` until about
    ``test_fraction`` of the stratum's keys are there; a stratum with at least
    two groups puts at least one group in each split. Members of one group
    always share a split, so no group straddles train and test.
    """
    members: dict[str, list[str]] = defaultdict(list)
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for k, g, s in zip(keys, groups, strata):
        members[g].append(k)
        votes[g][s] += 1
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g in sorted(members):
        # most_common breaks ties by first insertion; sort the votes so input order does not matter.
        by_stratum[max(sorted(votes[g]), key=lambda s: votes[g][s])].append(g)
    rng = random.Random(seed)
    split: dict[str, str] = {}
    for s in sorted(by_stratum):
        gs = by_stratum[s]
        rng.shuffle(gs)
        target = test_fraction * sum(len(members[g]) for g in gs)
        n_test, taken = 0, 0
        for g in gs:
            # Take the next group while that brings the test count closer to the target.
            if abs(taken + len(members[g]) - target) < abs(taken - target) or (n_test == 0 and len(gs) >= 2):
                n_test, taken = n_test + 1, taken + len(members[g])
                for k in members[g]:
                    split[k] = "test"
            else:
                for k in members[g]:
                    split[k] = "train"
        if len(gs) >= 2 and n_test == len(gs):
            for k in members[gs[-1]]:
                split[k] = "train"
    return split
