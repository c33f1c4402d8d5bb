"""Config schema of the ``folder`` recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from pipeline.config.schema import DataRecipeBase


@dataclass
class FolderRecipe(DataRecipeBase):
    """Your own images: a pool, an optional seed set and an optional labeled set.

    Attributes:
        name: Names the output folder; pick one per domain.
        pool: Folders, tar archives or list files of unlabeled images.
        seeds: Same, for the curated seed set (may be empty).
        labeled: A folder laid out as ``<labeled>/<class>/<image>``, or ``None``.
        labels_csv: Instead of class folders: a CSV with ``key`` (path relative
            to ``labeled``), optional ``split`` and one column per task.
        task: Task name for class-folder labels.
        normal: The defect-free class of the primary task (a class folder name or a value of
            the CSV's first task column), for the eval stage's patch-level defect protocol,
            which learns from normal images only; ``None``: the task is not an inspection task.
        test_fraction: Held-out share when the labels carry no split.
        seed: Seed of the split.
    """

    name: str = "my_domain"
    prepare: str = "data_recipes.folder.prepare.prepare"
    pool: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    labeled: str | None = None
    labels_csv: str | None = None
    task: str = "label"
    normal: str | None = None
    test_fraction: float = 0.3
    seed: int = 0


def register(cs: ConfigStore) -> None:
    cs.store(group="data_recipe", name="folder_schema", node=FolderRecipe)
