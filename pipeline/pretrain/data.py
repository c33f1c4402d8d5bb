"""Deterministic, resumable streaming of WebDataset shards into multi-crop batches.

Design (why it is exact to resume and safe under DDP):

* **Per-rank stream.** For epoch ``e`` the shard order is a permutation seeded by
  ``(seed, e)``. Ranks share it either by shards (``shards[rank::world]``, for many
  shards) or by samples (sample ``i`` of the stream goes to rank ``i % world``, for
  few shards; every rank reads all tars but decodes only its own samples). A seeded
  shuffle buffer then mixes samples. The stream repeats (with a new seed) if a rank
  runs out, so **every rank yields exactly** ``len(loader)`` batches: no rank waits
  in a collective for a peer that has finished (what ``with_epoch`` does in webdataset).
* **Batches, not samples, are the unit.** Batch ``j`` of the epoch is items
  ``[j*B, (j+1)*B)`` of the rank stream, built by worker ``(j - start) % W``, and its
  augmentations are seeded by ``(seed, epoch, rank, j)``. The result does not depend
  on the number of workers, and resuming at batch ``k`` only needs ``(epoch, k)``:
  workers skip the first ``k*B`` stream items without decoding them.
* **Two kinds of batch.** A transform returning a list of views gives a list of
  ``(B, 3, H, W)`` float tensors (``pil`` augmentation in the workers). One returning
  a single ``uint8`` tensor (the ``gpu`` backend's decode-and-resize) gives an
  :class:`ImageBatch`: the stacked images plus the batch's augmentation seed, from the
  same ``(seed, epoch, rank, j)``, so views made on the device resume exactly too.
* **Lightning integration.** :class:`ShardLoader` has ``state_dict``/``load_state_dict``,
  so Lightning stores ``(epoch, consumed batches)`` in every checkpoint and restores it.

Tars are read with webdataset's ``tarfile_to_samples``; each worker re-reads the rank's
tar bytes (cheap next to decoding and augmenting), which keeps the above exact.
"""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import lightning.pytorch as pl
import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.io.shards import list_shards, records_path

log = logging.getLogger(__name__)
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


@dataclass(frozen=True)
class StreamSpec:
    """A training stream over shards.

    Attributes:
        shards: Shard paths (order does not matter; each epoch permutes them).
        num_samples: Samples in the stream (after ``keep``).
        batch_size: Per-rank batch size.
        seed: Base seed for shard order, shuffle buffer and augmentation.
        shuffle_buffer: Samples held in the shuffle buffer.
        split: ``shards``, ``samples`` or ``auto`` (shards when there are at least 4 per rank).
        keep: Only these sample keys (a subset), or ``None`` for all.
    """

    shards: tuple[str, ...]
    num_samples: int
    batch_size: int
    seed: int = 0
    shuffle_buffer: int = 1000
    split: str = "auto"
    keep: frozenset[str] | None = None

    def batches_per_epoch(self, world_size: int) -> int:
        n = self.num_samples // world_size // self.batch_size
        if n < 1:
            raise ValueError(
                f"{self.num_samples} training images cannot fill one batch of {self.batch_size} on each of "
                f"{world_size} ranks; lower pretrain.data.batch_size"
            )
        return n

    def split_mode(self, world_size: int) -> str:
        if self.split not in ("auto", "shards", "samples"):
            raise ValueError(f"pretrain.data.split={self.split!r}; expected auto, shards or samples")
        if self.split != "auto":
            return self.split
        return "shards" if len(self.shards) >= 4 * world_size else "samples"


def describe_folder(folder: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """A shard folder's complete shards and per-sample metadata (records, or tar names as fallback)."""
    shards = list_shards(folder)
    if not shards:
        raise FileNotFoundError(f"no complete shards (shard-*.tar + records) in {folder}")
    metas: list[dict[str, Any]] = []
    for shard in shards:
        recs = [json.loads(line) for line in records_path(shard).read_text().splitlines() if line.strip()]
        recs = [r for r in recs if r.get("status", "accepted") == "accepted"]
        if not recs:  # records without status info: list the tar instead
            with tarfile.open(shard) as tf:
                keys = {m.name.split(".", 1)[0] for m in tf if m.isfile()}
            recs = [{"id": k} for k in sorted(keys)]
        metas.extend(recs)
    return shards, metas


def subset_ids(metas: list[dict[str, Any]], n: int, seed: int) -> frozenset[str]:
    """``pretrain.data.subset``: ``n`` sample ids drawn at random (seeded) from a folder's metadata.

    A function of its own so that benchmarks can hand another tool exactly the images the stage trains on.
    """
    ids = sorted(str(m.get("id", m.get("key"))) for m in metas)
    pick = np.random.default_rng([seed, 5]).permutation(len(ids))[:n]
    return frozenset(ids[i] for i in pick)


def _rank_items(spec: StreamSpec, epoch: int, rank: int, world: int) -> Iterator[dict[str, Any]]:
    """This rank's endless raw-sample stream for ``epoch`` (undecoded bytes)."""
    mode = spec.split_mode(world)
    for rep in range(1_000_000):
        rng = np.random.default_rng([spec.seed, epoch, rep])
        order = [spec.shards[i] for i in rng.permutation(len(spec.shards))]
        urls = order[rank::world] if mode == "shards" else order
        raw = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())
        buf: list[dict[str, Any]] = []
        brng = np.random.default_rng([spec.seed, epoch, rep, rank, 7])
        i = 0
        for sample in raw:
            if spec.keep is not None and sample["__key__"] not in spec.keep:
                continue
            mine = mode == "shards" or i % world == rank
            i += 1
            if not mine:
                continue
            if len(buf) < spec.shuffle_buffer:
                buf.append(sample)
                continue
            j = int(brng.integers(len(buf)))
            buf[j], sample = sample, buf[j]
            yield sample
        brng.shuffle(buf)
        yield from buf
        if i == 0:
            raise RuntimeError(f"shards {list(spec.shards)[:3]}... yielded no samples")


