#!/usr/bin/env python
"""Our pretrain stage against LightlyTrain's DINO on CPU: images/s, loader wait, epoch time, kNN.

Same settings on both sides: timm ViT-Tiny/16, DINO, 2x224 + 6x96 crops, batch 64, one
epoch (``--epochs``) over the 2,624 ELPV images (the ``elpv-dataset`` package), one loader worker,
torch's default threads. LightlyTrain runs in its own venv (it must not touch the
project's environment); see ``docs/results.md`` for the install line.

    # 0. the images, as shards for us (LightlyTrain reads the package's PNG folder)
    python benchmarks/lightlytrain_compare.py shards --out /work/out/cmp
    # 1. LightlyTrain (its own venv), ours fp32, ours bf16 (run them one after another)
    python benchmarks/lightlytrain_compare.py lt    --out /work/out/cmp --python /work/venv-lt/bin/python
    python benchmarks/lightlytrain_compare.py ours  --out /work/out/cmp --precision 32-true
    python benchmarks/lightlytrain_compare.py ours  --out /work/out/cmp --precision bf16-mixed
    # optional: our default recipe, more epochs (both tools), or screens of our settings
    python benchmarks/lightlytrain_compare.py ours  --out /work/out/cmp --method dinov2
    python benchmarks/lightlytrain_compare.py lt    --out /work/out/cmp --epochs 3
    python benchmarks/lightlytrain_compare.py ours  --out /work/out/cmp --name ours_lr --set pretrain.optim.lr=5e-4
    # 2. kNN of every exported backbone on the ELPV demo's eval split, then the report
    python benchmarks/lightlytrain_compare.py knn   --out /work/out/cmp --eval /work/demo_out/elpv_demo/ingest/eval
    python benchmarks/lightlytrain_compare.py report --out /work/out/cmp
    # 2b. the same backbones by 5-fold CV over all 2,624 cells (about half the sampling noise)
    python benchmarks/lightlytrain_compare.py knn   --out /work/out/cmp --elpv-all

Timing uses one definition for both tools: per step, ``step`` = Lightning's batch start
to batch end and ``wait`` = previous batch end to this batch start; the first step of the
epoch (worker start-up) is left out of images/s and loader wait. The kNN is the eval
stage's protocol (``pipeline.evaluation.knn``: cosine, k=20, T=0.07, whole image resized to
224) on the ELPV demo's eval split (train 70 % -> test 30 %). The eval images are among
the 2,624 training images of both tools (unlabelled SSL on them; the same for both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results" / "lightlytrain_compare"
SETTINGS = {
    "model": "vit_tiny_patch16_224",
    "method": "dino",
    "global_crops": "2x224",
    "local_crops": "6x96",
    "batch": 64,
    "epochs": 1,
    "out_dim": 1024,
    "hidden_dim": 2048,
    "bottleneck_dim": 256,
    "loader_workers": 1,
}
# Our stage at LightlyTrain's settings (its DINO: output_dim "auto" = 1024 below 20k images,
# hidden 2048, bottleneck 256). The rest is our demo recipe (conf/experiment/elpv_demo.yaml).
OURS = [
    "tracking=off",
    "progress=false",
    "stage=pretrain",
    "data_recipe=elpv_demo",
    "pretrain/model=vit_tiny",
    "pretrain.augment.global_size=224",
    "pretrain.augment.local_size=96",
    "pretrain.augment.local_crops=6",
    "pretrain.data.batch_size=64",
    "pretrain.data.num_workers=1",
    "pretrain.trainer.checkpoint_every_n_steps=0",
    "pretrain.monitor.knn_every_n_epochs=-1",
    "pretrain.trainer.log_every_n_steps=1",
]
# ``--method dino`` also takes LightlyTrain's DINO head sizes; ``--method dinov2`` is our default recipe.
DINO_HEAD = ["pretrain.method.out_dim=1024", "pretrain.method.hidden_dim=2048", "pretrain.method.bottleneck_dim=256"]


def elpv_images() -> Path:
    import elpv_dataset

    return Path(elpv_dataset.__file__).parent / "data" / "images"


def cmd_shards(a: argparse.Namespace) -> None:
    from pipeline.config.ingest import IngestConfig
    from pipeline.core.manifest import Manifest
    from pipeline.io.ingest import ingest

    folder = Path(a.out) / "elpv_all"
    res = ingest([elpv_images()], folder, IngestConfig(workers=1), progress=False)
    Manifest(stage="ingest", config_hash="elpv_all_2624", counts=res.counts).write(folder)
    print(res.counts)


def _run(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` with its output in ``log``; wall time and load averages around it."""
    before = os.getloadavg()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}).returncode
    if rc:
        raise SystemExit(f"{shlex.join(cmd)} failed ({rc}); see {log}")
    return {"wall_s": time.perf_counter() - t0, "load_before": before, "load_after": os.getloadavg()}


