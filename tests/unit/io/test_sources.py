"""Enumerating inputs: folders, archives, lists, and the things that are not files."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pipeline.io.sources import InputRef, inflate_archives, iter_all, iter_inputs, read_bytes, unsafe_member_name


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("a/b.png", False),
        ("a/..b.png", False),
        ("/etc/x", True),
        ("../x", True),
        ("a/../../x", True),
        ("a/../b", True),
        ("\\\\server\\x", True),
        ("C:\\x.png", True),
        ("c:x", True),
    ],
)
def test_unsafe_member_names(name: str, unsafe: bool) -> None:
    assert unsafe_member_name(name) is unsafe


def test_folder_walk_is_sorted_and_recursive(tmp_path: Path) -> None:
    for rel in ("b/2.png", "a/1.png", "c.png", "a/z/0.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    # Top-down: a folder's files, then its sub-folders, all in name order.
    assert [r.key for r in iter_inputs(tmp_path)] == ["c.png", "a/1.png", "a/z/0.png", "b/2.png"]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    (ref,) = iter_inputs(tmp_path)
    assert ref.rejected.startswith("not_a_regular_file") and "FIFO" in ref.rejected
    # Even if handed over as a plain ref (it became a FIFO later), reading fails at once.
    with pytest.raises(OSError, match="not a regular file"):
        read_bytes(InputRef(key="pipe.png", kind="file", path=str(tmp_path / "pipe.png")))


def test_folder_in_a_list_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "real.png").write_bytes(b"data")
    os.symlink(tmp_path / "real.png", tmp_path / "link.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\n\ndir.jpg\nreal.png\nlink.png\ndangling.png\nmissing.png\n")
    refs = {r.key: r.rejected.split(":")[0] for r in iter_inputs(lst)}
    assert refs == {
        "dir.jpg": "not_a_regular_file",
        "real.png": "",
        "link.png": "",
        "dangling.png": "missing_file",
        "missing.png": "missing_file",
    }
    assert read_bytes(next(r for r in iter_inputs(lst) if r.key == "link.png")) == b"data"


def test_missing_spec_is_one_rejected_input(tmp_path: Path) -> None:
    (ref,) = iter_inputs(tmp_path / "nope")
    assert ref.rejected == "missing_file"


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


@pytest.mark.parametrize(("suffix", "mode"), [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_tar_members_are_read_in_place(tmp_path: Path, suffix: str, mode: str) -> None:
    _tar(tmp_path / f"a{suffix}", {"x/1.png": b"one", "2.png": b"two", "../bad.png": b"evil"}, mode)
    refs = list(iter_inputs(tmp_path / f"a{suffix}"))
    assert [r.key for r in refs] == [f"a{suffix}/x/1.png", f"a{suffix}/2.png", f"a{suffix}/../bad.png"]
    assert [read_bytes(r) for r in refs[:2]] == [b"one", b"two"]
    assert refs[2].rejected == "unsafe_tar_path"
    assert refs[0].compressed is (suffix != ".tar")
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("name", "mode"), [("a.tar.gz", "w:gz"), ("a.tbz", "w:bz2"), ("a.tar.xz", "w:xz"), ("misnamed.tar", "w:gz")]
)
def test_inflated_archive_reads_the_same_bytes(tmp_path: Path, name: str, mode: str) -> None:
    members = {f"{i}.png": bytes([i]) * (100 + i) for i in range(20)}
    _tar(tmp_path / name, members, mode)
    refs = list(iter_inputs(tmp_path / name))
    assert all(r.compressed for r in refs)
    fast = inflate_archives(refs, tmp_path / "inflated")
    assert [r.key for r in fast] == [r.key for r in refs] and not any(r.compressed for r in fast)
    assert len({r.path for r in fast}) == 1 and Path(fast[0].path).parent == tmp_path / "inflated"
    assert [read_bytes(r) for r in fast] == [read_bytes(r) for r in refs] == list(members.values())


def test_broken_compressed_archive_falls_back_to_member_reads(tmp_path: Path) -> None:
    _tar(tmp_path / "a.tar.gz", {"1.png": b"one", "2.png": bytes(range(256)) * 400}, "w:gz")
    refs = list(iter_inputs(tmp_path / "a.tar.gz"))
    raw = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "a.tar.gz").write_bytes(raw[: len(raw) - 30])  # the gzip stream ends early
    fast = inflate_archives(refs, tmp_path / "inflated")
    assert fast == refs and not list((tmp_path / "inflated").glob("*"))
    assert read_bytes(fast[0]) == b"one"


def test_broken_compressed_member_read_is_an_oserror(tmp_path: Path) -> None:
    _tar(tmp_path / "a.tar.gz", {"1.png": b"one" * 1000}, "w:gz")
    ref = next(iter_inputs(tmp_path / "a.tar.gz"))
    (tmp_path / "a.tar.gz").write_bytes((tmp_path / "a.tar.gz").read_bytes()[:40])
    with pytest.raises(OSError, match=r"a\.tar\.gz: EOFError"):  # the decompressor's error, named, as an OSError
        read_bytes(ref)


def test_keys_stay_unique_across_specs(tmp_path: Path) -> None:
    for d in ("one/imgs", "two/imgs", "a"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "x.png").write_bytes(d.encode())
    lst = tmp_path / "l.txt"
    lst.write_text("a/x.png\na/x.png\n")
    refs = list(iter_all([tmp_path / "one/imgs", tmp_path / "two/imgs", lst]))
    assert [r.key for r in refs] == ["imgs/x.png", "imgs~1/x.png", "a/x.png", "a/x.png#2"]
    assert [r.rejected.split(":")[0] for r in refs] == ["", "", "", "duplicate_input"]
    # A single folder keeps keys relative to it (labels and ground truth use them).
    assert [r.key for r in iter_all([tmp_path / "a"])] == ["x.png"]
