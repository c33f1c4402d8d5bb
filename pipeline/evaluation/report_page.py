"""``report.md``: the summary figure first, the headline with its interval, then how it was measured.

The page states the protocol (folds, seeds, groups, interval), which protocols did not
train at these settings (they give no headline and no "matches" sentence), and whether the
evaluation images were in the pretraining pool, with held-out-only scores when some were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation import report
from pipeline.evaluation.headline import check_protocol, headlines
from pipeline.evaluation.label_efficiency import efficiency_against_baselines
from pipeline.evaluation.paired import paired_table
from pipeline.evaluation.summary_figure import plot_summary

PROTOCOL_ORDER = ("knn", "linear_probe", "finetune")


@dataclass(frozen=True)
class PageInfo:
    """What the page says about the data and the protocol.

    Attributes:
        n_images: Evaluation images.
        protocol: One sentence on the frozen protocols' folds, seeds and intervals.
        pretraining: One sentence on whether the evaluation images were in the pretraining pool.
        notes: Backbones skipped, and why.
        confidence: Level of the intervals.
    """

    n_images: int
    protocol: str
    pretraining: str
    notes: Sequence[str] = ()
    confidence: float = 0.95


def write_report(
    rep_dir: Path,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    roles: dict[str, str],
    tasks: list[str],
    metric_of: dict[str, str],
    num_classes: dict[str, int],
    info: PageInfo,
) -> tuple[dict[str, float], list[str]]:
    """Write CSVs, plots and ``report.md``; return ``(manifest metrics, headline sentences)``."""
    report.write_csv(rows, rep_dir / "results.csv")
    report.write_csv(summary, rep_dir / "summary.csv")
    present = {(s["task"], s["protocol"]) for s in summary}
    protocols = [p for p in PROTOCOL_ORDER if any((t, p) in present for t in tasks)]
    checks = [
        check_protocol(summary, t, p, metric_of[t], num_classes[t])
        for t in tasks
        for p in protocols
        if (t, p) in present
    ]
    untrained = {(c.task, c.protocol) for c in checks if not c.trained}
    metrics: dict[str, float] = {}
    heads = []
    for t in tasks:
        for h in headlines(summary, t, metric_of[t], roles, checks, rows, info.confidence):
            heads.append(h)
            if h.match.fraction is not None:
                metrics[f"{t}.{h.protocol}.{h.backbone}.label_fraction_to_match"] = h.match.fraction
    primary = tasks[0]
    headline = [h.sentence() for h in heads if h.task == primary]
    has_domain = any(r == "domain" for r in roles.values())
    if not headline:
        headline = [f"No headline for {primary}: no trained protocol with a baseline to match (see the checks)."]
    plot_summary(summary, tasks, protocols, metric_of, untrained, headline, rep_dir / "summary.png")
    body: list[str] = []
    for t in tasks:
        m = metric_of[t]
        for p in [p for p in protocols if (t, p) in present]:
            png = report.plot_label_efficiency(summary, t, p, m, rep_dir / f"label_efficiency_{t}_{p}.png")
            body += [f"### {t}: {p}", ""]
            if (t, p) in untrained:
                c = next(c for c in checks if (c.task, c.protocol) == (t, p))
                body += [
                    f"**Under-trained at these settings** ({c.reason}); to fix: {c.fix}. No comparison is drawn.",
                    "",
                ]
            body += [
                f"![{t} {p}]({png.name})",
                "",
                f"{m.replace('_', ' ')}:",
                "",
                report.markdown_table(summary, t, p, m),
            ]
            if m != "balanced_accuracy":
                body += ["", "balanced accuracy:", "", report.markdown_table(summary, t, p, "balanced_accuracy")]
            if any(f"heldout_{m}_mean" in s for s in summary if s["task"] == t and s["protocol"] == p):
                body += ["", f"{m.replace('_', ' ')}, held-out images only:", ""]
                body.append(report.markdown_table(summary, t, p, f"heldout_{m}"))
            if (t, p) not in untrained:
                eff = efficiency_against_baselines(report.curves(summary, t, p, m), roles)
                body += ["", *report.efficiency_lines(eff, m)]
            body.append("")
            for s in summary:
                if s["task"] == t and s["protocol"] == p and s["fraction"] == 1.0:
                    metrics[f"{t}.{p}.{s['backbone']}.{m}.p100"] = s[f"{m}_mean"]
    head = ["# Label-efficiency report", "", "![summary](summary.png)", "", "## Headline", ""]
    if not has_domain:
        head += [
            "No domain backbone was evaluated" + (f": {'; '.join(info.notes)}" if info.notes else "") + ".",
            "Baselines against each other:",
            "",
        ]
    head += [f"- {h}" for h in headline]
    head += [
        "",
        "## How this was measured",
        "",
        f"Evaluation set: {info.n_images} images. {info.protocol}",
        "",
        info.pretraining,
        "",
        "Protocol checks (a protocol whose best baseline is not clearly above chance with all labels, "
        "or whose best baseline fine-tunes below its own frozen linear probe, gives no headline):",
        "",
        *[f"- {c.line()}" for c in checks],
        "",
    ]
    md = "\n".join(
        [*head, *_paired_section(rows, tasks[0], metric_of[tasks[0]], roles, info.confidence), "## Results", "", *body]
    )
    (rep_dir / "report.md").write_text(md)
    return metrics, headline


def _paired_section(
    rows: Sequence[dict[str, Any]], task: str, metric: str, roles: dict[str, str], confidence: float
) -> list[str]:
    """Each domain backbone minus each baseline, fold by fold, at 100 % of the labels (all images, then held-out)."""
    judged = [b for b, r in roles.items() if r == "domain"]
    baselines = [b for b, r in roles.items() if r == "baseline"]
    present = {r["protocol"] for r in rows if r["task"] == task}
    protocols = [p for p in (*PROTOCOL_ORDER, "patchcore") if p in present]
    if not judged or not baselines:
        return []
    m = metric.replace("_", " ")
    out = [
        f"## Paired against the baselines ({task}, {m}, 100 % of the labels)",
        "",
        "The domain backbone minus each baseline on the same folds (the spread that comes from which groups "
        f"a fold tests cancels), mean and {100 * confidence:g} % corrected interval; above 0: the domain "
        "backbone scores higher.",
        "",
    ]
    table = paired_table(rows, task, metric, judged, baselines, protocols, confidence)
    if not table:
        return []
    out += [*table, ""]
    held = paired_table(rows, task, metric, judged, baselines, protocols, confidence, key=f"heldout_{metric}")
    if held:
        out += ["Held-out images only (never in the pretraining pool):", "", *held, ""]
    return out
