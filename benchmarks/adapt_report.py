"""Paired comparison of adapted backbones with their generic start, from an eval stage's ``results.csv``.

Shared by ``adapt_side_by_side.py`` (CPU) and ``gpu_adapt.py`` (one GPU call). Every backbone is
scored on the same folds (same fold partitions, same label draws), so the per-fold difference to the
generic start removes the fold-to-fold spread both share. A backbone named ``<arm>_s<seed>`` is one
pretraining seed of ``<arm>``; the gain of an arm over seeds is the mean of its per-seed mean gains.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOLS = ("knn", "linear_probe", "patchcore")
TARGET_GAIN = 0.02  # the mean paired gain the adapted backbone should reach, and twice its sd


def read_rows(results_csv: Path, fraction: float = 1.0) -> list[dict[str, Any]]:
    """The rows of the primary (first) task at ``fraction`` of the labels, AUROC columns as floats."""
    with results_csv.open() as f:
        rows = list(csv.DictReader(f))
    task = rows[0]["task"]
    out = []
    for r in rows:
        if r["task"] != task or r["protocol"] not in PROTOCOLS or abs(float(r["fraction"]) - fraction) > 1e-9:
            continue
        out.append({
            "backbone": r["backbone"], "protocol": r["protocol"], "seed": int(r["seed"]), "fold": int(r["fold"]),
            "auroc": _float(r.get("auroc")), "heldout_auroc": _float(r.get("heldout_auroc")),
        })  # fmt: skip
    return out


def _float(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": len(v), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}  # fmt: skip


def summarise(rows: list[dict[str, Any]], generic: str) -> dict[str, Any]:
    """Per backbone and protocol: AUROC over folds (all cells, held-out cells) and the paired difference."""
    by: dict[tuple[str, str], dict[tuple[int, int], dict[str, float]]] = defaultdict(dict)
    for r in rows:
        by[(r["backbone"], r["protocol"])][(r["seed"], r["fold"])] = r
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    out: dict[str, Any] = {}
    for b in backbones:
        out[b] = {}
        for p in PROTOCOLS:
            cells = by.get((b, p))
            if not cells:
                continue
            base = by.get((generic, p), {})
            entry: dict[str, Any] = {}
            for col in ("auroc", "heldout_auroc"):
                entry[col] = _stats([c[col] for c in cells.values()])
                if b != generic and base:
                    diffs = [cells[k][col] - base[k][col] for k in sorted(cells) if k in base]
                    diffs = [d for d in diffs if not math.isnan(d)]  # held-out: none for the patch protocol
                    entry[f"paired_{col}"] = _stats(diffs)
                    entry[f"paired_{col}_folds"] = diffs
            out[b][p] = entry
    return out


def seed_gain(summary: dict[str, Any], arm: str, col: str = "auroc") -> dict[str, Any]:
    """An arm's paired gain over its pretraining seeds (backbones ``<arm>_s<seed>``), per protocol."""
    names = sorted(b for b in summary if b.rsplit("_s", 1)[0] == arm and b.rsplit("_s", 1)[-1].isdigit())
    out: dict[str, Any] = {"seeds": names}
    for p in PROTOCOLS:
        per_seed = [summary[b][p][f"paired_{col}"]["mean"] for b in names if p in summary[b]]
        pooled = [d for b in names if p in summary[b] for d in summary[b][p][f"paired_{col}_folds"]]
        if not per_seed or any(v is None for v in per_seed):
            continue
        mean = float(np.mean(per_seed))
        sd_seeds = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
        sd_pooled = float(np.std(pooled, ddof=1)) if len(pooled) > 1 else None
        out[p] = {
            "per_seed_mean": per_seed,
            "mean": mean,
            "sd_over_seeds": sd_seeds,
            "sd_over_seed_folds": sd_pooled,
            "every_seed_above_zero": all(v > 0 for v in per_seed),
            "meets_target": bool(
                mean >= TARGET_GAIN
                and sd_seeds is not None
                and sd_pooled is not None
                and mean >= 2 * max(sd_seeds, sd_pooled)
                and all(v > 0 for v in per_seed)
            ),
        }
    return out


