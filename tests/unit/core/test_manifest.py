from pathlib import Path

import pytest

from pipeline.core.manifest import Manifest, config_hash, is_complete, read_manifest


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_manifest_round_trip_marks_folder_complete(tmp_path: Path) -> None:
    assert not is_complete(tmp_path, "abc")
    Manifest(stage="x", config_hash="abc", counts={"n": 3}).write(tmp_path)
    assert is_complete(tmp_path, "abc")
    assert not is_complete(tmp_path, "other")
    assert read_manifest(tmp_path).counts == {"n": 3}


def test_missing_manifest_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_manifest(tmp_path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pipeline.core.manifest import atomic_write_bytes

    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"], "temporary file left behind"


def test_lineage_and_completed(tmp_path: Path) -> None:
    from pipeline.core.manifest import lineage_entry
    from pipeline.core.stage import completed

    assert completed(tmp_path, "h1", "x") is None
    Manifest(stage="up", config_hash="h1").write(tmp_path)
    entry = lineage_entry(tmp_path)
    assert {k: entry[k] for k in ("path", "stage", "config_hash")} == {
        "path": str(tmp_path.resolve()),
        "stage": "up",
        "config_hash": "h1",
    }
    assert len(entry["manifest_sha256"]) == 64
    assert completed(tmp_path, "h1", "x") is not None
    assert completed(tmp_path, "h2", "x") is None  # config changed: redo


def test_corrupt_manifest_is_not_complete(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    assert not is_complete(tmp_path, "abc")
    from pipeline.core.stage import completed

    assert completed(tmp_path, "abc", "x") is None
