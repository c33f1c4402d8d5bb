"""The headline, and which protocols may feed it.

A protocol whose best generic baseline is not clearly above chance with all the labels
(the lower end of its interval at or below chance), or (fine-tuning) whose best baseline
scores below its own frozen linear probe, did not train at these settings: it measures the
settings, not the backbones. It is reported as under-trained, with what would fix it,
and gives no headline (and no "matches" sentence).

The headline: the share of labels with which the domain backbone reaches the best generic
baseline's linear-probe score at 100 % of the labels, per trained protocol. Its interval
reads the curves' confidence bands against the target's: the optimistic end is where the
upper band reaches the target's lower end, the pessimistic end where the lower band
reaches its upper end. Beside it, the paired difference at 100 % of the labels (the domain
backbone minus the target, fold by fold: :mod:`~pipeline.evaluation.paired`), which is
known far more precisely than either score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.evaluation.intervals import Interval
from pipeline.evaluation.label_efficiency import FractionToMatch, fraction_to_match
from pipeline.evaluation.paired import paired_interval

# What to change when a protocol did not train (the settings are in conf/eval and pipeline/config/eval.py).
FIXES = {
    "finetune": "raise eval.finetune.img_size (e.g. 224) and eval.finetune.epochs (e.g. 30), on a GPU",
    "linear_probe": "raise eval.linear_probe.max_iter and widen eval.linear_probe.c_grid",
    "knn": "check the features (eval.pooling) and eval.knn.k",
}


def metric_for(requested: str, num_classes: int) -> str:
    """AUROC is defined for binary tasks only; others fall back to balanced accuracy."""
    return "balanced_accuracy" if requested == "auroc" and num_classes != 2 else requested


def chance(metric: str, num_classes: int) -> float:
    """Score of a classifier that ignores its input (AUROC 0.5; balanced accuracy and the rest ``1 / C``)."""
    return 0.5 if metric == "auroc" else 1.0 / num_classes


def _at(summary: Sequence[dict[str, Any]], task: str, protocol: str, fraction: float) -> dict[str, dict[str, Any]]:
    return {
        s["backbone"]: s
        for s in summary
        if s["task"] == task and s["protocol"] == protocol and s["fraction"] == fraction
    }


@dataclass(frozen=True)
class ProtocolCheck:
    """Whether a protocol trained; ``reason`` and ``fix`` say why not."""

    task: str
    protocol: str
    trained: bool
    reason: str = ""
    fix: str = ""

    def line(self) -> str:
        if self.trained:
            return f"{self.task} / {self.protocol}: trained"
        return f"{self.task} / {self.protocol}: under-trained at these settings ({self.reason}); to fix: {self.fix}"


def check_protocol(
    summary: Sequence[dict[str, Any]], task: str, protocol: str, metric: str, num_classes: int
) -> ProtocolCheck:
    """Did ``protocol`` train on ``task``? Judged on the baselines (role ``baseline``) at 100 % of the labels."""
    full = {b: s for b, s in _at(summary, task, protocol, 1.0).items() if s["role"] == "baseline"}
    full = {b: s for b, s in full.items() if not math.isnan(s[f"{metric}_mean"])}
    fix = FIXES.get(protocol, "")
    if not full:
        return ProtocolCheck(task, protocol, False, "no baseline measured at 100 % of the labels", fix)
    best = max(full, key=lambda b: full[b][f"{metric}_mean"])
    s, floor = full[best], chance(metric, num_classes)
    low = s[f"{metric}_low"] if not math.isnan(s.get(f"{metric}_low", math.nan)) else s[f"{metric}_mean"]
    if low <= floor:
        return ProtocolCheck(
            task,
            protocol,
            False,
            f"best baseline {best}: {metric.replace('_', ' ')} {s[f'{metric}_mean']:.3f} "
            f"(interval from {low:.3f}) is not clearly above chance {floor:.3f}",
            fix,
        )
    if protocol == "finetune":
        probe = _at(summary, task, "linear_probe", 1.0).get(best)
        if probe is not None and s[f"{metric}_mean"] < probe[f"{metric}_mean"]:
            return ProtocolCheck(
                task,
                protocol,
                False,
                f"best baseline {best}: fine-tuning ({s[f'{metric}_mean']:.3f}) scores below its frozen linear "
                f"probe ({probe[f'{metric}_mean']:.3f})",
                fix,
            )
    return ProtocolCheck(task, protocol, True)


@dataclass(frozen=True)
class Headline:
    """Labels the ``backbone`` needs under ``protocol`` to reach ``reference``'s 100 % linear-probe score."""

    task: str
    protocol: str
    backbone: str
    reference: str
    metric: str
    target: float
    target_low: float
    target_high: float
    match: FractionToMatch
    optimistic: FractionToMatch
    pessimistic: FractionToMatch
    gap: Interval | None = None  # backbone (this protocol) - reference (linear probe), paired, 100 % of labels

    def sentence(self) -> str:
        m = self.metric.replace("_", " ")
        what = (
            f"{self.reference}'s linear probe at 100 % of the labels ({m} {self.target:.3f}, "
            f"interval {self.target_low:.3f} to {self.target_high:.3f})"
        )
        if self.match.fraction is None:
            text = f"{self.task} / {self.protocol}: {self.backbone} does not reach {what}, even with all labels"
        else:
            text = (
                f"{self.task} / {self.protocol}: {self.backbone} reaches {what} with {self.match.describe()} "
                f"of the labels (interval {self.optimistic.describe()} to {self.pessimistic.describe()})"
            )
        g = self.gap
        if g is None or g.n < 2:
            return text
        return (
            f"{text}; with all labels it scores {g.mean:+.3f} against it, paired over {g.n} folds "
            f"(standard error {g.se:.3f}, interval {g.low:+.3f} to {g.high:+.3f})"
        )


