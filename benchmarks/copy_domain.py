"""A second copy-detection test domain, built from images that install with packages (no ELPV, no download).

In-domain: tiles of scikit-image's microscopy and retina images (``retina``,
``immunohistochemistry``, ``cell``) and of its texture photographs (``brick``,
``grass``, ``gravel``: hard negatives, every tile looks like every other);
distractors: photo quadrants (scikit-image, scikit-learn sample images), LFW
faces and scikit-learn digits (near-identical non-copies at 32 px). Image sides
range from 32 to 320 px. Tiles never overlap, so no two originals are copies.

Planted: copies of pool images and copies of held-out evaluation images, each
of one kind of :mod:`pipeline.curate.copy_suite` (and the ELPV recipe's four
fixed transforms, which the suite does not produce), cycling through the image
sizes. Seeded: the same seed writes the same bytes. Layout, as the ELPV recipe
writes it (``ground_truth.json``: pool key -> ``origin``, ``in_domain``,
``copy_of`` {``source``: pool|eval, ``key``}, ``transform``, plus ``side``)::

    <out>/pool/img_NNNNN.{png,jpg}   <out>/eval/eval_NNNNN.png   <out>/ground_truth.json

    python benchmarks/copy_domain.py /tmp/copy_domain        # writes the folders
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from pipeline.config.curate import CopySuiteConfig
from pipeline.curate.copy_suite import copy_bytes

# ELPV's fixed transforms, planted too, so both domains see the same four.
RECIPE_KINDS = ("jpeg_q70", "resize_0.8", "crop_6pct", "brighten_1.2")


@dataclass
class DomainConfig:
    """Sizes of the domain (the defaults give about 750 pool images; ``small`` about 200)."""

    seed: int = 0
    copies_per_kind: int = 8
    eval_copies_per_kind: int = 6
    eval_fraction: float = 0.15
    faces: int = 100
    digits: int = 60
    scale: float = 1.0  # share of the tiles used (0.3 for a quick test domain)


def _rgb(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    return Image.fromarray(a)


def _tiles(
    name: str, img: Image.Image, tile: int, sides: tuple[int, ...], min_std: float
) -> list[tuple[str, Image.Image]]:
    w, h = img.size
    out = []
    for i in range(h // tile):
        for j in range(w // tile):
            t = img.crop((j * tile, i * tile, (j + 1) * tile, (i + 1) * tile))
            if float(np.asarray(t.convert("L"), np.float32).std()) < min_std:
                continue  # background (the retina's black border): flat tiles are copies of each other
            side = sides[len(out) % len(sides)]
            out.append((f"{name}_t{tile}_{i}_{j}", t.resize((side, side), Image.Resampling.LANCZOS)))
    return out


def originals(c: DomainConfig) -> list[tuple[str, Image.Image, bool]]:
    """``(origin, image, in_domain)`` of every original, in a fixed order."""
    import skimage.data as skd
    from sklearn.datasets import load_digits, load_sample_images

    inside: list[tuple[str, Image.Image]] = []
    inside += _tiles("retina", _rgb(skd.retina()), 70, (32, 48, 64, 96, 128), 10.0)
    inside += _tiles("ihc", _rgb(skd.immunohistochemistry()), 51, (32, 64, 128), 8.0)
    inside += _tiles("cell", _rgb(skd.cell()), 110, (128, 256), 4.0)
    for n in ("brick", "grass", "gravel"):
        inside += _tiles(n, _rgb(getattr(skd, n)()), 102, (64, 128, 256), 4.0)
    outside: list[tuple[str, Image.Image]] = []
    photos = [(n, _rgb(getattr(skd, n)())) for n in ("astronaut", "camera", "cat", "coffee", "coins", "rocket", "moon")]
    photos += [(f"sklearn{i}", _rgb(a)) for i, a in enumerate(load_sample_images().images)]
    for n, p in photos:
        outside += _tiles(n, p, min(p.size) // 2, (160, 320), 4.0)
    faces = skd.lfw_subset()[: c.faces]
    outside += [
        (f"lfw_{i}", _rgb((f * 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC))
        for i, f in enumerate(faces)
    ]
    digits = load_digits().images[: c.digits]
    outside += [
        (f"digit_{i}", _rgb((255 - d * 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.Resampling.NEAREST))
        for i, d in enumerate(digits)
    ]
    rng = np.random.default_rng(c.seed)
    out = [(f"domain/{n}", im, True) for n, im in inside] + [(f"distractor/{n}", im, False) for n, im in outside]
    if c.scale < 1.0:
        keep = np.sort(rng.choice(len(out), size=max(20, round(len(out) * c.scale)), replace=False))
        out = [out[k] for k in keep.tolist()]
    return out


def recipe_copy(img: Image.Image, kind: str) -> tuple[bytes, str]:
    """The ELPV recipe's fixed transforms (data_recipes/elpv_demo/prepare.py), at any size."""
    w, h = img.size
    buf = io.BytesIO()
    if kind == "jpeg_q70":
        img.convert("RGB").save(buf, format="JPEG", quality=70)
        return buf.getvalue(), "jpg"
    if kind == "resize_0.8":
        out = img.resize((max(8, int(w * 0.8)), max(8, int(h * 0.8))), Image.Resampling.BILINEAR)
    elif kind == "crop_6pct":
        out = img.crop((int(w * 0.03), int(h * 0.03), w - int(w * 0.03), h - int(h * 0.03)))
    else:
        out = ImageEnhance.Brightness(img).enhance(1.2)
    out.save(buf, format="PNG")
    return buf.getvalue(), "png"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build(out: Path, c: DomainConfig | None = None, suite: CopySuiteConfig | None = None) -> dict[str, Any]:
    """Write the domain under ``out``; returns the ground truth (also in ``out/ground_truth.json``)."""
    c, suite = c or DomainConfig(), suite or CopySuiteConfig()
    rng = np.random.default_rng(c.seed)
    orig = originals(c)
    order = rng.permutation(len(orig)).tolist()
    in_dom = [k for k in order if orig[k][2]]
    n_eval = round(len(in_dom) * c.eval_fraction)
    eval_idx, pool_idx = sorted(in_dom[:n_eval]), [k for k in order if k not in set(in_dom[:n_eval])]
    kinds = list(suite.kinds) + list(RECIPE_KINDS)
    items: list[tuple[bytes, str, dict[str, Any]]] = []  # bytes, ext, truth (copy_of key filled in below)
    for k in pool_idx:
        o, im, ind = orig[k]
        items.append((_png(im), "png", {"origin": o, "in_domain": ind, "side": max(im.size)}))
    eval_key = {k: f"eval_{r:05d}.png" for r, k in enumerate(eval_idx)}
    for src, pick, per in (
        ("pool", list(range(len(pool_idx))), c.copies_per_kind),
        ("eval", eval_idx, c.eval_copies_per_kind),
    ):
        # Sorted by side and strided, so every kind gets small and large images.
        by_side = sorted(
            pick, key=lambda p: (max(items[p][2]["side"], 0) if src == "pool" else max(orig[p][1].size), p)
        )
        for ki, kind in enumerate(kinds):
            for r in range(per):
                p = by_side[(r * len(by_side) // per + ki * 7 + 3) % len(by_side)]
                im = Image.open(io.BytesIO(items[p][0])) if src == "pool" else orig[p][1]
                data, ext = recipe_copy(im, kind) if kind in RECIPE_KINDS else copy_bytes(im, kind, rng, suite)
                o, ind = (items[p][2]["origin"], items[p][2]["in_domain"]) if src == "pool" else orig[p][::2]
                ref = p if src == "pool" else eval_key[p]
                items.append(
                    (
                        data,
                        ext,
                        {"origin": o, "in_domain": ind, "side": max(im.size), "copy_of": (src, ref), "transform": kind},
                    )
                )
    out = Path(out)
    for sub in ("pool", "eval"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for f in (out / sub).iterdir():
            f.unlink()
    for k, name in eval_key.items():
        orig[k][1].save(out / "eval" / name)
    shuffled = rng.permutation(len(items)).tolist()
    name = {idx: f"img_{rank:05d}.{items[idx][1]}" for rank, idx in enumerate(shuffled)}
    truth: dict[str, Any] = {}
    for idx, (data, _, gt) in enumerate(items):
        (out / "pool" / name[idx]).write_bytes(data)
        entry = {k: v for k, v in gt.items() if k != "copy_of"}
        if "copy_of" in gt:
            src, ref = gt["copy_of"]
            entry["copy_of"] = {"source": src, "key": name[ref] if src == "pool" else ref}
        truth[name[idx]] = entry
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    gt = build(a.out, DomainConfig(seed=a.seed, scale=a.scale))
    n_copy = sum("copy_of" in v for v in gt.values())
    print(
        f"{len(gt)} pool images ({n_copy} planted copies), eval: {len(list((a.out / 'eval').iterdir()))}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
