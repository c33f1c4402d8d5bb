"""The curate stage package: one ordered step list, typed settings, clear errors."""

from __future__ import annotations

import pytest

import pipeline.stages.curate as stage
from pipeline.config.curate import CURATE_STEPS, CurateConfig, RetrievalConfig


def test_the_steps_run_in_the_configured_order() -> None:
    steps = stage.steps()
    assert ["embed", *(s.name for s in steps)] == list(CURATE_STEPS)
    assert [s.folder for s in steps] == ["dedup", "decontaminate", "retrieve", "shards", "report"]


def test_the_composed_section_becomes_the_typed_settings(compose_cfg) -> None:
    cfg = compose_cfg(["curate/retrieval=cluster", "curate.dedup.threshold=0.95", "curate.embed.copy_crop=0.0"])
    c = stage.options(cfg)
    assert isinstance(c, CurateConfig) and isinstance(c.retrieval, RetrievalConfig)
    assert c.retrieval.strategy == "cluster" and c.dedup.threshold == 0.95 and c.embed.copy_crop == 0.0


def test_an_unknown_step_or_a_missing_ingest_fails_naming_it(compose_cfg) -> None:
    with pytest.raises(ValueError, match=r"unknown steps \['dedupe'\]"):
        stage.run(compose_cfg(["curate.steps=[dedupe]"]))
    with pytest.raises(FileNotFoundError, match="run stage=ingest first"):
        stage.run(compose_cfg())


def test_the_default_options_are_the_schema_defaults(compose_cfg) -> None:
    # conf/curate/ only picks options; every default lives once, in pipeline/config/curate.py.
    assert stage.options(compose_cfg()) == CurateConfig()
