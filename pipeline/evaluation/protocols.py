"""Fine-tuning over label fractions and seeds, on the recipe's fixed train/test split.

Rows ``{backbone, role, task, protocol, fraction, seed, fold, n_labels, <metrics>}`` as
the frozen protocols' (:mod:`~pipeline.evaluation.frozen`; ``fold`` is always 0 here);
:mod:`pipeline.evaluation.report` aggregates them. Fine-tuning stays on the fixed split:
one run per fold would multiply its (GPU-sized) cost by the number of folds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config.eval import FinetuneConfig
from pipeline.core.manifest import atomic_write_json, config_hash
from pipeline.evaluation.backbones import EvalBackbone
from pipeline.evaluation.dataset import Task
from pipeline.evaluation.features import preprocessing
from pipeline.evaluation.finetune import OptimizerFactory, finetune_and_predict
from pipeline.evaluation.fractions import nested_label_subsets
from pipeline.evaluation.metrics import classification_metrics

log = logging.getLogger(__name__)


def task_splits(task: Task, is_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labelled training and test indices of a task (samples without a label are left out)."""
    labelled = task.y >= 0
    return np.flatnonzero(labelled & ~is_test), np.flatnonzero(labelled & is_test)


def _row(b: EvalBackbone, task: str, protocol: str, frac: float, seed: int, n: int, m: dict) -> dict[str, Any]:
    return {
        "backbone": b.name,
        "role": b.role,
        "task": task,
        "protocol": protocol,
        "fraction": frac,
        "seed": seed,
        "fold": 0,
        "n_labels": n,
        **m,
    }


def finetune_protocol(
    b: EvalBackbone,
    images_at: Callable[[int, str], torch.Tensor],
    task: Task,
    is_test: np.ndarray,
    fractions: Sequence[float],
    seeds: Sequence[int],
    min_per_class: int,
    opts: FinetuneConfig,
    optimizer: OptimizerFactory,
    cache_dir: Path,
    cache_key: Any,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Fine-tune at every label fraction and seed; each finished run is cached as JSON, so a killed stage resumes.

    Args:
        images_at: uint8 images of the whole evaluation set at a given size and interpolation
            (cached by the caller).
        cache_key: Everything besides (task, fraction, seed, subset) that changes a run's result.
    """
    train_idx, test_idx = task_splits(task, is_test)
    y, C = task.y, task.num_classes
    # A ViT fixed to its pretraining size is fine-tuned at that size (its position
    # embedding has no other); other backbones at opts.img_size.
    prep = preprocessing(b.build(0), opts.img_size, b.preprocessing_overrides())
    size, interpolation = prep["size"], prep["interpolation"]
    if size != opts.img_size:
        log.info("finetune %s: fixed input size %d px (not %d)", b.name, size, opts.img_size)
        opts = dataclasses.replace(opts, img_size=size)
    x: torch.Tensor | None = None
    rows = []
    for seed in seeds:
        for frac, idx in nested_label_subsets(y, train_idx, fractions, seed, min_per_class).items():
            key = config_hash(cache_key, size, interpolation, task.name, frac, seed, idx.tolist(), test_idx.tolist())
            path = cache_dir / f"{b.name}-{task.name}-f{frac:g}-s{seed}-{key}.json"
            if path.is_file():
                rows.append({"fold": 0, **json.loads(path.read_text())})  # runs cached before folds existed
                continue
            if x is None:
                x = images_at(size, interpolation)
            progress(f"finetune {b.name} {task.name} {100 * frac:g}% seed {seed} ({len(idx)} labels)")
            pred, proba = finetune_and_predict(b, x[idx], y[idx], x[test_idx], C, opts, seed, optimizer)
            row = _row(
                b, task.name, "finetune", frac, seed, len(idx), classification_metrics(y[test_idx], pred, proba, C)
            )
            row["steps"] = opts.steps_for(len(idx))
            atomic_write_json(path, row)
            rows.append(row)
    return rows
