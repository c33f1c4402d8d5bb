"""Score curation against a recipe's planted ground truth (``ground_truth.json``).

Definitions (pool keys are the samples' ``meta.source``):

* **planted group**: an original pool image plus its planted near-copies
  (``copy_of.source == "pool"``; byte-identical copies are removed at ingest
  and counted separately).
* **near-duplicate recall**: planted (copy, original) pairs, both accepted by
  ingest, that dedup put into the same duplicate group, over all such pairs.
* **near-duplicate precision**: removals that are correct over all removals. A
  removal is correct when the removed image and the image it was removed in
  favour of belong to the same planted group (the copy removed for its
  original, the original removed for its larger copy, two copies of one
  original, or two pool copies of one evaluation image). Removing an image
  that has no planted copy is wrong, even when it really is a near-duplicate
  the recipe did not plant (see ``unplanted``).
* **neighbouring cells**: ELPV cells with consecutive numbers are neighbours in
  one module, often near-identical as images though distinct cells (the
  recipe's ground truth gives each ELPV image its ``elpv_cell`` number). They
  are their own category: ``dedup.precision_planted`` is the precision over
  removals that are not such pairs, ``dedup.neighbour_cell_removals`` counts
  those (and their rate among all removals); the same for decontamination.
* **cells of one module**: distinct ELPV cells of one solar module (the
  recipe's ``elpv_module``, the grouping the evaluation's folds use) share the
  module's exposure, vignetting and layout, and the featureless ones are
  near-identical images even at 32 x 32 after the layout is subtracted. Dedup
  removals of such pairs (consecutive neighbours included) are their own
  category too: ``dedup.same_module_removals``; ``dedup.precision_distinct``
  is the precision over removals that are not such pairs.
* **one cell imaged twice**: the ELPV package holds one module twice; the
  ground truth gives both images of such a cell one ``elpv_same_cell``. Those
  pairs are real duplicates the recipe did not plant: counted correct, and
  counted apart (``dedup.same_cell_removals``).
* **decontamination recall**: planted copies of evaluation images that were
  removed as contaminated, over all planted copies present in the pool.
* ``unplanted_adjacent_elpv_cells``: "wrong" removals whose two images are ELPV
  cells with consecutive numbers: neighbouring cells of one module, often
  near-identical as images though distinct cells (docs/curation.md measures them).
* **retrieved in-domain precision**: share of retrieved images whose ground
  truth says ``in_domain``, next to the same share in the pool (base rate).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


def _group_of(gt: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Pool key -> its planted group's original key (only for keys in a planted group)."""
    out: dict[str, str] = {}
    for key, v in gt.items():
        c = v.get("copy_of")
        if c and c.get("source") == "pool":
            out[key] = c["key"]
            out[c["key"]] = c["key"]
        elif c and c.get("source") == "eval":
            out[key] = "eval:" + c["key"]
    return out


def score_dedup(
    gt: Mapping[str, Mapping[str, Any]],
    present: Iterable[str],
    removals: Iterable[tuple[str, str]],
    same_group: Mapping[str, int],
) -> dict[str, float]:
    """Near-duplicate recall/precision.

    Args:
        gt: Ground truth by pool key.
        present: Pool keys accepted by ingest.
        removals: ``(removed_key, kept_key)`` pairs.
        same_group: Pool key -> dedup component label.
    """
    present = set(present)
    group = _group_of(gt)
    pairs = [
        (k, v["copy_of"]["key"])
        for k, v in gt.items()
        if v.get("copy_of", {}).get("source") == "pool" and v.get("transform") != "byte_copy"
    ]
    pairs = [(a, b) for a, b in pairs if a in present and b in present]
    found = sum(1 for a, b in pairs if same_group.get(a) is not None and same_group.get(a) == same_group.get(b))
    removals = list(removals)
    twice = [r for r in removals if _same_cell(gt[r[0]], gt[r[1]])]
    correct = [r for r in removals if r[0] in group and group.get(r[0]) == group.get(r[1])] + twice
    wrong = [r for r in removals if r not in set(correct)]
    adjacent = sum(1 for a, b in wrong if neighbour_cells(gt[a], gt[b]))
    judged = len(removals) - adjacent
    module = sum(1 for a, b in wrong if same_module(gt[a], gt[b]))
    return {
        "dedup.planted_pairs": float(len(pairs)),
        "dedup.pairs_found": float(found),
        "dedup.recall": found / len(pairs) if pairs else float("nan"),
        "dedup.removed": float(len(removals)),
        "dedup.removed_correct": float(len(correct)),
        "dedup.precision": len(correct) / len(removals) if removals else float("nan"),
        "dedup.unplanted": float(len(wrong)),
        "dedup.unplanted_adjacent_elpv_cells": float(adjacent),
        "dedup.neighbour_cell_removals": float(adjacent),
        "dedup.neighbour_cell_rate": adjacent / len(removals) if removals else float("nan"),
        "dedup.precision_planted": len(correct) / judged if judged else float("nan"),
        "dedup.same_module_removals": float(module),
        "dedup.same_cell_removals": float(len(twice)),
        "dedup.precision_distinct": len(correct) / (len(removals) - module) if len(removals) > module else float("nan"),
    }


