"""The skip check: config hash, upstream manifests (lineage) and output files must all still match."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.manifest import Manifest, file_digests, lineage_entry
from pipeline.core.stage import completed


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    up, down = tmp_path / "up", tmp_path / "down"
    Manifest(stage="up", config_hash="u1", counts={"n": 3}).write(up)
    (down / "out.txt").parent.mkdir(parents=True)
    (down / "out.txt").write_text("result\n")
    (down / "big.bin").write_bytes(b"x" * 100)
    Manifest(
        stage="down",
        config_hash="d1",
        inputs=[lineage_entry(up)],
        files=file_digests(down, ["out.txt", down / "big.bin"]),
    ).write(down)
    return up, down


def test_complete_when_nothing_changed(tmp_path: Path) -> None:
    _, down = _pair(tmp_path)
    m = completed(down, "d1", "down")
    assert m is not None and set(m.files) == {"out.txt", "big.bin"} and m.files["out.txt"]["bytes"] == 7


def test_redone_upstream_with_other_content_reruns_downstream(tmp_path: Path) -> None:
    up, down = _pair(tmp_path)
    Manifest(stage="up", config_hash="u1", counts={"n": 2}).write(up)  # same config, repaired: other counts
    assert completed(down, "d1", "down") is None
    assert (down / "manifest.json").is_file()  # a lineage change redoes, it does not delete outputs


def test_upstream_rewritten_identically_does_not_rerun_downstream(tmp_path: Path) -> None:
    up, down = _pair(tmp_path)
    d = json.loads((up / "manifest.json").read_text())
    d["created"] = "2000-01-01T00:00:00+00:00"  # only the time differs
    (up / "manifest.json").write_text(json.dumps(d))
    assert completed(down, "d1", "down") is not None


def test_changed_or_missing_output_files_are_redone(tmp_path: Path) -> None:
    _, down = _pair(tmp_path)
    (down / "out.txt").write_text("resulT\n")  # same size, other content
    assert completed(down, "d1", "down") is None
    # The damaged file and the manifest are gone, the intact file is kept for the redo to reuse.
    assert not (down / "out.txt").exists() and not (down / "manifest.json").exists()
    assert (down / "big.bin").exists()

    _, down = _pair(tmp_path / "again")
    (down / "big.bin").unlink()
    assert completed(down, "d1", "down") is None


def test_large_files_are_checked_by_size_only(tmp_path: Path) -> None:
    from pipeline.core.manifest import file_digest

    f = tmp_path / "f"
    f.write_bytes(b"ab")
    assert "sha256" in file_digest(f) and "sha256" not in file_digest(f, max_bytes=1)
