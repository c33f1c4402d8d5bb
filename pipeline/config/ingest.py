"""Ingest knobs (``conf/ingest/``), taken as they are by :func:`pipeline.io.ingest.ingest`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore


@dataclass
class IngestConfig:
    """How inputs become shards.

    Attributes:
        shard_size: Candidate inputs per shard.
        workers: Processes for hashing and decoding; 0 or 1 runs in-process. Changes how fast,
            not what is written (it is left out of the stage's config hash).
        max_pixels: Larger images are refused as decompression bombs (PIL's default limit).
        min_side: Smaller images are refused.
        file_timeout_s: Reading and decoding one file longer than this rejects it as ``timeout``,
            so a hostile file cannot hang a shard.
    """

    shard_size: int = 1000
    workers: int = 2
    max_pixels: int = 89_478_485
    min_side: int = 8
    file_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name, low in (
            ("shard_size", 1),
            ("workers", 0),
            ("max_pixels", 1),
            ("min_side", 1),
            ("file_timeout_s", 0.001),
        ):
            if getattr(self, name) < low:
                raise ValueError(f"ingest.{name} must be >= {low}, got {getattr(self, name)}")


def register(cs: ConfigStore) -> None:
    """Store ``ingest/schema``."""
    cs.store(group="ingest", name="schema", node=IngestConfig)
