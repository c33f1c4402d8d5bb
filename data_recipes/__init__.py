"""Data recipes: everything specific to one data source.

A recipe is a sub-package ``data_recipes/<name>/`` with a ``prepare(cfg, out_dir)``
function and, optionally, a ``schema.py`` whose ``register(cs)`` stores the
recipe's config dataclass as ``data_recipe/<name>_schema``. The pipeline reads
only what ``prepare`` writes (see :mod:`data_recipes.contract`).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from hydra.core.config_store import ConfigStore


def register_recipe_schemas(cs: ConfigStore) -> None:
    """Register the schema of every recipe package that has one."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.ispkg:
            continue
        try:
            mod = importlib.import_module(f"data_recipes.{info.name}.schema")
        except ModuleNotFoundError as e:
            if e.name != f"data_recipes.{info.name}.schema":
                raise
            continue
        mod.register(cs)
