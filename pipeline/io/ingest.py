"""Raw inputs to WebDataset shards, accounting for every input.

Two passes, both resumable:

1. **index**: enumerate the inputs and hash their bytes (parallel). The first
   input with a given SHA-256 is a candidate; later ones are recorded as
   ``duplicate`` of it. The index is saved atomically, so a re-run reuses it.
2. **write**: candidates, in input order, are cut into fixed groups of
   ``shard_size``; each group becomes one shard, written by one worker and
   renamed into place. Finished shards are skipped on resume, so a killed run
   neither loses nor duplicates samples.

Every input ends with exactly one record: ``accepted``, ``duplicate`` or
``rejected`` with a reason.

Resuming is only safe while the plan is the same: ``.ingest_plan`` holds a
hash of the inputs (keys and sizes) and of every option that changes shard
contents. When it differs, the folder's old index and shards are removed
before anything is written, so shards cut for another ``shard_size`` or
another set of inputs are never mixed with new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pipeline.config.ingest import IngestConfig
from pipeline.core.manifest import MANIFEST_NAME, atomic_write_bytes, config_hash
from pipeline.io.images import ImageRejected, normalize_image
from pipeline.io.limits import NO_SPACE, FileTimeout, OutOfSpace, time_limit
from pipeline.io.shards import AtomicShardWriter, records_path, shard_done, shard_path
from pipeline.io.sources import InputRef, inflate_archives, iter_all, read_bytes

log = logging.getLogger(__name__)

ID_LENGTH = 20  # hex chars of SHA-256: 80 bits, collision-free far beyond 1e9 images


@dataclass
class IngestResult:
    """Counts and files of one ingest run."""

    shards: list[Path]
    records: Path
    counts: dict[str, int]
    reasons: dict[str, int] = field(default_factory=dict)


def sample_id(sha256_hex: str) -> str:
    """The stable sample id: a prefix of the content hash."""
    return sha256_hex[:ID_LENGTH]


def _hash_one(ref: InputRef) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": ref.key}
    if ref.rejected:
        rec.update(status="rejected", reason=ref.rejected.split(":")[0], detail=ref.rejected)
        return rec
    try:
        data = read_bytes(ref)
    except OSError as e:
        rec.update(status="rejected", reason="unreadable", detail=f"{type(e).__name__}: {e}")
        return rec
    if not data:
        rec.update(status="rejected", reason="empty_file", detail="0 bytes")
        return rec
    rec.update(status="candidate", sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    return rec


def _map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, desc: str, progress: bool) -> list[Any]:
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
    out: list[Any] = []
    if workers <= 1:
        for it in items:
            out.append(fn(it))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for res in ex.map(fn, items, chunksize=max(1, min(256, len(items) // (workers * 8) or 1))):
                out.append(res)
                bar.update()
    bar.close()
    return out


def _size(ref: InputRef) -> int:
    if ref.kind == "tar" or ref.rejected:
        return ref.size
    try:
        return os.stat(ref.path).st_size
    except OSError:
        return -1


def fingerprint(refs: Sequence[InputRef]) -> str:
    """A cheap hash of what the inputs are: keys, sizes and refusals (no file is read).

    Adding, removing, renaming or resizing an input changes it; an in-place
    edit that keeps the size does not (the write pass still catches that as
    ``changed_during_ingest`` when it re-hashes the bytes).
    """
    return config_hash([(r.key, _size(r), r.rejected) for r in refs])


def input_fingerprint(specs: Sequence[str | Path]) -> str:
    """:func:`fingerprint` of the inputs under ``specs``."""
    return fingerprint(list(iter_all(specs)))


def _index(refs: list[InputRef], index_file: Path, workers: int, progress: bool) -> list[dict[str, Any]]:
    if index_file.is_file():
        with index_file.open() as fh:
            recs = [json.loads(line) for line in fh]
        if [r["key"] for r in recs] == [r.key for r in refs]:
            log.info("reusing index %s (%d inputs)", index_file, len(recs))
            return recs
        log.warning("inputs changed since %s was written; re-indexing", index_file)
    recs = _map(_hash_one, refs, workers, "hash", progress)
    seen: dict[str, str] = {}
    for r in recs:
        if r["status"] != "candidate":
            continue
        if r["sha256"] in seen:
            r.update(status="duplicate", reason="byte_identical", duplicate_of=seen[r["sha256"]])
        else:
            seen[r["sha256"]] = r["key"]
    atomic_write_bytes(index_file, "".join(json.dumps(r) + "\n" for r in recs).encode())
    return recs


@dataclass(frozen=True)
class _ShardTask:
    shard: Path
    refs: list[InputRef]
    hashes: list[str]
    labels: list[dict[str, Any] | None]
    max_pixels: int
    min_side: int
    file_timeout_s: float = 60.0


def _write_shard(task: _ShardTask) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with AtomicShardWriter(task.shard) as w:
        for ref, sha, labels in zip(task.refs, task.hashes, task.labels):
            rec: dict[str, Any] = {"key": ref.key, "sha256": sha}
            try:
                with time_limit(task.file_timeout_s, ref.key):
                    data = read_bytes(ref)
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise ImageRejected("changed_during_ingest", "bytes differ from the index pass")
                    img = normalize_image(data, max_pixels=task.max_pixels, min_side=task.min_side)
            except ImageRejected as e:
                rec.update(status="rejected", reason=e.reason, detail=e.detail)
            except FileTimeout as e:
                rec.update(status="rejected", reason="timeout", detail=str(e))
            except OSError as e:
                rec.update(status="rejected", reason="unreadable", detail=f"{type(e).__name__}: {e}")
            except Exception as e:  # noqa: BLE001 - one bad file must never stop a shard
                rec.update(status="rejected", reason="decode_error", detail=f"{type(e).__name__}: {e}")
            else:
                sid = sample_id(sha)
                meta = {
                    "id": sid,
                    "source": ref.key,
                    "sha256": sha,
                    "width": img.width,
                    "height": img.height,
                    "mode": img.mode,
                    "source_format": img.source_format,
                    "source_mode": img.source_mode,
                }
                if labels:
                    meta["labels"] = labels
                w.write(sid, img.ext, img.data, meta)
                rec.update(meta, status="accepted", shard=task.shard.name)
            records.append(rec)
        w.close(records)
    return records


def ingest(
    specs: Sequence[str | Path],
    out_dir: Path,
    opts: IngestConfig | None = None,
    labels: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> IngestResult:
    """Turn the inputs under ``specs`` into shards in ``out_dir``.

    Args:
        specs: Folders, archives, list files or single files.
        out_dir: Output folder; shards, ``index.jsonl`` and ``records.jsonl``.
        opts: Shard size, workers and image limits; ``IngestConfig()`` when omitted.
        labels: Optional per-input metadata keyed by input key, stored in each
            sample's JSON under ``labels`` (evaluation labels, splits).
        progress: Show progress bars.

    Returns:
        The shards, the merged record file and counts by status and reason.
    """
    opts = opts or IngestConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = list(iter_all(specs))
    labels_used = {r.key: (labels or {}).get(r.key) for r in refs if (labels or {}).get(r.key)}
    plan = config_hash(fingerprint(refs), opts.shard_size, opts.max_pixels, opts.min_side, labels_used)
    _start_plan(out_dir, plan)
    for tmp in out_dir.glob(".shard-*.tmp"):  # half-written shards of a killed run
        tmp.unlink(missing_ok=True)
    inflated = out_dir / ".inflated"
    refs = inflate_archives(refs, inflated)
    try:
        return _ingest(refs, out_dir, opts, labels, progress)
    finally:
        shutil.rmtree(inflated, ignore_errors=True)


def _ingest(
    refs: list[InputRef],
    out_dir: Path,
    opts: IngestConfig,
    labels: dict[str, dict[str, Any]] | None,
    progress: bool,
) -> IngestResult:
    index = _index(refs, out_dir / "index.jsonl", opts.workers, progress)
    by_key = {r.key: r for r in refs}
    cands = [r for r in index if r["status"] == "candidate"]
    groups = [cands[i : i + opts.shard_size] for i in range(0, len(cands), opts.shard_size)]
    tasks = [
        _ShardTask(
            shard=shard_path(out_dir, i),
            refs=[by_key[r["key"]] for r in g],
            hashes=[r["sha256"] for r in g],
            labels=[(labels or {}).get(r["key"]) for r in g],
            max_pixels=opts.max_pixels,
            min_side=opts.min_side,
            file_timeout_s=opts.file_timeout_s,
        )
        for i, g in enumerate(groups)
    ]
    todo = [t for t in tasks if not shard_done(t.shard)]
    if len(todo) < len(tasks):
        log.info("resuming: %d of %d shards already written", len(tasks) - len(todo), len(tasks))
    bar = tqdm(total=len(cands), desc=f"ingest {out_dir.name}", unit="img", disable=not progress)
    bar.update(sum(len(t.refs) for t in tasks if shard_done(t.shard)))
    try:
        if opts.workers <= 1:
            for t in todo:
                _write_shard(t)
                bar.update(len(t.refs))
        else:
            with ProcessPoolExecutor(max_workers=opts.workers) as ex:
                for t, _ in zip(todo, ex.map(_write_shard, todo)):
                    bar.update(len(t.refs))
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        left = [t for t in todo if not shard_done(t.shard)]
        raise OutOfSpace(out_dir, e, sum(_input_bytes(t) for t in left), len(left)) from e
    finally:
        bar.close()
    return _merge_records(out_dir, tasks, index)


PLAN_NAME = ".ingest_plan"


def _input_bytes(task: _ShardTask) -> int:
    return sum(max(_size(r), 0) for r in task.refs)


def _start_plan(out_dir: Path, plan: str) -> None:
    """Keep the folder's partial work only when it was made for ``plan``; else clear it."""
    plan_file = out_dir / PLAN_NAME
    old = plan_file.read_text().strip() if plan_file.is_file() else None
    if old == plan:
        return
    stale = [*out_dir.glob("shard-*.tar"), *out_dir.glob("shard-*.records.jsonl"), *out_dir.glob(".shard-*.tmp")]
    stale += [out_dir / n for n in ("index.jsonl", "records.jsonl", MANIFEST_NAME) if (out_dir / n).exists()]
    if stale and old is not None:
        log.info("%s: inputs or options changed since the last run; removing %d old files", out_dir, len(stale))
    elif stale:
        log.warning("%s: holds %d files from an unknown run; removing them", out_dir, len(stale))
    # The manifest goes first: a folder must never look complete while its shards are being replaced.
    for p in sorted(stale, key=lambda p: p.name != MANIFEST_NAME):
        p.unlink(missing_ok=True)
    atomic_write_bytes(plan_file, (plan + "\n").encode())


def _merge_records(out_dir: Path, tasks: list[_ShardTask], index: list[dict[str, Any]]) -> IngestResult:
    written: dict[str, dict[str, Any]] = {}
    for t in tasks:
        with records_path(t.shard).open() as fh:
            for line in fh:
                rec = json.loads(line)
                written[rec["key"]] = rec
    final = [written.get(r["key"], r) for r in index]
    atomic_write_bytes(out_dir / "records.jsonl", "".join(json.dumps(r) + "\n" for r in final).encode())
    counts = Counter(r["status"] for r in final)
    reasons = Counter(r["reason"] for r in final if r["status"] == "rejected")
    shards = [t.shard for t in tasks]
    # An empty shard (every input in the group rejected) is kept so that the
    # shard numbering stays stable; readers see zero samples in it.
    return IngestResult(
        shards=shards,
        records=out_dir / "records.jsonl",
        counts={"inputs": len(final), **{k: counts.get(k, 0) for k in ("accepted", "rejected", "duplicate")}},
        reasons=dict(sorted(reasons.items())),
    )
