"""Label efficiency: the share of labels a backbone needs to match a target score.

Given a backbone's mean score at increasing label fractions, find where the curve
first reaches the target (the best baseline's score with 100 % of the labels),
interpolating linearly in log-fraction between the two measured points around the
crossing. Outside the measured range the answer is a bound, never an extrapolation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FractionToMatch:
    """Where a label-efficiency curve reaches a target.

    Attributes:
        status: ``"reached"`` (interpolated), ``"at_or_below_min"`` (already reached
            at the smallest measured fraction; the true value is at most that), or
            ``"not_reached"`` (not even with the largest measured fraction).
        fraction: The fraction (``None`` when not reached).
        target: The score to reach.
    """

    status: str
    fraction: float | None
    target: float

    def describe(self) -> str:
        """``"12.3 %"``, ``"<= 1 %"`` or ``"not reached"``."""
        if self.status == "not_reached" or self.fraction is None:
            return "not reached"
        pct = 100.0 * self.fraction
        return f"<= {pct:.3g} %" if self.status == "at_or_below_min" else f"{pct:.3g} %"

    def sentence(self, backbone: str, reference: str, metric: str) -> str:
        """One honest line for reports."""
        what = f"{reference} at 100 % of the labels ({metric.replace('_', ' ')} {self.target:.3f})"
        if self.status == "not_reached" or self.fraction is None:
            return f"{backbone} does not match {what}, even with all labels (not reached)"
        return f"{backbone} matches {what} with {self.describe()} of the labels"


def fraction_to_match(fractions: Sequence[float], scores: Sequence[float], target: float) -> FractionToMatch:
    """Smallest label fraction at which the curve ``scores(fractions)`` reaches ``target``.

    Args:
        fractions: Measured label fractions (any order; they are sorted).
        scores: Mean score at each fraction.
        target: Score to match.
    """
    if len(fractions) != len(scores) or not fractions:
        raise ValueError("fractions and scores must be non-empty and of equal length")
    pts = sorted((float(f), float(s)) for f, s in zip(fractions, scores) if not math.isnan(float(s)))
    if not pts:
        return FractionToMatch("not_reached", None, target)
    if pts[0][1] >= target:
        return FractionToMatch("at_or_below_min", pts[0][0], target)
    for (f0, s0), (f1, s1) in itertools.pairwise(pts):
        if s1 >= target > s0:
            t = (target - s0) / (s1 - s0)
            lf = math.log(f0) + t * (math.log(f1) - math.log(f0))
            return FractionToMatch("reached", math.exp(lf), target)
    return FractionToMatch("not_reached", None, target)


@dataclass(frozen=True)
class Efficiency:
    """One backbone's label efficiency against the best other baseline at full labels."""

    backbone: str
    reference: str
    match: FractionToMatch


def efficiency_against_baselines(curves: dict[str, dict[float, float]], roles: dict[str, str]) -> dict[str, Efficiency]:
    """For every backbone, the label fraction it needs to match the best *other* baseline at 100 %.

    Args:
        curves: ``{backbone: {fraction: mean score}}``.
        roles: ``{backbone: "domain" | "baseline"}``; only baselines serve as references.

    Returns:
        ``{backbone: Efficiency}`` for backbones with at least one other baseline measured at fraction 1.
    """
    full = {b: c[1.0] for b, c in curves.items() if roles.get(b) == "baseline" and 1.0 in c and not math.isnan(c[1.0])}
    out: dict[str, Efficiency] = {}
    for b, c in curves.items():
        refs = {r: s for r, s in full.items() if r != b}
        if not refs or not c:
            continue
        ref = max(refs, key=lambda r: refs[r])
        fr = sorted(c)
        out[b] = Efficiency(b, ref, fraction_to_match(fr, [c[f] for f in fr], refs[ref]))
    return out