def _curve(summary: Sequence[dict[str, Any]], task: str, protocol: str, backbone: str, key: str) -> dict[float, float]:
    return {
        s["fraction"]: s[key]
        for s in summary
        if s["task"] == task and s["protocol"] == protocol and s["backbone"] == backbone
    }


def headlines(
    summary: Sequence[dict[str, Any]],
    task: str,
    metric: str,
    roles: dict[str, str],
    checks: Sequence[ProtocolCheck],
    rows: Sequence[dict[str, Any]] = (),
    confidence: float = 0.95,
) -> list[Headline]:
    """One headline per domain backbone (every backbone when there is none) and trained protocol of ``task``.

    The target is the best baseline's linear probe at 100 %; none when the linear probe itself did not train.
    ``rows`` (the per-fold results) add the paired difference to the target.
    """
    trained = [c.protocol for c in checks if c.task == task and c.trained]
    if "linear_probe" not in trained:
        return []
    full = {b: s for b, s in _at(summary, task, "linear_probe", 1.0).items() if roles.get(b) == "baseline"}
    full = {b: s for b, s in full.items() if not math.isnan(s[f"{metric}_mean"])}
    judged = [b for b, r in roles.items() if r == "domain"] or sorted(full)
    out = []
    for p in trained:
        for b in judged:
            refs = {r: s for r, s in full.items() if r != b}
            mean = _curve(summary, task, p, b, f"{metric}_mean")
            if not refs or not mean:
                continue
            ref = max(refs, key=lambda r: refs[r][f"{metric}_mean"])
            t = refs[ref]
            tm = t[f"{metric}_mean"]
            tl = t[f"{metric}_low"] if not math.isnan(t[f"{metric}_low"]) else tm
            th = t[f"{metric}_high"] if not math.isnan(t[f"{metric}_high"]) else tm

            def reach(
                key: str, target: float, b: str = b, p: str = p, mean: dict[float, float] = mean
            ) -> FractionToMatch:
                c = _curve(summary, task, p, b, key)
                c = {f: (mean[f] if math.isnan(v) else v) for f, v in c.items()}
                fr = sorted(c)
                return fraction_to_match(fr, [c[f] for f in fr], target)

            gap = paired_interval(rows, task, metric, (b, p), (ref, "linear_probe"), 1.0, confidence)
            out.append(
                Headline(
                    task, p, b, ref, metric, tm, tl, th,
                    reach(f"{metric}_mean", tm), reach(f"{metric}_high", tl), reach(f"{metric}_low", th), gap,
                )
            )  # fmt: skip
    return out
