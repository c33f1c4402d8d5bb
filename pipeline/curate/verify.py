"""Verification of candidate copy pairs: aligned, higher-resolution, local comparison.

The copy descriptor (:mod:`pipeline.curate.copy_descriptor`) compares 16 x 16
thumbnails globally, so two different but featureless cells of one module can
score as high as a JPEG copy. Candidate pairs from its kNN graph are confirmed
here by a finer test (:func:`pair_score`):

1. both images become ``size x size`` grayscale thumbnails (box filter);
2. registration (:func:`align`): one thumbnail, rescaled for each of ``scales``
   (a copy may be a border crop of the other) with a ``margin`` trimmed off, is
   slid over the other (normalised cross-correlation, ``match_template``), in
   both directions; then its horizontal and vertical scales are refined;
3. two scores at that alignment: ``structure``, the lowest SSIM-style patch
   structure term of the Gaussian high-passed thumbnails over a ``grid x grid``
   split (a copy agrees everywhere; two cells sharing a layout differ
   somewhere), and ``outlier``, the largest local deviation from a gain/offset
   fit in robust standard deviations, away from edges and clipped pixels (a
   spot or crack one image has and the other lacks).

Thresholds are calibrated without labels (:func:`calibrate`): synthetic copies
of a sample of images are made with a generic, documented transform family
(:func:`synthetic_copy`: border crop, rescale, JPEG, blur, brightness/contrast,
noise) and each threshold keeps ``keep`` (e.g. 99%) of them.

Cost: one pair is 20-40 FFT correlations of ``size x size`` images (~50 ms at
96 px on one busy core); only candidate pairs are verified, and their pixels
are read once from the shards (:func:`load_thumbnails`). On the ELPV demo the
test does not beat the descriptor threshold alone (docs/curation.md).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy.ndimage import binary_dilation, gaussian_filter, sobel, uniform_filter
from skimage.feature import match_template

from pipeline.config.curate import VerifyConfig


def thumbnail(img: Image.Image, size: int) -> np.ndarray:
    """Grayscale ``size x size`` float32 thumbnail (box filter: averages JPEG and resampling noise)."""
    return np.asarray(img.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def _highpass(t: np.ndarray, sigma: float) -> np.ndarray:
    return t - gaussian_filter(t, sigma, mode="nearest")


def _patch_min(a: np.ndarray, b: np.ndarray, grid: int, c: float) -> float:
    """Lowest SSIM-style structure term ``(2 cov + c) / (var_a + var_b + c)`` over ``grid x grid`` patches.

    ``c`` (a variance) keeps patches with no texture from scoring at random, as
    in SSIM; ``b`` is first matched to ``a``'s global contrast so that a
    contrast change alone costs nothing.
    """
    sa, sb = float(a.std()), float(b.std())
    b = b * (sa / sb) if sb > 1e-6 else b
    h, w = a.shape
    out = 1.0
    for gi in range(grid):
        for gj in range(grid):
            sl = np.s_[gi * h // grid : (gi + 1) * h // grid, gj * w // grid : (gj + 1) * w // grid]
            p, q = a[sl].ravel(), b[sl].ravel()
            p, q = p - p.mean(), q - q.mean()
            out = min(out, (2 * float(p @ q) / p.size + c) / ((float(p @ p) + float(q @ q)) / p.size + c))
    return out


def _resize(t: np.ndarray, w: int, h: int) -> np.ndarray:
    if (h, w) == t.shape:
        return t
    return np.asarray(Image.fromarray(t, mode="F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _match(x: np.ndarray, y: np.ndarray, sx: float, sy: float, m0: int) -> tuple[float, np.ndarray, tuple[int, int]]:
    """Best correlation of ``y`` rescaled to ``(sx, sy) * size`` and trimmed by ``m0``, slid over ``x``."""
    w, h = _dims(x.shape[0], sx, sy, m0)
    ty = _resize(y, w, h)
    r = match_template(x, ty[m0 : h - m0, m0 : w - m0])
    k = np.unravel_index(int(np.argmax(r)), r.shape)
    return float(r[k]), ty, (int(k[0]), int(k[1]))


class PairScore(NamedTuple):
    """Verification scores of one pair.

    Attributes:
        structure: Lowest patch structure term of the high-passed thumbnails (1 = identical; high = copy).
        outlier: Largest local deviation between the aligned thumbnails, in robust standard
            deviations of their difference, away from edges and clipped pixels (low = copy).
    """

    structure: float
    outlier: float


def align(
    a: np.ndarray, b: np.ndarray, opts: VerifyConfig | None = None
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Register two thumbnails; returns the overlapping parts ``x, y`` (same shape) and ``y``'s scales.

    The thumbnail with the smaller field of view is rescaled by each of
    ``scales``, trimmed by ``margin`` and slid over the other (normalised
    cross-correlation of the unfiltered thumbnails: the layout registers
    reliably), in both directions; then its horizontal and vertical scales are
    refined separately (steps of 0.02, 0.01, 0.005), since a crop need not keep
    the aspect ratio and a 1% scale error already blurs the fine texture.
    ``opts`` defaults to ``VerifyConfig()``.
    """
    opts = opts or VerifyConfig()
    m0 = opts.margin
    best: tuple[float, np.ndarray, np.ndarray, float, float, tuple[int, int]] | None = None
    for x, y in ((a, b), (b, a)):
        for s in opts.scales:
            r, ty, k = _match(x, y, s, s, m0)
            if best is None or r > best[0]:
                best = (r, x, y, s, s, k)
    assert best is not None
    r, x, y, sx, sy, k = best
    ty = _resize(y, *_dims(x.shape[0], sx, sy, m0))
    for step in (0.02, 0.01, 0.005):
        for axis in (0, 1):
            for d in (-step, step):
                cx, cy = (sx + d, sy) if axis == 0 else (sx, sy + d)
                if min(cx, cy) <= 0 or max(cx, cy) > 1.0 + 1e-9:
                    continue
                r2, ty2, k2 = _match(x, y, cx, cy, m0)
                if r2 > r:
                    r, sx, sy, ty, k = r2, cx, cy, ty2, k2
                    break
    h, w = ty.shape
    i, j = k
    return x[i : i + h - 2 * m0, j : j + w - 2 * m0], ty[m0 : h - m0, m0 : w - m0], sx, sy


