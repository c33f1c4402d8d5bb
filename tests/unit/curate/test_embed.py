import io
import json

import numpy as np
import pytest
import timm
from PIL import Image

from pipeline.config.curate import EmbedConfig
from pipeline.curate.embed import consolidate, dist_rank_world, embed_shards, load_embeddings, out_paths
from pipeline.io.shards import AtomicShardWriter, shard_path


def test_rank_world_from_env(monkeypatch):
    for k in (
        "RANK",
        "WORLD_SIZE",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ):
        monkeypatch.delenv(k, raising=False)
    assert dist_rank_world() == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "2")
    assert dist_rank_world() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist_rank_world() == (1, 2)  # torchrun wins
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK"):
        dist_rank_world()


def _shards(folder, n_shards=3, per=5):
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        recs = []
        with AtomicShardWriter(shard_path(folder, s)) as w:
            for i in range(per):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(buf, format="PNG")
                key = f"{s:02d}{i:018d}"
                w.write(key, "png", buf.getvalue(), {"id": key})
                recs.append({"id": key, "status": "accepted"})
            w.close(recs)
    return sorted(folder.glob("shard-*.tar"))


def test_sharded_embedding_by_rank_resume_and_consolidate(tmp_path):
    shards = _shards(tmp_path / "in")
    model = timm.create_model("test_efficientnet", num_classes=0).eval()
    tf = timm.data.create_transform(**{**timm.data.resolve_data_config({}, model=model), "crop_pct": 1.0})
    opts = EmbedConfig(batch_size=4, workers=0, copy_grid=8, copy_crop=0.1)
    out = tmp_path / "emb"
    # rank 1 of 2 takes shard 1 only; rank 0 takes shards 0 and 2
    assert embed_shards(model, tf, shards, out, opts, rank=1, world_size=2)["shards_done"] == 1
    with pytest.raises(FileNotFoundError, match="not embedded"):
        consolidate(out, shards)
    assert embed_shards(model, tf, shards, out, opts, rank=0, world_size=2)["shards_done"] == 2
    assert embed_shards(model, tf, shards, out, opts)["shards_skipped"] == 3  # resume: nothing left
    info = consolidate(out, shards)
    emb, ids = load_embeddings(out, "emb")
    cop, _ = load_embeddings(out, "copy")
    assert info["n"] == 15 and emb.dtype == np.float16 and cop.shape == (15, 18 * 2 * 64)
    assert ids == [k for p in (0, 1, 2) for k in json.loads(out_paths(out, p)["ids"].read_text())]
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=1e-2)
