"""The label-efficiency report: per-run CSV, summary CSV, plots and a markdown table.

Rows are one (backbone, task, protocol, label fraction, seed, fold) each; the summary
aggregates folds and seeds into the mean, the standard deviation of the fold scores
(``ddof=1``; 0 for one), and a corrected confidence interval
(:mod:`~pipeline.evaluation.intervals`): ``<metric>_low``, ``<metric>_high``,
``<metric>_se`` and the Monte Carlo ``<metric>_mc_se``.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.intervals import cv_interval
from pipeline.evaluation.label_efficiency import Efficiency
from pipeline.evaluation.metrics import METRICS

GROUP = ("backbone", "role", "task", "protocol", "fraction")


def summarize(rows: Sequence[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Mean, std and interval of every metric (and ``heldout_<metric>``) per (backbone, task, protocol, fraction)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in GROUP)].append(r)
    names = [*METRICS, *(f"heldout_{m}" for m in METRICS)]
    out = []
    for key, rs in groups.items():
        s: dict[str, Any] = dict(zip(GROUP, key))
        s["seeds"] = len({r["seed"] for r in rs})
        s["folds"] = len(rs)
        s["n_labels"] = float(np.mean([r["n_labels"] for r in rs]))
        # Cross-validation folds overlap in training data: correct the variance by n_test / n_train.
        # A fixed split (one fold per seed) only has seed noise: no correction.
        cv = len(rs) > s["seeds"] and all("n_pool" in r for r in rs)
        ratio = float(np.mean([r["n_test"] for r in rs]) / np.mean([r["n_pool"] for r in rs])) if cv else 0.0
        for m in names:
            if m.startswith("heldout_") and not any(m in r for r in rs):
                continue
            vals = [float(r[m]) if r.get(m) is not None else math.nan for r in rs]
            iv = cv_interval(vals, [r["seed"] for r in rs], ratio, confidence)
            finite = np.array([v for v in vals if not math.isnan(v)])
            s[f"{m}_mean"] = iv.mean
            s[f"{m}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else (0.0 if len(finite) else math.nan)
            # Every metric lives in [0, 1]: the interval does too.
            s[f"{m}_low"], s[f"{m}_high"] = float(np.clip(iv.low, 0, 1)), float(np.clip(iv.high, 0, 1))
            s[f"{m}_se"], s[f"{m}_mc_se"] = iv.se, iv.mc_se
        out.append(s)
    out.sort(key=lambda s: (s["task"], s["protocol"], s["backbone"], s["fraction"]))
    return out


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def curves(summary: Sequence[dict[str, Any]], task: str, protocol: str, metric: str) -> dict[str, dict[float, float]]:
    """``{backbone: {fraction: mean}}`` for one task and protocol."""
    out: dict[str, dict[float, float]] = defaultdict(dict)
    for s in summary:
        if s["task"] == task and s["protocol"] == protocol:
            out[s["backbone"]][s["fraction"]] = s[f"{metric}_mean"]
    return dict(out)


def plot_label_efficiency(
    summary: Sequence[dict[str, Any]], task: str, protocol: str, metric: str, path: Path, title: str = ""
) -> Path:
    """Score vs label fraction (log x), one line per backbone, band = confidence interval (std without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    sel = [s for s in summary if s["task"] == task and s["protocol"] == protocol]
    # A metric undefined everywhere (AUROC when a test fold holds one class) leaves nothing to draw.
    sel = [s for s in sel if not math.isnan(s[f"{metric}_mean"])]
    for b in sorted({s["backbone"] for s in sel}):
        pts = sorted((s for s in sel if s["backbone"] == b), key=lambda s: s["fraction"])
        x = [100.0 * s["fraction"] for s in pts]
        y = [s[f"{metric}_mean"] for s in pts]
        lo = [_band(s, metric, -1) for s in pts]
        hi = [_band(s, metric, 1) for s in pts]
        style = "-" if pts[0]["role"] == "domain" else "--"
        (line,) = ax.plot(x, y, style + "o", ms=4, lw=2.2 if pts[0]["role"] == "domain" else 1.4, label=b)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    if sel:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("labelled training examples used (%)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{task}: {protocol}")
    ax.grid(True, which="both", alpha=0.3)
    if sel:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _band(s: dict[str, Any], metric: str, side: int) -> float:
    """Interval end (``side`` -1 low, 1 high), or mean -/+ std where there is no interval."""
    v = s.get(f"{metric}_{'low' if side < 0 else 'high'}", math.nan)
    if not math.isnan(v):
        return float(v)
    std = s.get(f"{metric}_std", math.nan)
    return float(s[f"{metric}_mean"] + side * (0.0 if math.isnan(std) else std))


def _cell(s: dict[str, Any] | None, metric: str) -> str:
    if s is None or math.isnan(s.get(f"{metric}_mean", math.nan)):
        return "-"
    lo, hi = s.get(f"{metric}_low", math.nan), s.get(f"{metric}_high", math.nan)
    if math.isnan(lo) or math.isnan(hi):
        return f"{s[f'{metric}_mean']:.3f} ± {s[f'{metric}_std']:.3f}"
    return f"{s[f'{metric}_mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown_table(summary: Sequence[dict[str, Any]], task: str, protocol: str, metric: str) -> str:
    """Backbones x label fractions: ``mean [low, high]`` of ``metric`` (``mean ± std`` without an interval)."""
    sel = [s for s in summary if s["task"] == task and s["protocol"] == protocol]
    fracs = sorted({s["fraction"] for s in sel})
    index = {(s["backbone"], s["fraction"]): s for s in sel}
    lines = [
        "| backbone | " + " | ".join(f"{100 * f:g} %" for f in fracs) + " |",
        "|---|" + "---|" * len(fracs),
    ]
    for b in sorted({s["backbone"] for s in sel}):
        lines.append(f"| {b} | " + " | ".join(_cell(index.get((b, f)), metric) for f in fracs) + " |")
    return "\n".join(lines)


def efficiency_lines(eff: dict[str, Efficiency], metric: str) -> list[str]:
    return [f"- {e.match.sentence(f'**{b}**', e.reference, metric)}" for b, e in sorted(eff.items())]


def patch_section(summary: Sequence[dict[str, Any]], figures: dict[str, list[str]]) -> list[str]:
    """Markdown of the patch-level defect protocol: per task a table of backbones and the heat-map figures."""
    lines = [
        "## Patch-level defect detection (PatchCore-style, label-free)",
        "",
        "A memory bank of patch features from the *normal* training images only; a test image scores its "
        "largest patch distance to the bank. AUROC: defect vs normal. The threshold of the other metrics is a "
        "quantile of held-out normal training images' scores.",
        "",
    ]
    for task in sorted({s["task"] for s in summary if s["protocol"] == "patchcore"}):
        sel = sorted(
            (s for s in summary if s["task"] == task and s["protocol"] == "patchcore"), key=lambda s: s["backbone"]
        )
        lines += [
            f"### {task}: patchcore",
            "",
            "| backbone | AUROC | balanced accuracy | macro F1 |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {s['backbone']} | {_cell(s, 'auroc')} | {_cell(s, 'balanced_accuracy')} | {_cell(s, 'macro_f1')} |"
            for s in sel
        ]
        lines.append("")
        lines += [f"![{task} heat maps]({name})" for name in figures.get(task, [])]
        lines.append("")
    return lines
