"""The pipeline's settings: one Hydra-free dataclass per concept, registered with Hydra by :mod:`.store`."""

from __future__ import annotations

from typing import Any

from pipeline.config.schema import STAGE_ORDER, PipelineConfig

__all__ = ["STAGE_ORDER", "PipelineConfig", "register_configs"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so importing a parameter class does not import Hydra.
    if name == "register_configs":
        from pipeline.config.store import register_configs

        return register_configs
    raise AttributeError(f"module 'pipeline.config' has no attribute {name!r}")