def hurts(entry: dict[str, Any]) -> bool | None:
    """Worse than the generic start beyond the paired noise: mean difference below -2 standard errors."""
    s = entry.get("paired_auroc")
    if not s or s["n"] < 2:
        return None
    return bool(s["mean"] < 0 and -s["mean"] > 2 * s["sd"] / math.sqrt(s["n"]))


def _fmt(s: dict[str, Any] | None, sign: bool = False) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:+.3f} ± {s['sd']:.3f}" if sign else f"{s['mean']:.3f} ± {s['sd']:.3f}"


def markdown(result: dict[str, Any], labels: dict[str, str], generic: str) -> str:
    lines = [f"# {result['benchmark']} on {result['device']}", "",
             "Defect AUROC at 100 % of the labels, mean ± sd over folds (all cells | held-out cells only); "
             f"paired: per-fold difference to `{generic}`, mean ± sd. Patch-level: no held-out split.", ""]  # fmt: skip
    head = "| backbone | kNN | paired | probe | paired | patch-level | paired | kNN held-out | probe held-out |"
    lines += [head, "|" + "---|" * 9]
    for b, per in result["summary"].items():
        arm = b.rsplit("_s", 1)[0]
        name = f"{labels.get(arm, labels.get(b, b))} (`{b}`)"
        cells = []
        for p in PROTOCOLS:
            e = per.get(p, {})
            cells += [_fmt(e.get("auroc")), _fmt(e.get("paired_auroc"), sign=True)]
        cells += [_fmt(per.get("knn", {}).get("heldout_auroc")), _fmt(per.get("linear_probe", {}).get("heldout_auroc"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| run | steps | images/s (training steps) | wall s (stage command) |", "|---|---|---|---|"]
    for name, r in result["pretrain"].items():
        ips = r.get("images_per_s")
        lines.append(
            f"| `{name}` | {r['steps']} | {ips:.2f} | {r['wall_s']:.0f} |" if ips else f"| `{name}` | - | - | - |"
        )
    for arm, g in result.get("seed_gain", {}).items():
        if len(g.get("seeds", [])) < 2:
            continue
        lines += ["", f"Paired gain of `{arm}` over pretraining seeds {g['seeds']} (target: mean >= {TARGET_GAIN}, "
                  ">= 2 sd, every seed above zero):", ""]  # fmt: skip
        for p in PROTOCOLS:
            if p in g:
                s = g[p]
                lines.append(f"- {p}: per seed {', '.join(f'{v:+.3f}' for v in s['per_seed_mean'])}; mean "
                             f"{s['mean']:+.3f}, sd over seeds {s['sd_over_seeds']:.3f}, over seed x fold "
                             f"{s['sd_over_seed_folds']:.3f}; target met: {s['meets_target']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(
    results_csv: Path,
    pretrain: dict[str, Any],
    eval_info: dict[str, Any],
    out_stem: Path,
    labels: dict[str, str],
    generic: str,
    params: dict[str, Any],
    device: str = "CPU (2 cores)",
) -> dict[str, Any]:
    """``<out_stem>.json`` and ``.md``: the summary, paired gains, per-seed gains and the runs' timings."""
    summary = summarise(read_rows(results_csv), generic)
    arms = sorted({b.rsplit("_s", 1)[0] for b in summary if b != generic})
    result = {
        "benchmark": out_stem.name,
        "device": device,
        "params": params,
        "summary": summary,
        "seed_gain": {a: seed_gain(summary, a) for a in arms},
        "hurts_beyond_noise": {b: {p: hurts(e) for p, e in per.items()} for b, per in summary.items() if b != generic},
        "pretrain": pretrain,
        "eval": {"wall_s": eval_info.get("wall_s"), "backbones": eval_info.get("backbones")},
    }
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out_stem.with_suffix(".md").write_text(markdown(result, labels, generic))
    print(out_stem.with_suffix(".md").read_text(), flush=True)
    return result