def _outlier(x: np.ndarray, y: np.ndarray) -> float:
    """Largest local (2 x 2 mean) deviation of ``x`` from a gain/offset fit of ``y``, in robust sigmas.

    A copy differs from its original by noise spread everywhere (JPEG,
    resampling); a different cell of the same kind differs by a spot or a crack
    somewhere. Edges (the strongest 15% gradients, dilated) are left out, as
    sub-pixel misregistration shows there first, and so are clipped pixels
    (a brightened copy saturates), which follow no linear model.
    """
    valid = (x > 5) & (x < 250) & (y > 5) & (y < 250)
    if valid.sum() < 16:
        return 0.0
    g, o = np.polyfit(y[valid], x[valid], 1)
    d = uniform_filter(x - (g * y + o), 2)
    dv = d[valid]
    # At least one grey level: smooth synthetic images have a near-zero MAD, and sub-grey-level
    # differences (8-bit rounding) are never a spot.
    sig = max(1.4826 * float(np.median(np.abs(dv - np.median(dv)))), 1.0)
    sm = gaussian_filter(x, 1.0)
    gm = np.hypot(sobel(sm, 0), sobel(sm, 1))
    mask = valid & ~binary_dilation(gm > np.quantile(gm, 0.85))
    mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = False, False, False, False
    return float(np.abs(d[mask]).max() / sig) if mask.any() else 0.0


def pair_score(a: np.ndarray, b: np.ndarray, opts: VerifyConfig | None = None) -> PairScore:
    """Copy scores of two thumbnails from :func:`thumbnail` (``opts.size``), registered by :func:`align`.

    ``structure``: the lowest patch structure term (:func:`_patch_min`) of the
    high-passed thumbnails; ``outlier``: :func:`_outlier`.
    """
    opts = opts or VerifyConfig()
    x, y, sx, sy = align(a, b, opts)
    hx = _highpass(x, opts.sigma)
    hy = y - gaussian_filter(y, (opts.sigma * sy, opts.sigma * sx), mode="nearest")
    # c: relative to the pair's texture, and at least one grey level squared (smooth images agree).
    st = _patch_min(hx, hy, opts.grid, opts.floor * 0.5 * float(hx.var() + hy.var()) + 1.0)
    return PairScore(st, _outlier(x, y))


def _dims(size: int, sx: float, sy: float, m0: int) -> tuple[int, int]:
    return max(2 * m0 + 8, round(size * sx)), max(2 * m0 + 8, round(size * sy))


def score_pairs(
    thumbs: dict[str, np.ndarray], pairs: Iterable[tuple[str, str]], opts: VerifyConfig | None = None
) -> np.ndarray:
    """:func:`pair_score` of every ``(id_a, id_b)`` pair as ``(n, 2)`` rows ``(structure, outlier)``."""
    return np.array([tuple(pair_score(thumbs[a], thumbs[b], opts)) for a, b in pairs], dtype=np.float32).reshape(-1, 2)


COPY_OPS = ("crop", "resize", "jpeg", "brightness", "contrast", "blur", "noise")


