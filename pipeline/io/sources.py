"""Enumerate raw inputs: folders, tar archives and file lists.

Each input becomes an :class:`InputRef`, a small picklable record that a worker
process can read later. Tar members are read in place by offset and never
extracted, and members whose names could escape a folder (absolute paths,
``..``) or that are not regular files are refused with a reason.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO, cast

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class InputRef:
    """One raw input.

    Attributes:
        key: The input's name as users know it: a path relative to its source
            root, ``archive.tar/member`` for tar members, the line of a list.
        kind: ``"file"`` or ``"tar"``.
        path: File path, or the archive's path for tar members.
        offset, size: Byte range of a tar member's data; for a compressed
            archive, in its decompressed stream.
        member: The tar member's name.
        rejected: A reason code when the input is refused before reading.
        compressed: ``path`` is a compressed archive: :func:`read_bytes` must
            decompress up to the member (slow; see :func:`inflate_archives`).
    """

    key: str
    kind: str
    path: str
    offset: int = -1
    size: int = -1
    member: str = ""
    rejected: str = ""
    compressed: bool = False


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
    # By content, not by name: a gzipped file named .tar must not be read by raw offsets.
    try:
        with open(archive, "rb") as fh:
            compressed = fh.read(6).startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))
    except OSError:
        compressed = False
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - entered below, once the open error is reported
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
                    yield InputRef(
                        key=key, kind="tar", path=str(archive), member=m.name, rejected="tar_member_not_a_file"
                    )
                elif compressed:
                    yield InputRef(
                        key=key,
                        kind="tar",
                        path=str(archive),
                        member=m.name,
                        size=m.size,
                        offset=m.offset_data,
                        compressed=True,
                    )
                else:
                    yield InputRef(
                        key=key, kind="tar", path=str(archive), offset=m.offset_data, size=m.size, member=m.name
                    )
        except (tarfile.TarError, OSError, EOFError) as e:
            yield InputRef(key=f"{key_prefix}/<rest>", kind="tar", path=str(archive), rejected=f"bad_archive: {e}")


def _walk(root: Path) -> Iterator[Path]:
    # os.walk with sorted names gives the same order on every machine, so shard
    # contents and ids are reproducible. Symlinks to folders are not followed
    # (loops, escaping the tree) but are still yielded, so that they are
    # reported as refused instead of vanishing silently.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + linked):
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


def _not_regular(f: Path) -> str:
    """Why ``f`` cannot be read as a file, or ``""`` when it is a regular file.

    FIFOs and devices would block or stream forever when opened, and folders
    named like images cannot be read, so all of them are refused up front.
    """
    try:
        st = f.stat()  # follows symlinks: a link to a regular file is fine
    except FileNotFoundError:
        return "broken_symlink" if f.is_symlink() else "missing_file"
    except OSError as e:
        return f"unreadable: {type(e).__name__}: {e}"
    if stat.S_ISREG(st.st_mode):
        return ""
    kind = (
        "a folder"
        if stat.S_ISDIR(st.st_mode)
        else "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "a device"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        else "not a regular file"
    )
    return f"not_a_regular_file: {kind}" + (" (symlink, not followed)" if f.is_symlink() else "")


def _file_or_archive(f: Path, key: str) -> Iterator[InputRef]:
    why = _not_regular(f)
    if why:
        yield InputRef(key=key, kind="file", path=str(f), rejected=why)
    elif _is_tar(f):
        yield from iter_tar(f, key)
    else:
        yield InputRef(key=key, kind="file", path=str(f))


def iter_all(specs: Iterable[str | Path]) -> Iterator[InputRef]:
    """Inputs of several specs, in order, each key unique.

    With several specs, keys under a folder are prefixed with the folder's
    name (``a/x.png``, ``b/x.png``) so that equal relative paths in two
    folders stay two inputs. A key that still repeats (a list naming a file
    twice, a tar holding one member name twice) is refused as
    ``duplicate_input``, so every input is accounted for exactly once.
    """
    specs = list(specs)
    seen: set[str] = set()
    prefixes: set[str] = set()
    for i, s in enumerate(specs):
        prefix = ""
        if len(specs) > 1 and Path(s).is_dir():
            prefix = Path(s).resolve().name or f"spec{i}"
            if prefix in prefixes:
                prefix = f"{prefix}~{i}"
            prefixes.add(prefix)
        for ref in iter_inputs(s):
            if prefix:
                ref = replace(ref, key=f"{prefix}/{ref.key}")
            if ref.key in seen:
                ref = replace(ref, rejected="duplicate_input: the same key was already listed")
                # Same key twice: make this record's key unique but recognisable.
                n = 2
                while f"{ref.key}#{n}" in seen:
                    n += 1
                ref = replace(ref, key=f"{ref.key}#{n}")
            seen.add(ref.key)
            yield ref


def inflate_archives(refs: list[InputRef], folder: Path) -> list[InputRef]:
    """Decompress each compressed archive once into ``folder`` and point its refs at the copy.

    Reading members of a ``.tar.gz`` one by one decompresses the archive from
    its start every time, which is quadratic in its size. The decompressed
    stream of a compressed tar is a plain tar with the same member offsets, so
    one linear pass makes every member a seek-and-read. Nothing is extracted:
    the copy is one tar file, removed by the caller when done.
    """
    import shutil

    out: list[InputRef] = []
    copies: dict[str, str] = {}
    for ref in refs:
        if not ref.compressed or ref.rejected:
            out.append(ref)
            continue
        if ref.path not in copies:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{len(copies):04d}-{Path(ref.path).name}.tar"
            tmp = target.with_name(target.name + ".tmp")
            try:
                with tarfile.open(ref.path, "r:*") as tf, open(tmp, "wb") as dst:
                    assert tf.fileobj is not None
                    tf.fileobj.seek(0)
                    shutil.copyfileobj(cast(IO[bytes], tf.fileobj), dst, 1 << 20)
                os.replace(tmp, target)
                copies[ref.path] = str(target)
            except Exception:  # noqa: BLE001 - a broken archive is read (and reported) member by member
                tmp.unlink(missing_ok=True)
                copies[ref.path] = ""
        copy = copies[ref.path]
        out.append(replace(ref, path=copy, compressed=False) if copy else ref)
    return out


def read_bytes(ref: InputRef) -> bytes:
    """Read one input's bytes.

    Raises:
        OSError: when the file cannot be read (the caller records ``unreadable``).
    """
    if ref.kind == "file":
        # Checked again here: a path can turn into a FIFO between enumeration
        # and reading, and opening a FIFO would block this worker forever.
        fd = os.open(ref.path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(f"{ref.path} is not a regular file")
            return fh.read()
    if ref.offset >= 0 and not ref.compressed:
        with open(ref.path, "rb") as fh:
            fh.seek(ref.offset)
            data = fh.read(ref.size)
        if len(data) != ref.size:
            raise OSError(f"archive ended early: {len(data)} of {ref.size} bytes")
        return data
    # Compressed archives cannot seek: decompress up to the member. The scan
    # stops at the first member of that name, the one enumeration refers to.
    try:
        with tarfile.open(ref.path, "r:*") as tf:
            for m in tf:
                if m.name == ref.member:
                    member = tf.extractfile(m)
                    if member is None:
                        raise OSError(f"member {ref.member} has no data")
                    return member.read()
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - tarfile/zlib/lzma errors are not OSErrors
        raise OSError(f"{ref.path}: {type(e).__name__}: {e}") from None
    raise OSError(f"{ref.path}: member {ref.member} not found")
