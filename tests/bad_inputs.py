"""A generated corpus of everything real image collections contain, good and bad.

:func:`build_corpus` writes the files and returns what ingest must say about
each input (its key, status and reason), so tests can check that every input is
accounted for exactly once and for the right reason.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Smaller than PIL's default bomb limit, so a test can set max_pixels below the
# size of a cheap image and still exercise the check.
TEST_MAX_PIXELS = 1_000_000


@dataclass(frozen=True)
class Expect:
    """What ingest must record for one input."""

    status: str  # accepted | duplicate | rejected
    reason: str = ""
    mode: str = ""  # stored mode of accepted images
    size: tuple[int, int] | None = None  # stored (width, height) of accepted images


def noise(h: int, w: int, channels: int = 3, seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 65535 if dtype == np.uint16 else 255
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, hi, shape, dtype=dtype)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_with_orientation(w: int, h: int, orientation: int) -> bytes:
    img = Image.fromarray(noise(h, w, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=90)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (900 M by default)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1024))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _add(tf: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, target: str = "") -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mtime = 0
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        ti.linkname = target
        tf.addfile(ti)


def build_corpus(root: Path) -> dict[str, Expect]:
    """Write the corpus under ``root``; return the expected record of every input key.

    Ingest must be run with ``max_pixels=TEST_MAX_PIXELS`` and ``min_side=8``.
    """
    root.mkdir(parents=True, exist_ok=True)
    exp: dict[str, Expect] = {}

    def put(key: str, data: bytes, expect: Expect) -> None:
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        exp[key] = expect

    rgb = Image.fromarray(noise(24, 32, seed=1))
    gray = Image.fromarray(noise(24, 32, 1, seed=2))
    rgba = Image.fromarray(noise(24, 32, 4, seed=3))
    pal = rgb.quantize(16)
    sixteen = Image.fromarray(noise(24, 32, 1, seed=4, dtype=np.uint16))
    ok_rgb = Expect("accepted", mode="RGB", size=(32, 24))
    ok_l = Expect("accepted", mode="L", size=(32, 24))

    # Every format x bit depth x colour mode a collection throws at us: all accepted.
    jpeg_rgb = encode(rgb, "JPEG", quality=90)
    put("jpeg/rgb.jpg", jpeg_rgb, ok_rgb)
    put("jpeg/gray.jpeg", encode(gray, "JPEG"), ok_l)
    put("jpeg/cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG"), ok_rgb)
    put("jpeg/progressive.jpg", encode(rgb, "JPEG", progressive=True), ok_rgb)
    put("png/rgb.png", encode(rgb, "PNG"), ok_rgb)
    put("png/gray.png", encode(gray, "PNG"), ok_l)
    put("png/rgba.png", encode(rgba, "PNG"), ok_rgb)
    put("png/la.png", encode(rgba.convert("LA"), "PNG"), ok_l)
    put("png/palette.png", encode(pal, "PNG"), ok_rgb)
    put("png/palette_transparent.png", encode(pal, "PNG", transparency=0), ok_rgb)
    put("png/bilevel.png", encode(gray.convert("1"), "PNG"), ok_l)
    put("png/gray16.png", encode(sixteen, "PNG"), ok_l)
    put("tiff/rgb.tif", encode(rgb, "TIFF"), ok_rgb)
    put("tiff/gray16.tiff", encode(sixteen, "TIFF"), ok_l)
    put("tiff/cmyk.tif", encode(rgb.convert("CMYK"), "TIFF"), ok_rgb)
    put("tiff/float.tif", encode(Image.fromarray(noise(24, 32, 1, seed=5).astype(np.float32) / 7), "TIFF"), ok_l)
    put("tiff/lzw.tif", encode(rgb, "TIFF", compression="tiff_lzw"), ok_rgb)
    put("bmp/rgb.bmp", encode(rgb, "BMP"), ok_rgb)
    put("bmp/palette.bmp", encode(pal, "BMP"), ok_rgb)
    put("webp/rgb.webp", encode(rgb, "WEBP", lossless=True), ok_rgb)
    put("webp/rgba.webp", encode(rgba, "WEBP", quality=80), ok_rgb)
    put("gif/palette.gif", encode(pal, "GIF"), ok_rgb)
    # EXIF orientation: 6 rotates 90 degrees (sides swap), 2 mirrors (same size).
    put("exif/rotate90.jpg", jpeg_with_orientation(40, 20, 6), Expect("accepted", mode="RGB", size=(20, 40)))
    put("exif/mirror.jpg", jpeg_with_orientation(40, 20, 2), Expect("accepted", mode="RGB", size=(40, 20)))
    put("exif/upright.jpg", jpeg_with_orientation(40, 20, 1), Expect("accepted", mode="RGB", size=(40, 20)))
    put("deeply/nested/folder/img.png", encode(Image.fromarray(noise(24, 32, seed=6)), "PNG"), ok_rgb)
    # A folder named like an image is walked like any folder.
    put("looks_like_a_file.jpg/inside.png", encode(Image.fromarray(noise(24, 32, seed=7)), "PNG"), ok_rgb)

    # Byte-identical copies: the first in walk order is kept.
    put("zz_copies/copy_of_rgb.jpg", jpeg_rgb, Expect("duplicate", "byte_identical"))
    os.symlink(root / "png/rgb.png", root / "zz_copies/link_to_rgb.png")
    exp["zz_copies/link_to_rgb.png"] = Expect("duplicate", "byte_identical")

    # Broken files.
    put("bad/zero_bytes.jpg", b"", Expect("rejected", "empty_file"))
    put("bad/truncated.jpg", jpeg_rgb[: len(jpeg_rgb) // 2], Expect("rejected", "truncated"))
    png_rgb = (root / "png/rgb.png").read_bytes()
    put("bad/truncated.png", png_rgb[: len(png_rgb) // 2], Expect("rejected", "truncated"))
    put("bad/truncated_end.png", png_rgb[:-6], Expect("rejected", "truncated"))
    put("bad/truncated_header.png", png_rgb[:12], Expect("rejected", "truncated"))
    webp = encode(rgb, "WEBP", lossless=True)
    put("bad/truncated.webp", webp[: len(webp) // 2], Expect("rejected", "truncated"))
    tif = encode(rgb, "TIFF")
    put("bad/truncated.tif", tif[: len(tif) // 2], Expect("rejected", "truncated"))
    put("bad/text.png", b"this is not an image\n" * 20, Expect("rejected", "not_an_image"))
    put("bad/notes.txt", b"a stray file\n", Expect("rejected", "not_an_image"))
    put("bad/bomb_header.png", png_bomb(), Expect("rejected", "decompression_bomb"))
    over = encode(Image.new("L", (1100, 1000)), "PNG")  # 1.1 M pixels > TEST_MAX_PIXELS
    put("bad/over_max_pixels.png", over, Expect("rejected", "decompression_bomb"))
    put("bad/tiny.png", encode(Image.new("RGB", (4, 30)), "PNG"), Expect("rejected", "too_small"))

    # Things that are not regular files. Tests run as root, so chmod 000 cannot
    # make a read fail; these do, without ever blocking.
    os.symlink(root / "does_not_exist.png", root / "bad/broken_link.png")
    exp["bad/broken_link.png"] = Expect("rejected", "broken_symlink")
    os.mkfifo(root / "bad/fifo.png")
    exp["bad/fifo.png"] = Expect("rejected", "not_a_regular_file")
    (root / "elsewhere").mkdir()
    os.symlink(root / "elsewhere", root / "bad/linked_folder.jpg")
    exp["bad/linked_folder.jpg"] = Expect("rejected", "not_a_regular_file")

    # Archives: read in place, hostile member names refused, never extracted.
    good_member = encode(Image.fromarray(noise(24, 32, seed=8)), "PNG")
    (root / "tars").mkdir()
    with tarfile.open(root / "tars/plain.tar", "w") as tf:
        _add(tf, "ok/member.png", good_member)
        _add(tf, "../escape.png", good_member)
        _add(tf, "/abs_escape.png", good_member)
        _add(tf, "dir/../../escape2.png", good_member)
        _add(tf, "link.png", b"", tarfile.SYMTYPE, "/etc/passwd")
        _add(tf, "copy.jpg", jpeg_rgb)
        _add(tf, "ok/member.png", good_member)  # the same name again
    exp.update(
        {
            "tars/plain.tar/ok/member.png": Expect("accepted", mode="RGB", size=(32, 24)),
            "tars/plain.tar/../escape.png": Expect("rejected", "unsafe_tar_path"),
            "tars/plain.tar//abs_escape.png": Expect("rejected", "unsafe_tar_path"),
            "tars/plain.tar/dir/../../escape2.png": Expect("rejected", "unsafe_tar_path"),
            "tars/plain.tar/link.png": Expect("rejected", "tar_member_not_a_file"),
            "tars/plain.tar/copy.jpg": Expect("duplicate", "byte_identical"),
            "tars/plain.tar/ok/member.png#2": Expect("rejected", "duplicate_input"),
        }
    )
    gz_member = encode(Image.fromarray(noise(24, 32, 1, seed=9)), "PNG")
    with tarfile.open(root / "tars/packed.tar.gz", "w:gz") as tf:
        _add(tf, "a/gray.png", gz_member)
        _add(tf, "../../gz_escape.png", gz_member)
    exp["tars/packed.tar.gz/a/gray.png"] = Expect("accepted", mode="L", size=(32, 24))
    exp["tars/packed.tar.gz/../../gz_escape.png"] = Expect("rejected", "unsafe_tar_path")
    # An archive cut off inside its second member: the first is fine, the second
    # cannot be read, and the rest of the archive is reported once.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "first.png", encode(Image.fromarray(noise(24, 32, seed=10)), "PNG"))
        _add(tf, "second.png", encode(Image.fromarray(noise(64, 64, seed=11)), "PNG"))
    raw = buf.getvalue()
    cut = raw.index(b"second.png") + 512 + 1000
    put("tars/cut.tar", raw[:cut], Expect("accepted", mode="RGB", size=(32, 24)))
    del exp["tars/cut.tar"]
    exp["tars/cut.tar/first.png"] = Expect("accepted", mode="RGB", size=(32, 24))
    exp["tars/cut.tar/second.png"] = Expect("rejected", "unreadable")
    exp["tars/cut.tar/<rest>"] = Expect("rejected", "bad_archive")
    put("tars/not_really.tar", b"plain text with a .tar name\n", Expect("rejected", "bad_archive"))
    return exp
