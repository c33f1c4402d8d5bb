"""The pipeline entry point behind ``run.py``: run the selected stages in order."""

from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path
from types import ModuleType

from omegaconf import DictConfig, OmegaConf

from pipeline.config.lock import LockConfig
from pipeline.config.schema import STAGE_ORDER
from pipeline.core import tracking
from pipeline.core.lock import stage_lock
from pipeline.core.malloc import keep_freed_memory
from pipeline.core.manifest import Manifest
from pipeline.core.stage import section

log = logging.getLogger(__name__)


def _load_stage(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"pipeline.stages.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"pipeline.stages.{name}":
            return None
        raise


def run_pipeline(cfg: DictConfig) -> dict[str, Manifest]:
    """Run ``cfg.stage.stages`` in pipeline order; returns each stage's manifest.

    Every call is one MLflow parent run with a child run per stage.
    """
    wanted = list(cfg.stage.stages)
    unknown = [s for s in wanted if s not in STAGE_ORDER]
    if unknown:
        raise ValueError(f"stage.stages has unknown stages {unknown}; known: {list(STAGE_ORDER)}")
    if cfg.get("reuse_freed_memory", True):
        keep_freed_memory()
    modules = {s: _load_stage(s) for s in wanted}
    missing = [s for s, m in modules.items() if m is None]
    if missing:
        log.warning("stages not built yet, skipped: %s", ", ".join(missing))
    for mod in modules.values():  # config mistakes a stage can see up front fail before any stage runs
        if mod is not None and hasattr(mod, "validate"):
            mod.validate(cfg)
    t = cfg.tracking
    lock_cfg = OmegaConf.to_object(cfg.lock)
    assert isinstance(lock_cfg, LockConfig)
    results: dict[str, Manifest] = {}
    with tracking.parent_run(
        enabled=t.enabled,
        tracking_uri=t.tracking_uri,
        experiment=t.experiment,
        artifact_location=t.artifact_location,
        run_name=t.run_name or f"{cfg.data_recipe.name}:{cfg.stage.name}",
        params=_resolved(cfg),
    ):
        tracking.set_tags({"data_recipe": cfg.data_recipe.name, "stages": ",".join(wanted)})
        _log_config(cfg)
        for name in STAGE_ORDER:
            mod = modules.get(name)
            if mod is None:
                continue
            log.info("=== stage %s ===", name)
            # One run at a time writes a stage folder; a second waits here (or fails, lock.wait=false).
            folder = mod.lock_folder(cfg) if hasattr(mod, "lock_folder") else Path(cfg.paths.output_dir) / name
            with stage_lock(folder, name, lock_cfg), tracking.child_run(name, params=section(cfg, name)):
                manifest = mod.run(cfg)
                tracking.log_metrics(manifest.metrics)
                tracking.log_artifact(Path(cfg.paths.output_dir) / name / "manifest.json")
            results[name] = manifest
    return results


def _resolved(cfg: DictConfig) -> dict:
    """The whole resolved config (minus Hydra's own node), logged as the parent run's params."""
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    out.pop("hydra", None)
    return out


def _log_config(cfg: DictConfig) -> None:
    if not tracking.is_active():
        return
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "config.yaml"
        p.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tracking.log_artifact(p)
