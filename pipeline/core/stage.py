"""Helpers every stage uses: its folder, its config section and the skip check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from pipeline.core.manifest import MANIFEST_NAME, Manifest, changed_files, config_hash, manifest_digest, read_manifest

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
    """The folder's manifest when its outputs are truly complete; else ``None``.

    Complete means three things: the manifest was written with
    ``expected_hash``; every upstream manifest it records in ``inputs`` still
    has the content it had when this stage read it (lineage: a re-run or
    repaired upstream re-runs this stage); and every file it records in
    ``files`` is still there with its size and digest. Files that fail that
    check are removed, so the redone stage writes them again instead of
    resuming on top of them. Logs why work is skipped or redone.
    """
    try:
        m = read_manifest(folder)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as e:  # JSONDecodeError is a ValueError
        log.warning("%s: unreadable manifest in %s (%s); redoing", what, folder, e)
        return None
    if m.config_hash != expected_hash:
        log.info("%s: config changed (hash %s -> %s); redoing %s", what, m.config_hash, expected_hash, folder)
        return None
    upstream = _changed_upstream(m)
    if upstream:
        log.info("%s: upstream changed since %s was written (%s); redoing", what, folder, "; ".join(upstream))
        return None
    damaged = changed_files(folder, m.files)
    if damaged:
        shown = ", ".join(f"{k} ({v})" for k, v in list(damaged.items())[:5])
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        log.warning(
            "%s: %d output files in %s differ from its manifest: %s%s; redoing that work",
            what,
            len(damaged),
            folder,
            shown,
            more,
        )
        # The manifest goes first: the folder must not look complete while it is repaired.
        (Path(folder) / MANIFEST_NAME).unlink(missing_ok=True)
        for rel in damaged:
            Path(folder, rel).unlink(missing_ok=True)
        return None
    log.info("%s: outputs in %s match the config (hash %s); skipping", what, folder, expected_hash)
    return m


def _changed_upstream(m: Manifest) -> list[str]:
    """Upstream folders whose manifest differs from the one ``m`` was made from."""
    out = []
    for entry in m.inputs:
        want = entry.get("manifest_sha256")
        if not want:  # written before lineage digests were recorded
            continue
        up = Path(entry["path"])
        try:
            have = manifest_digest(up)
        except FileNotFoundError:
            # Moved output roots leave absolute lineage paths dangling; that is not a change of
            # content, and a stage whose input is really gone fails when it reads it.
            log.debug("lineage: %s has no manifest; not checked", up)
            continue
        except ValueError as e:
            out.append(f"{up}: unreadable manifest ({e})")
            continue
        if have != want:
            out.append(f"{entry.get('stage', up)} in {up} was redone or changed")
    return out


__all__ = ["completed", "config_hash", "section", "stage_dir"]