def decode(sample: dict[str, Any], draft: tuple[str, int] | None = None) -> Image.Image:
    """The image of a raw webdataset sample.

    ``draft=(mode, size)`` lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding (DCT
    scaling) as long as both sides stay >= ``size``: for photos far larger than the size they
    are resized to anyway, several times less decode work. Other formats ignore it.
    """
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ValueError(f"sample {sample.get('__key__')} from {sample.get('__url__')} has no image member")
    img = Image.open(io.BytesIO(sample[ext]))
    if draft is not None and img.format == "JPEG":
        img.draft(draft[0], (draft[1], draft[1]))
    img.load()
    return img


class ImageBatch(NamedTuple):
    """A batch of decoded, equally sized images whose views the module makes on the device."""

    images: torch.Tensor  # uint8 [B, C, S, S]
    seed: int  # seeds the device multi-crop of this batch


def seed_for(*parts: int) -> int:
    """A 32-bit seed derived from ``parts``."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def seed_everything_for(*parts: int) -> None:
    """Seed torch, numpy and ``random`` from ``parts`` (per batch in workers, per step in training)."""
    s = seed_for(*parts)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class EpochBatches(IterableDataset):
    """Batches ``start..n_batches-1`` of one epoch of one rank, split over DataLoader workers."""

    def __init__(
        self,
        spec: StreamSpec,
        transform: Callable[[Image.Image], list[torch.Tensor] | torch.Tensor],
        epoch: int,
        start: int,
        n_batches: int,
        rank: int,
        world: int,
    ) -> None:
        self.spec, self.transform = spec, transform
        self.epoch, self.start, self.n_batches, self.rank, self.world = epoch, start, n_batches, rank, world

    def __iter__(self) -> Iterator[list[torch.Tensor] | ImageBatch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        bs = self.spec.batch_size
        items = _rank_items(self.spec, self.epoch, self.rank, self.world)
        pos = 0  # stream position
        for j in range(self.start, self.n_batches):
            if (j - self.start) % nw != wid:
                continue
            while pos < j * bs:  # skip other workers' (and already consumed) batches undecoded
                next(items)
                pos += 1
            samples = [next(items) for _ in range(bs)]
            pos += bs
            seed_everything_for(self.spec.seed, self.epoch, self.rank, j, 11)
            draft = getattr(self.transform, "draft", None)  # set by transforms that resize to a fixed size
            views = [self.transform(decode(s, draft)) for s in samples]
            if isinstance(views[0], torch.Tensor):  # decoded images; the module makes the views
                yield ImageBatch(
                    torch.stack(cast(list[torch.Tensor], views)), seed_for(self.spec.seed, self.epoch, self.rank, j, 17)
                )
            else:
                yield [torch.stack(v) for v in zip(*views)]


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _EpochSetter:
    """Lightning calls ``loader.sampler.set_epoch(e)`` at each epoch start."""

    def __init__(self, loader: ShardLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.loader.epoch:
            self.loader.epoch = epoch
            self.loader.start = 0


class ShardLoader:
    """A resumable loader of multi-crop batches (a list of ``(B, 3, H, W)`` tensors, one per view),
    or of :class:`ImageBatch` when ``transform`` returns one uint8 tensor per image.

    Lightning treats it as stateful: ``state_dict()`` goes into checkpoints, and
    :class:`LoaderProgress` keeps ``consumed`` equal to the batches trained on.
    Iteration is lazy, so the epoch and start position are read at the first batch.
    """

    def __init__(
        self,
        spec: StreamSpec,
        transform: Callable[[Image.Image], list[torch.Tensor] | torch.Tensor],
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.spec, self.transform = spec, transform
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch = 0
        self.start = 0
        self.consumed = 0
        self.sampler = _EpochSetter(self)

    def __len__(self) -> int:
        return self.spec.batches_per_epoch(_dist()[1])

    def __iter__(self) -> Iterator[list[torch.Tensor] | ImageBatch]:
        rank, world = _dist()
        n = self.spec.batches_per_epoch(world)
        start, self.start = self.start, 0
        self.consumed = start
        ds = EpochBatches(self.spec, self.transform, self.epoch, start, n, rank, world)
        workers = min(self.num_workers, max(n - start, 0))
        dl = DataLoader(
            ds,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if workers else None,
        )
        yield from dl

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.start = int(state["consumed"])


class LoaderProgress(pl.Callback):
    """Record how many batches of the epoch training has consumed, and restore it on resume.

    Lightning stores the loader's ``state_dict`` in the checkpoint, but when
    ``configure_optimizers`` asks for ``estimated_stepping_batches`` the train loader
    is set up before the checkpoint is read and Lightning never hands the state back;
    restoring here (iteration is lazy) covers that case.
    """

    def __init__(self, loader: ShardLoader) -> None:
        self.loader = loader

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        batch_idx = args[-1]
        self.loader.consumed = batch_idx + 1

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
        if states:
            self.loader.load_state_dict(states[0])
