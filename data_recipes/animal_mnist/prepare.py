"""Write Animal-MNIST as a folder-recipe domain: PNG files and a labels CSV.

The pipeline reads the result with ``data_recipe=folder`` like any user's
folders; nothing here is imported by the pipeline. Layout under ``--out``:

- ``pool/img_<n>.png``: the unlabelled pool (pretraining's images after curation);
- ``seeds/img_<n>.png``: a few curated examples for the default ``knn`` retrieval;
- ``labeled/img_<n>.png`` and ``labels.csv`` (``key,animal``): the evaluation set.

The three parts are disjoint, and 284 of the package's 10,000 images are
byte copies of another one: only the first image of each group of copies is
kept, so no copy can straddle the pool and the evaluation set or the
evaluation's train and test folds. File names
are neutral so that nothing downstream can read a label from them. Every random
choice is seeded; the same arguments give the same files, byte for byte.

The loader module of the ``animal_mnist`` package imports tensorflow, so it is
never imported: the data files are read through :mod:`importlib.resources`.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.resources
import json
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Label ids 0-9 in the package's order (its description lists the classes alphabetically; a grid of
# each id's images confirms the order: id 0 is bears, id 9 zebras).
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
DATA_FILE = "animal_data_version_3.gz"
LABEL_FILE = "animal_label_version_3.gz"
TASK = "animal"


def load_arrays(folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` uint8 and label ids ``(n,)`` from the package's gzip'd pickles.

    ``folder`` holds the two files; ``None`` reads them from the installed ``animal_mnist`` package.
    """
    base = folder if folder is not None else importlib.resources.files("animal_mnist.data") / "Animal_MNIST"
    # Unpickling runs code from the file: these are the installed package's own data files (or a test's).
    with gzip.open(str(base / DATA_FILE), "rb") as fh:
        images = np.asarray(pickle.load(fh), dtype=np.uint8)
    with gzip.open(str(base / LABEL_FILE), "rb") as fh:
        labels = np.asarray(pickle.load(fh), dtype=np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"expected (n, h, w) images and n labels, got {images.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise ValueError(f"label ids must be 0..{len(CLASSES) - 1}, got {labels.min()}..{labels.max()}")
    return images, labels


def first_of_near_duplicates(images: np.ndarray, max_distance: float = 50.0, chunk: int = 1024) -> np.ndarray:
    """Indices of the images kept: each image unless an earlier one lies within ``max_distance``.

    Distance is L2 over the raw 0-255 pixels. In the package the repeated images are byte copies
    (distance 0) and distinct images lie over 100 apart (4 of 10,000 have their nearest neighbour
    between 100 and 300, the rest beyond), so 50 catches a re-encoded copy and nothing else.
    """
    x = images.reshape(len(images), -1).astype(np.float64)  # exact enough for distances near 0
    sq = (x**2).sum(1)
    drop = np.zeros(len(x), bool)
    for start in range(0, len(x), chunk):
        rows = slice(start, min(start + chunk, len(x)))
        d2 = sq[rows, None] + sq[None, :] - 2.0 * x[rows] @ x.T
        for r, i in enumerate(range(rows.start, rows.stop)):
            if drop[i]:
                continue
            close = np.flatnonzero(d2[r, i + 1 :] <= max_distance**2) + i + 1
            drop[close] = True
    return np.flatnonzero(~drop)


def split_indices(
    labels: np.ndarray, keep: np.ndarray, eval_per_class: int, n_seeds: int, n_pool: int, seed: int
) -> dict[str, np.ndarray]:
    """Disjoint ``eval`` (``eval_per_class`` of each class), ``seeds`` and ``pool`` (random) index sets.

    The evaluation set is stratified so every class counts alike in its balanced accuracy; the seeds
    and the pool are a plain random draw from the rest, as a user's unlabelled pile would be.
    """
    rng = np.random.default_rng(seed)
    ev: list[np.ndarray] = []
    for c in np.unique(labels[keep]):
        members = keep[labels[keep] == c]
        if len(members) < eval_per_class:
            raise ValueError(f"class {c}: {len(members)} images, fewer than eval_per_class={eval_per_class}")
        ev.append(rng.choice(members, eval_per_class, replace=False))
    eval_idx = np.sort(np.concatenate(ev)) if ev else np.zeros(0, np.int64)
    rest = rng.permutation(np.setdiff1d(keep, eval_idx))
    if n_seeds + n_pool > len(rest):
        raise ValueError(f"seeds + pool = {n_seeds + n_pool} but only {len(rest)} images are left after the eval set")
    return {"eval": eval_idx, "seeds": np.sort(rest[:n_seeds]), "pool": np.sort(rest[n_seeds : n_seeds + n_pool])}


def write_domain(
    images: np.ndarray,
    labels: np.ndarray,
    out: Path,
    eval_per_class: int = 250,
    n_seeds: int = 200,
    n_pool: int = 3000,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``pool/``, ``seeds/``, ``labeled/`` and ``labels.csv`` under ``out``; return the counts."""
    keep = first_of_near_duplicates(images)
    parts = split_indices(labels, keep, eval_per_class, n_seeds, n_pool, seed)
    out.mkdir(parents=True, exist_ok=True)
    for part, idx in parts.items():
        folder = out / ("labeled" if part == "eval" else part)
        folder.mkdir(exist_ok=True)
        for i in idx.tolist():
            # Fixed PNG settings keep the bytes reproducible; mode L: the images are grayscale.
            Image.fromarray(images[i], mode="L").save(folder / f"img_{i:05d}.png", optimize=False, compress_level=6)
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", TASK])
        for i in parts["eval"].tolist():
            w.writerow([f"img_{i:05d}.png", CLASSES[int(labels[i])]])
    counts = {"images": len(images), "near_duplicates_dropped": len(images) - len(keep)}
    counts |= {part: len(idx) for part, idx in parts.items()}
    (out / "split.json").write_text(json.dumps({"seed": seed, **counts}, indent=2) + "\n")
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--eval-per-class", type=int, default=250, help="labelled evaluation images per class")
    ap.add_argument("--seeds", type=int, default=200, help="seed images (curated examples for retrieval)")
    ap.add_argument("--pool", type=int, default=3000, help="unlabelled pool images")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    ap.add_argument("--data", type=Path, default=None, help="folder of the two .gz files (default: the package's)")
    a = ap.parse_args(argv)
    images, labels = load_arrays(a.data)
    counts = write_domain(images, labels, a.out, a.eval_per_class, a.seeds, a.pool, a.seed)
    sys.stdout.write(json.dumps(counts) + "\n")


if __name__ == "__main__":
    main()
