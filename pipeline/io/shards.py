"""WebDataset shards: atomic writing and the reading helpers every stage uses.

A shard ``shard-000007.tar`` counts as written only once its record file
``shard-000007.records.jsonl`` exists; both are renamed into place, the tar
first, so a killed writer never leaves a shard that looks complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image

from pipeline.core.manifest import atomic_write_bytes
from pipeline.io.images import decode_rgb

SHARD_PATTERN = "shard-{:06d}.tar"


def shard_path(folder: Path, index: int) -> Path:
    return Path(folder) / SHARD_PATTERN.format(index)


def records_path(shard: Path) -> Path:
    return shard.with_suffix(".records.jsonl")


def shard_done(shard: Path) -> bool:
    """A shard is done when its tar and its record file are both in place."""
    return shard.is_file() and records_path(shard).is_file()


class _TarSampleWriter:
    """Writes samples the way ``webdataset.TarWriter`` does (``<key>.<ext>`` members), with the standard library.

    Importing webdataset imports torch (about 500 MB per process); ingest
    workers only need to write tars, so they stay small without it.
    """

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._tf = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed in close()

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        for ext, data in sample.items():
            if ext.startswith("__"):
                continue
            ti = tarfile.TarInfo(f"{key}.{ext}")
            ti.size, ti.mode, ti.uname, ti.gname = len(data), 0o444, "bigdata", "bigdata"
            # A fixed mtime makes a shard's bytes depend only on its samples, so a
            # resumed run writes exactly the shards an uninterrupted one would.
            ti.mtime = 0
            self._tf.addfile(ti, io.BytesIO(data))

    def close(self) -> None:
        self._tf.close()


class AtomicShardWriter:
    """Write samples to ``<shard>.tmp`` and rename on :meth:`close`.

    Use as a context manager; on an exception (a full disk, a file-size limit)
    the temporary file is removed, so no partial shard is left behind.
    """

    def __init__(self, shard: Path) -> None:
        self.shard = Path(shard)
        self.shard.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.shard.with_name(f".{self.shard.name}.{os.getpid()}.tmp")
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        self._writer = _TarSampleWriter(self._fh)
        self.count = 0

    def write(self, key: str, ext: str, data: bytes, meta: dict[str, Any]) -> None:
        self._writer.write({"__key__": key, ext: data, "json": json.dumps(meta, sort_keys=True).encode()})
        self.count += 1

    def close(self, records: list[dict[str, Any]]) -> None:
        self._writer.close()
        self._fh.close()
        os.replace(self.tmp, self.shard)
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_bytes(records_path(self.shard), body.encode())

    def abort(self) -> None:
        try:
            self._writer.close()
            self._fh.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> None:
        if exc_type is None:
            return
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(self.shard)  # name the shard in "no space left" and like errors
        # Closing a tar on a full disk fails again; the first error is the one to report.
        with contextlib.suppress(OSError):
            self.abort()


def list_shards(folder: Path) -> list[Path]:
    """The complete shards in ``folder``, sorted."""
    return sorted(p for p in Path(folder).glob("shard-*.tar") if shard_done(p))


def iter_samples(shards: list[Path]) -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__", "image": bytes, "ext", "meta": dict}`` from shards, in order.

    Reads tars with the standard library: sequential, no worker processes, so
    it suits the small passes (reports, evaluation sets). Training uses
    :func:`webdataset_pipeline` instead.
    """
    for shard in shards:
        with tarfile.open(shard, "r") as tf:
            current: dict[str, Any] = {}
            for m in tf:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                if current and current["__key__"] != key:
                    yield _finish(current)
                    current = {}
                fh = tf.extractfile(m)
                assert fh is not None
                current.setdefault("__key__", key)
                current[ext] = fh.read()
            if current:
                yield _finish(current)


def _finish(sample: dict[str, Any]) -> dict[str, Any]:
    meta = json.loads(sample.pop("json", b"{}"))
    ext = next((e for e in ("png", "jpg", "jpeg", "webp") if e in sample), None)
    if ext is None:
        raise ValueError(f"sample {sample['__key__']} has no image member")
    return {"__key__": sample["__key__"], "image": sample[ext], "ext": ext, "meta": meta}


def read_metadata(folder: Path) -> list[dict[str, Any]]:
    """Metadata of every sample in a shard folder, from the record files (no image decode)."""
    out: list[dict[str, Any]] = []
    for shard in list_shards(folder):
        with records_path(shard).open() as fh:
            for line in fh:
                rec = json.loads(line)
                if rec.get("status") == "accepted":
                    out.append(rec)
    return out


def image_of(sample: dict[str, Any]) -> Image.Image:
    """Decode a sample from :func:`iter_samples` to an RGB PIL image."""
    return decode_rgb(sample["image"])
