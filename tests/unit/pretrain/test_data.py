"""Streaming: equal batches per rank, disjoint rank shares, worker-count independence, resumable position."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig
from pipeline.pretrain import data as D
from tests.unit.pretrain_tiny import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[str]]:
    folder = tmp_path_factory.mktemp("pool")
    ids = write_shards(folder, 42, per_shard=10, seed=3)
    found, metas = D.describe_folder(folder)
    assert [m["id"] for m in metas] == ids
    return found, ids


def _keys(spec: D.StreamSpec, epoch: int, rank: int, world: int, n: int) -> list[str]:
    it = D._rank_items(spec, epoch, rank, world)
    return [next(it)["__key__"] for _ in range(n)]


@pytest.mark.parametrize("split", ["samples", "shards"])
def test_ranks_get_disjoint_shares_and_equal_batch_counts(shards, split: str) -> None:
    paths, ids = shards
    spec = D.StreamSpec(tuple(map(str, paths)), len(ids), batch_size=4, seed=0, shuffle_buffer=8, split=split)
    world = 2
    n = spec.batches_per_epoch(world) * spec.batch_size  # 42 // 2 // 4 = 5 batches = 20 items per rank
    a, b = _keys(spec, 0, 0, world, n), _keys(spec, 0, 1, world, n)
    assert len(set(a)) == n and len(set(b)) == n  # no repeats within an epoch's share
    if split == "samples":
        assert not set(a) & set(b)  # every sample belongs to one rank
    assert set(a) | set(b) <= set(ids)
    assert _keys(spec, 1, 0, world, n) != a  # a new epoch, a new order


def test_rank_stream_cycles_instead_of_ending(shards) -> None:
    paths, ids = shards
    spec = D.StreamSpec(tuple(map(str, paths)), len(ids), batch_size=4, split="shards")
    # 5 shards over 4 ranks: rank 3 owns one shard of 2-10 samples but must still give 10 batches
    keys = _keys(spec, 0, 3, 4, 40)
    assert len(keys) == 40


def test_batches_do_not_depend_on_workers_and_resume_mid_epoch(shards) -> None:
    paths, ids = shards
    spec = D.StreamSpec(tuple(map(str, paths)), len(ids), batch_size=6, seed=4, shuffle_buffer=8)
    crop = MultiCrop(AugmentConfig(preset="grayscale", global_size=16, local_size=8, local_crops=1))
    ref = D.ShardLoader(spec, crop, num_workers=0)
    ref.sampler.set_epoch(2)
    full = list(ref)
    assert len(full) == len(ref) == 7
    assert [v.shape for v in full[0]] == [(6, 3, 16, 16)] * 2 + [(6, 3, 8, 8)]
    two = D.ShardLoader(spec, crop, num_workers=2)
    two.sampler.set_epoch(2)
    assert all(torch.equal(x, y) for a, b in zip(full, list(two)) for x, y in zip(a, b))
    resumed = D.ShardLoader(spec, crop, num_workers=2)
    resumed.load_state_dict({"epoch": 2, "consumed": 3})
    tail = list(resumed)
    assert len(tail) == 4
    assert all(torch.equal(x, y) for a, b in zip(full[3:], tail) for x, y in zip(a, b))
    assert resumed.state_dict() == {"epoch": 2, "consumed": 3}


def test_subset_keeps_only_listed_keys(shards) -> None:
    paths, ids = shards
    keep = frozenset(ids[:10])
    spec = D.StreamSpec(tuple(map(str, paths)), 10, batch_size=2, keep=keep, shuffle_buffer=4)
    assert set(_keys(spec, 0, 0, 1, 10)) == keep


def test_too_few_images_for_a_batch_names_the_key(shards) -> None:
    paths, _ = shards
    spec = D.StreamSpec(tuple(map(str, paths)), 5, batch_size=4)
    with pytest.raises(ValueError, match=r"pretrain\.data\.batch_size"):
        spec.batches_per_epoch(2)


def test_subset_ids_is_a_seeded_draw_of_n_ids() -> None:
    metas = [{"id": f"{i:04d}"} for i in range(50)] + [{"key": "k-only"}]
    a = D.subset_ids(metas, 10, seed=0)
    assert len(a) == 10 and a <= {m.get("id", m.get("key")) for m in metas}
    assert a == D.subset_ids(list(reversed(metas)), 10, seed=0)  # order of the records does not matter
    assert a != D.subset_ids(metas, 10, seed=1)
    assert D.subset_ids(metas, 100, seed=0) == {m.get("id", m.get("key")) for m in metas}
