"""Ingest on a fuzzed corpus of real JPEG, PNG, TIFF and WebP files: one record each, no crash, no hang."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config.ingest import IngestConfig
from pipeline.io.ingest import ingest
from pipeline.io.shards import iter_samples, list_shards
from tests.fuzz_corpus import GOOD_KINDS, NEVER_ACCEPTED, build_fuzz_corpus


def test_fuzzed_corpus_gets_one_record_per_file_and_keeps_every_good_file(tmp_path: Path) -> None:
    kinds = build_fuzz_corpus(tmp_path / "in")
    assert len(kinds) >= 250 and set(kinds.values()) >= {*GOOD_KINDS, *NEVER_ACCEPTED, "byte_flip"}
    res = ingest(
        [tmp_path / "in"], tmp_path / "out", IngestConfig(shard_size=64, workers=2, file_timeout_s=20), progress=False
    )
    recs = [json.loads(line) for line in res.records.read_text().splitlines()]
    assert sorted(r["key"] for r in recs) == sorted(kinds), "every file exactly one record"
    by_kind = Counter((kinds[r["key"]], r["status"]) for r in recs)
    for r in recs:
        kind = kinds[r["key"]]
        if kind in GOOD_KINDS:
            assert r["status"] == "accepted", (r["key"], r.get("reason"), r.get("detail"))
        if kind in NEVER_ACCEPTED:
            assert r["status"] == "rejected", (r["key"], r["status"])
        if r["status"] == "rejected":
            assert r["reason"] in {"truncated", "decode_error", "not_an_image", "decompression_bomb", "empty_file"}, r
    assert by_kind["byte_flip", "accepted"] > 0 and by_kind["byte_flip", "rejected"] > 0  # flips hit data and headers
    # What is accepted is in the shards, decodable, once.
    samples = list(iter_samples(list_shards(tmp_path / "out")))
    assert len(samples) == res.counts["accepted"] == sum(r["status"] == "accepted" for r in recs)
    for s in samples:
        Image.open(io.BytesIO(s["image"])).load()


def test_a_file_that_takes_too_long_is_rejected_as_timeout_and_the_rest_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    # ~0.3 s to decode and re-encode, far over the limit; the small file takes well under 1 ms.
    Image.fromarray(rng.integers(0, 255, (2000, 2000, 3), dtype=np.uint8)).save(src / "big.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(src / "small.png")
    res = ingest([src], tmp_path / "out", IngestConfig(workers=1, file_timeout_s=0.05), progress=False)
    recs = {r["key"]: r for r in map(json.loads, res.records.read_text().splitlines())}
    assert (recs["big.png"]["status"], recs["big.png"]["reason"]) == ("rejected", "timeout")
    assert recs["small.png"]["status"] == "accepted"
