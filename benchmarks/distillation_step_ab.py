#!/usr/bin/env python
"""A/B of the DINO training step: the [CLS]-only last block vs full encodes (the code before it).

A = the step as it was (``encode(x)[:, 0]`` for teacher globals, student globals and
local crops, two student-head calls); B = :func:`pipeline.pretrain.methods.cls_encoder.encode_cls`
and one head call. Same weights, same views; A and B alternate step by step so both see
the same machine load; the losses of the first A and B steps are compared too.

    OMP_NUM_THREADS=2 python benchmarks/distillation_step_ab.py --batch 16 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from pretrain_throughput import make_method, views

from pipeline.pretrain.methods import StepInputs
from pipeline.pretrain.methods import distillation as dist

FULL = dist.encode_cls


def full_encode(enc, x, dtype=None):  # the pre-change path (fp32 weights only)
    return enc.encode(x)[:, 0]


def step(m, opt, v, cls_only: bool, bf16: bool) -> tuple[float, float]:
    dist.encode_cls = FULL if cls_only else full_encode
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = m.loss(v, StepInputs(teacher_temp=0.04, n_global=2))
    loss.backward()
    opt.zero_grad(set_to_none=True)  # no optimizer step: A and B keep training the same weights
    return time.perf_counter() - t0, float(loss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out-dim", type=int, default=1024)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "distillation_step_ab.json"))
    a = p.parse_args()
    shape = argparse.Namespace(global_size=224, local_size=96, local_crops=6)
    torch.manual_seed(0)
    m = make_method("vit_tiny_patch16_224", 224, "dino", a.out_dim, torch.device("cpu"))
    opt = torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4)
    v = views(a.batch, shape, torch.device("cpu"))
    load0 = os.getloadavg()
    step(m, opt, v, False, a.bf16)  # warm-up both paths
    step(m, opt, v, True, a.bf16)
    times: dict[str, list[float]] = {"full": [], "cls_only": []}
    losses: dict[str, list[float]] = {"full": [], "cls_only": []}
    for r in range(a.rounds):
        for name in (("full", "cls_only") if r % 2 == 0 else ("cls_only", "full")):
            # the DINO centre moves every call; reset it so both paths see the same loss inputs
            m.dino_loss.center.zero_()
            t, loss = step(m, opt, v, name == "cls_only", a.bf16)
            times[name].append(t)
            losses[name].append(loss)
    med = {k: statistics.median(x) for k, x in times.items()}
    res = {"batch": a.batch, "out_dim": a.out_dim, "bf16": a.bf16, "crops": "2x224+6x96", "rounds": a.rounds,
           "median_step_s": med, "speedup": med["full"] / med["cls_only"], "times_s": times,
           "loss_max_abs_diff": max(abs(x - y) for x, y in zip(losses["full"], losses["cls_only"])),
           "threads": torch.get_num_threads(), "load_before": load0, "load_after": os.getloadavg()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
