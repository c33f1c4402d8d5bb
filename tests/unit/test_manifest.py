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
