import math

import pytest

from pipeline.evaluation.label_efficiency import efficiency_against_baselines, fraction_to_match


def test_interpolates_in_log_fraction() -> None:
    m = fraction_to_match([0.01, 0.1, 1.0], [0.5, 0.6, 0.8], target=0.7)
    assert m.status == "reached"
    # Halfway between 0.1 and 1.0 in log space is sqrt(0.1).
    assert m.fraction == pytest.approx(math.sqrt(0.1))
    assert m.describe() == "31.6 %"


def test_bounds_are_reported_not_extrapolated() -> None:
    below = fraction_to_match([0.05, 1.0], [0.9, 0.95], target=0.8)
    assert below.status == "at_or_below_min" and below.fraction == 0.05 and below.describe() == "<= 5 %"
    never = fraction_to_match([0.05, 1.0], [0.5, 0.6], target=0.8)
    assert never.status == "not_reached" and never.fraction is None
    assert "not reached" in never.sentence("domain", "imagenet", "balanced_accuracy")


def test_first_crossing_wins_on_a_non_monotone_curve() -> None:
    m = fraction_to_match([0.01, 0.1, 0.25, 1.0], [0.5, 0.75, 0.65, 0.9], target=0.7)
    assert m.status == "reached" and 0.01 < m.fraction < 0.1


def test_each_backbone_is_compared_with_the_best_other_baseline() -> None:
    curves = {
        "domain": {0.1: 0.8, 1.0: 0.9},
        "imagenet": {0.1: 0.6, 1.0: 0.8},
        "pixels": {0.1: 0.55, 1.0: 0.7},
    }
    roles = {"domain": "domain", "imagenet": "baseline", "pixels": "baseline"}
    eff = efficiency_against_baselines(curves, roles)
    assert eff["domain"].reference == "imagenet"
    assert eff["domain"].match.status == "at_or_below_min"
    assert eff["imagenet"].reference == "pixels"  # never itself, never a domain backbone
    assert eff["pixels"].reference == "imagenet" and eff["pixels"].match.status == "not_reached"
