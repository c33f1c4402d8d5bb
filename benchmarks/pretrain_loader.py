"""Pretrain data path alone: images/s of ``ShardLoader`` with PIL multi-crop in the workers (``cpu``)
against decode-and-resize in the workers + ``GPUMultiCrop`` on the device (``gpu``), same shards.

This is the data side of ``pretrain.augment.backend`` (``pretrain/augment=gpu``): exactly the
stage's loader (:class:`pipeline.pretrain.data.ShardLoader`) and transforms
(:func:`pipeline.pretrain.device_augment.loader_transform`), no model. Each configuration
drains ``--warmup`` untimed batches (worker start-up) and then times ``--batches`` batches,
including the host-to-device copy (float views for ``cpu``, uint8 images for ``gpu``) and,
for ``gpu``, the device multi-crop; the device is synchronised before the clock stops.
Configurations run interleaved (for each worker count: cpu, then gpu) so both see the same
machine load. ``decode`` is the ``gpu`` loader without the device crops (the workers' ceiling);
``device_augment_only`` times ``GPUMultiCrop`` on a batch already on the device.

    python benchmarks/pretrain_loader.py --augment cpu,gpu --workers 4,8,15          # H100 node, ImageNet-like JPEGs
    python benchmarks/pretrain_loader.py --shards <out>/<recipe>/ingest/pool --tag pool
    nice -n 10 python benchmarks/pretrain_loader.py --small                          # CPU smoke
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpu_common import parse_args, resolve_device, sync, timed, write_results
from PIL import Image

from pipeline.augment.device import device_multicrop, load_size, loader_transform
from pipeline.config.augment import AugmentConfig, resolve_preset
from pipeline.io.shards import AtomicShardWriter, shard_path
from pipeline.pretrain.data import ImageBatch, ShardLoader, StreamSpec, describe_folder

AUGMENTS = {"cpu": "pil", "gpu": "gpu", "decode": "gpu"}  # benchmark name -> pretrain.augment.backend


def write_synthetic_shards(folder: Path, n: int, size: tuple[int, int], per_shard: int = 512, seed: int = 0) -> Path:
    """Shards (with records, as ingest writes them) of smooth random colour JPEGs; reused if present."""
    tag = folder / f".done-{n}-{size[0]}x{size[1]}-{seed}"
    if tag.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("shard-*"), *folder.glob(".done-*")]:
        old.unlink()
    rng = np.random.default_rng(seed)
    for s in range(0, n, per_shard):
        recs = []
        with AtomicShardWriter(shard_path(folder, s // per_shard)) as w:
            for i in range(s, min(n, s + per_shard)):
                low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                img = np.asarray(Image.fromarray(low).resize(size, Image.BICUBIC)).astype(np.int16)
                img = (img + rng.integers(-12, 12, img.shape)).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=90)
                data = buf.getvalue()
                key = hashlib.sha256(data).hexdigest()[:20]
                meta = {"id": key, "source": f"synthetic{i}.jpg", "mode": "RGB", "width": size[0], "height": size[1]}
                w.write(key, "jpg", data, meta)
                recs.append({**meta, "status": "accepted"})
            w.close(recs)
    tag.touch()
    return folder


def drain(
    loader: ShardLoader, aug: torch.nn.Module | None, dev: torch.device, warmup: int, batches: int
) -> tuple[float, int, float]:
    """Seconds for ``batches`` batches after ``warmup``, images timed, MB copied to the device per batch."""
    it = iter(loader)
    n_img, mb, t0 = 0, 0.0, time.perf_counter()
    for i in range(warmup + batches):
        if i == warmup:
            sync(dev)
            t0, n_img = time.perf_counter(), 0
        batch = next(it)
        if isinstance(batch, ImageBatch):
            x = batch.images.to(dev, non_blocking=True)
            views = [x]
            if aug is not None:  # None: `decode`, the gpu backend's loader alone
                aug.gen.manual_seed(batch.seed)  # as PretrainModule.on_after_batch_transfer
                views = aug(x).views
            mb = x.numel() * x.element_size() / 2**20
            n_img += x.shape[0]
        else:
            views = [v.to(dev, non_blocking=True) for v in batch]
            mb = sum(v.numel() * v.element_size() for v in views) / 2**20
            n_img += views[0].shape[0]
    sync(dev)
    dt = time.perf_counter() - t0
    del it, views
    return dt, n_img, mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--augment",
        default="cpu,gpu",
        help=(
            "comma list: cpu (PIL multi-crop in the workers), gpu (decode+resize in the workers, GPUMultiCrop on "
            "the device), decode (gpu's loader without the crops)"
        ),
    )
    ap.add_argument("--workers", default="8", help="comma list of DataLoader worker counts")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed batches (default: workers + 1)")
    ap.add_argument("--preset", default="auto", choices=["auto", "rgb", "grayscale"])
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--load-size", type=int, default=0, help="gpu: square the workers resize to (0: 8/7 global)")
    ap.add_argument("--shards", default=None, help="a shard folder (with records); default: synthetic JPEG shards")
    ap.add_argument("--synthetic-n", type=int, default=None, help="default: enough for the largest configuration")
    ap.add_argument("--synthetic-size", default="500x375", help="WxH of synthetic images (ImageNet-like)")
    ap.add_argument("--cache-dir", default="/tmp/pretrain_loader_shards")
    args = parse_args(
        ap,
        "96x96 JPEGs, 2x64 + 4x32 crops, batch 16, 0 and 1 workers",
        dict(
            workers="0,1",
            batch_size=16,
            batches=3,
            global_size=64,
            local_size=32,
            local_crops=4,
            synthetic_size="96x96",
        ),
    )
    dev = resolve_device(args.device)
    workers = [int(v) for v in args.workers.split(",")]
    augments = args.augment.split(",")
    if bad := set(augments) - set(AUGMENTS):
        raise SystemExit(f"--augment {sorted(bad)}: expected a comma list of {sorted(AUGMENTS)}")
    warmup = args.warmup if args.warmup is not None else max(workers) + 1
    bs = args.batch_size
    if args.shards:
        folder = Path(args.shards)
    else:
        w, h = (int(v) for v in args.synthetic_size.split("x"))
        n = args.synthetic_n or (warmup + args.batches) * bs
        folder = write_synthetic_shards(Path(args.cache_dir) / f"synthetic-{n}-{w}x{h}", n, (w, h))
    shards, metas = describe_folder(folder)
    stream = StreamSpec(tuple(map(str, shards)), len(metas), bs, seed=0, shuffle_buffer=min(1000, 4 * bs))
    batches = min(args.batches, stream.batches_per_epoch(1) - warmup)
    if batches < 1:
        raise SystemExit(f"{len(metas)} images give {len(metas) // bs} batches of {bs}; {warmup} are warm-up")
    gray = float(np.mean([m.get("mode") == "L" for m in metas]))
    preset = resolve_preset(args.preset, gray)
    kw = dict(
        preset=preset,
        global_size=args.global_size,
        local_size=args.local_size,
        local_crops=args.local_crops,
        load_size=args.load_size,
    )
    specs = {a: AugmentConfig(backend=AUGMENTS[a], **kw) for a in augments}

    rows: list[dict[str, Any]] = []
    rates: dict[str, dict[str, float]] = {a: {} for a in augments}
    for nw in workers:
        for a in augments:
            spec = specs[a]
            aug = device_multicrop(spec) if a == "gpu" else None
            aug = aug.to(dev) if aug is not None else None
            loader = ShardLoader(stream, loader_transform(spec), num_workers=nw, pin_memory=dev.type == "cuda")
            dt, n_img, mb = drain(loader, aug, dev, warmup, batches)
            rate = n_img / dt
            rates[a][str(nw)] = rate
            rows.append(
                {
                    "augment": a,
                    "workers": nw,
                    "device": str(dev),
                    "batch": bs,
                    "batches": batches,
                    "images_per_s": rate,
                    "h2d_mb_per_batch": mb,
                }
            )
            print(rows[-1], flush=True)
    if "gpu" in specs:
        aug = device_multicrop(specs["gpu"]).to(dev)  # type: ignore[union-attr]
        side = load_size(specs["gpu"])
        x = torch.randint(0, 256, (bs, 1 if preset == "grayscale" else 3, side, side), dtype=torch.uint8, device=dev)
        s = timed(lambda: aug(x), dev, iters=max(2, batches))
        rows.append(
            {
                "augment": "device_augment_only",
                "workers": None,
                "device": str(dev),
                "batch": bs,
                "batches": max(2, batches),
                "images_per_s": bs / s,
            }
        )
        rates["device_augment_only"] = {"-": bs / s}
    speedup = {w: rates["gpu"][w] / rates["cpu"][w] for w in rates.get("gpu", {}) if w in rates.get("cpu", {})}
    results = {
        "images_per_s": rates,
        "speedup_gpu_vs_cpu": speedup,
        "preset": preset,
        "images": len(metas),
        "shards": str(folder),
        "load_size": load_size(AugmentConfig(**kw)),
    }
    notes = "; ".join(f"{w} workers: gpu/cpu = {r:.3g}x" for w, r in speedup.items())
    write_results("pretrain_loader", dev, vars(args), results, rows, args.out_dir, notes, args.tag)


if __name__ == "__main__":
    main()
