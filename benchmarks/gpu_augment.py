"""DINOv2 multi-crop throughput: PIL per image on CPU (lightly's DINOTransform) vs batched tensors.

Both paths get the same decoded ``S x S`` uint8 images (the loader's decode and
resize are left out of both) and produce the same recipe: 2 global crops
(scale 0.32-1) + n local crops (0.05-0.32), flip, colour jitter, grey, blur,
solarize. Figures:

* ``pil_per_core``: images/s of ``DINOTransform`` in one process, one thread;
* ``pil_workers``: the same in a DataLoader with ``--pil-workers`` processes;
* ``tensor``: :class:`pipeline.augment.GPUMultiCrop` on batches on the device;
* ``model_step``: forward + backward of ``--model`` on all views (student only,
  bf16 on GPU) - what the augmentation has to keep up with. The loader stops
  being the limit when the augmentation rate exceeds this step rate.

    python benchmarks/gpu_augment.py --pil-workers 14 --model vit_small_patch16_224      # H100
    nice -n 10 python benchmarks/gpu_augment.py --small                                  # CPU
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from gpu_common import parse_args, resolve_device, timed, write_results
from lightly.transforms.dino_transform import DINOTransform
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.augment import GPUMultiCrop
from pipeline.augment.gpu_multicrop import BLUR_SIGMA
from pipeline.config.augment import AugmentConfig
from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import create_backbone


def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images ``[n, 3, size, size]`` uint8."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    img = img + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def dino_transform(cfg: AugmentConfig) -> DINOTransform:
    """lightly's DINOTransform with the same recipe as ``cfg``."""
    sat, hue, gray = (0.0, 0.0, 0.0) if cfg.grayscale else (cfg.saturation, cfg.hue, cfg.grayscale_prob)
    return DINOTransform(
        global_crop_size=cfg.global_size,
        global_crop_scale=cfg.global_scale,
        local_crop_size=cfg.local_size,
        local_crop_scale=cfg.local_scale,
        n_local_views=cfg.local_crops,
        hf_prob=cfg.hflip,
        vf_prob=cfg.vflip,
        cj_prob=cfg.jitter_prob,
        cj_strength=1.0,
        cj_bright=cfg.brightness,
        cj_contrast=cfg.contrast,
        cj_sat=sat,
        cj_hue=hue,
        random_gray_scale=gray,
        gaussian_blur=(cfg.blur, 0.1 * cfg.blur, 0.5 * cfg.blur),
        sigmas=BLUR_SIGMA,
        solarization_prob=cfg.solarize,
    )


class PILImages(Dataset):
    def __init__(self, images: torch.Tensor, transform: DINOTransform) -> None:
        self.arrays = [im.permute(1, 2, 0).numpy() for im in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        return self.transform(Image.fromarray(self.arrays[i]))


def pil_rate(images: torch.Tensor, transform: DINOTransform, workers: int, batch: int) -> float:
    ds = PILImages(images, transform)
    if workers == 0:
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        return len(ds) / (time.perf_counter() - t0)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, persistent_workers=True)
    next(iter(loader))  # start the workers before timing
    t0 = time.perf_counter()
    n = sum(len(b[0]) for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src-size", type=int, default=256, help="side of the decoded images both paths get")
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--n-local", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=10, help="timed tensor batches")
    ap.add_argument("--pil-images", type=int, default=64, help="images timed on the single-core PIL path")
    ap.add_argument("--pil-workers", type=int, default=0, help="also time PIL in a DataLoader with this many workers")
    ap.add_argument("--grayscale-domain", action="store_true")
    ap.add_argument("--model", default="vit_small_patch16_224", help="'none' to skip the training-step rate")
    args = parse_args(
        ap,
        "96 px source, 2x64 + 4x32 crops",
        dict(
            src_size=96,
            global_size=64,
            local_size=32,
            n_local=4,
            batch_size=16,
            batches=2,
            pil_images=16,
            model="vit_tiny_patch16_224",
        ),
    )
    dev = resolve_device(args.device)
    cfg = AugmentConfig(
        preset="grayscale" if args.grayscale_domain else "rgb",
        global_size=args.global_size,
        local_size=args.local_size,
        local_crops=args.n_local,
    )
    bs = args.batch_size
    rows: list[dict[str, Any]] = []

    images = synthetic_images(max(args.pil_images, bs), args.src_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the PIL path is per core; lightly's ToTensor/Normalize would otherwise use threads
    per_core = pil_rate(images[: args.pil_images], dino_transform(cfg), 0, bs)
    torch.set_num_threads(threads)
    rows.append({"path": "pil_per_core", "device": "cpu x1", "images_per_s": per_core})
    if args.pil_workers:
        many = images.repeat(max(1, 4 * args.pil_workers * bs // len(images)), 1, 1, 1)
        rate = pil_rate(many, dino_transform(cfg), args.pil_workers, bs)
        rows.append({"path": "pil_workers", "device": f"cpu x{args.pil_workers}", "images_per_s": rate})

    aug = GPUMultiCrop(cfg, seed=0).to(dev)
    batch = images[:bs].to(dev)
    tensor_s = timed(lambda: aug(batch), dev, iters=args.batches, warmup=1)
    rows.append({"path": "tensor", "device": str(dev), "images_per_s": bs / tensor_s})
    views = aug(batch).views

    step = None
    if args.model != "none":
        spec = BackboneConfig(args.model, img_size=args.global_size, kwargs={"dynamic_img_size": True})
        model = create_backbone(spec)
        model = model.to(dev).train()
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

        def train_step() -> None:
            with amp:
                loss = sum(model(v).float().pow(2).mean() for v in views)
            loss.backward()
            model.zero_grad(set_to_none=True)

        step = bs / timed(train_step, dev, iters=args.batches, warmup=1)
        rows.append({"path": f"model_step ({args.model} fwd+bwd, all views)", "device": str(dev), "images_per_s": step})

    tensor_rate = bs / tensor_s
    results = {
        "pil_images_per_s_per_core": per_core,
        "tensor_images_per_s": tensor_rate,
        "speedup_tensor_vs_one_core": tensor_rate / per_core,
        "model_step_images_per_s": step,
        "cores_pil_needs_for_model_step": (step / per_core) if step else None,
        "tensor_aug_share_of_step_time": (step / tensor_rate) if step else None,
    }
    notes = (
        f"Tensor multi-crop: {tensor_rate:.4g} img/s on {dev} vs PIL {per_core:.4g} img/s per core "
        f"({tensor_rate / per_core:.3g}x one core)."
    )
    if step:
        notes += (
            f" The {args.model} step runs at {step:.4g} img/s: PIL would need {step / per_core:.3g} cores to "
            f"keep up; the tensor path adds {step / tensor_rate:.1%} to the step time when run inline."
        )
    write_results("gpu_augment", dev, vars(args), results, rows, args.out_dir, notes, args.tag)


if __name__ == "__main__":
    main()
