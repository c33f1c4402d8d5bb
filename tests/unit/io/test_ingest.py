"""Ingest on the generated bad-input corpus: every input accounted for once, for the right reason."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config.ingest import IngestConfig
from pipeline.io.ingest import ingest, input_fingerprint, sample_id
from pipeline.io.shards import iter_samples, list_shards, read_metadata
from tests.bad_inputs import TEST_MAX_PIXELS, encode, noise

ROOT = Path(__file__).resolve().parents[3]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workers", [1, 2])
def test_corpus_every_input_accounted_for_once_with_its_reason(
    bad_corpus: tuple[Path, dict], tmp_path: Path, workers: int
) -> None:
    root, expected = bad_corpus
    opts = IngestConfig(shard_size=7, workers=workers, max_pixels=TEST_MAX_PIXELS)
    res = ingest([root], tmp_path / "out", opts, progress=False)

    recs = _records(tmp_path / "out")
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)), "an input has more than one record"
    assert set(keys) == set(expected), set(keys) ^ set(expected)
    for r in recs:
        e = expected[r["key"]]
        assert (r["status"], r.get("reason", "")) == (e.status, e.reason), (r["key"], r.get("detail"))
        if e.status == "accepted":
            assert (r["mode"], (r["width"], r["height"])) == (e.mode, e.size), r["key"]

    statuses = Counter(e.status for e in expected.values())
    assert res.counts == {"inputs": len(expected), **{s: statuses[s] for s in ("accepted", "rejected", "duplicate")}}
    assert res.reasons == dict(sorted(Counter(e.reason for e in expected.values() if e.status == "rejected").items()))
    # Duplicates name the input that was kept.
    by_key = {r["key"]: r for r in recs}
    assert by_key["zz_copies/copy_of_rgb.jpg"]["duplicate_of"] == "jpeg/rgb.jpg"
    assert by_key["zz_copies/link_to_rgb.png"]["duplicate_of"] == "png/rgb.png"

    # The shards hold exactly the accepted inputs, decodable, L or RGB 8-bit.
    samples = list(iter_samples(list_shards(tmp_path / "out")))
    accepted = {k for k, e in expected.items() if e.status == "accepted"}
    assert sorted(s["meta"]["source"] for s in samples) == sorted(accepted)
    for s in samples:
        assert s["__key__"] == s["meta"]["id"] == sample_id(s["meta"]["sha256"])
        img = Image.open(io.BytesIO(s["image"]))
        img.load()
        assert img.mode in ("L", "RGB") and img.mode == s["meta"]["mode"]
        assert img.size == (s["meta"]["width"], s["meta"]["height"])
    assert {m["key"] for m in read_metadata(tmp_path / "out")} == accepted


def test_archive_members_are_never_extracted(bad_corpus: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = bad_corpus
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ingest([root / "tars"], tmp_path / "out", IngestConfig(shard_size=4), progress=False)
    finally:
        os.chdir(cwd)
    for name in ("escape.png", "escape2.png", "gz_escape.png"):
        assert not list(root.parent.rglob(name)) and not list(tmp_path.rglob(name))
    assert not Path("/abs_escape.png").exists()


def test_exif_orientation_is_applied_to_pixels(tmp_path: Path) -> None:
    # Left half dark, right half bright; orientation 6 means "rotate 90 degrees clockwise to view".
    arr = np.zeros((20, 40), np.uint8)
    arr[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "r.jpg").write_bytes(encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95))
    ingest([tmp_path / "in"], tmp_path / "out", IngestConfig(), progress=False)
    (s,) = list(iter_samples(list_shards(tmp_path / "out")))
    assert s["ext"] == "png"  # re-encoded: the JPEG bytes would show the unrotated image
    out = np.asarray(Image.open(io.BytesIO(s["image"])))
    assert out.shape == (40, 20)
    assert out[:15].mean() < 40 and out[25:].mean() > 215  # the bright half is now at the bottom


def test_labels_are_stored_in_sample_meta(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"{i}.png").write_bytes(encode(Image.fromarray(noise(16, 16, seed=i)), "PNG"))
    labels = {"0.png": {"split": "train", "c": "a"}, "2.png": {"split": "test", "c": "b"}}
    ingest([tmp_path / "in"], tmp_path / "out", IngestConfig(), progress=False, labels=labels)
    metas = {s["meta"]["source"]: s["meta"] for s in iter_samples(list_shards(tmp_path / "out"))}
    assert metas["0.png"]["labels"] == labels["0.png"] and metas["2.png"]["labels"] == labels["2.png"]
    assert "labels" not in metas["1.png"]


@pytest.mark.parametrize("bad", [{"shard_size": 0}, {"workers": -1}, {"max_pixels": 0}, {"min_side": 0}])
def test_nonsense_options_are_refused_naming_the_key(bad: dict) -> None:
    with pytest.raises(ValueError, match=f"ingest.{next(iter(bad))} must be"):
        IngestConfig(**bad)


def _pool(folder: Path, n: int, side: int = 48) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img_{i:03d}.png").write_bytes(encode(Image.fromarray(noise(side, side, seed=100 + i)), "PNG"))


def test_rerun_is_idempotent_and_resumes_from_finished_shards(tmp_path: Path) -> None:
    _pool(tmp_path / "in", 12)
    opts = IngestConfig(shard_size=5)
    ingest([tmp_path / "in"], tmp_path / "out", opts, progress=False)
    first = _tree(tmp_path / "out")
    ingest([tmp_path / "in"], tmp_path / "out", opts, progress=False)
    assert _tree(tmp_path / "out") == first

    # Remove the last shard (as if the run died while writing it) and re-run.
    (tmp_path / "out" / "shard-000002.records.jsonl").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard-00000[01].tar")}
    ingest([tmp_path / "in"], tmp_path / "out", opts, progress=False)
    assert _tree(tmp_path / "out") == first
    assert before == {p: p.stat().st_mtime_ns for p in before}, "finished shards were rewritten"


def test_changed_options_or_inputs_never_mix_old_shards(tmp_path: Path) -> None:
    _pool(tmp_path / "in", 9)
    ingest([tmp_path / "in"], tmp_path / "out", IngestConfig(shard_size=5), progress=False)
    fp = input_fingerprint([tmp_path / "in"])
    # A smaller shard size regroups the inputs; old shard-000000 (5 samples) must not be kept.
    res = ingest([tmp_path / "in"], tmp_path / "out", IngestConfig(shard_size=3), progress=False)
    assert len(res.shards) == 3 and len(list_shards(tmp_path / "out")) == 3
    ids = [s["__key__"] for s in iter_samples(list_shards(tmp_path / "out"))]
    assert len(ids) == len(set(ids)) == 9
    # A new file changes the fingerprint and is ingested.
    _pool(tmp_path / "more", 1, side=40)
    os.replace(tmp_path / "more" / "img_000.png", tmp_path / "in" / "new.png")
    assert input_fingerprint([tmp_path / "in"]) != fp
    res = ingest([tmp_path / "in"], tmp_path / "out", IngestConfig(shard_size=3), progress=False)
    assert res.counts["accepted"] == 10
    ids = [s["__key__"] for s in iter_samples(list_shards(tmp_path / "out"))]
    assert len(ids) == len(set(ids)) == 10


def test_compressed_archive_is_inflated_once_and_cleaned_up(tmp_path: Path) -> None:
    import tarfile

    _pool(tmp_path / "in", 30, side=24)
    with tarfile.open(tmp_path / "pool.tar.gz", "w:gz") as tf:
        for p in sorted((tmp_path / "in").iterdir()):
            tf.add(p, arcname=p.name)
    res = ingest([tmp_path / "pool.tar.gz"], tmp_path / "out", IngestConfig(shard_size=8, workers=2), progress=False)
    assert res.counts == {"inputs": 30, "accepted": 30, "rejected": 0, "duplicate": 0}
    assert not (tmp_path / "out" / ".inflated").exists()
    got = {s["meta"]["source"]: s["meta"]["sha256"] for s in iter_samples(list_shards(tmp_path / "out"))}
    assert got == {
        f"pool.tar.gz/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "in").iterdir()
    }


def test_same_relative_names_in_two_folders_stay_two_inputs(tmp_path: Path) -> None:
    _pool(tmp_path / "a", 2)
    _pool(tmp_path / "b", 2, side=40)
    res = ingest([tmp_path / "a", tmp_path / "b"], tmp_path / "out", IngestConfig(), progress=False)
    assert res.counts == {"inputs": 4, "accepted": 4, "rejected": 0, "duplicate": 0}
    assert {r["key"] for r in _records(tmp_path / "out")} == {f"{d}/img_00{i}.png" for d in "ab" for i in (0, 1)}


_SLOW_INGEST = textwrap.dedent(
    """
    import sys, time
    import pipeline.io.ingest as ing
    from pipeline.config.ingest import IngestConfig
    from pipeline.io.ingest import ingest
    real = ing.normalize_image
    def slow(*a, **k):  # make the run last long enough to be killed midway
        time.sleep(0.03)
        return real(*a, **k)
    ing.normalize_image = slow
    ingest([sys.argv[1]], sys.argv[2], IngestConfig(shard_size=4, workers=int(sys.argv[3])), progress=False)
    """
)


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path: Path, workers: int) -> None:
    _pool(tmp_path / "in", 40)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_INGEST, str(tmp_path / "in"), str(out), str(workers)],
        cwd=ROOT,
        start_new_session=True,  # so the kill reaches the worker processes too
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("shard-*.records.jsonl"))) < 2:
            assert proc.poll() is None, "ingest ended before it could be killed"
            assert time.monotonic() < deadline, "no shard appeared in 60 s"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(list_shards(out))
    assert 2 <= done < 10, f"{done} shards finished before the kill; the test did not interrupt the run"
    assert not (out / "records.jsonl").exists()

    res = ingest([tmp_path / "in"], out, IngestConfig(shard_size=4, workers=workers), progress=False)
    assert res.counts == {"inputs": 40, "accepted": 40, "rejected": 0, "duplicate": 0}
    assert not list(out.glob(".shard-*.tmp")), "a half-written shard was left behind"
    ids = [s["__key__"] for s in iter_samples(list_shards(out))]
    want = {sample_id(hashlib.sha256(p.read_bytes()).hexdigest()) for p in (tmp_path / "in").iterdir()}
    assert len(ids) == 40 and set(ids) == want

    # The resumed output is byte for byte what an uninterrupted run writes.
    ingest([tmp_path / "in"], tmp_path / "clean", IngestConfig(shard_size=4), progress=False)
    assert _tree(out) == _tree(tmp_path / "clean")
