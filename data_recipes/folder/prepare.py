"""Point the pipeline at folders of images that a user already has.

Nothing is copied: the sources are the user's own folders. Labels come from
class sub-folders (``labeled/<class>/<image>``) or from a CSV; without a
``split`` column, a stratified train/test split is drawn (by whole groups when
the CSV has a ``group`` column). The CSV's optional ``group`` and ``heldout``
columns are carried through as they are and are never tasks.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import Any

from data_recipes.contract import (
    RESERVED_COLUMNS,
    RecipeOutput,
    TaskSpec,
    check_group,
    group_split,
    parse_heldout,
    stratified_split,
    write_labels,
)
from pipeline.core.manifest import config_hash
from pipeline.io.ingest import input_fingerprint
from pipeline.io.sources import iter_inputs

log = logging.getLogger(__name__)


def _check_exists(kind: str, paths: list[str]) -> None:
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"data_recipe.{kind}: {p} does not exist")


def _check_keys(csv_path: Path, keys: list[str], labeled: Path) -> None:
    """Every CSV key must name a file under ``labeled``; unlabeled files there are only worth a warning."""
    present = {r.key for r in iter_inputs(labeled) if not r.rejected}
    missing = [k for k in keys if k not in present]
    if missing:
        raise ValueError(
            f"{csv_path}: {len(missing)} keys name no file under {labeled} (keys are paths relative to it), "
            f"e.g. {missing[:3]}"
        )
    extra = len(present - set(keys))
    if extra:
        log.warning(
            "%s: %d files under %s have no row in %s; they are ingested without labels",
            "folder recipe",
            extra,
            labeled,
            csv_path,
        )


def _check_group_heldout(csv_path: str, rows: list[dict[str, str]]) -> None:
    """Normalise the optional ``group`` and ``heldout`` cells in place, or fail naming the file and line."""
    for line, r in enumerate(rows, start=2):
        where = f"{csv_path}:{line} (key {r['key']!r})"
        if "group" in r:
            r["group"] = check_group(r["group"], where)
        if "heldout" in r:
            r["heldout"] = "true" if parse_heldout(r["heldout"], where) else "false"


def fingerprint(cfg: Any) -> str:
    """What the labels are made from: the labeled folder's files and the CSV's bytes.

    The pool and seeds are fingerprinted by ingest itself; this makes a new
    class-folder image or an edited labels CSV re-run :func:`prepare`.
    """
    if cfg.labeled is None or not Path(cfg.labeled).exists():
        return ""
    csv_bytes = Path(cfg.labels_csv).read_bytes() if cfg.labels_csv and Path(cfg.labels_csv).is_file() else b""
    return config_hash(input_fingerprint([cfg.labeled]), hashlib.sha256(csv_bytes).hexdigest())


def prepare(cfg: Any, out_dir: Path) -> RecipeOutput:
    """Write ``labels.csv`` under ``out_dir`` (when there are labels) and return the sources."""
    if not cfg.pool:
        raise ValueError("data_recipe.pool is empty: give at least one folder, archive or list of images")
    _check_exists("pool", list(cfg.pool))
    _check_exists("seeds", list(cfg.seeds))
    sources: dict[str, list[str]] = {"pool": list(cfg.pool)}
    if cfg.seeds:
        sources["seeds"] = list(cfg.seeds)
    if cfg.labeled is None:
        return RecipeOutput(sources=sources, info={"recipe": "folder"})

    labeled = Path(cfg.labeled)
    _check_exists("labeled", [str(labeled)])
    if cfg.labels_csv:
        with open(cfg.labels_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "key" not in rows[0]:
            raise ValueError(f"{cfg.labels_csv}: needs a 'key' column")
        task_cols = [c for c in rows[0] if c not in RESERVED_COLUMNS]
        if not task_cols:
            raise ValueError(f"{cfg.labels_csv}: needs at least one task column besides {', '.join(RESERVED_COLUMNS)}")
        _check_keys(Path(cfg.labels_csv), [r["key"] for r in rows], labeled)
        _check_group_heldout(cfg.labels_csv, rows)
    else:
        rows = []
        for ref in iter_inputs(labeled):
            parts = ref.key.split("/")
            if len(parts) < 2 or ref.rejected:
                continue
            rows.append({"key": ref.key, cfg.task: parts[0]})
        if not rows:
            raise ValueError(f"data_recipe.labeled={labeled}: expected class sub-folders <class>/<image>, found none")
        task_cols = [cfg.task]
    if "split" not in rows[0]:
        primary, keys = task_cols[0], [r["key"] for r in rows]
        if "group" in rows[0]:
            groups = [r["group"] for r in rows]
            split = group_split(keys, groups, [r[primary] for r in rows], cfg.test_fraction, cfg.seed)
        else:
            split = stratified_split(keys, [r[primary] for r in rows], cfg.test_fraction, cfg.seed)
        extra = [c for c in ("group", "heldout") if c in rows[0]]
        rows = [{"key": r["key"], "split": split[r["key"]], **{c: r[c] for c in task_cols + extra}} for r in rows]
    write_labels(Path(out_dir) / "labels.csv", rows)
    sources["eval"] = [str(labeled)]
    tasks = {
        c: TaskSpec(
            column=c, classes=sorted({r[c] for r in rows}), primary=(i == 0), normal=cfg.normal if i == 0 else None
        )
        for i, c in enumerate(task_cols)
    }
    return RecipeOutput(
        sources=sources, labels_csv=str(Path(out_dir) / "labels.csv"), tasks=tasks, info={"recipe": "folder"}
    )
