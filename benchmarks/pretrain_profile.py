#!/usr/bin/env python
"""Where a pretraining step's time goes: device kernels by category, and the top kernels.

    python benchmarks/pretrain_profile.py --model vit_base_patch16_224 --batch 128 --compile off
    python benchmarks/pretrain_profile.py --model vit_base_patch16_224 --batch 128 --compile full --tag compiled
    python benchmarks/pretrain_profile.py --model vit_base_patch16_224 --batch 128 --compile full --param-dtype bfloat16

Same step, views and settings as ``pretrain_throughput.py`` (DINOv2 recipe on GPU). Kernels are
grouped into matrix products, attention, optimizer and "other" (element-wise and reductions:
LayerNorm, GELU, residual adds, casts, softmax of the heads), so the fraction of the step that is
memory-bound shows at once. Results: ``benchmarks/results/pretrain_profile_<tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import pretrain_throughput as pt
import torch
from torch.profiler import ProfilerActivity, profile

CATEGORIES = (
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "wgmma", "cublas", "aten::mm", "addmm", "bmm")),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
)


def category(kernel: str) -> str:
    k = kernel.lower()
    return next((name for name, keys in CATEGORIES if any(s in k for s in keys)), "other")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--compile", default="off", choices=pt.COMPILE_MODES)
    p.add_argument("--param-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--impl", default="ours", choices=["ours", "reference"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tag", default=None)
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    s = argparse.Namespace(
        global_size=224 if gpu else 64,
        local_size=96 if gpu else 32,
        local_crops=8 if gpu else 2,
        out_dim=65536 if gpu else 2048,
        method="dinov2",
        drop_path=0.1,
        fused_adamw=1,
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    m, opt, step = pt.build(a.impl, a.model, s, device, a.param_dtype)
    v = pt.views(a.batch, s, device)
    pt.apply_compile(m, a.compile)
    for _ in range(3):
        step(m, opt, v, device)
    pt.sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(a.steps):
            step(m, opt, v, device)
        pt.sync(device)
    wall = (time.perf_counter() - t0) / a.steps
    per_kernel: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        t = e.device_time_total if gpu else e.self_cpu_time_total
        if t > 0 and (not gpu or e.device_type.name == "CUDA"):
            per_kernel[e.key] += t / 1e6 / a.steps
    by_cat: dict[str, float] = defaultdict(float)
    for k, t in per_kernel.items():
        by_cat[category(k)] += t
    busy = sum(by_cat.values())
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:20]
    res = {
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "model": a.model,
        "batch": a.batch,
        "compile": a.compile,
        "param_dtype": a.param_dtype,
        "impl": a.impl,
        "step_wall_s": wall,
        "kernel_busy_s": busy,
        "categories_s": dict(by_cat),
        "top_kernels_s": top,
    }
    tag = a.tag or f"{a.model}_{a.impl}_compile-{a.compile}_{a.param_dtype}"
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"pretrain_profile_{tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"# Step profile: {a.impl}, {a.model}, batch {a.batch}, compile {a.compile}, params {a.param_dtype} "
        f"({res['device']})",
        "",
        f"Step wall {wall * 1e3:.1f} ms; kernels busy {busy * 1e3:.1f} ms ({100 * busy / wall:.0f} % of wall).",
        "",
        "| category | ms/step | share of kernel time |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c} | {t * 1e3:.1f} | {100 * t / busy:.1f} % |" for c, t in sorted(by_cat.items(), key=lambda kv: -kv[1])
    ]
    lines += ["", "| kernel | ms/step | category |", "|---|---|---|"]
    lines += [f"| `{k[:90]}` | {t * 1e3:.2f} | {category(k)} |" for k, t in top]
    (out / f"pretrain_profile_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
