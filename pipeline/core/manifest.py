"""Stage manifests: the file hand-off between stages.

Every stage writes its outputs into one folder and finishes by writing
``manifest.json`` there. The manifest holds the hash of the config that made
the outputs, the manifests of the inputs it read (lineage: their paths, config
hashes and content digests) and the sizes and digests of its output files. A
folder whose manifest carries the current config hash, whose upstream
manifests are still the ones it read and whose files are still the ones it
wrote is complete, so a re-run skips it (``pipeline.core.stage.completed``);
a folder without a manifest is unfinished work and is resumed or redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# Output files up to this size get a SHA-256 in the manifest (records, tables, reports);
# larger ones (shards, weights) only their size, so a skip check never reads gigabytes.
DIGEST_MAX_BYTES = 64 * 2**20


def config_hash(*parts: Any) -> str:
    """Hash JSON-serialisable parts into a short, stable hex digest.

    Keys are sorted so that dict ordering never changes the hash.
    """
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


@dataclass
class Manifest:
    """What a stage (or sub-step) produced, and from what.

    Attributes:
        stage: Stage or sub-step name, for example ``"ingest/pool"``.
        config_hash: Hash of the config section and upstream hashes.
        inputs: Upstream manifests' ``{"path", "stage", "config_hash", "manifest_sha256"}`` (lineage).
        artifacts: Named output files, relative to the manifest's folder.
        files: Output files (paths relative to the manifest's folder) to ``{"bytes", "sha256"}``
            (``sha256`` for files up to :data:`DIGEST_MAX_BYTES`), checked before a skip.
        counts: Integer counts worth reading at a glance.
        metrics: Float metrics, also logged to MLflow.
        extra: Anything else a stage wants to keep.
    """

    stage: str
    config_hash: str
    inputs: list[dict[str, str]] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = ""
    version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "stage": self.stage,
            "config_hash": self.config_hash,
            "created": self.created,
            "inputs": self.inputs,
            "artifacts": self.artifacts,
            "counts": self.counts,
            "metrics": self.metrics,
            "extra": self.extra,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            stage=d["stage"],
            config_hash=d["config_hash"],
            inputs=list(d.get("inputs", [])),
            artifacts=dict(d.get("artifacts", {})),
            counts=dict(d.get("counts", {})),
            metrics=dict(d.get("metrics", {})),
            extra=dict(d.get("extra", {})),
            files=dict(d.get("files", {})),
            created=d.get("created", ""),
            version=int(d.get("version", MANIFEST_VERSION)),
        )

    def write(self, folder: Path) -> Path:
        """Write ``manifest.json`` into ``folder``; this marks the folder complete."""
        if not self.created:
            self.created = datetime.now(UTC).isoformat(timespec="seconds")
        path = Path(folder) / MANIFEST_NAME
        atomic_write_json(path, self.to_dict())
        return path


def read_manifest(folder: Path) -> Manifest:
    """Read a folder's manifest.

    Raises:
        FileNotFoundError: naming the folder, when its stage has not finished.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the stage that writes {folder} has not finished. "
            "Run it first (for example `python run.py stage=all`)."
        )
    with path.open() as fh:
        return Manifest.from_dict(json.load(fh))


def is_complete(folder: Path, expected_hash: str) -> bool:
    """True when ``folder`` holds a manifest written with ``expected_hash``."""
    try:
        return read_manifest(folder).config_hash == expected_hash
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False


def manifest_digest(folder: Path) -> str:
    """SHA-256 of a folder's manifest content, leaving out when it was written.

    A stage that is redone and writes the same outputs gets the same digest,
    so repairing an upstream folder re-runs what depends on it only when the
    repair changed something the manifest records.
    """
    with (Path(folder) / MANIFEST_NAME).open() as fh:
        d = json.load(fh)
    d.pop("created", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def lineage_entry(folder: Path) -> dict[str, str]:
    """The lineage record for an upstream folder: its path, config hash and manifest digest."""
    m = read_manifest(folder)
    return {
        "path": str(Path(folder).resolve()),
        "stage": m.stage,
        "config_hash": m.config_hash,
        "manifest_sha256": manifest_digest(folder),
    }


def file_digest(path: Path, max_bytes: int = DIGEST_MAX_BYTES) -> dict[str, Any]:
    """``{"bytes": size}``, plus ``"sha256"`` when the file is at most ``max_bytes`` long."""
    size = Path(path).stat().st_size
    out: dict[str, Any] = {"bytes": size}
    if size <= max_bytes:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        out["sha256"] = h.hexdigest()
    return out


def file_digests(folder: Path, paths: Any, max_bytes: int = DIGEST_MAX_BYTES) -> dict[str, dict[str, Any]]:
    """:func:`file_digest` of each path (absolute, or relative to ``folder``), keyed relative to ``folder``."""
    folder = Path(folder).resolve()
    out: dict[str, dict[str, Any]] = {}
    for p in sorted({Path(folder, p).resolve() for p in paths}):
        out[os.path.relpath(p, folder)] = file_digest(p, max_bytes)
    return out


def changed_files(folder: Path, files: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The recorded files that are missing or differ from the record: ``{relative path: what}``."""
    out: dict[str, str] = {}
    for rel, want in files.items():
        p = Path(folder, rel)
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            out[rel] = "missing"
            continue
        if size != want.get("bytes"):
            out[rel] = f"{size} bytes, the manifest says {want.get('bytes')}"
        elif "sha256" in want and file_digest(p)["sha256"] != want["sha256"]:
            out[rel] = "content changed"
    return out
