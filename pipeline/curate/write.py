"""Write the curated set as WebDataset shards, copying the original image bytes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pipeline.io.shards import AtomicShardWriter, iter_samples, shard_path


def write_curated(
    pool_shards: list[Path],
    lineage: Mapping[str, Mapping[str, Any]],
    out_dir: Path,
    shard_size: int,
    progress: bool = False,
) -> tuple[list[Path], int]:
    """Copy the pool samples whose id is in ``lineage`` into ``out_dir``, in pool order.

    Each sample keeps its image bytes and metadata; ``meta["curation"]`` gets its
    lineage (what brought it in, at what similarity). Returns the shards and the count.

    Raises:
        KeyError: some ids of ``lineage`` are not in ``pool_shards`` (the pool changed after it
            was embedded), so the curated set would silently come out smaller than retrieved.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear(out_dir)  # a re-run rewrites the whole set; stale shards must not linger
    shards: list[Path] = []
    writer: AtomicShardWriter | None = None
    records: list[dict[str, Any]] = []
    written: set[str] = set()
    for s in tqdm(
        _selected(iter_samples(pool_shards), lineage), total=len(lineage), desc="write", disable=not progress
    ):
        if writer is None:
            writer = AtomicShardWriter(shard_path(out_dir, len(shards)))
            records = []
        meta = {**s["meta"], "curation": dict(lineage[s["__key__"]])}
        writer.write(s["__key__"], s["ext"], s["image"], meta)
        records.append({**meta, "status": "accepted", "shard": writer.shard.name})
        written.add(s["__key__"])
        if writer.count >= shard_size:
            writer.close(records)
            shards.append(writer.shard)
            writer = None
    if writer is not None:
        writer.close(records)
        shards.append(writer.shard)
    missing = sorted(lineage.keys() - written)
    if missing:
        _clear(out_dir)  # an incomplete set must not pass for the curated one
        raise KeyError(
            f"{len(missing)} of {len(lineage)} curated ids are not in the pool shards (first: {missing[:5]}); "
            "the pool changed after it was embedded: re-run the curate stage from its embed step"
        )
    return shards, len(written)


def _clear(out_dir: Path) -> None:
    for old in out_dir.glob("shard-*"):
        old.unlink()


def _selected(samples: Iterable[dict[str, Any]], keep: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    return (s for s in samples if s["__key__"] in keep)


def fetch_images(shards: list[Path], ids: Iterable[str]) -> dict[str, bytes]:
    """The image bytes of ``ids`` (one pass over the shards)."""
    want = set(ids)
    out: dict[str, bytes] = {}
    if not want:
        return out
    for s in iter_samples(shards):
        if s["__key__"] in want:
            out[s["__key__"]] = s["image"]
            if len(out) == len(want):
                break
    return out
