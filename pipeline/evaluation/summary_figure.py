"""The figure a reader looks at first: every backbone's label-efficiency curve per task, with bands.

One row per task, one column per protocol; the band around each curve is its confidence
interval over folds and seeds. A protocol that did not train is drawn greyed out and
titled so. The headline sentences go under the figure.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_summary(
    summary: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    protocols: Sequence[str],
    metric_of: dict[str, str],
    untrained: set[tuple[str, str]],
    headline: Sequence[str],
    path: Path,
) -> Path:
    """Write the summary figure.

    Args:
        summary: Rows of :func:`pipeline.evaluation.report.summarize`.
        tasks: Tasks, one row of panels each.
        protocols: Protocols, one column each (a panel without data stays empty).
        metric_of: The metric plotted per task.
        untrained: ``(task, protocol)`` pairs flagged as under-trained.
        headline: Sentences printed under the panels.
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows, cols = len(tasks), max(1, len(protocols))
    wrapped = [line for h in headline for line in textwrap.wrap(h, 150)]
    text_h = 0.22 * (len(wrapped) + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows + text_h), dpi=110, squeeze=False)
    backbones = sorted({s["backbone"] for s in summary})
    colours = {b: f"C{i % 10}" for i, b in enumerate(backbones)}
    for i, t in enumerate(tasks):
        metric = metric_of[t]
        for j, p in enumerate(protocols):
            ax = axes[i][j]
            sel = [s for s in summary if s["task"] == t and s["protocol"] == p]
            sel = [s for s in sel if not math.isnan(s[f"{metric}_mean"])]
            if not sel:
                ax.axis("off")  # a protocol not run on this task (fine-tuning runs on the primary task by default)
                continue
            flagged = (t, p) in untrained
            for b in backbones:
                pts = sorted((s for s in sel if s["backbone"] == b), key=lambda s: s["fraction"])
                if not pts:
                    continue
                x = [100.0 * s["fraction"] for s in pts]
                y = [s[f"{metric}_mean"] for s in pts]
                lo = [s.get(f"{metric}_low", math.nan) for s in pts]
                hi = [s.get(f"{metric}_high", math.nan) for s in pts]
                domain = pts[0]["role"] == "domain"
                ax.plot(x, y, "-o" if domain else "--o", ms=3, lw=2.2 if domain else 1.2, color=colours[b], label=b)
                if not any(math.isnan(v) for v in lo + hi):
                    ax.fill_between(x, lo, hi, color=colours[b], alpha=0.15, lw=0)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_title(f"{t}: {p}" + (" (under-trained)" if flagged else ""), fontsize=10)
            if flagged:
                ax.set_facecolor("#eeeeee")
            ax.set_xlabel("labels used (%)", fontsize=8)
            ax.set_ylabel(metric.replace("_", " "), fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    bottom = text_h / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.text(0.01, bottom - 0.01, "\n".join(wrapped), va="top", ha="left", fontsize=8, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
