"""The embed step: one source embedded, consolidated, skipped when done, redone when the config changes."""

from __future__ import annotations

import numpy as np

from pipeline.config.curate import EmbedConfig
from pipeline.curate.embed import load_embeddings
from pipeline.stages.curate.embed import embed_hash, embed_source
from tests.unit.stages.curate.conftest import N_EVAL, World


def _opts() -> EmbedConfig:
    e = EmbedConfig(batch_size=4, workers=0, device="cpu", copy_grid=8, copy_crop=0.1)
    e.backbone.name, e.backbone.weights = "test_efficientnet", None
    return e


def test_a_source_is_embedded_consolidated_and_then_skipped(world: World) -> None:
    e, src, out = _opts(), world.ingest / "eval", world.root / "emb" / "eval"
    m = embed_source(e, "eval", src, out, run_embed=True, progress=False)
    assert m is not None and m.counts == {"images": N_EVAL, "shards": 1} and m.config_hash == embed_hash(e, src)
    emb, ids = load_embeddings(out, "emb")
    cop, _ = load_embeddings(out, "copy")
    assert sorted(ids) == sorted(world.ids("eval").values()) and cop.shape == (N_EVAL, 18 * 2 * 8 * 8)
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=1e-2)
    assert m.extra["backbone"] == {"name": "test_efficientnet", "weights": None, "img_size": None, "kwargs": {}}
    (out / "emb.npy").write_bytes(b"not touched")  # a second run must not redo the work
    again = embed_source(e, "eval", src, out, run_embed=True, progress=False)
    assert again is not None and again.config_hash == m.config_hash and (out / "emb.npy").read_bytes() == b"not touched"


def test_another_descriptor_setting_clears_the_per_shard_files(world: World) -> None:
    e, src, out = _opts(), world.ingest / "eval", world.root / "emb" / "eval"
    embed_source(e, "eval", src, out, run_embed=True, progress=False)
    e.copy_grid = 4
    m = embed_source(e, "eval", src, out, run_embed=True, progress=False)
    assert m is not None and load_embeddings(out, "copy")[0].shape == (N_EVAL, 18 * 2 * 4 * 4)
    assert (out / "config_hash").read_text() == embed_hash(e, src) != embed_hash(_opts(), src)


def test_without_the_embed_step_unembedded_shards_give_no_manifest(world: World) -> None:
    out = world.root / "emb" / "eval"
    assert embed_source(_opts(), "eval", world.ingest / "eval", out, run_embed=False, progress=False) is None
    assert not (out / "manifest.json").exists() and [p.name for p in out.iterdir()] == ["config_hash"]
