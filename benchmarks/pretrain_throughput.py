#!/usr/bin/env python
"""Pretraining throughput: images/s of the DINOv2 step (and MFU on GPU), separated from data loading.

GPU (the real benchmark): ViT-S/16 and ViT-B/16 with the DINOv2 crop recipe (2x224 + 8x96),
bf16 autocast, the largest power-of-two batch that fits, without ``torch.compile``, with the
trunks compiled (``--compile trunks``) and with trunks and loss terms compiled (``full``, what
``pretrain.trainer.compile=true`` does); ``--param-dtype bfloat16`` runs the trunks with bf16
compute weights over fp32 master weights (``pretrain.method.param_dtype``);
MFU = counted model FLOPs per second / 989 TFLOP/s (H100/H200 dense bf16).

CPU (so CI-like checks run it): a tiny ViT with small crops, fp32, a few steps.

    python benchmarks/pretrain_throughput.py                      # auto: GPU recipe, or the CPU smoke sizes
    python benchmarks/pretrain_throughput.py --device cpu --models vit_tiny_patch16_224 \
        --global-size 224 --local-size 96 --local-crops 6 --batch 64 --method dino \
        --out-dim 65536  # LightlyTrain settings

Compute is timed on batches already on the device; data loading is timed separately by
draining our ``ShardLoader`` (decode + multi-crop in workers) over real shards (``--shards``)
or synthetic PNG shards. Results go to ``<--out>.{json,md}``; in ``benchmarks/results/`` keep one set per
device and model, named like ``pretrain_throughput_h200_vitb``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import timm
import torch
from lightly_reference import ReferenceDINOv2, reference_step
from PIL import Image
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig
from pipeline.config.ingest import IngestConfig
from pipeline.config.pretrain import MethodConfig
from pipeline.core.malloc import keep_freed_memory
from pipeline.io.ingest import ingest
from pipeline.pretrain.compile import compile_method, compile_trunks
from pipeline.pretrain.data import ShardLoader, StreamSpec, describe_folder
from pipeline.pretrain.methods import SelfDistillation, StepInputs

PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16 FLOP/s
COMPILE_MODES = ("off", "trunks", "full")


def use_bf16(a: argparse.Namespace, device: torch.device) -> bool:
    """bf16 autocast on GPU, and on CPU with ``--cpu-bf16`` (CPUs with native bf16, e.g. AVX512_BF16/AMX)."""
    return device.type == "cuda" or bool(getattr(a, "cpu_bf16", False))


def make_method(
    name: str, size: int, method: str, out_dim: int, device: torch.device, param_dtype: str = "float32", **vit_kwargs
) -> SelfDistillation:
    vit = timm.create_model(name, img_size=size, num_classes=0, dynamic_img_size=True, **vit_kwargs)
    w = (1.0, 1.0, 0.1) if method == "dinov2" else (1.0, 0.0, 0.0)
    spec = MethodConfig(
        **dict(zip(("dino_weight", "ibot_weight", "koleo_weight"), w)),
        out_dim=out_dim,
        hidden_dim=2048,
        bottleneck_dim=256,
        param_dtype=param_dtype,
    )
    return SelfDistillation(vit, spec).to(device).train()


def build(impl: str, name: str, a: argparse.Namespace, device: torch.device, param_dtype: str = "float32") -> tuple:
    """(model, optimizer, step function) for ``impl``: ``ours`` or lightly's ``reference``."""
    bf16 = use_bf16(a, device)
    if impl == "reference":
        ref = ReferenceDINOv2(name, a.global_size, a.out_dim).to(device).train()
        return ref, torch.optim.AdamW(ref.trainable_parameters(), lr=1e-3), partial(reference_step, bf16=bf16)
    # the reference's architecture (layer scale, student drop-path) so that the FLOPs are the same
    m = make_method(
        name, a.global_size, a.method, a.out_dim, device, param_dtype, init_values=1e-5, drop_path_rate=a.drop_path
    )
    fused = {"fused": True} if device.type == "cuda" and a.fused_adamw else {}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, **fused)
    return m, opt, partial(train_step, bf16=bf16)


def views(batch: int, a: argparse.Namespace, device: torch.device) -> list[torch.Tensor]:
    g = [torch.randn(batch, 3, a.global_size, a.global_size, device=device) for _ in range(2)]
    return g + [torch.randn(batch, 3, a.local_size, a.local_size, device=device) for _ in range(a.local_crops)]


def train_step(
    m: SelfDistillation, opt: torch.optim.Optimizer, v: list[torch.Tensor], device: torch.device, bf16: bool
) -> torch.Tensor:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, _ = m.loss(v, StepInputs(teacher_temp=0.04, n_global=2))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    m.update_teacher(0.996)
    return loss.detach()


