"""Tiny shards and configs for the pretrain tests (not a test module)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from omegaconf import DictConfig
from PIL import Image

from pipeline.core.manifest import Manifest
from pipeline.io.shards import AtomicShardWriter, shard_path

CONF = Path(__file__).resolve().parents[2] / "conf"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def image(kind: int, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """Gray images of two visually distinct kinds: horizontal vs vertical stripes (+ noise)."""
    y, x = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin((y if kind == 0 else x) * 0.8 + phase)
    arr = 128 + 90 * wave + rng.normal(0, 12, (size, size))
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_shards(
    folder: Path,
    n: int,
    per_shard: int,
    seed: int = 0,
    labels: bool = False,
    stage: str = "ingest/pool",
    extra_labels: Callable[[int], dict[str, Any]] | None = None,
) -> list[str]:
    """Write ``n`` gray PNGs into shards (+ records + manifest); returns the sample ids in order.

    ``extra_labels(i)`` adds entries to sample ``i``'s labels (``group``, ``heldout``).
    """
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    for s in range(0, n, per_shard):
        recs = []
        with AtomicShardWriter(shard_path(folder, s // per_shard)) as w:
            for i in range(s, min(n, s + per_shard)):
                kind = i % 2
                data = _png(image(kind, rng))
                key = hashlib.sha256(data).hexdigest()[:20]
                meta: dict[str, Any] = {"id": key, "source": f"img{i}.png", "mode": "L", "width": 24, "height": 24}
                if labels:
                    meta["labels"] = {"split": "train" if i % 3 else "test", "stripe": ["h", "v"][kind]}
                    meta["labels"].update(extra_labels(i) if extra_labels else {})
                w.write(key, "png", data, meta)
                recs.append({**meta, "status": "accepted", "shard": f"shard-{s // per_shard:06d}.tar"})
                ids.append(key)
            w.close(recs)
    extra = {"tasks": {"stripe": {"column": "stripe", "classes": ["h", "v"], "primary": True}}} if labels else {}
    Manifest(stage=stage, config_hash=f"tiny{seed}", counts={"accepted": n}, extra=extra).write(folder)
    return ids


def make_output_dir(root: Path, n_pool: int = 40, n_eval: int = 30) -> Path:
    """``<root>/elpv_demo`` with ``ingest/pool`` and a labelled ``ingest/eval``."""
    out = root / "elpv_demo"
    write_shards(out / "ingest" / "pool", n_pool, per_shard=15, seed=1)
    write_shards(out / "ingest" / "eval", n_eval, per_shard=100, seed=2, labels=True, stage="ingest/eval")
    return out


def tiny_vit(depth: int = 2, **kwargs: Any) -> torch.nn.Module:
    """A ``depth``-block, 32-wide ViT on 16 px images (patch 4) that takes any input size: the methods' test trunk."""
    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        depth=depth,
        embed_dim=32,
        num_heads=2,
        num_classes=0,
        dynamic_img_size=True,
        **kwargs,
    )


TINY_OVERRIDES = [
    "experiment=elpv_scratch",  # a ViT from random init, shrunk below; CNN_OVERRIDES swap in a CNN
    "tracking=off",
    "progress=false",
    "stage=pretrain",
    "pretrain.data.source=pool",
    "pretrain.data.batch_size=8",
    "pretrain.data.num_workers=0",
    "pretrain.data.shuffle_buffer=16",
    "pretrain.model.patch_size=8",
    "++pretrain.model.kwargs.depth=2",
    "++pretrain.model.kwargs.embed_dim=32",
    "++pretrain.model.kwargs.num_heads=2",
    "pretrain.augment.global_size=16",
    "pretrain.augment.local_size=8",
    "pretrain.augment.local_crops=2",
    "pretrain.method.out_dim=64",
    "pretrain.method.hidden_dim=32",
    "pretrain.method.bottleneck_dim=16",
    "pretrain.trainer.max_epochs=2",
    "pretrain.trainer.log_every_n_steps=1",
    "pretrain.trainer.checkpoint_every_n_steps=3",
    "pretrain.trainer.accelerator=cpu",
    "pretrain.optim.warmup_epochs=0.5",
    "pretrain.onnx=false",  # seconds per export; the stage test that checks it turns it on
]


def compose(root: Path, *overrides: str) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=[f"paths.root={root}", *TINY_OVERRIDES, *overrides])


def tiny_cnn(**kwargs: Any) -> torch.nn.Module:
    """timm's ResNet-10-T (with BatchNorm) for pooled features: the methods' CNN test trunk."""
    return timm.create_model("resnet10t", num_classes=0, **kwargs)


# After TINY_OVERRIDES: the same tiny run on a CNN (DINO + KoLeo; iBOT needs a ViT's patch tokens).
CNN_OVERRIDES = [
    "pretrain.model.name=resnet10t",
    "pretrain.model.patch_size=null",
    "~pretrain.model.kwargs.depth",
    "~pretrain.model.kwargs.embed_dim",
    "~pretrain.model.kwargs.num_heads",
    "pretrain.method.ibot_weight=0.0",
]
