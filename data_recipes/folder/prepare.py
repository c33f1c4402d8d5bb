"""Point the pipeline at folders of images that a user already has.

Nothing is copied: the sources are the user's own folders. Labels come from
class sub-folders (``labeled/<class>/<image>``) or from a CSV; without a
``split`` column, a stratified train/test split is drawn.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from data_recipes.contract import RecipeOutput, TaskSpec, stratified_split, write_labels
from pipeline.io.sources import iter_inputs


def _check_exists(kind: str, paths: list[str]) -> None:
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"data_recipe.{kind}: {p} does not exist")


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
        task_cols = [c for c in rows[0] if c not in ("key", "split")]
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
        primary = task_cols[0]
        split = stratified_split([r["key"] for r in rows], [r[primary] for r in rows], cfg.test_fraction, cfg.seed)
        rows = [{"key": r["key"], "split": split[r["key"]], **{c: r[c] for c in task_cols}} for r in rows]
    write_labels(Path(out_dir) / "labels.csv", rows)
    sources["eval"] = [str(labeled)]
    tasks = {
        c: TaskSpec(column=c, classes=sorted({r[c] for r in rows}), primary=(i == 0)) for i, c in enumerate(task_cols)
    }
    return RecipeOutput(sources=sources, labels_csv=str(Path(out_dir) / "labels.csv"), tasks=tasks, info={"recipe": "folder"})
