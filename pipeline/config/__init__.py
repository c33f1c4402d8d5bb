"""Config schemas (dataclasses) for Hydra's ConfigStore."""

from pipeline.config.schema import STAGE_ORDER, PipelineConfig, register_configs

__all__ = ["STAGE_ORDER", "PipelineConfig", "register_configs"]