def synthetic_copy(img: Image.Image, rng: np.random.Generator, ops: Sequence[str] = COPY_OPS) -> Image.Image:
    """A random copy of ``img`` from a generic transform family (for label-free calibration).

    One to three of ``ops`` (JPEG counts as one), applied in this order:
    ``crop`` border crop of 1-8% per side (each side drawn separately, so the
    aspect ratio may change), ``resize`` x0.5-1.0, ``brightness`` and
    ``contrast`` x0.8-1.25, ``blur`` Gaussian radius 0.3-1.0 px, ``noise``
    additive Gaussian of sigma 1-4 grey levels, ``jpeg`` re-encoding at quality 50-95.
    """
    unknown = set(ops) - set(COPY_OPS)
    if unknown or not ops:
        raise ValueError(f"synthetic copy ops {sorted(unknown) or '[]'}: choose from {COPY_OPS}")
    out = img.convert("L")
    pick = set(rng.choice(list(ops), size=min(len(ops), int(rng.integers(1, 4))), replace=False).tolist())
    for op in [o for o in COPY_OPS if o in pick]:
        w, h = out.size
        if op == "crop":
            f = rng.uniform(0.01, 0.08, size=4)
            out = out.crop((round(w * f[0]), round(h * f[1]), w - round(w * f[2]), h - round(h * f[3])))
        elif op == "resize":
            s = rng.uniform(0.5, 1.0)
            out = out.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)
        elif op == "brightness":
            out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.25)))
        elif op == "contrast":
            out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.8, 1.25)))
        elif op == "blur":
            out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
        elif op == "noise":
            a = np.asarray(out, np.float32) + rng.normal(0, rng.uniform(1, 4), size=(h, w))
            out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        else:  # jpeg
            buf = io.BytesIO()
            out.save(buf, format="JPEG", quality=int(rng.integers(50, 96)))
            out = Image.open(io.BytesIO(buf.getvalue()))
            out.load()
    return out


@dataclass(frozen=True)
class Calibration:
    """Label-free thresholds and the synthetic-copy scores (``(n, 2)``: structure, outlier) they came from."""

    structure: float
    outlier: float
    keep: float
    scores: np.ndarray

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        """Which ``(n, 2)`` score rows are copies: structure at least, outlier at most its threshold."""
        scores = np.asarray(scores, np.float32).reshape(-1, 2)
        return (scores[:, 0] >= self.structure) & (scores[:, 1] <= self.outlier)


def calibrate(
    images: Sequence[Image.Image],
    opts: VerifyConfig | None = None,
    keep: float = 0.99,
    seed: int = 0,
    ops: Sequence[str] = COPY_OPS,
) -> Calibration:
    """Thresholds that each accept ``keep`` of synthetic copies of ``images``.

    Each image is compared with one :func:`synthetic_copy` of itself; the
    structure threshold is the ``1 - keep`` quantile of those scores and the
    outlier threshold the ``keep`` quantile (sample values, so that at least
    ``keep`` pass each test and at least ``2 keep - 1`` pass both). No labels are used.
    """
    if not images:
        raise ValueError("calibrate needs at least one image")
    opts = opts or VerifyConfig()
    rng = np.random.default_rng(seed)
    s = score_pairs(
        {
            f"{k}{t}": thumbnail(im, opts.size)
            for k, img in enumerate(images)
            for t, im in (("a", img), ("b", synthetic_copy(img, rng, ops)))
        },
        [(f"{k}a", f"{k}b") for k in range(len(images))],
        opts,
    )
    return Calibration(
        float(np.quantile(s[:, 0], 1 - keep, method="lower")),
        float(np.quantile(s[:, 1], keep, method="higher")),
        keep,
        s,
    )


def iter_images(shard_folder: Path, ids: Iterable[str]) -> Iterator[tuple[str, Image.Image]]:
    """Decode the samples ``ids`` of an ingest shard folder, opening only the shards that hold them.

    Uses the folder's ``shard-*.records.jsonl`` to find each id's shard, so a
    pass over a billion-image collection touches only the candidates' shards
    (tar members are skipped by seeking, only the wanted ones are decoded).

    Raises:
        FileNotFoundError: Some ids are in no shard of the folder.
    """
    want = set(ids)
    where: dict[str, set[str]] = {}
    for rec_file in sorted(Path(shard_folder).glob("shard-*.records.jsonl")):
        for line in rec_file.open():
            r = json.loads(line)
            if r.get("status") == "accepted" and r["id"] in want:
                where.setdefault(r["shard"], set()).add(r["id"])
    found: set[str] = set()
    for shard, keys in sorted(where.items()):
        with tarfile.open(Path(shard_folder) / shard, "r") as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                if key in keys and ext in ("png", "jpg", "jpeg", "webp"):
                    fh = tf.extractfile(m)
                    assert fh is not None
                    img = Image.open(io.BytesIO(fh.read()))
                    img.load()
                    found.add(key)
                    yield key, img
    missing = want - found
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids not found in {shard_folder} (e.g. {sorted(missing)[:3]})")


def load_thumbnails(shard_folder: Path, ids: Iterable[str], size: int) -> dict[str, np.ndarray]:
    """:func:`thumbnail` of the samples ``ids`` of an ingest shard folder (see :func:`iter_images`)."""
    return {k: thumbnail(im, size) for k, im in iter_images(shard_folder, ids)}
