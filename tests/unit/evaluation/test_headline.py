"""Protocol checks and the headline: an untrained protocol gives no headline and no 'matches' sentence."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.evaluation import report
from pipeline.evaluation.headline import chance, check_protocol, headlines, metric_for
from pipeline.evaluation.report_page import PageInfo, write_report

ROLES = {"domain": "domain", "imagenet": "baseline", "pixels": "baseline"}
FRACTIONS = (0.01, 0.1, 1.0)


def _rows(backbone: str, protocol: str, curve: dict[float, float], noise: float = 0.01) -> list[dict[str, Any]]:
    """5 folds x 2 seeds per fraction, scattered around ``curve`` (auroc, balanced accuracy alike)."""
    rng = np.random.default_rng(zlib.crc32(f"{backbone}/{protocol}".encode()))  # not hash(): salted per process
    out = []
    for f, mean in curve.items():
        for seed in (0, 1):
            for fold in range(5):
                v = float(mean + noise * rng.standard_normal())
                out.append(
                    {
                        "backbone": backbone,
                        "role": ROLES[backbone],
                        "task": "defect",
                        "protocol": protocol,
                        "fraction": f,
                        "seed": seed,
                        "fold": fold,
                        "n_labels": int(1000 * f),
                        "n_test": 200,
                        "n_pool": 800,
                        "accuracy": v,
                        "balanced_accuracy": v,
                        "macro_f1": v,
                        "auroc": v,
                    }
                )
    return out


ROWS = [
    *_rows("imagenet", "linear_probe", {0.01: 0.70, 0.1: 0.80, 1.0: 0.86}),
    *_rows("pixels", "linear_probe", {0.01: 0.60, 0.1: 0.65, 1.0: 0.70}),
    *_rows("domain", "linear_probe", {0.01: 0.75, 0.1: 0.88, 1.0: 0.92}),
    *_rows("imagenet", "knn", {0.01: 0.68, 0.1: 0.78, 1.0: 0.84}),
    *_rows("pixels", "knn", {0.01: 0.58, 0.1: 0.62, 1.0: 0.66}),
    *_rows("domain", "knn", {0.01: 0.74, 0.1: 0.87, 1.0: 0.91}),
    # Fine-tuning did not train: every baseline sits at chance even with all labels.
    *_rows("imagenet", "finetune", {0.01: 0.5, 0.1: 0.5, 1.0: 0.5}, noise=0.02),
    *_rows("pixels", "finetune", {0.01: 0.5, 0.1: 0.5, 1.0: 0.5}, noise=0.02),
    *_rows("domain", "finetune", {0.01: 0.5, 0.1: 0.55, 1.0: 0.9}, noise=0.02),
]


def test_metric_and_chance() -> None:
    assert metric_for("auroc", 2) == "auroc" and metric_for("auroc", 3) == "balanced_accuracy"
    assert chance("auroc", 2) == 0.5 and chance("balanced_accuracy", 4) == 0.25


def test_a_protocol_whose_baselines_sit_at_chance_is_flagged_and_left_out_of_the_headline() -> None:
    summary = report.summarize(ROWS)
    checks = [check_protocol(summary, "defect", p, "auroc", 2) for p in ("knn", "linear_probe", "finetune")]
    assert [c.trained for c in checks] == [True, True, False]
    assert "not clearly above chance" in checks[2].reason and "eval.finetune" in checks[2].fix
    heads = headlines(summary, "defect", "auroc", ROLES, checks)
    assert {h.protocol for h in heads} == {"knn", "linear_probe"}
    lp = next(h for h in heads if h.protocol == "linear_probe")
    # Target: imagenet's 100 % linear probe (0.86); the domain curve crosses it between 1 % and 10 %.
    assert lp.reference == "imagenet" and lp.target == pytest.approx(0.86, abs=0.01)
    assert lp.match.status == "reached" and 0.01 < lp.match.fraction < 0.1
    # The interval brackets the estimate.
    assert lp.optimistic.fraction <= lp.match.fraction <= lp.pessimistic.fraction
    assert "reaches imagenet's linear probe at 100 % of the labels" in lp.sentence()


def test_fine_tuning_below_the_frozen_probe_is_flagged() -> None:
    rows = [r for r in ROWS if r["protocol"] != "finetune"]
    rows += _rows("imagenet", "finetune", {1.0: 0.80})  # above chance, below its own probe (0.86)
    rows += _rows("pixels", "finetune", {1.0: 0.60})
    c = check_protocol(report.summarize(rows), "defect", "finetune", "auroc", 2)
    assert not c.trained and "imagenet: fine-tuning (0." in c.reason and "below its frozen linear probe" in c.reason
    # The best baseline above its own probe: trained, even though a weaker baseline is below its own.
    rows = [r for r in rows if not (r["protocol"] == "finetune" and r["backbone"] == "imagenet")]
    rows += _rows("imagenet", "finetune", {1.0: 0.90})
    assert check_protocol(report.summarize(rows), "defect", "finetune", "auroc", 2).trained


def test_no_headline_when_the_linear_probe_itself_did_not_train() -> None:
    rows = [r for r in ROWS if r["protocol"] == "knn"]
    rows += _rows("imagenet", "linear_probe", {1.0: 0.5}, noise=0.03)
    rows += _rows("domain", "linear_probe", {1.0: 0.9})
    summary = report.summarize(rows)
    checks = [check_protocol(summary, "defect", p, "auroc", 2) for p in ("knn", "linear_probe")]
    assert checks[0].trained and not checks[1].trained
    assert headlines(summary, "defect", "auroc", ROLES, checks) == []


def test_report_page_puts_the_figure_first_and_never_says_matches_on_a_flagged_protocol(tmp_path: Path) -> None:
    summary = report.summarize(ROWS)
    info = PageInfo(1000, "Grouped 5-fold cross-validation.", "Pretraining: none of the 1000 images.")
    metrics, headline = write_report(
        tmp_path, ROWS, summary, ROLES, ["defect"], {"defect": "auroc"}, {"defect": 2}, info
    )
    md = (tmp_path / "report.md").read_text()
    assert md.index("![summary](summary.png)") < md.index("## Headline")
    assert (tmp_path / "summary.png").stat().st_size > 5000
    assert len(headline) == 2 and not any("finetune" in h for h in headline)
    finetune = md[md.index("### defect: finetune") :]
    assert "Under-trained at these settings" in finetune and "matches" not in finetune
    assert "defect.finetune.domain.label_fraction_to_match" not in metrics
    assert "defect.linear_probe.domain.label_fraction_to_match" in metrics


def test_the_headline_carries_the_paired_gap_to_its_target(tmp_path: Path) -> None:
    summary = report.summarize(ROWS)
    checks = [check_protocol(summary, "defect", p, "auroc", 2) for p in ("knn", "linear_probe")]
    (probe,) = [h for h in headlines(summary, "defect", "auroc", ROLES, checks, ROWS) if h.protocol == "linear_probe"]
    assert probe.reference == "imagenet" and probe.gap is not None and probe.gap.n == 10
    assert abs(probe.gap.mean - 0.06) < 0.02 and probe.gap.low > 0
    assert "+0.0" in probe.sentence() and "paired over 10 folds" in probe.sentence()
    # Without the per-fold rows there is no gap, and the sentence says nothing about one.
    (bare,) = [h for h in headlines(summary, "defect", "auroc", ROLES, checks) if h.protocol == "linear_probe"]
    assert bare.gap is None and "paired" not in bare.sentence()
    info = PageInfo(1000, "Grouped 5-fold cross-validation.", "Pretraining: none of the 1000 images.")
    write_report(tmp_path, ROWS, summary, ROLES, ["defect"], {"defect": "auroc"}, {"defect": 2}, info)
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## Paired against the baselines") : md.index("## Results")]
    assert "| domain | imagenet | +0.0" in section and "| domain | pixels | +0.2" in section
