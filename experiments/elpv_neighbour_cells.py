"""Are consecutive ELPV cells near-duplicates? Pixel-level evidence for the dedup precision on the demo.

Compares, with the verification scores of ``pipeline/curate/verify.py`` and a
global high-pass correlation (same alignment):

* the recipe's planted copies and their originals (``ground_truth.json``),
* consecutive ELPV cells (``cellN`` vs ``cellN+1``, a seeded sample of the
  raw dataset),
* random pairs of ELPV cells,
* the "wrong" dedup removals of a curate run (``removals.jsonl``), if given.

    python experiments/elpv_neighbour_cells.py --recipe /work/out/dedup/elpv_demo [--pairs 150]

Writes ``experiments/results/elpv_neighbour_cells.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config.curate import VerifyConfig
from pipeline.curate import verify as vf


def _scores(a: Image.Image, b: Image.Image, o: VerifyConfig) -> tuple[float, float, float]:
    x, y, _sx, _sy = vf.align(vf.thumbnail(a, o.size), vf.thumbnail(b, o.size), o)
    s = vf.pair_score(vf.thumbnail(a, o.size), vf.thumbnail(b, o.size), o)
    hx = vf._highpass(x, o.sigma).ravel()
    hy = vf._highpass(y, o.sigma).ravel()
    hx, hy = hx - hx.mean(), hy - hy.mean()
    return float(hx @ hy / (np.linalg.norm(hx) * np.linalg.norm(hy) + 1e-12)), s.structure, s.outlier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--recipe", type=Path, required=True, help="<out>/elpv_demo (with recipe/ and, optionally, curate/)"
    )
    ap.add_argument("--pairs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "elpv_neighbour_cells.md")
    args = ap.parse_args()
    import elpv_dataset

    cells = Path(elpv_dataset.__file__).parent / "data" / "images"
    gt = json.loads((args.recipe / "recipe" / "ground_truth.json").read_text())
    pool = args.recipe / "recipe" / "pool"
    o = VerifyConfig()
    rng = random.Random(args.seed)
    n_cells = len(list(cells.glob("cell*.png")))

    def cell(n: int) -> Image.Image:
        return Image.open(cells / f"cell{n:04d}.png")

    groups: dict[str, list[tuple[float, float, float]]] = {}
    planted = [
        (k, v["copy_of"]["key"])
        for k, v in gt.items()
        if v.get("copy_of", {}).get("source") == "pool" and v["transform"] != "byte_copy" and v["in_domain"]
    ]
    groups["planted copies (ELPV)"] = [_scores(Image.open(pool / a), Image.open(pool / b), o) for a, b in planted]
    groups["consecutive cells N, N+1"] = [
        _scores(cell(n), cell(n + 1), o) for n in rng.sample(range(1, n_cells), args.pairs)
    ]
    groups["random cell pairs"] = [
        _scores(*(cell(n) for n in rng.sample(range(1, n_cells + 1), 2)), o) for _ in range(args.pairs)
    ]
    removals = args.recipe / "curate" / "dedup" / "removals.jsonl"
    if removals.is_file():
        recs = [json.loads(x) for x in (args.recipe / "ingest" / "pool" / "records.jsonl").open()]
        src = {r["id"]: r["source"] for r in recs if r.get("status") == "accepted"}
        group = {
            k: (v.get("copy_of") or {}).get("key", k) if (v.get("copy_of") or {}).get("source") == "pool" else k
            for k, v in gt.items()
        }
        wrong = []
        for line in removals.open():
            r = json.loads(line)
            a, b = src[r["id"]], src[r["kept"]]
            if group[a] != group[b]:
                wrong.append((a, b))
        groups["'wrong' dedup removals"] = [_scores(Image.open(pool / a), Image.open(pool / b), o) for a, b in wrong]
        nums = sorted(int(m.group(1)) for a, b in wrong for m in [re.search(r"cell(\d+)", gt[a]["origin"])] if m)
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    lines = [
        "# Consecutive ELPV cells vs planted copies (pixel level)",
        "",
        f"`python experiments/elpv_neighbour_cells.py --recipe {args.recipe} --pairs {args.pairs}`; "
        "96 px thumbnails, registration and scores of `pipeline/curate/verify.py` (defaults).",
        "",
        "| pairs | n | high-pass NCC q05 / q25 / median / q75 / q95 | structure median (q05) | outlier median (q95) |",
        "|---|---|---|---|---|",
    ]
    for name, v in groups.items():
        a = np.array(v).reshape(-1, 3)
        if not len(a):
            continue
        ncc = " / ".join(f"{x:.3f}" for x in np.quantile(a[:, 0], qs))
        lines.append(
            f"| {name} | {len(a)} | {ncc} | {np.median(a[:, 1]):.3f} ({np.quantile(a[:, 1], 0.05):.3f}) "
            f"| {np.median(a[:, 2]):.1f} ({np.quantile(a[:, 2], 0.95):.1f}) |"
        )
    if removals.is_file():
        lines += ["", f"ELPV cell numbers in the 'wrong' removals: {nums}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
