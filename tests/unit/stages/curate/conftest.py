"""A tiny curate world for the step tests: ingested pool, seeds and eval shards with planted copies.

The images are random smooth textures, so distinct images have unrelated copy
descriptors, while the planted copies (a brightness change, the same pixels
otherwise) have descriptors near 1. The copy descriptors are the real ones
(``copy_descriptor``); the backbone embeddings are written directly: every seed
sits next to a few named pool images (the in-domain ones), so retrieval has a
known answer without running a network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import CurateConfig, EmbedConfig
from pipeline.config.ingest import IngestConfig
from pipeline.core.manifest import Manifest, atomic_write_json
from pipeline.curate.embed import descriptor_of, load_embeddings
from pipeline.io.ingest import ingest
from pipeline.io.shards import iter_samples, list_shards, read_metadata
from pipeline.stages.curate.context import Context, save_npy

N_POOL, N_EVAL, N_SEEDS, NEAR = 24, 6, 3, 3  # NEAR: in-domain pool images per seed
DIM = 16


def _texture(rng: np.random.Generator, size: int = 64) -> Image.Image:
    x = gaussian_filter(rng.normal(size=(size, size)), 2.0)
    x = (x - x.min()) / (x.max() - x.min()) * 200 + 20
    return Image.fromarray(x.astype(np.uint8), mode="L").convert("RGB")


def _copy(img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(1.1)  # new bytes, same picture


@dataclass
class World:
    """Where everything is, and what was planted (by ingest ``source`` key)."""

    root: Path  # <output_dir>
    pool_copy: tuple[str, str]  # (copy, original) inside the pool
    eval_copy: tuple[str, str]  # (pool image, the eval image it copies)
    in_domain: dict[str, list[str]]  # seed key -> the pool keys placed next to it
    make_ctx: Callable[..., Context]

    @property
    def curate(self) -> Path:
        return self.root / "curate"

    @property
    def ingest(self) -> Path:
        return self.root / "ingest"

    def ids(self, source: str) -> dict[str, str]:
        """Ingest ``source`` key -> sample id."""
        return {r["source"]: r["id"] for r in read_metadata(self.ingest / source)}


def _ingest(images: dict[str, Image.Image], folder: Path, out: Path, extra: dict | None = None) -> None:
    folder.mkdir(parents=True)
    for name, img in images.items():
        img.save(folder / f"{name}.png")
    ingest([folder], out, IngestConfig(shard_size=10), progress=False)
    Manifest(f"ingest/{out.name}", f"hash-{out.name}", extra=extra or {}).write(out)


def _embed(world_root: Path, source: str, emb_of: Callable[[str], np.ndarray], opts: EmbedConfig) -> None:
    """``embed/<source>/{emb,copy}.npy`` and ``ids.json`` as the embed step leaves them."""
    out = world_root / "curate" / "embed" / source
    out.mkdir(parents=True)
    samples = list(iter_samples(list_shards(world_root / "ingest" / source)))
    img = [Image.open(io.BytesIO(s["image"])) for s in samples]
    cop = np.stack([descriptor_of(i, opts) for i in img]).astype(np.float16)
    emb = np.stack([emb_of(s["meta"]["source"]) for s in samples]).astype(np.float16)
    save_npy(out / "emb.npy", emb)
    save_npy(out / "copy.npy", cop)
    atomic_write_json(out / "ids.json", [s["__key__"] for s in samples])


@pytest.fixture
def world(tmp_path: Path) -> World:
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    pool = {f"p{k:02d}": _texture(rng) for k in range(N_POOL)}
    evals = {f"e{k:02d}": _texture(rng) for k in range(N_EVAL)}
    seeds = {f"s{k}": _texture(rng) for k in range(N_SEEDS)}
    pool["p00_copy"] = _copy(pool["p00"])
    pool["e00_copy"] = _copy(evals["e00"])
    gt = {
        "p00_copy.png": {"copy_of": {"source": "pool", "key": "p00.png"}, "transform": "brightness"},
        "e00_copy.png": {"copy_of": {"source": "eval", "key": "e00.png"}, "transform": "brightness"},
    }
    # Pool images p01.. sit next to the seeds (in domain); the rest is spread at random.
    near = {f"s{k}.png": [f"p{1 + k * NEAR + j:02d}.png" for j in range(NEAR)] for k in range(N_SEEDS)}
    gt.update(
        {p: {**gt.get(p, {}), "in_domain": any(p in v for v in near.values())} for p in (f"{n}.png" for n in pool)}
    )
    root = tmp_path / "out"
    (root / "recipe").mkdir(parents=True)
    (root / "recipe" / "ground_truth.json").write_text(json.dumps(gt))
    _ingest(pool, raw / "pool", root / "ingest" / "pool")
    _ingest(evals, raw / "eval", root / "ingest" / "eval")
    _ingest(seeds, raw / "seeds", root / "ingest" / "seeds")

    centre = {s: rng.normal(size=DIM) for s in near}
    home = {p: s for s, ps in near.items() for p in ps}

    def emb_of(key: str) -> np.ndarray:
        if key in centre:
            v = centre[key]
        elif key in home:  # close to its seed, a little apart from its siblings
            v = centre[home[key]] + 0.2 * rng.normal(size=DIM)
        else:
            v = rng.normal(size=DIM) * 3.0
        return v / np.linalg.norm(v)

    c = CurateConfig()
    c.embed.copy_grid = 8
    c.calibration.images = 8
    for source in ("pool", "eval", "seeds"):
        _embed(root, source, emb_of, c.embed)

    def make_ctx(opts: CurateConfig | None = None, sources: tuple[str, ...] = ("pool", "eval", "seeds")) -> Context:
        return Context(
            opts=opts or c,
            seed=0,
            progress=False,
            title="tiny",
            root=root / "curate",
            ingest=root / "ingest",
            emb={s: root / "curate" / "embed" / s for s in sources},
            emb_hash={s: f"emb-{s}" for s in sources},
        )

    w = World(root, ("p00_copy.png", "p00.png"), ("e00_copy.png", "e00.png"), near, make_ctx)
    assert load_embeddings(root / "curate" / "embed" / "pool", "copy")[0].shape == (N_POOL + 2, 18 * 2 * 8 * 8)
    return w
