"""What every curate step shares: the typed settings, the folders, the step record and file helpers.

A step is a module of this package named after it (``dedup.py`` for ``dedup``)
that exposes ``STEP``: a :class:`Step` whose ``run(ctx, results, folder, hash)``
writes the step's files into ``folder`` and returns its manifest, and whose
``hash(ctx, results)`` gives the config hash those outputs must carry (the step
is skipped when its folder's manifest has it).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.curate import CurateConfig
from pipeline.core.manifest import Manifest, atomic_write_bytes, config_hash
from pipeline.curate import copy_descriptor as cd
from pipeline.curate.embed import load_embeddings
from pipeline.io.shards import read_metadata


@dataclass(frozen=True)
class Context:
    """The curate run as the steps see it.

    Attributes:
        opts: The ``curate`` section, typed.
        seed: The run's seed (index training samples, k-means, calibration samples).
        progress: Show progress bars.
        title: The data recipe's name (report title).
        root: The curate stage folder; each step writes a sub-folder.
        ingest: The ingest stage folder (``pool``, ``seeds``, ``eval`` shard folders).
        emb: Consolidated embedding folder of each source embedded.
        emb_hash: Config hash of each source's embeddings.
    """

    opts: CurateConfig
    seed: int
    progress: bool
    title: str
    root: Path
    ingest: Path
    emb: dict[str, Path]
    emb_hash: dict[str, str]

    def pool_meta(self) -> dict[str, dict[str, Any]]:
        """The pool's ingest metadata by id (``source``, ``width``, ``height``...)."""
        return {r["id"]: r for r in read_metadata(self.ingest / "pool")}

    def upstream_hash(self, results: dict[str, Manifest], *parts: Any) -> str:
        """Hash of ``parts`` (config sections), the embeddings and the steps run before."""
        return config_hash([_plain(p) for p in parts], self.emb_hash, {n: m.config_hash for n, m in results.items()})


StepRun = Callable[[Context, dict[str, Manifest], Path, str], Manifest]
StepHash = Callable[[Context, dict[str, Manifest]], str]


@dataclass(frozen=True)
class Step:
    """One curate step after embedding.

    Attributes:
        name: The step's name in ``curate.steps`` (and in the stage manifest's counts).
        folder: Its output folder under the curate stage folder.
        hash: The config hash its outputs must carry.
        run: Writes its outputs and returns its manifest (the caller writes the manifest).
    """

    name: str
    folder: str
    hash: StepHash
    run: StepRun


def _plain(part: Any) -> Any:
    """A config dataclass as the plain dict the hash is taken of (lists and scalars as they are)."""
    return asdict(part) if hasattr(part, "__dataclass_fields__") else part


def features(ctx: Context, source: str, kind: str, folder: Path) -> tuple[np.ndarray, int, list[str]]:
    """Search rows of ``source`` for ``kind`` (``emb`` or ``copy``), rows per item, ids.

    Copy descriptors are centred on the pool's mean (the layout every image shares)
    into ``folder/.<source>_copy_centered.npy``, which the step removes when done.
    """
    x, ids = load_embeddings(ctx.emb[source], kind)
    if kind == "emb":
        return x, 1, ids
    if kind != "copy":
        raise ValueError(f"curate features {kind!r}: use copy or emb")
    crops = cd.rows_per_item(ctx.opts.embed.copy_crop, ctx.opts.embed.copy_flip)
    mean = copy_mean(ctx)
    return cd.center_to_file(x, mean, crops, folder / f".{source}_copy_centered.npy"), crops, ids


def copy_mean(ctx: Context) -> np.ndarray:
    """The pool's mean whole-image copy descriptor row (what :func:`features` subtracts)."""
    pool_x, _ = load_embeddings(ctx.emb["pool"], "copy")
    return cd.pool_mean(pool_x, cd.rows_per_item(ctx.opts.embed.copy_crop, ctx.opts.embed.copy_flip), seed=ctx.seed)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; none when it does not exist (a step that did not run)."""
    return [json.loads(line) for line in path.open()] if path.is_file() else []


def read_ids(path: Path, key: str = "id") -> list[str]:
    return [r[key] for r in read_jsonl(path)]


def save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())
