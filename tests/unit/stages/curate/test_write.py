"""The write step: the retrieved ids become shards with their lineage in ``meta["curation"]``."""

from __future__ import annotations

import pytest

from pipeline.io.shards import iter_samples, list_shards
from pipeline.stages.curate import write
from pipeline.stages.curate.context import write_jsonl
from tests.unit.stages.curate.conftest import World


def test_retrieved_ids_are_written_with_their_lineage(world: World) -> None:
    ctx = world.make_ctx()
    ctx.opts.shard_size = 2
    pool = world.ids("pool")
    chosen = [pool["p05.png"], pool["p01.png"], pool["p09.png"]]
    (world.curate / "retrieve").mkdir(parents=True)
    write_jsonl(
        world.curate / "retrieve" / "retrieved.jsonl", [{"id": i, "seed": f"s{k}"} for k, i in enumerate(chosen)]
    )
    folder = world.curate / "shards"
    m = write.run(ctx, {}, folder, write.STEP.hash(ctx, {}))
    samples = list(iter_samples(list_shards(folder)))
    assert sorted(s["__key__"] for s in samples) == sorted(chosen) and m.counts == {"images": 3, "shards": 2}
    assert {s["__key__"]: s["meta"]["curation"] for s in samples} == {
        i: {"seed": f"s{k}"} for k, i in enumerate(chosen)
    }
    assert len((folder / "records.jsonl").read_text().splitlines()) == 3


def test_the_hash_follows_the_shard_size(world: World) -> None:
    ctx = world.make_ctx()
    h = write.STEP.hash(ctx, {})
    ctx.opts.shard_size = 7
    assert write.STEP.hash(ctx, {}) != h


def test_without_retrieved_ids_it_fails(world: World) -> None:
    with pytest.raises(FileNotFoundError, match=r"retrieved\.jsonl"):
        write.run(world.make_ctx(), {}, world.curate / "shards", "h")
