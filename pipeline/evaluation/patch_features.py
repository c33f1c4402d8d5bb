"""Patch features: mid-level feature maps with PatchCore's local neighbourhood aggregation.

Ported from amazon-science/patchcore-inspection (``PatchCore._embed``, ``PatchMaker``,
``Preprocessing``/``MeanMapper`` and ``Aggregator``), Apache-2.0:

1. each chosen layer's map is unfolded into ``p`` x ``p`` neighbourhoods (zero padded);
2. coarser layers are bilinearly resized to the finest layer's grid;
3. each layer's ``c * p * p`` neighbourhood is average-pooled to ``layer_dim`` values,
   and the layers together to ``embed_dim`` (adaptive 1-d average pooling, no weights).

Any timm model with ``forward_intermediates`` works, CNNs and ViTs alike. Features of
the whole evaluation set are cached on disk (float16) per backbone and options.

By default (``PatchCoreConfig.img_size=None``) the patch maps come from the same forward
pass, at the same input size, as the pooled features of the frozen protocols: one pass
per backbone instead of two. A map finer than ``grid`` x ``grid`` is average-pooled to it
first, which keeps the memory bank and its search at the size a 128 px input gives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from pipeline.config.eval import PatchCoreConfig
from pipeline.core.manifest import config_hash
from pipeline.evaluation.backbones import EvalBackbone
from pipeline.evaluation.features import (
    as_layout,
    cached,
    cpu_layout,
    extract,
    feature_key,
    pool_output,
    preprocessing,
    to_tensor_batch,
    write_npy,
)

log = logging.getLogger(__name__)


def default_layers(model: torch.nn.Module) -> list[int]:
    """Mid-level feature maps: a CNN's stride-8 and stride-16 stages (PatchCore's layer2 and layer3
    of a ResNet), or for a ViT (one stride throughout) the blocks at one third and one half of its depth."""
    reductions = [int(f["reduction"]) for f in model.feature_info]  # type: ignore[union-attr]
    n = len(reductions)
    if len(set(reductions)) > 1:
        picked = [i for i, r in enumerate(reductions) if r in (8, 16)]
        # Keep one map per stride: some CNNs list several entries at the same reduction.
        picked = [i for i in picked if i + 1 >= n or reductions[i + 1] != reductions[i]]
        return picked or [max(0, n // 2 - 1), n // 2]
    return sorted({max(0, n // 3 - 1), max(0, n // 2 - 1)})


def aggregate_patches(maps: Sequence[torch.Tensor], patch_size: int, layer_dim: int, embed_dim: int) -> torch.Tensor:
    """PatchCore's patch embedding of one batch: feature maps ``[(b, c_l, h_l, w_l)]`` (finest first)
    to ``(b, h_0, w_0, embed_dim)``."""
    pad = (patch_size - 1) // 2
    b, _, h0, w0 = maps[0].shape
    per_layer = []
    for m in maps:
        c, h, w = m.shape[1:]
        # (b, c*p*p, h*w): each cell's neighbourhood, channel-major like the original's unfold.
        x = F.unfold(m.float(), kernel_size=patch_size, padding=pad, stride=1).reshape(b, c * patch_size**2, h, w)
        if (h, w) != (h0, w0):
            # The original resizes each (channel, offset) plane of the unfolded map: the same as this.
            x = F.interpolate(x, size=(h0, w0), mode="bilinear", align_corners=False)
        x = x.permute(0, 2, 3, 1).reshape(b * h0 * w0, 1, c * patch_size**2)
        per_layer.append(F.adaptive_avg_pool1d(x, layer_dim).squeeze(1))
    stacked = torch.stack(per_layer, dim=1).reshape(b * h0 * w0, 1, -1)
    return F.adaptive_avg_pool1d(stacked, embed_dim).reshape(b, h0, w0, embed_dim)


def patch_embedding(maps: Sequence[torch.Tensor], opts: PatchCoreConfig) -> torch.Tensor:
    """Patch features ``(b, h, w, embed_dim)`` of one batch's feature maps: the finest map first,
    maps finer than ``opts.grid`` average-pooled to it, then :func:`aggregate_patches`."""
    maps = sorted(maps, key=lambda m: -m.shape[-1] * m.shape[-2])
    if opts.grid is not None:
        maps = [F.adaptive_avg_pool2d(m.float(), opts.grid) if max(m.shape[-2:]) > opts.grid else m for m in maps]
    return aggregate_patches(maps, opts.patch_size, opts.layer_dim, opts.embed_dim)


@torch.no_grad()
def network_patch_features(
    model: torch.nn.Module,
    images: Sequence[Image.Image],
    prep: dict,
    opts: PatchCoreConfig,
    layers: Sequence[int],
    progress: bool = False,
    desc: str = "patch features",
) -> np.ndarray:
    """Patch features ``(n, h, w, embed_dim)`` (float16) of ``images`` through ``model`` in eval mode."""
    model = cpu_layout(model.eval())
    out = []
    order = sorted(layers)
    for start in tqdm(range(0, len(images), opts.batch_size), desc=desc, disable=not progress, unit="batch"):
        x = to_tensor_batch(
            images[start : start + opts.batch_size], prep["size"], prep["mean"], prep["std"], prep["interpolation"]
        )
        maps = model.forward_intermediates(  # type: ignore[operator]
            as_layout(model, x), indices=order, intermediates_only=True, stop_early=True
        )
        out.append(patch_embedding(maps, opts).half().numpy())
    return np.concatenate(out)


@torch.no_grad()
def network_joint_features(
    model: torch.nn.Module,
    images: Sequence[Image.Image],
    prep: dict,
    opts: PatchCoreConfig,
    layers: Sequence[int],
    batch_size: int = 64,
    pooling: str = "avg",
    progress: bool = False,
    desc: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features ``(n, d)`` (float32, as :func:`~pipeline.evaluation.features.network_features`)
    and patch features ``(n, h, w, embed_dim)`` (float16) from one forward pass per batch."""
    model = cpu_layout(model.eval())
    pooled, patches = [], []
    order = sorted(layers)
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, unit="batch"):
        x = to_tensor_batch(
            images[start : start + batch_size], prep["size"], prep["mean"], prep["std"], prep["interpolation"]
        )
        x = as_layout(model, x)
        # The final output is what forward_features returns (after the last norm / head conv).
        final, maps = model.forward_intermediates(x, indices=order, stop_early=False)  # type: ignore[operator]
        pooled.append(pool_output(model, final, x, pooling).float().reshape(len(x), -1).numpy())
        patches.append(patch_embedding(maps, opts).half().numpy())
    return np.concatenate(pooled), np.concatenate(patches)


