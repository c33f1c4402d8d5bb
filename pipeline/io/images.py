"""Robust decoding of whatever real image collections contain.

:func:`normalize_image` turns the bytes of one file into bytes fit for a
shard, or raises :class:`ImageRejected` with a short machine-readable reason.
It never lets a bad file crash the caller.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# The bytes of a baseline JPEG in L or RGB mode are kept as they are: re-encoding
# would lose quality for nothing. Everything else becomes lossless PNG.
_KEEP_AS_IS = {("JPEG", "L"), ("JPEG", "RGB")}

# File signatures of the formats we expect. A file that starts with one but
# whose header PIL cannot parse has almost always been cut off.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
)
_PNG_IEND = b"IEND\xaeB`\x82"


class ImageRejected(Exception):
    """A file that cannot become a training image; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NormalizedImage:
    """An image ready to be stored in a shard.

    Attributes:
        data: Encoded bytes.
        ext: ``"jpg"`` or ``"png"``, the shard member's extension.
        width, height: Size after EXIF orientation.
        mode: ``"L"`` or ``"RGB"``, the stored mode.
        source_format: The file's own format, for example ``"TIFF"``.
        source_mode: The file's own PIL mode, for example ``"I;16"``.
    """

    data: bytes
    ext: str
    width: int
    height: int
    mode: str
    source_format: str
    source_mode: str


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map 16-bit and float images to 8 bits by their own min-max range.

    Scientific and inspection images (16-bit TIFFs from EL cameras, say) rarely
    use the full 16-bit range, so a fixed ``>> 8`` would leave them nearly black.
    """
    arr = np.asarray(img).astype(np.float32)  # exact for 16-bit values, half the memory of float64
    if arr.size == 0:
        raise ImageRejected("empty_image")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ImageRejected("non_finite_pixels")
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _canonical_mode(img: Image.Image) -> Image.Image:
    """Return an ``L`` or ``RGB`` image, whatever the input mode."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_8bit(img)
    if mode in ("LA", "La"):
        return _flatten_alpha(img.convert("RGBA")).convert("L")
    if mode == "P":
        has_alpha = "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        return _flatten_alpha(img) if has_alpha else img
    if mode in ("RGBA", "RGBa"):
        return _flatten_alpha(img.convert("RGBA"))
    if mode == "CMYK":
        return img.convert("RGB")
    # YCbCr, LAB, HSV and anything exotic: let PIL do the colour conversion.
    return img.convert("RGB")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an RGBA image over white, so transparent areas do not turn black."""
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, img).convert("RGB")


def normalize_image(data: bytes, max_pixels: int = 89_478_485, min_side: int = 8) -> NormalizedImage:
    """Decode ``data`` fully and return shard-ready bytes.

    Args:
        data: The file's bytes.
        max_pixels: Larger images are refused as decompression bombs.
        min_side: Images with a side shorter than this are refused.

    Raises:
        ImageRejected: with reasons ``empty_file``, ``not_an_image``,
            ``decompression_bomb``, ``truncated``, ``decode_error``, ``too_small``.
    """
    if len(data) == 0:
        raise ImageRejected("empty_file")
    # PIL's own bomb guard is a process-wide limit that only warns between 1x
    # and 2x of it. Set it to our limit for this call (ingest decodes in worker
    # processes, one image at a time) and turn the warning into an error, so a
    # user's larger max_pixels is honoured and a smaller one is enforced
    # before any pixel is decoded.
    # Some libraries set LOAD_TRUNCATED_IMAGES on import, which makes PIL pad
    # a cut-off file with grey instead of failing; ingest must see the error.
    old_limit, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        return _decode(data, max_pixels, min_side)
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_limit, old_truncated


def _decode(data: bytes, max_pixels: int, min_side: int) -> NormalizedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as e:
            fmt = _signature(data)
            if fmt:
                detail = f"{fmt} signature but an unreadable header ({len(data)} bytes)"
                raise ImageRejected("truncated", detail) from None
            raise ImageRejected("not_an_image", str(e).split(" <")[0]) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageRejected("decompression_bomb", str(e)) from None
        except Exception as e:  # noqa: BLE001 - any parser failure is a reason, not a crash
            raise _load_failure(e, data) from None
        source_format = img.format or "unknown"
        source_mode = img.mode
        w, h = img.size
        if w * h > max_pixels:
            raise ImageRejected("decompression_bomb", f"{w}x{h} exceeds max_pixels={max_pixels}")
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageRejected("decompression_bomb", str(e)) from None
        except Exception as e:  # noqa: BLE001
            raise _load_failure(e, data) from None
    if source_format == "PNG" and _PNG_IEND not in data:
        # PIL stops reading once it has the pixel data, so a PNG cut after
        # its last data chunk decodes without an error; the file is still
        # incomplete, and accepting it would hide a broken copy or download.
        raise ImageRejected("truncated", "PNG has no IEND chunk")
    # Any orientation other than 1 (including mirror-only ones that keep the
    # size) means the stored pixels differ from the file's, so JPEG bytes can
    # no longer be kept as they are.
    rotated = _has_orientation(img)
    try:
        oriented = ImageOps.exif_transpose(img) if rotated else img
    except Exception as e:  # noqa: BLE001 - a broken EXIF block must not crash ingest
        raise ImageRejected("decode_error", f"EXIF orientation: {type(e).__name__}: {e}") from None
    assert oriented is not None
    canon = _canonical_mode(oriented)
    if min(canon.size) < min_side:
        raise ImageRejected("too_small", f"{canon.size[0]}x{canon.size[1]} < min_side={min_side}")
    if (source_format, source_mode) in _KEEP_AS_IS and not rotated and canon is oriented:
        payload, ext = data, "jpg"
    else:
        buf = io.BytesIO()
        canon.save(buf, format="PNG", compress_level=1)
        payload, ext = buf.getvalue(), "png"
    return NormalizedImage(
        data=payload,
        ext=ext,
        width=canon.size[0],
        height=canon.size[1],
        mode=canon.mode,
        source_format=source_format,
        source_mode=source_mode,
    )


def _signature(data: bytes) -> str:
    """The format whose magic bytes ``data`` starts with, or ``""``."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return ""


def _load_failure(e: Exception, data: bytes) -> ImageRejected:
    """Name a decoder failure: ``truncated`` when the file was cut off, else ``decode_error``."""
    msg = f"{type(e).__name__}: {e}"
    low = msg.lower()
    if "truncated" in low or "broken data" in low or "premature end" in low:
        return ImageRejected("truncated", msg)
    # WebP's decoder only says "could not create decoder object"; its RIFF
    # header states the full length, so a shorter file was cut off.
    if _signature(data) == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        return ImageRejected("truncated", f"WebP is {len(data)} of {int.from_bytes(data[4:8], 'little') + 8} bytes")
    return ImageRejected("decode_error", msg)


def _has_orientation(img: Image.Image) -> bool:
    try:
        return int(img.getexif().get(0x0112, 1)) != 1
    except Exception:  # noqa: BLE001 - a broken EXIF block means no usable orientation
        return False


def decode_rgb(data: bytes) -> Image.Image:
    """Decode shard bytes (already normalised at ingest) to an RGB PIL image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB") if img.mode != "RGB" else img