def cmd_lt(a: argparse.Namespace) -> None:
    name = "lt_fp32" if a.epochs == 1 else f"lt_fp32_{a.epochs}ep"
    out = Path(a.out) / "runs" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        a.python,
        str(ROOT / "benchmarks" / "_lt_runner.py"),
        "--data",
        str(elpv_images()),
        "--out",
        str(out),
        "--epochs",
        str(a.epochs),
    ]
    info = _run(cmd, out.parent / f"{name}.log")
    label = f"lightly-train 0.18.0 (dino, fp32, {a.epochs} ep)"
    (out / "run.json").write_text(
        json.dumps({**info, "tool": "lt", "label": label, "epochs": a.epochs}, indent=2) + "\n"
    )


def cmd_ours(a: argparse.Namespace) -> None:
    prec = "bf16" if a.precision.startswith("bf16") else "fp32"
    name = a.name or f"ours_{a.method}_{prec}" + ("" if a.epochs == 1 else f"_{a.epochs}ep")
    root = Path(a.out) / "runs" / name
    method = [f"pretrain/method={a.method}"] + (DINO_HEAD if a.method == "dino" else [])
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *OURS,
        *method,
        f"pretrain.trainer.max_epochs={a.epochs}",
        f"pretrain.data.source={Path(a.out) / 'elpv_all'}",
        f"pretrain.trainer.precision={a.precision}",
        *a.set,
    ]
    info = _run(cmd, root.parent / f"{name}.log", env={"PIPELINE_OUTPUT_ROOT": str(root)})
    label = f"ours ({a.method}, {prec}, {a.epochs} ep{', ' + ' '.join(a.set) if a.set else ''})"
    run = {**info, "tool": "ours", "label": label, "epochs": a.epochs, "overrides": [*method, *a.set]}
    (root / "run.json").write_text(json.dumps(run, indent=2) + "\n")


