"""Writing the curated set: only the kept pool samples, byte for byte, with their lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.curate.write import fetch_images, write_curated
from pipeline.io.shards import iter_samples, list_shards, read_metadata
from tests.unit.pretrain_tiny import write_shards


def _pool(folder: Path) -> tuple[list[Path], dict[str, dict]]:
    """A 12-image pool in three shards; returns the shards and every sample by id."""
    write_shards(folder, 12, per_shard=5)
    shards = list_shards(folder)
    return shards, {s["__key__"]: s for s in iter_samples(shards)}


def test_only_kept_ids_are_written_in_pool_order_with_bytes_meta_and_lineage(tmp_path: Path) -> None:
    shards, pool = _pool(tmp_path / "pool")
    ids = list(pool)
    keep = [ids[9], ids[1], ids[4], ids[10], ids[6]]  # lineage order is not pool order
    lineage = {k: {"reason": "seed" if i % 2 else "retrieved", "sim": 0.5 + i / 10} for i, k in enumerate(keep)}
    out, n = write_curated(shards, lineage, tmp_path / "out", shard_size=2)
    assert n == 5 and out == list_shards(tmp_path / "out") and len(out) == 3
    written = list(iter_samples(out))
    assert [s["__key__"] for s in written] == [ids[i] for i in (1, 4, 6, 9, 10)]
    for s in written:
        src = pool[s["__key__"]]
        assert s["image"] == src["image"] and s["ext"] == src["ext"]
        assert s["meta"] == {**src["meta"], "curation": lineage[s["__key__"]]}
    recs = read_metadata(tmp_path / "out")
    assert [r["id"] for r in recs] == [s["__key__"] for s in written]
    assert [r["shard"] for r in recs] == [p.name for p in out for _ in range(2)][:5]


def test_a_rerun_replaces_the_previous_set(tmp_path: Path) -> None:
    shards, pool = _pool(tmp_path / "pool")
    ids = list(pool)
    write_curated(shards, {k: {} for k in ids[:6]}, tmp_path / "out", shard_size=2)
    out, n = write_curated(shards, {ids[3]: {}}, tmp_path / "out", shard_size=2)
    assert n == 1 and list_shards(tmp_path / "out") == out and len(out) == 1
    assert [s["__key__"] for s in iter_samples(out)] == [ids[3]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-000000.records.jsonl", "shard-000000.tar"]


def test_an_id_missing_from_the_pool_is_an_error_naming_it(tmp_path: Path) -> None:
    shards, pool = _pool(tmp_path / "pool")
    with pytest.raises(KeyError, match=r"1 of 2 curated ids.*not-in-pool"):
        write_curated(shards, {next(iter(pool)): {}, "not-in-pool": {}}, tmp_path / "out", shard_size=2)
    assert list((tmp_path / "out").iterdir()) == []  # no partial set left to pass for the curated one


def test_fetch_images_returns_exactly_the_requested_bytes(tmp_path: Path) -> None:
    shards, pool = _pool(tmp_path / "pool")
    ids = list(pool)
    want = [ids[11], ids[0], ids[5]]
    assert fetch_images(shards, [*want, "missing"]) == {k: pool[k]["image"] for k in want}
    assert fetch_images(shards, []) == {}
