"""Embed the images of shard folders, one output file set per input shard.

For every input shard ``shard-000003.tar`` the embedder writes, atomically,

* ``emb-000003.npy``: backbone features, L2-normalised, float16, ``(n, d)``;
* ``copy-000003.npy``: copy-detection descriptors (see
  :mod:`pipeline.curate.copy_descriptor`), float16, ``(n, crops * g * g)``;
* ``ids-000003.json``: the sample ids, in row order.

The ids file is written last, so it marks a shard done; a killed run redoes
only the shards without one. Shards are dealt to processes by
``index % world_size == rank``, so a Slurm job array (or ``torchrun``) splits the
work without any coordination; :func:`consolidate` later concatenates the
per-shard files into one memory-mappable matrix per source.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from pipeline.config.curate import EmbedConfig
from pipeline.core.manifest import atomic_write_bytes, atomic_write_json
from pipeline.curate.copy_descriptor import copy_descriptor
from pipeline.io.shards import iter_samples

log = logging.getLogger(__name__)


def dist_rank_world() -> tuple[int, int]:
    """This process's ``(rank, world_size)`` for splitting shards.

    Reads, in order: ``RANK``/``WORLD_SIZE`` (torchrun), ``SLURM_ARRAY_TASK_ID``/
    ``SLURM_ARRAY_TASK_COUNT`` (job arrays) and ``SLURM_PROCID``/``SLURM_NTASKS``
    (``srun`` tasks). Defaults to ``(0, 1)``.
    """
    env = os.environ
    for r, w in (
        ("RANK", "WORLD_SIZE"),
        ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
    ):
        if env.get(r) is not None and env.get(w) is not None:
            rank, world = int(env[r]), int(env[w])
            if r == "SLURM_ARRAY_TASK_ID":  # arrays may start at an offset (--array=1-8)
                rank -= int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            if not 0 <= rank < world:
                raise ValueError(f"{r}={env[r]} is outside 0..{w}={world}-1")
            return rank, world
    return 0, 1


def shard_index(shard: Path) -> int:
    m = re.search(r"(\d+)\.tar$", shard.name)
    if m is None:
        raise ValueError(f"{shard} is not named shard-NNNNNN.tar")
    return int(m.group(1))


def out_paths(out_dir: Path, index: int) -> dict[str, Path]:
    return {k: Path(out_dir) / f"{k}-{index:06d}.{'json' if k == 'ids' else 'npy'}" for k in ("emb", "copy", "ids")}


def shard_embedded(out_dir: Path, shard: Path) -> bool:
    return out_paths(out_dir, shard_index(shard))["ids"].is_file()


class _ShardImages(IterableDataset):
    """Samples of one shard; worker ``i`` of ``n`` takes samples ``i, i+n, ...``."""

    def __init__(self, shard: Path, transform: Callable[[Image.Image], torch.Tensor], opts: EmbedConfig) -> None:
        self.shard, self.transform, self.opts = shard, transform, opts

    def __iter__(self) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i, s in enumerate(iter_samples([self.shard])):
            if i % nw != wid:
                continue
            img = Image.open(io.BytesIO(s["image"]))
            img.load()
            rgb = img.convert("RGB")
            yield i, s["__key__"], self.transform(rgb), torch.from_numpy(descriptor_of(img, self.opts))


def descriptor_of(img: Image.Image, opts: EmbedConfig) -> np.ndarray:
    """:func:`copy_descriptor` with the settings of ``opts``."""
    return copy_descriptor(img, opts.copy_grid, opts.copy_crop, opts.copy_flip, opts.copy_blur, opts.copy_highpass)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def embed_shard(
    model: nn.Module,
    transform: Callable[[Image.Image], torch.Tensor],
    shard: Path,
    out_dir: Path,
    opts: EmbedConfig,
    progress: bool = False,
) -> int:
    """Embed one shard into ``out_dir`` with ``model`` (built from ``opts.backbone``); returns the sample count."""
    dev = _device(opts.device)
    loader = DataLoader(
        _ShardImages(shard, transform, opts),
        batch_size=opts.batch_size,
        num_workers=opts.workers,
        pin_memory=dev.type == "cuda",
        collate_fn=lambda b: b,
    )
    rows: list[tuple[int, str, np.ndarray, np.ndarray]] = []
    bar = tqdm(desc=f"embed {shard.parent.name}/{shard.name}", unit="img", disable=not progress, leave=False)
    for batch in loader:
        idx, keys, images, c = zip(*batch)
        x = torch.stack(images).to(dev, non_blocking=True)
        # bf16 autocast on GPU (fast, plenty for cosine similarities); fp32 on CPU,
        # where bf16 matmuls are slower than fp32 on most machines.
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            f = model(x)
        f = torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy()
        rows.extend(zip(idx, keys, f, torch.stack(c).numpy()))
        bar.update(len(keys))
    bar.close()
    rows.sort(key=lambda r: r[0])
    d_emb = int(getattr(model, "num_features", 0)) or (rows[0][2].shape[0] if rows else 0)
    emb = np.stack([r[2] for r in rows]).astype(np.float16) if rows else np.zeros((0, d_emb), np.float16)
    cop = (
        np.stack([r[3] for r in rows]).astype(np.float16)
        if rows
        else np.zeros((0, descriptor_of(Image.new("L", (8, 8)), opts).size), np.float16)
    )
    paths = out_paths(out_dir, shard_index(shard))
    for key, arr in (("emb", emb), ("copy", cop)):
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(paths[key], buf.getvalue())
    atomic_write_json(paths["ids"], [r[1] for r in rows])  # last: marks the shard done
    return len(rows)


def embed_shards(
    model: nn.Module,
    transform: Callable[[Image.Image], torch.Tensor],
    shards: list[Path],
    out_dir: Path,
    opts: EmbedConfig,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[str, int]:
    """Embed this rank's share of ``shards`` that are not done yet.

    Returns:
        ``{"embedded": images embedded now, "shards_done": shards embedded now,
        "shards_skipped": this rank's shards that were already done}``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = [s for s in shards if shard_index(s) % world_size == rank]
    todo = [s for s in mine if not shard_embedded(out_dir, s)]
    dev = _device(opts.device)
    model = model.to(dev).eval()
    n = 0
    for s in todo:
        n += embed_shard(model, transform, s, out_dir, opts, progress)
    return {"embedded": n, "shards_done": len(todo), "shards_skipped": len(mine) - len(todo)}


def consolidate(out_dir: Path, shards: list[Path]) -> dict[str, Any]:
    """Concatenate per-shard files into ``emb.npy``, ``copy.npy`` and ``ids.json``.

    Streams through an ``open_memmap`` output, so memory stays at one shard's
    features whatever the pool size.

    Raises:
        FileNotFoundError: naming the shards not embedded yet.
    """
    missing = [s.name for s in shards if not shard_embedded(out_dir, s)]
    if missing:
        raise FileNotFoundError(
            f"{out_dir}: {len(missing)} shards not embedded yet, e.g. {missing[:3]}; run curate.steps=[embed]"
        )
    ids: list[str] = []
    info: dict[str, Any] = {}
    for key in ("emb", "copy"):
        parts = [out_paths(out_dir, shard_index(s)) for s in shards]
        shapes = [np.load(p[key], mmap_mode="r").shape for p in parts]
        d = shapes[0][1] if shapes else 0
        total = sum(s[0] for s in shapes)
        tmp = out_dir / f".{key}.npy.{os.getpid()}.tmp"  # ranks finishing together must not share a tmp file
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(total, d))
        row = 0
        for p, shp in zip(parts, shapes):
            out[row : row + shp[0]] = np.load(p[key], mmap_mode="r")
            row += shp[0]
        out.flush()
        del out
        os.replace(tmp, out_dir / f"{key}.npy")
        info[f"{key}_dim"] = int(d)
        info["n"] = int(total)
    for s in shards:
        ids.extend(json.loads(out_paths(out_dir, shard_index(s))["ids"].read_text()))
    atomic_write_json(out_dir / "ids.json", ids)
    return info


def load_embeddings(out_dir: Path, kind: str = "emb") -> tuple[np.ndarray, list[str]]:
    """The consolidated matrix (memory-mapped, float16) and ids of one source."""
    return np.load(Path(out_dir) / f"{kind}.npy", mmap_mode="r"), json.loads((Path(out_dir) / "ids.json").read_text())
