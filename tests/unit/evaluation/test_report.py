"""The label-efficiency report: seed aggregation, CSV, curves, markdown table, efficiency lines, plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import report
from pipeline.evaluation.label_efficiency import efficiency_against_baselines


def _row(backbone: str, frac: float, seed: int, acc: float, auroc: float | None = None, **kw: Any) -> dict[str, Any]:
    """One per-run row as the protocols return it (knn on task ``defect`` unless overridden)."""
    role = "domain" if backbone == "domain" else "baseline"
    r = {
        "backbone": backbone,
        "role": role,
        "task": "defect",
        "protocol": "knn",
        "fraction": frac,
        "seed": seed,
        "n_labels": int(100 * frac) + seed,
        "accuracy": acc,
        "balanced_accuracy": acc,
        "macro_f1": acc,
        **kw,
    }
    if auroc is not None:
        r["auroc"] = auroc
    return r


ROWS = [
    _row("domain", 1.0, 0, 0.9, auroc=0.95),
    _row("domain", 1.0, 1, 0.8, auroc=float("nan")),
    _row("domain", 0.1, 0, 0.7),
    _row("pixels", 1.0, 0, 0.6, auroc=0.65),
    _row("pixels", 0.1, 0, 0.5, auroc=0.55, protocol="linear_probe"),
]


def test_summarize_corrects_the_interval_of_cross_validation_folds() -> None:
    rows = [
        {**_row("domain", 1.0, seed, acc), "fold": fold, "n_test": 20, "n_pool": 80}
        for seed, fold, acc in [(0, 0, 0.8), (0, 1, 0.9), (1, 0, 0.85), (1, 1, 0.75)]
    ]
    (s,) = report.summarize(rows)
    assert s["seeds"] == 2 and s["folds"] == 4
    sd = float(np.std([0.8, 0.9, 0.85, 0.75], ddof=1))
    assert s["accuracy_se"] == pytest.approx(sd * math.sqrt(1 / 4 + 20 / 80))
    # A fixed split (one fold per seed) is not corrected.
    (split,) = report.summarize([_row("domain", 1.0, 0, 0.8), _row("domain", 1.0, 1, 0.9)])
    assert split["accuracy_se"] == pytest.approx(float(np.std([0.8, 0.9], ddof=1)) / math.sqrt(2))


def test_summarize_aggregates_seeds_with_sample_std_and_skips_missing_values() -> None:
    summary = report.summarize(ROWS)
    by_key = {(s["backbone"], s["protocol"], s["fraction"]): s for s in summary}
    assert len(summary) == 4
    d = by_key[("domain", "knn", 1.0)]
    assert d["seeds"] == 2 and d["n_labels"] == pytest.approx(100.5)
    assert d["accuracy_mean"] == pytest.approx(0.85)
    assert d["accuracy_std"] == pytest.approx(math.sqrt(0.005))  # ddof=1: ((0.05^2)*2)/1
    # auroc: one NaN, one value -> mean of the value, std 0 (one seed counted).
    assert d["auroc_mean"] == pytest.approx(0.95) and d["auroc_std"] == 0.0
    one = by_key[("domain", "knn", 0.1)]
    assert one["accuracy_std"] == 0.0
    assert math.isnan(one["auroc_mean"]) and math.isnan(one["auroc_std"])  # never measured
    # Sorted by task, protocol, backbone, fraction.
    assert [(s["protocol"], s["backbone"], s["fraction"]) for s in summary] == [
        ("knn", "domain", 0.1),
        ("knn", "domain", 1.0),
        ("knn", "pixels", 1.0),
        ("linear_probe", "pixels", 0.1),
    ]


def test_write_csv_takes_the_union_of_columns_in_first_seen_order(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": 2.5}, {"b": 3, "c": "x"}]
    path = report.write_csv(rows, tmp_path / "sub" / "out.csv")
    with path.open() as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
    assert reader.fieldnames == ["a", "b", "c"]
    assert got == [{"a": "1", "b": "2.5", "c": ""}, {"a": "", "b": "3", "c": "x"}]


def test_curves_select_one_task_and_protocol() -> None:
    summary = report.summarize([*ROWS, _row("domain", 1.0, 0, 0.1, task="type")])
    assert report.curves(summary, "defect", "knn", "accuracy") == {
        "domain": {0.1: pytest.approx(0.7), 1.0: pytest.approx(0.85)},
        "pixels": {1.0: pytest.approx(0.6)},
    }
    assert report.curves(summary, "defect", "linear_probe", "accuracy") == {"pixels": {0.1: pytest.approx(0.5)}}
    assert report.curves(summary, "defect", "finetune", "accuracy") == {}


def test_markdown_table_has_one_row_per_backbone_and_dashes_for_missing_cells() -> None:
    table = report.markdown_table(report.summarize(ROWS), "defect", "knn", "accuracy").splitlines()
    assert table[0] == "| backbone | 10 % | 100 % |"
    assert table[1] == "|---|---|---|"
    # Two seeds give a t interval (1 degree of freedom: wide); a single score has none and shows ± std.
    half = 12.706 * 0.05  # t(0.975, 1) x std / sqrt(2)
    assert table[2] == f"| domain | 0.700 ± 0.000 | 0.850 [{0.85 - half:.3f}, 1.000] |"  # clipped to [0, 1]
    assert table[3] == "| pixels | - | 0.600 ± 0.000 |"
    assert len(table) == 4
    # A metric never measured for a cell reads "-", not "nan".
    auroc = report.markdown_table(report.summarize(ROWS), "defect", "knn", "auroc").splitlines()
    assert auroc[2] == "| domain | - | 0.950 ± 0.000 |"


def test_efficiency_lines_one_bullet_per_backbone_in_name_order() -> None:
    summary = report.summarize(ROWS)
    roles = {"domain": "domain", "pixels": "baseline"}
    eff = efficiency_against_baselines(report.curves(summary, "defect", "knn", "accuracy"), roles)
    lines = report.efficiency_lines(eff, "accuracy")
    # Only "domain" has another baseline to compare with; it beats pixels' 0.6 already at 10 %.
    assert lines == [f"- {eff['domain'].match.sentence('**domain**', 'pixels', 'accuracy')}"]
    assert lines[0].startswith("- **domain** matches pixels at 100 % of the labels (accuracy 0.600)")
    assert "<= 10 %" in lines[0]


def test_plot_label_efficiency_writes_a_png_of_the_figure_size(tmp_path: Path) -> None:
    path = report.plot_label_efficiency(report.summarize(ROWS), "defect", "knn", "accuracy", tmp_path / "a" / "p.png")
    assert path == tmp_path / "a" / "p.png" and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (768, 528)  # 6.4 x 4.4 in at 120 dpi


def test_patch_section_tables_each_task_and_links_its_heat_maps() -> None:
    rows = [
        {
            "backbone": b,
            "role": "baseline",
            "task": "defect",
            "protocol": "patchcore",
            "fraction": 1.0,
            "seed": 0,
            "n_labels": 10,
            "accuracy": 0.5,
            "balanced_accuracy": 0.6,
            "macro_f1": 0.55,
            "auroc": a,
        }
        for b, a in (("imagenet", 0.8), ("random", 0.6))
    ]
    lines = report.patch_section(report.summarize(rows), {"defect": ["patch_heatmaps_defect_imagenet.png"]})
    md = "\n".join(lines)
    assert "| imagenet | 0.800 ± 0.000 | 0.600 ± 0.000 | 0.550 ± 0.000 |" in md
    assert "| random | 0.600 ± 0.000 |" in md
    assert "![defect heat maps](patch_heatmaps_defect_imagenet.png)" in md
