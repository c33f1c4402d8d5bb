"""Tiny, distinct images for cluster tests (so each job does real work in seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_pool(folder: Path, n: int, size: int = 24, seed: int = 0) -> Path:
    """Write ``n`` distinct random grayscale PNGs to ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(folder / f"img_{i:03d}.png")
    return folder
