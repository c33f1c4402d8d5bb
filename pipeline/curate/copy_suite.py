"""The copy transforms copy detection is held to, one kind at a time (:class:`CopySuiteConfig`).

Used twice: label-free threshold calibration copies a sample of the pool with
them (:mod:`pipeline.curate.calibrate`), and the test domain
(``benchmarks/copy_domain.py``) plants copies with them, so that the recall the
calibration targets and the recall the tests measure refer to the same copies.
Every draw comes from the ``rng`` passed in, so a seed gives the same copies.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pipeline.config.curate import CopySuiteConfig

KINDS = ("jpeg", "crop", "resize", "brightness", "contrast", "blur", "flip")


def check_kinds(kinds: list[str]) -> None:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"copy suite kinds {unknown or '[]'}: choose from {list(KINDS)}")


def make_copy(img: Image.Image, kind: str, rng: np.random.Generator, opts: CopySuiteConfig) -> Image.Image:
    """A copy of ``img`` of one ``kind``, its strength drawn from ``opts``' range (RGB or L, as ``img``)."""
    check_kinds([kind])
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    w, h = img.size
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(opts.jpeg_quality[0], opts.jpeg_quality[1] + 1)))
        out = Image.open(io.BytesIO(buf.getvalue()))
        out.load()
        out.info["jpeg_bytes"] = buf.getvalue()
        return out
    if kind == "crop":
        f = rng.uniform(0.0, opts.crop_max, size=4)
        box = (round(w * f[0]), round(h * f[1]), w - round(w * f[2]), h - round(h * f[3]))
        return img.crop((box[0], box[1], max(box[0] + 4, box[2]), max(box[1] + 4, box[3])))
    if kind == "resize":
        # Log-uniform: as many enlargements as reductions when the range is [0.5, 2].
        s = float(np.exp(rng.uniform(np.log(opts.scale[0]), np.log(opts.scale[1]))))
        return img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)
    if kind in ("brightness", "contrast"):
        amount = opts.brightness if kind == "brightness" else opts.contrast
        factor = float(rng.uniform(1 - amount, 1 + amount))
        enh = ImageEnhance.Brightness(img) if kind == "brightness" else ImageEnhance.Contrast(img)
        return enh.enhance(factor)
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(opts.blur[0], opts.blur[1]))))
    return ImageOps.mirror(img)  # flip


def copy_bytes(img: Image.Image, kind: str, rng: np.random.Generator, opts: CopySuiteConfig) -> tuple[bytes, str]:
    """:func:`make_copy` as file bytes and extension: JPEG copies as the re-encoded JPEG itself, others PNG."""
    out = make_copy(img, kind, rng, opts)
    if kind == "jpeg":
        return bytes(out.info["jpeg_bytes"]), "jpg"
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue(), "png"
