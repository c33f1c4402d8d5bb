"""Config schema of the ``elpv_demo`` recipe."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from pipeline.config.schema import DataRecipeBase


@dataclass
class ElpvDemoRecipe(DataRecipeBase):
    """The embedded demo: ELPV solar cells plus out-of-domain distractors.

    Attributes:
        elpv_limit: Use only this many ELPV images (tests); ``None`` uses all 2,624.
        eval_fraction: Share of ELPV cells held out: in the evaluation set only,
            never in the pool or the seeds (every cell is in the evaluation set).
        test_fraction: Share of the evaluation set in the fixed split's test
            side, drawn by whole modules within each cell type.
        n_seeds: Curated seed images (ELPV, disjoint from the pool and the held-out cells).
        n_faces, n_digits, n_photo_tiles: Out-of-domain distractors in the pool.
        n_pool_copies: Planted near-duplicates of pool images.
        n_byte_copies: Planted byte-identical copies of pool images.
        n_eval_copies: Planted near-copies of held-out evaluation images (decontamination).
        n_corrupt: Unreadable files (zero-byte, truncated, not an image).
        seed: Seed of every random choice in the recipe.
    """

    name: str = "elpv_demo"
    prepare: str = "data_recipes.elpv_demo.prepare.prepare"
    elpv_limit: int | None = None
    eval_fraction: float = 0.3
    test_fraction: float = 0.3
    n_seeds: int = 150
    n_faces: int = 100
    n_digits: int = 250
    n_photo_tiles: int = 270
    n_pool_copies: int = 150
    n_byte_copies: int = 20
    n_eval_copies: int = 60
    n_corrupt: int = 3
    seed: int = 0


def register(cs: ConfigStore) -> None:
    cs.store(group="data_recipe", name="elpv_demo_schema", node=ElpvDemoRecipe)