def _cell(v: Mapping[str, Any]) -> int | None:
    """An entry's ELPV cell number: ``elpv_cell``, else parsed from ``origin`` (older ground truth)."""
    if v.get("elpv_cell") is not None:
        return int(v["elpv_cell"])
    m = re.search(r"elpv/cell(\d+)", str(v.get("origin", "")))
    return int(m.group(1)) if m else None


def neighbour_cells(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Both ELPV cells with consecutive numbers (neighbours in a module, often near-identical images)."""
    ca, cb = _cell(a), _cell(b)
    return ca is not None and cb is not None and abs(ca - cb) == 1


def _same_cell(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two images of one physical ELPV cell that the package holds twice (not a planted copy)."""
    sa, sb = a.get("elpv_same_cell"), b.get("elpv_same_cell")
    return sa is not None and sa == sb and _cell(a) != _cell(b)


def same_module(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two distinct ELPV cells of one solar module (the ground truth's ``elpv_module``)."""
    ma, mb = a.get("elpv_module"), b.get("elpv_module")
    return ma is not None and ma == mb and _cell(a) != _cell(b)


def _adjacent_cells(a: str, b: str) -> bool:
    """:func:`neighbour_cells` of two ``origin`` strings."""
    return neighbour_cells({"origin": a}, {"origin": b})


def score_decontam(
    gt: Mapping[str, Mapping[str, Any]], present: Iterable[str], removed: Iterable[tuple[str, str]]
) -> dict[str, float]:
    """Recall and precision of removing planted copies of evaluation images.

    Args:
        removed: ``(pool_key, eval_key)`` of every removal (eval keys are the eval samples' ``meta.source``).
    """
    present = set(present)
    planted = {k for k, v in gt.items() if v.get("copy_of", {}).get("source") == "eval" and k in present}
    removed = list(removed)
    hit = planted & {p for p, _ in removed}
    unplanted = [(p, e) for p, e in removed if p not in planted]
    adjacent = sum(1 for p, e in unplanted if _adjacent_cells(gt[p].get("origin", ""), f"elpv/{e}"))
    judged = len(removed) - adjacent
    return {
        "decontam.planted": float(len(planted)),
        "decontam.removed": float(len(removed)),
        "decontam.recall": len(hit) / len(planted) if planted else float("nan"),
        "decontam.precision": len(hit) / len(removed) if removed else float("nan"),
        "decontam.unplanted": float(len(unplanted)),
        "decontam.unplanted_adjacent_elpv_cells": float(adjacent),
        "decontam.neighbour_cell_removals": float(adjacent),
        "decontam.precision_planted": len(hit) / judged if judged else float("nan"),
    }


def score_retrieval(
    gt: Mapping[str, Mapping[str, Any]], pool: Iterable[str], retrieved: Iterable[str]
) -> dict[str, float]:
    """In-domain precision of the retrieved set and the pool's base rate."""
    pool, retrieved = list(pool), list(retrieved)
    base = sum(bool(gt[k].get("in_domain")) for k in pool) / len(pool) if pool else float("nan")
    prec = sum(bool(gt[k].get("in_domain")) for k in retrieved) / len(retrieved) if retrieved else float("nan")
    n_in = sum(bool(gt[k].get("in_domain")) for k in pool)
    rec = sum(bool(gt[k].get("in_domain")) for k in retrieved) / n_in if n_in else float("nan")
    return {
        "retrieve.in_domain_precision": prec,
        "retrieve.pool_in_domain_rate": base,
        "retrieve.in_domain_recall": rec,
        "retrieve.size": float(len(retrieved)),
    }
