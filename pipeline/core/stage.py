"""Helpers every stage uses: its folder, its config section and the skip check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from pipeline.core.manifest import Manifest, config_hash, read_manifest

log = logging.getLogger(__name__)


def section(cfg: DictConfig, key: str) -> dict[str, Any]:
    """A resolved, plain-dict copy of one config section (for hashing and logging)."""
    node = OmegaConf.select(cfg, key)
    if node is None:
        return {}
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)
    return cast(dict[str, Any], out)


def stage_dir(cfg: DictConfig, *parts: str) -> Path:
    """``<paths.output_dir>/<parts...>``."""
    return Path(cfg.paths.output_dir).resolve().joinpath(*parts)


def completed(folder: Path, expected_hash: str, what: str) -> Manifest | None:
    """The folder's manifest when it was written with ``expected_hash``; else ``None``.

    Logs why work is skipped or redone, so a user sees what a re-run will do.
    """
    try:
        m = read_manifest(folder)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as e:  # JSONDecodeError is a ValueError
        log.warning("%s: unreadable manifest in %s (%s); redoing", what, folder, e)
        return None
    if m.config_hash == expected_hash:
        log.info("%s: outputs in %s match the config (hash %s); skipping", what, folder, expected_hash)
        return m
    log.info("%s: config changed (hash %s -> %s); redoing %s", what, m.config_hash, expected_hash, folder)
    return None


__all__ = ["completed", "config_hash", "section", "stage_dir"]
