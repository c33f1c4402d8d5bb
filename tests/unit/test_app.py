"""The entry point: stage selection, stages not built yet, ``--help`` and ``--cfg job``."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline import app
from pipeline.config.schema import STAGE_ORDER
from tests.bad_inputs import encode, noise
from tests.conftest import ROOT


def _tiny_folder(root: Path) -> list[str]:
    (root / "pool").mkdir(parents=True)
    for i in range(4):
        (root / "pool" / f"{i}.png").write_bytes(encode(Image.fromarray(noise(16, 16, seed=i)), "PNG"))
    return ["data_recipe=folder", f"data_recipe.pool=[{root / 'pool'}]", "tracking=off", "ingest.workers=1"]


def test_stage_all_runs_what_exists_and_names_what_is_not_built(
    tmp_path: Path, compose_cfg: Callable, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = app._load_stage
    # Pretend only ingest is built, whatever other branches have added since.
    monkeypatch.setattr(app, "_load_stage", lambda name: real(name) if name == "ingest" else None)
    cfg = compose_cfg([*_tiny_folder(tmp_path / "in"), "stage=all"])
    with caplog.at_level(logging.WARNING, logger="pipeline.app"):
        out = app.run_pipeline(cfg)
    assert list(out) == ["ingest"]
    assert "stages not built yet, skipped: curate, pretrain, eval" in caplog.text
    assert (tmp_path / "my_domain" / "ingest" / "manifest.json").is_file()


def test_load_stage_tells_missing_from_broken() -> None:
    assert app._load_stage("ingest") is not None
    assert app._load_stage("no_such_stage") is None


def test_unknown_stage_is_refused(tmp_path: Path, compose_cfg: Callable) -> None:
    cfg = compose_cfg([*_tiny_folder(tmp_path / "in"), "stage.stages=[ingest,trian]"])
    with pytest.raises(ValueError, match="trian"):
        app.run_pipeline(cfg)


def test_stage_order_is_the_pipeline_order() -> None:
    assert STAGE_ORDER == ("ingest", "curate", "pretrain", "eval")


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PIPELINE_OUTPUT_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_help_lists_groups_and_cfg_job_prints_the_resolved_config(tmp_path: Path) -> None:
    res = _run("--help", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    for group in ("data_recipe", "stage", "ingest", "tracking", "paths"):
        assert f"{group}:" in res.stdout
    res = _run("stage=ingest", "ingest.shard_size=7", "--cfg", "job", "--resolve", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "shard_size: 7" in res.stdout and f"root: {tmp_path}" in res.stdout
    assert not (tmp_path / "elpv_demo").exists(), "--cfg job must not run anything"


def test_cli_typo_fails_before_any_work(tmp_path: Path) -> None:
    res = _run("stage=ingest", "ingest.shard_sise=7", tmp_path=tmp_path)
    assert res.returncode != 0 and "shard_sise" in res.stderr
    assert not (tmp_path / "elpv_demo").exists()
