#!/usr/bin/env python
"""Does the DINO [CLS] loss learn at all on ELPV? A bare training loop, no Lightning, no schedules.

A constant lr, a constant teacher EMA and temperature, DINO loss only (iBOT and KoLeo off), a
6-block ViT-Tiny on 64 px global + 2x32 px local crops of every third ELPV cell (grayscale preset).
It prints the DINO loss and the teacher's target entropies (``diag/teacher_entropy``: per image,
as a fraction of log K; near 1 = uniform targets) every 20 steps. experiments/README.md gives its conclusion.

    python experiments/dino_bare_loop.py --lr 1e-4 --momentum 0.996 --teacher-temp 0.04
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf
from PIL import Image

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig
from pipeline.config.pretrain import MethodConfig, ModelConfig
from pipeline.pretrain.backbone_init import build_vit
from pipeline.pretrain.methods import StepInputs
from pipeline.pretrain.methods.self_distillation import SelfDistillation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--momentum", type=float, default=0.996)
    p.add_argument("--teacher-temp", type=float, default=0.04)
    p.add_argument("--centering", default="softmax", choices=["softmax", "sinkhorn"])
    p.add_argument("--out-dim", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=121)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--global-scale", type=float, nargs=2, default=[0.32, 1.0])
    p.add_argument("--local-crops", type=int, default=2)
    p.add_argument("--jitter-prob", type=float, default=0.8, help="brightness/contrast jitter probability")
    p.add_argument("--blur", type=float, default=1.0)
    p.add_argument("--solarize", type=float, default=0.2)
    p.add_argument("--head-bn", action="store_true", help="BatchNorm in the DINO head's MLP")
    a = p.parse_args()
    pl.seed_everything(a.seed, verbose=False)
    imgs = [Image.open(r["path"]).convert("L") for r in elpv_records()[::3]]
    photometric = {"jitter_prob": a.jitter_prob, "blur": a.blur, "solarize": a.solarize}
    crops = MultiCrop(
        AugmentConfig(
            preset="grayscale",
            global_size=64,
            local_size=32,
            local_crops=a.local_crops,
            global_scale=tuple(a.global_scale),
            **photometric,
        )
    )
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/pretrain/model/vit_mini.yaml")
    cfg.pop("defaults", None)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg)  # the option file states only what differs
    spec = MethodConfig(
        out_dim=a.out_dim, centering=a.centering, head_batch_norm=a.head_bn, ibot_weight=0.0, koleo_weight=0.0
    )
    method = SelfDistillation(build_vit(cfg, 64)[0], spec)
    params = [q for m in method.trainable_modules() for q in m.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.04)
    for step in range(a.steps):
        idx = torch.randint(len(imgs), (a.batch,))
        views = [torch.stack(v) for v in zip(*[crops(imgs[i]) for i in idx], strict=True)]
        loss, parts = method.loss(views, StepInputs(teacher_temp=a.teacher_temp, n_global=2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.update_teacher(a.momentum)
        if step % 20 == 0:
            d = method.diagnostics()
            print(
                f"step {step:4d}  dino {float(parts['dino']):.3f}  teacher entropy per image "
                f"{float(d['teacher_entropy']):.3f}  of the batch mean {float(d['teacher_batch_entropy']):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
