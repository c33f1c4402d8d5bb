#!/usr/bin/env python
"""Continued DINO from ImageNet Lite0 on ELPV at a GPU schedule, paired against the generic start.

The claim of ``adapt_side_by_side.py``'s ``dino`` arm at a budget a CPU cannot afford, in one call:
ingest and curate once, then per pretraining seed the pretrain stage with ``experiment=elpv_demo`` (the demo default)
on 224 px global and 96 px local crops, bf16, ``--epochs`` passes over the curated shards (the
schedule's phases keep the demo default's proportions of the run: heads alone for the first quarter,
the backbone ramped in over the next, the teacher temperature warmed over the first half), then
one eval-stage run over the grouped folds with the generic start and every seed's export, and the
paired report (``adapt_report.py``). A seed starts only when it (as long as the one before) and
the eval (``--eval-reserve-s``) still fit in ``--deadline-s`` (7 minutes), so the eval always runs.
Results: ``<out-dir>/gpu_adapt_<device>.{json,md}``, plus the run logs, stage manifests and the
eval's ``results.csv`` under ``<out-dir>/gpu_adapt_files``.

    python benchmarks/gpu_adapt.py --out-dir "$OUT"                 # one GPU call, under 8 minutes
    PYTHONPATH=$PWD python benchmarks/gpu_adapt.py --smoke --out-dir /tmp/gpu_adapt_smoke   # CPU, < 2 min
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from adapt_report import write_report  # noqa: E402
from adapt_side_by_side import (  # noqa: E402
    DINO,
    EVAL_FOLDER,
    GENERIC,
    LABELS,
    RECIPE,
    finished_arms,
    merge_overrides,
    pretrain_arm,
    run_eval,
    run_py,
)
from gpu_common import device_name, device_slug  # noqa: E402


def schedule(epochs: int, args: argparse.Namespace) -> list[str]:
    """The GPU schedule: the demo default's settings, its phases stretched to ``epochs``, larger crops and batch."""
    e = float(epochs)
    return [
        f"pretrain.trainer.max_epochs={epochs}",
        f"pretrain.optim.warmup_epochs={0.1 * e:g}",
        f"pretrain.optim.freeze_backbone_epochs={0.25 * e:g}",
        f"pretrain.optim.backbone_warmup_epochs={0.25 * e:g}",
        f"pretrain.method.warmup_teacher_temp_epochs={0.5 * e:g}",
        f"pretrain.augment.global_size={args.global_size}",
        f"pretrain.augment.local_size={args.local_size}",
        f"pretrain.augment.local_crops={args.local_crops}",
        f"pretrain.data.batch_size={args.batch_size}",
        f"pretrain.data.num_workers={args.workers}",
        f"pretrain.trainer.precision={args.precision}",
        "pretrain.monitor.knn_every_n_epochs=0",  # the online kNN at the start and the end only
        "pretrain.onnx=false",
        "pretrain.trainer.checkpoint_every_n_steps=0",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/gpu_adapt"), help="work folder (exports, caches)")
    ap.add_argument("--out-dir", type=Path, default=Path(os.environ.get("OUT", REPO / "benchmarks" / "results")))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--local-crops", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--deadline-s", type=float, default=420.0, help="whole run; a seed starts only if it fits")
    ap.add_argument("--eval-reserve-s", type=float, default=90.0, help="time kept for the eval and the report")
    ap.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2], help="fold partitions")
    ap.add_argument("--source", default="curate", help="pretrain.data.source (curate or pool)")
    ap.add_argument("--smoke", action="store_true", help="CPU: 2 steps of 64 px crops, 320 eval cells")
    args = ap.parse_args()
    args.eval_extra, args.only = [], []
    extra: list[str] = [f"pretrain.data.source={args.source}"]
    if args.smoke:
        args.seeds, args.eval_seeds, args.deadline_s = args.seeds[:1], [0], 1e9
        args.global_size, args.local_size, args.local_crops, args.batch_size = 64, 32, 2, 4
        args.precision, args.source = "32-true", "pool"
        extra = ["pretrain.data.source=pool", "pretrain.trainer.max_steps=2", "pretrain.monitor.knn_max_images=64"]
        args.eval_extra = ["eval.limit=320", "eval.patchcore.img_size=64", "eval.patchcore.patches_per_image=4"]
    t_start = time.perf_counter()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    stages = ["ingest"] if args.source == "pool" else ["ingest", "curate"]
    for stage in stages:
        timings[stage] = run_py(root, [f"stage={stage}"], root / "logs" / f"{stage}.log")
        print(f"{stage}: {timings[stage]:.0f} s", flush=True)
    records: dict[str, dict] = {}
    for seed in args.seeds:
        # the next seed is assumed to take as long as the last one; the eval must still fit after it
        last = records[next(reversed(records))]["wall_s"] if records else 0.0
        if records and time.perf_counter() - t_start + last + args.eval_reserve_s > args.deadline_s:
            print(f"no time for seed {seed} within --deadline-s: seeds {list(records)} only", flush=True)
            break
        overrides = merge_overrides(["stage=pretrain", f"seed={seed}"], DINO, schedule(args.epochs, args), extra)
        records[f"dino_s{seed}"] = pretrain_arm(root, "dino", seed, overrides)
    eval_info = run_eval(root, finished_arms(root), args)
    timings["eval"] = eval_info["wall_s"]
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    slug = device_slug(dev)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    params.update({"timings_s": timings, "total_s": time.perf_counter() - t_start, "cpu_count": os.cpu_count()})
    tag = "_smoke" if args.smoke else ""
    write_report(
        root / RECIPE / EVAL_FOLDER / "report" / "results.csv",
        records,
        eval_info,
        args.out_dir / f"gpu_adapt_{slug}{tag}",
        labels=LABELS,
        generic=GENERIC,
        params=params,
        device=device_name(dev),
    )
    # What explains the figures, small enough to come back from a device call.
    files = args.out_dir / "gpu_adapt_files"
    files.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "logs", files / "logs", dirs_exist_ok=True)
    shutil.copy(root / RECIPE / EVAL_FOLDER / "report" / "results.csv", files / "results.csv")
    for name in records:
        src = root / "arms" / name / RECIPE / "pretrain"
        shutil.copy(src / "manifest.json", files / f"pretrain_manifest_{name}.json")
        if (src / "metrics.jsonl").is_file():
            shutil.copy(src / "metrics.jsonl", files / f"pretrain_metrics_{name}.jsonl")
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
