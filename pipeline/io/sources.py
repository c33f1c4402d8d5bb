"""Enumerate raw inputs: folders, tar archives and file lists.

Each input becomes an :class:`InputRef`, a small picklable record that a worker
process can read later. Tar members are read in place by offset and never
extracted, and members whose names could escape a folder (absolute paths,
``..``) or that are not regular files are refused with a reason.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class InputRef:
    """One raw input.

    Attributes:
        key: The input's name as users know it: a path relative to its source
            root, ``archive.tar/member`` for tar members, the line of a list.
        kind: ``"file"`` or ``"tar"``.
        path: File path, or the archive's path for tar members.
        offset, size: Byte range of a tar member's data (uncompressed tars).
        member: The tar member's name (compressed tars are read by name).
        rejected: A reason code when the input is refused before reading.
    """

    key: str
    kind: str
    path: str
    offset: int = -1
    size: int = -1
    member: str = ""
    rejected: str = ""


def _is_tar(p: Path) -> bool:
    return p.name.lower().endswith(TAR_SUFFIXES)


def _is_list(p: Path) -> bool:
    return p.suffix.lower() in LIST_SUFFIXES


def unsafe_member_name(name: str) -> bool:
    """True for tar member names that would land outside an extraction folder."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in PurePosixPath(name.replace("\\", "/")).parts


def iter_tar(archive: Path, key_prefix: str) -> Iterator[InputRef]:
    """Yield one ref per member of ``archive``; refused members carry a reason."""
    compressed = not archive.name.lower().endswith(".tar")
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        yield InputRef(key=key_prefix, kind="tar", path=str(archive), rejected=f"bad_archive: {e}")
        return
    with tf:
        try:
            for m in tf:
                key = f"{key_prefix}/{m.name}"
                if m.isdir():
                    continue
                if unsafe_member_name(m.name):
                    yield InputRef(key=key, kind="tar", path=str(archive), member=m.name, rejected="unsafe_tar_path")
                elif not m.isfile():
                    yield InputRef(key=key, kind="tar", path=str(archive), member=m.name, rejected="tar_member_not_a_file")
                elif compressed:
                    yield InputRef(key=key, kind="tar", path=str(archive), member=m.name, size=m.size)
                else:
                    yield InputRef(key=key, kind="tar", path=str(archive), offset=m.offset_data, size=m.size, member=m.name)
        except (tarfile.TarError, OSError, EOFError) as e:
            yield InputRef(key=f"{key_prefix}/<rest>", kind="tar", path=str(archive), rejected=f"bad_archive: {e}")


def _walk(root: Path) -> Iterator[Path]:
    # os.walk with sorted names gives the same order on every machine, so shard
    # contents and ids are reproducible.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def iter_inputs(spec: str | Path, list_root: Path | None = None) -> Iterator[InputRef]:
    """Yield every input under ``spec``: a folder, an archive, a list or one file.

    Folders are walked recursively; archives found inside folders are opened
    too. A list file holds one path per line, relative to the list's folder.
    """
    p = Path(spec)
    if not p.exists():
        yield InputRef(key=str(spec), kind="file", path=str(p), rejected="missing_file")
        return
    if p.is_dir():
        for f in _walk(p):
            rel = f.relative_to(p).as_posix()
            yield from _file_or_archive(f, rel)
    elif _is_list(p):
        base = p.parent
        for line in p.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            target = Path(line) if Path(line).is_absolute() else base / line
            if not target.exists():
                yield InputRef(key=line, kind="file", path=str(target), rejected="missing_file")
            else:
                yield from _file_or_archive(target, line)
    else:
        yield from _file_or_archive(p, p.name)


def _file_or_archive(f: Path, key: str) -> Iterator[InputRef]:
    if f.is_symlink() and not f.exists():
        yield InputRef(key=key, kind="file", path=str(f), rejected="broken_symlink")
    elif _is_tar(f):
        yield from iter_tar(f, key)
    else:
        yield InputRef(key=key, kind="file", path=str(f))


def iter_all(specs: Iterable[str | Path]) -> Iterator[InputRef]:
    """Inputs of several specs, in order."""
    for s in specs:
        yield from iter_inputs(s)


def read_bytes(ref: InputRef) -> bytes:
    """Read one input's bytes.

    Raises:
        OSError: when the file cannot be read (the caller records ``unreadable``).
    """
    if ref.kind == "file":
        with open(ref.path, "rb") as fh:
            return fh.read()
    if ref.offset >= 0:
        with open(ref.path, "rb") as fh:
            fh.seek(ref.offset)
            data = fh.read(ref.size)
        if len(data) != ref.size:
            raise OSError(f"archive ended early: {len(data)} of {ref.size} bytes")
        return data
    with tarfile.open(ref.path, "r:*") as tf:
        fh = tf.extractfile(ref.member)
        if fh is None:
            raise OSError(f"member {ref.member} has no data")
        return fh.read()
