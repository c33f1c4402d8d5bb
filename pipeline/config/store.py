"""Hydra registration: every config schema into the ConfigStore, in one place.

The dataclass modules in ``pipeline/config/`` stay Hydra-free; each has a
``register(cs)`` that stores its schemas as ``<group>/schema`` (or, for groups whose
options differ in shape, ``<group>/<option>_schema``), and each YAML option under
``conf/`` names that schema first in its defaults list.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from pipeline.config import augment, cluster, curate, ingest, pretrain
from pipeline.config import eval as eval_config
from pipeline.config.schema import PathsConfig, PipelineConfig, StageConfig, TrackingConfig


def register_configs() -> None:
    """Store every schema; called before Hydra composes (``run.py``, the cluster submitter, tests)."""
    cs = ConfigStore.instance()
    cs.store(name="pipeline_schema", node=PipelineConfig)
    cs.store(group="paths", name="schema", node=PathsConfig)
    cs.store(group="stage", name="schema", node=StageConfig)
    cs.store(group="tracking", name="schema", node=TrackingConfig)
    for area in (ingest, curate, pretrain, augment, eval_config, cluster):
        area.register(cs)
    # Recipes are plug-ins outside the package; each recipe's schema module registers itself.
    from data_recipes import register_recipe_schemas

    register_recipe_schemas(cs)