def _timing(steps: list[float], waits: list[float], batch: int) -> dict:
    """images/s and loader wait without the first step (worker start-up), as both tools define them."""
    s, w = sum(steps[1:]), sum(waits[1:])
    return {
        "steps": len(steps),
        "images_per_s": batch * (len(steps) - 1) / (s + w),
        "loader_wait_frac": w / (s + w),
        "train_loop_s": sum(steps) + sum(waits),
        "median_step_s": sorted(steps[1:])[len(steps[1:]) // 2],
    }


def runs(out: Path) -> dict[str, dict]:
    """``{run folder name: run.json}`` for every finished run under ``out/runs`` (LightlyTrain first)."""
    found = {}
    for d in sorted((out / "runs").glob("*/"), key=lambda d: (not d.name.startswith("lt"), d.name)):
        info = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
        tool = info.get("tool", "lt" if d.name.startswith("lt") else "ours")
        weights = (
            d / "exported_models" / "exported_last.pt" if tool == "lt" else d / "elpv_demo" / "pretrain" / "export"
        )
        if weights.exists():
            found[d.name] = {"label": d.name, **info, "tool": tool, "weights": str(weights), "dir": str(d)}
    return found


def run_timings(out: Path) -> dict[str, dict]:
    res = {}
    for run in runs(out).values():
        d = Path(run["dir"])
        if run["tool"] == "lt":
            t = json.loads((d / "timing.json").read_text())
            r = {
                **_timing(t["step_times_s"], t["wait_times_s"], 64),
                "epoch_s": t["epoch_s"],
                "load_after": t["load_avg_end"],
            }
        else:
            rows = [json.loads(x) for x in (d / "elpv_demo" / "pretrain" / "metrics.jsonl").read_text().splitlines()]
            rows = [r for r in rows if "perf/step_s" in r]
            r = _timing([r["perf/step_s"] for r in rows], [r["perf/loader_wait_s"] for r in rows], 64)
            r.update({k: run[k] for k in ("wall_s", "load_after") if k in run})
        res[run["label"]] = r
    return res


def backbones(out: Path) -> dict[str, tuple[str, str]]:
    """``{label: (kind, weights)}`` of the exported backbones found under ``out/runs``, random init first."""
    return {"random init (reference)": ("random", "")} | {
        r["label"]: (r["tool"], r["weights"]) for r in runs(out).values()
    }


def cmd_knn(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from pipeline.evaluation.dataset import load_eval_set
    from pipeline.evaluation.features import network_features
    from pipeline.evaluation.knn import knn_classify
    from pipeline.evaluation.metrics import classification_metrics
    from pipeline.evaluation.protocols import task_splits

    out = Path(a.out)
    if a.elpv_all:  # every cell is a query once per repeat, its fold's bank the other four folds
        from PIL import Image
        from pretrain_knn_select import cv_bacc, elpv_labels

        from data_recipes.elpv_demo.prepare import elpv_records

        recs = elpv_records()
        images, labels = [Image.open(r["path"]).convert("RGB") for r in recs], elpv_labels(recs)

        def score(feats: np.ndarray) -> dict[str, dict]:
            feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
            return {
                t: {"balanced_accuracy": cv_bacc(feats, y, k=20, repeats=2), "n": len(y)} for t, y in labels.items()
            }

        result, evaluated = out / "knn_elpv_all.json", "all 2,624 ELPV cells, 5-fold CV x 2"
    else:
        data = load_eval_set(Path(a.eval))
        images = data.images

        def score(feats: np.ndarray) -> dict[str, dict]:
            rows = {}
            for tname, task in data.tasks.items():
                tr, te = task_splits(task, data.is_test)
                pred, proba = knn_classify(feats[tr], task.y[tr], feats[te], task.num_classes, k=20, temperature=0.07)
                m = classification_metrics(task.y[te], pred, proba, task.num_classes)
                rows[tname] = {k: float(v) for k, v in m.items()} | {"n_train": len(tr), "n_test": len(te)}
            return rows

        result, evaluated = out / "knn.json", str(a.eval)
    res = {}
    for label, (kind, weights) in backbones(out).items():
        model, norm = _knn_backbone(kind, weights)
        prep = {"size": 224, "interpolation": "bicubic", **norm}
        cache = out / "knn_cache" / (hashlib.sha1((label + ":all" * a.elpv_all).encode()).hexdigest()[:12] + ".npy")
        stamp = f"{weights}:{Path(weights).stat().st_mtime if weights else 0}"
        if cache.is_file() and cache.with_suffix(".txt").read_text() == stamp:
            feats = np.load(cache)
        else:
            with torch.no_grad():
                feats = network_features(model, images, prep)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, feats)
            cache.with_suffix(".txt").write_text(stamp)
        scores = score(feats)
        print(label, json.dumps(scores))
        res[label] = {"weights": weights, "normalisation": norm} | scores
    result.write_text(
        json.dumps({"eval": evaluated, "protocol": "knn k=20 T=0.07, 224 px whole image", "results": res}, indent=2)
        + "\n"
    )


def _knn_backbone(kind: str, weights: str | None) -> tuple[torch.nn.Module, dict[str, list[float]]]:
    """The ViT-Tiny/16 to score and its input normalisation: ours, LightlyTrain's export, or random init."""
    import timm
    import torch

    from pipeline.config.models import BackboneConfig
    from pipeline.models.backbone import create_backbone, load_state_dict, read_export

    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if kind == "ours":
        cfg = read_export(weights).get("pretrained_cfg", {})
        norm = {"mean": list(cfg.get("mean", imagenet["mean"])), "std": list(cfg.get("std", imagenet["std"]))}
        return create_backbone(BackboneConfig("vit_tiny_patch16_224", weights=weights)), norm
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    if kind == "lt":  # LightlyTrain's export is the timm state dict; it trains on ImageNet-normalised RGB
        missing, unexpected = model.load_state_dict(load_state_dict(weights), strict=False)
        # its export keeps timm's 1000-class head, which num_classes=0 leaves out
        if missing or any(not k.startswith("head.") for k in unexpected):
            raise RuntimeError(f"{weights}: missing {missing}, unexpected {unexpected}")
    return model, imagenet


def cmd_report(a: argparse.Namespace) -> None:
    out = Path(a.out)
    timing = run_timings(out)
    knn = json.loads((out / "knn.json").read_text()) if (out / "knn.json").is_file() else {"results": {}}
    import platform

    import torch

    res = {
        "settings": SETTINGS,
        "timing": timing,
        "knn": knn,
        "machine": f"{platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "notes": a.notes or "",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        "# Ours vs LightlyTrain on CPU (2,624 ELPV images, ViT-Tiny/16, 2x224 + 6x96 crops, batch 64)",
        "",
        f"Machine: {res['machine']}",
        "",
        res["notes"],
        "",
        "| run | images/s | median step s | loader wait | train loop s | load avg after (1/5/15 min) |",
        "|---|---|---|---|---|---|",
    ]
    for k, t in timing.items():
        la = "/".join(f"{x:.1f}" for x in t.get("load_after", []))
        lines.append(
            f"| {k} | {t['images_per_s']:.2f} | {t['median_step_s']:.1f} | {100 * t['loader_wait_frac']:.2f} % | "
            f"{t['train_loop_s']:.0f} | {la} |"
        )
    lines += [
        "",
        f"kNN ({knn.get('protocol', '')}) on {knn.get('eval', '')}:",
        "",
        "| backbone | defect balanced acc. | defect AUROC | type balanced acc. |",
        "|---|---|---|---|",
    ]
    for k, r in knn["results"].items():
        d, t = r.get("defect", {}), r.get("type", {})
        lines.append(
            f"| {k} | {d.get('balanced_accuracy', float('nan')):.3f} | {d.get('auroc', float('nan')):.3f} | "
            f"{t.get('balanced_accuracy', float('nan')):.3f} |"
        )
    every = out / "knn_elpv_all.json"
    if every.is_file():
        allk = json.loads(every.read_text())
        res["knn_elpv_all"] = allk
        RESULTS.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        lines += [
            "",
            f"kNN ({allk['protocol']}) by 5-fold CV over {allk['eval']} (`knn --elpv-all`):",
            "",
            "| backbone | defect balanced acc. | type balanced acc. |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k} | {r['defect']['balanced_accuracy']:.3f} | {r['type']['balanced_accuracy']:.3f} |"
            for k, r in allk["results"].items()
        ]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["shards", "lt", "ours", "knn", "report"])
    p.add_argument("--out", required=True, help="work folder (shards, runs, knn.json)")
    p.add_argument("--python", default="/work/venv-lt/bin/python", help="LightlyTrain's venv python")
    p.add_argument("--precision", default="32-true", help="ours: 32-true or bf16-mixed")
    p.add_argument("--epochs", type=int, default=1, help="lt, ours: epochs over the 2,624 images")
    p.add_argument("--method", default="dino", choices=["dino", "dinov2"], help="ours: the method config")
    p.add_argument("--name", default="", help="ours: run folder name (default from method, precision, epochs)")
    p.add_argument("--set", nargs="*", default=[], help="ours: extra Hydra overrides")
    p.add_argument("--eval", default="/work/demo_out/elpv_demo/ingest/eval", help="ingest/eval folder with labels")
    p.add_argument("--elpv-all", action="store_true", help="knn: 5-fold CV over all 2,624 ELPV cells instead of --eval")
    p.add_argument("--notes", default="", help="report: free text (load, what overlapped)")
    a = p.parse_args()
    {"shards": cmd_shards, "lt": cmd_lt, "ours": cmd_ours, "knn": cmd_knn, "report": cmd_report}[a.command](a)


if __name__ == "__main__":
    main()
