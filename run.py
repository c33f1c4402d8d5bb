#!/usr/bin/env python
"""Run the pipeline: ``python run.py stage=<ingest|curate|pretrain|eval|all> data_recipe=<name>``.

``python run.py --help`` lists the config groups; ``--cfg job`` prints the composed config.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pipeline.config import register_configs

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from pipeline.app import run_pipeline

    run_pipeline(cfg)


if __name__ == "__main__":
    main()
