"""A fuzzed corpus: real JPEG, PNG, TIFF and WebP files, intact and broken in many ways.

:func:`build_fuzz_corpus` starts from scikit-image's sample photos (cut into
small, distinct crops so decoding stays cheap), writes them in every format and
in odd modes, then breaks copies of them: random byte flips, truncation at a
random offset, a wrong extension, a huge declared size (the header patched,
checksums fixed where the format has them), plus a few files that are not
images at all. It returns the kind of every file, so a test can check what
ingest must do with each: every file gets exactly one record; intact files
(whatever their mode or extension) are accepted; cut-off files and bombs are
never accepted.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# (format, extension, modes Pillow writes in that format)
FORMATS = (
    ("JPEG", "jpg", ("L", "RGB", "CMYK")),
    ("PNG", "png", ("L", "RGB", "RGBA", "LA", "P", "1", "I;16")),
    ("TIFF", "tif", ("L", "RGB", "RGBA", "CMYK", "1", "I;16", "F", "P", "LA")),
    ("WEBP", "webp", ("RGB", "RGBA")),
)
OTHER_EXT = {"jpg": "png", "png": "jpg", "tif": "webp", "webp": "tif"}
# Kinds whose files must be accepted, and kinds that must never be.
GOOD_KINDS = ("intact", "odd_mode", "wrong_extension")
NEVER_ACCEPTED = ("truncated", "huge_dimensions", "not_an_image", "empty")


def _crops(n: int, size: int, rng: random.Random) -> list[np.ndarray]:
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), np.stack([data.camera()] * 3, -1)]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        y, x = rng.randrange(img.shape[0] - size), rng.randrange(img.shape[1] - size)
        out.append(np.ascontiguousarray(img[y : y + size, x : x + size, :3]))
    return out


def _in_mode(rgb: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(rgb, "RGB")
    if mode == "I;16":
        g = np.asarray(img.convert("L"), dtype=np.uint16) * 180 + 1000  # a 16-bit sensor's narrow range
        return Image.fromarray(g)  # uint16: mode I;16
    if mode == "F":
        return Image.fromarray(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)  # float32: mode F
    if mode == "RGBA":
        a = np.full(rgb.shape[:2], 255, np.uint8)
        a[:, : rgb.shape[1] // 3] = 90
        return Image.fromarray(np.dstack([rgb, a]), "RGBA")
    if mode == "LA":
        return _in_mode(rgb, "RGBA").convert("LA")
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return img.convert(mode)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    kw = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _huge(data: bytes, fmt: str, w: int, h: int) -> bytes:
    """``data`` with its header claiming ``w`` x ``h`` pixels."""
    b = bytearray(data)
    if fmt == "PNG":  # IHDR right after the signature; its CRC must match or PIL refuses it as broken
        b[16:24] = struct.pack(">II", w, h)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    elif fmt == "JPEG":  # the SOF0 segment: FF C0, length, precision, height, width
        i = b.find(b"\xff\xc0")
        b[i + 5 : i + 9] = struct.pack(">HH", min(h, 65535), min(w, 65535))
    elif fmt == "TIFF":  # ImageWidth (256) and ImageLength (257) entries of the first IFD
        endian = "<" if b[:2] == b"II" else ">"
        ifd = struct.unpack(endian + "I", b[4:8])[0]
        (n,) = struct.unpack(endian + "H", b[ifd : ifd + 2])
        for k in range(n):
            e = ifd + 2 + 12 * k
            tag, typ = struct.unpack(endian + "HH", b[e : e + 4])
            if tag in (256, 257):
                v = w if tag == 256 else h
                b[e + 8 : e + 12] = struct.pack(endian + ("H" if typ == 3 else "I"), v) + (b"\0\0" if typ == 3 else b"")
    elif fmt == "WEBP":  # lossy VP8 frame header: 14-bit width and height after the start code
        i = b.find(b"\x9d\x01\x2a")
        b[i + 3 : i + 7] = struct.pack("<HH", min(w, 16383), min(h, 16383))
    return bytes(b)


def build_fuzz_corpus(root: Path, seed: int = 0, size: int = 48) -> dict[str, str]:
    """Write the corpus under ``root``; returns ``{key: kind}`` (key as ingest names the file).

    Kinds: ``intact``, ``odd_mode``, ``wrong_extension`` (must be accepted);
    ``truncated``, ``huge_dimensions``, ``not_an_image``, ``empty`` (must be
    rejected); ``byte_flip`` (either: a flipped pixel byte still decodes).
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    crops = iter(_crops(400, size, rng))
    goods: list[tuple[str, str, bytes]] = []  # (format, extension, bytes)

    def put(name: str, data: bytes, kind: str) -> None:
        (root / name).write_bytes(data)
        kinds[name] = kind

    for fmt, ext, modes in FORMATS:
        for mode in modes:
            for rep in range(2):
                data = _encode(_in_mode(next(crops), mode), fmt)
                kind = "intact" if mode in ("L", "RGB") else "odd_mode"
                put(f"{kind}_{fmt.lower()}_{mode.replace(';', '')}_{rep}.{ext}", data, kind)
                goods.append((fmt, ext, data))
        for rep in range(3):  # the right bytes behind the wrong name
            data = _encode(_in_mode(next(crops), "RGB"), fmt)
            put(f"wrong_extension_{fmt.lower()}_{rep}.{OTHER_EXT[ext]}", data, "wrong_extension")

    for i, (_fmt, ext, data) in enumerate(goods):
        for rep in range(3):
            b = bytearray(data)
            for _ in range(rng.choice((1, 2, 8, 64))):
                pos = rng.randrange(len(b))
                b[pos] ^= 1 << rng.randrange(8)
            put(f"byte_flip_{i:03d}_{rep}.{ext}", bytes(b), "byte_flip")
        for rep in range(2):  # cut anywhere: inside the header, the pixel data or the trailer
            cut = rng.randrange(1, len(data) - 1)
            put(f"truncated_{i:03d}_{rep}.{ext}", data[:cut], "truncated")
    for fmt, ext, _ in FORMATS:
        base = _encode(_in_mode(next(crops), "RGB"), fmt)
        for w, h in ((60000, 50000), (9000, 9000), (65535, 1), (16000, 16383)):
            put(f"huge_dimensions_{fmt.lower()}_{w}x{h}.{ext}", _huge(base, fmt, w, h), "huge_dimensions")
    for ext in ("jpg", "png", "tif", "webp"):
        put(f"not_an_image_text.{ext}", f"this is not a {ext} image\n".encode() * 20, "not_an_image")
        put(f"not_an_image_noise.{ext}", rng.randbytes(1500), "not_an_image")
        put(f"empty.{ext}", b"", "empty")
    return kinds
