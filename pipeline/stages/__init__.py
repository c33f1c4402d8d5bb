"""Pipeline stages. Each ``pipeline/stages/<stage>.py`` exposes ``run(cfg) -> Manifest``.

Stages are the only code that sees Hydra configs; they call typed functions
elsewhere in the package and talk to each other only through files on disk.
"""

from __future__ import annotations

import importlib

from hydra.core.config_store import ConfigStore

from pipeline.config.schema import STAGE_ORDER


def register_stage_schemas(cs: ConfigStore) -> None:
    """Register ``<stage>/schema`` for every stage whose ``pipeline.config.<stage>`` module exists.

    A stage's schema module defines ``register(cs)``; adding a stage means
    adding its module, not editing a list here.
    """
    for name in STAGE_ORDER:
        try:
            mod = importlib.import_module(f"pipeline.config.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"pipeline.config.{name}":
                raise
            continue
        mod.register(cs)
