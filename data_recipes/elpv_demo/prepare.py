"""Build the ELPV demo: an uncurated pool, a seed set and a labeled evaluation set.

Everything comes from packages that install by name (``elpv-dataset``,
``scikit-image``, ``scikit-learn``), so the recipe runs offline. Every random
choice is seeded; the same config gives the same files, byte for byte.

Pool file names are neutral (``img_<n>.png``) so that nothing downstream can
cheat by reading them; what each file really is goes to ``ground_truth.json``.

The evaluation set is every labelled cell. ``heldout`` marks the cells that
are in neither the pool nor the seeds; ``group`` is the cell's solar module
(:mod:`data_recipes.elpv_demo.groups`), because neighbouring cells of one
module are near-identical images and must not straddle train and test (the
one module the package holds twice shares its original's group).
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from data_recipes.contract import RecipeOutput, TaskSpec, group_split, write_labels
from data_recipes.elpv_demo.groups import ELPV_MODULE_STARTS, elpv_groups, groups_from_starts, same_cell

log = logging.getLogger(__name__)

# Photos shipped inside scikit-image (no download); pure textures are left out
# because tiles of one texture are near-duplicates of each other in any
# embedding, which would blur the ground truth.
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "cat",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "microaneurysms",
    "horse",
)
TRANSFORMS = ("jpeg_q70", "resize_0.8", "crop_6pct", "brighten_1.2")


def elpv_records() -> list[dict[str, Any]]:
    """Every cell of the ``elpv-dataset`` package, in package order.

    Each: ``path``, defect ``prob`` (0, 1/3, 2/3, 1), ``type``, ``module`` (the solar module's
    id, from :data:`ELPV_MODULE_STARTS`) and ``group`` (the module, a module imaged twice sharing
    one group: :func:`elpv_groups`).
    """
    import elpv_dataset

    root = Path(elpv_dataset.__file__).parent / "data"
    recs = []
    for line in (root / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        path, prob, kind = parts
        recs.append({"path": root / path, "prob": float(prob), "type": kind})
    modules = groups_from_starts(len(recs), ELPV_MODULE_STARTS)
    for r, module, group in zip(recs, modules, elpv_groups(modules)):
        r["module"], r["group"] = int(module), int(group)
    return recs


def _photos() -> list[tuple[str, Image.Image]]:
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    out = []
    for name in SKIMAGE_PHOTOS:
        arr = np.asarray(getattr(skd, name)())
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        out.append((name, Image.fromarray(arr)))
    for i, arr in enumerate(load_sample_images().images):
        out.append((f"sklearn_{i}", Image.fromarray(arr)))
    return out


def _photo_tiles(n: int, rng: random.Random) -> list[tuple[str, Image.Image]]:
    """The whole photo, its 2x2 quadrants and its 3x3 tiles, resized to <= 256 px."""
    tiles = []
    for name, img in _photos():
        w, h = img.size
        for g in (1, 2, 3):
            for i in range(g):
                for j in range(g):
                    box = (j * w // g, i * h // g, (j + 1) * w // g, (i + 1) * h // g)
                    t = img.crop(box)
                    t.thumbnail((256, 256))
                    tiles.append((f"{name}_g{g}_{i}{j}", t))
    rng.shuffle(tiles)
    return tiles[:n]


LFW_FACES = 100  # skimage's lfw_subset: 100 faces, then 100 non-face patches (flat, alike)


def _faces(n: int) -> list[tuple[str, Image.Image]]:
    import skimage.data as skd

    if n > LFW_FACES:
        raise ValueError(f"data_recipe.n_faces={n}: scikit-image's lfw_subset holds {LFW_FACES} faces")
    faces = skd.lfw_subset()[:n]
    return [
        (f"lfw_{i}", Image.fromarray((f * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC))
        for i, f in enumerate(faces)
    ]


def _digits(n: int) -> list[tuple[str, Image.Image]]:
    from sklearn.datasets import load_digits

    imgs = load_digits().images[:n]
    return [
        (f"digit_{i}", Image.fromarray((255 - d * 16).clip(0, 255).astype(np.uint8)).resize((64, 64), Image.NEAREST))
        for i, d in enumerate(imgs)
    ]


def transform(img: Image.Image, kind: str) -> bytes:
    """A planted near-duplicate: the kinds a real collection accumulates."""
    if kind == "jpeg_q70":
        buf = io.BytesIO()
        img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(buf, format="JPEG", quality=70)
        return buf.getvalue()
    if kind == "resize_0.8":
        w, h = img.size
        out = img.resize((max(8, int(w * 0.8)), max(8, int(h * 0.8))), Image.BILINEAR)
    elif kind == "crop_6pct":
        w, h = img.size
        dx, dy = int(w * 0.03), int(h * 0.03)
        out = img.crop((dx, dy, w - dx, h - dy))
    elif kind == "brighten_1.2":
        out = ImageEnhance.Brightness(img).enhance(1.2)
    else:
        raise ValueError(f"unknown transform {kind!r}")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _corrupt_files(n: int) -> list[tuple[str, bytes, str]]:
    kinds = [
        ("jpg", b"", "empty_file"),
        ("jpg", _truncated_jpeg(), "truncated"),
        ("png", b"this is a text file, not an image\n", "not_an_image"),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def prepare(cfg: Any, out_dir: Path) -> RecipeOutput:
    """Write ``pool/``, ``seeds/``, ``eval/``, ``labels.csv`` and ``ground_truth.json`` under ``out_dir``."""
    out_dir = Path(out_dir)
    rng = random.Random(cfg.seed)
    for sub in ("pool", "seeds", "eval"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)

    elpv = elpv_records()
    rng.shuffle(elpv)
    if cfg.elpv_limit is not None:
        elpv = elpv[: cfg.elpv_limit]
    for r in elpv:
        r["defect"] = "defective" if r["prob"] >= 0.5 else "functional"
    n_eval = round(len(elpv) * cfg.eval_fraction)
    eval_set, rest = elpv[:n_eval], elpv[n_eval:]
    seeds, pool_elpv = rest[: cfg.n_seeds], rest[cfg.n_seeds :]

    # The evaluation set is every labelled cell; the fixed split keeps each module on one side.
    held = {id(r) for r in eval_set}
    keys = [f"{r['path'].stem}.png" for r in elpv]
    split = group_split(keys, [str(r["group"]) for r in elpv], [r["type"] for r in elpv], cfg.test_fraction, cfg.seed)
    for key, r in sorted(zip(keys, elpv), key=lambda kr: kr[0]):
        shutil.copyfile(r["path"], out_dir / "eval" / key)
    write_labels(
        out_dir / "labels.csv",
        [
            {
                "key": k,
                "split": split[k],
                "defect": r["defect"],
                "type": r["type"],
                "defect_probability": r["prob"],
                "group": r["group"],
                "heldout": id(r) in held,
            }
            for k, r in sorted(zip(keys, elpv), key=lambda kr: kr[0])
        ],
    )
    eval_keys = [f"{r['path'].stem}.png" for r in eval_set]
    for r in seeds:
        shutil.copyfile(r["path"], out_dir / "seeds" / r["path"].name)

    # The uncurated pool: (name, bytes, ground truth) before neutral renaming.
    items: list[tuple[bytes, dict[str, Any]]] = []
    originals: list[tuple[str, Image.Image, bool]] = []
    for r in pool_elpv:
        img = Image.open(r["path"])
        img.load()
        originals.append((f"elpv/{r['path'].name}", img, True))
    distractors = _faces(cfg.n_faces) + _digits(cfg.n_digits) + _photo_tiles(cfg.n_photo_tiles, rng)
    originals += [(f"distractor/{n}", im, False) for n, im in distractors]
    for origin, img, in_domain in originals:
        items.append((_png(img), {"origin": origin, "in_domain": in_domain}))

    pool_idx = list(range(len(originals)))
    rng.shuffle(pool_idx)
    for i, oi in enumerate(pool_idx[: cfg.n_pool_copies]):
        origin, img, in_domain = originals[oi]
        kind = TRANSFORMS[i % len(TRANSFORMS)]
        items.append(
            (
                transform(img, kind),
                {"origin": origin, "in_domain": in_domain, "copy_of": ("pool", oi), "transform": kind},
            )
        )
    for oi in pool_idx[cfg.n_pool_copies : cfg.n_pool_copies + cfg.n_byte_copies]:
        data, gt = items[oi]
        items.append((data, {**gt, "copy_of": ("pool", oi), "transform": "byte_copy"}))
    eval_pick = rng.sample(range(len(eval_set)), min(cfg.n_eval_copies, len(eval_set)))
    for i, ei in enumerate(eval_pick):
        img = Image.open(eval_set[ei]["path"])
        img.load()
        kind = TRANSFORMS[i % len(TRANSFORMS)]
        items.append(
            (
                transform(img, kind),
                {
                    "origin": f"elpv/{eval_set[ei]['path'].name}",
                    "in_domain": True,
                    "copy_of": ("eval", eval_keys[ei]),
                    "transform": kind,
                },
            )
        )
    for ext, data, reason in _corrupt_files(cfg.n_corrupt):
        items.append((data, {"origin": "corrupt", "in_domain": False, "expected_rejection": reason, "ext": ext}))

    # Neutral names, shuffled order; copies point at their original's new name.
    order = list(range(len(items)))
    rng.shuffle(order)
    name_of: dict[int, str] = {}
    for rank, idx in enumerate(order):
        ext = items[idx][1].get("ext", "jpg" if items[idx][1].get("transform") == "jpeg_q70" else "png")
        name_of[idx] = f"img_{rank:05d}.{ext}"
    module_of = {Path(r["path"]).name: int(r["module"]) for r in elpv_records()}
    truth: dict[str, Any] = {}
    for idx, (data, gt) in enumerate(items):
        key = name_of[idx]
        (out_dir / "pool" / key).write_bytes(data)
        entry = {k: v for k, v in gt.items() if k not in ("copy_of", "ext")}
        cell = re.fullmatch(r"elpv/cell(\d+)\.png", str(gt.get("origin", "")))
        if cell:
            # Cells of one module (consecutive numbers above all) are often near-identical images of
            # distinct cells, scored as their own category (pipeline/curate/scoring.py).
            entry["elpv_cell"] = int(cell.group(1))
            entry["elpv_module"] = module_of[f"cell{cell.group(1)}.png"]
            # The module the package holds twice: both images of one cell name the first one's number.
            entry["elpv_same_cell"] = same_cell(int(cell.group(1)) - 1) + 1
        if "copy_of" in gt:
            where, ref = gt["copy_of"]
            entry["copy_of"] = {"source": where, "key": name_of[ref] if where == "pool" else ref}
        truth[key] = entry
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    log.info(
        "elpv_demo: pool %d files (%d ELPV), %d seeds, %d eval (%d held out)",
        len(items),
        len(pool_elpv),
        len(seeds),
        len(elpv),
        len(eval_set),
    )

    return RecipeOutput(
        sources={"pool": [str(out_dir / "pool")], "seeds": [str(out_dir / "seeds")], "eval": [str(out_dir / "eval")]},
        labels_csv=str(out_dir / "labels.csv"),
        tasks={
            "defect": TaskSpec(
                column="defect",
                classes=["functional", "defective"],
                primary=True,
                description="ELPV defect probability >= 0.5 (the representation yardstick)",
                normal="functional",
            ),
            "type": TaskSpec(
                column="type",
                classes=["mono", "poly"],
                description="mono- vs polycrystalline cell (separable from raw pixels)",
            ),
        },
        ground_truth=str(out_dir / "ground_truth.json"),
        info={
            "elpv": "elpv-dataset (PyPI), Buerhop-Lutz et al. 2018 / Deitsch et al. 2019, images CC BY-NC-SA 4.0",
            "distractors": (
                "scikit-image sample data (lfw_subset, public-domain/CC0 photos), scikit-learn digits "
                "(UCI, CC BY 4.0) and sample images (CC BY 2.0); see data_recipes/elpv_demo/README.md"
            ),
            "counts": {
                "pool": len(items),
                "pool_elpv": len(pool_elpv),
                "seeds": len(seeds),
                "eval": len(elpv),
                "eval_heldout": len(eval_set),
                "modules": len({r["module"] for r in elpv}),
                "groups": len({r["group"] for r in elpv}),
            },
        },
    )