def apply_compile(m: torch.nn.Module, mode: str) -> None:
    """``off``: eager; ``trunks``: the ViT block stacks; ``full``: trunks and loss terms (``trainer.compile=true``)."""
    if mode == "trunks":
        compile_trunks(m)
    elif mode == "full":
        compile_method(m)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_flops(impl: str, m: torch.nn.Module, v: list[torch.Tensor], device: torch.device, bf16: bool) -> float:
    """One step's model FLOPs (forward + backward), counted by torch on the eager model."""
    with FlopCounterMode(display=False) as fc:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = m.loss(v) if impl == "reference" else m.loss(v, StepInputs(0.04, 2))[0]
        loss.backward()
    for p in m.parameters():
        p.grad = None
    return fc.get_total_flops()


def bench_compute(
    name: str,
    a: argparse.Namespace,
    device: torch.device,
    batch: int,
    compile_: str,
    impl: str = "ours",
    param_dtype: str = "float32",
) -> dict:
    torch.manual_seed(0)
    m, opt, step = build(impl, name, a, device, param_dtype)
    v = views(batch, a, device)
    random.seed(0)  # the iBOT masks: every variant counts the FLOPs of the same masked-token counts
    flops = count_flops(impl, m, v, device, use_bf16(a, device))  # before compiling: the counter wants eager modules
    apply_compile(m, compile_)
    random.seed(0)  # the iBOT masks: the first step's loss is comparable between variants
    t0 = time.perf_counter()
    first_loss = float(step(m, opt, v, device))  # same weights and views in every variant of one model
    first_s = time.perf_counter() - t0  # compilation, for compiled variants
    for _ in range(a.warmup - 1):  # the first step is never timed, so --warmup 0 and 1 both mean one
        step(m, opt, v, device)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step(m, opt, v, device)
    sync(device)
    dt = (time.perf_counter() - t0) / a.steps
    out = {
        "impl": impl,
        "model": name,
        "batch": batch,
        "compile": compile_,
        "param_dtype": param_dtype,
        "step_s": dt,
        "images_per_s": batch / dt,
        "gflop_per_image": flops / batch / 1e9,
        "achieved_tflops": flops / dt / 1e12,
        "first_step_loss": first_loss,
        "first_step_s": first_s,
        "dynamo_graphs_so_far": int(counters["stats"]["unique_graphs"]),
    }
    if device.type == "cuda":
        out["mfu"] = flops / dt / PEAK_BF16
        out["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del m, opt, v
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return out


def largest_batch(name: str, a: argparse.Namespace, device: torch.device) -> int:
    """The largest power-of-two batch at which our eager step fits.

    Compiled steps take less memory (ViT-B/16 at batch 128: eager 44.5 GiB on an H100, trunks and
    loss terms compiled 36.9 GiB on an H200). lightly's reference step runs at the same batch;
    where it does not fit, its row says so.
    """
    if device.type != "cuda":
        return a.batch
    best, b = 0, 64
    while b <= 2048:
        try:
            m, opt, step = build("ours", name, a, device)
            step(m, opt, views(b, a, device), device)
            sync(device)
            best = b
            b *= 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            m = opt = None
            torch.cuda.empty_cache()
    return best


def write_gray_shards(folder: Path, n: int, side: int = 64, seed: int = 0) -> None:
    """``n`` random gray PNGs ingested into ``folder`` by the pipeline's own ingest (real shards and records)."""
    rng = np.random.default_rng(seed)
    src = folder / "png"
    src.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(src / f"{i}.png")
    ingest([src], folder, IngestConfig(shard_size=256, workers=1), progress=False)


def bench_data(a: argparse.Namespace, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.shards) if a.shards else Path(tmp)
        if not a.shards:
            write_gray_shards(folder, batch * (a.data_batches + 1))
        shards, metas = describe_folder(folder)
        spec = StreamSpec(tuple(map(str, shards)), len(metas), batch, shuffle_buffer=256)
        preset = "grayscale" if sum(m.get("mode") == "L" for m in metas) > 0.9 * len(metas) else "rgb"
        crop = MultiCrop(
            AugmentConfig(preset=preset, global_size=a.global_size, local_size=a.local_size, local_crops=a.local_crops)
        )
        loader = ShardLoader(spec, crop, num_workers=a.workers)
        n = min(a.data_batches, len(loader))
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        for _ in range(n - 1):
            next(it)
        dt = time.perf_counter() - t0
        del it
    return {
        "workers": a.workers,
        "preset": preset,
        "batch": batch,
        "batches": n - 1,
        "images_per_s": (n - 1) * batch / dt if n > 1 else float("nan"),
    }


def to_markdown(res: dict) -> str:
    lines = [f"# Pretrain throughput ({res['device']})", "", f"Settings: {res['settings']}", ""]
    lines += [
        "| impl | model | batch | compile | param dtype | step s | images/s (compute) | GFLOP/image | TFLOP/s | MFU "
        "| peak GiB | first-step loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["compute"]:
        if "error" in r:
            lines.append(
                f"| {r['impl']} | {r['model']} | {r['batch']} | {r['compile']} | {r['param_dtype']} | "
                f"{r['error']} |||||||"
            )
            continue
        mfu = f"{100 * r['mfu']:.1f} %" if "mfu" in r else "n/a (CPU)"
        mem = f"{r['max_mem_gib']:.1f}" if "max_mem_gib" in r else "-"
        lines.append(
            f"| {r.get('impl', 'ours')} | {r['model']} | {r['batch']} | {r['compile']} | "
            f"{r.get('param_dtype', 'float32')} | {r['step_s']:.3f} | {r['images_per_s']:.2f} | "
            f"{r['gflop_per_image']:.2f} | {r['achieved_tflops']:.3f} | {mfu} | {mem} | "
            f"{r.get('first_step_loss', float('nan')):.4f} |"
        )
    d = res["data"]
    if d:
        lines += [
            "",
            f"Data loading alone ({d['workers']} workers, preset {d['preset']}): {d['images_per_s']:.1f} images/s.",
        ]
    lines += ["", f"Machine: {res['machine']}", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--models", default=None, help="comma-separated timm names")
    p.add_argument("--global-size", type=int, default=None)
    p.add_argument("--local-size", type=int, default=None)
    p.add_argument("--local-crops", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="CPU batch (GPU: largest that fits)")
    p.add_argument("--method", default="dinov2", choices=["dinov2", "dino"])
    p.add_argument("--out-dim", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--compile", default="off,full", help=f"comma-separated, of {COMPILE_MODES}")
    p.add_argument("--param-dtype", default="float32", help="comma-separated: float32 (autocast only), bfloat16")
    p.add_argument("--impl", default=None, help="ours,reference (lightly's example step); GPU default both")
    p.add_argument("--drop-path", type=float, default=0.1, help="student drop-path (the reference uses 0.1)")
    p.add_argument("--fused-adamw", type=int, default=1, help="fused AdamW on CUDA for ours")
    p.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU (default: fp32 on CPU)")
    p.add_argument("--batch-override", type=int, default=None, help="GPU: skip the search, use this batch")
    p.add_argument(
        "--system-malloc", action="store_true", help="CPU: glibc's default malloc (the stage reuses freed memory)"
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-batches", type=int, default=4, help="batches of the data-loading measurement (0: skip it)")
    p.add_argument("--shards", default=None, help="a shard folder (default: synthetic PNG shards)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_throughput"))
    a = p.parse_args()
    device = torch.device("cuda" if (a.device == "auto" and torch.cuda.is_available()) or a.device == "cuda" else "cpu")
    gpu = device.type == "cuda"
    if not a.system_malloc:
        keep_freed_memory()  # as run.py does (reuse_freed_memory=true)
    # GPU: the DINOv2 recipe. CPU: smoke sizes that finish in about a minute.
    a.models = a.models or ("vit_small_patch16_224,vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    a.global_size = a.global_size or (224 if gpu else 64)
    a.local_size = a.local_size or (96 if gpu else 32)
    a.local_crops = a.local_crops if a.local_crops is not None else (8 if gpu else 2)
    a.batch = a.batch or 16
    a.out_dim = a.out_dim or (65536 if gpu else 2048)
    a.steps = a.steps or (20 if gpu else 3)
    a.warmup = a.warmup if a.warmup is not None else (5 if gpu else 1)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    compiles = a.compile.split(",")
    if bad := set(compiles) - set(COMPILE_MODES):
        p.error(f"--compile: {sorted(bad)} not in {COMPILE_MODES}")
    compute = []
    impls = (a.impl or ("ours,reference" if gpu else "ours")).split(",")
    for name in a.models.split(","):
        batch = a.batch_override or largest_batch(name, a, device)
        for impl in impls:
            for c in compiles if impl == "ours" else ["off"]:
                for dt in a.param_dtype.split(",") if impl == "ours" else ["float32"]:
                    try:
                        r = bench_compute(name, a, device, batch, c, impl, dt)
                    except torch.cuda.OutOfMemoryError:
                        r = {
                            "impl": impl,
                            "model": name,
                            "batch": batch,
                            "compile": c,
                            "param_dtype": dt,
                            "error": "out of memory",
                        }
                        torch.cuda.empty_cache()
                    print(json.dumps(r), flush=True)
                    compute.append(r)
                    write(a, device, compute, None)
    data = bench_data(a, a.batch if not gpu else 64) if a.data_batches > 1 else None
    if data:
        print(json.dumps(data), flush=True)
    print(write(a, device, compute, data))


def write(a: argparse.Namespace, device: torch.device, compute: list[dict], data: dict | None) -> str:
    """Write ``<out>.json`` and ``<out>.md`` (after every variant, so a run cut short keeps what it measured)."""
    gpu = device.type == "cuda"
    res = {
        "device": torch.cuda.get_device_name()
        if gpu
        else f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})",
        "settings": {
            k: getattr(a, k)
            for k in (
                "method",
                "global_size",
                "local_size",
                "local_crops",
                "out_dim",
                "steps",
                "warmup",
                "drop_path",
                "cpu_bf16",
            )
        },
        "compute": compute,
        "data": data,
        "machine": f"{platform.platform()}, torch {torch.__version__}, load average {os.getloadavg()}",
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    md = to_markdown(res)
    out.with_suffix(".md").write_text(md)
    return md


if __name__ == "__main__":
    main()
