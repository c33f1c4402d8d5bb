"""Atomic shard writing and the readers every stage uses."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from pipeline.io.shards import (
    AtomicShardWriter,
    image_of,
    iter_samples,
    list_shards,
    read_metadata,
    records_path,
    shard_done,
    shard_path,
)
from tests.bad_inputs import encode, noise


def _write(shard: Path, n: int, seed: int = 0) -> list[dict]:
    recs = []
    with AtomicShardWriter(shard) as w:
        for i in range(n):
            key = f"{seed:04d}{i:016d}"
            meta = {"id": key, "source": f"{i}.png", "mode": "RGB"}
            w.write(key, "png", encode(Image.fromarray(noise(8, 8, seed=seed + i)), "PNG"), meta)
            recs.append({**meta, "key": f"{i}.png", "status": "accepted"})
        recs.append({"key": "bad.png", "status": "rejected", "reason": "truncated"})
        w.close(recs)
    return recs


def test_a_shard_appears_only_when_complete(tmp_path: Path) -> None:
    shard = shard_path(tmp_path, 3)
    assert shard.name == "shard-000003.tar"
    w = AtomicShardWriter(shard)
    w.write("k", "png", encode(Image.fromarray(noise(8, 8)), "PNG"), {"id": "k"})
    assert not shard.exists() and list_shards(tmp_path) == []  # still a hidden .tmp
    w.close([{"key": "k", "status": "accepted"}])
    assert shard_done(shard) and list_shards(tmp_path) == [shard]


def test_an_exception_leaves_no_shard_and_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="worker died"), AtomicShardWriter(shard_path(tmp_path, 0)) as w:  # noqa: PT012
        w.write("k", "png", b"x", {})
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_a_tar_without_its_record_file_is_not_a_shard(tmp_path: Path) -> None:
    _write(shard_path(tmp_path, 0), 2)
    _write(shard_path(tmp_path, 1), 2, seed=10)
    records_path(shard_path(tmp_path, 1)).unlink()  # killed between the two renames
    assert list_shards(tmp_path) == [shard_path(tmp_path, 0)]
    assert len(list(iter_samples(list_shards(tmp_path)))) == 2


def test_readers_agree_and_shards_are_valid_webdataset(tmp_path: Path) -> None:
    _write(shard_path(tmp_path, 0), 3)
    _write(shard_path(tmp_path, 1), 2, seed=10)
    samples = list(iter_samples(list_shards(tmp_path)))
    assert [s["meta"]["source"] for s in samples] == ["0.png", "1.png", "2.png", "0.png", "1.png"]
    assert all(s["ext"] == "png" and image_of(s).mode == "RGB" for s in samples)
    assert [m["id"] for m in read_metadata(tmp_path)] == [s["__key__"] for s in samples]  # accepted only
    ds = wds.WebDataset([str(p) for p in list_shards(tmp_path)], shardshuffle=False).decode("pil")
    got = [(s["__key__"], s["json"]["source"], s["png"].size) for s in ds]
    assert got == [(s["__key__"], s["meta"]["source"], (8, 8)) for s in samples]


def test_shard_bytes_depend_only_on_samples(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "shard-000000.tar", 2)
    _write(tmp_path / "b" / "shard-000000.tar", 2)
    assert (tmp_path / "a/shard-000000.tar").read_bytes() == (tmp_path / "b/shard-000000.tar").read_bytes()
    with tarfile.open(tmp_path / "a/shard-000000.tar") as tf:
        assert {m.mtime for m in tf} == {0}


def test_sample_without_image_is_an_error(tmp_path: Path) -> None:
    with AtomicShardWriter(shard_path(tmp_path, 0)) as w:
        w._writer.write({"__key__": "k", "json": json.dumps({}).encode()})
        w.close([])
    with pytest.raises(ValueError, match="no image member"):
        list(iter_samples([shard_path(tmp_path, 0)]))
