"""Embedding throughput end to end from WebDataset shards vs the bare model forward, same run.

The embed step of curation reads shards, decodes, resizes, normalises and runs
the backbone. This measures images/s of

* ``bare_forward``: the model on random tensors already on the device (the ceiling);
* ``loader_only``: the data path alone (read, decode, resize, copy, normalise);
* ``end_to_end``: both together, features kept on the device,

for each decode mode and loader-worker count:

* ``workers``: decode + resize in DataLoader workers (CPU, torchvision/libjpeg-turbo),
  uint8 batches copied to the device, normalised there;
* ``device``: workers only read bytes; decode with nvJPEG
  (``torchvision.io.decode_jpeg(..., device="cuda")``) and resize on the GPU.
  On a CPU run this decodes in the main process (same code path, for testing);
  PNG samples always decode on the CPU. Images of equal size are resized in
  one call, so uniform synthetic images are this mode's best case; pass
  ``--shards`` with real data to measure mixed sizes.

Target: end_to_end >= 80 % of bare_forward.

    python benchmarks/gpu_embed.py --decode workers,device --workers 8,16     # H100, ViT-B/16 bf16
    nice -n 10 python benchmarks/gpu_embed.py --small                          # CPU smoke preset
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from gpu_common import parse_args, resolve_device, sync, timed, write_results
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from pipeline.config.models import BackboneConfig
from pipeline.io.shards import list_shards
from pipeline.models.backbone import create_backbone, data_config

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def write_synthetic_shards(folder: Path, n: int, size: tuple[int, int], per_shard: int = 512, seed: int = 0) -> Path:
    """JPEG shards of smooth random colour images (JPEG sizes like photos, not like noise); reused if present."""
    tag = folder / f".done-{n}-{size[0]}x{size[1]}-{seed}"
    if tag.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tar"):
        old.unlink()
    rng = np.random.default_rng(seed)
    for s in range(math.ceil(n / per_shard)):
        with wds.TarWriter(str(folder / f"shard-{s:06d}.tar")) as tw:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                img = Image.fromarray(low).resize(size, Image.BICUBIC)
                arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, (size[1], size[0], 3))
                buf = io.BytesIO()
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
                tw.write({"__key__": f"{i:08d}", "jpg": buf.getvalue()})
    tag.touch()
    return folder


def _image_bytes(sample: dict[str, Any]) -> tuple[str, bytes]:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext, sample[ext]
    raise ValueError(f"sample {sample.get('__key__')} from {sample.get('__url__')} has no image member")


class Preprocess:
    """Resize the short side to ``size / crop_pct``, centre-crop ``size``: timm's eval transform, on tensors."""

    def __init__(self, size: int, crop_pct: float) -> None:
        self.size, self.resize = size, math.floor(size / crop_pct)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = TF.resize(img, [self.resize], antialias=True)
        return TF.center_crop(img, [self.size, self.size])


class DecodeInWorker:
    def __init__(self, prep: Preprocess) -> None:
        self.prep = prep

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        _, data = _image_bytes(sample)
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return self.prep(img)


def raw_bytes(sample: dict[str, Any]) -> tuple[str, torch.Tensor]:
    ext, data = _image_bytes(sample)
    return ext, torch.frombuffer(bytearray(data), dtype=torch.uint8)


def make_loader(urls: list[str], mode: str, workers: int, batch: int, prep: Preprocess, pin: bool) -> Any:
    ds = wds.WebDataset(urls, resampled=True, shardshuffle=False, empty_check=False)
    if mode == "workers":
        ds = ds.map(DecodeInWorker(prep)).batched(batch, collation_fn=torch.stack)
    else:
        ds = ds.map(raw_bytes).batched(batch, collation_fn=list)
    return wds.WebLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin and mode == "workers",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


