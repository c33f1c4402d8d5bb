"""The write step: the curated images as WebDataset shards, original bytes plus ``meta["curation"]``.

Writes ``shard-*.tar`` and ``records.jsonl`` (every curated sample's record) into
the ``shards`` folder that the pretrain stage reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.manifest import Manifest
from pipeline.curate.write import write_curated
from pipeline.io.shards import list_shards
from pipeline.stages.curate.context import Context, Step


def _hash(ctx: Context, results: dict[str, Manifest]) -> str:
    return ctx.upstream_hash(results, ctx.opts.shard_size)


def run(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    lineage: dict[str, dict[str, Any]] = {}
    with (ctx.root / "retrieve" / "retrieved.jsonl").open() as fh:  # missing: retrieve has not run, an error
        for line in fh:
            row = json.loads(line)
            lineage[row.pop("id")] = row
    shards, n = write_curated(list_shards(ctx.ingest / "pool"), lineage, folder, ctx.opts.shard_size, ctx.progress)
    with (folder / "records.jsonl").open("w") as out:
        for s in shards:
            out.write(s.with_suffix(".records.jsonl").read_text())
    return Manifest(
        "curate/shards",
        h,
        artifacts={"shards": "shard-*.tar", "records": "records.jsonl"},
        counts={"images": n, "shards": len(shards)},
        extra={"lineage": "meta['curation'] of every sample; records.jsonl lists them"},
    )


STEP = Step("write", "shards", _hash, run)
