"""End to end: ingest a tiny ELPV demo, curate it, check outputs, report, lineage, resume and step subsets."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from pipeline.app import run_pipeline
from pipeline.config import register_configs
from pipeline.io.shards import iter_samples, list_shards, read_metadata

CONF = str(Path(__file__).resolve().parents[2] / "conf")
TINY = [
    "data_recipe=elpv_demo",
    "data_recipe.elpv_limit=80",
    "data_recipe.n_faces=10",
    "data_recipe.n_digits=10",
    "data_recipe.n_photo_tiles=10",
    "data_recipe.n_seeds=10",
    "data_recipe.n_pool_copies=10",
    "data_recipe.n_byte_copies=2",
    "data_recipe.n_eval_copies=6",
    "data_recipe.n_corrupt=1",
    "tracking=off",
    "progress=false",
    "ingest.workers=1",
    "curate.embed.backbone.name=test_efficientnet",
    "curate.embed.backbone.weights=null",
    "curate.embed.workers=0",
    "curate.embed.batch_size=32",
    "curate.shard_size=20",
    "curate/retrieval=knn",
    "curate.retrieval.k=4",
    "curate.calibration.images=40",  # copy-threshold calibration on a smaller sample than the default, for speed
]


def _cfg(tmp: Path, *extra: str):
    register_configs()
    with initialize_config_dir(CONF, version_base=None):
        return compose("config", overrides=[f"paths.root={tmp}", "stage.stages=[ingest,curate]", *TINY, *extra])


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curate")
    # Embedding alone first (as one Slurm array task would), then the rest.
    out = run_pipeline(_cfg(tmp, "curate.steps=[embed]"))
    assert not (tmp / "elpv_demo" / "curate" / "manifest.json").exists()
    assert (tmp / "elpv_demo" / "curate" / "embed" / "pool" / "manifest.json").is_file()
    out = run_pipeline(_cfg(tmp))
    return tmp / "elpv_demo" / "curate", out["curate"]


def test_outputs_counts_and_scores(curated):
    root, m = curated
    for step in ("embed/pool", "embed/seeds", "embed/eval", "dedup", "decontaminate", "retrieve", "shards", "report"):
        assert (root / step / "manifest.json").is_file(), step
    c = m.counts
    assert c["embed.pool"] > 50 and c["dedup.byte_duplicates_at_ingest"] == 2
    assert 0 < c["write.images"] == c["retrieve.retrieved"] <= c["retrieve.candidates"]
    s = m.extra["scores"]
    for k in ("dedup.recall", "dedup.precision", "decontam.recall", "retrieve.in_domain_precision"):
        assert 0.0 <= s[k] <= 1.0, k
    assert s["dedup.planted_pairs"] == 10 and s["decontam.planted"] == 6
    # The copy descriptor needs no training, so even with a random backbone planted copies are found.
    assert s["dedup.recall"] >= 0.8 and s["decontam.recall"] >= 0.8


def test_decontamination_compares_with_held_out_cells_only(curated):
    """Pool ELPV cells are evaluation images too (heldout false): they are no references, so they stay."""
    root, m = curated
    truth = json.loads((root.parent / "recipe" / "ground_truth.json").read_text())
    evals = read_metadata(root.parent / "ingest" / "eval")
    held = {r["id"] for r in evals if r["labels"]["heldout"]}
    assert len(evals) == 80 and len(held) == 24 and m.counts["decontaminate.eval_heldout"] == 24
    rows = [json.loads(x) for x in (root / "decontaminate" / "contaminated.jsonl").open()]
    assert rows and all(r["eval_id"] in held for r in rows)
    # Compared with all 80 cells, each of the 46 pool cells would match its own evaluation copy.
    pool_cells = sum(1 for t in truth.values() if t["origin"].startswith("elpv/") and "copy_of" not in t)
    assert pool_cells == 80 - 24 - 10 and len(rows) < 20


def test_shards_keep_bytes_and_lineage(curated):
    root, _ = curated
    retrieved = {json.loads(x)["id"]: json.loads(x) for x in (root / "retrieve" / "retrieved.jsonl").open()}
    removed = {json.loads(x)["id"] for x in (root / "dedup" / "removals.jsonl").open()}
    removed |= {json.loads(x)["id"] for x in (root / "decontaminate" / "contaminated.jsonl").open()}
    pool = {x["__key__"]: x["image"] for x in iter_samples(list_shards(root.parent / "ingest" / "pool"))}
    seen = 0
    for shard in sorted((root / "shards").glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for mem in tf:
                if mem.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(mem).read())
                    assert meta["curation"]["strategy"] == "knn" and "seed" in meta["curation"]
                    assert meta["id"] in retrieved and meta["id"] not in removed
                    seen += 1
                elif mem.name.endswith((".png", ".jpg")):
                    assert tf.extractfile(mem).read() == pool[mem.name.split(".")[0]]  # the ingested bytes, copied
    assert seen == len(retrieved)


def test_report_images_exist_and_decode(curated):
    root, _ = curated
    html = (root / "report" / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert {"hist_dedup.png", "seeds_neighbours.png"} <= set(srcs)
    for src in srcs:
        with Image.open(root / "report" / src) as im:
            im.load()
            assert im.width > 10 and im.height > 10


def test_rerun_skips_and_retrieval_option_redoes_only_later_steps(curated, caplog):
    root, _ = curated
    before = {s: (root / s / "manifest.json").stat().st_mtime_ns for s in ("embed/pool", "dedup", "retrieve")}
    caplog.set_level("INFO")
    run_pipeline(_cfg(root.parent.parent, "curate/retrieval=cluster", "curate.retrieval.n_clusters=4"))
    after = {s: (root / s / "manifest.json").stat().st_mtime_ns for s in before}
    assert after["embed/pool"] == before["embed/pool"] and after["dedup"] == before["dedup"]
    assert after["retrieve"] != before["retrieve"]
    row = json.loads((root / "retrieve" / "retrieved.jsonl").open().readline())
    assert row["strategy"] == "cluster" and "cluster" in row


def test_verification_option_confirms_candidates(curated):
    """Last in this file: it redoes dedup and decontaminate with candidate verification on."""
    root, _ = curated
    on = [f"curate.{s}.verify.{k}" for s in ("dedup", "decontam") for k in ("enabled=true", "calibration_images=20")]
    m = run_pipeline(_cfg(root.parent.parent, *on))["curate"]
    for step, prefix in (("dedup", "dedup"), ("decontaminate", "decontam")):
        cal = json.loads((root / step / "calibration.json").read_text())
        assert cal["images"] > 0 and "structure_threshold" in cal and "outlier_threshold" in cal
        rows = [json.loads(x) for x in (root / step / "candidates.jsonl").open()]
        assert len(rows) == m.counts[f"{step}.verify_candidates"] > 0
        assert sum(r["copy"] for r in rows) == m.counts[f"{step}.verify_verified"]
        assert all(-1.0 <= r["verify"] <= 1.0 and r["outlier"] >= 0 for r in rows)
        assert m.metrics[f"{prefix}.verify_outlier_threshold"] == pytest.approx(cal["outlier_threshold"], rel=1e-3)
    s = m.extra["scores"]
    assert s["dedup.recall"] >= 0.7 and s["decontam.recall"] >= 0.8