def patch_feature_key(backbone: EvalBackbone, data_hash: str, seed: int, opts: PatchCoreConfig) -> str:
    """Cache key: the backbone's and data's (as for global features) plus the options that shape the features."""
    return config_hash(
        feature_key(backbone, data_hash, seed),
        {k: getattr(opts, k) for k in ("img_size", "grid", "layers", "patch_size", "layer_dim", "embed_dim")},
    )


def extract_patches(
    backbone: EvalBackbone,
    images: Sequence[Image.Image],
    cache_dir: Path,
    data_hash: str,
    opts: PatchCoreConfig,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Patch features of ``images`` for ``backbone`` (``(n, h, w, d)``, float16), from the cache when present."""
    path = Path(cache_dir) / f"{backbone.name}-patches-{patch_feature_key(backbone, data_hash, seed, opts)}.npy"
    if path.is_file():
        feats = np.load(path)
        log.info("patch features %s: cache hit %s", backbone.name, feats.shape)
        return feats
    model = backbone.build(seed)
    prep = preprocessing(model, opts.img_size or backbone.img_size, backbone.preprocessing_overrides())
    layers = opts.layers if opts.layers is not None else default_layers(model)
    log.info("patch features %s: %s at %dpx, layers %s", backbone.name, backbone.arch, prep["size"], layers)
    feats = network_patch_features(model, images, prep, opts, layers, progress, desc=f"patches {backbone.name}")
    write_npy(path, feats)
    log.info("patch features %s: extracted %s", backbone.name, feats.shape)
    return feats


def extract_with_patches(
    backbone: EvalBackbone,
    images: Sequence[Image.Image],
    cache_dir: Path,
    data_hash: str,
    opts: PatchCoreConfig,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    pooling: str = "avg",
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled and patch features of ``images`` for ``backbone``, each from its cache when present.

    When both are missing and the patch maps are taken at the pooled features' input size
    (``opts.img_size=None``), one forward pass computes both; otherwise each has its own.
    """
    feat_path = Path(cache_dir) / f"{backbone.name}-{feature_key(backbone, data_hash, seed, pooling)}.npy"
    patch_path = Path(cache_dir) / f"{backbone.name}-patches-{patch_feature_key(backbone, data_hash, seed, opts)}.npy"
    if opts.img_size is not None or feat_path.is_file() or patch_path.is_file():
        feats = extract(backbone, images, cache_dir, data_hash, seed, batch_size, progress, pooling)
        return feats, extract_patches(backbone, images, cache_dir, data_hash, opts, seed, progress)
    model = backbone.build(seed)
    prep = preprocessing(model, backbone.img_size, backbone.preprocessing_overrides())
    layers = opts.layers if opts.layers is not None else default_layers(model)
    log.info(
        "features %s: %s at %dpx (%s), patch layers %s",
        backbone.name,
        backbone.arch,
        prep["size"],
        backbone.source,
        layers,
    )
    feats, patches = network_joint_features(
        model, images, prep, opts, layers, batch_size, pooling, progress, desc=f"features {backbone.name}"
    )
    # Written through the same cache helper as extract(), so either path reads the other's files.
    feats, _ = cached(cache_dir, backbone.name, feature_key(backbone, data_hash, seed, pooling), lambda: feats)
    write_npy(patch_path, patches)
    log.info("features %s: extracted %s and patches %s", backbone.name, feats.shape, patches.shape)
    return feats, patches