class ToModelInput:
    """Turn a loader batch into a normalised float batch on the device."""

    def __init__(self, mode: str, dev: torch.device, prep: Preprocess, mean: Any, std: Any, dtype: torch.dtype) -> None:
        self.mode, self.dev, self.prep, self.dtype = mode, dev, prep, dtype
        self.mean = torch.tensor(mean, device=dev).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=dev).view(1, 3, 1, 1) * 255

    def __call__(self, batch: Any) -> torch.Tensor:
        if self.mode == "workers":
            x = batch.to(self.dev, non_blocking=True)
        else:
            jpeg = [t for ext, t in batch if ext in ("jpg", "jpeg")]
            other = [t for ext, t in batch if ext not in ("jpg", "jpeg")]
            imgs = decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=self.dev) if jpeg else []
            imgs += [decode_image(t, mode=ImageReadMode.RGB).to(self.dev) for t in other]
            # Resize images that share a size in one call: a batch of one-image kernels costs
            # more launch time than the GPU needs for the work. (Order within the batch is not kept.)
            groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
            for im in imgs:
                groups.setdefault(tuple(im.shape), []).append(im)
            x = torch.cat([self.prep(torch.stack(g)) for g in groups.values()])
        return ((x.float() - self.mean) / self.std).to(self.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default bf16 on GPU, fp32 on CPU")
    ap.add_argument("--decode", default="workers", help="comma list of decode modes: workers, device")
    ap.add_argument("--gpu-decode", action="store_true", help="also measure nvJPEG decode (adds mode 'device')")
    ap.add_argument("--workers", default="8", help="comma list of DataLoader worker counts")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per configuration")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches (worker start-up, cudnn autotune)")
    ap.add_argument("--shards", default=None, help="folder of shards to read; default: synthetic JPEG shards")
    ap.add_argument("--synthetic-n", type=int, default=4096)
    ap.add_argument("--synthetic-size", default="500x375", help="WxH of synthetic images (ImageNet-like)")
    ap.add_argument("--cache-dir", default="/tmp/gpu_bench_shards")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parse_args(
        ap,
        "vit_tiny at 64 px, a few hundred images",
        dict(
            model="vit_tiny_patch16_224",
            img_size=64,
            batch_size=32,
            batches=4,
            warmup=1,
            synthetic_n=256,
            synthetic_size="96x96",
            workers="1",
            decode="workers,device",
        ),
    )
    if args.gpu_decode and "device" not in args.decode:
        args.decode += ",device"
    dev = resolve_device(args.device)
    dtype_name = args.dtype or ("bf16" if dev.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    if args.shards:
        shards = [str(p) for p in list_shards(Path(args.shards))] or sorted(map(str, Path(args.shards).glob("*.tar")))
    else:
        w, h = (int(v) for v in args.synthetic_size.split("x"))
        folder = Path(args.cache_dir) / f"synthetic-{args.synthetic_n}-{w}x{h}"
        shards = sorted(map(str, write_synthetic_shards(folder, args.synthetic_n, (w, h)).glob("*.tar")))
    if not shards:
        raise SystemExit(f"no shards found in {args.shards}")

    model = create_backbone(BackboneConfig(args.model, img_size=args.img_size)).to(dev).eval()
    cfg = data_config(model)
    model = model.to(dtype)  # pure low-precision inference: no autocast casts in the loop
    if args.compile:
        model = torch.compile(model)
    prep = Preprocess(args.img_size, cfg.get("crop_pct", 0.875))
    bs = args.batch_size
    rows: list[dict[str, Any]] = []

    with torch.inference_mode():
        x = torch.randn(bs, 3, args.img_size, args.img_size, device=dev, dtype=dtype)
        bare_s = timed(lambda: model(x), dev, iters=args.batches, warmup=args.warmup)
        bare = bs / bare_s
        rows.append({"config": "bare_forward", "workers": None, "images_per_s": bare, "ratio_to_bare": 1.0})
        for mode in args.decode.split(","):
            for nw in (int(v) for v in args.workers.split(",")):
                to_input = ToModelInput(mode, dev, prep, cfg["mean"], cfg["std"], dtype)
                for what in ("loader_only", "end_to_end"):
                    it = iter(make_loader(shards, mode, nw, bs, prep, pin=dev.type == "cuda"))
                    feats = []
                    for i in range(args.warmup + args.batches):
                        if i == args.warmup:
                            sync(dev)
                            t0 = time.perf_counter()
                        inp = to_input(next(it))
                        if what == "end_to_end":
                            feats.append(model(inp))
                    sync(dev)
                    rate = bs * args.batches / (time.perf_counter() - t0)
                    if what == "end_to_end":
                        assert torch.isfinite(torch.cat(feats).float()).all(), "non-finite embeddings"
                    del it
                    rows.append(
                        {"config": f"{what}/{mode}", "workers": nw, "images_per_s": rate, "ratio_to_bare": rate / bare}
                    )
    e2e = [r for r in rows if r["config"].startswith("end_to_end")]
    best = max(e2e, key=lambda r: r["images_per_s"])
    results = {
        "bare_forward_images_per_s": bare,
        "best_end_to_end": best,
        "target_ratio": 0.8,
        "meets_target": best["ratio_to_bare"] >= 0.8,
        "n_shards": len(shards),
        "dtype": dtype_name,
        "data_config": {k: v for k, v in cfg.items() if k != "input_size"},
    }
    notes = (
        f"Best end to end: {best['config']} with {best['workers']} workers at {best['images_per_s']:.4g} img/s "
        f"= {best['ratio_to_bare']:.0%} of the bare forward ({bare:.4g} img/s); target 80 %."
    )
    write_results("gpu_embed", dev, vars(args), results, rows, args.out_dir, notes, args.tag)


if __name__ == "__main__":
    main()
