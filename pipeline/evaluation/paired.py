"""Paired differences: two backbones scored on the same folds.

Every backbone is scored on the same fold partitions, so the fold-to-fold spread that comes
from *which* groups (solar modules, patients) a fold tests cancels in a per-fold difference.
On ELPV the fold scores of one backbone spread by about 0.08 AUROC (44 modules with defect
rates from 6 % to 60 %), while two related backbones differ from fold to fold by a few
thousandths: a gap between backbones is known far more precisely than either level.
The interval is Nadeau and Bengio's corrected one (:mod:`~pipeline.evaluation.intervals`)
over the ``J`` per-fold differences, as for the levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.evaluation.intervals import Interval, cv_interval


def paired_interval(
    rows: Sequence[dict[str, Any]],
    task: str,
    metric: str,
    a: tuple[str, str],
    b: tuple[str, str],
    fraction: float = 1.0,
    confidence: float = 0.95,
    key: str | None = None,
) -> Interval | None:
    """Mean and corrected interval of ``a - b`` over the folds both were scored on.

    Args:
        rows: Result rows (``backbone, task, protocol, fraction, seed, fold, n_test, n_pool, <metric>``).
        a / b: ``(backbone, protocol)`` of the two sides.
        key: The column compared (``metric`` unless given, e.g. ``heldout_auroc``).

    Returns:
        ``None`` when fewer than two folds have both scores.
    """
    col = key or metric

    def scores(side: tuple[str, str]) -> dict[tuple[int, int], dict[str, Any]]:
        return {
            (r["seed"], r["fold"]): r
            for r in rows
            if (r["backbone"], r["protocol"]) == side
            and r["task"] == task
            and float(r["fraction"]) == fraction
            and not np.isnan(r.get(col, np.nan))
        }

    sa, sb = scores(a), scores(b)
    both = sorted(set(sa) & set(sb))
    if len(both) < 2:
        return None
    diffs = [float(sa[k][col]) - float(sb[k][col]) for k in both]
    # As the score intervals (report.summarize): the correction applies to cross-validation folds only,
    # i.e. more rows than repeats; a fixed split scored under several seeds gets none.
    cv = len(both) > len({k[0] for k in both}) and all("n_pool" in sa[k] and sa[k]["n_pool"] for k in both)
    ratio = float(np.mean([sa[k]["n_test"] for k in both]) / np.mean([sa[k]["n_pool"] for k in both])) if cv else 0.0
    return cv_interval(diffs, [k[0] for k in both], ratio, confidence)


def paired_table(
    rows: Sequence[dict[str, Any]],
    task: str,
    metric: str,
    judged: Sequence[str],
    baselines: Sequence[str],
    protocols: Sequence[str],
    confidence: float = 0.95,
    key: str | None = None,
) -> list[str]:
    """Markdown table: each judged backbone minus each baseline, per protocol, at 100 % of the labels."""
    lines = [
        "| backbone | minus | " + " | ".join(p.replace("_", " ") for p in protocols) + " |",
        "|---|---|" + "---|" * len(protocols),
    ]
    for j in judged:
        for base in baselines:
            if base == j:
                continue
            cells = []
            for p in protocols:
                iv = paired_interval(rows, task, metric, (j, p), (base, p), 1.0, confidence, key)
                cells.append("n/a" if iv is None else f"{iv.mean:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]")
            if any(c != "n/a" for c in cells):
                lines.append(f"| {j} | {base} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []
