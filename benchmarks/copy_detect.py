"""Copy detection quality per kind of copy, on the ELPV demo and the package-image domain, default settings.

For a recipe folder (``pool/``, ``eval/``, ``ground_truth.json``, as the ELPV
recipe and ``benchmarks/copy_domain.py`` write them) this ingests the pool and
the evaluation images, computes the copy descriptors (the embed step's
function; the backbone embedding is not needed here and is left as zeros), runs
the curate stage's real ``dedup`` and ``decontaminate`` steps with the default
``CurateConfig`` (label-free calibration on), and scores them against the
ground truth: the stage's scores, then recall per kind of planted copy and per
image size, and the planted evaluation copies left in the curated set.

    python benchmarks/copy_detect.py                   # both: benchmarks/results/copy_detect.{json,md}
    python benchmarks/copy_detect.py --domain package     # the package-image domain only

The ELPV folder is made by the recipe (``data_recipes/elpv_demo/prepare.py``, default settings).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_recipes.contract import read_labels
from pipeline.config.curate import CurateConfig
from pipeline.config.ingest import IngestConfig
from pipeline.core.manifest import Manifest, atomic_write_json, read_manifest
from pipeline.curate.embed import descriptor_of
from pipeline.io.ingest import ingest
from pipeline.io.shards import iter_samples, list_shards, read_metadata
from pipeline.stages.curate import decontaminate, dedup
from pipeline.stages.curate.context import Context, read_jsonl, save_npy
from pipeline.stages.curate.score import score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _embed(root: Path, source: str, opts: CurateConfig) -> None:
    out = root / "curate" / "embed" / source
    out.mkdir(parents=True, exist_ok=True)
    samples = list(iter_samples(list_shards(root / "ingest" / source)))
    cop = np.stack([descriptor_of(Image.open(io.BytesIO(s["image"])), opts.embed) for s in samples])
    save_npy(out / "copy.npy", cop.astype(np.float16))
    save_npy(out / "emb.npy", np.zeros((len(samples), 8), np.float16))
    atomic_write_json(out / "ids.json", [s["__key__"] for s in samples])


def run_domain(folder: Path, work: Path, opts: CurateConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """Ingest ``folder``, run dedup and decontaminate with ``opts`` (defaults), score; returns the figures."""
    opts = opts or CurateConfig()
    gt = json.loads((folder / "ground_truth.json").read_text())
    # The recipe's labels mark which evaluation images are held out (only those are references).
    labels = read_labels(folder / "labels.csv") if (folder / "labels.csv").is_file() else {}
    for source in ("pool", "eval"):
        out = work / "ingest" / source
        lab = labels if source == "eval" else None
        ingest([folder / source], out, IngestConfig(shard_size=500, workers=0), labels=lab, progress=False)
        extra = {"ground_truth": str(folder / "ground_truth.json")} if source == "pool" else {}
        Manifest(f"ingest/{source}", f"hash-{source}", extra=extra).write(out)
    t0 = time.perf_counter()
    for source in ("pool", "eval"):
        _embed(work, source, opts)
    t_desc = time.perf_counter() - t0
    ctx = Context(
        opts,
        seed,
        False,
        folder.name,
        work / "curate",
        work / "ingest",
        {s: work / "curate" / "embed" / s for s in ("pool", "eval")},
        {"pool": "p", "eval": "e"},
    )
    results: dict[str, Manifest] = {}
    times = {}
    for step in (dedup.STEP, decontaminate.STEP):
        t0 = time.perf_counter()
        folder_s = ctx.root / step.folder
        results[step.name] = step.run(ctx, results, folder_s, "h")
        results[step.name].write(folder_s)
        times[step.name] = time.perf_counter() - t0
    scores = score(ctx, results)
    return {
        "scores": scores,
        **per_kind(ctx, gt),
        "seconds": {"descriptors": t_desc, **times},
        "calibration": {
            s: json.loads((ctx.root / d / "copy_calibration.json").read_text())
            for s, d in (("dedup", "dedup"), ("decontam", "decontaminate"))
            if (ctx.root / d / "copy_calibration.json").is_file()
        },
    }


def score_run(output_dir: Path) -> dict[str, Any]:
    """The same figures for a finished ``python run.py stage=curate`` run (its ``<paths.output_dir>``)."""
    curate, ingest = output_dir / "curate", output_dir / "ingest"
    gt_path = read_manifest(ingest / "pool").extra.get("ground_truth") or str(
        output_dir / "recipe" / "ground_truth.json"
    )
    gt = json.loads(Path(gt_path).read_text())
    ctx = Context(CurateConfig(), 0, False, output_dir.name, curate, ingest, {}, {})
    cal = {
        s: json.loads((curate / d / "copy_calibration.json").read_text())
        for s, d in (("dedup", "dedup"), ("decontam", "decontaminate"))
        if (curate / d / "copy_calibration.json").is_file()
    }
    scores = json.loads((curate / "scores.json").read_text())
    return {"scores": scores, **per_kind(ctx, gt), "seconds": {}, "calibration": cal}


def _size(side: int) -> str:
    return "<=64 px" if side <= 64 else "65-160 px" if side <= 160 else ">160 px"


def per_kind(ctx: Context, gt: dict[str, Any]) -> dict[str, Any]:
    """Recall per kind of planted copy and per size; planted evaluation copies left in the curated set."""
    meta = {r["id"]: r for r in read_metadata(ctx.ingest / "pool")}
    key = {i: m["source"] for i, m in meta.items()}
    ids = json.loads((ctx.root / "embed" / "pool" / "ids.json").read_text())
    labels = np.load(ctx.root / "dedup" / "labels.npy")
    group = {key[i]: int(lab) for i, lab in zip(ids, labels)}
    removed_dup = {key[r["id"]] for r in read_jsonl(ctx.root / "dedup" / "removals.jsonl")}
    removed_cont = {key[r["id"]] for r in read_jsonl(ctx.root / "decontaminate" / "contaminated.jsonl")}
    sides = {m["source"]: max(m["width"], m["height"]) for m in meta.values()}
    hits: dict[str, dict[str, list[bool]]] = {"pool": defaultdict(list), "eval": defaultdict(list)}
    by_size: dict[str, dict[str, list[bool]]] = {"pool": defaultdict(list), "eval": defaultdict(list)}
    left = []
    for k, v in gt.items():
        c = v.get("copy_of")
        if not c or k not in group or v.get("transform") == "byte_copy":
            continue
        if c["source"] == "pool":
            if c["key"] not in group:
                continue
            ok = group[k] == group[c["key"]]
        else:
            ok = k in removed_cont
            if k not in removed_cont and k not in removed_dup:
                left.append(k)
        hits[c["source"]][v["transform"]].append(ok)
        by_size[c["source"]][_size(v.get("side", sides[k]))].append(ok)
    table = {
        src: {kind: {"n": len(v), "recall": float(np.mean(v))} for kind, v in sorted(d.items())}
        for src, d in hits.items()
    }
    sizes = {
        src: {s: {"n": len(v), "recall": float(np.mean(v))} for s, v in sorted(d.items())} for src, d in by_size.items()
    }
    return {
        "per_kind": table,
        "per_size": sizes,
        "eval_copies_left": left,
        "removed_dedup": len(removed_dup),
        "removed_decontam": len(removed_cont),
    }


def build_folder(name: str, tmp: Path, elpv_limit: int | None = None) -> Path:
    out = tmp / name
    if name == "package":
        from benchmarks.copy_domain import build

        build(out)
    else:
        from data_recipes.elpv_demo.prepare import prepare
        from data_recipes.elpv_demo.schema import ElpvDemoRecipe

        small = dict(n_seeds=10, n_faces=20, n_digits=20, n_photo_tiles=20, n_pool_copies=16, n_eval_copies=12)
        prepare(ElpvDemoRecipe(elpv_limit=elpv_limit, **small) if elpv_limit else ElpvDemoRecipe(), out)
    return out


def markdown(res: dict[str, Any], cmd: str) -> str:
    lines = [
        "# Copy detection per kind of copy (default settings, label-free calibration)",
        "",
        f"`{cmd}` on {os.cpu_count()} CPUs. Recall: pool copies grouped with their original (dedup); "
        "evaluation copies removed (decontamination). The four ELPV recipe kinds "
        "(`jpeg_q70`, `resize_0.8`, `crop_6pct`, `brighten_1.2`) are fixed transforms; the others are drawn from "
        "the copy suite (`CopySuiteConfig`), which the calibration also uses.",
        "",
    ]
    for dom, r in res.items():
        s = r["scores"]

        def g(k: str, digits: int = 3, s: dict[str, float] = s) -> str:
            return f"{s.get(k, float('nan')):.{digits}f}"

        lines += [
            f"## {dom}",
            "",
            f"dedup recall {g('dedup.recall')}, precision {g('dedup.precision')}, "
            f"precision on planted copies {g('dedup.precision_planted')} "
            f"(removals {g('dedup.removed', 0)}, neighbouring ELPV cells {g('dedup.neighbour_cell_removals', 0)}), "
            f"precision without pairs of distinct cells of one module {g('dedup.precision_distinct')} "
            f"({g('dedup.same_module_removals', 0)} such removals); "
            f"decontamination recall {g('decontam.recall')}, precision {g('decontam.precision')}, "
            f"precision on planted copies {g('decontam.precision_planted')} "
            f"(removals {g('decontam.removed', 0)}, neighbouring cells {g('decontam.neighbour_cell_removals', 0)}); "
            f"evaluation copies left in the curated set: {len(r['eval_copies_left'])}.",
            "",
        ]
        cal = r.get("calibration", {})
        for step, c in cal.items():
            lines.append(
                f"{step} calibration: candidate {c['candidate_threshold']}, aligned {c.get('aligned_threshold')}, "
                f"threshold {c['threshold']}, "
                f"estimated false-match rate {c['estimated_false_match_rate']}, on {c['images']:.0f} images."
            )
        lines += [
            "",
            "| kind | pool copies n | dedup recall | eval copies n | decontam recall |",
            "|---|---|---|---|---|",
        ]
        kinds = sorted(set(r["per_kind"]["pool"]) | set(r["per_kind"]["eval"]))
        for k in kinds:
            p, e = r["per_kind"]["pool"].get(k), r["per_kind"]["eval"].get(k)
            lines.append(f"| {k} | {p['n'] if p else 0} | {p['recall']:.3f} |" if p else f"| {k} | 0 | - |")
            lines[-1] += f" {e['n']} | {e['recall']:.3f} |" if e else " 0 | - |"
        lines += [
            "",
            "| image side | pool copies n | dedup recall | eval copies n | decontam recall |",
            "|---|---|---|---|---|",
        ]
        for k in sorted(set(r["per_size"]["pool"]) | set(r["per_size"]["eval"])):
            p, e = r["per_size"]["pool"].get(k), r["per_size"]["eval"].get(k)
            lines.append(
                (f"| {k} | {p['n']} | {p['recall']:.3f} |" if p else f"| {k} | 0 | - |")
                + (f" {e['n']} | {e['recall']:.3f} |" if e else " 0 | - |")
            )
        sec = r["seconds"]
        lines += ["", "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", choices=["package", "elpv", "both"], default="both")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--elpv-limit", type=int, help="a reduced ELPV demo: this many cells, fewer distractors and copies")
    ap.add_argument("--calibration-images", type=int, help="override curate.calibration.images")
    ap.add_argument("--from-run", type=Path, help="score a finished curate run's output_dir instead (ELPV: run.py)")
    a = ap.parse_args()
    if a.from_run is not None:
        res = {a.from_run.name: score_run(a.from_run)}
        (RESULTS / "copy_detect_run.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
        cmd = f"python run.py stage=curate tracking=off; python benchmarks/copy_detect.py --from-run {a.from_run}"
        (RESULTS / "copy_detect_run.md").write_text(markdown(res, cmd))
        return
    names = ["package", "elpv"] if a.domain == "both" else [a.domain]
    tmp = Path(tempfile.mkdtemp(prefix="copy_detect_")) if a.keep is None else a.keep
    res = {}
    try:
        for n in names:
            folder = build_folder(n, tmp / "src", a.elpv_limit)
            opts = CurateConfig()
            if a.calibration_images:
                opts.calibration.images = a.calibration_images
            res[n] = run_domain(folder, tmp / "work" / n, opts)
            print(
                json.dumps({n: {k: v for k, v in res[n].items() if k != "eval_copies_left"}}, default=float), flush=True
            )
    finally:
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "copy_detect" if a.domain == "both" else f"copy_detect_{a.domain}"
    name += f"_limit{a.elpv_limit}" if a.elpv_limit else ""
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    cmd = "python benchmarks/copy_detect.py" + ("" if a.domain == "both" else f" --domain {a.domain}")
    cmd += f" --elpv-limit {a.elpv_limit}" if a.elpv_limit else ""
    cmd += f" --calibration-images {a.calibration_images}" if a.calibration_images else ""
    (RESULTS / f"{name}.md").write_text(markdown(res, cmd))


if __name__ == "__main__":
    main()
